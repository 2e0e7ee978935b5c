// The consequence of a config write, as a value (crosvm's ConfigWriteResult): which I/O and
// MMIO ranges stop being decoded and which start. Computed by diffing the decoded ranges
// before and after the write, so every path that can change decode (command register, BAR
// low/high halves, ROM BAR and its enable bit) is covered by one mechanism. The PCI bus
// applies the changes to the PortBus/MmioBus all-or-nothing; devices never touch the buses.
//
// Decode rules follow QEMU's pci_update_mappings (see bar.hpp, bar_address_valid): gated by
// the command register's I/O-space and memory-space bits (and the ROM enable bit); a zero
// address, an address field of all-ones (sizing) or a range beyond the address space is not
// decoded. So a sizing probe never maps anything; it removes the BAR while it is in
// progress and the restore adds it back.
//
// A 64-bit BAR decodes at whatever its two halves currently combine to: relocating it by
// writing the halves one at a time passes through an intermediate address, which is mapped if
// valid and unmapped again by the second write. Either order ends at the same state. (A
// front-end that must not expose the intermediate can shadow the low half until the high
// half is written; this layer reports what the registers say.)
#pragma once

#include <cstdint>
#include <vector>

#include "common/address.hpp"
#include "pci/bar.hpp"
#include "pci/config_space.hpp"

namespace potemkin::pci {

struct IoRange {
    uint16_t base = 0;
    uint32_t length = 0;
    int bar = 0;  // 0..5
    Port port() const { return Port(base); }
    bool operator==(const IoRange&) const = default;
};

struct MmioRange {
    uint64_t base = 0;
    uint64_t length = 0;
    int bar = 0;  // 0..5, or kRomBarIndex (6) for the expansion ROM
    Gpa gpa() const { return Gpa(base); }
    bool operator==(const MmioRange&) const = default;
};

// The ranges a function decodes right now, in BAR order.
struct DecodeSnapshot {
    std::vector<IoRange> io;
    std::vector<MmioRange> mmio;
    bool operator==(const DecodeSnapshot&) const = default;
};

// What to do to the buses. Apply removals before additions (a BAR moving onto a range it
// shares with its old placement must be unmapped first).
struct BusChanges {
    std::vector<IoRange> io_remove, io_add;
    std::vector<MmioRange> mmio_remove, mmio_add;
    bool empty() const {
        return io_remove.empty() && io_add.empty() && mmio_remove.empty() && mmio_add.empty();
    }
    bool operator==(const BusChanges&) const = default;
};

// The ranges of the BARs in `layout` (and its ROM) that the function decodes (decode_bar).
DecodeSnapshot decode_all(const ConfigSpace& cs, const BarLayout& layout);

// Ranges in `before` and not in `after` are removed; ranges in `after` and not in `before`
// are added. A range that is identical in both (same BAR, base, length) appears in neither.
BusChanges diff_decode(const DecodeSnapshot& before, const DecodeSnapshot& after);

struct ConfigWriteResult {
    BusChanges bus;
};

// The whole guest config write for a device without its own shadowing: snapshot, the
// generic masked write, snapshot, diff.
ConfigWriteResult write_config(ConfigSpace& cs, const BarLayout& layout, uint32_t offset,
                               unsigned size, uint32_t value);

}  // namespace potemkin::pci
