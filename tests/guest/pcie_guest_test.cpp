// pcietest (guests/pcietest) on a real VM: the guest reaches configuration space through the
// PCI bus's ECAM window, walks multibar's PCIe extended capabilities, checks RO/RW/RW1C bits
// per byte and moves a BAR with ECAM writes. In process and over vfio-user (the extended
// space forwarded by PCI_FRONT to a `potemkin serve` process).
#include <gtest/gtest.h>
#include <unistd.h>

#include "guest_runner.hpp"
#include "server_process.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

const std::string kEdu =
    R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="3"/>)";
const std::string kMultibarPcie =
    R"(<device class="PCI_FRONT" id="mb0" bus="pci0" hostdev="inproc:multibar?pcie=1" slot="4"/>)";

bool has(const GuestRun& r, const std::string& text) {
    return r.console.find(text) != std::string::npos;
}

void expect_chain(const GuestRun& r) {
    EXPECT_TRUE(has(r, "ext [100] 0001 v2")) << describe(r);
    EXPECT_TRUE(has(r, "ext [148] 0003 v1")) << describe(r);
    EXPECT_TRUE(has(r, "ext [154] 000b v1")) << describe(r);
    EXPECT_TRUE(has(r, "serial 1b36ff0100000001")) << describe(r);
    EXPECT_TRUE(has(r, "moving BAR1")) << describe(r);
}

}  // namespace

TEST(PcieGuest, MultibarThroughEcamInProcess) {
    const std::string bus = R"(<device class="PCI" id="pci0" ecam_size="0x200000"/>)";
    auto r = run_guest({.guest = "pcietest", .devices_xml = bus + kEdu + kMultibarPcie});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    EXPECT_TRUE(has(r, "pcietest: ECAM at 0xf8000000, 2 MiB")) << describe(r);
    EXPECT_TRUE(has(r, "bus 1 inside the window reads all-ones")) << describe(r);
    expect_chain(r);
}

TEST(PcieGuest, EcamWindowElsewhere) {
    const std::string bus = R"(<device class="PCI" id="pci0" ecam="0xf0000000"/>)";
    auto r = run_guest({.guest = "pcietest", .devices_xml = bus + kMultibarPcie});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, "pcietest: ECAM at 0xf0000000, 1 MiB")) << describe(r);
    expect_chain(r);
}

TEST(PcieGuest, EcamOffLeavesMechanismOneOnly) {
    const std::string bus = R"(<device class="PCI" id="pci0" ecam="off"/>)";
    auto r = run_guest({.guest = "pcietest", .devices_xml = bus + kMultibarPcie});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 3) << describe(r);
    EXPECT_TRUE(has(r, "no ECAM window in the boot-info block")) << describe(r);
}

TEST(PcieGuest, BadEcamSizeIsAConfigError) {
    const std::string bus = R"(<device class="PCI" id="pci0" ecam_size="0x180000"/>)";
    auto r = run_guest({.guest = "pcietest", .devices_xml = bus});
    EXPECT_NE(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_NE(describe(r).find("ECAM window size 0x180000"), std::string::npos) << describe(r);
}

// PCI_FRONT pulls the 4 KiB over vfio-user and forwards the extended space; the model's
// masks (RW1C in the VSEC, the AER registers) hold on the server side.
TEST(PcieGuest, MultibarThroughEcamOverVfioUser) {
    const std::string sock = "/tmp/potemkin-vfu-pcie-" + std::to_string(::getpid()) + ".sock";
    ServerProcess server(sock, "multibar");
    server.set_params({"pcie=1"});
    ASSERT_TRUE(server.start()) << "potemkin serve multibar did not come up at " << sock;
    const std::string mb = R"(<device class="PCI_FRONT" id="mb0" bus="pci0" hostdev="vfio-user:)" +
                           sock + R"(" slot="4"/>)";
    auto r =
        run_guest({.guest = "pcietest", .devices_xml = R"(<device class="PCI" id="pci0"/>)" + mb});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    expect_chain(r);
}
