// The VFIO client's state, shared by the files it is split into (private to src/vfio):
//   client_setup.cpp  opening: sysfs checks, container and group, device, region and irq info,
//                     the DMA map of guest RAM, the INTx eventfd;
//   client.cpp        the HostDevice calls (regions, config, interrupts, reset, close);
//   client_url.cpp    the "vfio:" URL and its registration.
// The eventfd set, the poll thread and the inbox are the remote link's.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "common/unique_fd.hpp"
#include "hostdev/remote_link.hpp"
#include "hostdev/what.hpp"
#include "vfio/client.hpp"
#include "vfio/container.hpp"
#include "vfio/sysfs.hpp"

namespace potemkin::vfio {

using hostdev::irq_name;

// Engine-thread state only, except what the poll thread reads through the link (the eventfds,
// which stay open until close) and the atomic counter.
class VfioClient::Impl final : public hostdev::HostDevice,
                               public std::enable_shared_from_this<Impl>,
                               private hostdev::RemoteTransport {
  public:
    explicit Impl(VfioClientSettings s);
    ~Impl() override { link_.stop_polling(); }

    Result<void> start();

    Result<hostdev::DeviceInfo> info() override;
    Result<hostdev::RegionInfo> region_info(uint32_t index) override;
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) override {
        return region_read(hostdev::kConfigRegion, offset, out);
    }
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) override {
        return region_write(hostdev::kConfigRegion, offset, in);
    }
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) override;
    Result<void> region_write(uint32_t index, uint64_t offset,
                              std::span<const uint8_t> in) override;
    Result<void> complete_posted() override;
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count) override;
    Result<void> ack_intx() override;
    Result<void> reset() override;
    void close() override;

    hostdev::RemoteLink& link() { return link_; }
    VfioStats stats() const;

  private:
    // What VFIO_DEVICE_GET_REGION_INFO said, without capabilities (asked once at open).
    struct Region {
        uint64_t offset = 0;  // on the device fd
        uint64_t size = 0;
        uint32_t flags = 0;
    };
    struct Irq {
        uint32_t count = 0;
        uint32_t flags = 0;
    };

    // ---- Setup (client_setup.cpp) ----
    Result<void> query_device();
    Result<void> map_guest_ram();
    Result<void> ensure_vector_fds(uint32_t count);

    // ---- Interrupts (client.cpp) ----
    // VFIO_DEVICE_SET_IRQS with ACTION_TRIGGER: `count` eventfds for `kind` (0: disable it).
    Result<void> set_trigger(hostdev::IrqKind kind, uint32_t count);
    Result<void> disarm();
    Result<void> arm(hostdev::IrqKind kind, uint32_t count);
    void on_intx();
    void on_vector(unsigned vector);

    Result<void> access(uint32_t index, uint64_t offset, std::span<uint8_t> buf, bool write);

    // RemoteTransport: no connection to watch or restore; the link is here for its eventfd set,
    // poll thread and inbox.
    Watch connection_watch() override { return {}; }
    void connection_event(const Watch&, short) override {}
    std::function<void()> try_restore() override { return {}; }

    VfioClientSettings s_;
    hostdev::RemoteLink link_;
    SysfsDevice sysfs_;
    std::optional<VfioContainer> container_;
    int device_fd_ = -1;  // container_'s
    uint32_t device_flags_ = 0;
    uint32_t num_regions_ = 0;
    uint32_t num_irqs_ = 0;
    std::array<Region, hostdev::kPciRegionCount> regions_{};
    std::array<Irq, 3> irqs_{};  // INTx, MSI, MSI-X
    uint64_t dma_bytes_ = 0;

    // Never closed before close(): the poll thread may be polling them.
    UniqueFd intx_fd_;
    std::vector<UniqueFd> vector_fds_;  // MSI and MSI-X vector i

    hostdev::IrqKind kind_ = hostdev::IrqKind::intx;  // what the front-end chose
    std::optional<hostdev::IrqKind> armed_;           // what the kernel has triggers for
    std::atomic<uint64_t> interrupts_{0};
    bool reset_note_given_ = false;  // the log said the device has no reset
};

}  // namespace potemkin::vfio
