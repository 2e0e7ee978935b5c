// What a hostile vfio-user server sends to potemkin's client: the input is a byte stream read
// through the client's framing (MessageReader), and every message is run through the decoder
// the client would apply to it (replies to each command, and the server's own DMA requests).
// Everything decodes or is refused; nothing crashes or reads out of bounds.
#include <cstdint>

#include "fuzz_support.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"

using namespace potemkin;
using namespace potemkin::vfio_user;

namespace {

void decode_as_client(const Message& m) {
    const auto p = std::span<const uint8_t>(m.payload);
    const auto cmd = static_cast<Command>(m.header.cmd);
    const bool reply = m.header.is_reply();
    switch (cmd) {
        case Command::version:
            if (auto v = decode_version(p); v) (void)check_version_compatible(*v);
            break;
        case Command::dma_unmap:
            (void)decode_dma_unmap(p);
            break;
        case Command::device_get_info:
            (void)decode_device_info(p);
            break;
        case Command::device_get_region_info:
            (void)decode_region_info_reply(p);
            break;
        case Command::device_get_irq_info:
            (void)decode_irq_info(p);
            break;
        case Command::region_read:
        case Command::region_write:
            (void)decode_region_access(cmd, reply, p, kDefaultMaxDataXferSize);
            (void)decode_region_access_view(cmd, reply, p, kDefaultMaxDataXferSize);
            break;
        case Command::dma_read:
        case Command::dma_write:
            (void)decode_dma_access(cmd, reply, p, kDefaultMaxDataXferSize);
            (void)decode_dma_access(DmaLayout::qemu, cmd, reply, p, kDefaultMaxDataXferSize);
            break;
        default:
            break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto pair = fuzz::stream_pair();
    auto drain = fuzz::feed(pair.peer.get(), data, size);
    MessageReader reader;
    Message m;
    RecvOptions options;
    options.timeout_ms = 0;  // everything is already in the socket
    // The decoders' errors are the expected outcome; only crashes are findings.
    while (reader.next(pair.server.get(), m, options)) decode_as_client(m);
    pair.server.reset();  // EOF for the drain thread
    drain.join();
    return 0;
}
