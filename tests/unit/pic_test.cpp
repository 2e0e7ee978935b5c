// Pic8259Pair: driven only through its port handlers and input lines, as the guest and the
// devices drive it.
#include "vm/pic.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "vm/bus.hpp"

namespace potemkin::vm {
namespace {

class PicTest : public ::testing::Test {
  protected:
    // The PC BIOS/Linux sequence: edge, cascade, ICW4; bases 0x20/0x28; slave on IR2; 8086.
    void init(uint8_t icw4 = 0x01) {
        pic.io_write(0x20, 0x11);
        pic.io_write(0x21, 0x20);
        pic.io_write(0x21, 0x04);
        pic.io_write(0x21, icw4);
        pic.io_write(0xa0, 0x11);
        pic.io_write(0xa1, 0x28);
        pic.io_write(0xa1, 0x02);
        pic.io_write(0xa1, icw4);
    }
    void pulse(unsigned line) {
        pic.set_irq(line, true);
        pic.set_irq(line, false);
    }
    void eoi_master() { pic.io_write(0x20, 0x20); }
    void eoi_slave() { pic.io_write(0xa0, 0x20); }
    uint8_t read_isr(uint16_t cmd_port) {
        pic.io_write(cmd_port, 0x0b);
        const uint8_t v = pic.io_read(cmd_port);
        pic.io_write(cmd_port, 0x0a);
        return v;
    }
    uint8_t read_irr(uint16_t cmd_port) {
        pic.io_write(cmd_port, 0x0a);
        return pic.io_read(cmd_port);
    }

    int kicks = 0;
    Pic8259Pair pic{[this] { ++kicks; }};
};

TEST_F(PicTest, UninitialisedPicDeliversNothing) {
    pic.set_irq(0, true);
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(pic.acknowledge(), std::nullopt);
    EXPECT_EQ(pic.io_read(0x21), 0xff);  // power-on IMR: everything masked
}

TEST_F(PicTest, NothingIsDeliveredInTheMiddleOfTheInitSequence) {
    init();
    pulse(3);
    ASSERT_TRUE(pic.output());
    pic.io_write(0x20, 0x11);  // ICW1 again: the chip waits for ICW2-4
    pic.io_write(0x21, 0x40);
    pulse(4);
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(pic.acknowledge(), std::nullopt);
    pic.io_write(0x21, 0x04);
    pic.io_write(0x21, 0x01);
    ASSERT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x44);  // the new base; IRQ3's request was reset by ICW1
}

TEST_F(PicTest, InitSequenceSetsVectorBases) {
    init();
    EXPECT_EQ(pic.vector_base(0), 0x20);
    EXPECT_EQ(pic.vector_base(1), 0x28);
    EXPECT_EQ(pic.io_read(0x21), 0x00);  // ICW1 clears IMR
    pulse(1);
    EXPECT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x21);
    eoi_master();
    pulse(12);
    EXPECT_EQ(pic.acknowledge(), 0x2c);
}

TEST_F(PicTest, Icw2LowBitsAreIgnored) {
    pic.io_write(0x20, 0x13);  // single, ICW4 needed: no ICW3
    pic.io_write(0x21, 0x37);
    pic.io_write(0x21, 0x01);
    pulse(5);
    EXPECT_EQ(pic.acknowledge(), 0x35);
}

TEST_F(PicTest, WithoutIcw4TheSequenceEndsAfterIcw3) {
    pic.io_write(0x20, 0x10);  // cascade, no ICW4
    pic.io_write(0x21, 0x08);
    pic.io_write(0x21, 0x04);
    pic.io_write(0x21, 0xfe);  // this is OCW1 already
    EXPECT_EQ(pic.io_read(0x21), 0xfe);
}

TEST_F(PicTest, ImrMasksAndUnmasks) {
    init();
    pic.io_write(0x21, 0x08);
    pulse(3);
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(read_irr(0x20), 0x08);  // the request is latched even while masked
    pic.io_write(0x21, 0x00);
    EXPECT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x23);
}

TEST_F(PicTest, MaskingTheCascadeMasksTheSlave) {
    init();
    pic.io_write(0x21, 0x04);
    pulse(9);
    EXPECT_FALSE(pic.output());
    pic.io_write(0x21, 0x00);
    EXPECT_EQ(pic.acknowledge(), 0x29);
}

