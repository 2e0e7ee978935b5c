// Base Address Registers and the expansion ROM BAR (PCI Local Bus Spec 3.0 sections 6.2.5,
// 6.2.5.1, 6.2.5.2).
//
// A BAR's size is never stored: it falls out of the write mask. The writable bits are the
// address bits at and above log2(size), so writing all-ones and reading back yields the
// standard sizing answer (spec 3.0 section 6.2.5.1 "Address Maps"):
//   I/O      : ~(size-1) | 01b              (bit 1 reserved, bit 0 = I/O indicator)
//   Mem32    : ~(size-1) | P<<3 | 00b<<1    (P = prefetchable)
//   Mem24    : ~(size-1) | P<<3 | 01b<<1    (legacy "below 1 MiB" type)
//   Mem64    : low  ~(size-1) | P<<3 | 10b<<1, high ~((size-1) >> 32)
//   ROM      : ~(size-1) & 0xFFFFF800 | enable bit 0 (RW)
// All type bits are read-only.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "common/result.hpp"
#include "pci/config_space.hpp"

namespace potemkin::pci {

inline constexpr int kBarCount = 6;
// Index used for the expansion ROM BAR wherever a BAR index is expected.
inline constexpr int kRomBarIndex = 6;
// The expansion ROM BAR's address bits (spec 3.0 section 6.2.5.2; bit 0 enables, 10:1 reserved).
inline constexpr uint32_t kRomAddressMask = 0xFFFF'F800u;

enum class BarKind : uint8_t {
    io,     // I/O space
    mem32,  // memory, anywhere in the 32-bit space
    mem24,  // memory, legacy: must be placed below 1 MiB (type 01b)
    mem64,  // memory, anywhere in the 64-bit space; uses this slot and the next
    rom,    // expansion ROM (only at kRomBarIndex)
};

const char* bar_kind_name(BarKind kind);

// A BAR register's low dword, decoded (spec 3.0 section 6.2.5.1). The one decoder of BAR type
// bits: the config space below, the front-end, the vfio-user and mpqemu clients (reading a
// remote device's registers) and the probe all use it.
struct BarRegister {
    BarKind kind =
        BarKind::mem32;  // io, mem32, mem24 or mem64 (mem64: the next slot is its upper half)
    bool prefetchable = false;
    uint32_t address_mask = 0;  // the low dword's address bits: ~0x3 for I/O, ~0xF for memory
};
// nullopt for the reserved memory type 11b.
std::optional<BarRegister> decode_bar_register(uint32_t low);
// The size that sizing shows (spec 3.0 section 6.2.5.1: write all-ones, read back): the lowest
// writable address bit. `low` and `high` are what was read back (for mem64, `high` is the upper
// dword's; otherwise ignored). 0: the BAR is not implemented.
uint64_t bar_size_from_readback(const BarRegister& bar, uint32_t low, uint32_t high = 0);

struct BarSettings {
    BarKind kind = BarKind::mem32;  // io, mem32, mem24 or mem64
    // Power of two; memory >= 16 bytes, I/O >= 4 bytes (and <= 64 KiB), mem24 <= 1 MiB,
    // mem32 <= 2 GiB.
    uint64_t size = 0;
    bool prefetchable = false;  // memory only
    uint64_t address = 0;       // reset value; must be aligned to size; 0 = unassigned
};

struct RomSettings {
    uint32_t size = 0;     // power of two, >= 2 KiB
    uint32_t address = 0;  // reset value; must be aligned to size
};

// The BARs a type 0 function implements. bars[i] describes BAR i; a mem64 BAR at i also
// occupies i+1, which must then be empty (and i must be <= 4).
struct BarLayout {
    std::array<std::optional<BarSettings>, kBarCount> bars{};
    std::optional<RomSettings> rom;
};

// Check a layout without touching any config space.
Result<void> validate_layout(const BarLayout& layout);

// Write the BAR and ROM registers and their masks (0x10..0x27, 0x30..0x33). Slots without a
// BAR (and the ROM register when there is no ROM) read 0 and are read-only. Validates first;
// on error nothing is changed.
Result<void> install_bars(ConfigSpace& cs, const BarLayout& layout);

// What a BAR register pair currently says, read back from the config space alone: the kind
// from the read-only type bits, the size from the write mask (never from the value), the
// address from the value.
struct BarInfo {
    int index = 0;  // 0..5, or kRomBarIndex
    BarKind kind = BarKind::mem32;
    bool prefetchable = false;
    uint64_t address = 0;  // the address field as programmed (type/enable bits removed)
    uint64_t size = 0;
    bool rom_enabled = false;  // ROM enable bit (ROM only)
};

// The BAR at `index` (0..5 or kRomBarIndex) as programmed, whether or not it decodes.
// nullopt when the slot is unimplemented, is the upper half of a mem64 BAR, or has reserved
// type bits (11b).
std::optional<BarInfo> bar_info(const ConfigSpace& cs, int index);

// Whether a programmed BAR is a usable decode target, ignoring the command register (QEMU's
// pci_bar_address rules): an address of 0, an address field with every writable bit set (a
// sizing probe in progress), a range beyond its kind's address space (64 KiB for I/O, 1 MiB
// for mem24, 4 GiB for mem32 and the ROM) or a 64-bit range that wraps is not.
// For mem64, either half alone holding all-ones in its writable bits counts as sizing.
bool bar_address_valid(const ConfigSpace& cs, const BarInfo& bar);

// The BAR at `index` if the function currently decodes it: implemented, its command register
// enable (I/O space for I/O, memory space for memory and ROM) set, the ROM enable bit set for
// the ROM, and bar_address_valid(). nullopt means "not decoded".
std::optional<BarInfo> decode_bar(const ConfigSpace& cs, int index);

}  // namespace potemkin::pci
