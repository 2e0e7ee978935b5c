// HostLink: the one link from a front-end (PCI_FRONT, GENERIC) to the HostDevice it projects
// (ARCHITECTURE.md §2, "devices"; docs/pci-front.md and docs/generic.md, "Host link").
//
// State: the HostDevice, opened from a URL with a complete OpenContext built from the VM's
// DeviceContext (events, guest memory, post, external_source, base_dir, <files>); whether the
// device is connected; the level of its INTx as it last said; failure counters.
//
// Features:
// - Guest accesses: read() gives all-ones of the access size when the device cannot answer,
//   write() drops what it cannot deliver; both go nowhere while disconnected. Failures are
//   counted per kind and each kind is logged once per device.
// - Connection state: disconnected() is logged once and lowers the INTx the device held (a
//   device that is gone holds no line); reconnected() clears it (whether or not the loss was
//   reported) and tells the front-end, whose region fds may have changed.
// - EOI forwarding: eoi() passes the guest's EOI on as ack_intx() only while the device holds
//   its INTx up and is connected; the front-end decides whether the EOI was for its line.
// - DMA: checked against guest RAM (GuestMemory) after the front-end's own permission (PCI:
//   bus mastering); a refused transfer is an error the device sees, counted and logged once.
// - Trace (docs/trace.md): with tracing on, every interrupt, DMA transfer and loss or return
//   of the device is recorded through DeviceContext::trace; off, each costs one null test.
//
// Missing: nothing transport-specific lives here; MSI/MSI-X delivery, PCI shadowing, ranges
// and modes are the front-ends' business.
//
// Threading: everything on the engine thread (transports marshal their events onto it).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/bytes.hpp"
#include "hostdev/host_device.hpp"
#include "vm/device.hpp"

namespace potemkin::devices {

// What only the front-end decides; the link calls it for the device's events.
class HostLinkOwner {
  public:
    // The device's INTx level (also intx(false) when a device holding its line is lost).
    virtual void intx(bool asserted) = 0;
    // An MSI or MSI-X vector fired.
    virtual void msi(unsigned vector) = 0;
    // Why the function may not master the bus now (null: it may). PCI_FRONT: bus mastering off.
    virtual const char* dma_refusal() const { return nullptr; }
    // The transport reached the device again; region fds from before are stale.
    virtual void link_restored() {}

  protected:
    ~HostLinkOwner() = default;
};

// Failures so far; the first of each kind is also logged.
struct HostLinkStats {
    uint64_t failed_reads = 0;   // guest reads answered with all-ones
    uint64_t failed_writes = 0;  // writes (region, config, set_irqs) dropped
    uint64_t failed_acks = 0;    // ack_intx() on a guest EOI that failed
    uint64_t failed_resets = 0;  // reset() that failed
    uint64_t failed_dma = 0;     // DMA refused (outside guest RAM, or by the front-end)
    // Failed calls into the host device (DMA is the device's request, not counted here).
    uint64_t host_errors() const {
        return failed_reads + failed_writes + failed_acks + failed_resets;
    }
};

struct HostLinkSettings {
    std::string url;                                         // e.g. "vfio-user:uart.sock"
    const hostdev::TransportRegistry* transports = nullptr;  // null: TransportRegistry::builtin()
    // The configuring element: its document's directory is the base of relative paths in the
    // URL, its document's <files> the files the URL may name. Null: neither.
    const vm::ConfigElement* element = nullptr;
};

class HostLink final : private hostdev::HostDeviceEvents {
  public:
    // `name` prefixes every message ("edu0", "GENERIC spy"). Nothing is open yet.
    HostLink(std::string name, HostLinkOwner& owner, vm::DeviceContext& ctx);
    ~HostLink() override;
    HostLink(const HostLink&) = delete;
    HostLink& operator=(const HostLink&) = delete;

    // Opens the URL. Errors are the transport's (or the <files> parser's), unprefixed.
    Result<void> open(const HostLinkSettings& s);
    // Closes and destroys the device while the link (its event sink) is whole; idempotent.
    void close();
    bool is_open() const { return host_ != nullptr; }
    bool connected() const { return host_ != nullptr && !disconnected_; }
    // The device, for what the link does not wrap (info, region_info at open). Open only.
    hostdev::HostDevice& device() { return *host_; }
    const HostLinkStats& stats() const { return stats_; }

    // ---- Guest accesses (the hot path: inline, no allocation) ------------------------------
    // 1 to 8 bytes of region `region` at `offset`, little-endian; all-ones when it fails.
    uint64_t read(uint32_t region, uint64_t offset, unsigned size) {
        if (size == 0 || size > 8 || !connected()) return all_ones(size);
        std::array<uint8_t, 8> buf{};
        const std::span<uint8_t> bytes(buf.data(), size);
        if (auto r = host_->region_read(region, offset, bytes); !r) {
            read_failed(r.error(), "region", region, offset, size);
            return all_ones(size);
        }
        return load_le(bytes);
    }
    void write(uint32_t region, uint64_t offset, unsigned size, uint64_t value) {
        if (size == 0 || size > 8 || !connected()) return;
        std::array<uint8_t, 8> buf{};
        const std::span<uint8_t> bytes(buf.data(), size);
        store_le(bytes, value);
        if (auto r = host_->region_write(region, offset, bytes); !r)
            write_failed(r.error(), "region", region, offset, size);
    }
    // Config space bytes; `out` is all-ones when it fails or while disconnected.
    void config_read(uint32_t offset, std::span<uint8_t> out);
    // HostDevice::complete_posted (a failure is logged like a failed read).
    void complete_posted();
    void config_write(uint32_t offset, std::span<const uint8_t> in);
    // The interrupt mode the guest chose (dropped while disconnected, counted as a write).
    void set_irqs(hostdev::IrqKind kind, uint32_t count);
    // The guest EOId the line the front-end drives with this device's INTx: ack_intx() if
    // the device holds it up and is connected.
    void eoi();
    // The device back to power-on (VM reset); false when it failed (counted, logged).
    bool reset();
    // Whether the device holds its INTx up (as it last said).
    bool intx_level() const { return intx_level_; }

    static uint64_t all_ones(unsigned size) {
        return size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1;
    }

  private:
    // hostdev::HostDeviceEvents: the transport talks to the link, the link to the owner.
    void intx(bool asserted) override;
    void msi(unsigned vector) override;
    Result<void> dma_read(uint64_t guest_address, std::span<uint8_t> out) override;
    Result<void> dma_write(uint64_t guest_address, std::span<const uint8_t> in) override;
    void disconnected(std::string_view why) override;
    void reconnected() override;

    [[gnu::cold]] void read_failed(const Error& e, const char* space, uint32_t region,
                                   uint64_t offset, size_t size);
    [[gnu::cold]] void write_failed(const Error& e, const char* space, uint32_t region,
                                    uint64_t offset, size_t size);
    // `to_guest`: a DMA write (into guest memory), else a read.
    Result<void> dma_failed(bool to_guest, uint64_t guest_address, size_t size,
                            std::string_view why);

    std::string name_;
    HostLinkOwner& owner_;
    vm::DeviceContext& ctx_;
    std::unique_ptr<hostdev::HostDevice> host_;
    bool disconnected_ = false;
    bool intx_level_ = false;
    hostdev::IrqKind irq_kind_ = hostdev::IrqKind::intx;  // as the front-end last set it
    bool read_logged_ = false, write_logged_ = false, ack_logged_ = false, dma_logged_ = false;
    HostLinkStats stats_;
};

}  // namespace potemkin::devices