TEST_F(PicTest, LowestLineWins) {
    init();
    pulse(5);
    pulse(3);
    pulse(7);
    EXPECT_EQ(pic.acknowledge(), 0x23);
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x25);
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x27);
    eoi_master();
    EXPECT_FALSE(pic.output());
}

TEST_F(PicTest, SlaveLinesSitAtTheCascadePosition) {
    init();
    pulse(3);
    pulse(9);
    EXPECT_EQ(pic.acknowledge(), 0x29);  // IR2 (the slave) beats IR3
    eoi_slave();
    eoi_master();
    pulse(1);
    EXPECT_EQ(pic.acknowledge(), 0x21);  // IR1 beats the slave
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x23);
}

TEST_F(PicTest, PriorityWithinTheSlave) {
    init();
    pulse(14);
    pulse(10);
    EXPECT_EQ(pic.acknowledge(), 0x2a);
    eoi_slave();
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x2e);
}

TEST_F(PicTest, InServiceBlocksLowerAndEqualPriority) {
    init();
    pulse(4);
    EXPECT_EQ(pic.acknowledge(), 0x24);
    EXPECT_EQ(read_isr(0x20), 0x10);
    pulse(6);
    EXPECT_FALSE(pic.output());
    pulse(4);  // the same line again: equal priority is blocked too
    EXPECT_FALSE(pic.output());
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x24);
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x26);
}

TEST_F(PicTest, HigherPriorityNests) {
    init();
    pulse(4);
    EXPECT_EQ(pic.acknowledge(), 0x24);
    pulse(6);
    pulse(1);
    ASSERT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x21);
    EXPECT_EQ(read_isr(0x20), 0x12);
    eoi_master();  // non-specific: the highest priority, IR1
    EXPECT_EQ(read_isr(0x20), 0x10);
    EXPECT_FALSE(pic.output());  // IR6 still waits behind IR4
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x26);
}

TEST_F(PicTest, SpecificEoiClearsTheNamedLevel) {
    init();
    pulse(4);
    EXPECT_EQ(pic.acknowledge(), 0x24);
    pulse(1);
    EXPECT_EQ(pic.acknowledge(), 0x21);
    pic.io_write(0x20, 0x64);  // specific EOI, level 4
    EXPECT_EQ(read_isr(0x20), 0x02);
    pic.io_write(0x20, 0x61);
    EXPECT_EQ(read_isr(0x20), 0x00);
}

TEST_F(PicTest, RotateEoiCommandsStillEoi) {
    init();
    pulse(4);
    EXPECT_EQ(pic.acknowledge(), 0x24);
    pic.io_write(0x20, 0xa0);  // rotate on non-specific EOI
    EXPECT_EQ(read_isr(0x20), 0x00);
    pulse(5);
    EXPECT_EQ(pic.acknowledge(), 0x25);
    pic.io_write(0x20, 0xe5);  // rotate on specific EOI, level 5
    EXPECT_EQ(read_isr(0x20), 0x00);
}

TEST_F(PicTest, CascadeNeedsEoiOnBothChips) {
    init();
    pulse(11);
    EXPECT_EQ(pic.acknowledge(), 0x2b);
    EXPECT_EQ(read_isr(0x20), 0x04);
    EXPECT_EQ(read_isr(0xa0), 0x08);
    pulse(13);
    EXPECT_FALSE(pic.output());
    eoi_slave();
    EXPECT_FALSE(pic.output());  // the master still has IR2 in service
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x2d);
}

TEST_F(PicTest, HigherSlaveLineWaitsForMasterEoiWithoutSfnm) {
    init();
    pulse(12);
    EXPECT_EQ(pic.acknowledge(), 0x2c);
    pulse(9);  // higher than 12 on the slave, but the master has IR2 in service
    EXPECT_FALSE(pic.output());
    eoi_slave();
    eoi_master();
    EXPECT_EQ(pic.acknowledge(), 0x29);
}

TEST_F(PicTest, SpecialFullyNestedModeLetsHigherSlaveLinesNest) {
    init(0x11);  // SFNM + 8086 mode
    pulse(12);
    EXPECT_EQ(pic.acknowledge(), 0x2c);
    pulse(14);
    EXPECT_FALSE(pic.output());  // lower than the slave's in-service line
    pulse(9);
    ASSERT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x29);
}

