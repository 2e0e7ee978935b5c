// potemkin's vfio-user fast path (docs/fast-path.md) between the real client and real
// `potemkin serve` processes: negotiation both ways (on, off in the URL, not offered by the
// server, a server that never polls), posted writes ordered before the reads behind them, and a
// server killed while the client waits for an answer.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <future>
#include <thread>

#include "hostdev/host_device.hpp"
#include "server_process.hpp"
#include "vfio_user/client.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using namespace std::chrono_literals;

namespace {

class Events final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no guest RAM"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override {
        return fail("no guest RAM");
    }
    void disconnected(std::string_view why) override { gone.emplace_back(why); }
    void reconnected() override { ++back; }
    std::vector<std::string> gone;
    int back = 0;
};

std::string sock_path(const char* name) {
    return "/tmp/potemkin-fp-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

std::unique_ptr<hostdev::HostDevice> open_client(const std::string& url, Events& ev) {
    hostdev::TransportRegistry r;
    EXPECT_TRUE(vfio_user::register_vfio_user_transport(r));
    hostdev::OpenContext ctx{&ev};
    auto d = r.open(url, ctx);
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
}

vfio_user::VfioUserStats stats_of(hostdev::HostDevice& d) {
    auto* c = dynamic_cast<vfio_user::VfioUserClient*>(&d);
    EXPECT_NE(c, nullptr);
    return c ? c->stats() : vfio_user::VfioUserStats{};
}

uint32_t read32(hostdev::HostDevice& d, uint32_t region, uint64_t offset) {
    std::array<uint8_t, 4> b{};
    auto r = d.region_read(region, offset, b);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}

void write32(hostdev::HostDevice& d, uint32_t region, uint64_t offset, uint32_t v) {
    const std::array<uint8_t, 4> b{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                                   static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
    auto r = d.region_write(region, offset, b);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
}

// edu's liveness register (BAR0 0x04) reads back the inverse of what was written last.
constexpr uint64_t kLiveness = 0x04;

// The accesses a client made went through the shared queue, and the device behaved.
void exercise_edu(hostdev::HostDevice& d) {
    for (uint32_t v : {0x12345678u, 0u, 0xdeadbeefu}) {
        write32(d, 0, kLiveness, v);
        EXPECT_EQ(read32(d, 0, kLiveness), ~v);
    }
    EXPECT_EQ(read32(d, hostdev::kConfigRegion, 0), 0x11e81234u);  // edu's vendor and device
}

TEST(VfioUserFastPath, IsAgreedAndCarriesTheRegionAccesses) {
    const std::string sock = sock_path("on");
    ServerProcess server(sock);
    server.set_args({"-v"});
    server.set_log(sock + ".log");
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock, ev);
    ASSERT_NE(d, nullptr);
    EXPECT_TRUE(stats_of(*d).fast_path);
    exercise_edu(*d);
    const auto st = stats_of(*d);
    EXPECT_GE(st.fast_path_accesses, 7u);
    EXPECT_EQ(st.ioeventfds, 0u);  // writes go through the queue instead
    d->close();
    EXPECT_NE(server.log().find("fast path agreed"), std::string::npos) << server.log();
}

TEST(VfioUserFastPath, OffInTheUrlMeansPlainVfioUser) {
    const std::string sock = sock_path("url-off");
    ServerProcess server(sock);
    server.set_args({"-v"});
    server.set_log(sock + ".log");
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock + "?fastpath=0", ev);
    ASSERT_NE(d, nullptr);
    EXPECT_FALSE(stats_of(*d).fast_path);
    exercise_edu(*d);
    EXPECT_EQ(stats_of(*d).fast_path_accesses, 0u);
    d->close();
    EXPECT_EQ(server.log().find("fast path agreed"), std::string::npos) << server.log();
}

TEST(VfioUserFastPath, BadUrlValueIsNamed) {
    Events ev;
    hostdev::TransportRegistry r;
    ASSERT_TRUE(vfio_user::register_vfio_user_transport(r));
    hostdev::OpenContext ctx{&ev};
    auto d = r.open("vfio-user:/nonexistent.sock?fastpath=2", ctx);
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().message.find("fastpath='2'"), std::string::npos) << d.error().message;
}

TEST(VfioUserFastPath, AServerThatDoesNotOfferItGetsPlainVfioUser) {
    const std::string sock = sock_path("server-off");
    ServerProcess server(sock);
    server.set_args({"--no-fast-path"});
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock, ev);
    ASSERT_NE(d, nullptr);
    EXPECT_FALSE(stats_of(*d).fast_path);
    exercise_edu(*d);
    EXPECT_EQ(stats_of(*d).fast_path_accesses, 0u);
}

// --poll-us 0: the server sleeps on the kick eventfd after every access; a client that finds
// it asleep wakes it.
TEST(VfioUserFastPath, AServerThatNeverPollsIsWokenByTheClient) {
    const std::string sock = sock_path("poll0");
    ServerProcess server(sock);
    server.set_args({"--poll-us", "0"});
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock, ev);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(stats_of(*d).fast_path);
    for (uint32_t i = 0; i < 20; ++i) {
        std::this_thread::sleep_for(2ms);  // time to fall asleep
        write32(*d, 0, kLiveness, i);
        EXPECT_EQ(read32(*d, 0, kLiveness), ~i);
    }
    const auto st = stats_of(*d);
    EXPECT_GE(st.fast_path_accesses, 40u);
    EXPECT_GE(st.fast_path_kicks, 1u);
}

