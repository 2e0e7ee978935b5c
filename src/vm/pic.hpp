// Pic8259Pair: the two cascaded Intel 8259A programmable interrupt controllers of a PC, plus
// the PIIX edge/level control registers (ELCR).
//
// Implements:
// - Ports 0x20-0x21 (master), 0xA0-0xA1 (slave), ELCR at 0x4D0 (lines 0-7) and 0x4D1 (8-15).
// - ICW1-ICW4: vector base (ICW2 bits 7:3), single/cascade (ICW1 SNGL), ICW4-needed (IC4),
//   auto-EOI (ICW4 AEOI), special fully nested mode (ICW4 SFNM, master only).
// - OCW1 (IMR); OCW2 non-specific EOI and specific EOI; OCW3 read-IRR/read-ISR select, poll
//   command, special mask mode.
// - The slave's INT output drives the master's IR2; lines 8-15 are the slave's IR0-7.
// - Edge lines latch a request on a 0->1 transition of the input (the request survives the
//   line dropping, as the 8259A's edge latch does); level lines request while high and the
//   request follows the line.
// - Fixed priority, IR0 highest on each chip; the slave's lines sit at the master's IR2 slot.
// - The INTA cycle (acknowledge()): IRR->ISR (edge requests cleared, level requests follow the
//   line), no ISR bit in auto-EOI mode, spurious IR7 of the chip whose request vanished.
// - EOI notification (not a pin of the 8259A; what KVM's ack notifiers and irqfd resamplers
//   hook): when an EOI retires the in-service bit of a line the ELCR makes level-triggered,
//   the listener hears the line (0-15). Specific and non-specific EOIs (with or without the
//   rotate bit) retire a bit; in auto-EOI mode the INTA cycle itself is the EOI, so a level
//   line is reported when it is acknowledged. Not reported: edge lines, the cascade (master
//   IR2), EOIs that clear nothing, in-service bits dropped by ICW1 or reset(). The report
//   comes once the in-service bit is cleared and before the PIC re-evaluates its requests,
//   so a line the listener lowers (set_irq) never requests again, and one it keeps or raises
//   again requests as usual.
//
// Does not implement:
// - Priority rotation. OCW2 "rotate on non-specific EOI" and "rotate on specific EOI" perform
//   the EOI without rotating; "set priority" and "rotate in AEOI mode set/clear" are ignored.
// - ICW1 LTIM: ignored, as on PIIX; the ELCR alone chooses edge or level.
// - ICW3: stored, but the wiring is fixed (one slave, on master IR2, slave ID 2).
// - ICW4 buffered mode and microprocessor mode (8080/8085 vs 8086): stored, no effect.
// - The real 8259A's undefined state before ICW1: here IMR is 0xFF (all masked) and both
//   vector bases 0 until the guest initialises the chips. While a chip is between ICW1 and
//   its last ICW it raises no output and an INTA yields nothing.
// - set_irq(2, ...) is ignored: on a PC line 2 is the cascade; ISA IRQ 2 is wired to IRQ 9.
//
// References: Intel 8259A Programmable Interrupt Controller datasheet (order 231468),
// sections "Interrupt Sequence", "Initialization Command Words", "Operation Command Words";
// Intel 82371FB/SB (PIIX/PIIX3) datasheet, ELCR1/ELCR2 registers (0x4D0/0x4D1).
//
// Threading: every call happens on the VM's engine thread; no locking.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "vm/bus.hpp"

namespace potemkin::vm {

class Pic8259Pair {
  public:
    // Called whenever the INT output to the CPU may have risen (possibly spuriously), so the
    // CPU loop can be kicked. It may call output() but must not re-enter this object's writers.
    explicit Pic8259Pair(std::function<void()> on_output_change);
    Pic8259Pair(const Pic8259Pair&) = delete;
    Pic8259Pair& operator=(const Pic8259Pair&) = delete;

    // Drive input line 0-15 (8-15 are the slave's IR0-7). Out-of-range lines and line 2 are
    // ignored.
    void set_irq(unsigned line, bool level);
    // The INT pin to the CPU: an unmasked request exists that the master would deliver now.
    bool output() const;
    // The INTA cycle. The vector of the highest-priority deliverable request; the spurious
    // vector (base+7 of the chip whose request vanished) when there is none; nothing when the
    // master is uninitialised or in the middle of its initialisation sequence.
    std::optional<uint8_t> acknowledge();

    // Port accesses; port is the absolute port number. Ports not ours read 0xFF.
    uint8_t io_read(uint16_t port);
    void io_write(uint16_t port, uint8_t value);

    // Register 0x20-0x21, 0xA0-0xA1 and 0x4D0-0x4D1 on `bus` under `owner`. On failure nothing
    // stays registered.
    Result<void> attach(PortBus& bus, const std::string& owner);

    // Who hears level-triggered lines retired by an EOI (see the header comment). It may call
    // set_irq() and output(), but not the port writers or acknowledge().
    void set_eoi_listener(std::function<void(unsigned line)> listener) {
        eoi_listener_ = std::move(listener);
    }
    // Power-on state (a VM reset): both chips uninitialised, IMR 0xFF, ELCR 0, nothing requested
    // or in service. The input levels stay: they are the devices' to change.
    void reset();

    // For tests and tracing: the raw registers of chip 0 (master) or 1 (slave).
    uint8_t irr(unsigned chip) const { return chips_.at(chip).irr; }
    uint8_t isr(unsigned chip) const { return chips_.at(chip).isr; }
    uint8_t imr(unsigned chip) const { return chips_.at(chip).imr; }
    uint8_t vector_base(unsigned chip) const { return chips_.at(chip).vector_base; }

  private:
    struct Chip {
        uint8_t irr = 0;
        uint8_t isr = 0;
        uint8_t imr = 0xff;
        uint8_t elcr = 0;   // 1 = level-triggered
        uint8_t lines = 0;  // current input levels, for edge detection and level requests
        uint8_t vector_base = 0;
        uint8_t icw3 = 0;
        uint8_t icw4 = 0;
        unsigned init_step = 0;  // 0 ready; 2, 3, 4: the ICW expected next
        bool initialised = false;
        bool icw4_needed = false;
        bool single = false;
        bool auto_eoi = false;
        bool special_fully_nested = false;
        bool special_mask = false;
        bool read_isr = false;
        bool poll = false;
    };

    // The IR (0-7) the chip would deliver now, if any.
    std::optional<unsigned> deliverable(unsigned chip) const;
    void set_input(unsigned chip, unsigned ir, bool level);
    // Move IR from IRR to ISR as the INTA cycle does.
    void intack(unsigned chip, unsigned ir);
    // Propagate the slave's output to the master's IR2, then notify if the output is up.
    void update();
    void write_command(unsigned chip, uint8_t value);
    void write_data(unsigned chip, uint8_t value);
    uint8_t poll_read(unsigned chip);
    void write_elcr(unsigned chip, uint8_t value);
    // In-service bit `ir` of `chip` retired by an EOI: remember a level line for the listener.
    void retired(unsigned chip, unsigned ir);
    // Tell the listener about the lines retired since the last call.
    void report_eois();

    std::array<Chip, 2> chips_;
    std::function<void()> on_output_change_;
    std::function<void(unsigned)> eoi_listener_;
    uint16_t retired_ = 0;  // level lines retired and not reported yet (bit = line)
};

}  // namespace potemkin::vm