TEST_F(PicTest, LevelRequestPersistsWhileHighAndReturnsAfterEoi) {
    init();
    pic.io_write(0x4d1, 0x04);  // line 10 level
    pic.set_irq(10, true);
    EXPECT_EQ(pic.acknowledge(), 0x2a);
    EXPECT_EQ(read_irr(0xa0), 0x04);  // a level request is not cleared by INTA
    EXPECT_FALSE(pic.output());       // but is blocked by its in-service bit
    eoi_slave();
    eoi_master();
    ASSERT_TRUE(pic.output());  // still high: requested again
    EXPECT_EQ(pic.acknowledge(), 0x2a);
    pic.set_irq(10, false);  // the handler quiets the device
    eoi_slave();
    eoi_master();
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(read_irr(0xa0), 0x00);
}

TEST_F(PicTest, LoweredLevelLineDropsItsRequest) {
    init();
    pic.io_write(0x4d0, 0x20);  // line 5 level
    pic.set_irq(5, true);
    EXPECT_TRUE(pic.output());
    pic.set_irq(5, false);
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(read_irr(0x20), 0x00);
}

TEST_F(PicTest, VanishedMasterRequestGivesSpuriousIrq7) {
    init();
    pic.io_write(0x4d0, 0x20);
    pic.set_irq(5, true);
    pic.set_irq(5, false);
    EXPECT_EQ(pic.acknowledge(), 0x27);
    EXPECT_EQ(read_isr(0x20), 0x00);  // a spurious IRQ 7 sets no ISR bit
}

TEST_F(PicTest, VanishedSlaveRequestGivesSlaveSpuriousVector) {
    init();
    pic.io_write(0x4d1, 0x08);  // line 11 level
    pic.set_irq(11, true);
    ASSERT_TRUE(pic.output());
    pic.set_irq(11, false);
    // IR2 is edge-triggered on the master: its latched request survives, the slave has none.
    EXPECT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x2f);
    EXPECT_EQ(read_isr(0x20), 0x04);  // the master did accept IR2 and needs an EOI
    EXPECT_EQ(read_isr(0xa0), 0x00);
}

TEST_F(PicTest, EdgeLineNeedsANewRisingEdge) {
    init();
    pic.set_irq(3, true);
    EXPECT_EQ(pic.acknowledge(), 0x23);
    eoi_master();
    pic.set_irq(3, true);  // still high: no edge
    EXPECT_FALSE(pic.output());
    pic.set_irq(3, false);
    pic.set_irq(3, true);
    EXPECT_EQ(pic.acknowledge(), 0x23);
}

TEST_F(PicTest, EdgeRequestSurvivesTheLineDropping) {
    init();
    pic.set_irq(6, true);
    pic.set_irq(6, false);
    EXPECT_EQ(read_irr(0x20), 0x40);
    EXPECT_EQ(pic.acknowledge(), 0x26);
    EXPECT_EQ(read_irr(0x20), 0x00);  // INTA clears an edge request
}

TEST_F(PicTest, ElcrForcesEdgeOnPiixLines) {
    pic.io_write(0x4d0, 0xff);
    pic.io_write(0x4d1, 0xff);
    EXPECT_EQ(pic.io_read(0x4d0), 0xf8);  // 0, 1, 2 edge
    EXPECT_EQ(pic.io_read(0x4d1), 0xde);  // 8, 13 edge
}

TEST_F(PicTest, SwitchingALineToLevelFollowsTheLine) {
    init();
    pic.io_write(0x21, 0x08);  // mask IR3 so nothing is acknowledged
    pic.set_irq(3, true);
    pic.set_irq(3, false);
    EXPECT_EQ(read_irr(0x20), 0x08);  // edge latch
    pic.io_write(0x4d0, 0x08);
    EXPECT_EQ(read_irr(0x20), 0x00);  // level: the line is low
    pic.set_irq(3, true);
    EXPECT_EQ(read_irr(0x20), 0x08);
}