// multibar (mmap=0, so BAR writes are posted): BAR1 0x010 counts the writes to 0x004. A burst
// of posted writes and then a read: the read sees every write (PCI: posted writes before a
// read). A 64-byte read goes by message: it too sees the posted scratch writes queued before.
TEST(VfioUserFastPath, PostedWritesAreAppliedBeforeTheReadsBehindThem) {
    const std::string sock = sock_path("order");
    ServerProcess server(sock, "multibar");
    server.set_params({"mmap=0"});
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock, ev);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(stats_of(*d).fast_path);
    const uint64_t posted_before = stats_of(*d).posted.sent;
    uint32_t expected = read32(*d, 1, 0x010);
    for (uint32_t iter = 0; iter < 300; ++iter) {
        const uint32_t burst = 1 + (iter * 7) % 40;  // up to more than the queue holds
        for (uint32_t i = 0; i < burst; ++i) write32(*d, 1, 0x004, i);
        expected += burst;
        ASSERT_EQ(read32(*d, 1, 0x010), expected) << "iteration " << iter;
        if (iter % 50 == 0) {
            for (uint32_t w = 0; w < 16; ++w) write32(*d, 1, 0x100 + 4 * w, iter * 100 + w);
            std::array<uint8_t, 64> big{};
            ASSERT_TRUE(d->region_read(1, 0x100, big));
            for (uint32_t w = 0; w < 16; ++w)
                EXPECT_EQ(uint32_t{big[4 * w]} | uint32_t{big[4 * w + 1]} << 8,
                          (iter * 100 + w) & 0xffff);
        }
    }
    const auto st = stats_of(*d);
    EXPECT_GT(st.posted.sent - posted_before, 300u);  // the writes were posted, not waited for
    EXPECT_EQ(st.posted.send_failed + st.posted.dropped, 0u);
}

// The server stops (SIGSTOP) with an access queued, then dies (SIGKILL) while the client
// waits: the access fails as "gone" (a hang-up, not the 5 s reply timeout), the client
// reconnects to a new server and takes the fast path again.
TEST(VfioUserFastPath, AServerKilledWhileTheClientWaitsIsLostAndReconnected) {
    const std::string sock = sock_path("kill");
    ServerProcess server(sock);
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock + "?timeout_ms=5000", ev);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(stats_of(*d).fast_path);
    exercise_edu(*d);
    server.signal(SIGSTOP);
    auto pending = std::async(std::launch::async, [&] {
        std::array<uint8_t, 4> b{};
        return d->region_read(0, kLiveness, b);
    });
    std::this_thread::sleep_for(50ms);  // the client is waiting (spinning, then blocked)
    server.kill_hard();
    auto r = pending.get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, ENOTCONN) << r.error().message;
    ASSERT_EQ(ev.gone.size(), 1u);
    EXPECT_NE(ev.gone[0].find("reconnecting"), std::string::npos) << ev.gone[0];

    ASSERT_TRUE(server.start());
    auto* c = dynamic_cast<vfio_user::VfioUserClient*>(d.get());
    ASSERT_NE(c, nullptr);
    const auto end = std::chrono::steady_clock::now() + 5s;
    bool back = false;
    while (!back && std::chrono::steady_clock::now() < end) {
        // Each call runs the inbox (where the reconnection happens); it fails until then.
        std::array<uint8_t, 4> b{};
        back = d->region_read(hostdev::kConfigRegion, 0, b) && c->reconnects() == 1;
        if (!back) std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(c->reconnects(), 1u);
    EXPECT_EQ(ev.back, 1);
    EXPECT_TRUE(stats_of(*d).fast_path);  // agreed again on the new connection
    exercise_edu(*d);
}

// A server that stops answering (SIGSTOP) without hanging up: the access fails at the reply
// deadline (timeout_ms), not later, and the connection is given up as for a missing reply.
TEST(VfioUserFastPath, AServerThatStopsAnsweringFailsTheAccessAtTheDeadline) {
    const std::string sock = sock_path("stopped");
    ServerProcess server(sock);
    ASSERT_TRUE(server.start());
    Events ev;
    auto d = open_client("vfio-user:" + sock + "?timeout_ms=200&reconnect=0", ev);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(stats_of(*d).fast_path);
    exercise_edu(*d);
    server.signal(SIGSTOP);
    std::array<uint8_t, 4> b{};
    auto r = d->region_read(0, kLiveness, b);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, ETIMEDOUT) << r.error().message;
    EXPECT_NE(r.error().message.find("no fast-path answer within 200 ms"), std::string::npos)
        << r.error().message;
    EXPECT_GE(stats_of(*d).fast_path_blocks, 1u);   // it blocked rather than spun the while
    EXPECT_FALSE(d->region_read(0, kLiveness, b));  // lost (reconnect=0)
    server.kill_hard();
}

}  // namespace
