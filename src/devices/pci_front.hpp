// PCI_FRONT: projects a PCI function implemented outside the VMM (any hostdev transport) into
// the guest (ARCHITECTURE.md §4, docs/pci-front.md). Descends from Palacios' pci_front.c and
// fixes what the seed left out or got wrong.
//
// State: a local ConfigSpace pulled from the host device at open. BARs 0-5, the ROM BAR, the
// command and status registers, the interrupt line and the MSI/MSI-X capabilities are shadowed
// here (the guest's view of them is decided locally); every other config byte is forwarded to
// the host device. BAR sizes and kinds come from region_info(), never from BAR values. MSI-X
// table and PBA are emulated here (pci::MsixTable); the rest of each BAR is forwarded.
//
// The host device hangs on a HostLink (devices/host_link.hpp), shared with GENERIC: it opens
// the URL with a complete OpenContext, keeps the connection state, counts and logs failures,
// forwards EOIs and checks DMA against guest RAM; what is PCI's (shadowing, MSI/MSI-X delivery,
// bus mastering, direct mapping) stays here.
//
// Features: sizing never maps; 64-bit BAR moves never expose the half-written intermediate;
// decode gated by the command register; ROM with enable bit; W1C status; INTx through the PCI
// bus gated by interrupt-disable; MSI and MSI-X with masking and pending delivery; DMA
// bounds-checked against guest RAM and gated by bus mastering; all-ones on failed reads.
//
// INTx EOI: when the guest's EOI retires an interrupt on the line this function's INTx drives
// (PciBus::eoi → intx_eoi), the host device hears ack_intx(), so a transport that latched or
// masked the line on delivery resamples it (docs/pci-front.md, "INTx and EOI").
//
// VM reset (reset()): direct mappings and bus ranges dropped, the shadow back to its state at
// open (BARs unassigned, command 0, MSI/MSI-X off, a fresh MSI-X table), then the host device's
// reset() (vfio-user DEVICE_RESET, the in-process model's reset).
//
// PCI Express: a device whose capability list has the PCI Express capability is pulled whole
// (4 KiB); the extended space from 0x100 is forwarded byte for byte (the device's masks apply
// there), its chain checked at open; the PCIe capability's Device Status is shadowed with its
// RW1C error bits, written through. Over mpqemu the device has 256 bytes (QEMU's limit).
//
// Missing: function-level reset (FLR) from the guest.
//
// Direct mapping: the page-aligned sparse-mmap areas a BAR region reports (RegionInfo::
// mmap_areas with an fd) are mmapped here at open and mapped straight into guest-physical
// space (DeviceContext::map_direct) while the BAR decodes, so accesses there do not exit;
// they are unmapped when the BAR stops decoding or moves. The rest of the BAR (and areas that
// are not whole 4 KiB pages or overlap the MSI-X table or PBA) traps and is forwarded. After
// the transport reconnects (reconnected()), the region infos are asked for again and the new
// fds replace the old mappings, wherever the BARs decode then.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/shrink_guard.hpp"
#include "devices/host_link.hpp"
#include "hostdev/host_device.hpp"
#include "pci/bar.hpp"
#include "pci/capabilities.hpp"
#include "pci/config_space.hpp"
#include "pci/pci_bus.hpp"
#include "vm/device.hpp"

namespace potemkin::devices {

struct PciFrontSettings {
    std::string hostdev;                                     // URL, e.g. "inproc:edu"
    pci::PciBus* bus = nullptr;                              // null only in unit tests
    std::optional<uint8_t> slot;                             // nullopt: the next free slot
    const hostdev::TransportRegistry* transports = nullptr;  // null: TransportRegistry::builtin()
    // For error messages: open failures become attribute errors of this element.
    const vm::ConfigElement* element = nullptr;
    // The attribute open failures are reported on (PCI_PASSTHROUGH's device= names the host
    // device too).
    std::string hostdev_attribute = "hostdev";
};

class PciFront final : public vm::Device, public pci::PciFunction, private HostLinkOwner {
  public:
    // Opens the host device, pulls its config space and region info, builds the local shadow
    // and places the function on the bus. Errors name the URL (and the element when given).
    static Result<std::unique_ptr<PciFront>> create(std::string id, vm::DeviceContext& ctx,
                                                    const PciFrontSettings& settings);
    // Unhooks from the bus (ranges and INTx), then closes the host device.
    ~PciFront() override;

    // ---- pci::PciFunction ------------------------------------------------------------------
    const std::string& function_name() const override { return id(); }
    uint32_t config_read(uint32_t offset, unsigned size) override;
    pci::ConfigWriteResult config_write(uint32_t offset, unsigned size, uint32_t value) override;
    void config_write_rejected() override;
    void config_write_applied() override;
    vm::BusHandler bar_handler(int bar) override;
    void intx_eoi(uint8_t pin) override;

    // ---- vm::Device --------------------------------------------------------------------------
    void reset() override;

