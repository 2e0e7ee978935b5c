// PCI Express capability and extended capabilities: the builder's chain layout, the masks per
// register, and the defensive walk.
#include <gtest/gtest.h>

#include "pci/express.hpp"
#include "pci/header.hpp"
#include "pci/registers.hpp"

namespace potemkin::pci {
namespace {

ConfigSpace header(bool express = true) {
    auto cs = make_type0_header({.vendor_id = 0x1234, .device_id = 0x5678, .express = express});
    EXPECT_TRUE(cs);
    return cs ? std::move(cs).value() : ConfigSpace{};
}

uint16_t add_ext(ConfigSpace& cs, const ExtCapabilityImage& img) {
    auto r = add_extended_capability(cs, img);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : 0;
}

ExtCapabilityImage vsec(size_t data_bytes) {
    auto r = vendor_specific_capability(
        {.vsec_id = 0x42, .vsec_revision = 3, .data = std::vector<uint8_t>(data_bytes, 0)});
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(r).value() : ExtCapabilityImage{};
}

TEST(PciExpress, NoExtendedCapabilitiesReadsZeroAt0x100) {
    ConfigSpace cs = header();
    EXPECT_EQ(cs.read(0x100, 4), 0u);
    auto chain = walk_extended_capabilities(cs);
    ASSERT_TRUE(chain);
    EXPECT_TRUE(chain->empty());
}

TEST(PciExpress, ChainStartsAt0x100AndEndsWithNextZero) {
    ConfigSpace cs = header();
    EXPECT_EQ(add_ext(cs, aer_capability()), 0x100);
    EXPECT_EQ(add_ext(cs, dsn_capability(0x0102'0304'0506'0708ull)), 0x148);
    EXPECT_EQ(add_ext(cs, vsec(4)), 0x154);
    // Headers: ID 15:0, version 19:16, next 31:20.
    EXPECT_EQ(cs.read(0x100, 4), 0x1480'0000u | 0x2'0001u);
    EXPECT_EQ(cs.read(0x148, 4), 0x1540'0000u | 0x1'0003u);
    EXPECT_EQ(cs.read(0x154, 4), 0x0001'000Bu);  // the last: next 0
    EXPECT_EQ(cs.read(0x14C, 4), 0x0506'0708u);
    EXPECT_EQ(cs.read(0x150, 4), 0x0102'0304u);
    // VSEC header: ID, revision, length 12 including both headers.
    EXPECT_EQ(cs.read(0x158, 4), 0x00C3'0042u);
    auto chain = walk_extended_capabilities(cs);
    ASSERT_TRUE(chain) << chain.error().message;
    EXPECT_EQ(*chain, (std::vector<ExtCapabilityRef>{
                          {0x100, ext_cap_id::kAer, 2},
                          {0x148, ext_cap_id::kDeviceSerialNumber, 1},
                          {0x154, ext_cap_id::kVendorSpecific, 1},
                      }));
    EXPECT_EQ(find_extended_capability(cs, ext_cap_id::kVendorSpecific), 0x154);
    EXPECT_FALSE(find_extended_capability(cs, ext_cap_id::kSriov));
}

TEST(PciExpress, HeadersAreReadOnly) {
    ConfigSpace cs = header();
    add_ext(cs, dsn_capability(1));
    add_ext(cs, dsn_capability(2));
    const uint32_t h = cs.read(0x100, 4);
    cs.write(0x100, 4, 0);
    EXPECT_EQ(cs.read(0x100, 4), h);
    cs.write(0x104, 4, 0);  // the serial number too
    EXPECT_EQ(cs.read(0x104, 4), 1u);
}

TEST(PciExpress, ConventionalSpaceHasNoExtendedCapabilities) {
    ConfigSpace cs = header(false);
    auto r = add_extended_capability(cs, dsn_capability(1));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("256 bytes"), std::string::npos) << r.error().message;
    auto chain = walk_extended_capabilities(cs);
    ASSERT_TRUE(chain);
    EXPECT_TRUE(chain->empty());
}

TEST(PciExpress, ChainFillsTheSpaceThenRefuses) {
    ConfigSpace cs = header();
    // 0xF00 bytes from 0x100: 0x3C0 bytes per VSEC leaves room for exactly four.
    for (int i = 0; i < 4; ++i) add_ext(cs, vsec(0x3C0 - 8));
    auto r = add_extended_capability(cs, vsec(4));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("no room"), std::string::npos) << r.error().message;
    auto chain = walk_extended_capabilities(cs);
    ASSERT_TRUE(chain);
    EXPECT_EQ(chain->size(), 4u);
}

TEST(PciExpress, WalkRejectsLoopsAndPointersBelow0x100) {
    std::vector<uint8_t> bytes(4096, 0);
    auto put = [&](uint32_t at, uint32_t v) {
        for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(0x100, 0x2000'0003u);  // next 0x200
    put(0x200, 0x1000'000Bu);  // next 0x100: a loop
    auto loop = walk_extended_capabilities(bytes);
    ASSERT_FALSE(loop);
    EXPECT_NE(loop.error().message.find("loops"), std::string::npos) << loop.error().message;
    put(0x200, 0x0400'000Bu);  // next 0x40: into the conventional space
    auto low = walk_extended_capabilities(bytes);
    ASSERT_FALSE(low);
    EXPECT_NE(low.error().message.find("below 0x100"), std::string::npos) << low.error().message;
    put(0x200, 0x0030'000Bu | (0x203u << 20));        // reserved low bits masked: next 0x200
    EXPECT_FALSE(walk_extended_capabilities(bytes));  // 0x200 → 0x200 loops
    put(0x100, 0xFFFF'FFFFu);  // what a function without extended space returns
    auto none = walk_extended_capabilities(bytes);
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
}

TEST(PciExpress, CapabilityMasksFollowTheSpec) {
    auto img = pcie_capability({.max_payload = 512, .link_speed = 4, .link_width = 8});
    ASSERT_TRUE(img) << img.error().message;
    ConfigSpace cs = header();
    auto at = add_capability(cs, *img);
    ASSERT_TRUE(at) << at.error().message;
    const uint32_t c = *at;
    EXPECT_EQ(cs.read(c, 1), cap_id::kPciExpress);
    EXPECT_EQ(cs.read(c + pcie::kCapabilities, 2), 0x0002u);  // v2, Endpoint
    const uint32_t devcap = cs.read(c + pcie::kDevCap, 4);
    EXPECT_EQ(devcap & 0x7, 2u);        // 512 bytes
    EXPECT_TRUE(devcap & (1u << 15));   // role-based error reporting
    EXPECT_FALSE(devcap & (1u << 28));  // no FLR
    // Device Control: every defined RW bit, nothing else; reset 0x2810.
    EXPECT_EQ(cs.read(c + pcie::kDevCtl, 2), 0x2810u);
    EXPECT_EQ(cs.masks(c + pcie::kDevCtl, 2).wmask, 0x79FFu);
    // Device Status: bits 3:0 RW1C only.
    const Masks sta = cs.masks(c + pcie::kDevSta, 2);
    EXPECT_EQ(sta.w1c, 0x000Fu);
    EXPECT_EQ(sta.wmask, 0u);
    ASSERT_TRUE(cs.update(c + pcie::kDevSta, 2, 0, 0x0005));  // the device signals two errors
    cs.write(c + pcie::kDevSta, 2, 0x0004);
    EXPECT_EQ(cs.read(c + pcie::kDevSta, 2), 0x0001u);
    // Link: 16 GT/s x8, no ASPM; Link Status read-only in an endpoint; all speeds up to 16 GT/s.
    EXPECT_EQ(cs.read(c + pcie::kLinkCap, 4) & 0xFFF, 0x084u);
    EXPECT_EQ(cs.read(c + pcie::kLinkSta, 2), 0x0084u);
    const Masks ls = cs.masks(c + pcie::kLinkSta, 2);
    EXPECT_EQ(ls.wmask | ls.w1c | ls.w1s, 0u);
    EXPECT_EQ(cs.masks(c + pcie::kLinkCtl, 2).wmask, 0x00C8u);  // RCB, common clock, ext synch
    EXPECT_EQ(cs.read(c + pcie::kLinkCap2, 4), 0x1Eu);
    EXPECT_EQ(cs.masks(c + pcie::kDevCap, 4).wmask, 0u);
    const PcieState st = read_pcie(cs, static_cast<uint8_t>(c));
    EXPECT_EQ(st.type, PortType::endpoint);
    EXPECT_EQ(st.max_payload_supported, 512u);
    EXPECT_EQ(st.max_payload, 128u);
    EXPECT_EQ(st.max_read_request, 512u);
    EXPECT_EQ(st.link_speed, 4u);
    EXPECT_EQ(st.link_width, 8u);
}

TEST(PciExpress, DownstreamPortLinkStatusBandwidthBitsAreW1c) {
    auto img = pcie_capability({.type = PortType::downstream_port});
    ASSERT_TRUE(img);
    EXPECT_EQ(img->w1c[pcie::kLinkSta + 1], 0xC0);
}

TEST(PciExpress, BadSettingsAreRefused) {
    EXPECT_FALSE(pcie_capability({.max_payload = 300}));
    EXPECT_FALSE(pcie_capability({.link_speed = 0}));
    EXPECT_FALSE(pcie_capability({.link_width = 3}));
    EXPECT_FALSE(pcie_capability({.type = PortType::pci_to_pcie_bridge}));
    EXPECT_FALSE(vendor_specific_capability({.data = std::vector<uint8_t>(3, 0)}));  // not dwords
    EXPECT_FALSE(vendor_specific_capability(
        {.data = std::vector<uint8_t>(4, 0), .wmask = std::vector<uint8_t>(2, 0)}));
    EXPECT_FALSE(vendor_specific_capability({.data = std::vector<uint8_t>(4, 0),
                                             .wmask = std::vector<uint8_t>(4, 0x0F),
                                             .w1c = std::vector<uint8_t>(4, 0x01)}));
}

TEST(PciExpress, VendorSpecificMasksApplyPerByte) {
    auto img = vendor_specific_capability({.vsec_id = 1,
                                           .data = {0xAA, 0xBB, 0xCC, 0xDD, 0xFF, 0xFF, 0, 0},
                                           .wmask = {0, 0xFF, 0x0F, 0, 0, 0, 0, 0},
                                           .w1c = {0, 0, 0, 0, 0xFF, 0x0F, 0, 0}});
    ASSERT_TRUE(img) << img.error().message;
    ConfigSpace cs = header();
    const uint16_t at = add_ext(cs, *img);
    cs.write(at + 8, 4, 0x1122'3344);
    EXPECT_EQ(cs.read(at + 8, 4), 0xDDC2'33AAu);  // byte 0 RO, 1 RW, 2 low nibble RW, 3 RO
    cs.write(at + 12, 2, 0xFF0F);
    EXPECT_EQ(cs.read(at + 12, 2), 0xF0F0u);  // RW1C: written 1s clear, bits outside stay
}

TEST(PciExpress, AerRegisters) {
    ConfigSpace cs = header();
    const uint16_t at = add_ext(cs, aer_capability());
    EXPECT_EQ(cs.masks(at + 0x04, 4).w1c, 0x001F'F010u);
    EXPECT_EQ(cs.masks(at + 0x08, 4).wmask, 0x001F'F010u);
    EXPECT_EQ(cs.read(at + 0x0C, 4), 0x0006'2010u);
    EXPECT_EQ(cs.masks(at + 0x10, 4).w1c, 0x0000'31C1u);
    EXPECT_EQ(cs.read(at + 0x14, 4), 0x0000'2000u);
    EXPECT_EQ(cs.masks(at + 0x18, 4).wmask, 0u);
}

TEST(PciExpress, Names) {
    EXPECT_EQ(ext_cap_name(ext_cap_id::kDeviceSerialNumber), "Device Serial Number");
    EXPECT_EQ(ext_cap_name(0x7777), "");
    EXPECT_STREQ(port_type_name(PortType::root_port), "Root Port");
    EXPECT_STREQ(link_speed_name(3), "8GT/s");
}

}  // namespace
}  // namespace potemkin::pci
