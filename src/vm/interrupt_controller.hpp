// InterruptController: the VM's interrupt wiring. Devices raise ISA/INTx lines and send MSIs
// here (InterruptSink); the CPU loop asks it for each vCPU's next vector (InterruptSource).
//
// Implements:
// - The 8259A pair (Pic8259Pair) for lines 0-15, wired to vCPU 0 only, as in the PC's
//   "virtual wire" mode with the BSP's LINT0 programmed as ExtINT. The LINT0 LVT entry is not
//   consulted, so a guest that never touches its local APIC still gets PIC interrupts.
// - One LocalApic per vCPU, APIC ID = vCPU index, all at 0xFEE00000: an MMIO access reaches
//   the APIC of the vCPU that makes it (current_vcpu()). Only 4-byte accesses reach a
//   register; other sizes read 0 and writes are ignored.
// - MSI (PCI Local Bus spec 3.0, 6.8 "Message Signaled Interrupts"; the address/data format
//   is Intel SDM vol. 3A "Message Signalled Interrupts"): address 0xFEExxxxx (the high 32
//   bits zero), destination ID bits 19:12, destination mode bit 2 (0 physical, 1 logical);
//   data vector bits 7:0, delivery mode bits 10:8, trigger mode bit 15.
//   - Physical mode: the APIC whose ID matches; 0xFF broadcasts to every APIC.
//   - Logical mode: flat model only: every APIC whose LDR bits 31:24 share a bit with the
//     destination. APICs in the cluster model (DFR bits 31:28 = 0) never match.
//   - Delivery modes fixed (0) and lowest priority (1). Lowest priority picks one APIC among
//     the matching ones: the lowest TPR, ties to the lowest APIC ID (real hardware arbitrates
//     on the APR; the choice is the chipset's).
//   - Dropped and counted: an address outside 0xFEExxxxx, any other delivery mode (SMI, NMI,
//     INIT, SIPI, ExtINT), a destination no APIC matches.
// - IPIs written to a LocalApic's ICR with destination shorthand "none", "all including
//   self" or "all excluding self" are routed like an MSI (fixed and lowest priority only;
//   other delivery modes dropped and counted). "Self" is handled inside the LocalApic.
//
// Does not implement: an I/O APIC (PCI INTx and ISA lines go through the PIC only), NMI,
// INIT/SIPI (every vCPU starts running at entry, see guest-abi.md), the MSI redirection
// hint (bit 3) beyond what lowest priority already does.
//
// Threading: every call happens on the VM's engine thread; no locking.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "common/result.hpp"
#include "vm/bus.hpp"
#include "vm/interrupts.hpp"
#include "vm/lapic.hpp"
#include "vm/pic.hpp"

namespace potemkin::vm {

class InterruptController final : public InterruptSink, public InterruptSource {
  public:
    // kick: called whenever an interrupt may have become deliverable to some vCPU.
    InterruptController(unsigned vcpu_count, std::function<void()> kick);
    InterruptController(const InterruptController&) = delete;
    InterruptController& operator=(const InterruptController&) = delete;

    // InterruptSink
    void set_irq(unsigned line, bool level) override;
    void send_msi(uint64_t address, uint32_t data) override;
    // EOIs of level-triggered PIC lines (Pic8259Pair's EOI notification). The local APICs
    // report nothing: MSIs are edge and there is no I/O APIC whose level lines an APIC EOI
    // would retire.
    uint64_t add_eoi_listener(EoiListener listener) override;
    void remove_eoi_listener(uint64_t handle) override;

    // A VM reset: the PIC pair and every local APIC back to their power-on state (the PIC's
    // input levels stay; the devices drive them). Counters and EOI listeners stay.
    void reset();

    // InterruptSource: the local APIC first, then (vCPU 0 only) the PIC.
    bool has_interrupt(unsigned vcpu) override;
    std::optional<uint8_t> acknowledge(unsigned vcpu) override;

    // Register the PIC ports (owner "pic") and the local APIC page (owner "lapic"). On
    // failure nothing stays registered.
    Result<void> attach(PortBus& ports, MmioBus& mmio, std::function<unsigned()> current_vcpu);

    Pic8259Pair& pic() { return pic_; }
    LocalApic& lapic(unsigned vcpu) { return *lapics_.at(vcpu); }
    unsigned vcpu_count() const { return static_cast<unsigned>(lapics_.size()); }

    // MSIs dropped, by reason.
    uint64_t msi_bad_address() const { return msi_bad_address_; }
    uint64_t msi_bad_delivery_mode() const { return msi_bad_delivery_mode_; }
    uint64_t msi_no_destination() const { return msi_no_destination_; }
    uint64_t msi_dropped() const {
        return msi_bad_address_ + msi_bad_delivery_mode_ + msi_no_destination_;
    }
    // IPIs dropped (unsupported delivery mode or no destination).
    uint64_t ipi_dropped() const { return ipi_dropped_; }

  private:
    struct Message {
        uint8_t vector;
        uint8_t delivery_mode;
        bool logical;
        bool level_triggered;
        uint8_t destination;
    };
    // Deliver to the APICs the message addresses; `exclude` is skipped (for "all excluding
    // self"), `broadcast` ignores the destination. False when nothing was delivered.
    bool deliver(const Message& m, bool broadcast, std::optional<unsigned> exclude);
    bool matches(const LocalApic& a, const Message& m) const;
    void route_ipi(unsigned from, const LocalApic::Ipi& ipi);

    void make_lapics(unsigned vcpu_count);

    std::function<void()> kick_;
    Pic8259Pair pic_;
    std::vector<std::pair<uint64_t, EoiListener>> eoi_listeners_;
    uint64_t next_listener_ = 1;
    std::vector<std::unique_ptr<LocalApic>> lapics_;
    uint64_t msi_bad_address_ = 0;
    uint64_t msi_bad_delivery_mode_ = 0;
    uint64_t msi_no_destination_ = 0;
    uint64_t ipi_dropped_ = 0;
};

}  // namespace potemkin::vm