    // ---- Introspection (tests, probe) ------------------------------------------------------
    std::optional<pci::PciAddress> address() const { return address_; }
    const pci::ConfigSpace& shadow() const { return cs_; }
    const pci::BarLayout& layout() const { return layout_; }
    // Whether config byte `offset` is decided locally (false: forwarded to the host device).
    bool shadowed(uint32_t offset) const;
    // Failed host-device calls so far (each kind is logged once, all are counted).
    uint64_t host_errors() const { return link_.stats().host_errors(); }
    const HostLinkStats& host_stats() const { return link_.stats(); }
    bool is_disconnected() const { return !link_.connected(); }
    // BAR accesses that trapped and were handled here (forwarded or MSI-X), all BARs.
    uint64_t trapped_accesses() const { return trapped_accesses_; }
    // Where BAR `bar`'s mmap areas are mapped into the guest right now (nullopt: not mapped).
    std::optional<uint64_t> direct_base(int bar) const;

  private:
    struct Irqs {
        hostdev::IrqKind kind = hostdev::IrqKind::intx;
        uint32_t count = 1;
        bool operator==(const Irqs&) const = default;
    };
    // One half of a 64-bit BAR whose write is not decoded yet (see config_write).
    struct Pending64 {
        int bar = 0;   // the BAR's low slot
        int half = 0;  // 0 low dword, 1 high dword
        uint32_t old = 0;
    };
    // What config_write_rejected() restores.
    struct Snapshot {
        bool valid = false;
        uint32_t offset = 0;
        unsigned size = 0;
        std::array<uint8_t, 4> bytes{};
        std::optional<Pending64> pending;
    };

    PciFront(std::string id, vm::DeviceContext& ctx, pci::PciBus* bus);
    Result<void> open(const PciFrontSettings& s);
    Result<void> build_shadow(std::vector<uint8_t> image);
    Result<void> shadow_msi(const std::vector<uint8_t>& image, uint8_t cap);
    Result<void> shadow_msix(const std::vector<uint8_t>& image, uint8_t cap);
    Result<void> shadow_pcie(const std::vector<uint8_t>& image, uint8_t cap);
    void mark_shadowed(uint32_t offset, uint32_t length);

    uint16_t command() const;
    pci::DecodeSnapshot decode_now();
    std::optional<Pending64> next_pending(uint32_t offset, uint32_t dword_before);
    void after_config_change(uint32_t offset, unsigned size);
    void update_intx();
    void update_irqs();
    void send(const std::vector<pci::MsiMessage>& messages);
    void send(const pci::MsiMessage& m);

    uint64_t region_access_read(int bar, uint64_t offset, unsigned size);
    void region_access_write(int bar, uint64_t offset, unsigned size, uint64_t value);

    // ---- HostLinkOwner: the device's events, after the link's bookkeeping -------------------
    void intx(bool asserted) override;
    void msi(unsigned vector) override;
    const char* dma_refusal() const override;
    void link_restored() override;
    // Direct mapping of mmap areas (see the header comment).
    void open_direct();
    void open_direct_bar(int bar);
    void refresh_direct();
    void sync_direct();
    void unmap_direct(int bar);
    void release_direct(int bar);
    void report_shrunk(int bar);

    struct DirectBar {
        uint8_t* host = nullptr;  // the whole region, mmapped from the region fd
        uint64_t length = 0;
        std::vector<hostdev::MmapArea> areas;  // page-aligned, outside MSI-X structures
        std::optional<uint64_t> mapped_at;     // guest base while mapped
        ShrinkGuard guard;                     // absorbs faults if the server shrinks the file
        bool shrink_reported = false;
    };
    std::array<DirectBar, pci::kBarCount> direct_{};

    vm::DeviceContext& ctx_;
    pci::PciBus* bus_ = nullptr;
    HostLink link_;
    std::array<hostdev::RegionInfo, 7> regions_{};
    pci::ConfigSpace cs_;
    pci::ConfigSpace initial_cs_;         // cs_ as built at open: what reset() restores
    std::vector<uint8_t> shadowed_;       // per config byte: 1 = local
    std::vector<uint8_t> write_through_;  // per config byte: local and also forwarded
    pci::BarLayout layout_;
    std::optional<uint8_t> msi_cap_, msix_cap_, pcie_cap_;
    uint32_t msi_length_ = 0;
    std::optional<pci::MsixTable> msix_table_;
    pci::MsixState msix_;  // table/PBA placement (read once at open; RO registers)
    std::optional<pci::PciAddress> address_;
    uint8_t pin_ = 0;
    bool intx_level_ = false;   // what the device says
    bool intx_driven_ = false;  // what we told the bus
    Irqs irqs_;
    std::optional<Pending64> pending_;
    Snapshot snapshot_;
    uint64_t trapped_accesses_ = 0;
};

// The optional slot="1-31" attribute of a device on the PCI bus (PCI_FRONT, PCI_PASSTHROUGH);
// nullopt when absent (the next free slot).
Result<std::optional<uint8_t>> pci_slot_attribute(const vm::ConfigElement& e);

// PCI_FRONT: <device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="3"/>.
// `transports` overrides the built-in transport registry (tests register fake schemes).
Result<void> register_pci_front(vm::DeviceClassRegistry& registry,
                                const hostdev::TransportRegistry* transports = nullptr);

}  // namespace potemkin::devices
