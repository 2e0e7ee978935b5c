// BAR install, sizing read-back, decode rules.
#include <gtest/gtest.h>

#include "pci/bar.hpp"
#include "pci/header.hpp"
#include "pci/registers.hpp"

namespace potemkin::pci {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

ConfigSpace with_bars(const BarLayout& layout) {
    auto cs = make_type0_header({.vendor_id = 0x1234, .device_id = 0x5678});
    EXPECT_TRUE(cs);
    if (!cs) return ConfigSpace{};
    auto r = install_bars(*cs, layout);
    EXPECT_TRUE(r) << r.error().message;
    return std::move(cs).value();
}

BarLayout one(int index, BarSettings b) {
    BarLayout l;
    l.bars[static_cast<size_t>(index)] = b;
    return l;
}

// Write all-ones to a BAR register and return what the guest reads back.
uint32_t probe(ConfigSpace& cs, uint32_t off, uint32_t pattern = 0xFFFF'FFFF) {
    cs.write(off, 4, pattern);
    return cs.read(off, 4);
}

void enable(ConfigSpace& cs, uint16_t bits) {
    cs.write(reg::kCommand, 2, bits);
}

// ---- Sizing: exact read-back after writing all-ones (spec 3.0 section 6.2.5.1) -----------

TEST(PciBar, IoSizingReadsBackMaskWithIoIndicator) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::io, .size = 0x20}));
    EXPECT_EQ(cs.read(reg::bar(0), 4), 0x1u);
    EXPECT_EQ(probe(cs, reg::bar(0)), 0xFFFF'FFE1u);
}

TEST(PciBar, IoMinimumSizeFourBytes) {
    ConfigSpace cs = with_bars(one(1, {.kind = BarKind::io, .size = 4}));
    EXPECT_EQ(probe(cs, reg::bar(1)), 0xFFFF'FFFDu);  // bit 1 reserved, RO 0
}

TEST(PciBar, Mem32SizingReadsBackMask) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem32, .size = 0x1000}));
    EXPECT_EQ(probe(cs, reg::bar(0)), 0xFFFF'F000u);
}

