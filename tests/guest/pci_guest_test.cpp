// pcitest (guests/pcitest) on a real VM: the guest enumerates bus 0, assigns resources as a
// BIOS would and drives the projected edu device (and multibar, when present) through MMIO,
// DMA, INTx, MSI and MSI-X; it exits 0 iff every check passed.
#include <gtest/gtest.h>

#include "guest_runner.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {
const std::string kPciBus = R"(<device class="PCI" id="pci0"/>)";
const std::string kEdu =
    R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="3"/>)";
const std::string kMultibar =
    R"(<device class="PCI_FRONT" id="mb0" bus="pci0" hostdev="inproc:multibar" slot="4"/>)";

bool has(const GuestRun& r, const std::string& text) {
    return r.console.find(text) != std::string::npos;
}
}  // namespace

TEST(PciGuest, EduAndMultibarPassEveryCheck) {
    auto r = run_guest({.guest = "pcitest", .devices_xml = kPciBus + kEdu + kMultibar});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    // the listing: host bridge, edu in slot 3 on PIRQD (line 11), BAR0 first in the window
    EXPECT_TRUE(has(r, "00:00.0 0600: 8086:1237")) << describe(r);
    EXPECT_TRUE(has(r, "00:03.0 00ff: 1234:11e8 (rev 10) irq 11 pin A")) << describe(r);
    EXPECT_TRUE(has(r, "  BAR0: mem32 0xc0000000 [size 0x100000]")) << describe(r);
    EXPECT_TRUE(has(r, "edu: 5! = 120, 10! = 3628800")) << describe(r);
    EXPECT_TRUE(has(r, "-- multibar at 00:04.0")) << describe(r);
    EXPECT_FALSE(has(r, "skipping multibar")) << describe(r);
}

TEST(PciGuest, EduAloneSkipsMultibarAndPasses) {
    auto r = run_guest({.guest = "pcitest", .devices_xml = kPciBus + kEdu});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    EXPECT_TRUE(has(r, "1234:11e8")) << describe(r);
    EXPECT_TRUE(has(r, "skipping multibar checks")) << describe(r);
}

TEST(PciGuest, EduInAnotherSlotIsRoutedByTheSwizzle) {
    // slot 5, pin A: PIRQ (5 + 1 - 1) % 4 = B → line 10
    auto r = run_guest(
        {.guest = "pcitest",
         .devices_xml =
             kPciBus +
             R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="5"/>)"});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, "00:05.0 00ff: 1234:11e8 (rev 10) irq 10 pin A")) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
}

TEST(PciGuest, WithoutTheBusConfigReadsAllOnes) {
    // no PCI device: 0xcfc decodes nothing, so the guest finds no host bridge and fails
    auto r = run_guest({.guest = "pcitest"});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_NE(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, "found 0 function(s)")) << describe(r);
}