TEST_F(PicTest, AutoEoiLeavesNoInServiceBit) {
    init(0x03);  // AEOI + 8086
    pulse(4);
    EXPECT_EQ(pic.acknowledge(), 0x24);
    EXPECT_EQ(read_isr(0x20), 0x00);
    pulse(6);
    EXPECT_TRUE(pic.output());  // nothing in service blocks it
    EXPECT_EQ(pic.acknowledge(), 0x26);
    pulse(10);
    EXPECT_EQ(pic.acknowledge(), 0x2a);
    EXPECT_EQ(read_isr(0xa0), 0x00);
}

TEST_F(PicTest, Ocw3SelectsIrrOrIsr) {
    init();
    pic.io_write(0x21, 0xff);
    pulse(3);
    EXPECT_EQ(pic.io_read(0x20), 0x08);  // IRR by default after ICW1
    pic.io_write(0x20, 0x0b);
    EXPECT_EQ(pic.io_read(0x20), 0x00);  // ISR
    pic.io_write(0x20, 0x08);            // RR=0: the selection stays
    EXPECT_EQ(pic.io_read(0x20), 0x00);
    pic.io_write(0x20, 0x0a);
    EXPECT_EQ(pic.io_read(0x20), 0x08);
}

TEST_F(PicTest, PollCommandActsAsInta) {
    init();
    pulse(5);
    pic.io_write(0x20, 0x0c);
    EXPECT_EQ(pic.io_read(0x20), 0x85);
    EXPECT_EQ(read_isr(0x20), 0x20);
    pic.io_write(0x20, 0x0c);
    EXPECT_EQ(pic.io_read(0x20), 0x00);  // nothing else pending (IR5 blocks lower anyway)
}

TEST_F(PicTest, SpecialMaskModeLetsLowerPrioritiesThrough) {
    init();
    pulse(4);
    EXPECT_EQ(pic.acknowledge(), 0x24);
    pulse(6);
    EXPECT_FALSE(pic.output());
    pic.io_write(0x21, 0x10);  // mask IR4 (in service)
    pic.io_write(0x20, 0x68);  // set special mask mode
    ASSERT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x26);
    pic.io_write(0x20, 0x66);  // specific EOI 6
    pic.io_write(0x20, 0x48);  // reset special mask mode
    pulse(7);
    EXPECT_FALSE(pic.output());  // IR4 in service blocks again
}

TEST_F(PicTest, OutputChangeCallbackFiresWhenARequestBecomesDeliverable) {
    init();
    pic.io_write(0x21, 0x01);
    kicks = 0;
    pulse(0);
    EXPECT_EQ(kicks, 0);  // masked: no reason to kick
    pic.io_write(0x21, 0x00);
    EXPECT_GE(kicks, 1);  // unmasking made it deliverable
    kicks = 0;
    pic.set_irq(9, true);
    EXPECT_GE(kicks, 1);
}

TEST_F(PicTest, CascadeLineAndOutOfRangeLinesAreIgnored) {
    init();
    pic.set_irq(2, true);
    pic.set_irq(16, true);
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(read_irr(0x20), 0x00);
}

TEST_F(PicTest, SingleModeMasterDeliversIr2ItselfAndSkipsIcw3) {
    pic.io_write(0x20, 0x13);  // single, ICW4
    pic.io_write(0x21, 0x40);
    pic.io_write(0x21, 0x01);  // ICW4 directly
    EXPECT_EQ(pic.io_read(0x21), 0x00);
    pic.io_write(0xa0, 0x11);
    pic.io_write(0xa1, 0x50);
    pic.io_write(0xa1, 0x02);
    pic.io_write(0xa1, 0x01);
    pulse(9);
    EXPECT_EQ(pic.acknowledge(), 0x42);  // no cascade: the master's own IR2 vector
}

