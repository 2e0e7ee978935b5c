// potemkin's vfio-user client against libvfio-user's sample server (samples/server.c, built with
// a power-of-two BAR1 as `server-pow2`), when a build of it is there: set
// POTEMKIN_LIBVFIO_USER_SERVER, or it is looked for at /tmp/libvfio-user/build/samples/; the
// test skips without one. The sample arms a timer with a BAR0 write; when it fires it raises
// INTx and does DMA into the client's mapped regions, directly and by DMA_WRITE/DMA_READ
// messages, while the guest is idle, and exits on any failure ("vfu_sgl_write failed: Protocol
// error" was the failure of a client that did not read its idle socket).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <mutex>
#include <thread>

#include "vfio_user/client.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin {
namespace {

using namespace std::chrono_literals;

// The sample takes one client and exits after it: wait for its socket without connecting.
bool listening(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

std::string sample_server() {
    if (const char* p = std::getenv("POTEMKIN_LIBVFIO_USER_SERVER")) return p;
    return "/tmp/libvfio-user/build/samples/server-pow2";
}

class Ram final : public hostdev::HostDeviceEvents {
  public:
    explicit Ram(vm::GuestMemory& m) : mem(m) {}
    void intx(bool asserted) override {
        if (asserted) ++intx_count;
    }
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t a, std::span<uint8_t> out) override {
        ++dma_reads;
        return mem.read(Gpa(a), out);
    }
    Result<void> dma_write(uint64_t a, std::span<const uint8_t> in) override {
        ++dma_writes;
        return mem.write(Gpa(a), in);
    }
    void disconnected(std::string_view why) override { gone = std::string(why); }
    vm::GuestMemory& mem;
    int intx_count = 0, dma_reads = 0, dma_writes = 0;
    std::string gone;
};

void run_sample(bool twin_socket) {
    const std::string server = sample_server();
    if (::access(server.c_str(), X_OK) != 0) GTEST_SKIP() << "no libvfio-user sample at " << server;
    const std::string sock = "/tmp/potemkin-lvu-" + std::to_string(::getpid()) + ".sock";
    ::unlink(sock.c_str());
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::execl(server.c_str(), server.c_str(), sock.c_str(), nullptr);
        ::_exit(127);
    }
    for (int i = 0; i < 500 && !listening(sock); ++i) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(50ms);  // from bind to listen
    // Two RAM regions: the sample uses the first by message and the second directly.
    auto mem = vm::GuestMemory::create({{Gpa(0), 0x10000}, {Gpa(0x100000), 0x10000}});
    ASSERT_TRUE(mem) << mem.error().message;
    Ram ram(**mem);
    std::mutex mu;
    std::vector<std::function<void()>> posted;
    vfio_user::VfioUserClientSettings s;
    s.socket_path = sock;
    s.events = &ram;
    s.memory = mem->get();
    s.reconnect = false;
    s.twin_socket = twin_socket;
    s.post = [&](std::function<void()> fn) {
        std::lock_guard lk(mu);
        posted.push_back(std::move(fn));
    };
    auto c = vfio_user::VfioUserClient::open(std::move(s));
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ((*c)->stats().twin_socket, twin_socket);

    // Arm the sample's timer: DMA in a second, with the guest idle.
    const int64_t when = static_cast<int64_t>(std::time(nullptr)) + 1;
    std::array<uint8_t, 8> t{};
    std::memcpy(t.data(), &when, sizeof when);
    ASSERT_TRUE((*c)->region_write(0, 0, t));
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < end && (ram.dma_reads < 2 || ram.intx_count == 0)) {
        std::vector<std::function<void()>> work;
        {
            std::lock_guard lk(mu);
            work.swap(posted);
        }
        for (auto& fn : work) fn();
        std::this_thread::sleep_for(2ms);
    }
    EXPECT_EQ(ram.dma_writes, 4) << "four 1 KiB DMA_WRITEs";
    EXPECT_EQ(ram.dma_reads, 2) << "two 2 KiB DMA_READs";
    EXPECT_GE(ram.intx_count, 1);
    // The server is alive and answers the guest's next access.
    std::this_thread::sleep_for(100ms);
    std::array<uint8_t, 8> delta{};
    EXPECT_TRUE((*c)->region_read(0, 0, delta));
    EXPECT_TRUE(ram.gone.empty()) << ram.gone;
    int status = 0;
    EXPECT_EQ(::waitpid(pid, &status, WNOHANG), 0) << "the sample server exited";
    (*c)->close();
    ::kill(pid, SIGTERM);
    ::waitpid(pid, &status, 0);
    ::unlink(sock.c_str());
}

TEST(LibvfioUserSample, DmaWhileTheGuestIsIdleOnTheMainSocket) {
    run_sample(false);
}

TEST(LibvfioUserSample, DmaWhileTheGuestIsIdleOnATwinSocket) {
    run_sample(true);
}

}  // namespace
}  // namespace potemkin
