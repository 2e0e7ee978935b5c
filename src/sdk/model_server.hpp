// ModelServer: the transport-independent "device side" of a projected PCI device. It owns a
// DeviceModel, builds the model's configuration space from its DeviceSpec, and answers the
// HostDevice-shaped calls every transport forwards (inproc calls them directly; vfio-user and
// mpqemu servers decode messages into them). It is also the model's DeviceServices, turning
// the model's DMA and interrupt requests into hostdev::HostDeviceEvents calls.
//
// What the server handles so that no model has to:
// - configuration space: type 0 header from spec.header, BARs and ROM BAR from spec.bars and
//   spec.rom, an MSI capability from spec.msi, an MSI-X capability from spec.msix; guest
//   writes go through the generic ConfigSpace write path (docs/pci.md);
// - regions in VFIO numbering: BARs 0-5, ROM 6 (read-only, the image padded with zeros to a
//   power of two >= 2 KiB), config 7; bounds checks; bulk accesses split into naturally
//   aligned 8/4/2/1-byte model calls;
// - the MSI-X table and PBA inside their BAR (a pci::MsixTable): the model never sees those
//   offsets;
// - mappable BARs (BarSpec::mappable): backed by a memfd mapped here, handed to the model as
//   DeviceServices::shared_memory() and reported by region_info() as one mmap area (the whole
//   BAR) with the fd, so the VMM can map it into the guest;
// - interrupt mode bookkeeping. Like VFIO, the server learns that the guest enabled MSI or
//   MSI-X only from set_irqs(), never by watching config writes: the VMM front-end shadows
//   those capabilities and tells the device what it needs to know;
// - INTx: the model sets a level; the server forwards the effective line (model level, in
//   INTx mode, not disabled by the command register's Interrupt Disable bit) on change, mirrors
//   it in the status register's Interrupt Status bit, and re-sends an asserted line after
//   ack_intx() (the resample VFIO does after an unmask), so level semantics survive front-ends
//   that auto-mask on delivery.
//
// - bus mastering: the model's DMA is refused while the command register's Bus Master Enable
//   bit (bit 2) is clear, as a device that may not master the bus (the VMM writes the command
//   register through: devices::PciFront, QEMU's vfio-user client);
// - deferred work (DeviceServices::defer): queued here and run by run_deferred(), which every
//   transport calls once an access has been answered.
//
// Not done here: MSI per-vector mask bits in config space are the front-end's to honour.
//
// Threading: single-threaded. Every call, and every model callback it triggers, runs on the
// caller's thread; the model must not call DeviceServices from other threads.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>

#include "common/result.hpp"
#include "hostdev/host_device.hpp"
#include "pci/bar.hpp"
#include "pci/capabilities.hpp"
#include "pci/config_space.hpp"
#include "sdk/device_model.hpp"

namespace potemkin::sdk {

struct ModelServerSettings {
    // Whether the server's own MSI-X table masks vectors. Off (the default), a vector the model
    // signals in MSI-X mode goes straight to the events and the client applies masking: that
    // is how VFIO, QEMU's vfio-user client and devices::PciFront work: they emulate the table
    // and never forward table writes, so the server's entries would stay masked at their
    // reset value and every interrupt would be lost. On, the server behaves like a device
    // whose table is the real one: a masked vector sets its PBA bit and is sent when unmasked
    // through a table write or the function mask; for clients that forward table accesses.
    // Either way the server serves table and PBA accesses, so the model never sees them.
    bool msix_masking = false;
};

class ModelServer final : public DeviceServices {
  public:
    // Validates the model's spec, builds the configuration space and attaches the model.
    // `events` may be null (then DMA fails and interrupts are dropped) and can be set later.
    static Result<std::unique_ptr<ModelServer>> create(std::unique_ptr<DeviceModel> model,
                                                       hostdev::HostDeviceEvents* events,
                                                       const ModelServerSettings& settings = {});
    ~ModelServer() override;
    ModelServer(const ModelServer&) = delete;
    ModelServer& operator=(const ModelServer&) = delete;

    // Rebind the event sink (a client reconnected); null detaches.
    void set_events(hostdev::HostDeviceEvents* events) { events_ = events; }

