// pci::make_expansion_rom: the ROM header and PCI Data Structure of PCI Firmware Specification
// 3.x section 5.1, byte by byte, and the settings it refuses.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "pci/expansion_rom.hpp"

namespace potemkin::pci {
namespace {

uint32_t le(const std::vector<uint8_t>& b, size_t at, unsigned n) {
    uint32_t v = 0;
    for (unsigned i = 0; i < n; ++i) v |= uint32_t{b[at + i]} << (8 * i);
    return v;
}

TEST(ExpansionRom, HeaderAndPciDataStructure) {
    ExpansionRomSettings s;
    s.vendor_id = 0x1b36;
    s.device_id = 0xff01;
    s.class_code = 0x0c0330;
    s.size = 3 * 512;
    s.code_revision = 0x0102;
    s.pcir_offset = 0x1C;
    const auto rom = make_expansion_rom(s);
    ASSERT_EQ(rom.size(), 1536u);
    EXPECT_EQ(le(rom, 0, 2), 0xAA55u);
    EXPECT_EQ(rom[2], 3);
    EXPECT_EQ(le(rom, 0x18, 2), 0x1Cu);
    EXPECT_EQ(le(rom, 0x1C, 4), 0x52494350u);  // "PCIR"
    EXPECT_EQ(le(rom, 0x1C + 4, 2), 0x1b36u);
    EXPECT_EQ(le(rom, 0x1C + 6, 2), 0xff01u);
    EXPECT_EQ(le(rom, 0x1C + 8, 2), 0u);  // no device list
    EXPECT_EQ(le(rom, 0x1C + 0x0A, 2), 0x1Cu);
    EXPECT_EQ(rom[0x1C + 0x0C], 3);
    EXPECT_EQ(le(rom, 0x1C + 0x0D, 3), 0x0c0330u);
    EXPECT_EQ(le(rom, 0x1C + 0x10, 2), 3u);
    EXPECT_EQ(le(rom, 0x1C + 0x12, 2), 0x0102u);
    EXPECT_EQ(rom[0x1C + 0x14], rom_code::kNone);
    EXPECT_EQ(rom[0x1C + 0x15], kPcirLastImage);
    EXPECT_EQ(std::accumulate(rom.begin(), rom.end(), 0u) % 256, 0u);
}

TEST(ExpansionRom, SealKeepsTheChecksumAfterCallerData) {
    auto rom = make_expansion_rom({.vendor_id = 1, .device_id = 2});
    ASSERT_EQ(rom.size(), 2048u);
    rom[0x100] = 0x42;
    seal_expansion_rom(rom);
    EXPECT_EQ(std::accumulate(rom.begin(), rom.end(), 0u) % 256, 0u);
}

TEST(ExpansionRom, RefusesWhatDoesNotFit) {
    EXPECT_TRUE(make_expansion_rom({.size = 0}).empty());
    EXPECT_TRUE(make_expansion_rom({.size = 1000}).empty());         // not 512-byte units
    EXPECT_TRUE(make_expansion_rom({.pcir_offset = 0x10}).empty());  // over the header
    EXPECT_TRUE(make_expansion_rom({.pcir_offset = 0x22}).empty());  // misaligned
    EXPECT_TRUE(make_expansion_rom({.size = 512, .pcir_offset = 0x1E8}).empty());  // past the end
    EXPECT_FALSE(make_expansion_rom({.size = 512, .pcir_offset = 0x1E0}).empty());
}

}  // namespace
}  // namespace potemkin::pci
