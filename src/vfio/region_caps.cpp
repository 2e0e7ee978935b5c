#include "vfio/region_caps.hpp"

#include <fmt/format.h>
#include <linux/vfio.h>

#include <cstring>

namespace potemkin::vfio {

std::optional<SparseMmap> find_sparse_mmap(std::span<const uint8_t> info, uint32_t cap_offset,
                                           uint64_t region_size) {
    // Copies, not casts: the bytes come from a buffer of any alignment.
    uint64_t at = cap_offset;
    while (at != 0) {
        vfio_info_cap_header h{};
        if (at % 4 != 0 || at > info.size() || info.size() - at < sizeof h) return std::nullopt;
        std::memcpy(&h, info.data() + at, sizeof h);
        if (h.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
            vfio_region_info_cap_sparse_mmap sm{};
            if (info.size() - at < sizeof sm) return std::nullopt;
            std::memcpy(&sm, info.data() + at, sizeof sm);
            SparseMmap out;
            uint64_t area_at = at + sizeof sm;
            for (uint32_t i = 0; i < sm.nr_areas;
                 ++i, area_at += sizeof(vfio_region_sparse_mmap_area)) {
                vfio_region_sparse_mmap_area a{};
                if (info.size() < area_at || info.size() - area_at < sizeof a) break;
                std::memcpy(&a, info.data() + area_at, sizeof a);
                if (a.size == 0 || a.offset > region_size || a.size > region_size - a.offset) {
                    out.ignored.push_back(fmt::format("{:#x}+{:#x}", a.offset, a.size));
                    continue;
                }
                out.areas.push_back(hostdev::MmapArea{a.offset, a.size});
            }
            return out;
        }
        if (h.next <= at) return std::nullopt;  // the chain only goes forward
        at = h.next;
    }
    return std::nullopt;
}

}  // namespace potemkin::vfio
