// PciBus: PCI bus 0 behind configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data) and
// an ECAM window (PCI Express Base Spec section 7.2.2: bus << 20 | device << 15 | function << 12
// | offset, reaching the 4 KiB of a PCIe function), an i440FX host bridge at 00:00.0, and the
// one place where a function's config writes become bus registrations. Devices never touch the
// buses: a config write returns BusChanges, which PciBus applies all-or-nothing (docs/pci-bus.md).
#pragma once

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "pci/config_write.hpp"
#include "vm/device.hpp"

namespace potemkin::pci {

class HostBridge;

// What the bus needs from one PCI function.
class PciFunction {
  public:
    virtual ~PciFunction() = default;
    // Name for messages and the bus-range owner ("edu0").
    virtual const std::string& function_name() const = 0;
    // offset + size stays within one dword (the bus splits as mechanism #1 requires).
    virtual uint32_t config_read(uint32_t offset, unsigned size) = 0;
    // Apply the write; return the ranges it stops and starts decoding.
    virtual ConfigWriteResult config_write(uint32_t offset, unsigned size, uint32_t value) = 0;
    // The bus could not apply the last write's changes (a range collided): restore the config
    // state from before that write. The bus has already restored the old registrations.
    virtual void config_write_rejected() = 0;
    // The bus applied the last write's changes (the new ranges are registered).
    virtual void config_write_applied() {}
    // Who answers accesses to a decoded BAR (0-5) or the ROM (kRomBarIndex). Offsets passed
    // to the handler are relative to the BAR base.
    virtual vm::BusHandler bar_handler(int bar) = 0;
    // The guest's EOI retired an interrupt on the PIC line this function's INTx `pin` reaches,
    // while the function asserted it (set_intx(addr, pin, true) and not deasserted since). Called
    // synchronously inside the guest's EOI write; the function may call set_intx()
    // (docs/pci-bus.md, "EOI fan-out").
    virtual void intx_eoi(uint8_t pin) { (void)pin; }
};

struct PciAddress {
    uint8_t bus = 0, device = 0, function = 0;
    auto operator<=>(const PciAddress&) const = default;
    std::string to_string() const;  // "00:03.0"
};

// The Enhanced Configuration Access Mechanism's memory window (docs/pci-bus.md, "ECAM").
struct EcamSettings {
    // Aligned to the size, inside the PCI memory window and below its end 0xFEC0_0000 (the
    // I/O APIC, HPET and local APIC area of a PC).
    uint64_t base = 0xF800'0000;
    uint64_t size = 1 << 20;  // 1 MiB per bus: 1-256 MiB, a power of two
};
inline constexpr uint64_t kEcamBusSize = 1 << 20;
inline constexpr uint64_t kEcamLimit = 0xFEC0'0000;

struct PciBusSettings {
    // Guest RAM: a BAR may not decode over it (the write is rejected, see docs/pci-bus.md).
    const vm::GuestMemory* memory = nullptr;
    // PIRQ A-D → PIC lines. Lines must be configured level-triggered by the guest (ELCR).
    std::array<uint8_t, 4> pirq_lines = {10, 10, 11, 11};
    // nullopt: mechanism #1 only.
    std::optional<EcamSettings> ecam = EcamSettings{};
};

class PciBus final : public vm::Device {
  public:
    static Result<std::unique_ptr<PciBus>> create(std::string id, vm::DeviceContext& ctx,
                                                  const PciBusSettings& settings);
    ~PciBus() override;

    // Place a function at `slot` (1-31; 0 is the host bridge) or the next free slot. The
    // function must outlive its registration (remove_function or the bus's destruction).
    Result<PciAddress> add_function(PciFunction& fn, std::optional<uint8_t> slot,
                                    uint8_t function = 0);
    // Unhook every range the function decodes and forget it. Safe from a bus handler.
    void remove_function(const PciAddress& addr);

    // INTx of the function at `addr` through pin 1-4 (INTA-INTD), swizzled to a PIRQ and a PIC
    // line; lines shared by several functions are wired-OR.
    void set_intx(const PciAddress& addr, uint8_t pin, bool asserted);
    // The PIC line `addr`'s pin reaches (what a BIOS writes to the interrupt-line register).
    uint8_t intx_line(const PciAddress& addr, uint8_t pin) const;
    // What a PC BIOS does at POST for an operating system that routes PCI interrupts by the
    // interrupt-line register (Linux without ACPI or a $PIR table): every function with an
    // interrupt pin gets the PIC line its pin reaches written there, through the ordinary
    // config-write path. Returns the lines written (to be made level-triggered in the ELCR).
    std::vector<uint8_t> assign_interrupt_lines();
    // The guest EOId a level-triggered interrupt on PIC `line` (the interrupt sink's EOI
    // notification calls this): every function asserting a pin routed to `line` hears
    // intx_eoi(pin). Wired-OR: all of them, since the guest's handler may have served any.
    void eoi(unsigned line);
    // The function at `addr` returned to its power-on state (its own vm::Device::reset): it
    // decodes nothing and asserts no INTx. Unhooks its ranges and releases its pins.
    void function_reset(const PciAddress& addr);

