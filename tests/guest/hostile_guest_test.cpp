// A hostile guest (guests/hostile, docs/hostile.md): random configuration writes, MMIO over the
// whole PCI window and port I/O over the PCI I/O window, with fixed seeds, against edu and
// multibar in-process and over vfio-user (real `potemkin serve` processes). The VMM must
// survive every run, and the guest must read exactly the same values over both transports
// (its checksum of every value read): a transport may not change what a device answers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "guest_runner.hpp"
#include "server_process.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

std::string front(const std::string& id, const std::string& hostdev, int slot) {
    return R"(<device class="PCI_FRONT" id=")" + id + R"(" bus="pci0" hostdev=")" + hostdev +
           R"(" slot=")" + std::to_string(slot) + R"("/>)";
}

std::string socket_path(const char* what) {
    return "/tmp/potemkin-hostile-" + std::string(what) + "-" + std::to_string(::getpid()) +
           ".sock";
}

// "hostile: R rounds, N reads, checksum C" → "N reads, checksum C"; empty when absent.
std::string result_line(const GuestRun& r) {
    const size_t line = r.console.find(" rounds, ");
    if (line == std::string::npos) return {};
    const size_t begin = line + 9, end = r.console.find('\n', begin);
    const std::string rest = r.console.substr(begin, end == std::string::npos ? end : end - begin);
    return rest.find(" reads, checksum ") != std::string::npos ? rest : std::string();
}

}  // namespace

class HostileGuest : public ::testing::TestWithParam<unsigned> {};

TEST_P(HostileGuest, SurvivesAndReadsTheSameOverInprocAndVfioUser) {
    const unsigned seed = GetParam();
    const std::string cmdline = "seed=" + std::to_string(seed) + " rounds=4000";
    const std::string bus = R"(<device class="PCI" id="pci0"/>)";

    auto inproc = run_guest(
        {.guest = "hostile",
         .devices_xml = bus + front("edu0", "inproc:edu", 3) + front("mb0", "inproc:multibar", 4),
         .cmdline = cmdline,
         .timeout_ms = 120000});
    ASSERT_EQ(inproc.outcome, RunOutcome::exited) << describe(inproc);
    EXPECT_EQ(inproc.status, 0) << describe(inproc);
    const std::string expected = result_line(inproc);
    ASSERT_FALSE(expected.empty()) << describe(inproc);

    const std::string edu_sock = socket_path("edu"), mb_sock = socket_path("mb");
    ServerProcess edu(edu_sock);
    ServerProcess mb(mb_sock, "multibar");
    ASSERT_TRUE(edu.start()) << "potemkin serve edu did not come up at " << edu_sock;
    ASSERT_TRUE(mb.start()) << "potemkin serve multibar did not come up at " << mb_sock;
    auto remote = run_guest({.guest = "hostile",
                             .devices_xml = bus + front("edu0", "vfio-user:" + edu_sock, 3) +
                                            front("mb0", "vfio-user:" + mb_sock, 4),
                             .cmdline = cmdline,
                             .timeout_ms = 120000});
    ASSERT_EQ(remote.outcome, RunOutcome::exited) << describe(remote);
    EXPECT_EQ(remote.status, 0) << describe(remote);
    EXPECT_EQ(result_line(remote), expected) << describe(remote);
}

INSTANTIATE_TEST_SUITE_P(Seeds, HostileGuest, ::testing::Values(1u, 2u, 3u));
