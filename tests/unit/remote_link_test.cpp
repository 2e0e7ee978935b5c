// The remote link on its own (hostdev/remote_link.hpp, hostdev/config_log.hpp): the inbox and
// its order, post versus drain at the next call, eventfds, loss reported once, config replay
// order, external-source balance. No transport, no socket.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "common/eventfd.hpp"
#include "hostdev/config_log.hpp"
#include "hostdev/remote_link.hpp"

using namespace potemkin;
using namespace std::chrono_literals;

namespace {

class Events final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool asserted) override { levels.push_back(asserted); }
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return fail("no"); }
    void disconnected(std::string_view why) override { gone.emplace_back(why); }
    void reconnected() override { ++back; }
    std::vector<bool> levels;
    std::vector<std::string> gone;
    int back = 0;
};

// A transport with nothing to watch; restoring succeeds when `reachable`.
class Transport final : public hostdev::RemoteTransport {
  public:
    explicit Transport(hostdev::RemoteLink& link) : link_(link) {}
    Watch connection_watch() override { return {}; }
    void connection_event(const Watch&, short) override {}
    std::function<void()> try_restore() override {
        ++attempts;
        if (!reachable) return {};
        return [this] {
            link_.set_up();
            link_.restored();
        };
    }
    std::atomic<bool> reachable{false};
    std::atomic<int> attempts{0};

  private:
    hostdev::RemoteLink& link_;
};

// The engine thread's post queue, run by hand.
struct Posts {
    std::mutex mu;
    std::vector<std::function<void()>> queued;
    std::function<void(std::function<void()>)> fn() {
        return [this](std::function<void()> f) {
            std::lock_guard lk(mu);
            queued.push_back(std::move(f));
        };
    }
    size_t size() {
        std::lock_guard lk(mu);
        return queued.size();
    }
    void run() {
        std::vector<std::function<void()>> now;
        {
            std::lock_guard lk(mu);
            now.swap(queued);
        }
        for (auto& f : now) f();
    }
};

template <typename F>
bool eventually(F cond) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (cond()) return true;
        std::this_thread::sleep_for(1ms);
    }
    return false;
}

hostdev::RemoteLinkSettings settings(Events& ev) {
    hostdev::RemoteLinkSettings s;
    s.label = "test-link";
    s.events = &ev;
    return s;
}

}  // namespace

TEST(RemoteLink, InboxRunsInTheOrderThingsWereQueued) {
    Events ev;
    hostdev::RemoteLink link(settings(ev));
    auto owner = std::make_shared<int>(0);
    ASSERT_TRUE(link.open(owner));
    std::vector<int> ran;
    std::thread other([&] {
        for (int i = 0; i < 5; ++i) link.queue([&ran, i] { ran.push_back(i); });
    });
    other.join();
    EXPECT_TRUE(ran.empty());  // nothing runs off the engine thread
    link.run_inbox();
    EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4}));
    // Something a handler queues runs in the same drain, after it.
    link.queue([&] {
        link.queue([&] { ran.push_back(6); });
        ran.push_back(5);
    });
    link.run_inbox();
    EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(RemoteLink, WithPostOneDrainIsPostedWithoutItTheNextCallDrains) {
    Events ev;
    Posts posts;
    auto s = settings(ev);
    s.post = posts.fn();
    hostdev::RemoteLink link(s);
    auto owner = std::make_shared<int>(0);
    ASSERT_TRUE(link.open(owner));
    int ran = 0;
    link.queue([&] { ++ran; });
    link.queue([&] { ++ran; });
    EXPECT_EQ(posts.size(), 1u);  // one drain posted for both
    posts.run();
    EXPECT_EQ(ran, 2);
    // A drain posted for a link whose owner is gone does nothing.
    link.queue([&] { ++ran; });
    owner.reset();
    posts.run();
    EXPECT_EQ(ran, 2);

    Events ev2;
    hostdev::RemoteLink unposted(settings(ev2));
    auto owner2 = std::make_shared<int>(0);
    ASSERT_TRUE(unposted.open(owner2));
    int ran2 = 0;
    unposted.queue([&] { ++ran2; });
    EXPECT_EQ(ran2, 0);
    unposted.run_inbox();  // what a HostDevice call starts with
    EXPECT_EQ(ran2, 1);
}

