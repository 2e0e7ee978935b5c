// PortBus / MmioBus: overlap rejection, dispatch, splitting, unassigned space, unregister
// during dispatch.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>

#include "vm/bus.hpp"

using namespace potemkin;
using namespace potemkin::vm;

namespace {

// A device that records accesses and answers reads from a byte array.
struct Recorder {
    std::vector<uint8_t> bytes;
    std::vector<std::tuple<char, uint64_t, unsigned, uint64_t>> log;
    explicit Recorder(size_t n) : bytes(n, 0) {}
    BusHandler handler() {
        return {[this](uint64_t off, unsigned size) {
                    uint64_t v = 0;
                    for (unsigned i = 0; i < size; ++i) v |= uint64_t(bytes[off + i]) << (8 * i);
                    log.emplace_back('R', off, size, v);
                    return v;
                },
                [this](uint64_t off, unsigned size, uint64_t v) {
                    for (unsigned i = 0; i < size; ++i) bytes[off + i] = uint8_t(v >> (8 * i));
                    log.emplace_back('W', off, size, v);
                }};
    }
};

}  // namespace

TEST(Bus, OverlapIsRejectedNamingBothOwners) {
    PortBus bus(Space::io, 0x10000);
    Recorder a(16), b(16);
    ASSERT_TRUE(bus.add(Port(0x100), 16, "uart0", a.handler()));
    for (uint16_t base : {0x0f9, 0x100, 0x108, 0x10f}) {
        auto r = bus.add(Port(base), 8, "uart1", b.handler());
        ASSERT_FALSE(r) << base;
        EXPECT_NE(r.error().message.find("uart1"), std::string::npos) << r.error().message;
        EXPECT_NE(r.error().message.find("uart0"), std::string::npos) << r.error().message;
    }
    // Adjacent on both sides is fine.
    EXPECT_TRUE(bus.add(Port(0x0f8), 8, "below", b.handler()));
    EXPECT_TRUE(bus.add(Port(0x110), 8, "above", b.handler()));
}

