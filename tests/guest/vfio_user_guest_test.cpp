// Out-of-process devices over vfio-user, with real processes: `potemkin serve edu` runs as a
// child process and the VM projects it with PCI_FRONT hostdev="vfio-user:...". pcitest passes
// through it (INTx and MSI through eventfds, DMA through the shared memfd), and a guest that
// keeps reading the device survives its server being killed and started again; multibar's
// BAR2, mapped straight into the guest, then shows the new server's memory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "devices/pci_front.hpp"
#include "guest_runner.hpp"
#include "server_process.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;
using namespace std::chrono_literals;

namespace {

const std::string kPciBus = R"(<device class="PCI" id="pci0"/>)";

std::string edu_over(const std::string& socket) {
    return R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="vfio-user:)" + socket +
           R"(" slot="3"/>)";
}

std::string socket_path(const char* what) {
    return "/tmp/potemkin-vfu-" + std::string(what) + "-" + std::to_string(::getpid()) + ".sock";
}

bool has(const GuestRun& r, const std::string& text) {
    return r.console.find(text) != std::string::npos;
}

}  // namespace

TEST(VfioUserGuest, PcitestPassesAgainstAServerProcess) {
    const std::string sock = socket_path("pcitest");
    ServerProcess server(sock);
    ASSERT_TRUE(server.start()) << "potemkin serve edu did not come up at " << sock;
    auto r = run_guest({.guest = "pcitest", .devices_xml = kPciBus + edu_over(sock)});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    EXPECT_TRUE(has(r, "00:03.0 00ff: 1234:11e8 (rev 10) irq 11 pin A")) << describe(r);
}

// multibar's BAR2 arrives with a memfd and is mapped straight into the guest: pcitest's
// multibar checks (pattern, writes, relocation) pass through the direct mapping.
TEST(VfioUserGuest, PcitestPassesWithMultibarOverVfioUser) {
    const std::string edu_sock = socket_path("pcitest-edu");
    const std::string mb_sock = socket_path("pcitest-mb");
    ServerProcess edu(edu_sock);
    ServerProcess mb(mb_sock, "multibar");
    ASSERT_TRUE(edu.start()) << "potemkin serve edu did not come up at " << edu_sock;
    ASSERT_TRUE(mb.start()) << "potemkin serve multibar did not come up at " << mb_sock;
    const std::string multibar =
        R"(<device class="PCI_FRONT" id="mb0" bus="pci0" hostdev="vfio-user:)" + mb_sock +
        R"(" slot="4"/>)";
    auto r =
        run_guest({.guest = "pcitest", .devices_xml = kPciBus + edu_over(edu_sock) + multibar});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    EXPECT_TRUE(has(r, "-- multibar at 00:04.0")) << describe(r);
    EXPECT_FALSE(has(r, "skipping multibar")) << describe(r);
}

namespace {

// edu and multibar, each in its own server process, both killed and started again while the
// guest (vfukill) runs. The new multibar process has new memory behind BAR2: PCI_FRONT must
// map that in place of the old process's (the guest writes through BAR2 and reads the model's
// view of it). `mappable_after` false: the new multibar offers no fd for BAR2 (mmap=0), so
// BAR2 must trap from then on, to the new server.
void kill_and_restart(bool mappable_after) {
    const std::string sock = socket_path(mappable_after ? "kill" : "kill-trap");
    const std::string mb_sock = socket_path(mappable_after ? "kill-mb" : "kill-trap-mb");
    ServerProcess server(sock);
    ServerProcess mb_server(mb_sock, "multibar");
    ASSERT_TRUE(server.start()) << "potemkin serve edu did not come up at " << sock;
    ASSERT_TRUE(mb_server.start()) << "potemkin serve multibar did not come up at " << mb_sock;
    const std::string multibar =
        R"(<device class="PCI_FRONT" id="mb0" bus="pci0" hostdev="vfio-user:)" + mb_sock +
        R"(" slot="4"/>)";

    LiveGuest vm({.guest = "vfukill",
                  .devices_xml = kPciBus + edu_over(sock) + multibar,
                  .timeout_ms = 60000});
    ASSERT_EQ(vm.error(), "");
    bool phase1 = vm.wait_for("phase 1", 30s);
    bool gone = false, restarted = false;
    if (phase1) {
        server.kill_hard();
        mb_server.kill_hard();
        if (!mappable_after) mb_server.set_params({"mmap=0"});
        gone = vm.wait_for("all-ones", 20s);
        restarted = server.start() && mb_server.start();
    }
    const machine::RunResult& result = vm.join();  // bounded by the VM's timeout
    const std::string text = vm.console();
    ASSERT_TRUE(phase1) << text;
    EXPECT_TRUE(gone) << text;
    EXPECT_TRUE(restarted);
    EXPECT_EQ(result.outcome, RunOutcome::exited) << result.message << "\n" << text;
    EXPECT_EQ(result.exit_value, 0u) << text;
    EXPECT_NE(text.find("id again"), std::string::npos) << text;
    EXPECT_NE(text.find("a BAR2 write reaches the server"), std::string::npos) << text;
    EXPECT_NE(text.find("a BAR2 write reaches the new server"), std::string::npos) << text;
    EXPECT_NE(text.find("vfukill: done"), std::string::npos) << text;
    // Mappable: BAR2 was mapped straight into the guest after the restart too, so the check
    // above went through the new mapping, not through traps. Not mappable: it trapped.
    auto* mb = vm.machine().devices().find_as<devices::PciFront>("mb0");
    ASSERT_NE(mb, nullptr);
    EXPECT_EQ(mb->direct_base(2).has_value(), mappable_after);
}

}  // namespace

TEST(VfioUserGuest, GuestSurvivesItsServerBeingKilledAndRestarted) {
    kill_and_restart(true);
}

TEST(VfioUserGuest, MappedBarTrapsWhenTheRestartedServerOffersNoMapping) {
    kill_and_restart(false);
}
