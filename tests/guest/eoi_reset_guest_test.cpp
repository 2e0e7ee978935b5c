// The guest's EOI reaching projected devices (guests/eoitest) and the VM reset wired to devices
// (guests/resettest), each in-process and over vfio-user against a separate `potemkin serve edu`
// process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "guest_runner.hpp"
#include "server_process.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

const std::string kPciBus = R"(<device class="PCI" id="pci0"/>)";

std::string edu_inproc() {
    return R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="3"/>)";
}

std::string edu_over(const std::string& socket) {
    return R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="vfio-user:)" + socket +
           R"(" slot="3"/>)";
}

std::string socket_path(const char* what) {
    return "/tmp/potemkin-eoi-" + std::string(what) + "-" + std::to_string(::getpid()) + ".sock";
}

bool has(const GuestRun& r, const std::string& text) {
    return r.console.find(text) != std::string::npos;
}

void expect_passed(const GuestRun& r) {
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
}

}  // namespace

// ---- EOI ---------------------------------------------------------------------------------

TEST(EoiGuest, UnacknowledgedInterruptComesBackAfterEoiInProcess) {
    auto r = run_guest({.guest = "eoitest", .devices_xml = kPciBus + edu_inproc()});
    expect_passed(r);
    EXPECT_TRUE(has(r, "   3 deliveries")) << describe(r);
}

// The server auto-masks INTx when it signals it; only the unmask the client sends on the
// guest's EOI lets it signal again. A redelivery count above 1 is the EOI reaching the server
// process, and silence after the acknowledged EOI is the client lowering the line it held.
TEST(EoiGuest, UnacknowledgedInterruptComesBackAfterEoiOverVfioUser) {
    const std::string sock = socket_path("redeliver");
    ServerProcess server(sock);
    ASSERT_TRUE(server.start()) << "potemkin serve edu did not come up at " << sock;
    auto r = run_guest(
        {.guest = "eoitest", .devices_xml = kPciBus + edu_over(sock), .cmdline = "redeliver=5"});
    expect_passed(r);
    EXPECT_TRUE(has(r, "   5 deliveries")) << describe(r);
}

// ---- VM reset ----------------------------------------------------------------------------

TEST(ResetGuest, ResetRestoresDevicesRamAndVcpusInProcess) {
    auto r = run_guest({.guest = "resettest", .devices_xml = kPciBus + edu_inproc()});
    expect_passed(r);
    EXPECT_TRUE(has(r, "reset_count 0")) << describe(r);
    EXPECT_TRUE(has(r, "resetting the VM (reset 1 of 1)")) << describe(r);
    EXPECT_TRUE(has(r, "reset_count 1")) << describe(r);
    EXPECT_FALSE(has(r, "the reset did not happen")) << describe(r);
}

// edu's liveness and factorial registers live in the server process: reading their reset
// values after the VM reset means DEVICE_RESET reached it.
TEST(ResetGuest, ResetSendsDeviceResetToAServerProcess) {
    const std::string sock = socket_path("reset");
    ServerProcess server(sock);
    ASSERT_TRUE(server.start()) << "potemkin serve edu did not come up at " << sock;
    auto r = run_guest(
        {.guest = "resettest", .devices_xml = kPciBus + edu_over(sock), .cmdline = "resets=2"});
    expect_passed(r);
    EXPECT_TRUE(has(r, "reset_count 1")) << describe(r);
    EXPECT_TRUE(has(r, "reset_count 2")) << describe(r);
}

TEST(ResetGuest, ResetLoopEndsWithAClearError) {
    auto r = run_guest({.guest = "resettest",
                        .devices_xml = kPciBus + edu_inproc(),
                        .cmdline = "loop",
                        .max_resets = 3});
    EXPECT_EQ(r.outcome, RunOutcome::fault) << describe(r);
    EXPECT_EQ(r.status, 126) << describe(r);
    EXPECT_NE(r.message.find("VM reset number 4"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("max_resets"), std::string::npos) << r.message;
    EXPECT_TRUE(has(r, "reset_count 3")) << describe(r);
    EXPECT_FALSE(has(r, "the reset did not happen")) << describe(r);
}

TEST(ResetGuest, WithoutAPciBusThereIsNoResetControlRegister) {
    auto r = run_guest({.guest = "resettest", .cmdline = "loop"});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 3) << describe(r);
    EXPECT_TRUE(has(r, "the reset did not happen")) << describe(r);
}
