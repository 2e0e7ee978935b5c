// Fault injection (issue 11, docs/hostile.md): a guest keeps using edu over vfio-user
// (guests/chaos) while the test, with a fixed seed, kills its server with SIGKILL and starts it
// again (sometimes killing it again while the client is still reconnecting), or stops it with
// SIGSTOP for longer than the client's reply timeout and then continues it. After every fault
// the guest must see the device again, it must never read a value that is neither right nor
// all-ones, and the VMM's open file descriptors must not grow.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "guest_runner.hpp"
#include "server_process.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;
using namespace std::chrono_literals;

namespace {

size_t open_fds() {
    size_t n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (d == nullptr) return 0;
    while (::readdir(d) != nullptr) ++n;
    if (::closedir(d) != 0) ADD_FAILURE() << "closedir /proc/self/fd";
    return n;
}

}  // namespace

TEST(FaultInjection, GuestSeesTheDeviceAgainAfterEveryKillAndStop) {
    constexpr unsigned kFaults = 30;
    const std::string sock = "/tmp/potemkin-chaos-" + std::to_string(::getpid()) + ".sock";
    ServerProcess server(sock);
    ASSERT_TRUE(server.start()) << "potemkin serve edu did not come up at " << sock;

    // A short reply timeout, so that a stopped server counts as gone quickly.
    const std::string devices =
        R"(<device class="PCI" id="pci0"/><device class="PCI_FRONT" id="edu0" bus="pci0" )"
        R"(hostdev="vfio-user:)" +
        sock + R"(?timeout_ms=300" slot="3"/>)";
    LiveGuest vm({.guest = "chaos", .devices_xml = devices, .timeout_ms = 240000});
    ASSERT_EQ(vm.error(), "");
    const bool first_up = vm.wait_more("chaos: up", 0, 60s);
    const size_t fds_at_start = open_fds();

    std::mt19937 rng(20261203);
    auto pause_ms = [&](unsigned max) { std::this_thread::sleep_for(1ms * (rng() % (max + 1))); };
    unsigned kills = 0, double_kills = 0, stops = 0;
    bool all_back = first_up;
    for (unsigned i = 1; i <= kFaults && all_back; ++i) {
        pause_ms(50);
        const size_t ups = vm.count("chaos: up"), gones = vm.count("chaos: gone");
        switch (rng() % 3) {
            case 0:  // killed, started again
                server.kill_hard();
                ++kills;
                pause_ms(30);
                all_back = server.start();
                break;
            case 1:  // killed again while the client reconnects to the restarted server
                server.kill_hard();
                all_back = server.start();
                pause_ms(5);
                server.kill_hard();
                ++double_kills;
                all_back = all_back && server.start();
                break;
            default:  // stopped past the reply timeout, then continued
                server.signal(SIGSTOP);
                ++stops;
                all_back = vm.wait_more("chaos: gone", gones, 30s);
                server.signal(SIGCONT);
                break;
        }
        all_back = all_back && vm.wait_more("chaos: up", ups, 60s);
    }
    // Tell the guest to finish: the mailbox it polls, written on the engine thread.
    vm.machine().post([&] {
        const uint8_t one[4] = {1, 0, 0, 0};
        if (!vm.machine().memory().write(Gpa(0x3000), one)) ADD_FAILURE() << "mailbox write";
    });
    const machine::RunResult& result = vm.join();  // bounded by the VM's timeout
    const size_t fds_at_end = open_fds();
    const std::string text = vm.console();
    ASSERT_TRUE(first_up) << text;
    EXPECT_TRUE(all_back) << "kills " << kills << ", double kills " << double_kills << ", stops "
                          << stops << "\n"
                          << text;
    EXPECT_EQ(result.outcome, RunOutcome::exited) << result.message << "\n" << text;
    EXPECT_EQ(result.exit_value, 0u) << text;
    EXPECT_EQ(text.find("wrong value"), std::string::npos) << text;
    EXPECT_NE(text.find("chaos: done:"), std::string::npos) << text;
    EXPECT_GE(vm.count("chaos: up"), kFaults + 1) << text;
    EXPECT_LE(fds_at_end, fds_at_start) << "the VMM's open fds grew over " << kFaults << " faults";
    // Each kind of fault happened (the seed is fixed, so this is about the seed, not luck).
    EXPECT_GT(kills, 0u);
    EXPECT_GT(double_kills, 0u);
    EXPECT_GT(stops, 0u);
}
