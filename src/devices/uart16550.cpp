#include "devices/uart16550.hpp"

#include <fmt/format.h>

namespace potemkin::devices {

namespace {

// Register offsets (PC16550D, Table II).
constexpr unsigned kData = 0;  // RBR (read) / THR (write); DLL while DLAB
constexpr unsigned kIer = 1;   // DLM while DLAB
constexpr unsigned kIir = 2;   // IIR (read) / FCR (write)
constexpr unsigned kLcr = 3;
constexpr unsigned kMcr = 4;
constexpr unsigned kLsr = 5;
constexpr unsigned kMsr = 6;
constexpr unsigned kScr = 7;

constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerRxData = 0x01, kIerThre = 0x02;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr uint8_t kLsrDataReady = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02;
// IIR bits 3:0 by source, highest priority first; bit 0 set means nothing pending.
constexpr uint8_t kIirNone = 0x01, kIirRxData = 0x04, kIirThre = 0x02;
constexpr uint8_t kIirFifosEnabled = 0xc0;

}  // namespace

Uart16550::Uart16550(std::string id, vm::PortBus& ports, vm::InterruptSink& interrupts,
                     Uart16550Settings settings)
    : Device(std::move(id)),
      ports_(ports),
      interrupts_(interrupts),
      settings_(std::move(settings)) {}

Result<std::unique_ptr<Uart16550>> Uart16550::create(std::string id, vm::PortBus& ports,
                                                     vm::InterruptSink& interrupts,
                                                     Uart16550Settings settings) {
    std::unique_ptr<Uart16550> u(
        new Uart16550(std::move(id), ports, interrupts, std::move(settings)));
    Uart16550* self = u.get();
    // Wider accesses (Linux only uses bytes) read and write consecutive registers.
    auto range = ports.add(Port(u->settings_.port), 8, u->id(),
                           {[self](uint64_t offset, unsigned size) -> uint64_t {
                                uint64_t v = 0;
                                for (unsigned i = 0; i < size && offset + i < 8; ++i)
                                    v |= uint64_t{self->read(static_cast<unsigned>(offset + i))}
                                         << (8 * i);
                                return v;
                            },
                            [self](uint64_t offset, unsigned size, uint64_t value) {
                                for (unsigned i = 0; i < size && offset + i < 8; ++i)
                                    self->write(static_cast<unsigned>(offset + i),
                                                static_cast<uint8_t>(value >> (8 * i)));
                            }});
    if (!range) return fail(range.error());
    u->range_ = *range;
    return u;
}

Uart16550::~Uart16550() {
    if (line_level_) interrupts_.set_irq(settings_.irq, false);
    ports_.remove(range_);
}

void Uart16550::reset() {
    ier_ = lcr_ = mcr_ = scr_ = fcr_ = 0;
    dll_ = 0x0c;
    dlm_ = 0;
    rx_.clear();
    thre_pending_ = false;
    update_irq();
}

void Uart16550::receive(std::string_view bytes) {
    for (char c : bytes) rx_.push_back(static_cast<uint8_t>(c));
    update_irq();
}

void Uart16550::transmit(uint8_t byte) {
    if (mcr_ & kMcrLoop) {
        // Loopback: the transmitter feeds the receiver; nothing leaves the chip.
        rx_.push_back(byte);
    } else if (settings_.output) {
        const char c = static_cast<char>(byte);
        settings_.output(std::string_view(&c, 1));
    }
    // The byte left THR at once: THR is empty again.
    thre_pending_ = true;
}

uint8_t Uart16550::line_status() const {
    return static_cast<uint8_t>(kLsrThre | kLsrTemt | (rx_.empty() ? 0 : kLsrDataReady));
}

uint8_t Uart16550::modem_status() const {
    if (mcr_ & kMcrLoop) {
        // Loopback wires DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD (data sheet, MCR bit 4).
        return static_cast<uint8_t>(((mcr_ & kMcrRts) ? 0x10 : 0) | ((mcr_ & kMcrDtr) ? 0x20 : 0) |
                                    ((mcr_ & kMcrOut1) ? 0x40 : 0) |
                                    ((mcr_ & kMcrOut2) ? 0x80 : 0));
    }
    // A line with a terminal on it: CTS, DSR and DCD asserted, no ring, no changes.
    return 0xb0;
}

uint8_t Uart16550::pending_interrupt() const {
    // Of the four sources (in priority order: receiver line status, received data, THR empty,
    // modem status) the first and last never fire here: no line errors occur and the modem
    // lines never change (IER's bits for them are kept, they just have nothing to report).
    if ((ier_ & kIerRxData) && !rx_.empty()) return kIirRxData;
    if ((ier_ & kIerThre) && thre_pending_) return kIirThre;
    return kIirNone;
}

void Uart16550::update_irq() {
    // On a PC the UART's interrupt reaches the ISA line only through OUT2.
    const bool level = pending_interrupt() != kIirNone && (mcr_ & kMcrOut2) && !(mcr_ & kMcrLoop);
    if (level == line_level_) return;
    line_level_ = level;
    interrupts_.set_irq(settings_.irq, level);
}

uint8_t Uart16550::read(unsigned offset) {
    const bool dlab = lcr_ & kLcrDlab;
    uint8_t v = 0xff;
    switch (offset) {
        case kData:
            if (dlab) {
                v = dll_;
            } else {
                v = rx_.empty() ? 0 : rx_.front();
                if (!rx_.empty()) rx_.pop_front();
            }
            break;
        case kIer:
            v = dlab ? dlm_ : ier_;
            break;
        case kIir: {
            const uint8_t source = pending_interrupt();
            v = static_cast<uint8_t>(source | ((fcr_ & kFcrEnable) ? kIirFifosEnabled : 0));
            // Reading IIR while THR-empty is the reason acknowledges it.
            if (source == kIirThre) thre_pending_ = false;
            break;
        }
        case kLcr:
            v = lcr_;
            break;
        case kMcr:
            v = mcr_;
            break;
        case kLsr:
            v = line_status();
            break;
        case kMsr:
            v = modem_status();
            break;
        case kScr:
            v = scr_;
            break;
        default:
            break;
    }
    update_irq();
    return v;
}

void Uart16550::write(unsigned offset, uint8_t value) {
    const bool dlab = lcr_ & kLcrDlab;
    switch (offset) {
        case kData:
            if (dlab)
                dll_ = value;
            else
                transmit(value);
            break;
        case kIer:
            if (dlab) {
                dlm_ = value;
            } else {
                // Enabling the THR-empty interrupt while THR is empty raises it at once.
                if ((value & kIerThre) && !(ier_ & kIerThre)) thre_pending_ = true;
                ier_ = value & 0x0f;
            }
            break;
        case kIir:
            fcr_ = value & 0xc9;  // enable, DMA mode, trigger level; the clear bits self-clear
            if ((value & kFcrClearRx) || !(value & kFcrEnable)) rx_.clear();
            break;
        case kLcr:
            lcr_ = value;
            break;
        case kMcr:
            mcr_ = value & 0x1f;
            break;
        case kScr:
            scr_ = value;
            break;
        default:
            break;  // LSR and MSR are read-only (writes are for factory test only)
    }
    update_irq();
}

Result<void> register_uart16550(vm::DeviceClassRegistry& registry) {
    return registry.add("SERIAL",
                        [](const vm::ConfigElement& e,
                           vm::DeviceContext& ctx) -> Result<std::unique_ptr<vm::Device>> {
                            POTEMKIN_TRY(e.only_attributes({"class", "id", "port", "irq"}));
                            auto id = e.required("id");
                            if (!id) return fail(id.error());
                            Uart16550Settings s;
                            auto port = e.number("port", 0x3f8, 0xfff8);
                            if (!port) return fail(port.error());
                            auto irq = e.number("irq", 4, 15);
                            if (!irq) return fail(irq.error());
                            s.port = static_cast<uint16_t>(*port);
                            s.irq = static_cast<unsigned>(*irq);
                            s.output = ctx.console;
                            auto u =
                                Uart16550::create(*id, ctx.ports, ctx.interrupts, std::move(s));
                            if (!u) return fail(u.error());
                            return std::unique_ptr<vm::Device>(std::move(*u));
                        });
}

}  // namespace potemkin::devices
