// Config writes as values: exactly which ranges are removed and added.
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "pci/config_write.hpp"
#include "pci/header.hpp"
#include "pci/registers.hpp"

namespace potemkin::pci {
namespace {

constexpr uint16_t kMem = command::kMemorySpace;
constexpr uint16_t kIo = command::kIoSpace;

// BAR0 mem32 4 KiB, BAR1 I/O 32 bytes, BAR2/3 mem64 16 KiB prefetchable, BAR4 mem24 256
// bytes, ROM 64 KiB.
BarLayout test_layout() {
    BarLayout l;
    l.bars[0] = BarSettings{.kind = BarKind::mem32, .size = 0x1000};
    l.bars[1] = BarSettings{.kind = BarKind::io, .size = 0x20};
    l.bars[2] = BarSettings{.kind = BarKind::mem64, .size = 0x4000, .prefetchable = true};
    l.bars[4] = BarSettings{.kind = BarKind::mem24, .size = 0x100};
    l.rom = RomSettings{.size = 0x1'0000};
    return l;
}

struct Device {
    BarLayout layout = test_layout();
    ConfigSpace cs;

    Device() {
        auto h = make_type0_header({.vendor_id = 0x1234, .device_id = 0x11e8});
        EXPECT_TRUE(h);
        if (h) cs = std::move(h).value();
        auto r = install_bars(cs, layout);
        EXPECT_TRUE(r) << r.error().message;
    }
    BusChanges write(uint32_t offset, unsigned size, uint32_t value) {
        return write_config(cs, layout, offset, size, value).bus;
    }
    // Program every BAR with decode off: no changes expected.
    void program() {
        EXPECT_TRUE(write(reg::bar(0), 4, 0xFEB0'0000).empty());
        EXPECT_TRUE(write(reg::bar(1), 4, 0xC000).empty());
        EXPECT_TRUE(write(reg::bar(2), 4, 0x0000'4000).empty());
        EXPECT_TRUE(write(reg::bar(3), 4, 0x0000'0008).empty());
        EXPECT_TRUE(write(reg::bar(4), 4, 0x000D'0000).empty());
        EXPECT_TRUE(write(reg::kRomBar, 4, 0xFEA0'0000).empty());
    }
};

const MmioRange kBar0{0xFEB0'0000, 0x1000, 0};
const IoRange kBar1{0xC000, 0x20, 1};
const MmioRange kBar2{0x8'0000'4000, 0x4000, 2};
const MmioRange kBar4{0xD'0000, 0x100, 4};
const MmioRange kRom{0xFEA0'0000, 0x1'0000, kRomBarIndex};

// A model bus: applies changes and checks they are consistent (never remove what is not
// mapped, never add what is).
struct ModelBus {
    std::set<std::tuple<uint64_t, uint64_t, int>> mmio;
    std::set<std::tuple<uint64_t, uint64_t, int>> io;

    void apply(const BusChanges& c) {
        for (const auto& r : c.mmio_remove) EXPECT_EQ(mmio.erase({r.base, r.length, r.bar}), 1u);
        for (const auto& r : c.io_remove) EXPECT_EQ(io.erase({r.base, r.length, r.bar}), 1u);
        for (const auto& r : c.mmio_add) EXPECT_TRUE(mmio.insert({r.base, r.length, r.bar}).second);
        for (const auto& r : c.io_add) EXPECT_TRUE(io.insert({r.base, r.length, r.bar}).second);
    }
};

TEST(PciConfigWrite, ProgrammingBarsWithDecodeOffChangesNothing) {
    Device d;
    d.program();
    EXPECT_TRUE(decode_all(d.cs, d.layout).mmio.empty());
    EXPECT_TRUE(decode_all(d.cs, d.layout).io.empty());
}

TEST(PciConfigWrite, EnableMemoryAddsExactlyTheMemoryBars) {
    Device d;
    d.program();
    const BusChanges c = d.write(reg::kCommand, 2, kMem);
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kBar0, kBar2, kBar4}));  // ROM enable off
    EXPECT_TRUE(c.mmio_remove.empty());
    EXPECT_TRUE(c.io_add.empty());
    EXPECT_TRUE(c.io_remove.empty());
}

TEST(PciConfigWrite, EnableIoAddsOnlyTheIoBar) {
    Device d;
    d.program();
    const BusChanges c = d.write(reg::kCommand, 2, kIo);
    EXPECT_EQ(c.io_add, (std::vector<IoRange>{kBar1}));
    EXPECT_EQ(c.io_add[0].port(), Port(0xC000));
    EXPECT_TRUE(c.mmio_add.empty());
    EXPECT_TRUE(c.mmio_remove.empty());
    EXPECT_TRUE(c.io_remove.empty());
}

TEST(PciConfigWrite, DisableMemoryRemovesAndLeavesIoAlone) {
    Device d;
    d.program();
    (void)d.write(reg::kCommand, 2, kMem | kIo);
    const BusChanges c = d.write(reg::kCommand, 2, kIo);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar0, kBar2, kBar4}));
    EXPECT_TRUE(c.mmio_add.empty());
    EXPECT_TRUE(c.io_remove.empty());
    EXPECT_TRUE(c.io_add.empty());
}

TEST(PciConfigWrite, ByteWriteToCommandRegisterTogglesDecode) {
    Device d;
    d.program();
    EXPECT_EQ(d.write(reg::kCommand, 1, kMem).mmio_add.size(), 3u);
    // Writing the upper byte (SERR#, interrupt disable) leaves decode alone.
    EXPECT_TRUE(d.write(reg::kCommand + 1, 1, 0x05).empty());
    EXPECT_EQ(d.write(reg::kCommand, 4, 0).mmio_remove.size(), 3u);
}

TEST(PciConfigWrite, UnchangedBarsDoNotAppear) {
    Device d;
    d.program();
    (void)d.write(reg::kCommand, 2, kMem | kIo);
    EXPECT_TRUE(d.write(reg::bar(0), 4, 0xFEB0'0000).empty());  // same address again
    EXPECT_TRUE(d.write(reg::kCommand, 2, kMem | kIo).empty());
    EXPECT_TRUE(d.write(reg::kInterruptLine, 1, 11).empty());
    EXPECT_TRUE(d.write(reg::kStatus, 2, 0xFFFF).empty());
    EXPECT_TRUE(d.write(reg::bar(0), 1, 0x55).empty());  // RO low bits of a 4 KiB BAR
}

TEST(PciConfigWrite, MoveBarWhileEnabledRemovesOldAddsNew) {
    Device d;
    d.program();
    (void)d.write(reg::kCommand, 2, kMem | kIo);
    BusChanges c = d.write(reg::bar(0), 4, 0xFEC0'0000);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar0}));
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{{0xFEC0'0000, 0x1000, 0}}));
    EXPECT_TRUE(c.io_add.empty() && c.io_remove.empty());

    c = d.write(reg::bar(1), 4, 0xD000);
    EXPECT_EQ(c.io_remove, (std::vector<IoRange>{kBar1}));
    EXPECT_EQ(c.io_add, (std::vector<IoRange>{{0xD000, 0x20, 1}}));
    EXPECT_TRUE(c.mmio_add.empty() && c.mmio_remove.empty());
}

TEST(PciConfigWrite, SizingWriteWhileEnabledRemovesOnlyAndRestoreAddsBack) {
    Device d;
    d.program();
    (void)d.write(reg::kCommand, 2, kMem);
    BusChanges c = d.write(reg::bar(0), 4, 0xFFFF'FFFF);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar0}));
    EXPECT_TRUE(c.mmio_add.empty());
    EXPECT_EQ(d.cs.read(reg::bar(0), 4), 0xFFFF'F000u);
    c = d.write(reg::bar(0), 4, 0xFEB0'0000);
    EXPECT_TRUE(c.mmio_remove.empty());
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kBar0}));
}

TEST(PciConfigWrite, SizingWriteNeverMapsAllOnesAddress) {
    // An OS sizes BARs with decode enabled by a firmware that left them at 0: nothing may
    // appear at 0xFFFFF000 (or at 0xFFE0 in port space).
    Device d;
    EXPECT_TRUE(d.write(reg::kCommand, 2, kMem | kIo).empty());
    for (int i : {0, 1, 2, 3, 4}) {
        EXPECT_TRUE(d.write(reg::bar(i), 4, 0xFFFF'FFFF).empty()) << i;
        EXPECT_TRUE(d.write(reg::bar(i), 4, 0).empty()) << i;
    }
    EXPECT_TRUE(d.write(reg::kRomBar, 4, 0xFFFF'FFFF).empty());
    EXPECT_TRUE(d.write(reg::kRomBar, 4, 0).empty());
}

TEST(PciConfigWrite, SizingWithDecodeOffProducesNothing) {
    Device d;
    d.program();
    EXPECT_TRUE(d.write(reg::bar(0), 4, 0xFFFF'FFFF).empty());
    EXPECT_TRUE(d.write(reg::bar(0), 4, 0xFEB0'0000).empty());
}

TEST(PciConfigWrite, Mem64RelocatedLowThenHigh) {
    Device d;
    d.program();
    ModelBus bus;
    bus.apply(d.write(reg::kCommand, 2, kMem));
    // 0x8'0000'4000 -> 0x9'1000'0000: the intermediate (high 8, low 0x1000'0000) is mapped
    // briefly, then replaced.
    BusChanges c = d.write(reg::bar(2), 4, 0x1000'0000);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar2}));
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{{0x8'1000'0000, 0x4000, 2}}));
    bus.apply(c);
    c = d.write(reg::bar(3), 4, 0x9);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{{0x8'1000'0000, 0x4000, 2}}));
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{{0x9'1000'0000, 0x4000, 2}}));
    bus.apply(c);
    EXPECT_EQ(bus.mmio.count({0x9'1000'0000, 0x4000, 2}), 1u);
    EXPECT_EQ(bus.mmio.count({0x8'0000'4000, 0x4000, 2}), 0u);
}

TEST(PciConfigWrite, Mem64RelocatedHighThenLow) {
    Device d;
    d.program();
    ModelBus bus;
    bus.apply(d.write(reg::kCommand, 2, kMem));
    BusChanges c = d.write(reg::bar(3), 4, 0x9);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar2}));
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{{0x9'0000'4000, 0x4000, 2}}));
    bus.apply(c);
    bus.apply(d.write(reg::bar(2), 4, 0x1000'0000));
    // Both orders end in the same state.
    EXPECT_EQ(decode_all(d.cs, d.layout).mmio,
              (std::vector<MmioRange>{kBar0, {0x9'1000'0000, 0x4000, 2}, kBar4}));
    EXPECT_EQ(bus.mmio.count({0x9'1000'0000, 0x4000, 2}), 1u);
    EXPECT_EQ(bus.mmio.size(), 3u);
}

TEST(PciConfigWrite, Mem64SizingBothHalvesNeverMapsTheProbe) {
    Device d;
    d.program();
    ModelBus bus;
    bus.apply(d.write(reg::kCommand, 2, kMem));
    // Linux order: low probe, restore, high probe, restore.
    BusChanges c = d.write(reg::bar(2), 4, 0xFFFF'FFFF);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar2}));
    EXPECT_TRUE(c.mmio_add.empty());
    bus.apply(c);
    EXPECT_EQ(d.cs.read(reg::bar(2), 4), 0xFFFF'C00Cu);
    c = d.write(reg::bar(2), 4, 0x4000);
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kBar2}));
    bus.apply(c);
    c = d.write(reg::bar(3), 4, 0xFFFF'FFFF);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar2}));
    EXPECT_TRUE(c.mmio_add.empty());
    bus.apply(c);
    EXPECT_EQ(d.cs.read(reg::bar(3), 4), 0xFFFF'FFFFu);
    c = d.write(reg::bar(3), 4, 0x8);
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kBar2}));
    bus.apply(c);
    EXPECT_EQ(bus.mmio.size(), 3u);
}

TEST(PciConfigWrite, LargeMem64HighProbeRemovesAndRestoreAddsBack) {
    BarLayout l;
    l.bars[0] = BarSettings{.kind = BarKind::mem64, .size = 8ull << 30, .address = 4ull << 32};
    auto h = make_type0_header({.vendor_id = 1});
    ASSERT_TRUE(h);
    ConfigSpace cs = std::move(h).value();
    ASSERT_TRUE(install_bars(cs, l));
    const MmioRange bar{4ull << 32, 8ull << 30, 0};
    EXPECT_EQ(write_config(cs, l, reg::kCommand, 2, kMem).bus.mmio_add,
              (std::vector<MmioRange>{bar}));
    EXPECT_TRUE(write_config(cs, l, reg::bar(0), 4, 0xFFFF'FFFF).bus.empty());
    EXPECT_EQ(write_config(cs, l, reg::bar(1), 4, 0xFFFF'FFFF).bus.mmio_remove,
              (std::vector<MmioRange>{bar}));
    EXPECT_EQ(cs.read(reg::bar(1), 4), 0xFFFF'FFFEu);
    EXPECT_EQ(write_config(cs, l, reg::bar(1), 4, 4).bus.mmio_add, (std::vector<MmioRange>{bar}));
}

TEST(PciConfigWrite, RomEnableBitAddsAndRemovesTheRom) {
    Device d;
    d.program();
    EXPECT_EQ(d.write(reg::kCommand, 2, kMem).mmio_add.size(), 3u);
    BusChanges c = d.write(reg::kRomBar, 4, 0xFEA0'0001);
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kRom}));
    EXPECT_TRUE(c.mmio_remove.empty());
    c = d.write(reg::kRomBar, 1, 0x00);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kRom}));
    EXPECT_TRUE(c.mmio_add.empty());
}

TEST(PciConfigWrite, RomEnabledButMemorySpaceOffIsNotMapped) {
    Device d;
    d.program();
    EXPECT_TRUE(d.write(reg::kRomBar, 4, 0xFEA0'0001).empty());
    const BusChanges c = d.write(reg::kCommand, 2, kMem);
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kBar0, kBar2, kBar4, kRom}));
    EXPECT_EQ(d.write(reg::kCommand, 2, 0).mmio_remove.size(), 4u);
}

TEST(PciConfigWrite, RomSizingWithEnableSetRemovesOnly) {
    Device d;
    d.program();
    (void)d.write(reg::kCommand, 2, kMem);
    (void)d.write(reg::kRomBar, 4, 0xFEA0'0001);
    BusChanges c = d.write(reg::kRomBar, 4, 0xFFFF'FFFF);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kRom}));
    EXPECT_TRUE(c.mmio_add.empty());
    EXPECT_EQ(d.cs.read(reg::kRomBar, 4), 0xFFFF'0001u);
    c = d.write(reg::kRomBar, 4, 0xFEA0'0001);
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{kRom}));
}

TEST(PciConfigWrite, MovingOutOfTheAddressSpaceRemovesOnly) {
    Device d;
    d.program();
    (void)d.write(reg::kCommand, 2, kMem | kIo);
    BusChanges c = d.write(reg::bar(1), 4, 0x1'0000);  // beyond 64 KiB of ports
    EXPECT_EQ(c.io_remove, (std::vector<IoRange>{kBar1}));
    EXPECT_TRUE(c.io_add.empty());
    c = d.write(reg::bar(4), 4, 0x10'0000);  // mem24 at 1 MiB
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar4}));
    EXPECT_TRUE(c.mmio_add.empty());
    c = d.write(reg::bar(0), 4, 0);  // zero address: unassigned
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar0}));
    EXPECT_TRUE(c.mmio_add.empty());
}

TEST(PciConfigWrite, BarsOutsideTheLayoutAreIgnored) {
    Device d;
    d.program();
    BarLayout only_bar0;
    only_bar0.bars[0] = d.layout.bars[0];
    (void)d.write(reg::kCommand, 2, kMem | kIo);
    const DecodeSnapshot s = decode_all(d.cs, only_bar0);
    EXPECT_EQ(s.mmio, (std::vector<MmioRange>{kBar0}));
    EXPECT_TRUE(s.io.empty());
}

TEST(PciConfigWrite, DiffListsOnlyRealChanges) {
    const DecodeSnapshot a{{kBar1}, {kBar0, kBar2}};
    EXPECT_TRUE(diff_decode(a, a).empty());
    const DecodeSnapshot b{{kBar1}, {kBar0, {kBar2.base, 0x8000, 2}}};
    const BusChanges c = diff_decode(a, b);
    EXPECT_EQ(c.mmio_remove, (std::vector<MmioRange>{kBar2}));
    EXPECT_EQ(c.mmio_add, (std::vector<MmioRange>{{kBar2.base, 0x8000, 2}}));
    EXPECT_TRUE(c.io_remove.empty() && c.io_add.empty());
    const BusChanges all = diff_decode({}, a);
    EXPECT_EQ(all.io_add, a.io);
    EXPECT_EQ(all.mmio_add, a.mmio);
    EXPECT_EQ(all.mmio_add[0].gpa(), Gpa(0xFEB0'0000));
}

TEST(PciConfigWrite, OutOfRangeConfigWriteChangesNothing) {
    Device d;
    d.program();
    EXPECT_TRUE(d.write(0x100, 4, kMem).empty());
    EXPECT_TRUE(d.write(reg::kCommand, 3, kMem).empty());
}

}  // namespace
}  // namespace potemkin::pci