TEST(PciBar, Mem32PrefetchableBitSurvivesSizing) {
    ConfigSpace cs =
        with_bars(one(0, {.kind = BarKind::mem32, .size = 0x10'0000, .prefetchable = true}));
    EXPECT_EQ(cs.read(reg::bar(0), 4), 0x8u);
    EXPECT_EQ(probe(cs, reg::bar(0)), 0xFFF0'0008u);
    EXPECT_EQ(probe(cs, reg::bar(0), 0), 0x8u);  // type bits are read-only
}

TEST(PciBar, Mem32MinimumAndMaximumSize) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem32, .size = 16}));
    EXPECT_EQ(probe(cs, reg::bar(0)), 0xFFFF'FFF0u);
    ConfigSpace big = with_bars(one(0, {.kind = BarKind::mem32, .size = 2 * kGiB}));
    EXPECT_EQ(probe(big, reg::bar(0)), 0x8000'0000u);
}

TEST(PciBar, Mem24SizingReadsBackTypeBits01) {
    ConfigSpace cs = with_bars(one(2, {.kind = BarKind::mem24, .size = 0x1000}));
    EXPECT_EQ(cs.read(reg::bar(2), 4), 0x2u);
    EXPECT_EQ(probe(cs, reg::bar(2)), 0xFFFF'F002u);
}

TEST(PciBar, Mem64BelowFourGiBHighHalfFullyWritable) {
    ConfigSpace cs =
        with_bars(one(2, {.kind = BarKind::mem64, .size = 0x4000, .prefetchable = true}));
    EXPECT_EQ(cs.read(reg::bar(2), 4), 0xCu);
    EXPECT_EQ(probe(cs, reg::bar(2)), 0xFFFF'C00Cu);
    EXPECT_EQ(probe(cs, reg::bar(3)), 0xFFFF'FFFFu);
}

TEST(PciBar, Mem64ExactlyFourGiBHasNoLowAddressBits) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem64, .size = 4 * kGiB}));
    EXPECT_EQ(probe(cs, reg::bar(0)), 0x4u);
    EXPECT_EQ(probe(cs, reg::bar(1)), 0xFFFF'FFFFu);
}

TEST(PciBar, Mem64AboveFourGiBMasksHighHalfToo) {
    ConfigSpace cs =
        with_bars(one(0, {.kind = BarKind::mem64, .size = 8 * kGiB, .prefetchable = true}));
    EXPECT_EQ(probe(cs, reg::bar(0)), 0xCu);
    EXPECT_EQ(probe(cs, reg::bar(1)), 0xFFFF'FFFEu);
    auto info = bar_info(cs, 0);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->size, 8 * kGiB);
}

TEST(PciBar, RomSizingReadsBackMaskAndEnableBit) {
    BarLayout l;
    l.rom = RomSettings{.size = 0x1'0000};
    ConfigSpace cs = with_bars(l);
    EXPECT_EQ(probe(cs, reg::kRomBar), 0xFFFF'0001u);
    // Linux sizes with the enable bit clear (~PCI_ROM_ADDRESS_ENABLE).
    EXPECT_EQ(probe(cs, reg::kRomBar, 0xFFFF'F800), 0xFFFF'0000u);
    // Bits 10:1 are reserved, read-only zero.
    EXPECT_EQ(probe(cs, reg::kRomBar, 0x0000'07FE), 0u);
}

TEST(PciBar, RomMinimumSizeTwoKiB) {
    BarLayout l;
    l.rom = RomSettings{.size = 2048};
    ConfigSpace cs = with_bars(l);
    EXPECT_EQ(probe(cs, reg::kRomBar), 0xFFFF'F801u);
}

TEST(PciBar, InitialAddressesAreInstalled) {
    BarLayout l;
    l.bars[0] = BarSettings{.kind = BarKind::io, .size = 0x100, .address = 0xC000};
    l.bars[1] = BarSettings{.kind = BarKind::mem64, .size = 0x1000, .address = 0x8'0000'1000};
    l.rom = RomSettings{.size = 0x8000, .address = 0xFEB0'0000};
    ConfigSpace cs = with_bars(l);
    EXPECT_EQ(cs.read(reg::bar(0), 4), 0xC001u);
    EXPECT_EQ(cs.read(reg::bar(1), 4), 0x1004u);
    EXPECT_EQ(cs.read(reg::bar(2), 4), 0x8u);
    EXPECT_EQ(cs.read(reg::kRomBar, 4), 0xFEB0'0000u);  // enable bit clear at reset
}

TEST(PciBar, UnusedSlotsReadZeroAndIgnoreWrites) {
    ConfigSpace cs = with_bars(one(1, {.kind = BarKind::mem32, .size = 0x1000}));
    for (int i : {0, 2, 3, 4, 5}) EXPECT_EQ(probe(cs, reg::bar(i)), 0u) << i;
    EXPECT_EQ(probe(cs, reg::kRomBar), 0u);
    EXPECT_FALSE(bar_info(cs, 0));
    EXPECT_FALSE(bar_info(cs, kRomBarIndex));
}

// ---- bar_info: kind, size, address from the config space alone ---------------------------

TEST(PciBar, BarSizeComesFromMaskNotFromCurrentValue) {
    // The seed derived the size from the value (lowest set address bit); a BAR placed at
    // 0x1000'0000 would then look 256 MiB large.
    ConfigSpace cs =
        with_bars(one(0, {.kind = BarKind::mem32, .size = 0x1000, .address = 0x1000'0000}));
    auto info = bar_info(cs, 0);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->size, 0x1000u);
    EXPECT_EQ(info->address, 0x1000'0000u);
    cs.write(reg::bar(0), 4, 0xE000'0000);
    EXPECT_EQ(bar_info(cs, 0)->size, 0x1000u);
    cs.write(reg::bar(0), 4, 0xFFFF'FFFF);  // even mid-probe
    EXPECT_EQ(bar_info(cs, 0)->size, 0x1000u);
}

TEST(PciBar, InfoReportsKindsAndSkipsUpperHalves) {
    BarLayout l;
    l.bars[0] = BarSettings{.kind = BarKind::mem64, .size = 0x4000, .prefetchable = true};
    l.bars[2] = BarSettings{.kind = BarKind::io, .size = 0x40};
    l.bars[3] = BarSettings{.kind = BarKind::mem24, .size = 0x800};
    l.bars[4] = BarSettings{.kind = BarKind::mem64, .size = 16 * kGiB};
    ConfigSpace cs = with_bars(l);
    auto b0 = bar_info(cs, 0);
    ASSERT_TRUE(b0);
    EXPECT_EQ(b0->kind, BarKind::mem64);
    EXPECT_TRUE(b0->prefetchable);
    EXPECT_EQ(b0->size, 0x4000u);
    EXPECT_FALSE(bar_info(cs, 1));  // upper half of BAR0
    EXPECT_EQ(bar_info(cs, 2)->kind, BarKind::io);
    EXPECT_EQ(bar_info(cs, 2)->size, 0x40u);
    EXPECT_EQ(bar_info(cs, 3)->kind, BarKind::mem24);
    EXPECT_EQ(bar_info(cs, 4)->size, 16 * kGiB);
    EXPECT_FALSE(bar_info(cs, 5));
    EXPECT_FALSE(bar_info(cs, -1));
    EXPECT_FALSE(bar_info(cs, 7));
    EXPECT_STREQ(bar_kind_name(BarKind::mem64), "mem64");
}

TEST(PciBar, ReservedMemoryTypeIsNotABar) {
    ConfigSpace cs;
    ASSERT_TRUE(cs.set_u32(reg::bar(0), 0x6, {.wmask = 0xFFFF'F000}));  // type 11b
    EXPECT_FALSE(bar_info(cs, 0));
}

TEST(PciBar, SixtyFourBitTypeInLastSlotIsNotABar) {
    ConfigSpace cs;
    ASSERT_TRUE(cs.set_u32(reg::bar(5), 0x4, {.wmask = 0xFFFF'F000}));
    EXPECT_FALSE(bar_info(cs, 5));
}

// ---- Validation --------------------------------------------------------------------------

TEST(PciBar, LayoutValidationRejectsImpossibleBars) {
    auto bad = [](int index, BarSettings b) { return !validate_layout(one(index, b)); };
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem32, .size = 0x3000}));  // not a power of two
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem32, .size = 0}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem32, .size = 8}));  // < 16
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem32, .size = 4 * kGiB}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem24, .size = 2ull << 20}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::io, .size = 2}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::io, .size = 0x2'0000}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::io, .size = 0x10, .prefetchable = true}));
    EXPECT_TRUE(bad(5, {.kind = BarKind::mem64, .size = 0x1000}));  // no room for upper half
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem32, .size = 0x1000, .address = 0x800}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::mem32, .size = 0x1000, .address = 1ull << 32}));
    EXPECT_TRUE(bad(0, {.kind = BarKind::rom, .size = 0x1000}));
    EXPECT_FALSE(bad(4, {.kind = BarKind::mem64, .size = 1ull << 63}));
    EXPECT_FALSE(bad(0, {.kind = BarKind::io, .size = 0x1'0000}));

    BarLayout pair;
    pair.bars[0] = BarSettings{.kind = BarKind::mem64, .size = 0x1000};
    pair.bars[1] = BarSettings{.kind = BarKind::mem32, .size = 0x1000};
    EXPECT_FALSE(validate_layout(pair));

    BarLayout rom;
    rom.rom = RomSettings{.size = 1024};
    EXPECT_FALSE(validate_layout(rom));
    rom.rom = RomSettings{.size = 0x3000};
    EXPECT_FALSE(validate_layout(rom));
    rom.rom = RomSettings{.size = 0x1000, .address = 0x800};
    EXPECT_FALSE(validate_layout(rom));
}

TEST(PciBar, FailedInstallChangesNothing) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem32, .size = 0x1000}));
    BarLayout bad;
    bad.bars[0] = BarSettings{.kind = BarKind::io, .size = 0x10};
    bad.bars[5] = BarSettings{.kind = BarKind::mem64, .size = 0x1000};
    EXPECT_FALSE(install_bars(cs, bad));
    EXPECT_EQ(probe(cs, reg::bar(0)), 0xFFFF'F000u);
}

// ---- Decode ------------------------------------------------------------------------------

TEST(PciBar, DecodeIsGatedByCommandRegister) {
    BarLayout l;
    l.bars[0] = BarSettings{.kind = BarKind::mem32, .size = 0x1000, .address = 0xFEB0'0000};
    l.bars[1] = BarSettings{.kind = BarKind::io, .size = 0x20, .address = 0xC000};
    ConfigSpace cs = with_bars(l);
    EXPECT_FALSE(decode_bar(cs, 0));
    EXPECT_FALSE(decode_bar(cs, 1));
    enable(cs, command::kMemorySpace);
    EXPECT_TRUE(decode_bar(cs, 0));
    EXPECT_FALSE(decode_bar(cs, 1));
    enable(cs, command::kIoSpace);
    EXPECT_FALSE(decode_bar(cs, 0));
    auto io = decode_bar(cs, 1);
    ASSERT_TRUE(io);
    EXPECT_EQ(io->address, 0xC000u);
    EXPECT_EQ(io->size, 0x20u);
}

TEST(PciBar, ZeroAddressIsNotDecoded) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem32, .size = 0x1000}));
    enable(cs, command::kMemorySpace);
    EXPECT_FALSE(decode_bar(cs, 0));
}

TEST(PciBar, SizingWriteNeverMapsAllOnesAddress) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem32, .size = 0x1000}));
    enable(cs, command::kMemorySpace);
    cs.write(reg::bar(0), 4, 0xFFFF'FFFF);
    EXPECT_FALSE(decode_bar(cs, 0));
    // The all-ones address is excluded even though 0xFFFFF000+0x1000 fits in 4 GiB.
    ASSERT_TRUE(bar_info(cs, 0));
    EXPECT_EQ(bar_info(cs, 0)->address, 0xFFFF'F000u);
}

TEST(PciBar, TwoGiBBarAtTopIsSizingNotAPlacement) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem32, .size = 2 * kGiB}));
    enable(cs, command::kMemorySpace);
    cs.write(reg::bar(0), 4, 0x8000'0000);
    EXPECT_FALSE(decode_bar(cs, 0));
}

