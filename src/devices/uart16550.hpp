// SERIAL: a National Semiconductor 16550A UART (PC16550D data sheet, "Register Summary" and
// "Interrupt Identification Register") on the legacy COM ports, so an unmodified operating
// system finds `ttyS0` at 0x3F8 / IRQ 4 and prints its console there. The guest's output goes
// to the VM's console (what `potemkin run` prints), like the 0xE9 debug console.
//
// Implements: the twelve registers behind eight ports (RBR/THR, IER, IIR/FCR, LCR, MCR, LSR,
// MSR, SCR, and DLL/DLM while LCR.DLAB is set); the FIFO-enabled bits of IIR that make Linux's
// probe report a 16550A; interrupts by priority (receiver line status, received data, THR
// empty, modem status), driven on the ISA line only while MCR.OUT2 is set, as on a PC; the
// loopback mode (MCR bit 4: MSR mirrors MCR, written bytes are received) that Linux's probe
// checks; input fed by the VMM (receive()).
// Transmission is instantaneous: THR and the shift register are always empty again by the
// time the guest reads LSR, so THRE and TEMT stay set and a THR-empty interrupt (if enabled)
// follows every write.
// Not implemented: baud-rate timing, the FIFO trigger levels and character timeout (a
// received byte interrupts at once), break and parity/framing/overrun errors (never happen
// here), modem-status changes from outside.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string_view>

#include "vm/device.hpp"

namespace potemkin::devices {

struct Uart16550Settings {
    uint16_t port = 0x3f8;  // COM1
    unsigned irq = 4;
    std::function<void(std::string_view)> output;  // bytes the guest transmits
};

class Uart16550 final : public vm::Device {
  public:
    static Result<std::unique_ptr<Uart16550>> create(std::string id, vm::PortBus& ports,
                                                     vm::InterruptSink& interrupts,
                                                     Uart16550Settings settings);
    ~Uart16550() override;
    void reset() override;

    // Bytes arriving on the serial line (the VMM's input); engine thread.
    void receive(std::string_view bytes);

    // The register file, by offset from the base port (tests drive it directly).
    uint8_t read(unsigned offset);
    void write(unsigned offset, uint8_t value);

  private:
    Uart16550(std::string id, vm::PortBus& ports, vm::InterruptSink& interrupts,
              Uart16550Settings settings);
    void transmit(uint8_t byte);
    // The highest-priority pending interrupt as IIR's bits 3:0 (1: none).
    uint8_t pending_interrupt() const;
    void update_irq();
    uint8_t line_status() const;
    uint8_t modem_status() const;

    vm::PortBus& ports_;
    vm::InterruptSink& interrupts_;
    Uart16550Settings settings_;
    vm::RangeId range_ = 0;

    uint8_t ier_ = 0, lcr_ = 0, mcr_ = 0, scr_ = 0, fcr_ = 0;
    uint8_t dll_ = 0x0c, dlm_ = 0;  // 9600 baud at the PC's 1.8432 MHz clock
    std::deque<uint8_t> rx_;
    // THR-empty interrupt: raised when THR empties (every write here) or when the guest enables
    // it with THR empty; cleared by reading IIR while it is the reason, or by writing THR.
    bool thre_pending_ = false;
    bool line_level_ = false;
};

Result<void> register_uart16550(vm::DeviceClassRegistry& registry);

}  // namespace potemkin::devices
