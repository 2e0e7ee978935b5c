// InterruptController: MSI and IPI routing between vCPUs' local APICs, the PIC on vCPU 0, and
// the bus glue.
#include "vm/interrupt_controller.hpp"

#include <gtest/gtest.h>

#include "vm/bus.hpp"

namespace potemkin::vm {
namespace {

constexpr uint64_t kMsi = 0xfee00000;
constexpr uint32_t kSvr = 0xf0, kTpr = 0x80, kLdr = 0xd0, kIcrLow = 0x300, kIcrHigh = 0x310;

uint64_t msi_address(uint8_t dest, bool logical = false) {
    return kMsi | (uint64_t{dest} << 12) | (logical ? 0x4 : 0);
}

class InterruptControllerTest : public ::testing::Test {
  protected:
    InterruptControllerTest() {
        for (unsigned i = 0; i < ic.vcpu_count(); ++i) ic.lapic(i).mmio_write(kSvr, 0x1ff);
    }
    void init_pic() {
        for (auto [port, v] : {std::pair{0x20, 0x11},
                               {0x21, 0x20},
                               {0x21, 0x04},
                               {0x21, 0x01},
                               {0xa0, 0x11},
                               {0xa1, 0x28},
                               {0xa1, 0x02},
                               {0xa1, 0x01}})
            ic.pic().io_write(static_cast<uint16_t>(port), static_cast<uint8_t>(v));
    }
    std::vector<bool> pending() {
        std::vector<bool> v;
        for (unsigned i = 0; i < ic.vcpu_count(); ++i) v.push_back(ic.has_interrupt(i));
        return v;
    }

