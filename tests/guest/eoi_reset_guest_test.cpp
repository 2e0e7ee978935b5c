// The guest's EOI reaching projected devices (guests/eoitest) and the VM reset wired to devices
// (guests/resettest), each in-process and over vfio-user against a separate `potemkin serve edu`
// process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "guest_runner.hpp"
#include "machine/builtins.hpp"
#include "models/edu.hpp"
#include "sdk/device_model.hpp"
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

// edu, counting the EOIs that reach it (DeviceModel::intx_acknowledged, which ModelServer
// calls from HostDevice::ack_intx): the in-process end of the EOI path, observed.
class EoiCountingEdu final : public sdk::DeviceModel {
  public:
    static inline int acknowledged = 0;
    const sdk::DeviceSpec& spec() const override { return edu_.spec(); }
    void attach(sdk::DeviceServices& services) override { edu_.attach(services); }
    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override {
        return edu_.bar_read(bar, offset, size);
    }
    void bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) override {
        edu_.bar_write(bar, offset, size, value);
    }
    void intx_acknowledged() override {
        ++acknowledged;
        edu_.intx_acknowledged();
    }
    void reset() override { edu_.reset(); }

  private:
    models::Edu edu_;
};

void register_counting_edu() {
    static const bool once = [] {
        // The built-in models and transports first.
        if (auto b = machine::register_builtins(); !b) ADD_FAILURE() << b.error().message;
        auto r = sdk::ModelRegistry::builtin().add(
            "edu-eoi-count", "edu counting EOIs (test)",
            [](const sdk::ModelParams&) -> Result<std::unique_ptr<sdk::DeviceModel>> {
                return std::unique_ptr<sdk::DeviceModel>(new EoiCountingEdu());
            });
        EXPECT_TRUE(r) << r.error().message;
        return true;
    }();
    (void)once;
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

// Which EOIs reach the device: the two of the first interrupt's three deliveries the guest EOIs
// without acknowledging in edu (the third is acknowledged first, so the line is already down at
// its EOI), none for the interrupt acknowledged before its EOI, and one for the two-cause
// interrupt (the first EOI, with one cause left).
TEST(EoiGuest, EoisReachTheInProcessModelWhileItsLineIsUp) {
    register_counting_edu();
    EoiCountingEdu::acknowledged = 0;
    auto r =
        run_guest({.guest = "eoitest",
                   .devices_xml = kPciBus + R"(<device class="PCI_FRONT" id="edu0" bus="pci0" )"
                                            R"(hostdev="inproc:edu-eoi-count" slot="3"/>)"});
    expect_passed(r);
    EXPECT_EQ(EoiCountingEdu::acknowledged, 3) << describe(r);
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

// With an application processor parked in cli; hlt (a halted vCPU that nothing can wake), the
// reset still happens and the second boot runs: every vCPU is put back at the entry state.
TEST(ResetGuest, ResetWithTwoVcpus) {
    auto r = run_guest({.guest = "resettest", .devices_xml = kPciBus + edu_inproc(), .cores = 2});
    expect_passed(r);
    EXPECT_TRUE(has(r, "reset_count 1")) << describe(r);
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
