// A VFIO container holding one IOMMU group (Documentation/driver-api/vfio.rst): open
// /dev/vfio/vfio, check the API version and the type-1 IOMMU extension, open /dev/vfio/<group>,
// check the group is viable, attach it, set the IOMMU model, and hand out the device fd.
// DMA maps are the container's: guest RAM mapped at IOVA = guest-physical, unmapped on close.
//
// One container per group per client: two devices of one group in one VMM would need a shared
// container (not done; the second open fails with EBUSY, and the message says so).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "vfio/sysfs.hpp"

namespace potemkin::vfio {

struct ContainerSettings {
    std::string dev_root = "/dev";    // where vfio/vfio and vfio/<group> are
    std::string sysfs_root = "/sys";  // to name the group's other members when not viable
};

class VfioContainer {
  public:
    // Opens the container and the group of `dev` (already checked by check_vfio_ready), and
    // gets the device's fd. Errors name the device, the file or the ioctl, and what to do.
    static Result<VfioContainer> open(const ContainerSettings& s, const SysfsDevice& dev);

    VfioContainer(VfioContainer&&) noexcept = default;
    VfioContainer& operator=(VfioContainer&&) noexcept = default;
    ~VfioContainer();  // unmaps what is mapped (a failure is logged)

    int device_fd() const { return device_.get(); }
    // VFIO_TYPE1v2_IOMMU, or VFIO_TYPE1_IOMMU on kernels without v2.
    unsigned long iommu_type() const { return iommu_type_; }

    // VFIO_IOMMU_MAP_DMA: [vaddr, vaddr+size) readable and writable by the device at `iova`.
    Result<void> map_dma(uint64_t iova, void* vaddr, uint64_t size);
    // Every mapping made, undone (best effort at destruction; errors are returned here).
    Result<void> unmap_all();
    size_t mappings() const { return maps_.size(); }

  private:
    VfioContainer() = default;
    std::string label_;
    UniqueFd container_;
    UniqueFd group_;
    UniqueFd device_;
    unsigned long iommu_type_ = 0;
    std::vector<std::pair<uint64_t, uint64_t>> maps_;  // (iova, size)
};

}  // namespace potemkin::vfio