TEST(Bus, RangesMustFitTheAddressSpace) {
    PortBus bus(Space::io, 0x10000);
    Recorder a(16);
    EXPECT_FALSE(bus.add(Port(0xfff8), 16, "x", a.handler()));
    EXPECT_FALSE(bus.add(Port(0x10), 0, "x", a.handler()));
    MmioBus mmio(Space::mmio, 0);
    EXPECT_FALSE(mmio.add(Gpa(~0ull - 4), 16, "wrap", a.handler()));
    // A range must end below 2^64 (its exclusive end must be representable).
    EXPECT_FALSE(mmio.add(Gpa(0xffff'ffff'ffff'f000ull), 0x1000, "top", a.handler()));
    EXPECT_TRUE(mmio.add(Gpa(0xffff'ffff'ffff'e000ull), 0x1000, "top", a.handler()));
}

TEST(Bus, DispatchGivesOffsetFromRangeBase) {
    MmioBus bus(Space::mmio, 0);
    Recorder dev(0x1000);
    ASSERT_TRUE(bus.add(Gpa(0xfebf'0000), 0x1000, "dev", dev.handler()));
    bus.write(Gpa(0xfebf'0010), 4, 0xdeadbeef);
    bus.write(Gpa(0xfebf'0020), 8, 0x1122334455667788ull);
    EXPECT_EQ(bus.read(Gpa(0xfebf'0010), 4), 0xdeadbeefu);
    EXPECT_EQ(bus.read(Gpa(0xfebf'0012), 2), 0xdeadu);
    EXPECT_EQ(bus.read(Gpa(0xfebf'0020), 8), 0x1122334455667788ull);
    EXPECT_EQ(bus.read(Gpa(0xfebf'0027), 1), 0x11u);
    ASSERT_GE(dev.log.size(), 2u);
    EXPECT_EQ(dev.log[0], std::make_tuple('W', uint64_t(0x10), 4u, uint64_t(0xdeadbeef)));
}

TEST(Bus, UnassignedReadsAllOnesAndWritesAreDroppedAndCounted) {
    PortBus ports(Space::io, 0x10000);
    EXPECT_EQ(ports.read(Port(0x5555), 1), 0xffu);
    EXPECT_EQ(ports.read(Port(0x5555), 2), 0xffffu);
    EXPECT_EQ(ports.read(Port(0x5555), 4), 0xffff'ffffu);
    ports.write(Port(0x5555), 4, 0);
    EXPECT_EQ(ports.unassigned_reads(), 3u);
    EXPECT_EQ(ports.dropped_writes(), 1u);
    MmioBus mmio(Space::mmio, 0);
    EXPECT_EQ(mmio.read(Gpa(0xe000'0000), 8), ~0ull);
}

TEST(Bus, StraddlingAccessIsSplitIntoBytesEachRoutedToItsOwner) {
    PortBus bus(Space::io, 0x10000);
    Recorder a(4), b(4);
    ASSERT_TRUE(bus.add(Port(0x100), 2, "a", a.handler()));
    ASSERT_TRUE(bus.add(Port(0x102), 2, "b", b.handler()));
    bus.write(Port(0x101), 2, 0xbbaa);  // one byte to a, one to b
    EXPECT_EQ(a.bytes[1], 0xaa);
    EXPECT_EQ(b.bytes[0], 0xbb);
    // A read over a, b and unassigned 0x104: unassigned bytes read 0xff.
    EXPECT_EQ(bus.read(Port(0x103), 2), 0xff00u);
    EXPECT_EQ(bus.read(Port(0x100), 4), 0x00bbaa00u);
    // Port space ends at 0xffff: bytes beyond it read 0xff and are not wrapped to port 0.
    Recorder top(1);
    ASSERT_TRUE(bus.add(Port(0xffff), 1, "top", top.handler()));
    top.bytes[0] = 0x12;
    EXPECT_EQ(bus.read(Port(0xffff), 2), 0xff12u);
}

TEST(Bus, PartlyUnassignedAccessIsSplit) {
    MmioBus bus(Space::mmio, 0);
    Recorder a(4);
    ASSERT_TRUE(bus.add(Gpa(0x1002), 2, "a", a.handler()));
    a.bytes = {0x11, 0x22, 0, 0};
    EXPECT_EQ(bus.read(Gpa(0x1000), 4), 0x2211ffffu);
}

TEST(Bus, RemoveReturnsRangeToUnassigned) {
    PortBus bus(Space::io, 0x10000);
    Recorder a(4);
    auto id = bus.add(Port(0x200), 4, "a", a.handler());
    ASSERT_TRUE(id);
    a.bytes[0] = 7;
    EXPECT_EQ(bus.read(Port(0x200), 1), 7u);
    EXPECT_TRUE(bus.remove(*id));
    EXPECT_FALSE(bus.remove(*id));
    EXPECT_EQ(bus.read(Port(0x200), 1), 0xffu);
    EXPECT_TRUE(bus.add(Port(0x200), 4, "b", a.handler()));
}

// kvmtool's deferred removal: a handler that unregisters itself (or another range) keeps
// running on valid state and the bus stays consistent.
TEST(Bus, UnregisterDuringDispatchIsSafe) {
    MmioBus bus(Space::mmio, 0);
    RangeId self_id = 0, other_id = 0;
    std::string captured = "still alive";
    int calls = 0;
    auto self = bus.add(Gpa(0x1000), 0x100, "self",
                        {[&](uint64_t, unsigned) -> uint64_t {
                             ++calls;
                             EXPECT_TRUE(bus.remove(self_id));
                             EXPECT_TRUE(bus.remove(other_id));
                             // The lambda (and what it captured) must still be valid here.
                             return captured.size();
                         },
                         [](uint64_t, unsigned, uint64_t) {}});
    ASSERT_TRUE(self);
    self_id = *self;
    auto other = bus.add(
        Gpa(0x2000), 0x100, "other",
        {[](uint64_t, unsigned) -> uint64_t { return 5; }, [](uint64_t, unsigned, uint64_t) {}});
    ASSERT_TRUE(other);
    other_id = *other;
    EXPECT_EQ(bus.read(Gpa(0x1000), 4), captured.size());
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(bus.read(Gpa(0x1000), 4), 0xffff'ffffu);
    EXPECT_EQ(bus.read(Gpa(0x2000), 4), 0xffff'ffffu);
    EXPECT_TRUE(bus.ranges().empty());
}

TEST(Bus, HandlerMayRegisterNewRangesDuringDispatch) {
    MmioBus bus(Space::mmio, 0);
    Recorder late(16);
    ASSERT_TRUE(bus.add(Gpa(0x1000), 0x10, "doorbell",
                        {[](uint64_t, unsigned) -> uint64_t { return 0; },
                         [&](uint64_t, unsigned, uint64_t v) {
                             EXPECT_TRUE(bus.add(Gpa(v), 0x10, "late", late.handler()));
                         }}));
    bus.write(Gpa(0x1000), 8, 0x5000);
    bus.write(Gpa(0x5004), 4, 0xabcd);
    EXPECT_EQ(late.bytes[4], 0xcd);
}

TEST(Bus, TracerSeesEveryAccessWithOwner) {
    PortBus bus(Space::io, 0x10000);
    Recorder a(4);
    ASSERT_TRUE(bus.add(Port(0x300), 4, "dev0", a.handler()));
    std::vector<BusAccess> seen;
    std::vector<std::string> owners;
    bus.set_tracer([&](const BusAccess& acc) {
        seen.push_back(acc);
        owners.emplace_back(acc.owner);
    });
    bus.write(Port(0x300), 2, 0x1234);
    (void)bus.read(Port(0x300), 2);
    (void)bus.read(Port(0x400), 1);
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_TRUE(seen[0].is_write);
    EXPECT_EQ(seen[0].value, 0x1234u);
    EXPECT_EQ(owners[0], "dev0");
    EXPECT_EQ(seen[1].value, 0x1234u);
    EXPECT_EQ(owners[2], "");
    EXPECT_EQ(seen[2].value, 0xffu);
}

TEST(Bus, TracerSeesTheRangeHitAndTheTimeTheHandlerTook) {
    MmioBus bus(Space::mmio, 0);
    std::chrono::steady_clock::time_point in_handler;
    ASSERT_TRUE(bus.add(Gpa(0x5000), 0x100, "slow",
                        {[&](uint64_t, unsigned) -> uint64_t {
                             in_handler = std::chrono::steady_clock::now();
                             std::this_thread::sleep_for(std::chrono::milliseconds(1));
                             return 7;
                         },
                         [](uint64_t, unsigned, uint64_t) {}}));
    std::vector<BusAccess> seen;
    bus.set_tracer([&](const BusAccess& acc) { seen.push_back(acc); });
    EXPECT_EQ(bus.read(Gpa(0x5010), 4), 7u);
    bus.write(Gpa(0x9000), 4, 1);  // unassigned
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].range_base, 0x5000u);
    EXPECT_EQ(seen[0].range_length, 0x100u);
    EXPECT_LE(seen[0].start, in_handler);
    EXPECT_GE(seen[0].duration, std::chrono::milliseconds(1));
    EXPECT_EQ(seen[1].range_length, 0u);
    EXPECT_EQ(seen[1].duration.count(), 0);
}

TEST(Bus, ManyRangesLookUpCorrectly) {
    MmioBus bus(Space::mmio, 0);
    std::map<uint64_t, int> expect;
    std::vector<std::unique_ptr<int>> ids;
    for (int i = 0; i < 2000; ++i) {
        uint64_t base = 0x1'0000'0000ull + uint64_t(i) * 0x3000;
        ASSERT_TRUE(bus.add(Gpa(base), 0x1000, "d" + std::to_string(i),
                            {[i](uint64_t, unsigned) -> uint64_t { return uint64_t(i); },
                             [](uint64_t, unsigned, uint64_t) {}}));
    }
    for (int i = 0; i < 2000; i += 37) {
        uint64_t base = 0x1'0000'0000ull + uint64_t(i) * 0x3000;
        EXPECT_EQ(bus.read(Gpa(base + 0xffc), 4), uint64_t(i));
        EXPECT_EQ(bus.read(Gpa(base + 0x1000), 4), 0xffff'ffffu);  // the gap
    }
}
