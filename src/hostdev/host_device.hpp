// HostDevice: the contract every transport meets (ARCHITECTURE.md §3). Palacios' host-device
// interface, widened to what VFIO and vfio-user have shown is needed. Region numbering follows
// VFIO: BARs 0-5, the expansion ROM 6, config space 7; device-specific regions from 8.
//
// Threading: a HostDevice is called from the VM's engine thread. Events (interrupts, DMA) may
// arrive on the engine thread (in-process models) or, for out-of-process transports, are
// marshalled onto it by the transport.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "pci/bar.hpp"

namespace potemkin::vm {
class GuestMemory;
}

namespace potemkin::hostdev {

inline constexpr uint32_t kBar0Region = 0;
inline constexpr uint32_t kRomRegion = 6;
inline constexpr uint32_t kConfigRegion = 7;
inline constexpr uint32_t kPciRegionCount = 8;

// A part of a region that can be mapped straight into the guest (no exit per access).
struct MmapArea {
    uint64_t offset = 0;  // within the region
    uint64_t size = 0;
};

struct RegionInfo {
    uint32_t index = 0;
    // What kind of BAR the region backs (BARs 0-5; pci::BarKind::rom for region 6), in the PCI
    // part's one vocabulary. nullopt for an absent region (size 0), config space and
    // device-specific regions.
    std::optional<pci::BarKind> bar_kind;
    uint64_t size = 0;  // 0: absent; a power of two for BARs and the ROM
    bool present() const { return size != 0; }
    bool readable = false;
    bool writable = false;
    bool prefetchable = false;
    std::vector<MmapArea> mmap_areas;  // empty: every access traps
    // For mmap_areas; owned by the HostDevice, valid until region_info() is asked for this
    // region again or the device is closed (a mapping made from it stays valid).
    int fd = -1;
    uint64_t fd_offset = 0;
};

struct DeviceInfo {
    std::string name;
    uint32_t num_regions = kPciRegionCount;
    uint32_t num_irqs = 0;
    bool reset_supported = false;
};

// Interrupt index numbering follows VFIO (VFIO_PCI_*_IRQ_INDEX).
enum class IrqKind : uint8_t { intx = 0, msi = 1, msix = 2 };

// What a HostDevice needs from the VMM: the interrupt and DMA direction. Implemented by the
// front-end (PCI_FRONT, GENERIC), which shadows MSI/MSI-X state and turns vectors into
// messages, and checks every DMA against guest RAM.
class HostDeviceEvents {
  public:
    virtual ~HostDeviceEvents() = default;
    // The device's INTx pin, level-triggered: asserted until the transport says otherwise.
    // A transport that cannot see deassertion (vfio-user, VFIO, an irqfd) holds the line from
    // its signal until HostDevice::ack_intx() and then resamples (see there). Calls for an
    // unchanged level are harmless. Engine thread, possibly inside a HostDevice call
    // (ack_intx, a register write that raises or lowers the line).
    virtual void intx(bool asserted) = 0;
    // Vector `vector` of the MSI or MSI-X block the guest enabled (see set_irqs) fired.
    virtual void msi(unsigned vector) = 0;
    virtual Result<void> dma_read(uint64_t guest_address, std::span<uint8_t> out) = 0;
    virtual Result<void> dma_write(uint64_t guest_address, std::span<const uint8_t> in) = 0;
    // The implementation went away (process died, socket closed). Further calls fail until
    // (and unless) the transport reconnects.
    virtual void disconnected(std::string_view why) = 0;
    // The transport reached the implementation again and restored its state (DMA maps,
    // interrupts, the config the guest programmed): accesses work again. It may be a new
    // process: region fds from before are stale, region_info() gives the current ones.
    virtual void reconnected() {}
};

class HostDevice {
  public:
    virtual ~HostDevice() = default;

    virtual Result<DeviceInfo> info() = 0;
    virtual Result<RegionInfo> region_info(uint32_t index) = 0;

    // Config space (region 7), any offset and length within it.
    virtual Result<void> config_read(uint32_t offset, std::span<uint8_t> out) = 0;
    virtual Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) = 0;

