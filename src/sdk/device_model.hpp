// The device author's API: declare what the device looks like on PCI, handle its BAR accesses,
// reach guest memory and raise interrupts through DeviceServices. A model written once runs on
// every transport: in-process (inproc:NAME), and out of process over vfio-user or mpqemu.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "pci/bar.hpp"
#include "pci/capabilities.hpp"
#include "pci/express.hpp"
#include "pci/header.hpp"

namespace potemkin::sdk {

struct BarSpec {
    pci::BarKind kind = pci::BarKind::mem32;  // io, mem32, mem24 or mem64 (not rom)
    uint64_t size = 0;                        // a power of two
    bool prefetchable = false;
    // Memory BARs only: the server backs the whole BAR with shared memory (a memfd) that the
    // model reaches through DeviceServices::shared_memory(); the VMM maps it straight into
    // the guest (no exit per access) while the BAR decodes. Accesses that still arrive as
    // messages (bulk transfers, a VMM that does not map) go to the model as usual, which
    // must serve them from that same memory. The size must be a multiple of 4 KiB.
    bool mappable = false;
};

struct MsixSpec {
    unsigned vectors = 0;
    int bar = 0;  // table and PBA live in this BAR
    uint32_t table_offset = 0;
    uint32_t pba_offset = 0;
};

// A doorbell: a register the guest writes only to tell the device "go" (a queue notify, a
// "start DMA" register). A transport that can hands the VMM a notifier for it (vfio-user: an
// ioeventfd through DEVICE_GET_REGION_IO_FDS, the spec's §8), so such a write costs the VMM one
// eventfd write instead of a message round trip; the server sees the eventfd fire and calls
// DeviceModel::doorbell(). The write is posted: the guest does not wait for the model.
// - `datamatch`: only a write of exactly this value rings (declare one doorbell per value the
//   guest uses: multibar's "signal vector N" declares 0..3); other values come as ordinary
//   bar_write calls. Without it, any value rings and the value is not delivered (an eventfd
//   carries only a count): declare such a doorbell only where the value does not matter.
// - Writes the VMM posted before the doorbell reach the model before it (the server reads its
//   socket first); a read or write the guest makes after it may reach the model first, as with
//   KVM's ioeventfds.
// - inproc ignores doorbells: its writes are direct calls already, which is cheaper.
struct DoorbellSpec {
    int bar = 0;
    uint64_t offset = 0;
    unsigned size = 4;  // the guest's write width: 1, 2, 4 or 8; offset aligned to it
    std::optional<uint64_t> datamatch;
};

// A PCI Express function (docs/sdk.md, "PCI Express"): the PCI Express capability in the
// capability list and extended capabilities chained from 0x100 in a 4 KiB configuration
// space. Over mpqemu only the first 256 bytes reach the VMM (QEMU's limit).
struct PcieSpec {
    pci::PcieSettings capability;           // type, link, Max_Payload_Size, ...
    bool aer = false;                       // Advanced Error Reporting (never signals)
    std::optional<uint64_t> serial_number;  // Device Serial Number
    std::vector<pci::VendorSpecificSettings> vendor_specific;
    // Any other extended capability, chained after the ones above in this order.
    std::vector<pci::ExtCapabilityImage> extended;
};

struct DeviceSpec {
    std::string name;
    pci::HeaderSettings header;                    // ids, class, revision, subsystem, INTx pin
    std::array<std::optional<BarSpec>, 6> bars{};  // a mem64 BAR also takes the next slot
    std::vector<uint8_t> rom;                      // expansion ROM image; empty = none
    std::optional<pci::MsiSettings> msi;
    std::optional<MsixSpec> msix;
    std::vector<DoorbellSpec> doorbells;  // memory or I/O BARs, outside the MSI-X table and PBA
    // Set: a PCI Express function with 4 KiB of config space (header.express is implied).
    std::optional<PcieSpec> pcie;
};

// Which interrupt mechanism the guest has enabled (the VMM tells the server).
enum class IrqMode : uint8_t { intx, msi, msix };

// What a model can do to the outside world.
class DeviceServices {
  public:
    virtual ~DeviceServices() = default;
    // DMA. Refused (an error, nothing transferred) while the command register's Bus Master
    // Enable bit is clear. Start DMA from deferred work (defer()), not inside bar_write: a VMM
    // may be unable to serve a DMA request until the access that triggered it is answered
    // (QEMU's vfio-user client deadlocks). docs/sdk.md, "Deferred work and DMA".
    virtual Result<void> dma_read(uint64_t guest_address, std::span<uint8_t> out) = 0;
    virtual Result<void> dma_write(uint64_t guest_address, std::span<const uint8_t> in) = 0;
    // Runs `work` once the access being served has been answered (after the server sent its
    // reply; in process, after the access returned), on the same thread, in the order queued.
    // Work queued while deferred work runs runs afterwards, never nested. A device reset drops
    // work not yet started. While deferred work waits for a DMA reply, the model's bar_read /
    // bar_write may run (the VMM's requests keep being served, as a device answers register
    // reads during DMA); work they defer runs after the current one.
    virtual void defer(std::function<void()> work) = 0;
    virtual void set_intx(bool asserted) = 0;
    // Vector of MSI or MSI-X (whichever is enabled); dropped when neither is.
    virtual void signal_msi(unsigned vector) = 0;
    virtual IrqMode irq_mode() const = 0;
    // Vectors the guest enabled for the current mode (0 for intx).
    virtual unsigned msi_vectors() const = 0;
    // The shared memory backing a BarSpec::mappable BAR (its whole size); empty for other
    // BARs. The guest reads and writes it directly, so the model sees no access to it.
    virtual std::span<uint8_t> shared_memory(int bar) {
        (void)bar;
        return {};
    }
};

class DeviceModel {
  public:
    virtual ~DeviceModel() = default;
    virtual const DeviceSpec& spec() const = 0;
    // Called once, before any access; `services` outlives the model's use of it.
    virtual void attach(DeviceServices& services) { services_ = &services; }
    // BAR accesses: size is 1, 2, 4 or 8; offset + size is within the BAR.
    virtual uint64_t bar_read(int bar, uint64_t offset, unsigned size) = 0;
    virtual void bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) = 0;
    // The guest EOId the INTx this device had up (HostDevice::ack_intx, called by the VMM only
    // while the line is up, synchronously inside the guest's EOI). The server resamples after
    // it: a level still set is delivered again. Models whose condition can clear without a
    // register write (a timer, a read) re-check it here.
    virtual void intx_acknowledged() {}
    // Doorbell `index` of spec().doorbells was rung (once per guest write). The default is the
    // write itself: bar_write(bar, offset, size, datamatch or 0).
    virtual void doorbell(size_t index) {
        const DoorbellSpec& d = spec().doorbells.at(index);
        bar_write(d.bar, d.offset, d.size, d.datamatch.value_or(0));
    }
    virtual void reset() = 0;

  protected:
    DeviceServices* services_ = nullptr;
};

// Model parameters from the URL query (inproc:edu?dma_limit=4096) or the command line.
using ModelParams = std::map<std::string, std::string>;
using ModelFactory = std::function<Result<std::unique_ptr<DeviceModel>>(const ModelParams&)>;

class ModelRegistry {
  public:
    // The models that ship with potemkin (edu, multibar, ...).
    static ModelRegistry& builtin();
    Result<void> add(std::string name, std::string description, ModelFactory factory);
    // Unknown name → an error naming it and the known ones.
    Result<std::unique_ptr<DeviceModel>> create(const std::string& name,
                                                const ModelParams& params) const;
    std::vector<std::pair<std::string, std::string>> list() const;  // name, description

  private:
    struct Entry {
        std::string description;
        ModelFactory factory;
    };
    std::map<std::string, Entry> models_;
};

}  // namespace potemkin::sdk
