#include "pci/bar.hpp"

#include <bit>
#include <limits>

#include "pci/registers.hpp"

namespace potemkin::pci {

namespace {

// Low-dword bits of a BAR (spec 3.0 section 6.2.5.1).
constexpr uint32_t kIoIndicator = 0x1;
constexpr uint32_t kIoAddressMask = ~0x3u;
constexpr uint32_t kMemAddressMask = ~0xFu;
constexpr uint32_t kMemTypeShift = 1;
constexpr uint32_t kMemType32 = 0x0;
constexpr uint32_t kMemType1M = 0x1;
constexpr uint32_t kMemType64 = 0x2;
constexpr uint32_t kMemPrefetchable = 0x8;
// Expansion ROM BAR (spec 3.0 section 6.2.5.2): bit 0 enable, 10:1 reserved, 31:11 address.
constexpr uint32_t kRomEnable = 0x1;

constexpr uint64_t k1M = 1ull << 20;
constexpr uint64_t k4G = 1ull << 32;

bool is_mem64_low(uint32_t v) {
    const auto bar = decode_bar_register(v);
    return bar && bar->kind == BarKind::mem64;
}

uint64_t lowest_bit(uint64_t v) {
    return v & (~v + 1);
}

uint32_t lo32(uint64_t v) {
    return static_cast<uint32_t>(v);
}
uint32_t hi32(uint64_t v) {
    return static_cast<uint32_t>(v >> 32);
}

Result<void> validate_bar(int i, const BarSettings& b) {
    const uint64_t sz = b.size;
    if (!std::has_single_bit(sz)) return failf("BAR{}: size {:#x} is not a power of two", i, sz);
    if (b.address & (sz - 1))
        return failf("BAR{}: address {:#x} is not aligned to its size {:#x}", i, b.address, sz);
    if (b.kind != BarKind::mem64 && b.address >= k4G)
        return failf("BAR{}: address {:#x} does not fit a 32-bit BAR", i, b.address);
    switch (b.kind) {
        case BarKind::io:
            if (sz < 4 || sz > 0x10000)
                return failf("BAR{}: I/O size {:#x} is not in 4..64 KiB", i, sz);
            if (b.prefetchable) return failf("BAR{}: an I/O BAR cannot be prefetchable", i);
            return ok();
        case BarKind::mem24:
            if (sz < 16 || sz > k1M)
                return failf("BAR{}: below-1-MiB memory size {:#x} is not in 16..1 MiB", i, sz);
            return ok();
        case BarKind::mem32:
            // Bit 31 is the highest address bit a 32-bit BAR has, so 2 GiB is the limit.
            if (sz < 16 || sz > (1ull << 31))
                return failf("BAR{}: 32-bit memory size {:#x} is not in 16..2 GiB", i, sz);
            return ok();
        case BarKind::mem64:
            if (sz < 16 || sz > (1ull << 63))
                return failf("BAR{}: 64-bit memory size {:#x} is not in 16..2^63", i, sz);
            if (i + 1 >= kBarCount)
                return failf("BAR{}: a 64-bit BAR needs two slots and BAR{} is the last", i, i);
            return ok();
        case BarKind::rom:
            return failf("BAR{}: the expansion ROM is not a BAR slot (use BarLayout::rom)", i);
    }
    return failf("BAR{}: unknown kind", i);
}

}  // namespace

const char* bar_kind_name(BarKind kind) {
    switch (kind) {
        case BarKind::io:
            return "io";
        case BarKind::mem32:
            return "mem32";
        case BarKind::mem24:
            return "mem24";
        case BarKind::mem64:
            return "mem64";
        case BarKind::rom:
            return "rom";
    }
    return "?";
}

std::optional<BarRegister> decode_bar_register(uint32_t low) {
    if (low & kIoIndicator) return BarRegister{.kind = BarKind::io, .address_mask = kIoAddressMask};
    const bool pf = (low & kMemPrefetchable) != 0;
    switch ((low >> kMemTypeShift) & 0x3) {
        case kMemType32:
            return BarRegister{BarKind::mem32, pf, kMemAddressMask};
        case kMemType1M:
            return BarRegister{BarKind::mem24, pf, kMemAddressMask};
        case kMemType64:
            return BarRegister{BarKind::mem64, pf, kMemAddressMask};
        default:  // 11b is reserved
            return std::nullopt;
    }
}

uint64_t bar_size_from_readback(const BarRegister& bar, uint32_t low, uint32_t high) {
    uint64_t bits = low & bar.address_mask;
    if (bar.kind == BarKind::mem64) bits |= uint64_t{high} << 32;
    return lowest_bit(bits);
}

Result<void> validate_layout(const BarLayout& layout) {
    for (int i = 0; i < kBarCount; ++i) {
        const auto& b = layout.bars[static_cast<size_t>(i)];
        if (!b) continue;
        POTEMKIN_TRY(validate_bar(i, *b));
        if (b->kind == BarKind::mem64 && layout.bars[static_cast<size_t>(i) + 1])
            return failf("BAR{}: is the upper half of 64-bit BAR{} and cannot hold a BAR", i + 1,
                         i);
        if (b->kind == BarKind::mem64) ++i;  // the upper half is checked above
    }
    if (layout.rom) {
        const auto& r = *layout.rom;
        if (!std::has_single_bit(r.size) || r.size < 2048)
            return failf("ROM: size {:#x} is not a power of two >= 2 KiB", r.size);
        if (r.address & (r.size - 1))
            return failf("ROM: address {:#x} is not aligned to its size {:#x}", r.address, r.size);
    }
    return ok();
}

Result<void> install_bars(ConfigSpace& cs, const BarLayout& layout) {
    POTEMKIN_TRY(validate_layout(layout));
    for (int i = 0; i < kBarCount; ++i) {
        const uint32_t off = reg::bar(i);
        const auto& b = layout.bars[static_cast<size_t>(i)];
        if (!b) {
            POTEMKIN_TRY(cs.set_u32(off, 0));
            continue;
        }
        // The writable address bits: everything at and above log2(size).
        const uint64_t addr_bits = ~(b->size - 1);
        const uint32_t pf = b->prefetchable ? kMemPrefetchable : 0;
        switch (b->kind) {
            case BarKind::io:
                POTEMKIN_TRY(cs.set_u32(off, (lo32(b->address) & kIoAddressMask) | kIoIndicator,
                                        {.wmask = lo32(addr_bits) & kIoAddressMask}));
                break;
            case BarKind::mem24:
            case BarKind::mem32: {
                const uint32_t type = b->kind == BarKind::mem24 ? kMemType1M : kMemType32;
                POTEMKIN_TRY(cs.set_u32(off, lo32(b->address) | (type << kMemTypeShift) | pf,
                                        {.wmask = lo32(addr_bits) & kMemAddressMask}));
                break;
            }
            case BarKind::mem64:
                // For sizes >= 4 GiB the low dword has no writable address bits and the
                // high dword's low bits are read-only zero.
                POTEMKIN_TRY(cs.set_u32(off, lo32(b->address) | (kMemType64 << kMemTypeShift) | pf,
                                        {.wmask = lo32(addr_bits) & kMemAddressMask}));
                POTEMKIN_TRY(cs.set_u32(off + 4, hi32(b->address), {.wmask = hi32(addr_bits)}));
                ++i;
                break;
            case BarKind::rom:
                return fail("unreachable: ROM in a BAR slot passed validation");
        }
    }
    if (layout.rom) {
        const uint32_t addr_bits = ~(layout.rom->size - 1) & kRomAddressMask;
        POTEMKIN_TRY(
            cs.set_u32(reg::kRomBar, layout.rom->address, {.wmask = addr_bits | kRomEnable}));
    } else {
        POTEMKIN_TRY(cs.set_u32(reg::kRomBar, 0));
    }
    return ok();
}

std::optional<BarInfo> bar_info(const ConfigSpace& cs, int index) {
    if (index == kRomBarIndex) {
        const uint32_t v = cs.read(reg::kRomBar, 4);
        const uint32_t amask = cs.masks(reg::kRomBar, 4).wmask & kRomAddressMask;
        if (amask == 0) return std::nullopt;
        return BarInfo{.index = index,
                       .kind = BarKind::rom,
                       .prefetchable = false,
                       .address = v & kRomAddressMask,
                       .size = lowest_bit(amask),
                       .rom_enabled = (v & kRomEnable) != 0};
    }
    if (index < 0 || index >= kBarCount) return std::nullopt;
    // Walk from BAR0: whether `index` is a BAR of its own or the upper half of a 64-bit BAR
    // depends on the type bits of the slots before it.
    int i = 0;
    while (i < index) i += is_mem64_low(cs.read(reg::bar(i), 4)) ? 2 : 1;
    if (i != index) return std::nullopt;

    const uint32_t v = cs.read(reg::bar(i), 4);
    const auto bar = decode_bar_register(v);
    if (!bar) return std::nullopt;
    // The write mask is what sizing reads back: the writable address bits.
    const uint32_t wm = cs.masks(reg::bar(i), 4).wmask;
    uint64_t address = v & bar->address_mask;
    uint32_t hwm = 0;
    if (bar->kind == BarKind::mem64) {
        if (i + 1 >= kBarCount) return std::nullopt;  // malformed: no upper half
        address |= uint64_t{cs.read(reg::bar(i + 1), 4)} << 32;
        hwm = cs.masks(reg::bar(i + 1), 4).wmask;
    }
    const uint64_t size = bar_size_from_readback(*bar, wm, hwm);
    if (size == 0) return std::nullopt;
    return BarInfo{.index = index,
                   .kind = bar->kind,
                   .prefetchable = bar->prefetchable,
                   .address = address,
                   .size = size};
}

bool bar_address_valid(const ConfigSpace& cs, const BarInfo& bar) {
    const uint64_t a = bar.address;
    if (a == 0 || bar.size == 0) return false;
    // Sizing in progress: every writable address bit reads 1. (QEMU's PCI_BAR_UNMAPPED
    // test; without it the probe would map the device at the top of the address space.)
    auto all_ones = [&](uint32_t off, uint32_t field_mask) {
        const uint32_t m = cs.masks(off, 4).wmask & field_mask;
        return m != 0 && (cs.read(off, 4) & m) == m;
    };
    switch (bar.kind) {
        case BarKind::io:
            if (all_ones(reg::bar(bar.index), kIoAddressMask)) return false;
            return a + bar.size <= 0x10000;
        case BarKind::mem24:
            if (all_ones(reg::bar(bar.index), kMemAddressMask)) return false;
            return a + bar.size <= k1M;
        case BarKind::mem32:
            if (all_ones(reg::bar(bar.index), kMemAddressMask)) return false;
            return a + bar.size <= k4G;
        case BarKind::rom:
            if (all_ones(reg::kRomBar, kRomAddressMask)) return false;
            return a + bar.size <= k4G;
        case BarKind::mem64:
            // Either half alone being probed (the other half holding an ordinary value) is
            // sizing too: a guest sizes the halves one after the other.
            if (all_ones(reg::bar(bar.index), kMemAddressMask)) return false;
            if (all_ones(reg::bar(bar.index + 1), 0xFFFF'FFFFu)) return false;
            // The last byte must be below 2^64 - 1 (QEMU: last_addr < HWADDR_MAX), so the
            // exclusive end is representable.
            return bar.size - 1 < std::numeric_limits<uint64_t>::max() - a;
    }
    return false;
}

std::optional<BarInfo> decode_bar(const ConfigSpace& cs, int index) {
    auto info = bar_info(cs, index);
    if (!info) return std::nullopt;
    const uint16_t cmd = static_cast<uint16_t>(cs.read(reg::kCommand, 2));
    const bool enabled = info->kind == BarKind::io ? (cmd & command::kIoSpace) != 0
                         : info->kind == BarKind::rom
                             ? (cmd & command::kMemorySpace) != 0 && info->rom_enabled
                             : (cmd & command::kMemorySpace) != 0;
    if (!enabled || !bar_address_valid(cs, *info)) return std::nullopt;
    return info;
}

}  // namespace potemkin::pci