TEST_F(PicTest, PortsThroughThePortBus) {
    PortBus bus(Space::io, 1u << 16);
    ASSERT_TRUE(pic.attach(bus, "pic"));
    ASSERT_NE(bus.find(Port(0x21)), nullptr);
    EXPECT_EQ(bus.find(Port(0xa1))->owner, "pic");
    EXPECT_EQ(bus.find(Port(0x4d1))->owner, "pic");
    for (auto [port, v] : {std::pair{0x20, 0x11},
                           {0x21, 0x30},
                           {0x21, 0x04},
                           {0x21, 0x01},
                           {0xa0, 0x11},
                           {0xa1, 0x38},
                           {0xa1, 0x02},
                           {0xa1, 0x01}})
        bus.write(Port(static_cast<uint16_t>(port)), 1, static_cast<uint64_t>(v));
    bus.write(Port(0x4d0), 2, 0x0820);  // a 16-bit ELCR write: line 5 and line 11 level
    EXPECT_EQ(bus.read(Port(0x4d0), 1), 0x20u);
    EXPECT_EQ(bus.read(Port(0x4d1), 1), 0x08u);
    bus.write(Port(0x21), 1, 0xfb);
    bus.write(Port(0xa1), 1, 0xf7);
    EXPECT_EQ(bus.read(Port(0xa1), 1), 0xf7u);
    pic.set_irq(11, true);
    ASSERT_TRUE(pic.output());
    EXPECT_EQ(pic.acknowledge(), 0x3b);
    bus.write(Port(0xa0), 1, 0x0b);
    EXPECT_EQ(bus.read(Port(0xa0), 2), 0xf708u);  // ISR then IMR, byte by byte
    bus.write(Port(0xa0), 1, 0x20);
    bus.write(Port(0x20), 1, 0x20);
    EXPECT_EQ(bus.read(Port(0xa0), 1), 0x00u);
}

TEST_F(PicTest, FailedAttachLeavesNothingRegistered) {
    PortBus bus(Space::io, 1u << 16);
    ASSERT_TRUE(bus.add(Port(0x4d0), 1, "other",
                        BusHandler{[](uint64_t, unsigned) -> uint64_t { return 0; },
                                   [](uint64_t, unsigned, uint64_t) {}}));
    auto r = pic.attach(bus, "pic");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("other"), std::string::npos);
    EXPECT_EQ(bus.find(Port(0x20)), nullptr);
    EXPECT_EQ(bus.find(Port(0xa0)), nullptr);
}

// ---- EOI notification ---------------------------------------------------------------------

// What the listener heard, in order.
class PicEoiTest : public PicTest {
  protected:
    void SetUp() override {
        pic.set_eoi_listener([this](unsigned line) { heard.push_back(line); });
    }
    // Lines 11 (slave IR3) and 5 (master IR5) level-triggered, as PCI INTx lines are.
    void level_lines() {
        pic.io_write(0x4d0, 0x20);
        pic.io_write(0x4d1, 0x08);
        pic.io_write(0x21, 0x00);
        pic.io_write(0xa1, 0x00);
    }
    std::vector<unsigned> heard;
};

TEST_F(PicEoiTest, NonSpecificEoiOfALevelLineIsReported) {
    init();
    level_lines();
    pic.set_irq(5, true);
    ASSERT_EQ(pic.acknowledge(), 0x25);
    EXPECT_TRUE(heard.empty()) << "no EOI yet";
    eoi_master();
    EXPECT_EQ(heard, std::vector<unsigned>{5});
    // The line is still high: it requests again, and its next EOI is reported again.
    ASSERT_EQ(pic.acknowledge(), 0x25);
    eoi_master();
    EXPECT_EQ(heard, (std::vector<unsigned>{5, 5}));
}

TEST_F(PicEoiTest, SlaveLineIsReportedByTheSlavesEoiNotTheCascade) {
    init();
    level_lines();
    pic.set_irq(11, true);
    ASSERT_EQ(pic.acknowledge(), 0x2b);
    eoi_slave();
    EXPECT_EQ(heard, std::vector<unsigned>{11});
    eoi_master();  // retires IR2, the cascade: edge, never reported
    EXPECT_EQ(heard, std::vector<unsigned>{11});
}

TEST_F(PicEoiTest, SpecificEoiReportsTheLineItRetires) {
    init();
    level_lines();
    pic.set_irq(11, true);
    ASSERT_EQ(pic.acknowledge(), 0x2b);
    pic.io_write(0xa0, 0x60 | 3);  // specific EOI, slave IR3 = line 11
    EXPECT_EQ(heard, std::vector<unsigned>{11});
    pic.io_write(0xa0, 0x60 | 3);  // nothing in service any more: nothing retired
    pic.io_write(0xa0, 0x60 | 4);  // another IR, not in service
    EXPECT_EQ(heard, std::vector<unsigned>{11});
    pic.io_write(0x20, 0xe0 | 2);  // rotate on specific EOI: the cascade, not reported
    EXPECT_EQ(heard, std::vector<unsigned>{11});
}

