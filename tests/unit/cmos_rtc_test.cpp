// CmosRtc (vm/cmos_rtc.hpp): time and date in BCD and binary, 12-hour mode, setting the
// clock, CMOS memory, and the status registers Linux checks before it trusts the RTC.
#include <gtest/gtest.h>

#include "vm/bus.hpp"
#include "vm/cmos_rtc.hpp"

using namespace potemkin;
using namespace potemkin::vm;

namespace {

// 2026-12-03 14:05:09 UTC, a Thursday.
constexpr std::time_t kT = 1796306709;

struct Rtc : ::testing::Test {
    std::time_t host = kT;
    CmosRtc rtc{[this] { return host; }};
    PortBus ports{Space::io, 0x10000};
    void SetUp() override { ASSERT_TRUE(rtc.attach(ports, "rtc")); }
    uint8_t cmos(uint8_t index) {
        ports.write(Port(0x70), 1, index);
        return static_cast<uint8_t>(ports.read(Port(0x71), 1));
    }
    void cmos_write(uint8_t index, uint8_t value) {
        ports.write(Port(0x70), 1, index);
        ports.write(Port(0x71), 1, value);
    }
};

TEST_F(Rtc, ReadsTheHostClockInBcd) {
    EXPECT_EQ(cmos(0x00), 0x09);
    EXPECT_EQ(cmos(0x02), 0x05);
    EXPECT_EQ(cmos(0x04), 0x14);
    EXPECT_EQ(cmos(0x06), 0x05);  // Thursday (1 = Sunday)
    EXPECT_EQ(cmos(0x07), 0x03);
    EXPECT_EQ(cmos(0x08), 0x12);
    EXPECT_EQ(cmos(0x09), 0x26);
    EXPECT_EQ(cmos(0x32), 0x20);
    host += 61;
    EXPECT_EQ(cmos(0x00), 0x10);
    EXPECT_EQ(cmos(0x02), 0x06);
}

TEST_F(Rtc, StatusRegistersSayValidAndNeverUpdating) {
    EXPECT_EQ(cmos(0x0a) & 0x80, 0);  // UIP clear
    EXPECT_EQ(cmos(0x0a), 0x26);
    EXPECT_EQ(cmos(0x0b), 0x02);  // 24-hour, BCD
    EXPECT_EQ(cmos(0x0c), 0x00);
    EXPECT_EQ(cmos(0x0d), 0x80);         // VRT
    EXPECT_EQ(cmos(0x80 | 0x0d), 0x80);  // bit 7 of the index is the NMI mask, not an address
}

TEST_F(Rtc, BinaryAndTwelveHourModes) {
    cmos_write(0x0b, 0x04);           // binary, 12-hour
    EXPECT_EQ(cmos(0x04), 0x80 | 2);  // 2 PM
    EXPECT_EQ(cmos(0x09), 26);
    cmos_write(0x0b, 0x06);
    EXPECT_EQ(cmos(0x04), 14);
}

TEST_F(Rtc, SettingTheClockKeepsItRunning) {
    cmos_write(0x04, 0x09);  // 09:xx BCD
    cmos_write(0x09, 0x30);  // 2030
    EXPECT_EQ(cmos(0x04), 0x09);
    EXPECT_EQ(cmos(0x09), 0x30);
    EXPECT_EQ(cmos(0x02), 0x05);  // other fields unchanged
    host += 3600;
    EXPECT_EQ(cmos(0x04), 0x10);
}

TEST_F(Rtc, CmosMemoryHoldsBytes) {
    cmos_write(0x40, 0xa5);
    cmos_write(0x7f, 0x5a);
    EXPECT_EQ(cmos(0x40), 0xa5);
    EXPECT_EQ(cmos(0x7f), 0x5a);
    EXPECT_EQ(cmos(0x41), 0x00);
}

}  // namespace