    // ---- HostDevice-shaped calls ---------------------------------------------------------
    hostdev::DeviceInfo info() const;
    // Index >= kPciRegionCount fails. Unimplemented BARs, the upper half of a mem64 BAR and a
    // missing ROM are absent: size 0, no bar_kind.
    Result<hostdev::RegionInfo> region_info(uint32_t index) const;
    // Any offset and length inside the configuration space.
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) const;
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in);
    // Regions 0-7. A 1, 2, 4 or 8-byte access is one model call at that offset; any other
    // length is split into naturally aligned 8/4/2/1-byte calls. Fails, calling nothing, when
    // the region is absent or offset + length runs past its end; ROM writes fail. Length 0
    // succeeds and does nothing.
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out);
    Result<void> region_write(uint32_t index, uint64_t offset, std::span<const uint8_t> in);
    // intx: INTx mode (count ignored). msi/msix with count > 0: that mode with `count`
    // vectors; fails when the device lacks the capability or count exceeds its vectors.
    // msi/msix with count 0: back to INTx if that mode was on.
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count);
    void ack_intx();
    // Doorbell `index` of spec().doorbells rang `count` times (a transport's notifier fired):
    // the model's doorbell() once per ring. Fails for an index the spec does not have.
    Result<void> ring_doorbell(size_t index, uint64_t count = 1);
    // Power-on state: configuration space as built, INTx mode, a fresh MSI-X table, the line
    // deasserted, deferred work not yet started dropped; then the model's reset().
    void reset();
    // Runs the work the model deferred, in order, including work queued while it runs. A call
    // made while deferred work runs (from a request served during its DMA) returns at once:
    // the outer call runs what was queued. Transports call it after answering each access.
    void run_deferred();
    bool has_deferred() const { return !deferred_.empty(); }
    // True while run_deferred() runs work (a DMA from it is "deferred", not inside a request).
    bool running_deferred() const { return running_deferred_; }

    // ---- Introspection (tests, probe tools) ----------------------------------------------
    const DeviceSpec& spec() const { return spec_; }
    DeviceModel& model() { return *model_; }
    const pci::ConfigSpace& config_space() const { return config_; }
    const pci::MsixTable* msix_table() const { return msix_ ? &*msix_ : nullptr; }
    // The INTx line as last forwarded to the events.
    bool intx_line() const { return line_; }
    // signal_msi() calls dropped: INTx mode, vector not enabled, or no event sink.
    uint64_t dropped_msi() const { return dropped_msi_; }

    // ---- DeviceServices --------------------------------------------------------------------
    Result<void> dma_read(uint64_t guest_address, std::span<uint8_t> out) override;
    Result<void> dma_write(uint64_t guest_address, std::span<const uint8_t> in) override;
    void set_intx(bool asserted) override;
    void signal_msi(unsigned vector) override;
    IrqMode irq_mode() const override { return mode_; }
    unsigned msi_vectors() const override { return mode_ == IrqMode::intx ? 0 : vectors_; }
    std::span<uint8_t> shared_memory(int bar) override;
    void defer(std::function<void()> work) override { deferred_.push_back(std::move(work)); }
    // DMA calls refused because bus mastering was off.
    uint64_t refused_dma() const { return refused_dma_; }

    // BAR region_read/region_write calls so far (tests: a directly mapped BAR adds none).
    uint64_t bar_accesses() const { return bar_accesses_; }
    // Doorbell rings delivered to the model (ring_doorbell), which are not bar_accesses.
    uint64_t doorbell_rings() const { return doorbell_rings_; }

  private:
    ModelServer(std::unique_ptr<DeviceModel> model, hostdev::HostDeviceEvents* events,
                const ModelServerSettings& settings);
    Result<void> build();
    Result<void> build_express(const PcieSpec& pcie);
    Result<void> check_region(uint32_t index, uint64_t offset, uint64_t length) const;
    // Fails while Bus Master Enable is clear or no events are attached.
    Result<void> check_dma(const char* dir, uint64_t guest_address, size_t size);
    uint64_t region_size(uint32_t index) const;
    uint64_t bar_access_read(int bar, uint64_t offset, unsigned size);
    void bar_access_write(int bar, uint64_t offset, unsigned size, uint64_t value);
    // Which part of the MSI-X BAR an access falls in.
    enum class MsixPart { none, table, pba, straddles };
    MsixPart msix_part(int bar, uint64_t offset, unsigned size) const;
    // Send vectors whose pending bit `before` had and the table no longer has.
    void send_unpended(const std::vector<bool>& before);
    std::vector<bool> msix_pending() const;
    void update_line();
    void sync_msix_control();

    std::unique_ptr<DeviceModel> model_;
    hostdev::HostDeviceEvents* events_;
    ModelServerSettings settings_;
    DeviceSpec spec_;
    pci::BarLayout layout_;
    pci::ConfigSpace config_;
    pci::ConfigSpace initial_config_;
    std::optional<pci::MsixTable> msix_;
    uint8_t msix_cap_ = 0;
    uint32_t rom_region_size_ = 0;

    IrqMode mode_ = IrqMode::intx;
    unsigned vectors_ = 0;
    bool model_level_ = false;  // what the model last set
    bool line_ = false;         // what the events last heard
    uint64_t intx_events_ = 0;  // line changes sent, to tell whether ack_intx must resample
    uint64_t dropped_msi_ = 0;
    uint64_t bar_accesses_ = 0;
    uint64_t doorbell_rings_ = 0;
    uint64_t refused_dma_ = 0;
    std::deque<std::function<void()>> deferred_;
    bool running_deferred_ = false;
    // Shared memory of BarSpec::mappable BARs (memfd, mapped here too).
    struct SharedBar {
        int fd = -1;
        uint8_t* host = nullptr;
        uint64_t size = 0;
    };
    std::array<SharedBar, pci::kBarCount> shared_{};
};

}  // namespace potemkin::sdk
