// Pit8254 against a manual clock: time only moves when a test moves it.
#include "vm/pit.hpp"

#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "vm/bus.hpp"

namespace potemkin::vm {
namespace {

// A TimerService whose clock the test advances. advance() walks time forward firing each due
// timer at its own deadline (a punctual VM); jump() moves the clock first and fires what is
// due afterwards (a VM that was late).
class FakeTimers final : public TimerService {
  public:
    Clock::time_point now() const override { return now_; }
    TimerId schedule(Clock::time_point when, std::function<void()> cb) override {
        const TimerId id = next_++;
        timers_.emplace(id, Entry{when, std::move(cb)});
        return id;
    }
    void cancel(TimerId id) override { timers_.erase(id); }

    void advance(Clock::duration d) {
        const auto target = now_ + d;
        while (auto id = earliest(target)) {
            now_ = std::max(now_, timers_.at(*id).when);
            fire(*id);
        }
        now_ = target;
    }
    void jump(Clock::duration d) {
        now_ += d;
        while (auto id = earliest(now_)) fire(*id);
    }
    size_t pending() const { return timers_.size(); }
    // The deadline of the only pending timer.
    Clock::time_point deadline() const { return timers_.begin()->second.when; }

  private:
    struct Entry {
        Clock::time_point when;
        std::function<void()> cb;
    };
    std::optional<TimerId> earliest(Clock::time_point limit) const {
        std::optional<TimerId> best;
        for (const auto& [id, e] : timers_)
            if (e.when <= limit && (!best || e.when < timers_.at(*best).when)) best = id;
        return best;
    }
    void fire(TimerId id) {
        auto cb = std::move(timers_.at(id).cb);
        timers_.erase(id);
        cb();
    }

    Clock::time_point now_{std::chrono::seconds(1000)};
    std::map<TimerId, Entry> timers_;
    TimerId next_ = 1;
};

class PitTest : public ::testing::Test {
  protected:
    // Channel 0, lobyte/hibyte, the given mode, then the count.
    void program(uint8_t mode, uint16_t count, unsigned channel = 0) {
        pit.io_write(0x43, static_cast<uint8_t>((channel << 6) | 0x30 | (mode << 1)));
        pit.io_write(static_cast<uint16_t>(0x40 + channel), static_cast<uint8_t>(count));
        pit.io_write(static_cast<uint16_t>(0x40 + channel), static_cast<uint8_t>(count >> 8));
    }
    uint16_t read16(unsigned channel = 0) {
        const uint16_t lo = pit.io_read(static_cast<uint16_t>(0x40 + channel));
        const uint16_t hi = pit.io_read(static_cast<uint16_t>(0x40 + channel));
        return static_cast<uint16_t>(lo | (hi << 8));
    }
    int rising_edges() const {
        int n = 0;
        for (size_t i = 0; i < events.size(); ++i)
            if (events[i] && (i == 0 || !events[i - 1])) ++n;
        return n;
    }
    static Clock::duration ticks(uint64_t n) { return Pit8254::to_duration(n); }

