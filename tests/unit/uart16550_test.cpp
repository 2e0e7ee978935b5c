// SERIAL (devices/uart16550.hpp): the 16550A register file on a real port bus, the probe
// sequence Linux's 8250 driver runs, interrupts by source and OUT2, loopback, and input.
#include <gtest/gtest.h>

#include <string>

#include "devices/uart16550.hpp"
#include "vm_fakes.hpp"

using namespace potemkin;
using namespace potemkin::vm;
using devices::Uart16550;

namespace {

constexpr uint16_t kBase = 0x3f8;
constexpr unsigned kIrq = 4;

class Uart : public ::testing::Test {
  protected:
    void SetUp() override {
        devices::Uart16550Settings s;
        s.output = [this](std::string_view t) { out.append(t); };
        auto u = Uart16550::create("com1", ports, sink, std::move(s));
        ASSERT_TRUE(u) << u.error().message;
        uart = std::move(*u);
    }
    uint8_t in(unsigned reg) { return static_cast<uint8_t>(ports.read(Port(kBase + reg), 1)); }
    void out_(unsigned reg, uint8_t v) { ports.write(Port(kBase + reg), 1, v); }
    bool line() { return sink.levels[kIrq]; }

    PortBus ports{Space::io, 0x10000};
    potemkin::testing::RecordingSink sink;
    std::string out;
    std::unique_ptr<Uart16550> uart;
};

TEST_F(Uart, TransmittedBytesReachTheConsoleAndTheTransmitterIsAlwaysEmpty) {
    for (char c : std::string("ok\n")) out_(0, static_cast<uint8_t>(c));
    EXPECT_EQ(out, "ok\n");
    EXPECT_EQ(in(5) & 0x60, 0x60);  // THRE and TEMT
    EXPECT_EQ(in(5) & 0x01, 0);     // nothing received
}

TEST_F(Uart, DivisorLatchSharesPortsWithDataAndIer) {
    out_(3, 0x83);  // DLAB, 8N1
    out_(0, 0x01);  // 115200 baud
    out_(1, 0x00);
    EXPECT_EQ(in(0), 0x01);
    EXPECT_EQ(in(1), 0x00);
    out_(3, 0x03);
    EXPECT_EQ(in(3), 0x03);
    EXPECT_EQ(out, "");  // the divisor write was not a transmitted byte
    EXPECT_EQ(in(1), 0x00);
}

// The checks Linux's autoconfig() makes before it believes a 16550A is there.
TEST_F(Uart, PassesLinuxProbe) {
    out_(1, 0x00);
    EXPECT_EQ(in(1) & 0x0f, 0x00);
    out_(1, 0x0f);
    EXPECT_EQ(in(1) & 0x0f, 0x0f);
    out_(1, 0x00);
    // Loopback: MSR's top nibble follows MCR's OUT2, OUT1, RTS, DTR.
    out_(4, 0x10 | 0x0a);
    EXPECT_EQ(in(6) & 0xf0, 0x90);
    out_(4, 0x00);
    // FIFOs on: IIR's top bits say 16550A.
    out_(2, 0x01);
    EXPECT_EQ(in(2) >> 6, 3);
    // Scratch register holds its value.
    out_(7, 0xa5);
    EXPECT_EQ(in(7), 0xa5);
}

TEST_F(Uart, ThrEmptyInterruptNeedsOut2AndIsAcknowledgedByReadingIir) {
    out_(1, 0x02);                  // ETBEI with THR empty: pending at once
    EXPECT_EQ(in(2) & 0x0f, 0x02);  // THR empty; this read acknowledges it
    EXPECT_EQ(in(2) & 0x0f, 0x01);  // nothing pending now
    EXPECT_FALSE(line());           // and OUT2 was off all along
    out_(4, 0x08);                  // OUT2: interrupts reach the ISA line
    out_(0, 'x');                   // THR empties again at once
    EXPECT_TRUE(line());
    EXPECT_EQ(in(2) & 0x0f, 0x02);
    EXPECT_FALSE(line());
    out_(0, 'y');
    EXPECT_TRUE(line());
    out_(1, 0x00);  // disabling the source lowers the line
    EXPECT_FALSE(line());
}

TEST_F(Uart, ReceivedBytesInterruptUntilRead) {
    out_(4, 0x08);
    out_(1, 0x01);
    EXPECT_FALSE(line());
    uart->receive("hi");
    EXPECT_TRUE(line());
    EXPECT_EQ(in(5) & 0x01, 0x01);
    EXPECT_EQ(in(2) & 0x0f, 0x04);  // received data outranks THR empty
    EXPECT_EQ(in(0), 'h');
    EXPECT_TRUE(line());
    EXPECT_EQ(in(0), 'i');
    EXPECT_FALSE(line());
    EXPECT_EQ(in(5) & 0x01, 0x00);
}

TEST_F(Uart, LoopbackKeepsBytesOffTheConsoleAndOffTheIrqLine) {
    out_(4, 0x18);  // loopback + OUT2
    out_(1, 0x01);
    out_(0, 'z');
    EXPECT_EQ(out, "");
    EXPECT_FALSE(line());  // in loopback the interrupt stays inside the chip
    EXPECT_EQ(in(2) & 0x0f, 0x04);
    EXPECT_EQ(in(0), 'z');
}

TEST_F(Uart, ResetReturnsToPowerOnAndLowersTheLine) {
    out_(4, 0x08);
    out_(1, 0x02);
    EXPECT_TRUE(line());
    out_(7, 0x55);
    uart->reset();
    EXPECT_FALSE(line());
    EXPECT_EQ(in(1), 0x00);
    EXPECT_EQ(in(4), 0x00);
    EXPECT_EQ(in(7), 0x00);
}

}  // namespace
