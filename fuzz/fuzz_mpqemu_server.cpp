// A hostile QEMU proxy: the input is the byte stream x-pci-proxy-dev would send to
// `potemkin serve edu --mpqemu-fd N`. The server must answer or drop the connection, never
// crash, hang or touch memory it does not own. (SCM_RIGHTS fds cannot come from a byte
// stream: SYNC_SYSMEM and SET_IRQFD arrive without their fds and must be refused.)
#include <cstdlib>
#include <memory>

#include "common/log.hpp"
#include "fuzz_support.hpp"
#include "models/builtin.hpp"
#include "mpqemu/server.hpp"
#include "sdk/device_model.hpp"

using namespace potemkin;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool registered = [] {
        log::set_level(log::Level::error);
        return models::register_builtin_models(sdk::ModelRegistry::builtin()).has_value();
    }();
    if (!registered) std::abort();
    auto model = sdk::ModelRegistry::builtin().create("edu", {});
    if (!model) std::abort();
    auto pair = fuzz::stream_pair();
    mpqemu::MpqemuServerSettings settings;
    settings.fd = pair.server.release();
    settings.io_timeout_ms = 50;
    settings.label = "fuzz";
    auto server = mpqemu::MpqemuServer::create(std::move(model).value(), settings);
    if (!server) std::abort();
    auto drain = fuzz::feed(pair.peer.get(), data, size);
    // Errors are the expected outcome for most inputs; only crashes and hangs are findings.
    (void)(*server)->run();
    server->reset();  // closes the server's end: the drain thread sees EOF
    drain.join();
    return 0;
}