TEST_F(PicEoiTest, EdgeLinesAreNeverReported) {
    init();
    level_lines();
    pulse(3);  // edge (ELCR bit clear)
    ASSERT_EQ(pic.acknowledge(), 0x23);
    eoi_master();
    pulse(10);  // edge on the slave
    ASSERT_EQ(pic.acknowledge(), 0x2a);
    eoi_slave();
    eoi_master();
    EXPECT_TRUE(heard.empty());
}

TEST_F(PicEoiTest, MaskedLineThatIsNotInServiceIsNotReported) {
    init();
    level_lines();
    pic.io_write(0x21, 0x20);  // mask line 5
    pic.set_irq(5, true);
    EXPECT_FALSE(pic.output());
    eoi_master();  // retires nothing
    pic.io_write(0x20, 0x60 | 5);
    EXPECT_TRUE(heard.empty());
}

TEST_F(PicEoiTest, LineMaskedWhileInServiceIsReportedWhenItsEoiRetiresIt) {
    init();
    level_lines();
    pic.set_irq(5, true);
    ASSERT_EQ(pic.acknowledge(), 0x25);
    pic.io_write(0x21, 0x20);  // the handler masks its line, then EOIs
    eoi_master();
    EXPECT_EQ(heard, std::vector<unsigned>{5});
    EXPECT_FALSE(pic.output());
}

TEST_F(PicEoiTest, AutoEoiReportsALevelLineAtTheInterruptAcknowledge) {
    init(0x03);  // AEOI + 8086
    level_lines();
    pic.set_irq(11, true);
    ASSERT_EQ(pic.acknowledge(), 0x2b);
    EXPECT_EQ(heard, std::vector<unsigned>{11});
    EXPECT_EQ(read_isr(0xa0), 0);
    pulse(4);  // an edge line in AEOI mode: not reported
    pic.set_irq(11, false);
    ASSERT_EQ(pic.acknowledge(), 0x24);
    EXPECT_EQ(heard, std::vector<unsigned>{11});
}

TEST_F(PicEoiTest, ListenerMayLowerTheLineDuringTheEoi) {
    init();
    level_lines();
    // A device that resamples on EOI and finds its condition gone: no second interrupt.
    pic.set_eoi_listener([this](unsigned line) {
        heard.push_back(line);
        pic.set_irq(line, false);
    });
    pic.set_irq(5, true);
    ASSERT_EQ(pic.acknowledge(), 0x25);
    eoi_master();
    EXPECT_EQ(heard, std::vector<unsigned>{5});
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(read_irr(0x20), 0);
}

TEST_F(PicEoiTest, SlaveLineLoweredAtItsEoiLeavesNoCascadeRequestBehind) {
    // Regression: the report came after the PIC re-evaluated, so the slave's INT rose for a
    // moment at the slave's EOI, the master latched that edge on IR2, and the master's EOI
    // then delivered the slave's spurious vector 0x2f.
    init();
    level_lines();
    pic.set_eoi_listener([this](unsigned line) {
        heard.push_back(line);
        pic.set_irq(line, false);
    });
    pic.set_irq(11, true);
    ASSERT_EQ(pic.acknowledge(), 0x2b);
    eoi_slave();
    eoi_master();
    EXPECT_EQ(heard, std::vector<unsigned>{11});
    EXPECT_EQ(read_irr(0x20) & 0x04, 0) << "no cascade request latched";
    EXPECT_FALSE(pic.output());
}

TEST_F(PicEoiTest, ResetReturnsToPowerOnButKeepsInputLevels) {
    init();
    level_lines();
    pic.set_irq(5, true);
    ASSERT_EQ(pic.acknowledge(), 0x25);
    pic.reset();
    EXPECT_TRUE(heard.empty()) << "a reset retires nothing by EOI";
    EXPECT_EQ(pic.isr(0), 0);
    EXPECT_EQ(pic.imr(0), 0xff);
    EXPECT_EQ(pic.io_read(0x4d0), 0);
    EXPECT_FALSE(pic.output());
    EXPECT_EQ(pic.acknowledge(), std::nullopt);  // uninitialised again
    init();
    level_lines();  // line 5 is still high: level again, it requests at once
    EXPECT_EQ(pic.acknowledge(), 0x25);
}

}  // namespace
}  // namespace potemkin::vm