    // BAR, ROM and device-specific regions: 1, 2, 4 and 8-byte accesses and bulk transfers.
    virtual Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) = 0;
    virtual Result<void> region_write(uint32_t index, uint64_t offset,
                                      std::span<const uint8_t> in) = 0;

    // Writes the transport posted (the guest did not wait for them: vfio-user's NO_REPLY BAR
    // writes) are handled by the device, and what they raised (interrupts) is delivered, when
    // this returns. A front-end calls it before it answers a read from state the device drives
    // but the front-end keeps (the shadowed Interrupt Status bit): on PCI that read is
    // non-posted and would have waited behind the writes. Cheap when nothing was posted since
    // the last reply. Default: the transport posts nothing.
    virtual Result<void> complete_posted() { return ok(); }

    // Which interrupt mechanism the guest enabled, and how many vectors (VFIO_DEVICE_SET_IRQS):
    // INTx by default; MSI or MSI-X once the guest sets their enable bits; count 0 disables.
    virtual Result<void> set_irqs(IrqKind kind, uint32_t count) = 0;
    // The guest's EOI of the INTx it was delivered (Palacios' ack_irq, VFIO's unmask, KVM's
    // irqfd resample). The contract, both ways (docs/pci-front.md, "INTx and EOI"):
    // - The front-end calls it on the engine thread, synchronously inside the guest's EOI
    //   (before the guest's next instruction), once per EOI that retires an interrupt on the
    //   PIC line this device's INTx reaches, and only while it drives that line (the device
    //   said intx(true) last and the guest's Interrupt Disable bit is clear). Never for MSI or
    //   MSI-X. On a shared line it is called for every asserting device.
    // - The transport then makes the line follow the device's current level. Either it
    //   already does (a transport that reports every level change, like inproc: nothing to
    //   do, re-sending intx(true) for a level still high is harmless), or it lowers the line
    //   with intx(false) and arranges for the device to re-assert with intx(true) if its
    //   condition persists: during the call (vfio-user: a synchronous SET_IRQS unmask, the
    //   re-trigger delivered before ack_intx returns) or later through OpenContext::post
    //   (mpqemu: write the resample fd; the remote re-fires its irqfd if its line is still up).
    //   Either way a level the device keeps asserted is delivered to the guest again after the
    //   EOI, and a level it lowered is not.
    // Writes to the device are not acknowledgements: a transport must not lower the line on
    // them. Fails only when the device cannot be reached (the front-end logs and counts it).
    virtual Result<void> ack_intx() = 0;

    // A VM reset (or a front-end's own reset): the device back to its power-on state,
    // configuration space included, in INTx mode with its line deasserted (the transport
    // sends intx(false) if it held the line). Synchronous. vfio-user: DEVICE_RESET.
    virtual Result<void> reset() = 0;
    // Release the connection and every resource; idempotent; no calls after it.
    virtual void close() = 0;
};

// Opening by URL: "inproc:edu?dma_limit=4096", later "vfio-user:/run/x.sock", "qemu:...".
struct OpenContext {
    HostDeviceEvents* events = nullptr;  // required; must outlive the HostDevice
    // Guest RAM, for transports that share it with a device process (vfio-user DMA_MAP).
    const vm::GuestMemory* memory = nullptr;
    // Thread-safe: run a function on the VM's engine thread. Transports with their own threads
    // marshal events through it; null outside a VM (tools, unit tests).
    std::function<void(std::function<void()>)> post;
    // Thread-safe: +1/-1 while a transport thread may raise interrupts, so a halted guest waits
    // for it (machine::Machine::add_external_source). Null outside a VM.
    std::function<void(int)> external_source;
    // Directory that relative paths in the URL are resolved against (the config file's);
    // empty: the current directory.
    std::string base_dir;
    // The VM configuration's <files> (id → path, already resolved): a URL may name a file by
    // its id where it takes a path (qemu:nvme,drive=ID).
    std::vector<std::pair<std::string, std::string>> files;
    const std::string* file(std::string_view id) const {
        for (const auto& [k, v] : files)
            if (k == id) return &v;
        return nullptr;
    }
};

struct ParsedUrl {
    std::string scheme;                                       // before the first ':'
    std::string path;                                         // after it, up to '?'
    std::vector<std::pair<std::string, std::string>> params;  // k=v after '?', '&'-separated
    std::string text;                                         // the whole URL, for messages
    const std::string* param(std::string_view key) const;
};
// Errors name the URL and what is wrong with it.
Result<ParsedUrl> parse_url(std::string_view url);

using TransportOpener =
    std::function<Result<std::unique_ptr<HostDevice>>(const ParsedUrl&, const OpenContext&)>;

class TransportRegistry {
  public:
    // The process-wide registry with the built-in transports (inproc, ...).
    static TransportRegistry& builtin();
    Result<void> add(std::string scheme, TransportOpener opener);
    // Unknown scheme → an error naming it and the known ones.
    Result<std::unique_ptr<HostDevice>> open(std::string_view url, const OpenContext& ctx) const;
    std::vector<std::string> schemes() const;

  private:
    std::vector<std::pair<std::string, TransportOpener>> openers_;
};

}  // namespace potemkin::hostdev
