// The host bridge at 00:00.0: an Intel 82441FX (i440FX) PMC identity, as QEMU's "pc" machine
// and most x86 firmware expect (vendor 8086, device 1237, class 06/00/00 "host bridge",
// header type 0). It decodes nothing: its config space is a plain type 0 header whose command
// register keeps its writable bits, and no BARs. Chipset registers (PAM, SMRAM, DRAM rows)
// are not modelled; they read 0 and ignore writes.
#pragma once

#include <memory>
#include <string>

#include "pci/config_space.hpp"
#include "pci/pci_bus.hpp"

namespace potemkin::pci {

inline constexpr uint16_t kHostBridgeVendorId = 0x8086;
inline constexpr uint16_t kHostBridgeDeviceId = 0x1237;
inline constexpr uint32_t kHostBridgeClassCode = 0x06'0000;
inline constexpr uint8_t kHostBridgeRevision = 0x02;  // as QEMU's i440FX

class HostBridge final : public PciFunction {
  public:
    // `name` is the function name in messages ("pci0.host").
    static Result<std::unique_ptr<HostBridge>> create(std::string name);

    const std::string& function_name() const override { return name_; }
    uint32_t config_read(uint32_t offset, unsigned size) override;
    ConfigWriteResult config_write(uint32_t offset, unsigned size, uint32_t value) override;
    void config_write_rejected() override {}  // it never asks for bus changes
    vm::BusHandler bar_handler(int bar) override;
    // Back to the power-on configuration space.
    void reset();

  private:
    HostBridge(std::string name, ConfigSpace cs) : name_(std::move(name)), cs_(std::move(cs)) {}
    std::string name_;
    ConfigSpace cs_;
};

}  // namespace potemkin::pci
