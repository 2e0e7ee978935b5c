// LocalApic: a minimal xAPIC (memory-mapped at 0xFEE00000, 4 KiB), enough to receive MSIs and
// fixed IPIs and deliver them to its vCPU with the architectural priority rules.
//
// Implements (offsets per Intel SDM vol. 3A, chapter "Advanced Programmable Interrupt
// Controller (APIC)", table "Local APIC Register Address Map"):
// - ID (0x20, read-only: bits 31:24 = the APIC ID given at construction), version (0x30,
//   0x00050014: version 0x14, 6 LVT entries, no EOI-broadcast suppression).
// - TPR (0x80, bits 7:0), APR (0x90, reads 0), PPR (0xA0, computed from TPR and the highest
//   in-service vector), EOI (0xB0: clears the highest ISR bit; the value written is ignored).
// - LDR (0xD0, bits 31:24), DFR (0xE0, bits 31:28; reset 0xFFFFFFFF, flat model).
// - SVR (0xF0: spurious vector bits 7:0, software enable bit 8, focus check bit 9 stored).
// - ISR, TMR, IRR (0x100-0x270), read-only.
// - ESR (0x280): errors collect internally and a write latches them into the readable
//   register, as the SDM describes; the only error raised is "received illegal vector"
//   (bit 6, a vector 0-15 given to accept()) and "send illegal vector" (bit 5, an IPI with
//   a vector 0-15). The LVT error entry is stored but no error interrupt is raised.
// - LVT timer, thermal, performance counter, LINT0, LINT1, error (0x320-0x370): stored with
//   their writable bits; delivery status and remote IRR read 0.
// - ICR (0x300/0x310): stored; a write to 0x300 sends the IPI. A fixed IPI to "self" is
//   accepted locally; every other IPI goes to the handler set with set_ipi_handler() (the
//   InterruptController routes them between vCPUs), and is dropped when there is none.
//   Delivery status always reads idle.
// - has_interrupt()/acknowledge(): the highest IRR vector is deliverable when the APIC is
//   software-enabled and its priority class (bits 7:4) is above PPR's class.
//
// Software-disabled state (SVR bit 8 clear, the reset state with SVR = 0xFF): following KVM,
// fixed interrupts that arrive while disabled are dropped (and counted), which the SDM leaves
// open; what is already in IRR/ISR is held and delivered again once re-enabled, as the SDM
// says (10.4.7.2). Disabling sets every LVT mask bit, and masks cannot be cleared while
// disabled.
//
// Does not implement:
// - The APIC timer: initial count (0x380) and divide configuration (0x3E0) are stored,
//   current count (0x390) reads 0, and nothing ever fires.
// - x2APIC, the IA32_APIC_BASE MSR (the APIC cannot be hardware-disabled or relocated),
//   CMCI LVT (0x2F0 reads 0), NMI/SMI/INIT/SIPI/ExtINT delivery, the LINT pins (the PIC
//   reaches vCPU 0 without going through LINT0; see interrupt_controller.hpp), the EOI
//   message to an I/O APIC for level-triggered vectors (there is no I/O APIC), the
//   "illegal register address" error, and the spurious-vector INTA (acknowledge() returns
//   nothing instead, as the InterruptSource contract asks).
// - Non-architectural accesses: only aligned 32-bit accesses to the first dword of a 16-byte
//   register slot reach a register. mmio_read() of any other offset returns 0 and
//   mmio_write() ignores it; the bus glue (InterruptController) does the same for accesses
//   that are not 4 bytes wide.
//
// Threading: every call happens on the VM's engine thread; no locking.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>

namespace potemkin::vm {

class LocalApic {
  public:
    static constexpr uint64_t kBase = 0xfee00000;
    static constexpr uint64_t kSize = 0x1000;

    // What an IPI asks for, for the router outside this APIC.
    struct Ipi {
        uint8_t vector;
        uint8_t delivery_mode;  // ICR bits 10:8
        bool logical;           // ICR bit 11: destination mode
        bool level_triggered;   // ICR bit 15
        uint8_t shorthand;      // ICR bits 19:18: 0 none, 1 self, 2 all incl. self, 3 all excl.
        uint8_t destination;    // ICR bits 63:56
    };

    // on_change: called whenever a deliverable interrupt may have appeared (spurious calls
    // are possible). It may call has_interrupt() but must not re-enter the writers.
    LocalApic(uint8_t apic_id, std::function<void()> on_change);
    LocalApic(const LocalApic&) = delete;
    LocalApic& operator=(const LocalApic&) = delete;

    uint32_t mmio_read(uint32_t offset);
    void mmio_write(uint32_t offset, uint32_t value);

    // An interrupt message arrives (MSI or IPI with fixed/lowest-priority delivery).
    void accept(uint8_t vector, bool level_triggered);
    bool has_interrupt() const;
    // The vector to deliver now (IRR->ISR), or nothing when none is deliverable.
    std::optional<uint8_t> acknowledge();

    void set_ipi_handler(std::function<void(const Ipi&)> handler) {
        ipi_handler_ = std::move(handler);
    }

    uint8_t id() const { return id_; }
    bool software_enabled() const { return svr_ & 0x100; }
    uint8_t tpr() const { return static_cast<uint8_t>(tpr_); }
    uint8_t ppr() const;
    // Flat-model logical destination: LDR bits 31:24; the DFR model (0xF flat, 0x0 cluster).
    uint8_t logical_id() const { return static_cast<uint8_t>(ldr_ >> 24); }
    bool flat_model() const { return (dfr_ >> 28) == 0xf; }
    uint64_t dropped_while_disabled() const { return dropped_while_disabled_; }
    uint64_t illegal_vectors() const { return illegal_vectors_; }

  private:
    using Bits256 = std::array<uint32_t, 8>;
    static std::optional<uint8_t> highest(const Bits256& b);
    static void set_bit(Bits256& b, uint8_t v) { b[v / 32] |= 1u << (v % 32); }
    static void clear_bit(Bits256& b, uint8_t v) { b[v / 32] &= ~(1u << (v % 32)); }
    void notify() {
        if (on_change_ && has_interrupt()) on_change_();
    }
    void send_ipi();

    uint8_t id_;
    std::function<void()> on_change_;
    std::function<void(const Ipi&)> ipi_handler_;
    uint32_t tpr_ = 0;
    uint32_t ldr_ = 0;
    uint32_t dfr_ = 0xffffffff;
    uint32_t svr_ = 0xff;
    uint32_t esr_ = 0;          // what reads see
    uint32_t esr_pending_ = 0;  // collected since the last ESR write
    uint32_t icr_low_ = 0;
    uint32_t icr_high_ = 0;
    uint32_t timer_initial_ = 0;
    uint32_t timer_divide_ = 0;
    std::array<uint32_t, 6> lvt_;  // timer, thermal, perf, LINT0, LINT1, error
    Bits256 irr_{};
    Bits256 isr_{};
    Bits256 tmr_{};
    uint64_t dropped_while_disabled_ = 0;
    uint64_t illegal_vectors_ = 0;
};

}  // namespace potemkin::vm
