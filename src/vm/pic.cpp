#include "vm/pic.hpp"

#include <utility>

namespace potemkin::vm {

namespace {

constexpr unsigned kMaster = 0;
constexpr unsigned kSlave = 1;
constexpr unsigned kCascadeIr = 2;

// PIIX: lines 0, 1, 2 (timer, keyboard, cascade) and 8, 13 (RTC, FPU error) are always edge;
// their ELCR bits read as 0 and ignore writes.
constexpr std::array<uint8_t, 2> kElcrWritable = {0xf8, 0xde};

// Lowest set bit of a non-zero byte: fixed priority, IR0 highest.
unsigned lowest_bit(uint8_t v) {
    unsigned i = 0;
    while (!(v & (1u << i))) ++i;
    return i;
}

uint8_t bit(unsigned ir) {
    return static_cast<uint8_t>(1u << ir);
}

}  // namespace

Pic8259Pair::Pic8259Pair(std::function<void()> on_output_change)
    : on_output_change_(std::move(on_output_change)) {}

std::optional<unsigned> Pic8259Pair::deliverable(unsigned chip) const {
    const Chip& c = chips_[chip];
    if (!c.initialised || c.init_step != 0) return std::nullopt;
    const uint8_t pending = c.irr & static_cast<uint8_t>(~c.imr);
    if (!pending) return std::nullopt;
    const unsigned ir = lowest_bit(pending);
    uint8_t blocking = c.isr;
    // Special mask mode: a masked line's in-service bit no longer inhibits lower priorities,
    // so a handler can mask itself and let everything else through (8259A, OCW3 SMM).
    if (c.special_mask) blocking &= static_cast<uint8_t>(~c.imr);
    // Special fully nested mode: the master lets a slave request through while the cascade
    // is in service, so the slave's own priority decides (8259A, ICW4 SFNM).
    if (chip == kMaster && c.special_fully_nested && !c.single)
        blocking &= static_cast<uint8_t>(~bit(kCascadeIr));
    if (blocking && lowest_bit(blocking) <= ir) return std::nullopt;
    return ir;
}

bool Pic8259Pair::output() const {
    return deliverable(kMaster).has_value();
}

void Pic8259Pair::set_input(unsigned chip, unsigned ir, bool level) {
    Chip& c = chips_[chip];
    const uint8_t m = bit(ir);
    const bool was = c.lines & m;
    if (level)
        c.lines |= m;
    else
        c.lines &= static_cast<uint8_t>(~m);
    if (c.elcr & m) {
        // Level: IRR follows the line.
        if (level)
            c.irr |= m;
        else
            c.irr &= static_cast<uint8_t>(~m);
    } else if (level && !was) {
        // Edge: latch the rising edge; a falling edge leaves the latched request alone.
        c.irr |= m;
    }
}

void Pic8259Pair::update() {
    // The slave's INT pin is the master's IR2 input. Reevaluated after every change, so a
    // slave request that becomes deliverable again (after an EOI) is a fresh rising edge.
    set_input(kMaster, kCascadeIr, deliverable(kSlave).has_value());
    if (output() && on_output_change_) on_output_change_();
}

void Pic8259Pair::set_irq(unsigned line, bool level) {
    if (line >= 16 || line == kCascadeIr) return;
    set_input(line / 8, line % 8, level);
    update();
}

void Pic8259Pair::retired(unsigned chip, unsigned ir) {
    // The cascade input is edge-triggered (its ELCR bit is forced 0), so it never lands here.
    if (chips_[chip].elcr & bit(ir)) retired_ |= static_cast<uint16_t>(1u << (chip * 8 + ir));
}

void Pic8259Pair::report_eois() {
    while (retired_) {
        const unsigned line = static_cast<unsigned>(__builtin_ctz(retired_));
        retired_ &= static_cast<uint16_t>(~(1u << line));
        if (eoi_listener_) eoi_listener_(line);
    }
}

void Pic8259Pair::reset() {
    for (Chip& c : chips_) {
        const uint8_t lines = c.lines;
        c = Chip{};
        c.lines = lines;
    }
    retired_ = 0;
    update();
}

void Pic8259Pair::intack(unsigned chip, unsigned ir) {
    Chip& c = chips_[chip];
    const uint8_t m = bit(ir);
    if (c.auto_eoi)
        retired(chip, ir);  // the INTA cycle is the EOI
    else
        c.isr |= m;
    // A level request is not cleared: it follows the line and is blocked by the ISR bit,
    // so it comes back after the EOI if the device still holds the line high.
    if (!(c.elcr & m)) c.irr &= static_cast<uint8_t>(~m);
}

std::optional<uint8_t> Pic8259Pair::acknowledge() {
    Chip& m = chips_[kMaster];
    if (!m.initialised || m.init_step != 0) return std::nullopt;
    const auto ir = deliverable(kMaster);
    if (!ir) return static_cast<uint8_t>(m.vector_base + 7);  // no ISR bit for a spurious IR7
    std::optional<uint8_t> vector;
    if (*ir == kCascadeIr && !m.single) {
        // The master accepts IR2 and lets the slave put the vector on the bus.
        Chip& s = chips_[kSlave];
        if (const auto sir = deliverable(kSlave)) {
            intack(kSlave, *sir);
            vector = static_cast<uint8_t>(s.vector_base + *sir);
        } else {
            vector = static_cast<uint8_t>(s.vector_base + 7);  // slave spurious
        }
    } else {
        vector = static_cast<uint8_t>(m.vector_base + *ir);
    }
    intack(kMaster, *ir);
    report_eois();
    update();
    return vector;
}

uint8_t Pic8259Pair::poll_read(unsigned chip) {
    // OCW3 poll: the read is the INTA; bit 7 says whether a request was there, bits 2:0 name
    // it. The CPU never sees a vector, so the cascade is polled chip by chip.
    chips_[chip].poll = false;
    const auto ir = deliverable(chip);
    if (!ir) return 0;
    intack(chip, *ir);
    report_eois();
    update();
    return static_cast<uint8_t>(0x80 | *ir);
}

uint8_t Pic8259Pair::io_read(uint16_t port) {
    switch (port) {
        case 0x20:
        case 0xa0: {
            const unsigned chip = port == 0x20 ? kMaster : kSlave;
            const Chip& c = chips_[chip];
            if (c.poll) return poll_read(chip);
            return c.read_isr ? c.isr : c.irr;
        }
        case 0x21:
            return chips_[kMaster].imr;
        case 0xa1:
            return chips_[kSlave].imr;
        case 0x4d0:
            return chips_[kMaster].elcr;
        case 0x4d1:
            return chips_[kSlave].elcr;
        default:
            return 0xff;
    }
}

void Pic8259Pair::write_command(unsigned chip, uint8_t value) {
    Chip& c = chips_[chip];
    if (value & 0x10) {
        // ICW1. The datasheet's init side effects: IMR cleared, edge-sense latches reset (an
        // edge line already high needs a new 0->1 transition), special mask mode cleared,
        // status read set to IRR. We also drop ISR so a re-initialised chip starts clean.
        c.icw4_needed = value & 0x01;
        c.single = value & 0x02;
        c.imr = 0;
        c.isr = 0;
        c.irr = c.lines & c.elcr;  // level requests follow the line through the reset
        c.special_mask = false;
        c.read_isr = false;
        c.poll = false;
        c.auto_eoi = false;
        c.special_fully_nested = false;
        c.icw4 = 0;
        c.init_step = 2;
        return;
    }
    if (value & 0x08) {
        // OCW3.
        if (value & 0x04) c.poll = true;
        if (value & 0x02) c.read_isr = value & 0x01;      // RR=1: RIS selects ISR or IRR
        if (value & 0x40) c.special_mask = value & 0x20;  // ESMM=1: SMM sets or clears
        update();
        return;
    }
    // OCW2: bits 7:5 are R, SL, EOI.
    const unsigned cmd = value >> 5;
    switch (cmd) {
        case 1:    // non-specific EOI
        case 5: {  // rotate on non-specific EOI: EOI without rotating (rotation not modelled)
            // Clears the highest-priority ISR bit. Under special mask mode, per the datasheet,
            // software must use a specific EOI; we still clear the highest bit.
            if (c.isr) {
                const unsigned ir = lowest_bit(c.isr);
                c.isr &= static_cast<uint8_t>(~bit(ir));
                retired(chip, ir);
            }
            break;
        }
        case 3:    // specific EOI
        case 7: {  // rotate on specific EOI: EOI without rotating
            const unsigned ir = value & 7;
            if (c.isr & bit(ir)) {
                c.isr &= static_cast<uint8_t>(~bit(ir));
                retired(chip, ir);
            }
            break;
        }
        default:  // 0/4: rotate in AEOI clear/set; 2: no-op; 6: set priority. Not modelled.
            break;
    }
    // Before re-evaluating: a device that drops its line when told (a resampler) must not
    // leave a request behind. Otherwise the slave's INT would rise for a moment after a slave
    // EOI, the master would latch that edge on IR2, and the master's EOI would deliver the
    // slave's spurious vector.
    report_eois();
    update();
}

void Pic8259Pair::write_data(unsigned chip, uint8_t value) {
    Chip& c = chips_[chip];
    switch (c.init_step) {
        case 2:  // ICW2: the vector base; bits 2:0 are replaced by the IR number.
            c.vector_base = value & 0xf8;
            c.init_step = c.single ? (c.icw4_needed ? 4 : 0) : 3;
            break;
        case 3:  // ICW3: stored only; the wiring is fixed.
            c.icw3 = value;
            c.init_step = c.icw4_needed ? 4 : 0;
            break;
        case 4:  // ICW4
            c.icw4 = value;
            c.auto_eoi = value & 0x02;
            c.special_fully_nested = value & 0x10;
            c.init_step = 0;
            break;
        default:  // OCW1
            c.imr = value;
            break;
    }
    if (c.init_step == 0) c.initialised = true;
    update();
}

void Pic8259Pair::write_elcr(unsigned chip, uint8_t value) {
    Chip& c = chips_[chip];
    c.elcr = value & kElcrWritable[chip];
    // A line that became level requests from its current state; one that became edge keeps
    // whatever it latched.
    c.irr = static_cast<uint8_t>((c.irr & ~c.elcr) | (c.lines & c.elcr));
    update();
}

void Pic8259Pair::io_write(uint16_t port, uint8_t value) {
    switch (port) {
        case 0x20:
            return write_command(kMaster, value);
        case 0xa0:
            return write_command(kSlave, value);
        case 0x21:
            return write_data(kMaster, value);
        case 0xa1:
            return write_data(kSlave, value);
        case 0x4d0:
            return write_elcr(kMaster, value);
        case 0x4d1:
            return write_elcr(kSlave, value);
        default:
            return;
    }
}

Result<void> Pic8259Pair::attach(PortBus& bus, const std::string& owner) {
    std::vector<RangeId> added;
    for (const uint16_t base : {uint16_t{0x20}, uint16_t{0xa0}, uint16_t{0x4d0}}) {
        BusHandler h{[this, base](uint64_t offset, unsigned size) {
                         // Wider accesses are handled byte by byte, little-endian.
                         uint64_t v = 0;
                         for (unsigned i = 0; i < size; ++i)
                             v |= uint64_t{io_read(static_cast<uint16_t>(base + offset + i))}
                                  << (8 * i);
                         return v;
                     },
                     [this, base](uint64_t offset, unsigned size, uint64_t value) {
                         for (unsigned i = 0; i < size; ++i)
                             io_write(static_cast<uint16_t>(base + offset + i),
                                      static_cast<uint8_t>(value >> (8 * i)));
                     }};
        auto id = bus.add(Port(base), 2, owner, std::move(h));
        if (!id) {
            for (RangeId r : added) bus.remove(r);
            return fail(id.error());
        }
        added.push_back(*id);
    }
    return ok();
}

}  // namespace potemkin::vm