    // Mechanism #1, for tests and for the port handlers.
    uint32_t config_read(const PciAddress& addr, uint32_t offset, unsigned size);
    void config_write(const PciAddress& addr, uint32_t offset, unsigned size, uint32_t value);

    uint64_t rejected_writes() const { return rejected_writes_; }
    // The ECAM window, when there is one.
    const std::optional<EcamSettings>& ecam() const { return settings_.ecam; }

    // vm::Device: the address latch and the reset control register clear, the host bridge
    // returns to its power-on state, and every function's ranges and INTx pins are released
    // (a reset function decodes nothing). Functions reset their own state with their devices.
    void reset() override;

    // The PIIX3 reset control register at 0xCF9 (docs/guest-abi.md, "VM reset").
    uint8_t reset_control() const { return reset_control_; }

  private:
    // A bus registration made for a function's BAR: which space, which BAR, at which base.
    struct RangeKey {
        vm::Space space = vm::Space::io;
        int bar = 0;
        uint64_t base = 0;
        auto operator<=>(const RangeKey&) const = default;
    };
    struct Registration {
        vm::RangeId id = 0;
        uint64_t length = 0;
    };
    struct Attached {
        PciFunction* fn = nullptr;
        std::map<RangeKey, Registration> ranges;
        bool warned = false;  // a refused write has been logged at warn level
    };

    PciBus(std::string id, vm::DeviceContext& ctx, const PciBusSettings& settings);

    Result<void> attach();
    Attached* find_attached(const PciAddress& addr);
    const Attached* find_attached(const PciAddress& addr) const;
    // Whether function 0 of `device` has other functions beside it.
    bool multi_function(uint8_t device) const;
    uint32_t read_dword_part(const PciAddress& addr, uint32_t offset, unsigned size);
    void write_dword_part(const PciAddress& addr, uint32_t offset, unsigned size, uint32_t value);
    // Apply a function's bus changes all-or-nothing; false when they were refused.
    bool apply(const PciAddress& addr, Attached& entry, const BusChanges& changes);
    Result<vm::RangeId> register_range(Attached& entry, const RangeKey& key, uint64_t length,
                                       std::string* conflict_owner);
    void unregister_range(const RangeKey& key, vm::RangeId id);
    void unhook(Attached& entry);
    void drive_line(uint8_t line);
    // Mechanism #1 port handlers.
    uint64_t address_port_read(uint64_t offset, unsigned size) const;
    void address_port_write(uint64_t offset, unsigned size, uint64_t value);
    uint64_t data_port_read(uint64_t offset, unsigned size);
    void data_port_write(uint64_t offset, unsigned size, uint64_t value);
    void reset_control_write(uint8_t value);
    // ECAM window handlers: `offset` from the window's base.
    uint64_t ecam_read(uint64_t offset, unsigned size);
    void ecam_write(uint64_t offset, unsigned size, uint64_t value);
    // The function and register the latch selects for a data port access, or nullopt when
    // the enable bit is clear.
    std::optional<std::pair<PciAddress, uint32_t>> latched(uint64_t data_offset) const;

    vm::DeviceContext& ctx_;
    PciBusSettings settings_;
    uint32_t address_latch_ = 0;  // 0xCF8
    std::optional<vm::RangeId> address_range_, data_range_, ecam_range_;
    std::unique_ptr<HostBridge> host_bridge_;
    std::map<PciAddress, Attached> functions_;           // bus 0 only, the host bridge included
    std::set<std::pair<PciAddress, uint8_t>> asserted_;  // (function, pin) driving INTx
    uint64_t rejected_writes_ = 0;
    uint8_t reset_control_ = 0;  // 0xCF9: bit 1 system reset (hard) as last written
    uint64_t eoi_listener_ = 0;  // handle from the interrupt sink
};

Result<void> register_pci_bus(vm::DeviceClassRegistry& registry);

}  // namespace potemkin::pci
