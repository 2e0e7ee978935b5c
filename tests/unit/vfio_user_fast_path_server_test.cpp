// The fast path's server side (docs/fast-path.md) against a raw client written here: the
// VERSION reply and its fds, accesses through the shared queue reaching the model, a bad access
// answered EINVAL in its slot, and a client that corrupts the queue dropped while the server
// goes on serving the next one. The VfioUserServer runs on a thread, the client is this test.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include "common/eventfd.hpp"
#include "machine/builtins.hpp"
#include "unix_socket.hpp"
#include "vfio_user/fast_path.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/server.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin::vfio_user {
namespace {

namespace fp = fast_path;
using namespace std::chrono_literals;

class FastPathServer : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(machine::register_builtins());
        char tmpl[] = "/tmp/potemkin-fps-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = dir_ + "/edu.sock";
        auto model = sdk::ModelRegistry::builtin().create("edu", {});
        ASSERT_TRUE(model) << model.error().message;
        VfioUserServerSettings s;
        s.socket_path = path_;
        s.io_timeout_ms = 500;
        s.label = "edu";
        s.poll_us = 0;  // every access after a pause needs a kick: the test does it right
        auto server = VfioUserServer::create(std::move(model).value(), s);
        ASSERT_TRUE(server) << server.error().message;
        server_ = std::move(server).value();
        thread_ = std::thread([this] { ok_ = server_->run().has_value(); });
    }
    void TearDown() override {
        if (thread_.joinable()) {
            server_->stop();
            thread_.join();
        }
        EXPECT_TRUE(ok_);
        std::filesystem::remove_all(dir_);
    }

    UniqueFd connect_raw() { return test_support::connect_unix(path_); }

    // A client that asked for the fast path: its socket, area, kick and answer eventfds.
    struct Client {
        UniqueFd sock;
        std::optional<fp::Area> area;
        UniqueFd kick, answer;
    };
    Client negotiate() {
        Client c;
        c.sock = connect_raw();
        Version v;
        v.caps.max_msg_fds = 8;
        v.caps.fast_path_version = fp::kVersion;
        Header h;
        h.msg_id = 1;
        h.cmd = static_cast<uint16_t>(Command::version);
        const auto payload = encode_version(v);
        EXPECT_TRUE(send_message(c.sock.get(), h, std::span<const uint8_t>(payload)));
        RecvOptions o;
        o.timeout_ms = 2000;
        o.max_fds = 8;
        auto reply = recv_message(c.sock.get(), o);
        EXPECT_TRUE(reply) << reply.error().message;
        if (!reply) return c;
        auto peer = decode_version(reply->payload);
        EXPECT_TRUE(peer);
        EXPECT_EQ(peer->caps.fast_path_version, fp::kVersion);
        EXPECT_EQ(peer->caps.fast_path_fd_index, 0u);
        EXPECT_EQ(reply->fds.size(), 3u);
        if (reply->fds.size() != 3) return c;
        auto area = fp::Area::adopt(std::move(reply->fds[0]));
        EXPECT_TRUE(area) << area.error().message;
        if (area) c.area.emplace(std::move(*area));
        c.kick = std::move(reply->fds[1]);
        c.answer = std::move(reply->fds[2]);
        return c;
    }

    // Queues `a` and waits (at most 2 s) for its completion; kicks a sleeping server.
    static Result<fp::Answer> access(Client& c, fp::ClientQueue& q, const fp::Access& a) {
        uint64_t ticket = 0;
        if (q.publish(a, ticket)) POTEMKIN_TRY(signal_eventfd(c.kick.get()));
        const auto end = std::chrono::steady_clock::now() + 2s;
        while (std::chrono::steady_clock::now() < end) {
            POTEMKIN_TRY_ASSIGN(const uint64_t done, q.poll_completed());
            if (done > ticket) return q.answer(ticket, a.size);
            std::this_thread::sleep_for(100us);
        }
        return fail("no completion within 2 s");
    }

    std::string dir_, path_;
    std::unique_ptr<VfioUserServer> server_;
    std::thread thread_;
    std::atomic<bool> ok_{false};
};

fp::Access config_read() {
    fp::Access a;
    a.op = fp::Op::read;
    a.region = 7;  // config space
    a.size = 4;
    return a;
}

TEST_F(FastPathServer, AccessesThroughTheQueueReachTheModelAndBadOnesAreAnsweredEinval) {
    Client c = negotiate();
    ASSERT_TRUE(c.area);
    fp::ClientQueue q(c.area->base());
    auto id = access(c, q, config_read());
    ASSERT_TRUE(id) << id.error().message;
    EXPECT_EQ(id->status, 0);
    EXPECT_EQ(id->data[0], 0x34);  // vendor 0x1234
    EXPECT_EQ(id->data[1], 0x12);

    fp::Access bad = config_read();
    bad.region = 99;
    auto r = access(c, q, bad);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, EINVAL);
    fp::Access past = config_read();
    past.region = 0;
    past.offset = 0x100000;  // past edu's 1 MiB BAR0
    r = access(c, q, past);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, EINVAL);

    // The connection lives on.
    id = access(c, q, config_read());
    ASSERT_TRUE(id);
    EXPECT_EQ(id->status, 0);
    server_->stop();  // its counters are read once its thread is done
    thread_.join();
    EXPECT_EQ(server_->stats().fast_path_connections, 1u);
    EXPECT_EQ(server_->stats().fast_path_accesses, 4u);
    EXPECT_EQ(server_->stats().fast_path_errors, 2u);
}

TEST_F(FastPathServer, AClientThatCorruptsTheQueueIsDroppedAndTheNextOneServed) {
    {
        Client c = negotiate();
        ASSERT_TRUE(c.area);
        // A publish count far ahead of anything the server completed.
        auto* head = reinterpret_cast<uint64_t*>(c.area->base() + fp::kLine);
        std::atomic_ref<uint64_t>(*head).store(1000, std::memory_order_seq_cst);
        ASSERT_TRUE(signal_eventfd(c.kick.get()));
        pollfd p{c.sock.get(), POLLIN, 0};
        ASSERT_EQ(::poll(&p, 1, 2000), 1);
        uint8_t b = 0;
        EXPECT_EQ(::recv(c.sock.get(), &b, 1, 0), 0);  // closed by the server
    }
    Client next = negotiate();
    ASSERT_TRUE(next.area);
    fp::ClientQueue q(next.area->base());
    auto id = access(next, q, config_read());
    ASSERT_TRUE(id) << id.error().message;
    EXPECT_EQ(id->status, 0);
    EXPECT_EQ(id->data[0], 0x34);
}

}  // namespace
}  // namespace potemkin::vfio_user
