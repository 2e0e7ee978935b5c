// Reading VFIO_DEVICE_GET_REGION_INFO's capability chain (<linux/vfio.h>): the sparse-mmap
// capability lists the parts of a region that may be mmapped (vfio-pci leaves out what must
// trap, such as an MSI-X table on kernels that do not allow mapping it). A pure function over
// the bytes the kernel filled in, so that malformed chains can be tested without a device.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hostdev/host_device.hpp"

namespace potemkin::vfio {

struct SparseMmap {
    std::vector<hostdev::MmapArea> areas;  // inside the region, non-empty
    std::vector<std::string> ignored;      // areas outside the region, described
};

// `info`: the vfio_region_info and what follows it, as many bytes as the kernel filled in;
// `cap_offset`: its cap_offset field (0: no chain); `region_size`: its size. nullopt: there is
// no sparse-mmap capability in the chain (the whole region may be mapped). The walk stops at a
// header or area that would lie outside `info`, at a misaligned offset, and at a link that
// does not go forward (a loop).
std::optional<SparseMmap> find_sparse_mmap(std::span<const uint8_t> info, uint32_t cap_offset,
                                           uint64_t region_size);

}  // namespace potemkin::vfio
