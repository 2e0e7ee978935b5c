#include "devices/platform.hpp"

namespace potemkin::devices {

Result<std::unique_ptr<DebugConsole>> DebugConsole::create(vm::PortBus& ports, Sink sink) {
    std::unique_ptr<DebugConsole> d(new DebugConsole(ports, std::move(sink)));
    DebugConsole* self = d.get();
    auto id = ports.add(Port(kDebugConsolePort), 1, d->id(),
                        {[](uint64_t, unsigned) -> uint64_t { return kDebugConsolePort; },
                         [self](uint64_t, unsigned size, uint64_t value) {
                             // A wider OUT prints its bytes in memory order.
                             char bytes[4];
                             for (unsigned i = 0; i < size && i < 4; ++i)
                                 bytes[i] = static_cast<char>(value >> (8 * i));
                             self->sink_(std::string_view(bytes, size < 4 ? size : 4));
                         }});
    if (!id) return fail(id.error());
    d->range_ = *id;
    return d;
}

DebugConsole::~DebugConsole() {
    ports_.remove(range_);
}

Result<std::unique_ptr<ExitPort>> ExitPort::create(vm::PortBus& ports, OnExit on_exit) {
    std::unique_ptr<ExitPort> d(new ExitPort(ports, std::move(on_exit)));
    ExitPort* self = d.get();
    // Four ports so a 32-bit OUT to 0xF4 lands in one range instead of being split.
    auto id = ports.add(Port(kExitPort), 4, d->id(),
                        {[](uint64_t, unsigned) -> uint64_t { return 0; },
                         [self](uint64_t offset, unsigned, uint64_t value) {
                             if (offset == 0) self->on_exit_(static_cast<uint32_t>(value));
                         }});
    if (!id) return fail(id.error());
    d->range_ = *id;
    return d;
}

ExitPort::~ExitPort() {
    ports_.remove(range_);
}

}  // namespace potemkin::devices
