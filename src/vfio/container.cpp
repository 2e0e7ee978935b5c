#include "vfio/container.hpp"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "common/log.hpp"

namespace potemkin::vfio {

namespace {

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
}

}  // namespace

Result<VfioContainer> VfioContainer::open(const ContainerSettings& s, const SysfsDevice& dev) {
    VfioContainer c;
    const std::string a = dev.address.str();
    c.label_ = "vfio:" + a;
    const std::string container_path = s.dev_root + "/vfio/vfio";
    c.container_.reset(::open(container_path.c_str(), O_RDWR | O_CLOEXEC));
    if (!c.container_) {
        const int e = errno;
        if (e == ENOENT)
            return failf(Errno{e}, "{}: open {} (is the vfio module loaded? modprobe vfio-pci)", a,
                         container_path);
        return failf(Errno{e}, "{}: open {}", a, container_path);
    }
    const int api = ::ioctl(c.container_.get(), VFIO_GET_API_VERSION);
    if (api < 0) return failf(Errno{errno}, "{}: VFIO_GET_API_VERSION", a);
    if (api != VFIO_API_VERSION)
        return failf("{}: the kernel's VFIO API is version {}, this build knows {}", a, api,
                     VFIO_API_VERSION);
    // v2 has the unmap semantics the kernel recommends; v1 is all an older kernel may offer.
    for (const unsigned long type : {VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU}) {
        const int r = ::ioctl(c.container_.get(), VFIO_CHECK_EXTENSION, type);
        if (r < 0) return failf(Errno{errno}, "{}: VFIO_CHECK_EXTENSION", a);
        if (r > 0) {
            c.iommu_type_ = type;
            break;
        }
    }
    if (c.iommu_type_ == 0)
        return failf("{}: the kernel's VFIO offers no type-1 IOMMU (vfio_iommu_type1 not loaded?)",
                     a);

    const std::string group_path = fmt::format("{}/vfio/{}", s.dev_root, dev.group);
    c.group_.reset(::open(group_path.c_str(), O_RDWR | O_CLOEXEC));
    if (!c.group_) {
        const int e = errno;
        if (e == EACCES || e == EPERM)
            return failf(Errno{e},
                         "{}: open {} (IOMMU group {}): no permission; give the user running "
                         "potemkin access to it (chown or a udev rule, docs/passthrough.md)",
                         a, group_path, dev.group);
        if (e == EBUSY)
            return failf(Errno{e},
                         "{}: open {} (IOMMU group {}): the group is in use (another VMM, or "
                         "another device of the same group opened here)",
                         a, group_path, dev.group);
        return failf(Errno{e}, "{}: open {} (IOMMU group {})", a, group_path, dev.group);
    }
    vfio_group_status status{};
    status.argsz = sizeof status;
    if (::ioctl(c.group_.get(), VFIO_GROUP_GET_STATUS, &status) != 0)
        return failf(Errno{errno}, "{}: VFIO_GROUP_GET_STATUS of group {}", a, dev.group);
    if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
        const auto blockers = blocking_group_members(s.sysfs_root, dev);
        return failf(
            "{}: IOMMU group {} is not viable: every device in it must be bound to vfio-pci "
            "(or to no driver){}",
            a, dev.group,
            blockers.empty() ? fmt::format(" (members: {})", join(dev.group_members))
                             : fmt::format("; bound elsewhere: {}", join(blockers)));
    }
    const int cfd = c.container_.get();
    if (::ioctl(c.group_.get(), VFIO_GROUP_SET_CONTAINER, &cfd) != 0)
        return failf(Errno{errno}, "{}: VFIO_GROUP_SET_CONTAINER of group {}", a, dev.group);
    if (::ioctl(c.container_.get(), VFIO_SET_IOMMU, c.iommu_type_) != 0) {
        const int e = errno;
        if (e == EPERM)
            return failf(Errno{e},
                         "{}: VFIO_SET_IOMMU (the IOMMU has no interrupt remapping; "
                         "vfio_iommu_type1 allow_unsafe_interrupts=1 overrides at your risk)",
                         a);
        return failf(Errno{e}, "{}: VFIO_SET_IOMMU", a);
    }
    const int dfd = ::ioctl(c.group_.get(), VFIO_GROUP_GET_DEVICE_FD, a.c_str());
    if (dfd < 0) return failf(Errno{errno}, "{}: VFIO_GROUP_GET_DEVICE_FD", a);
    c.device_.reset(dfd);
    return c;
}

VfioContainer::~VfioContainer() {
    if (auto r = unmap_all(); !r) log::warn("{}", r.error().message);
}

Result<void> VfioContainer::map_dma(uint64_t iova, void* vaddr, uint64_t size) {
    vfio_iommu_type1_dma_map m{};
    m.argsz = sizeof m;
    m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    m.vaddr = reinterpret_cast<uint64_t>(vaddr);
    m.iova = iova;
    m.size = size;
    if (::ioctl(container_.get(), VFIO_IOMMU_MAP_DMA, &m) != 0) {
        const int e = errno;
        if (e == ENOMEM || e == EPERM)
            return failf(Errno{e},
                         "{}: VFIO_IOMMU_MAP_DMA of {:#x} bytes at IOVA {:#x} (the pages are "
                         "pinned: is RLIMIT_MEMLOCK large enough? ulimit -l)",
                         label_, size, iova);
        return failf(Errno{e}, "{}: VFIO_IOMMU_MAP_DMA of {:#x} bytes at IOVA {:#x}", label_, size,
                     iova);
    }
    maps_.emplace_back(iova, size);
    return ok();
}

Result<void> VfioContainer::unmap_all() {
    Result<void> out = ok();
    if (container_) {
        for (const auto& [iova, size] : maps_) {
            vfio_iommu_type1_dma_unmap u{};
            u.argsz = sizeof u;
            u.iova = iova;
            u.size = size;
            if (::ioctl(container_.get(), VFIO_IOMMU_UNMAP_DMA, &u) != 0 && out)
                out = failf(Errno{errno}, "{}: VFIO_IOMMU_UNMAP_DMA of {:#x} bytes at IOVA {:#x}",
                            label_, size, iova);
        }
    }
    maps_.clear();
    return out;
}

}  // namespace potemkin::vfio
