// Opening a VFIO device: everything that can be checked before /dev/vfio is (sysfs.hpp), the
// container and group (container.hpp), then the device's own description (regions, interrupts),
// the DMA map of guest RAM and the INTx eventfd, armed as a reset device is: in INTx mode.
#include <linux/vfio.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "vfio/client_impl.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::vfio {

VfioClient::Impl::Impl(VfioClientSettings s)
    : s_(std::move(s)), link_(hostdev::RemoteLinkSettings::of(s_, false, {})) {}

Result<void> VfioClient::Impl::start() {
    POTEMKIN_TRY_ASSIGN(const PciAddress address, parse_pci_address(s_.device));
    POTEMKIN_TRY_ASSIGN(sysfs_, read_sysfs_device(s_.sysfs_root, address));
    POTEMKIN_TRY(check_vfio_ready(sysfs_));
    POTEMKIN_TRY(link_.open(weak_from_this()));
    ContainerSettings cs;
    cs.dev_root = s_.dev_root;
    cs.sysfs_root = s_.sysfs_root;
    POTEMKIN_TRY_ASSIGN(auto container, VfioContainer::open(cs, sysfs_));
    container_.emplace(std::move(container));
    device_fd_ = container_->device_fd();
    POTEMKIN_TRY(query_device());
    // A VM gets the device in its power-on state, as QEMU's system reset gives it: what the
    // previous user left behind (an enabled controller, completions still asserting INTx) is
    // not this guest's. vfio-pci resets at open only on the group's first open, not always.
    if ((device_flags_ & VFIO_DEVICE_FLAGS_RESET) != 0 &&
        ::ioctl(device_fd_, VFIO_DEVICE_RESET) != 0)
        log::warn(
            "{}: VFIO_DEVICE_RESET at open failed ({}); the device keeps the state its last "
            "user left",
            s_.label, std::strerror(errno));
    POTEMKIN_TRY(map_guest_ram());

    auto intx = make_eventfd();
    if (!intx) return fail(intx.error().context(s_.label));
    intx_fd_ = std::move(*intx);
    POTEMKIN_TRY(link_.watch_eventfd(intx_fd_.get(), [this] { on_intx(); }));
    if (irqs_[0].count != 0) POTEMKIN_TRY(arm(hostdev::IrqKind::intx, 1));
    link_.set_up();
    return link_.start(*this);
}

Result<void> VfioClient::Impl::query_device() {
    vfio_device_info di{};
    di.argsz = sizeof di;
    if (::ioctl(device_fd_, VFIO_DEVICE_GET_INFO, &di) != 0)
        return failf(Errno{errno}, "{}: VFIO_DEVICE_GET_INFO", s_.label);
    if ((di.flags & VFIO_DEVICE_FLAGS_PCI) == 0)
        return failf("{}: VFIO says this is not a PCI device (flags {:#x})", s_.label, di.flags);
    if (di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
        return failf("{}: VFIO reports {} regions; a PCI device has at least {}", s_.label,
                     di.num_regions, VFIO_PCI_CONFIG_REGION_INDEX + 1);
    device_flags_ = di.flags;
    num_regions_ = di.num_regions;
    num_irqs_ = di.num_irqs;
    for (uint32_t i = 0; i < hostdev::kPciRegionCount; ++i) {
        vfio_region_info ri{};
        ri.argsz = sizeof ri;
        ri.index = i;
        if (::ioctl(device_fd_, VFIO_DEVICE_GET_REGION_INFO, &ri) != 0)
            return failf(Errno{errno}, "{}: VFIO_DEVICE_GET_REGION_INFO for {}", s_.label,
                         hostdev::region_name(i));
        regions_[i] = Region{ri.offset, ri.size, ri.flags};
    }
    for (uint32_t i = 0; i < irqs_.size() && i < num_irqs_; ++i) {
        vfio_irq_info ii{};
        ii.argsz = sizeof ii;
        ii.index = i;
        if (::ioctl(device_fd_, VFIO_DEVICE_GET_IRQ_INFO, &ii) != 0)
            return failf(Errno{errno}, "{}: VFIO_DEVICE_GET_IRQ_INFO for {}", s_.label,
                         irq_name(static_cast<hostdev::IrqKind>(i)));
        irqs_[i] = Irq{(ii.flags & VFIO_IRQ_INFO_EVENTFD) != 0 ? ii.count : 0, ii.flags};
    }
    return ok();
}

// Every RAM region at IOVA = its guest-physical base: the device's DMA addresses are the
// guest's physical addresses, as on a machine without an IOMMU, and the IOMMU refuses the rest.
Result<void> VfioClient::Impl::map_guest_ram() {
    if (s_.memory == nullptr) return ok();
    for (const auto& r : s_.memory->regions()) {
        POTEMKIN_TRY(container_->map_dma(r.base.value, r.host, r.size));
        dma_bytes_ += r.size;
    }
    return ok();
}

Result<void> VfioClient::Impl::ensure_vector_fds(uint32_t count) {
    while (vector_fds_.size() < count) {
        auto fd = make_eventfd();
        if (!fd) return fail(fd.error().context(s_.label));
        const auto vector = static_cast<unsigned>(vector_fds_.size());
        vector_fds_.push_back(std::move(*fd));
        POTEMKIN_TRY(
            link_.watch_eventfd(vector_fds_.back().get(), [this, vector] { on_vector(vector); }));
    }
    return ok();
}

}  // namespace potemkin::vfio
