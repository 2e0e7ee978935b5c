// sdk::ServeLoop, WaitSet and ResampleFd: the accept/stop loop both device servers share.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "sdk/serve_loop.hpp"
#include "unix_socket.hpp"

using namespace potemkin;
using sdk::ServeLoop;
using sdk::WaitSet;

namespace {

std::string temp_path(const char* name) {
    return "/tmp/potemkin-serve-loop-" + std::to_string(::getpid()) + "-" + name;
}

ServeLoop::Settings at_path(const std::string& path) {
    ServeLoop::Settings s;
    s.socket_path = path;
    s.label = "test";
    return s;
}

UniqueFd connect_to(const std::string& path) {
    return test_support::connect_unix(path);
}

// A loop over one end of a socketpair of `type`; the other end in `peer`.
Result<std::unique_ptr<ServeLoop>> loop_on_socketpair(int type, UniqueFd& peer) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv), 0);
    peer.reset(sv[1]);
    ServeLoop::Settings s;
    s.fd = sv[0];
    return ServeLoop::create(s);
}

}  // namespace

TEST(ServeLoop, AcceptsClientsOneAtATimeUntilStopped) {
    const std::string path = temp_path("accept");
    auto loop = ServeLoop::create(at_path(path));
    ASSERT_TRUE(loop) << loop.error().message;
    EXPECT_TRUE((*loop)->listening());
    int served = 0;
    std::thread client([&] {
        UniqueFd a = connect_to(path);
        UniqueFd b = connect_to(path);
        a.reset();
        b.reset();
    });
    auto r = (*loop)->run([&](UniqueFd conn) -> Result<void> {
        char c;
        EXPECT_EQ(::read(conn.get(), &c, 1), 0);  // the client closed
        if (++served == 2) (*loop)->stop();
        return ok();
    });
    client.join();
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(served, 2);
    EXPECT_TRUE((*loop)->stopped());
    loop->reset();
    struct stat st {};
    EXPECT_NE(::lstat(path.c_str(), &st), 0) << "the socket file is unlinked at the end";
}

TEST(ServeLoop, StaleSocketIsReplacedButOtherFilesAreNot) {
    const std::string path = temp_path("stale");
    auto s = at_path(path);
    s.unlink_on_exit = false;
    {
        auto first = ServeLoop::create(s);
        ASSERT_TRUE(first);
        auto second = ServeLoop::create(s);  // the first one's socket is stale to it
        ASSERT_TRUE(second) << second.error().message;
    }
    s.remove_stale_socket = false;
    EXPECT_FALSE(ServeLoop::create(s));
    ASSERT_EQ(::unlink(path.c_str()), 0);
    std::ofstream(path) << "not a socket";
    auto r = ServeLoop::create(at_path(path));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("not a socket"), std::string::npos) << r.error().message;
    EXPECT_EQ(::unlink(path.c_str()), 0);
}

TEST(ServeLoop, InheritedConnectedSocketIsServedOnce) {
    UniqueFd peer;
    auto loop = loop_on_socketpair(SOCK_STREAM, peer);
    ASSERT_TRUE(loop) << loop.error().message;
    EXPECT_FALSE((*loop)->listening());
    int served = 0;
    auto serve = [&](UniqueFd) -> Result<void> {
        ++served;
        return ok();
    };
    ASSERT_TRUE((*loop)->run(serve));
    ASSERT_TRUE((*loop)->run(serve));
    EXPECT_EQ(served, 1);
}

TEST(ServeLoop, InheritedFdMustBeAStreamSocket) {
    UniqueFd peer;
    auto r = loop_on_socketpair(SOCK_DGRAM, peer);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("stream"), std::string::npos) << r.error().message;
    ServeLoop::Settings e;
    e.fd = ::eventfd(0, EFD_CLOEXEC);
    EXPECT_FALSE(ServeLoop::create(e));
}

TEST(ServeLoop, ConnectionWaitsReportTheSocketTheStopAndTheResampleFd) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    const std::string path = temp_path("waits");
    auto loop = ServeLoop::create(at_path(path));
    ASSERT_TRUE(loop);
    auto waits = (*loop)->connection_waits(a.get());
    ASSERT_TRUE(waits) << waits.error().message;
    ASSERT_EQ(::write(b.get(), "x", 1), 1);
    EXPECT_EQ(*waits->wait(), uint32_t{WaitSet::socket});

    sdk::ResampleFd resample("test");
    resample.attach(&*waits);
    UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const int ev_fd = ev.get();
    resample.set(std::move(ev));
    const uint64_t one = 1;
    ASSERT_EQ(::write(ev_fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
    auto got = waits->wait();
    ASSERT_TRUE(got);
    EXPECT_NE(*got & WaitSet::resample, 0u);
    EXPECT_TRUE(resample.fired());
    EXPECT_FALSE(resample.fired());  // drained
    resample.attach(nullptr);

    (*loop)->stop();
    got = waits->wait();
    ASSERT_TRUE(got);
    EXPECT_NE(*got & WaitSet::stop, 0u);
}

TEST(ServeLoop, ResampleFdThatIsNoEventfdIsDropped) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd peer(sv[1]);
    sdk::ResampleFd resample("test");
    resample.set(UniqueFd(sv[0]));
    peer.reset();  // EOF: readable forever
    EXPECT_FALSE(resample.fired());
    EXPECT_FALSE(resample.installed());
}