    int kicks = 0;
    InterruptController ic{4, [this] { ++kicks; }};
};

TEST_F(InterruptControllerTest, ApicIdsAreVcpuIndices) {
    for (unsigned i = 0; i < 4; ++i) EXPECT_EQ(ic.lapic(i).id(), i);
    EXPECT_THROW(ic.lapic(4), std::out_of_range);
}

TEST_F(InterruptControllerTest, MsiGoesToTheDestinationApic) {
    ic.send_msi(msi_address(2), 0x41);
    EXPECT_EQ(pending(), (std::vector<bool>{false, false, true, false}));
    EXPECT_GE(kicks, 1);
    EXPECT_EQ(ic.acknowledge(1), std::nullopt);
    EXPECT_EQ(ic.acknowledge(2), 0x41);
    EXPECT_EQ(ic.msi_dropped(), 0u);
}

TEST_F(InterruptControllerTest, MsiBroadcastReachesEveryApic) {
    ic.send_msi(msi_address(0xff), 0x55);
    EXPECT_EQ(pending(), (std::vector<bool>{true, true, true, true}));
    for (unsigned i = 0; i < 4; ++i) EXPECT_EQ(ic.acknowledge(i), 0x55);
}

TEST_F(InterruptControllerTest, MsiOutsideTheApicWindowIsDroppedAndCounted) {
    ic.send_msi(0xfed00000, 0x41);
    ic.send_msi(0x1fee00000ull, 0x41);  // high bits set
    EXPECT_EQ(pending(), (std::vector<bool>{false, false, false, false}));
    EXPECT_EQ(ic.msi_bad_address(), 2u);
    EXPECT_EQ(ic.msi_dropped(), 2u);
}

TEST_F(InterruptControllerTest, UnsupportedDeliveryModesAreDropped) {
    ic.send_msi(msi_address(0), 0x400 | 0x41);  // NMI
    ic.send_msi(msi_address(0), 0x500);         // INIT
    ic.send_msi(msi_address(0), 0x700);         // ExtINT
    EXPECT_FALSE(ic.has_interrupt(0));
    EXPECT_EQ(ic.msi_bad_delivery_mode(), 3u);
}

TEST_F(InterruptControllerTest, MsiToAMissingApicIsCounted) {
    ic.send_msi(msi_address(9), 0x41);
    EXPECT_EQ(ic.msi_no_destination(), 1u);
    EXPECT_EQ(pending(), (std::vector<bool>{false, false, false, false}));
}

TEST_F(InterruptControllerTest, LevelTriggerBitSetsTmr) {
    ic.send_msi(msi_address(1), 0x8000 | 0x61);
    EXPECT_EQ(ic.lapic(1).mmio_read(0x180 + 3 * 16), 1u << 1);  // TMR word 3, vector 0x61
}

TEST_F(InterruptControllerTest, LogicalFlatModeMatchesLdrBits) {
    ic.lapic(1).mmio_write(kLdr, 0x01000000);
    ic.lapic(2).mmio_write(kLdr, 0x02000000);
    ic.lapic(3).mmio_write(kLdr, 0x04000000);
    ic.send_msi(msi_address(0x06, true), 0x42);
    EXPECT_EQ(pending(), (std::vector<bool>{false, false, true, true}));
}

TEST_F(InterruptControllerTest, LogicalClusterModeMatchesNothing) {
    ic.lapic(1).mmio_write(kLdr, 0x01000000);
    ic.lapic(1).mmio_write(0xe0, 0x0fffffff);  // cluster model
    ic.send_msi(msi_address(0x01, true), 0x42);
    EXPECT_FALSE(ic.has_interrupt(1));
    EXPECT_EQ(ic.msi_no_destination(), 1u);
}

TEST_F(InterruptControllerTest, LowestPriorityPicksOneApicWithTheLowestTpr) {
    for (unsigned i = 0; i < 4; ++i) ic.lapic(i).mmio_write(kTpr, 0x30);
    ic.lapic(2).mmio_write(kTpr, 0x10);
    ic.send_msi(msi_address(0xff), 0x100 | 0x50);
    EXPECT_EQ(pending(), (std::vector<bool>{false, false, true, false}));
    ic.lapic(2).mmio_write(kTpr, 0x30);
    ic.send_msi(msi_address(0xff), 0x100 | 0x51);  // a tie: the lowest APIC ID
    EXPECT_TRUE(ic.has_interrupt(0));
    EXPECT_FALSE(ic.has_interrupt(1));
}

TEST_F(InterruptControllerTest, PicReachesOnlyVcpu0) {
    init_pic();
    kicks = 0;
    ic.set_irq(4, true);
    EXPECT_GE(kicks, 1);
    EXPECT_EQ(pending(), (std::vector<bool>{true, false, false, false}));
    EXPECT_EQ(ic.acknowledge(1), std::nullopt);
    EXPECT_EQ(ic.acknowledge(0), 0x24);
    EXPECT_FALSE(ic.has_interrupt(0));
}

TEST_F(InterruptControllerTest, PicWorksWithTheApicSoftwareDisabled) {
    ic.lapic(0).mmio_write(kSvr, 0xff);
    init_pic();
    ic.set_irq(8, true);
    EXPECT_EQ(ic.acknowledge(0), 0x28);
}

TEST_F(InterruptControllerTest, LocalApicComesBeforeThePic) {
    init_pic();
    ic.set_irq(3, true);
    ic.send_msi(msi_address(0), 0x33);
    EXPECT_EQ(ic.acknowledge(0), 0x33);
    EXPECT_EQ(ic.acknowledge(0), 0x23);  // the APIC's 0x33 in service does not block the PIC
    EXPECT_EQ(ic.acknowledge(0), std::nullopt);
}

TEST_F(InterruptControllerTest, OutOfRangeVcpuHasNothing) {
    EXPECT_FALSE(ic.has_interrupt(7));
    EXPECT_EQ(ic.acknowledge(7), std::nullopt);
}

TEST_F(InterruptControllerTest, IpiToAnotherVcpu) {
    ic.lapic(0).mmio_write(kIcrHigh, 0x03000000);
    ic.lapic(0).mmio_write(kIcrLow, 0x4000 | 0x62);  // fixed, physical, vector 0x62
    EXPECT_EQ(pending(), (std::vector<bool>{false, false, false, true}));
}

TEST_F(InterruptControllerTest, IpiAllExcludingSelf) {
    ic.lapic(1).mmio_write(kIcrLow, 0x000c0000 | 0x63);
    EXPECT_EQ(pending(), (std::vector<bool>{true, false, true, true}));
}

TEST_F(InterruptControllerTest, IpiAllIncludingSelf) {
    ic.lapic(1).mmio_write(kIcrLow, 0x00080000 | 0x64);
    EXPECT_EQ(pending(), (std::vector<bool>{true, true, true, true}));
}

TEST_F(InterruptControllerTest, InitIpiIsDropped) {
    ic.lapic(0).mmio_write(kIcrHigh, 0x01000000);
    ic.lapic(0).mmio_write(kIcrLow, 0x4500);
    EXPECT_EQ(ic.ipi_dropped(), 1u);
    EXPECT_FALSE(ic.has_interrupt(1));
}

TEST_F(InterruptControllerTest, AttachDispatchesTheApicPageToTheCurrentVcpu) {
    PortBus ports(Space::io, 1u << 16);
    MmioBus mmio(Space::mmio, 0);
    unsigned current = 0;
    ASSERT_TRUE(ic.attach(ports, mmio, [&] { return current; }));
    EXPECT_EQ(mmio.find(Gpa(0xfee00000))->owner, "lapic");
    EXPECT_EQ(mmio.find(Gpa(0xfee00fff))->owner, "lapic");
    EXPECT_EQ(ports.find(Port(0x20))->owner, "pic");
    EXPECT_EQ(ports.find(Port(0x4d1))->owner, "pic");

    for (current = 0; current < 4; ++current)
        EXPECT_EQ(mmio.read(Gpa(0xfee00020), 4), uint64_t{current} << 24);
    current = 2;
    mmio.write(Gpa(0xfee00080), 4, 0x70);
    EXPECT_EQ(ic.lapic(2).tpr(), 0x70);
    EXPECT_EQ(ic.lapic(0).tpr(), 0x00);
    EXPECT_EQ(mmio.read(Gpa(0xfee00030), 2), 0u);  // not 32 bits: not a register access
    mmio.write(Gpa(0xfee00080), 1, 0x10);
    EXPECT_EQ(ic.lapic(2).tpr(), 0x70);

    // A guest on vCPU 1 sends an IPI to vCPU 2 and vCPU 2 EOIs it, all through the bus.
    current = 1;
    mmio.write(Gpa(0xfee00310), 4, 0x02000000);
    mmio.write(Gpa(0xfee00300), 4, 0x81);
    ASSERT_TRUE(ic.has_interrupt(2));
    EXPECT_EQ(ic.acknowledge(2), 0x81);
    current = 2;
    EXPECT_EQ(mmio.read(Gpa(0xfee00100 + 4 * 16), 4), 1u << 1);  // ISR word 4: 0x81
    mmio.write(Gpa(0xfee000b0), 4, 0);
    EXPECT_EQ(mmio.read(Gpa(0xfee00100 + 4 * 16), 4), 0u);

    // The PIC through the ports.
    for (auto [port, v] : {std::pair{0x20, 0x11},
                           {0x21, 0x30},
                           {0x21, 0x04},
                           {0x21, 0x01},
                           {0xa0, 0x11},
                           {0xa1, 0x38},
                           {0xa1, 0x02},
                           {0xa1, 0x01}})
        ports.write(Port(static_cast<uint16_t>(port)), 1, static_cast<uint64_t>(v));
    ic.set_irq(1, true);
    EXPECT_EQ(ic.acknowledge(0), 0x31);
}

TEST_F(InterruptControllerTest, FailedAttachLeavesNothingRegistered) {
    PortBus ports(Space::io, 1u << 16);
    MmioBus mmio(Space::mmio, 0);
    ASSERT_TRUE(ports.add(Port(0xa0), 2, "other",
                          BusHandler{[](uint64_t, unsigned) -> uint64_t { return 0; },
                                     [](uint64_t, unsigned, uint64_t) {}}));
    ASSERT_FALSE(ic.attach(ports, mmio, [] { return 0u; }));
    EXPECT_EQ(mmio.find(Gpa(0xfee00000)), nullptr);
    EXPECT_EQ(ports.find(Port(0x20)), nullptr);
}

// ---- EOI notification and reset ------------------------------------------------------------

TEST_F(InterruptControllerTest, PicEoisReachEveryListenerAndApicEoisReachNone) {
    init_pic();
    ic.pic().io_write(0x4d1, 0x08);  // line 11 level
    ic.pic().io_write(0x21, 0x00);
    ic.pic().io_write(0xa1, 0x00);
    std::vector<std::pair<int, unsigned>> heard;
    uint64_t second = 0;
    const uint64_t first = ic.add_eoi_listener([&](unsigned line) {
        heard.emplace_back(1, line);
        ic.remove_eoi_listener(second);  // a listener that removes another: it is not called
    });
    second = ic.add_eoi_listener([&](unsigned line) { heard.emplace_back(2, line); });
    EXPECT_NE(first, 0u);
    EXPECT_NE(first, second);

    ic.set_irq(11, true);
    ASSERT_EQ(ic.acknowledge(0), 0x2b);
    ic.pic().io_write(0xa0, 0x20);
    EXPECT_EQ(heard, (std::vector<std::pair<int, unsigned>>{{1, 11}}));

    // MSIs are edge: an APIC EOI reports nothing.
    ic.send_msi(msi_address(0), 0x41);
    ASSERT_EQ(ic.acknowledge(0), 0x41);
    ic.lapic(0).mmio_write(0xb0, 0);
    ic.remove_eoi_listener(first);
    ic.pic().io_write(0x20, 0x20);
    ASSERT_EQ(ic.acknowledge(0), 0x2b);  // still high
    ic.pic().io_write(0xa0, 0x20);
    EXPECT_EQ(heard.size(), 1u);
}

TEST_F(InterruptControllerTest, ResetReturnsPicAndApicsToPowerOn) {
    init_pic();
    ic.pic().io_write(0x21, 0x00);
    ic.send_msi(msi_address(1), 0x41);
    ASSERT_TRUE(ic.has_interrupt(1));
    ic.reset();
    EXPECT_FALSE(ic.has_interrupt(1));
    EXPECT_FALSE(ic.lapic(1).software_enabled());
    EXPECT_EQ(ic.lapic(3).id(), 3u);
    EXPECT_EQ(ic.pic().imr(0), 0xff);
    ic.set_irq(3, true);
    EXPECT_FALSE(ic.has_interrupt(0)) << "uninitialised PIC";
}

}  // namespace
}  // namespace potemkin::vm
