// A hostile vfio-user client: the input is the byte stream a client sends to
// `potemkin serve edu` (messages, in any order, malformed or not). The server must answer or
// drop the connection, never crash, hang or touch memory it does not own.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "common/log.hpp"
#include "fuzz_support.hpp"
#include "models/builtin.hpp"
#include "sdk/device_model.hpp"
#include "vfio_user/server.hpp"

using namespace potemkin;

namespace {

vfio_user::VfioUserServer& server() {
    static std::unique_ptr<vfio_user::VfioUserServer> s = [] {
        log::set_level(log::Level::error);
        if (!models::register_builtin_models(sdk::ModelRegistry::builtin())) std::abort();
        auto model = sdk::ModelRegistry::builtin().create("edu", {});
        if (!model) std::abort();
        vfio_user::VfioUserServerSettings settings;
        settings.socket_path =
            (std::filesystem::temp_directory_path() / ("fuzz-vfu-" + std::to_string(getpid())))
                .string();
        settings.io_timeout_ms = 50;  // a truncated message must not stall the run
        settings.label = "fuzz";
        auto created = vfio_user::VfioUserServer::create(std::move(model).value(), settings);
        if (!created) std::abort();
        return std::move(created).value();
    }();
    return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto& s = server();
    auto pair = fuzz::stream_pair();
    auto drain = fuzz::feed(pair.peer.get(), data, size);
    // Errors are the expected outcome for most inputs; only crashes and hangs are findings.
    (void)s.serve_connection(pair.server.release());
    drain.join();  // the server closed its end: the drain thread saw EOF
    return 0;
}
