// LocalApic: driven through its MMIO register interface and accept(), as MSIs reach it.
#include "vm/lapic.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace potemkin::vm {
namespace {

constexpr uint32_t kId = 0x20, kVersion = 0x30, kTpr = 0x80, kPpr = 0xa0, kEoi = 0xb0, kLdr = 0xd0,
                   kDfr = 0xe0, kSvr = 0xf0, kIsr = 0x100, kTmr = 0x180, kIrr = 0x200, kEsr = 0x280,
                   kIcrLow = 0x300, kIcrHigh = 0x310, kLvtTimer = 0x320, kLvtLint0 = 0x350,
                   kLvtError = 0x370, kTimerCurrent = 0x390;

// The 32-bit word of a 256-bit register (ISR/TMR/IRR) that holds `vector`, and its bit.
uint32_t word_of(uint32_t base, uint8_t vector) {
    return base + (vector / 32) * 16;
}
uint32_t bit_of(uint8_t vector) {
    return 1u << (vector % 32);
}

class LapicTest : public ::testing::Test {
  protected:
    void enable() { apic.mmio_write(kSvr, 0x1ff); }

    int changes = 0;
    LocalApic apic{3, [this] { ++changes; }};
};

TEST_F(LapicTest, ResetState) {
    EXPECT_EQ(apic.mmio_read(kId), 3u << 24);
    EXPECT_EQ(apic.mmio_read(kVersion), 0x00050014u);
    EXPECT_EQ(apic.mmio_read(kSvr), 0xffu);
    EXPECT_FALSE(apic.software_enabled());
    EXPECT_EQ(apic.mmio_read(kDfr), 0xffffffffu);
    EXPECT_EQ(apic.mmio_read(kTpr), 0u);
    EXPECT_EQ(apic.mmio_read(kPpr), 0u);
    EXPECT_EQ(apic.mmio_read(kEsr), 0u);
    for (uint32_t off = kLvtTimer; off <= kLvtError; off += 0x10)
        EXPECT_EQ(apic.mmio_read(off), 0x00010000u) << std::hex << off;
}

TEST_F(LapicTest, IdIsReadOnly) {
    apic.mmio_write(kId, 0x07000000);
    EXPECT_EQ(apic.mmio_read(kId), 3u << 24);
}

TEST_F(LapicTest, SoftwareDisabledApicDropsFixedInterrupts) {
    apic.accept(0x40, false);
    EXPECT_FALSE(apic.has_interrupt());
    EXPECT_EQ(apic.acknowledge(), std::nullopt);
    EXPECT_EQ(apic.mmio_read(word_of(kIrr, 0x40)), 0u);
    EXPECT_EQ(apic.dropped_while_disabled(), 1u);
    enable();
    EXPECT_FALSE(apic.has_interrupt());  // dropped, not held
}

TEST_F(LapicTest, AcceptAcknowledgeEoi) {
    enable();
    changes = 0;
    apic.accept(0x41, false);
    EXPECT_EQ(changes, 1);
    ASSERT_TRUE(apic.has_interrupt());
    EXPECT_EQ(apic.mmio_read(word_of(kIrr, 0x41)), bit_of(0x41));
    EXPECT_EQ(apic.acknowledge(), 0x41);
    EXPECT_EQ(apic.mmio_read(word_of(kIrr, 0x41)), 0u);
    EXPECT_EQ(apic.mmio_read(word_of(kIsr, 0x41)), bit_of(0x41));
    EXPECT_EQ(apic.mmio_read(kPpr), 0x40u);  // the in-service class
    EXPECT_FALSE(apic.has_interrupt());
    apic.mmio_write(kEoi, 0);
    EXPECT_EQ(apic.mmio_read(word_of(kIsr, 0x41)), 0u);
    EXPECT_EQ(apic.mmio_read(kPpr), 0u);
}

TEST_F(LapicTest, HighestVectorFirst) {
    enable();
    apic.accept(0x31, false);
    apic.accept(0xe2, false);
    apic.accept(0x52, false);
    EXPECT_EQ(apic.acknowledge(), 0xe2);
    apic.mmio_write(kEoi, 0);
    EXPECT_EQ(apic.acknowledge(), 0x52);
    apic.mmio_write(kEoi, 0);
    EXPECT_EQ(apic.acknowledge(), 0x31);
}

TEST_F(LapicTest, TprGatesByPriorityClass) {
    enable();
    apic.mmio_write(kTpr, 0x55);
    EXPECT_EQ(apic.mmio_read(kPpr), 0x55u);
    apic.accept(0x5f, false);
    EXPECT_FALSE(apic.has_interrupt());  // class 5 is not above class 5
    apic.accept(0x30, false);
    EXPECT_FALSE(apic.has_interrupt());
    changes = 0;
    apic.accept(0x61, false);
    EXPECT_EQ(changes, 1);
    EXPECT_EQ(apic.acknowledge(), 0x61);
    apic.mmio_write(kEoi, 0);
    EXPECT_FALSE(apic.has_interrupt());
    changes = 0;
    apic.mmio_write(kTpr, 0x40);  // lowering TPR releases 0x5f
    EXPECT_EQ(changes, 1);
    EXPECT_EQ(apic.acknowledge(), 0x5f);
}

TEST_F(LapicTest, TprIsEightBits) {
    apic.mmio_write(kTpr, 0xffffffff);
    EXPECT_EQ(apic.mmio_read(kTpr), 0xffu);
}

TEST_F(LapicTest, InServiceClassBlocksSameClassAndHigherNests) {
    enable();
    apic.accept(0x45, false);
    EXPECT_EQ(apic.acknowledge(), 0x45);
    apic.accept(0x48, false);  // same class as the one in service
    EXPECT_FALSE(apic.has_interrupt());
    apic.accept(0x51, false);
    ASSERT_TRUE(apic.has_interrupt());
    EXPECT_EQ(apic.acknowledge(), 0x51);
    EXPECT_EQ(apic.mmio_read(kPpr), 0x50u);
    // EOI retires the highest in-service vector: 0x51 first, then 0x45.
    apic.mmio_write(kEoi, 0);
    EXPECT_EQ(apic.mmio_read(word_of(kIsr, 0x45)), bit_of(0x45));  // one word holds both
    EXPECT_FALSE(apic.has_interrupt());                            // 0x48 still waits behind 0x45
    changes = 0;
    apic.mmio_write(kEoi, 0);
    EXPECT_EQ(changes, 1);  // the EOI made 0x48 deliverable
    EXPECT_EQ(apic.acknowledge(), 0x48);
}

TEST_F(LapicTest, PprUsesTprWhenItsClassIsHigher) {
    enable();
    apic.accept(0x45, false);
    EXPECT_EQ(apic.acknowledge(), 0x45);
    apic.mmio_write(kTpr, 0x23);
    EXPECT_EQ(apic.mmio_read(kPpr), 0x40u);
    apic.mmio_write(kTpr, 0x47);
    EXPECT_EQ(apic.mmio_read(kPpr), 0x47u);  // equal class: TPR wins with its low bits
}

TEST_F(LapicTest, IllegalVectorsAreRefusedAndReportedInEsr) {
    enable();
    apic.accept(0x05, false);
    EXPECT_FALSE(apic.has_interrupt());
    EXPECT_EQ(apic.illegal_vectors(), 1u);
    EXPECT_EQ(apic.mmio_read(kEsr), 0u);  // errors show after the next ESR write
    apic.mmio_write(kEsr, 0);
    EXPECT_EQ(apic.mmio_read(kEsr), 1u << 6);
    apic.mmio_write(kEsr, 0);
    EXPECT_EQ(apic.mmio_read(kEsr), 0u);
}

TEST_F(LapicTest, TmrRecordsTriggerMode) {
    enable();
    apic.accept(0x90, true);
    apic.accept(0x91, false);
    EXPECT_EQ(apic.mmio_read(word_of(kTmr, 0x90)), bit_of(0x90));
}

TEST_F(LapicTest, IsrIrrWordsCoverAll256Vectors) {
    enable();
    apic.accept(0x10, false);
    apic.accept(0xff, false);
    EXPECT_EQ(apic.mmio_read(kIrr + 0x00), 1u << 16);
    EXPECT_EQ(apic.mmio_read(kIrr + 0x70), 1u << 31);
    EXPECT_EQ(apic.acknowledge(), 0xff);
    EXPECT_EQ(apic.mmio_read(kIsr + 0x70), 1u << 31);
}

TEST_F(LapicTest, DisablingHoldsPendingInterruptsAndMasksLvts) {
    enable();
    apic.mmio_write(kLvtLint0, 0x700);  // ExtINT, unmasked
    EXPECT_EQ(apic.mmio_read(kLvtLint0), 0x700u);
    apic.accept(0x60, false);
    apic.mmio_write(kSvr, 0x0ff);
    EXPECT_FALSE(apic.has_interrupt());
    EXPECT_EQ(apic.mmio_read(word_of(kIrr, 0x60)), bit_of(0x60));
    EXPECT_EQ(apic.mmio_read(kLvtLint0), 0x10700u);
    apic.mmio_write(kLvtLint0, 0x700);
    EXPECT_EQ(apic.mmio_read(kLvtLint0), 0x10700u);  // masks stick while disabled
    changes = 0;
    enable();
    EXPECT_EQ(changes, 1);
    EXPECT_EQ(apic.acknowledge(), 0x60);
}

TEST_F(LapicTest, LvtWritableBits) {
    enable();
    apic.mmio_write(kLvtTimer, 0xffffffff);
    EXPECT_EQ(apic.mmio_read(kLvtTimer), 0x000700ffu);
    apic.mmio_write(kLvtError, 0xffffffff);
    EXPECT_EQ(apic.mmio_read(kLvtError), 0x000100ffu);
    apic.mmio_write(0x380, 12345);  // timer initial count: stored, never counts
    EXPECT_EQ(apic.mmio_read(0x380), 12345u);
    EXPECT_EQ(apic.mmio_read(kTimerCurrent), 0u);
}

TEST_F(LapicTest, LogicalDestinationRegisters) {
    apic.mmio_write(kLdr, 0x12345678);
    EXPECT_EQ(apic.mmio_read(kLdr), 0x12000000u);
    EXPECT_EQ(apic.logical_id(), 0x12);
    EXPECT_TRUE(apic.flat_model());
    apic.mmio_write(kDfr, 0x0fffffff);
    EXPECT_FALSE(apic.flat_model());
    EXPECT_EQ(apic.mmio_read(kDfr), 0x0fffffffu);
}

TEST_F(LapicTest, NonArchitecturalOffsetsReadZeroAndIgnoreWrites) {
    enable();
    EXPECT_EQ(apic.mmio_read(kId + 4), 0u);
    EXPECT_EQ(apic.mmio_read(kVersion + 1), 0u);
    apic.mmio_write(kTpr + 4, 0xff);
    apic.mmio_write(kTpr + 2, 0xff);
    EXPECT_EQ(apic.mmio_read(kTpr), 0u);
    EXPECT_EQ(apic.mmio_read(0x1000), 0u);
    EXPECT_EQ(apic.mmio_read(0x2f0), 0u);  // no CMCI LVT
}

TEST_F(LapicTest, SelfIpiIsAcceptedLocally) {
    enable();
    apic.mmio_write(kIcrLow, 0x00040000 | 0x70);      // shorthand self, fixed, vector 0x70
    EXPECT_EQ(apic.mmio_read(kIcrLow), 0x00040070u);  // delivery status idle
    EXPECT_EQ(apic.acknowledge(), 0x70);
}

TEST_F(LapicTest, OtherIpisGoToTheHandler) {
    enable();
    std::vector<LocalApic::Ipi> sent;
    apic.set_ipi_handler([&](const LocalApic::Ipi& i) { sent.push_back(i); });
    apic.mmio_write(kIcrHigh, 0x02000000);
    apic.mmio_write(kIcrLow, 0x0000c8a1);  // level, assert, logical, fixed, vector 0xa1
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].vector, 0xa1);
    EXPECT_EQ(sent[0].delivery_mode, 0);
    EXPECT_TRUE(sent[0].logical);
    EXPECT_TRUE(sent[0].level_triggered);
    EXPECT_EQ(sent[0].shorthand, 0);
    EXPECT_EQ(sent[0].destination, 2);
    EXPECT_FALSE(apic.has_interrupt());
}

TEST_F(LapicTest, IpiWithIllegalVectorSetsSendError) {
    enable();
    int sent = 0;
    apic.set_ipi_handler([&](const LocalApic::Ipi&) { ++sent; });
    apic.mmio_write(kIcrLow, 0x0000000e);
    EXPECT_EQ(sent, 0);
    apic.mmio_write(kEsr, 0);
    EXPECT_EQ(apic.mmio_read(kEsr), 1u << 5);
}

}  // namespace
}  // namespace potemkin::vm
