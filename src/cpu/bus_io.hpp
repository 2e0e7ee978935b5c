// The CpuIo every engine is given: guest port and MMIO accesses go straight to the VM's buses.
// The class is final and its methods inline, so an engine that knows it has a BusIo (Unicorn's
// hooks are made for it) calls the bus lookup directly from its hook: no virtual call, no
// allocation. Through a CpuIo& it is one virtual call, as for any other CpuIo. Interrupts, HLT and
// stops do not pass through here: the engine reports HLT from run() and the machine's run loop
// injects interrupts.
#pragma once

#include <cstdint>

#include "common/address.hpp"
#include "cpu/cpu_engine.hpp"
#include "vm/bus.hpp"

namespace potemkin::cpu {

class BusIo final : public CpuIo {
  public:
    BusIo(vm::PortBus& ports, vm::MmioBus& mmio) : ports_(ports), mmio_(mmio) {}

    uint32_t port_in(uint16_t port, unsigned size) override {
        return static_cast<uint32_t>(ports_.read(Port(port), size));
    }
    void port_out(uint16_t port, unsigned size, uint32_t value) override {
        ports_.write(Port(port), size, value);
    }
    uint64_t mmio_read(uint64_t address, unsigned size) override {
        return mmio_.read(Gpa(address), size);
    }
    void mmio_write(uint64_t address, unsigned size, uint64_t value) override {
        mmio_.write(Gpa(address), size, value);
    }

  private:
    vm::PortBus& ports_;
    vm::MmioBus& mmio_;
};

}  // namespace potemkin::cpu
