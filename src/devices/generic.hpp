// GENERIC: Palacios' generic device (palacios/src/devices/generic.c), docs/generic.md.
// Hooks port and MMIO ranges and, per range, ignores accesses, prints them, or passes them
// through: to a projected host device (forward="host_device", any hostdev URL) or to the
// host's real hardware (forward="physical_device", ioperm + inb/outb and /dev/mem, opt-in).
//
// State: ranges, modes, the host device connection, the physical-access resources.
// Features: the four Palacios modes; host-device forwarding with absolute port numbers and
//   guest-physical addresses as region offsets (regions 8 and 9, see kPortRegion) through the
//   host link PCI_FRONT uses too (devices/host_link.hpp: complete OpenContext, connection
//   state, log-once failure counting, DMA checked against guest RAM); optional INTx routing
//   (irq="N"), with the guest's EOI of that line passed on as the host device's ack_intx()
//   while the device holds it up and is connected (as PCI_FRONT does, docs/pci-front.md
//   "INTx and EOI"; the line must be level-triggered in the ELCR for EOIs to be reported).
// Missing: MSI delivery (GENERIC has no MSI address/data to send); forwarding of a VM reset
//   to the host device; physical passthrough from any thread but the one that created the
//   device (ioperm() permissions are per thread).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/host_link.hpp"
#include "hostdev/host_device.hpp"
#include "vm/device.hpp"

namespace potemkin::devices {

class Generic final : public vm::Device, private HostLinkOwner {
  public:
    enum class Mode : uint8_t { passthrough, print_and_passthrough, ignore, print_and_ignore };
    enum class Forward : uint8_t { none, host_device, physical_device };

    // Region of the host device that receives port accesses; the offset is the absolute port
    // number (Palacios' host_dev interface passes the port itself, so one region serves every
    // <ports> range).
    static constexpr uint32_t kPortRegion = 8;
    // Region that receives memory accesses; the offset is the absolute guest-physical address.
    static constexpr uint32_t kMemoryRegion = 9;

    struct Range {
        vm::Space space = vm::Space::io;
        uint64_t start = 0;
        uint64_t end = 0;  // inclusive, as in Palacios' configuration
        Mode mode = Mode::ignore;
        // Prefix for errors about this range ("vm.xml:3: <ports>"); empty: the device's.
        std::string where;
    };

    struct Settings {
        Forward forward = Forward::none;
        std::string hostdev;          // URL, with Forward::host_device
        bool allow_physical = false;  // the opt-in for Forward::physical_device
        std::optional<unsigned> irq;  // where the host device's INTx goes; none: dropped
        std::vector<Range> ranges;
        // Where hostdev URLs are opened; null: hostdev::TransportRegistry::builtin().
        const hostdev::TransportRegistry* transports = nullptr;
        // Prefix for errors about the device as a whole; empty: "GENERIC <id>".
        std::string where;
        // The configuring element, if any (used by create() only): relative paths in `hostdev`
        // are resolved against its file's directory and the URL may name its <files>.
        const vm::ConfigElement* element = nullptr;
    };

    // Counters for what the device could not do; the first of each kind is also logged.
    // failed_reads, failed_writes, failed_acks and failed_dma are the host link's.
    struct Stats {
        uint64_t failed_reads = 0;   // host device reads answered with all-ones
        uint64_t failed_writes = 0;  // host device writes that failed (dropped)
        uint64_t dropped_intx = 0;   // INTx changes with no irq configured
        uint64_t failed_acks = 0;    // ack_intx() calls on an EOI that failed
        uint64_t dropped_msi = 0;    // MSI vectors (GENERIC cannot deliver them)
        uint64_t failed_dma = 0;     // DMA outside guest RAM
    };

    // Validates the settings, opens the host device (or acquires the physical resources) and
    // hooks every range. Nothing stays registered when it fails.
    static Result<std::unique_ptr<Generic>> create(std::string id, Settings s,
                                                   vm::DeviceContext& ctx);
    // Parses a <device class="GENERIC"> element; errors name the file, line and element.
    static Result<std::unique_ptr<Generic>> from_config(
        const vm::ConfigElement& e, vm::DeviceContext& ctx,
        const hostdev::TransportRegistry* transports = nullptr);
    ~Generic() override;

    const std::vector<Range>& ranges() const { return settings_.ranges; }
    Stats stats() const;
    bool host_disconnected() const { return link_.is_open() && !link_.connected(); }

    static std::string_view mode_name(Mode m);

  private:
    struct Hooked;

    Generic(std::string id, Settings s, vm::DeviceContext& ctx);
    Result<void> validate() const;
    Result<void> open_host();
    Result<void> hook(size_t index);
    Error device_error(std::string_view message, int sys_errno = 0) const;

    uint64_t read(const Hooked& h, uint64_t offset, unsigned size);
    void write(const Hooked& h, uint64_t offset, unsigned size, uint64_t value);
    uint64_t forward_read(const Hooked& h, uint64_t address, unsigned size);
    void forward_write(const Hooked& h, uint64_t address, unsigned size, uint64_t value);
    void print(const Hooked& h, bool is_write, uint64_t address, unsigned size, uint64_t value);

    // HostLinkOwner: the device's events, after the link's bookkeeping.
    void intx(bool asserted) override;
    void msi(unsigned vector) override;
    // The guest EOId a level-triggered interrupt on `line` (the interrupt sink's listener).
    void eoi(unsigned line);

    vm::DeviceContext& ctx_;
    Settings settings_;
    HostLink link_;  // open with Forward::host_device
    std::vector<std::unique_ptr<Hooked>> hooked_;
    uint64_t dropped_intx_ = 0, dropped_msi_ = 0;
    bool intx_drop_logged_ = false;
    bool msi_drop_logged_ = false;
    uint64_t eoi_listener_ = 0;  // handle from the interrupt sink
};

// Registers "GENERIC". `transports` null: hostdev::TransportRegistry::builtin() (tests pass
// their own registry to project fake host devices).
Result<void> register_generic(vm::DeviceClassRegistry& registry,
                              const hostdev::TransportRegistry* transports = nullptr);

}  // namespace potemkin::devices
