// The trace of a guest whose out-of-process devices are killed and started again under it
// (docs/trace.md): vfio-user accesses are timed, and each device's loss and return are link
// records the trace reader (and so `potemkin trace --perfetto`) sees.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "guest_runner.hpp"
#include "server_process.hpp"
#include "tools/trace_file.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using namespace std::chrono_literals;

namespace {

std::string socket_path(const char* what) {
    return "/tmp/potemkin-trace-" + std::string(what) + "-" + std::to_string(::getpid()) + ".sock";
}

std::string front(const char* id, const std::string& socket, int slot) {
    return fmt::format(R"(<device class="PCI_FRONT" id="{}" bus="pci0" hostdev="vfio-user:{}" )"
                       R"(slot="{}"/>)",
                       id, socket, slot);
}

TEST(TraceGuest, ServersKilledAndRestartedShowAsLinkLostAndBack) {
    const std::string edu_sock = socket_path("edu"), mb_sock = socket_path("mb");
    const std::string trace = ::testing::TempDir() + "/reconnect-trace.tsv";
    ServerProcess edu(edu_sock);
    ServerProcess mb(mb_sock, "multibar");
    ASSERT_TRUE(edu.start()) << edu_sock;
    ASSERT_TRUE(mb.start()) << mb_sock;
    {
        LiveGuest vm({.guest = "vfukill",
                      .devices_xml = R"(<device class="PCI" id="pci0"/>)" +
                                     front("edu0", edu_sock, 3) + front("mb0", mb_sock, 4),
                      .timeout_ms = 60000,
                      .trace_path = trace});
        ASSERT_EQ(vm.error(), "");
        ASSERT_TRUE(vm.wait_for("phase 1", 30s)) << vm.console();
        edu.kill_hard();
        mb.kill_hard();
        ASSERT_TRUE(vm.wait_for("all-ones", 20s)) << vm.console();
        ASSERT_TRUE(edu.start() && mb.start());
        const machine::RunResult& result = vm.join();
        ASSERT_EQ(result.outcome, machine::RunOutcome::exited) << result.message;
        EXPECT_EQ(result.exit_value, 0u) << vm.console();
    }  // the machine and its trace writer are gone: the file is complete

    auto t = tools::load_trace(trace);
    ASSERT_TRUE(t) << t.error().message;
    std::map<std::string, std::vector<std::string>> links;  // device -> lost/back in order
    size_t timed_edu = 0;
    for (const tools::TraceRecord& r : t->records) {
        if (r.kind == tools::RecordKind::link) links[r.device].push_back(r.op);
        if (r.kind == tools::RecordKind::mmio && r.device == "edu0" && r.dur_ns) ++timed_edu;
    }
    for (const char* dev : {"edu0", "mb0"}) {
        ASSERT_GE(links[dev].size(), 2u) << dev;
        EXPECT_EQ(links[dev].front(), "lost") << dev;
        EXPECT_EQ(links[dev].back(), "back") << dev;
    }
    EXPECT_GT(timed_edu, 0u);
    std::filesystem::remove(trace);
}

}  // namespace