TEST(PciBar, Mem24AboveOneMiBIsNotDecoded) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::mem24, .size = 0x1000}));
    enable(cs, command::kMemorySpace);
    cs.write(reg::bar(0), 4, 0x000F'F000);
    ASSERT_TRUE(decode_bar(cs, 0));
    EXPECT_EQ(decode_bar(cs, 0)->address, 0xF'F000u);
    cs.write(reg::bar(0), 4, 0x0010'0000);
    EXPECT_FALSE(decode_bar(cs, 0));
}

TEST(PciBar, IoBeyondPortSpaceIsNotDecoded) {
    ConfigSpace cs = with_bars(one(0, {.kind = BarKind::io, .size = 0x20}));
    enable(cs, command::kIoSpace);
    cs.write(reg::bar(0), 4, 0xFFE0);
    ASSERT_TRUE(decode_bar(cs, 0));  // ends exactly at 64 KiB
    cs.write(reg::bar(0), 4, 0x1'0000);
    EXPECT_FALSE(decode_bar(cs, 0));
    cs.write(reg::bar(0), 4, 0xFFFF'FFFF);
    EXPECT_FALSE(decode_bar(cs, 0));
}

TEST(PciBar, Mem64DecodesFullSixtyFourBitAddress) {
    ConfigSpace cs = with_bars(one(2, {.kind = BarKind::mem64, .size = 0x4000}));
    enable(cs, command::kMemorySpace);
    cs.write(reg::bar(2), 4, 0x8000'4000);
    cs.write(reg::bar(3), 4, 0x0000'0012);
    auto b = decode_bar(cs, 2);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->address, 0x12'8000'4000u);
    EXPECT_EQ(b->size, 0x4000u);
    EXPECT_FALSE(decode_bar(cs, 3));
}

TEST(PciBar, Mem64SizingEitherHalfIsNotDecoded) {
    ConfigSpace cs =
        with_bars(one(0, {.kind = BarKind::mem64, .size = 0x4000, .address = 0x1'0000'0000}));
    enable(cs, command::kMemorySpace);
    ASSERT_TRUE(decode_bar(cs, 0));
    cs.write(reg::bar(0), 4, 0xFFFF'FFFF);  // low half probed, high half = 1
    EXPECT_FALSE(decode_bar(cs, 0));
    cs.write(reg::bar(0), 4, 0);
    ASSERT_TRUE(decode_bar(cs, 0));
    cs.write(reg::bar(1), 4, 0xFFFF'FFFF);  // high half probed, low half = 0
    EXPECT_FALSE(decode_bar(cs, 0));
    cs.write(reg::bar(1), 4, 1);
    EXPECT_EQ(decode_bar(cs, 0)->address, 0x1'0000'0000u);
}

TEST(PciBar, Mem64LargeBarHighHalfProbeIsNotDecoded) {
    ConfigSpace cs =
        with_bars(one(0, {.kind = BarKind::mem64, .size = 8 * kGiB, .address = 0x4'0000'0000}));
    enable(cs, command::kMemorySpace);
    ASSERT_TRUE(decode_bar(cs, 0));
    cs.write(reg::bar(0), 4, 0xFFFF'FFFF);  // no writable address bits in the low half
    ASSERT_TRUE(decode_bar(cs, 0));
    cs.write(reg::bar(1), 4, 0xFFFF'FFFF);
    EXPECT_FALSE(decode_bar(cs, 0));
}

TEST(PciBar, RangeThatWrapsTheAddressSpaceIsNotValid) {
    ConfigSpace cs;  // no masks: the all-ones test cannot fire, only the wrap test
    BarInfo b{.index = 0, .kind = BarKind::mem64, .address = 0xFFFF'FFFF'FFFF'F000, .size = 0x2000};
    EXPECT_FALSE(bar_address_valid(cs, b));
    b.size = 0x1000;  // ends exactly at 2^64: the end is not representable
    EXPECT_FALSE(bar_address_valid(cs, b));
    b.address = 0xFFFF'FFFF'FFFF'E000;
    EXPECT_TRUE(bar_address_valid(cs, b));
    BarInfo m32{.index = 0, .kind = BarKind::mem32, .address = 0xFFFF'F000, .size = 0x2000};
    EXPECT_FALSE(bar_address_valid(cs, m32));
}

TEST(PciBar, RomDecodeNeedsEnableBitAndMemorySpace) {
    BarLayout l;
    l.rom = RomSettings{.size = 0x8000, .address = 0xFEB8'0000};
    ConfigSpace cs = with_bars(l);
    enable(cs, command::kMemorySpace);
    EXPECT_FALSE(decode_bar(cs, kRomBarIndex));  // enable bit clear
    cs.write(reg::kRomBar, 4, 0xFEB8'0001);
    auto rom = decode_bar(cs, kRomBarIndex);
    ASSERT_TRUE(rom);
    EXPECT_EQ(rom->kind, BarKind::rom);
    EXPECT_EQ(rom->address, 0xFEB8'0000u);
    EXPECT_EQ(rom->size, 0x8000u);
    EXPECT_TRUE(rom->rom_enabled);
    enable(cs, command::kIoSpace);  // memory space off
    EXPECT_FALSE(decode_bar(cs, kRomBarIndex));
    enable(cs, command::kMemorySpace);
    cs.write(reg::kRomBar, 4, 0xFFFF'FFFF);  // probe with enable set
    EXPECT_FALSE(decode_bar(cs, kRomBarIndex));
}

}  // namespace
}  // namespace potemkin::pci