TEST(RemoteLink, AFiredEventfdRunsItsHandlerOncePerSignal) {
    Events ev;
    hostdev::RemoteLink link(settings(ev));
    auto owner = std::make_shared<int>(0);
    ASSERT_TRUE(link.open(owner));
    auto fd = make_eventfd();
    ASSERT_TRUE(fd);
    int fired = 0;
    ASSERT_TRUE(link.watch_eventfd(fd->get(), [&] { ++fired; }));
    link.drain();
    EXPECT_EQ(fired, 0);
    ASSERT_TRUE(signal_eventfd(fd->get()));
    ASSERT_TRUE(signal_eventfd(fd->get()));
    link.drain();  // one drain takes what the eventfd holds right now
    EXPECT_EQ(fired, 1);
    link.drain();
    EXPECT_EQ(fired, 1);
}

TEST(RemoteLink, ThePollThreadPostsWhatTheEventfdsSay) {
    Events ev;
    Posts posts;
    auto s = settings(ev);
    s.post = posts.fn();
    hostdev::RemoteLink link(s);
    Transport t(link);
    auto owner = std::make_shared<int>(0);
    ASSERT_TRUE(link.open(owner));
    auto fd = make_eventfd();
    ASSERT_TRUE(fd);
    ASSERT_TRUE(link.watch_eventfd(fd->get(), [&] { link.assert_intx(); }));
    link.set_up();
    ASSERT_TRUE(link.start(t));
    ASSERT_TRUE(signal_eventfd(fd->get()));
    ASSERT_TRUE(eventually([&] { return posts.size() > 0; }));
    posts.run();
    EXPECT_EQ(ev.levels, (std::vector<bool>{true}));
    link.assert_intx();  // held: no second call for an unchanged level
    EXPECT_EQ(ev.levels, (std::vector<bool>{true}));
    link.close();
}

TEST(RemoteLink, ALossIsReportedOnceAndAgainAfterARestore) {
    Events ev;
    hostdev::RemoteLink link(settings(ev));
    auto owner = std::make_shared<int>(0);
    ASSERT_TRUE(link.open(owner));
    link.set_up();
    link.assert_intx();
    EXPECT_TRUE(link.lost("gone: first", true));
    EXPECT_FALSE(link.lost("gone: second", true));  // down already
    EXPECT_FALSE(link.up());
    link.run_inbox();
    ASSERT_EQ(ev.gone.size(), 1u);
    EXPECT_EQ(ev.gone[0], "gone: first");
    EXPECT_EQ(ev.levels, (std::vector<bool>{true, false}));  // a gone device holds no line
    // A failed attempt to set up again is not a second loss to report.
    link.set_up();
    EXPECT_TRUE(link.lost("setup failed", true));
    link.run_inbox();
    EXPECT_EQ(ev.gone.size(), 1u);
    // After a restore, the next loss is news again.
    link.set_up();
    link.restored();
    EXPECT_EQ(ev.back, 1);
    EXPECT_TRUE(link.lost("gone: third", true));
    link.run_inbox();
    ASSERT_EQ(ev.gone.size(), 2u);
    EXPECT_EQ(ev.gone[1], "gone: third");
    // A loss not to report (the caller reports its own failure) is not.
    link.set_up();
    link.restored();
    EXPECT_TRUE(link.lost("quiet", false));
    link.run_inbox();
    EXPECT_EQ(ev.gone.size(), 2u);
}

