// The potemkin command line as a user runs it: a real process, its output and exit status.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "server_process.hpp"

namespace {

struct Cli {
    int status = -1;
    std::string out;  // stdout and stderr together
};

// `potemkin run` takes the engine from POTEMKIN_TEST_ENGINE too, unless the test names one.
Cli run_cli(const std::string& args) {
    Cli r;
    std::string engine;
    const char* e = std::getenv("POTEMKIN_TEST_ENGINE");
    if (e && *e && args.rfind("run ", 0) == 0 && args.find("--engine") == std::string::npos)
        engine = std::string(" --engine ") + e;
    std::string cmd = std::string(POTEMKIN_BINARY) + " " + args + engine + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string write_file(const std::string& name, const std::string& text) {
    std::string path = ::testing::TempDir() + "/" + name;
    std::ofstream(path) << text;
    return path;
}

}  // namespace

TEST(Cli, HelloDemoRunsAndExitsZero) {
    auto r = run_cli("run " POTEMKIN_SOURCE_DIR "/examples/hello.xml --timeout 60");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("10 timer ticks"), std::string::npos) << r.out;
}

TEST(Cli, EduDemoRunsAndExitsZero) {
    auto r = run_cli("run " POTEMKIN_SOURCE_DIR "/examples/edu.xml --timeout 120");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("checks: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" 0 failed"), std::string::npos) << r.out;
}

TEST(Cli, PcieDemoRunsAndExitsZero) {
    auto r = run_cli("run " POTEMKIN_SOURCE_DIR "/examples/pcie.xml --timeout 120");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("pcietest: ECAM at 0xf8000000, 1 MiB"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" 0 failed"), std::string::npos) << r.out;
}

TEST(Cli, ConfigErrorExitsTwoNamingTheLine) {
    std::string path = write_file("bad.xml",
                                  "<vm>\n  <memory>16</memory>\n  <devices>\n"
                                  "    <device class=\"PCI_FRONT\" id=\"x\" bus=\"pci9\" "
                                  "hostdev=\"inproc:edu\"/>\n  </devices>\n</vm>\n");
    auto r = run_cli("run " + path + " --guest " POTEMKIN_GUEST_DIR "/hello.elf");
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("bad.xml:4: <device class=\"PCI_FRONT\" id=\"x\">: attribute 'bus' "
                         "refers to unknown device 'pci9'"),
              std::string::npos)
        << r.out;
}

TEST(Cli, GuestStatusBecomesProcessStatus) {
    std::string path = write_file(
        "exit.xml",
        "<vm><memory>16</memory><guest file=\"exitcode.elf\" cmdline=\"status=42\"/></vm>");
    auto r = run_cli("run " + path);
    EXPECT_EQ(r.status, 42) << r.out;
}

TEST(Cli, EngineIsChosenByName) {
    std::string path = write_file(
        "engine.xml",
        "<vm><memory>16</memory><guest file=\"exitcode.elf\" cmdline=\"status=7\"/></vm>");
    auto r = run_cli("run " + path + " --engine unicorn");
    EXPECT_EQ(r.status, 7) << r.out;
}

TEST(Cli, UnknownEngineExitsTwoListingTheKnownOnes) {
    auto r = run_cli("run " POTEMKIN_SOURCE_DIR "/examples/hello.xml --engine kvn");
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("unknown CPU engine 'kvn' (known: unicorn, kvm, auto)"), std::string::npos)
        << r.out;
}

TEST(Cli, TimeoutHasItsOwnStatus) {
    auto r = run_cli("run " POTEMKIN_SOURCE_DIR "/examples/hello.xml --timeout 0.001");
    EXPECT_EQ(r.status, 124) << r.out;
    EXPECT_NE(r.out.find("timeout"), std::string::npos) << r.out;
}

TEST(Cli, HelpListsCommands) {
    auto r = run_cli("--help");
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.out.find("run"), std::string::npos);
    EXPECT_NE(r.out.find("probe"), std::string::npos);
    auto run = run_cli("run --help");
    EXPECT_NE(run.out.find("--trace"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("124 timeout"), std::string::npos) << run.out;
}

