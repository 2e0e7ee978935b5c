// What kind of BAR a region backs, for transports whose region info gives only its size (kernel
// VFIO, vfio-user): the kind is in the BAR register, which both let a client read from config
// space with its type bits intact; region 6 is the expansion ROM.
#pragma once

#include <array>
#include <cstdint>

#include "common/bytes.hpp"
#include "hostdev/host_device.hpp"
#include "pci/registers.hpp"

namespace potemkin::hostdev {

// Fills out.bar_kind and out.prefetchable for BAR and ROM regions; other regions are left alone.
inline Result<void> describe_bar(HostDevice& device, uint32_t index, RegionInfo& out) {
    if (index == kRomRegion) {
        out.bar_kind = pci::BarKind::rom;
        return ok();
    }
    if (index >= kRomRegion) return ok();
    std::array<uint8_t, 4> bar{};
    POTEMKIN_TRY(device.config_read(pci::reg::bar(static_cast<int>(index)), bar));
    if (const auto decoded = pci::decode_bar_register(static_cast<uint32_t>(load_le(bar)))) {
        out.bar_kind = decoded->kind;
        out.prefetchable = decoded->prefetchable;
    }
    return ok();
}

}  // namespace potemkin::hostdev