    FakeTimers timers;
    std::vector<bool> events;
    Pit8254 pit{timers, [this](bool level) { events.push_back(level); }};
};

TEST(PitClock, TickConversionsRoundTrip) {
    EXPECT_EQ(Pit8254::to_ticks(std::chrono::seconds(1)), Pit8254::kInputHz);
    EXPECT_EQ(Pit8254::to_ticks(std::chrono::hours(5)), 5 * 3600 * Pit8254::kInputHz);
    for (uint64_t t : {1ull, 2ull, 11932ull, 65536ull, 1193183ull, 123456789ull})
        EXPECT_EQ(Pit8254::to_ticks(Pit8254::to_duration(t)), t) << t;
    // to_duration rounds up: one tick less would not reach the tick.
    EXPECT_EQ(Pit8254::to_ticks(Pit8254::to_duration(100) - std::chrono::nanoseconds(1)), 99u);
}

TEST_F(PitTest, Mode2PulsesOncePerPeriod) {
    program(2, 11932);  // ~100 Hz
    EXPECT_TRUE(events.empty());
    ASSERT_EQ(timers.pending(), 1u);
    timers.advance(ticks(11932) - std::chrono::nanoseconds(1000));
    EXPECT_TRUE(events.empty());
    timers.advance(std::chrono::nanoseconds(1000));
    EXPECT_EQ(events, (std::vector<bool>{true, false}));  // a pulse: rising edge, back low
    timers.advance(ticks(5 * 11932));
    EXPECT_EQ(rising_edges(), 6);
    EXPECT_EQ(pit.coalesced_periods(), 0u);
    EXPECT_FALSE(events.back());
}

TEST_F(PitTest, Mode3PulsesOncePerPeriod) {
    program(3, 1000);
    timers.advance(ticks(10 * 1000));
    EXPECT_EQ(rising_edges(), 10);
}

TEST_F(PitTest, AliasModes6And7AreModes2And3) {
    program(6, 500);
    timers.advance(ticks(2000));
    EXPECT_EQ(rising_edges(), 4);
    pit.io_write(0x43, 0xc2);                     // read-back status of channel 0
    EXPECT_EQ(pit.io_read(0x40) & 0x0e, 6 << 1);  // status reports the mode as written
}

TEST_F(PitTest, LateVmGetsOneCoalescedPulseAndStaysOnTheGrid) {
    const auto start = timers.now();
    program(2, 1000);
    timers.jump(ticks(5500));  // 5.5 periods late
    EXPECT_EQ(rising_edges(), 1);
    EXPECT_EQ(pit.coalesced_periods(), 4u);
    ASSERT_EQ(timers.pending(), 1u);
    EXPECT_EQ(timers.deadline(), start + ticks(6000));  // the grid, not now + period
    timers.advance(ticks(500));
    EXPECT_EQ(rising_edges(), 2);
}

TEST_F(PitTest, Mode0RaisesTheLineOnceAtTerminalCount) {
    program(0, 1000);
    EXPECT_TRUE(events.empty());  // the line was already low
    timers.advance(ticks(999));
    EXPECT_TRUE(events.empty());
    timers.advance(ticks(1));
    EXPECT_EQ(events, (std::vector<bool>{true}));  // and it stays high
    EXPECT_EQ(timers.pending(), 0u);
    timers.advance(ticks(100000));
    EXPECT_EQ(events.size(), 1u);
    pit.io_write(0x43, 0x30);  // a new control word drops OUT
    EXPECT_EQ(events, (std::vector<bool>{true, false}));
}

TEST_F(PitTest, Mode0NewCountRestarts) {
    program(0, 1000);
    timers.advance(ticks(600));
    pit.io_write(0x40, 0xd0);  // first byte: counting stops
    EXPECT_EQ(timers.pending(), 0u);
    pit.io_write(0x40, 0x07);  // 2000
    timers.advance(ticks(1999));
    EXPECT_TRUE(events.empty());
    timers.advance(ticks(1));
    EXPECT_EQ(events, (std::vector<bool>{true}));
}

TEST_F(PitTest, Mode0CounterWrapsAfterTerminalCount) {
    program(0, 100);
    timers.advance(ticks(101));
    EXPECT_EQ(read16(), 0xffff);
}

TEST_F(PitTest, ModesWithoutGateRunAsMode0) {
    program(4, 300);
    timers.advance(ticks(300));
    EXPECT_EQ(events, (std::vector<bool>{true}));
    EXPECT_EQ(timers.pending(), 0u);
}

TEST_F(PitTest, ReloadZeroMeans65536) {
    const auto start = timers.now();
    program(2, 0);
    EXPECT_EQ(timers.deadline(), start + ticks(65536));
    EXPECT_EQ(read16(), 0);  // 65536 reads as 0
    timers.advance(ticks(1));
    EXPECT_EQ(read16(), 65535);
}

TEST_F(PitTest, CounterReadsFollowTime) {
    program(2, 1000);
    EXPECT_EQ(read16(), 1000);
    timers.advance(ticks(300));
    EXPECT_EQ(read16(), 700);
    timers.advance(ticks(699));
    EXPECT_EQ(read16(), 1);
    timers.advance(ticks(1));
    EXPECT_EQ(read16(), 1000);  // reloaded
}

TEST_F(PitTest, Mode3CountsDownByTwo) {
    program(3, 1000);
    timers.advance(ticks(100));
    EXPECT_EQ(read16(), 800);
    timers.advance(ticks(500));  // second half-period
    EXPECT_EQ(read16(), 800);
}

TEST_F(PitTest, LatchFreezesTheCountUntilRead) {
    program(2, 1000);
    timers.advance(ticks(100));
    pit.io_write(0x43, 0x00);  // latch channel 0
    timers.advance(ticks(200));
    pit.io_write(0x43, 0x00);  // a second latch before reading is ignored
    EXPECT_EQ(read16(), 900);
    EXPECT_EQ(read16(), 700);  // the latch was released: live again
}

TEST_F(PitTest, LatchedBytesSurviveTimePassingBetweenReads) {
    program(2, 0x1234);
    pit.io_write(0x43, 0x00);
    EXPECT_EQ(pit.io_read(0x40), 0x34);
    timers.advance(ticks(0x100));
    EXPECT_EQ(pit.io_read(0x40), 0x12);  // the latch's high byte, not the live count
    EXPECT_EQ(read16(), 0x1134);
}

TEST_F(PitTest, LobyteAndHibyteAccessModes) {
    const auto start = timers.now();
    pit.io_write(0x43, 0x14);  // channel 0, lobyte only, mode 2
    pit.io_write(0x40, 100);
    EXPECT_EQ(timers.deadline(), start + ticks(100));
    EXPECT_EQ(pit.io_read(0x40), 100);
    EXPECT_EQ(pit.io_read(0x40), 100);  // no toggle in lobyte mode
    pit.io_write(0x43, 0x24);           // hibyte only
    pit.io_write(0x40, 2);
    EXPECT_EQ(timers.deadline(), start + ticks(512));
    EXPECT_EQ(pit.io_read(0x40), 2);
}

TEST_F(PitTest, ReadBackLatchesStatusThenCount) {
    program(2, 1000);
    timers.advance(ticks(250));
    pit.io_write(0x43, 0xc2);  // read-back: count and status, channel 0
    // OUT high, count loaded, lobyte/hibyte, mode 2, binary.
    EXPECT_EQ(pit.io_read(0x40), 0x80 | 0x30 | 0x04);
    timers.advance(ticks(100));
    EXPECT_EQ(read16(), 750);
    EXPECT_EQ(read16(), 650);
}

TEST_F(PitTest, ReadBackStatusShowsNullCountBeforeTheCountIsWritten) {
    pit.io_write(0x43, 0x70);                   // channel 1, lohi, mode 0
    pit.io_write(0x43, 0xe4);                   // read-back status only, channel 1
    EXPECT_EQ(pit.io_read(0x41), 0x40 | 0x30);  // OUT low (mode 0), null count
}

TEST_F(PitTest, Channel2IsProgrammableButDrivesNothing) {
    program(2, 500, 2);
    EXPECT_EQ(timers.pending(), 0u);
    timers.advance(ticks(123));
    EXPECT_EQ(read16(2), 377);
    timers.advance(ticks(10000));
    EXPECT_TRUE(events.empty());
}

TEST_F(PitTest, Mode2NewCountTakesEffectAtTheNextPeriod) {
    const auto start = timers.now();
    program(2, 1000);
    timers.advance(ticks(400));
    pit.io_write(0x40, 0xf4);  // 500
    pit.io_write(0x40, 0x01);
    EXPECT_EQ(read16(), 600);  // the old period continues
    timers.advance(ticks(600));
    EXPECT_EQ(rising_edges(), 1);
    EXPECT_EQ(read16(), 500);
    // start + 1000 ticks + 500 ticks, each rounded up to a nanosecond on its own.
    const auto off = timers.deadline() - (start + ticks(1500));
    EXPECT_LE(std::chrono::abs(off), std::chrono::nanoseconds(2));
    timers.advance(ticks(1000));
    EXPECT_EQ(rising_edges(), 3);
}

TEST_F(PitTest, ControlWordStopsChannel0) {
    program(2, 1000);
    pit.io_write(0x43, 0x34);
    EXPECT_EQ(timers.pending(), 0u);
    timers.advance(ticks(5000));
    EXPECT_TRUE(events.empty());
}

TEST_F(PitTest, DestructionCancelsTheTimer) {
    {
        Pit8254 local(timers, [](bool) {});
        local.io_write(0x43, 0x34);
        local.io_write(0x40, 0x00);
        local.io_write(0x40, 0x10);
        EXPECT_EQ(timers.pending(), 1u);
    }
    EXPECT_EQ(timers.pending(), 0u);
}

TEST_F(PitTest, PortsThroughThePortBus) {
    PortBus bus(Space::io, 1u << 16);
    ASSERT_TRUE(pit.attach(bus, "pit"));
    EXPECT_EQ(bus.find(Port(0x43))->owner, "pit");
    bus.write(Port(0x43), 1, 0x34);
    bus.write(Port(0x40), 1, 0xe8);  // 1000
    bus.write(Port(0x40), 1, 0x03);
    timers.advance(ticks(10));
    EXPECT_EQ(bus.read(Port(0x40), 1), 0xdeu);  // 990
    EXPECT_EQ(bus.read(Port(0x40), 1), 0x03u);
    EXPECT_EQ(bus.read(Port(0x43), 1), 0xffu);  // write-only
    timers.advance(ticks(990));
    EXPECT_EQ(rising_edges(), 1);
}

}  // namespace
}  // namespace potemkin::vm