TEST(RemoteLink, ExternalSourceIsHeldWhileOpenAndBalancedAtClose) {
    for (const bool restore : {false, true}) {
        Events ev;
        std::atomic<int> sources{0};
        auto s = settings(ev);
        s.external_source = [&](int d) { sources += d; };
        s.restore = restore;
        s.restore_interval = 1ms;
        {
            hostdev::RemoteLink link(s);
            Transport t(link);
            auto owner = std::make_shared<int>(0);
            ASSERT_TRUE(link.open(owner));
            EXPECT_EQ(sources, 0);
            link.set_up();
            ASSERT_TRUE(link.start(t));
            EXPECT_EQ(sources, 1);
            link.lost("gone", true);
            link.run_inbox();
            // Lost for good: a halted guest must not wait for it. Being restored: it may.
            EXPECT_EQ(sources, restore ? 1 : 0) << "restore " << restore;
            if (restore) {
                t.reachable = true;
                ASSERT_TRUE(eventually([&] {
                    link.run_inbox();
                    return ev.back == 1;
                }));
                EXPECT_TRUE(link.up());
                EXPECT_EQ(sources, 1);
            }
            link.close();
            EXPECT_EQ(sources, 0);
            link.close();  // idempotent
            EXPECT_EQ(sources, 0);
        }
        EXPECT_EQ(sources, 0);
    }
}

TEST(RemoteLink, NothingIsDeliveredAfterClose) {
    Events ev;
    hostdev::RemoteLink link(settings(ev));
    auto owner = std::make_shared<int>(0);
    ASSERT_TRUE(link.open(owner));
    int ran = 0;
    link.queue([&] { ++ran; });
    link.close();
    link.drain();
    EXPECT_EQ(ran, 0);
}

TEST(ConfigLog, ReplaysEachWriteInTheOrderTheGuestMadeThem) {
    hostdev::ConfigLog log;
    const uint8_t line[] = {0x0b};
    const uint8_t bar[] = {0x00, 0x10, 0x00, 0xfe};
    const uint8_t command[] = {0x06, 0x00};
    const uint8_t bar_again[] = {0x20};
    log.record(0x3c, line);
    log.record(0x10, bar);
    log.record(0x04, command);
    log.record(0x11, bar_again);  // one byte of the BAR again: it moves after the command
    EXPECT_EQ(log.size(), 7u);
    std::vector<std::pair<uint32_t, std::vector<uint8_t>>> replayed;
    ASSERT_TRUE(log.replay([&](uint32_t off, std::span<const uint8_t> b) -> Result<void> {
        replayed.emplace_back(off, std::vector<uint8_t>(b.begin(), b.end()));
        return ok();
    }));
    const std::vector<std::pair<uint32_t, std::vector<uint8_t>>> want = {
        {0x3c, {0x0b}}, {0x10, {0x00}}, {0x12, {0x00, 0xfe}}, {0x04, {0x06, 0x00}}, {0x11, {0x20}},
    };
    EXPECT_EQ(replayed, want);
}

TEST(ConfigLog, ARunNeverCrossesADwordAndTheFirstErrorStopsTheReplay) {
    hostdev::ConfigLog log;
    const uint8_t six[] = {1, 2, 3, 4, 5, 6};
    log.record(0x42, six);
    std::vector<std::pair<uint32_t, size_t>> runs;
    ASSERT_TRUE(log.replay([&](uint32_t off, std::span<const uint8_t> b) -> Result<void> {
        runs.emplace_back(off, b.size());
        return ok();
    }));
    EXPECT_EQ(runs, (std::vector<std::pair<uint32_t, size_t>>{{0x42, 2}, {0x44, 4}}));
    int calls = 0;
    auto r = log.replay([&](uint32_t, std::span<const uint8_t>) -> Result<void> {
        ++calls;
        return fail("the device refused");
    });
    EXPECT_FALSE(r);
    EXPECT_EQ(calls, 1);
    log.clear();
    EXPECT_TRUE(log.empty());
}
