// QEMU's multi-process protocol in both directions: the input is a byte stream read through
// the framing both ends use (recv_message), and each frame goes through the validator and the
// decoder of its command — the ones the server applies to the proxy's requests and the one the
// client applies to RET. Everything decodes or is refused; nothing crashes.
#include <cstdint>

#include "fuzz_support.hpp"
#include "mpqemu/protocol.hpp"

using namespace potemkin;
using namespace potemkin::mpqemu;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto pair = fuzz::stream_pair();
    auto drain = fuzz::feed(pair.peer.get(), data, size);
    RecvOptions options;
    options.timeout_ms = 0;  // everything is already in the socket
    Message m;
    // Errors are the expected outcome; only crashes are findings.
    while (recv_message(pair.server.get(), m, options)) {
        if (!validate(m)) continue;
        switch (m.cmd) {
            case Cmd::pci_cfgread:
            case Cmd::pci_cfgwrite:
                (void)decode_conf(m);
                break;
            case Cmd::bar_read:
            case Cmd::bar_write:
                (void)decode_bar(m);
                break;
            case Cmd::sync_sysmem:
                (void)decode_sysmem(m);
                break;
            case Cmd::ret:
                (void)decode_ret(m);
                break;
            default:
                break;
        }
    }
    pair.server.reset();  // EOF for the drain thread
    drain.join();
    return 0;
}
