// Capability list, PM, MSI, MSI-X (capability registers and the table/PBA model).
#include <gtest/gtest.h>

#include "pci/capabilities.hpp"
#include "pci/header.hpp"
#include "pci/registers.hpp"

namespace potemkin::pci {
namespace {

ConfigSpace header(bool express = false) {
    auto cs = make_type0_header({.vendor_id = 0x1234, .device_id = 0x5678, .express = express});
    EXPECT_TRUE(cs);
    return cs ? std::move(cs).value() : ConfigSpace{};
}

uint8_t add(ConfigSpace& cs, const CapabilityImage& img) {
    auto r = add_capability(cs, img);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : 0;
}

CapabilityImage msi(MsiSettings s) {
    auto r = msi_capability(s);
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(r).value() : CapabilityImage{};
}

CapabilityImage msix(MsixSettings s) {
    auto r = msix_capability(s);
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(r).value() : CapabilityImage{};
}

MsixTable table(unsigned vectors) {
    auto t = MsixTable::create(vectors);
    EXPECT_TRUE(t);
    return std::move(t).value();
}

// ---- List building and walking -----------------------------------------------------------

TEST(PciCapabilities, AddLinksListAndSetsStatusBit) {
    ConfigSpace cs = header();
    EXPECT_EQ(cs.read(reg::kStatus, 2) & status::kCapabilitiesList, 0u);
    const uint8_t pm = add(cs, pm_capability());
    EXPECT_EQ(pm, 0x40);
    EXPECT_EQ(cs.read(reg::kCapabilityPointer, 1), 0x40u);
    EXPECT_NE(cs.read(reg::kStatus, 2) & status::kCapabilitiesList, 0u);
    const uint8_t m = add(cs, msi({.vectors = 1, .address64 = false}));
    EXPECT_EQ(m, 0x48);  // PM is 8 bytes
    const uint8_t x = add(cs, msix({.vectors = 4}));
    EXPECT_EQ(x, 0x54);  // 32-bit MSI is 10 bytes, rounded up to a dword
    EXPECT_EQ(cs.read(pm, 1), cap_id::kPowerManagement);
    EXPECT_EQ(cs.read(pm + 1u, 1), 0x48u);
    EXPECT_EQ(cs.read(m + 1u, 1), 0x54u);
    EXPECT_EQ(cs.read(x + 1u, 1), 0u);

    auto list = walk_capabilities(cs);
    ASSERT_TRUE(list) << list.error().message;
    const std::vector<CapabilityRef> want{
        {0x40, cap_id::kPowerManagement}, {0x48, cap_id::kMsi}, {0x54, cap_id::kMsix}};
    EXPECT_EQ(*list, want);
    EXPECT_EQ(find_capability(cs, cap_id::kMsi), 0x48);
    EXPECT_EQ(find_capability(cs, cap_id::kMsix), 0x54);
    EXPECT_FALSE(find_capability(cs, cap_id::kPciExpress));
}

TEST(PciCapabilities, HeaderBytesAreReadOnlyForTheGuest) {
    ConfigSpace cs = header();
    const uint8_t pm = add(cs, pm_capability());
    add(cs, pm_capability());
    cs.write(pm, 2, 0xFFFF);
    EXPECT_EQ(cs.read(pm, 1), cap_id::kPowerManagement);
    EXPECT_EQ(cs.read(pm + 1u, 1), 0x48u);
}

TEST(PciCapabilities, ImageHeaderMasksAreIgnored) {
    ConfigSpace cs = header();
    auto img = CapabilityImage::zeroed(0x09, 4);
    img.wmask[0] = img.wmask[1] = 0xFF;  // a vendor capability claiming a writable header
    const uint8_t at = add(cs, img);
    cs.write(at, 2, 0);
    EXPECT_EQ(cs.read(at, 1), 0x09u);
}

TEST(PciCapabilities, PlacementSkipsClaimedBytes) {
    ConfigSpace cs = header();
    ASSERT_TRUE(cs.set_u8(0x42, 0xAA));  // a device-specific register at 0x42
    EXPECT_EQ(add(cs, pm_capability()), 0x44);
    EXPECT_EQ(cs.read(0x42, 1), 0xAAu);
}

TEST(PciCapabilities, AddFailsWhenTheAreaIsFull) {
    ConfigSpace cs = header();
    for (int i = 0; i < 3; ++i) add(cs, CapabilityImage::zeroed(0x09, 64));  // 0x40..0xFF
    auto r = add_capability(cs, pm_capability());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("no room"), std::string::npos);
}

TEST(PciCapabilities, ExpressSpaceStillPlacesCapabilitiesBelow0x100) {
    ConfigSpace cs = header(true);
    for (int i = 0; i < 3; ++i) add(cs, CapabilityImage::zeroed(0x09, 64));
    EXPECT_FALSE(add_capability(cs, pm_capability()));
}

TEST(PciCapabilities, AddRejectsImageWithoutHeader) {
    ConfigSpace cs = header();
    CapabilityImage img;
    img.id = 0x09;
    img.bytes = {0x09};
    EXPECT_FALSE(add_capability(cs, img));
    auto bad = CapabilityImage::zeroed(0x09, 4);
    bad.w1c.resize(3);
    EXPECT_FALSE(add_capability(cs, bad));
}

TEST(PciCapabilities, WalkEmptyWhenStatusBitClearWhateverThePointerSays) {
    ConfigSpace cs = header();
    ASSERT_TRUE(cs.store(reg::kCapabilityPointer, 1, 0x10));  // garbage, but bit 4 clear
    auto list = walk_capabilities(cs);
    ASSERT_TRUE(list);
    EXPECT_TRUE(list->empty());
}

TEST(PciCapabilities, WalkRejectsLoopingListFromMaliciousHost) {
    ConfigSpace cs = header();
    ASSERT_TRUE(cs.update(reg::kStatus, 2, 0, status::kCapabilitiesList));
    ASSERT_TRUE(cs.store(reg::kCapabilityPointer, 1, 0x40));
    ASSERT_TRUE(cs.store(0x40, 2, 0x5001));  // PM, next 0x50
    ASSERT_TRUE(cs.store(0x50, 2, 0x4005));  // MSI, next 0x40: loop
    auto list = walk_capabilities(cs);
    ASSERT_FALSE(list);
    EXPECT_NE(list.error().message.find("loop"), std::string::npos) << list.error().message;
    // find still sees the well-formed prefix and terminates.
    EXPECT_EQ(find_capability(cs, cap_id::kMsi), 0x50);
    EXPECT_FALSE(find_capability(cs, cap_id::kMsix));
    EXPECT_FALSE(add_capability(cs, pm_capability()));
}

TEST(PciCapabilities, WalkRejectsSelfLoop) {
    ConfigSpace cs = header();
    ASSERT_TRUE(cs.update(reg::kStatus, 2, 0, status::kCapabilitiesList));
    ASSERT_TRUE(cs.store(reg::kCapabilityPointer, 1, 0xFC));
    ASSERT_TRUE(cs.store(0xFC, 2, 0xFC11));
    EXPECT_FALSE(walk_capabilities(cs));
    EXPECT_EQ(find_capability(cs, cap_id::kMsix), 0xFC);
}

TEST(PciCapabilities, WalkRejectsPointerIntoHeader) {
    ConfigSpace cs = header();
    ASSERT_TRUE(cs.update(reg::kStatus, 2, 0, status::kCapabilitiesList));
    ASSERT_TRUE(cs.store(reg::kCapabilityPointer, 1, 0x40));
    ASSERT_TRUE(cs.store(0x40, 2, 0x0801));  // next = 0x08, inside the header
    auto list = walk_capabilities(cs);
    ASSERT_FALSE(list);
    EXPECT_NE(list.error().message.find("header"), std::string::npos);
    ASSERT_TRUE(cs.store(reg::kCapabilityPointer, 1, 0x3C));
    EXPECT_FALSE(walk_capabilities(cs));
}

TEST(PciCapabilities, WalkMasksReservedLowPointerBits) {
    ConfigSpace cs = header();
    ASSERT_TRUE(cs.update(reg::kStatus, 2, 0, status::kCapabilitiesList));
    ASSERT_TRUE(cs.store(reg::kCapabilityPointer, 1, 0x43));
    ASSERT_TRUE(cs.store(0x40, 2, 0x4B01));  // next 0x4B -> 0x48
    ASSERT_TRUE(cs.store(0x48, 2, 0x0305));  // next 0x03 -> 0x00: end
    auto list = walk_capabilities(cs);
    ASSERT_TRUE(list) << list.error().message;
    const std::vector<CapabilityRef> want{{0x40, 0x01}, {0x48, 0x05}};
    EXPECT_EQ(*list, want);
}

// ---- Power Management --------------------------------------------------------------------

TEST(PciPm, OnlyPowerStateIsWritable) {
    ConfigSpace cs = header();
    const uint8_t pm = add(cs, pm_capability({.d1_support = true}));
    EXPECT_EQ(cs.read(pm + 2u, 2), 0x0203u);  // version 3, D1 support
    cs.write(pm + 2u, 2, 0xFFFF);
    EXPECT_EQ(cs.read(pm + 2u, 2), 0x0203u);
    EXPECT_EQ(cs.read(pm + 4u, 2), 0x0008u);  // D0, No_Soft_Reset
    cs.write(pm + 4u, 4, 0xFFFF'FFFF);
    EXPECT_EQ(cs.read(pm + 4u, 4), 0x0000'000Bu);
    EXPECT_EQ(read_power_state(cs, pm), 3);
    cs.write(pm + 4u, 2, 0);
    EXPECT_EQ(read_power_state(cs, pm), 0);
}

// ---- MSI ---------------------------------------------------------------------------------

TEST(PciMsi, ThirtyTwoBitLayoutAndWritableBits) {
    ConfigSpace cs = header();
    const uint8_t m = add(cs, msi({.vectors = 4, .address64 = false}));
    EXPECT_EQ(cs.read(m + 2u, 2), 0x0004u);  // MMC = 2 (4 vectors), not 64-bit
    cs.write(m + 2u, 2, 0xFFFF);
    EXPECT_EQ(cs.read(m + 2u, 2), 0x0075u);  // enable + MME RW, MMC RO
    cs.write(m + 4u, 4, 0xFEE0'100F);
    EXPECT_EQ(cs.read(m + 4u, 4), 0xFEE0'100Cu);  // address bits 1:0 RO 0
    cs.write(m + 8u, 2, 0x4041);
    EXPECT_EQ(cs.read(m + 8u, 2), 0x4041u);
    cs.write(m + 0xAu, 2, 0xFFFF);  // beyond the 10-byte capability: unclaimed RO
    EXPECT_EQ(cs.read(m + 0xAu, 2), 0u);

    const MsiState st = read_msi(cs, m);
    EXPECT_TRUE(st.enabled);
    EXPECT_FALSE(st.address64);
    EXPECT_FALSE(st.per_vector_masking);
    EXPECT_EQ(st.vectors_capable, 4u);
    EXPECT_EQ(st.vectors_enabled, 4u);  // MME 111b clamped to capable
    EXPECT_EQ(st.address, 0xFEE0'100Cu);
    EXPECT_EQ(st.data, 0x4041u);
}

TEST(PciMsi, SixtyFourBitAddressAndDataOffset) {
    ConfigSpace cs = header();
    const uint8_t m = add(cs, msi({.vectors = 1, .address64 = true}));
    EXPECT_EQ(cs.read(m + 2u, 2), msi::k64Bit);
    cs.write(m + 4u, 4, 0xFEE0'0000);
    cs.write(m + 8u, 4, 0x0000'0001);
    cs.write(m + 0xCu, 2, 0x0031);
    cs.write(m + 2u, 2, msi::kEnable);
    const MsiState st = read_msi(cs, m);
    EXPECT_TRUE(st.address64);
    EXPECT_EQ(st.address, 0x1'FEE0'0000u);
    EXPECT_EQ(st.data, 0x31u);
    EXPECT_EQ(st.vectors_enabled, 1u);
    EXPECT_EQ(msi_message(st, 0), (MsiMessage{0x1'FEE0'0000u, 0x31}));
    EXPECT_FALSE(msi_message(st, 1));
}

TEST(PciMsi, MultipleMessageDataCarriesVectorInLowBits) {
    ConfigSpace cs = header();
    const uint8_t m = add(cs, msi({.vectors = 8}));
    cs.write(m + 4u, 4, 0xFEE0'0000);
    cs.write(m + 0xCu, 2, 0x0040);
    cs.write(m + 2u, 2, msi::kEnable | (2u << msi::kMmeShift));  // 4 of 8 enabled
    const MsiState st = read_msi(cs, m);
    EXPECT_EQ(st.vectors_capable, 8u);
    EXPECT_EQ(st.vectors_enabled, 4u);
    EXPECT_EQ(msi_message(st, 3)->data, 0x43u);
    EXPECT_FALSE(msi_message(st, 4));
}

TEST(PciMsi, PerVectorMaskOnlyImplementedBitsWritableAndPendingReadOnly) {
    for (bool a64 : {false, true}) {
        ConfigSpace cs = header();
        const uint8_t m =
            add(cs, msi({.vectors = 4, .address64 = a64, .per_vector_masking = true}));
        const uint32_t mask = m + uint32_t{msi::mask_offset(a64)};
        const uint32_t pend = m + uint32_t{msi::pending_offset(a64)};
        EXPECT_NE(cs.read(m + 2u, 2) & msi::kPerVectorMasking, 0u);
        cs.write(mask, 4, 0xFFFF'FFFF);
        EXPECT_EQ(cs.read(mask, 4), 0xFu) << a64;
        cs.write(pend, 4, 0xFFFF'FFFF);
        EXPECT_EQ(cs.read(pend, 4), 0u) << a64;
        EXPECT_EQ(read_msi(cs, m).mask_bits, 0xFu);
    }
}

TEST(PciMsi, ThirtyTwoVectorsMaskAllBits) {
    ConfigSpace cs = header();
    const uint8_t m = add(cs, msi({.vectors = 32, .per_vector_masking = true}));
    cs.write(m + uint32_t{msi::mask_offset(true)}, 4, 0xFFFF'FFFF);
    EXPECT_EQ(read_msi(cs, m).mask_bits, 0xFFFF'FFFFu);
    EXPECT_EQ(read_msi(cs, m).vectors_capable, 32u);
}

TEST(PciMsi, MaskedVectorBecomesPendingAndIsDeliveredOnUnmask) {
    ConfigSpace cs = header();
    const uint8_t m = add(cs, msi({.vectors = 2, .address64 = false, .per_vector_masking = true}));
    const uint32_t mask = m + uint32_t{msi::mask_offset(false)};
    cs.write(m + 4u, 4, 0xFEE0'0000);
    cs.write(m + 8u, 2, 0x0050);
    cs.write(mask, 4, 0x2);
    cs.write(m + 2u, 2, msi::kEnable | (1u << msi::kMmeShift));

    EXPECT_EQ(msi_signal(cs, m, 0), (MsiMessage{0xFEE0'0000, 0x50}));
    EXPECT_FALSE(msi_signal(cs, m, 1));
    EXPECT_EQ(read_msi(cs, m).pending_bits, 0x2u);
    EXPECT_TRUE(msi_take_unmasked_pending(cs, m).empty());  // still masked

    cs.write(mask, 4, 0);
    const auto due = msi_take_unmasked_pending(cs, m);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0], (MsiMessage{0xFEE0'0000, 0x51}));
    EXPECT_EQ(read_msi(cs, m).pending_bits, 0u);
}

TEST(PciMsi, DisabledMsiSignalsNothingAndRecordsNothing) {
    ConfigSpace cs = header();
    const uint8_t m = add(cs, msi({.vectors = 1, .per_vector_masking = true}));
    cs.write(m + uint32_t{msi::mask_offset(true)}, 4, 1);
    EXPECT_FALSE(msi_signal(cs, m, 0));
    EXPECT_EQ(read_msi(cs, m).pending_bits, 0u);
}

TEST(PciMsi, RejectsUnsupportedVectorCounts) {
    EXPECT_FALSE(msi_capability({.vectors = 3}));
    EXPECT_FALSE(msi_capability({.vectors = 0}));
    EXPECT_FALSE(msi_capability({.vectors = 64}));
    EXPECT_EQ(msi({.vectors = 1, .address64 = false}).bytes.size(), 0x0Au);
    EXPECT_EQ(msi({.vectors = 1, .address64 = true}).bytes.size(), 0x0Eu);
    EXPECT_EQ(msi({.vectors = 1, .address64 = false, .per_vector_masking = true}).bytes.size(),
              0x14u);
    EXPECT_EQ(msi({.vectors = 1, .address64 = true, .per_vector_masking = true}).bytes.size(),
              0x18u);
}

// ---- MSI-X capability --------------------------------------------------------------------

TEST(PciMsix, CapabilityRegisters) {
    ConfigSpace cs = header();
    const uint8_t x = add(cs, msix({.vectors = 16,
                                    .table_bir = 2,
                                    .table_offset = 0x2000,
                                    .pba_bir = 4,
                                    .pba_offset = 0x800}));
    EXPECT_EQ(cs.read(x + 2u, 2), 15u);
    cs.write(x + 2u, 2, 0xFFFF);
    EXPECT_EQ(cs.read(x + 2u, 2), 0xC00Fu);  // table size RO, function mask + enable RW
    cs.write(x + 4u, 4, 0);
    cs.write(x + 8u, 4, 0);
    EXPECT_EQ(cs.read(x + 4u, 4), 0x2002u);
    EXPECT_EQ(cs.read(x + 8u, 4), 0x0804u);
    const MsixState st = read_msix(cs, x);
    EXPECT_TRUE(st.enabled);
    EXPECT_TRUE(st.function_masked);
    EXPECT_EQ(st.vectors, 16u);
    EXPECT_EQ(st.table_bir, 2);
    EXPECT_EQ(st.table_offset, 0x2000u);
    EXPECT_EQ(st.pba_bir, 4);
    EXPECT_EQ(st.pba_offset, 0x800u);
}

TEST(PciMsix, CapabilityRejectsBadSettings) {
    EXPECT_FALSE(msix_capability({.vectors = 0}));
    EXPECT_FALSE(msix_capability({.vectors = 2049}));
    EXPECT_FALSE(msix_capability({.vectors = 1, .table_bir = 6}));
    EXPECT_FALSE(msix_capability({.vectors = 1, .pba_bir = 7}));
    EXPECT_FALSE(msix_capability({.vectors = 1, .table_offset = 0x4}));
    EXPECT_FALSE(msix_capability({.vectors = 1, .pba_offset = 0x801}));
    EXPECT_TRUE(msix_capability({.vectors = 2048}));
}

// ---- MSI-X table and PBA -----------------------------------------------------------------

TEST(PciMsix, TableCreateRejectsBadSizes) {
    EXPECT_FALSE(MsixTable::create(0));
    EXPECT_FALSE(MsixTable::create(2049));
    auto t = table(100);
    EXPECT_EQ(t.table_bytes(), 1600u);
    EXPECT_EQ(t.pba_bytes(), 16u);
}

TEST(PciMsix, EntriesStartMasked) {
    auto t = table(4);
    for (unsigned v = 0; v < 4; ++v) {
        EXPECT_EQ(t.read_table(v * 16 + 12, 4), 1u);
        EXPECT_EQ(t.read_table(v * 16, 8), 0u);
        EXPECT_TRUE(t.entry(v)->masked);
    }
    EXPECT_EQ(t.read_pba(0, 8), 0u);
    EXPECT_FALSE(t.entry(4));
}

TEST(PciMsix, TableReservedBitsAreReadOnly) {
    auto t = table(2);
    (void)t.write_table(16, 8, 0x0000'0001'FEE0'0003);  // address bits 1:0 RO 0
    EXPECT_EQ(t.read_table(16, 8), 0x0000'0001'FEE0'0000u);
    (void)t.write_table(24, 4, 0x0000'4041);
    (void)t.write_table(28, 4, 0xFFFF'FFFE);  // reserved control bits; unmasks
    EXPECT_EQ(t.read_table(28, 4), 0u);
    EXPECT_EQ(t.read_table(24, 8), 0x0000'0000'0000'4041u);
    const auto e = t.entry(1);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->address, 0x1'FEE0'0000u);
    EXPECT_EQ(e->data, 0x4041u);
    EXPECT_FALSE(e->masked);
}

TEST(PciMsix, TableOutOfRangeReadsAllOnesWritesIgnored) {
    auto t = table(2);
    EXPECT_EQ(t.read_table(32, 4), 0xFFFF'FFFFu);
    EXPECT_EQ(t.read_table(28, 8), ~0ull);  // straddles the end
    EXPECT_EQ(t.read_table(0, 0), ~0ull);
    EXPECT_TRUE(t.write_table(28, 8, 0).empty());
    EXPECT_EQ(t.read_table(28, 4), 1u);
    EXPECT_EQ(t.read_pba(8, 4), 0xFFFF'FFFFu);
    EXPECT_EQ(t.read_pba(0, 9), ~0ull);
}

TEST(PciMsix, SignalWhileDisabledIsDroppedNotPending) {
    auto t = table(2);
    (void)t.write_table(12, 4, 0);  // unmask
    EXPECT_FALSE(t.signal(0));
    EXPECT_FALSE(t.pending(0));
    EXPECT_FALSE(t.signal(7));  // out of range
}

TEST(PciMsix, SignalUnmaskedDeliversEntryMessage) {
    auto t = table(2);
    (void)t.write_table(0, 4, 0xFEE0'0000);
    (void)t.write_table(8, 4, 0x31);
    (void)t.write_table(12, 4, 0);
    EXPECT_TRUE(t.set_control(true, false).empty());
    EXPECT_EQ(t.signal(0), (MsiMessage{0xFEE0'0000, 0x31}));
    EXPECT_FALSE(t.pending(0));
}

TEST(PciMsix, MaskedVectorSetsPendingAndUnmaskDeliversCurrentMessage) {
    auto t = table(2);
    EXPECT_TRUE(t.set_control(true, false).empty());
    EXPECT_FALSE(t.signal(1));
    EXPECT_TRUE(t.pending(1));
    EXPECT_EQ(t.read_pba(0, 8), 0x2u);
    // The message is the one programmed when it is finally sent.
    EXPECT_TRUE(t.write_table(16, 8, 0xFEE0'1000).empty());
    EXPECT_TRUE(t.write_table(24, 4, 0x77).empty());
    const auto due = t.write_table(28, 4, 0);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0], (MsiMessage{0xFEE0'1000, 0x77}));
    EXPECT_FALSE(t.pending(1));
    EXPECT_EQ(t.read_pba(0, 8), 0u);
}

TEST(PciMsix, FunctionMaskHoldsEveryVectorUntilCleared) {
    auto t = table(3);
    for (unsigned v = 0; v < 3; ++v) {
        (void)t.write_table(v * 16, 4, 0xFEE0'0000);
        (void)t.write_table(v * 16 + 8, 4, 0x40 + v);
    }
    (void)t.write_table(12, 4, 0);  // vectors 0 and 2 unmasked, 1 masked
    (void)t.write_table(44, 4, 0);
    EXPECT_TRUE(t.set_control(true, true).empty());
    EXPECT_FALSE(t.signal(0));
    EXPECT_FALSE(t.signal(1));
    EXPECT_FALSE(t.signal(2));
    EXPECT_EQ(t.read_pba(0, 4), 0x7u);
    // Unmasking an entry under the function mask delivers nothing yet.
    EXPECT_TRUE(t.write_table(12, 4, 0).empty());
    const auto due = t.set_control(true, false);
    ASSERT_EQ(due.size(), 2u);
    EXPECT_EQ(due[0].data, 0x40u);
    EXPECT_EQ(due[1].data, 0x42u);
    EXPECT_EQ(t.read_pba(0, 4), 0x2u);  // vector 1 still masked, still pending
}

TEST(PciMsix, DisablingKeepsPendingUntilReenabled) {
    auto t = table(1);
    (void)t.set_control(true, false);
    EXPECT_FALSE(t.signal(0));  // entry masked
    (void)t.set_control(false, false);
    EXPECT_TRUE(t.write_table(12, 4, 0).empty());  // unmasked while disabled: nothing sent
    EXPECT_TRUE(t.pending(0));
    EXPECT_EQ(t.set_control(true, false).size(), 1u);
    EXPECT_FALSE(t.pending(0));
}

TEST(PciMsix, PbaCoversVectorsBeyond64) {
    auto t = table(100);
    (void)t.set_control(true, false);
    EXPECT_FALSE(t.signal(70));
    EXPECT_FALSE(t.signal(3));
    EXPECT_EQ(t.read_pba(0, 8), 0x8u);
    EXPECT_EQ(t.read_pba(8, 8), 1ull << 6);
    EXPECT_EQ(t.read_pba(8, 1), 0x40u);
    t.clear_pending(70);
    EXPECT_EQ(t.read_pba(8, 8), 0u);
    EXPECT_TRUE(t.pending(3));
}

}  // namespace
}  // namespace potemkin::pci
