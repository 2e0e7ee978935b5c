// The remote's private BAR layout. BAR_READ/BAR_WRITE address the remote's own address spaces,
// so the client sizes every BAR from the remote's registers and places them there itself:
// memory BARs (and the ROM) naturally aligned above guest RAM (the remote maps RAM over PCI
// memory, so they must not overlap), I/O BARs from io_base; then it programs them and keeps
// decode on. The guest's BAR values live in the front-end and never reach the remote.
#include <algorithm>
#include <vector>

#include "common/log.hpp"
#include "mpqemu/client_impl.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::mpqemu {

namespace {

uint64_t lowest_bit(uint64_t v) {
    return v & (~v + 1);
}

uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) & ~(a - 1);
}

}  // namespace

// Sizes every BAR and the ROM from the remote's registers: save, write all-ones, read back,
// restore (PCI 3.0 6.2.5.1).
Result<void> MpqemuClient::Impl::probe_bars_locked() {
    auto size_register = [&](uint32_t off, uint32_t ones) -> Result<uint32_t> {
        POTEMKIN_TRY_ASSIGN(const uint32_t orig, cfg_read_locked(off, 4));
        POTEMKIN_TRY(cfg_write_locked(off, ones, 4));
        POTEMKIN_TRY_ASSIGN(const uint32_t v, cfg_read_locked(off, 4));
        POTEMKIN_TRY(cfg_write_locked(off, orig, 4));
        return v;
    };
    bars_ = {};
    for (uint32_t i = 0; i < pci::kBarCount; ++i) {
        POTEMKIN_TRY_ASSIGN(const uint32_t v,
                            size_register(pci::reg::bar(static_cast<int>(i)), 0xFFFF'FFFFu));
        MpqemuBar& b = bars_[i];
        if (v == 0) continue;
        const auto decoded = pci::decode_bar_register(v);
        if (!decoded) {
            log::warn("{}: BAR{} reads {:#x} (reserved memory type 11b) when sized: ignored",
                      s_.label, i, v);
            continue;
        }
        b.kind = decoded->kind;
        b.prefetchable = decoded->prefetchable;
        uint32_t high = 0;
        if (decoded->kind == pci::BarKind::mem64) {
            if (i + 1 >= pci::kBarCount)
                return failf("{}: BAR5 claims to be the low half of a 64-bit BAR", s_.label);
            POTEMKIN_TRY_ASSIGN(
                high, size_register(pci::reg::bar(static_cast<int>(i) + 1), 0xFFFF'FFFFu));
        }
        b.size = pci::bar_size_from_readback(*decoded, v, high);
        if (decoded->kind == pci::BarKind::mem64) ++i;  // the upper slot stays absent
        if (b.size == 0) {
            log::warn("{}: BAR{} reads {:#x} when sized: ignored", s_.label, i, v);
            b = {};
        }
    }
    POTEMKIN_TRY_ASSIGN(const uint32_t rom, size_register(pci::reg::kRomBar, pci::kRomAddressMask));
    if ((rom & pci::kRomAddressMask) != 0) {
        bars_[hostdev::kRomRegion].kind = pci::BarKind::rom;
        bars_[hostdev::kRomRegion].size = lowest_bit(rom & pci::kRomAddressMask);
    }
    return ok();
}

Result<void> MpqemuClient::Impl::place_bars() {
    uint64_t mem = s_.mem_base;
    if (s_.memory != nullptr)
        for (const auto& r : s_.memory->regions())
            mem = std::max(mem, align_up(r.base.value + r.size, 1u << 20));
    std::vector<uint32_t> order;
    for (uint32_t i = 0; i < bars_.size(); ++i)
        if (bars_[i].size != 0) order.push_back(i);
    // 32-bit BARs first (they must end below 4 GiB), then 64-bit ones; largest first within
    // each, so natural alignment wastes nothing.
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
        const bool a64 = bars_[a].kind == pci::BarKind::mem64,
                   b64 = bars_[b].kind == pci::BarKind::mem64;
        if (a64 != b64) return b64;
        return bars_[a].size > bars_[b].size;
    });
    uint64_t io = s_.io_base;
    decode_bits_ = 0;
    for (uint32_t i : order) {
        MpqemuBar& b = bars_[i];
        if (b.kind == pci::BarKind::io) {
            b.base = align_up(io, b.size);
            io = b.base + b.size;
            if (io > 0x1'0000)
                return failf("{}: the I/O BARs do not fit below 64 KiB from {:#x}", s_.label,
                             s_.io_base);
            decode_bits_ |= pci::command::kIoSpace;
        } else {
            b.base = align_up(mem, b.size);
            mem = b.base + b.size;
            if (b.kind != pci::BarKind::mem64 && mem > (1ull << 32))
                return failf("{}: {} ({:#x} bytes, 32-bit) does not fit below 4 GiB from {:#x}",
                             s_.label, hostdev::region_name(i), b.size, s_.mem_base);
            decode_bits_ |= pci::command::kMemorySpace;
        }
    }
    return ok();
}

// The layout into the remote's registers, and decode on (with the guest's other command bits).
Result<void> MpqemuClient::Impl::program_bars_locked() {
    for (uint32_t i = 0; i < pci::kBarCount; ++i) {
        const MpqemuBar& b = bars_[i];
        if (b.size == 0) continue;
        POTEMKIN_TRY(
            cfg_write_locked(pci::reg::bar(static_cast<int>(i)), static_cast<uint32_t>(b.base), 4));
        if (b.kind == pci::BarKind::mem64)
            POTEMKIN_TRY(cfg_write_locked(pci::reg::bar(static_cast<int>(i) + 1),
                                          static_cast<uint32_t>(b.base >> 32), 4));
    }
    const MpqemuBar& rom = bars_[hostdev::kRomRegion];
    if (rom.size != 0)
        POTEMKIN_TRY(cfg_write_locked(pci::reg::kRomBar, static_cast<uint32_t>(rom.base) | 1u, 4));
    return cfg_write_locked(pci::reg::kCommand, guest_command_ | decode_bits_, 2);
}

}  // namespace potemkin::mpqemu