TEST(Cli, ProbeShowsRegionsAndCapabilities) {
    auto r = run_cli("probe inproc:multibar");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("1b36:ff01"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Region 0: I/O ports [size=32]"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Region 2: Memory (64-bit, prefetchable) [size=1M]"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("Expansion ROM [size=4K]"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("MSI-X: Enable- Count=4"), std::string::npos) << r.out;
}

// The PCIe form of multibar: the PCI Express capability decoded and every extended capability
// by name and offset, as lspci -vv shows them.
TEST(Cli, ProbeListsExpressAndExtendedCapabilities) {
    auto r = run_cli("probe 'inproc:multibar?pcie=1'");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("Config: Config space [size=4K]"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("] Express (v2) Endpoint"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("DevCap:\tMaxPayload 256 bytes, ExtTag+, FLReset-"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("MaxPayload 128 bytes, MaxReadReq 512 bytes"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("LnkCap:\tSpeed 8GT/s, Width x4, ASPM not supported"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("Capabilities: [100 v2] Advanced Error Reporting"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("Capabilities: [148 v1] Device Serial Number 1b-36-ff-01-00-00-00-01"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("Capabilities: [154 v1] Vendor Specific Information: ID=0001 Rev=1 "
                         "Len=014"),
              std::string::npos)
        << r.out;
    // The conventional form has 256 bytes and no extended list.
    auto plain = run_cli("probe inproc:multibar");
    EXPECT_EQ(plain.out.find("Capabilities: [1"), std::string::npos) << plain.out;
    EXPECT_EQ(plain.out.find("Express"), std::string::npos) << plain.out;
}

TEST(Cli, ProbeOfUnknownSchemeFails) {
    auto r = run_cli("probe nosuch:thing");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("unknown scheme 'nosuch'"), std::string::npos) << r.out;
}

TEST(Cli, ProbeOverVfioUserShowsTheServedModel) {
    const std::string sock =
        ::testing::TempDir() + "/probe-" + std::to_string(::getpid()) + ".sock";
    potemkin::testing::ServerProcess server(sock, "multibar");
    ASSERT_TRUE(server.start());
    auto r = run_cli("probe vfio-user:" + sock);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("1b36:ff01"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Region 2: Memory (64-bit, prefetchable) [size=1M]"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("MSI-X: Enable- Count=4"), std::string::npos) << r.out;
}

// The PCIe form over vfio-user: the CONFIG region is 4 KiB and the extended chain comes across.
TEST(Cli, ProbeOverVfioUserListsExtendedCapabilities) {
    const std::string sock =
        ::testing::TempDir() + "/probe-pcie-" + std::to_string(::getpid()) + ".sock";
    potemkin::testing::ServerProcess server(sock, "multibar");
    server.set_params({"pcie=1"});
    ASSERT_TRUE(server.start());
    auto r = run_cli("probe vfio-user:" + sock);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("Config: Config space [size=4K]"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("] Express (v2) Endpoint"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Capabilities: [100 v2] Advanced Error Reporting"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("Capabilities: [154 v1] Vendor Specific Information"), std::string::npos)
        << r.out;
}

// A guest that resets the VM (port 0xcf9) once more than --max-resets allows ends with the
// guest-fault status and a message that names the limit.
TEST(Cli, ResetLimitIsAnOptionAndEndsTheRunWithAClearMessage) {
    const std::string guest = std::string(POTEMKIN_GUEST_DIR) + "/resettest.elf";
    auto ok =
        run_cli("run " POTEMKIN_SOURCE_DIR "/examples/edu.xml --guest " + guest + " --timeout 60");
    EXPECT_EQ(ok.status, 0) << ok.out;
    EXPECT_NE(ok.out.find("reset_count 1"), std::string::npos) << ok.out;
    auto r = run_cli("run " POTEMKIN_SOURCE_DIR "/examples/edu.xml --guest " + guest +
                     " --timeout 60 --max-resets 0");
    EXPECT_EQ(r.status, 126) << r.out;
    EXPECT_NE(r.out.find("at most 0 are allowed per run (max_resets)"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("reset_count 1"), std::string::npos) << r.out;
}

// Bad guest files (issue 11): each is a clear error naming the <guest> line and the file, with
// the configuration-error status; none aborts the process or reads without bound (/dev/zero
// and a FIFO used to be read until memory ran out, "/" and an over-long name threw).
TEST(Cli, BadGuestFilesAreErrorsNamingTheConfigLine) {
    const std::string dir = ::testing::TempDir();
    const std::string fifo = dir + "/guest-fifo";
    ::unlink(fifo.c_str());
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const std::string text =
        write_file("not-elf.bin", "#!/bin/sh\n" + std::string(100, '#') + "\n");
    const std::string tiny = write_file("tiny.bin",
                                        "\x7f"
                                        "ELF");
    struct Case {
        std::string file;
        std::string expect;
    } cases[] = {
        {"/", "guest image is a directory"},   {"/dev/zero", "guest image is a character device"},
        {fifo, "guest image is a FIFO"},       {std::string(300, 'g'), "not found"},
        {"no-such-guest.elf", "not found"},    {text, "not an ELF file"},
        {tiny, "too short to be an ELF file"},
    };
    for (const auto& c : cases) {
        const std::string path =
            write_file("bad-guest.xml",
                       "<vm>\n<memory>16</memory>\n<guest file=\"" + c.file + "\"/>\n</vm>\n");
        auto r = run_cli("run " + path + " --timeout 20");
        EXPECT_EQ(r.status, 2) << c.file.substr(0, 40) << ": " << r.out;
        EXPECT_NE(r.out.find("bad-guest.xml:3: <guest>"), std::string::npos)
            << c.file.substr(0, 40) << ": " << r.out;
        EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.file.substr(0, 40) << ": " << r.out;
    }
    ::unlink(fifo.c_str());
}

TEST(Cli, AConfigurationThatIsNotARegularFileIsRefusedBeforeReading) {
    auto r = run_cli("run /dev/zero --timeout 20");
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("/dev/zero: configuration file is a character device"), std::string::npos)
        << r.out;
}
