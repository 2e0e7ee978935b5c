// How devices raise interrupts, and how the CPU loop takes them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

namespace potemkin::vm {

// Where devices send interrupts: legacy lines (ISA IRQ 0-15; PCI INTx after swizzling) and
// message-signalled interrupts (an MSI/MSI-X address/data pair as written to 0xFEExxxxx).
class InterruptSink {
  public:
    virtual ~InterruptSink() = default;
    // Drive a line. Edge-triggered lines fire on a 0->1 transition; level-triggered lines
    // (ELCR) stay requested while high.
    virtual void set_irq(unsigned line, bool level) = 0;
    virtual void send_msi(uint64_t address, uint32_t data) = 0;

    // EOI notification for level-triggered lines (docs/interrupts.md, "EOI notification"): the
    // listener hears `line` each time the guest's EOI retires an in-service level-triggered
    // interrupt on it (in auto-EOI mode: when the interrupt is acknowledged). It runs on the
    // engine thread, synchronously inside the guest's EOI write, before the guest's next
    // instruction, and may call set_irq(). Edge lines and MSIs are never reported. This is what
    // lets a device whose line was masked or latched on delivery (VFIO's auto-masked INTx, an
    // irqfd with a resample fd) re-evaluate its level. Sinks without a PIC report nothing.
    using EoiListener = std::function<void(unsigned line)>;
    // Returns a handle for remove_eoi_listener (never 0 from a sink that reports EOIs).
    virtual uint64_t add_eoi_listener(EoiListener listener) {
        (void)listener;
        return 0;
    }
    virtual void remove_eoi_listener(uint64_t handle) { (void)handle; }
};

// What the CPU loop asks for each vCPU.
class InterruptSource {
  public:
    virtual ~InterruptSource() = default;
    // Whether an interrupt is waiting that the vCPU would take when EFLAGS.IF=1.
    virtual bool has_interrupt(unsigned vcpu) = 0;
    // The INTA cycle: the vector to deliver now (moves it to in-service), or nothing when the
    // request went away in the meantime.
    virtual std::optional<uint8_t> acknowledge(unsigned vcpu) = 0;
};

}  // namespace potemkin::vm
