// A real operating system on potemkin (docs/linux-guest.md): inside the nested harness's L1,
// `potemkin run` boots Debian's own kernel (the one L1 runs) on the KVM engine with a busybox
// initramfs (tests/nested/l2), and L2's user space and drivers meet projected devices:
// - a busybox shell runs and the guest powers off with its status (through port 0xf4);
// - edu projected through PCI_FRONT over inproc: and over vfio-user: (a `potemkin serve edu`
//   in L1) passes the checks the Linux interop test runs under QEMU (sysfs, resource0 mmap,
//   factorial, DMA to pagemap-located pages);
// - Linux's own nvme driver drives QEMU's nvme passed through from L1 (PCI_PASSTHROUGH over
//   vfio:) with its interrupts, and reads back the disk the harness wrote.
// Each test is one L2 boot; the console and the time it took are printed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "nested_env.hpp"
#include "server_process.hpp"

namespace {

using potemkin::nested::env;

struct Boot {
    int status = -1;
    std::string console;
    double seconds = 0;
    bool has(const std::string& s) const { return console.find(s) != std::string::npos; }
};

class LinuxL2 : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!potemkin::nested::inside_l1())
            GTEST_SKIP() << "not inside the nested harness's L1 guest (POTEMKIN_NESTED is not 1)";
        if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm in L1";
        kernel_ = env("POTEMKIN_L2_KERNEL");
        initrd_ = env("POTEMKIN_L2_INITRAMFS");
        ASSERT_FALSE(kernel_.empty() || initrd_.empty())
            << "POTEMKIN_L2_KERNEL and POTEMKIN_L2_INITRAMFS name L2's kernel and initramfs "
               "(tests/nested/suite.txt)";
    }

    // Boots L2 with `devices` (inner XML of <devices>) and the check word(s) for its init.
    Boot boot(const std::string& devices, const std::string& check, bool quiet = true) {
        const std::string config = "/tmp/l2-" + std::to_string(::getpid()) + ".xml";
        std::ofstream(config) << "<vm class=\"PC\" engine=\"kvm\">\n  <memory>256</memory>\n"
                              << "  <guest kernel=\"" << kernel_ << "\" initrd=\"" << initrd_
                              << "\" cmdline=\"console=ttyS0 nolapic" << (quiet ? " quiet" : "")
                              << " -- " << check << "\"/>\n  <devices>\n"
                              << "    <device class=\"SERIAL\" id=\"com1\"/>\n"
                              << "    <device class=\"PCI\" id=\"pci0\"/>\n"
                              << devices << "\n  </devices>\n</vm>\n";
        Boot b;
        const auto start = std::chrono::steady_clock::now();
        const std::string cmd =
            std::string(POTEMKIN_BINARY) + " run " + config + " --timeout 240 2>&1";
        FILE* p = ::popen(cmd.c_str(), "r");
        if (p == nullptr) {
            ADD_FAILURE() << "popen: " << cmd;
            return b;
        }
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) b.console.append(buf, n);
        const int st = ::pclose(p);
        b.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        b.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf("--- L2 (%s): status %d after %.1f s ---\n%s\n", check.c_str(), b.status,
                    b.seconds, b.console.c_str());
        if (std::remove(config.c_str()) != 0) std::perror(config.c_str());
        return b;
    }

    std::string kernel_, initrd_;
};

TEST_F(LinuxL2, BootsToABusyboxShellAndPowersOffWithItsStatus) {
    auto b = boot("", "shell", false);
    EXPECT_TRUE(b.has("Linux version 6.1")) << "the kernel's banner on ttyS0 (SERIAL)";
    EXPECT_TRUE(b.has("l2: busybox shell on 6.1")) << "user space ran";
    EXPECT_EQ(b.status, 7) << "the shell's status, through port 0xf4";
}

TEST_F(LinuxL2, EduOverInprocPassesTheLinuxChecks) {
    auto b = boot(
        "    <device class=\"PCI_FRONT\" id=\"edu0\" bus=\"pci0\" hostdev=\"inproc:edu\" "
        "slot=\"3\"/>",
        "edu");
    EXPECT_TRUE(b.has("edu_user: factorial: ok"));
    EXPECT_TRUE(b.has("edu_user: DMA data came back intact: ok"));
    EXPECT_TRUE(b.has("edu_user: PASS"));
    EXPECT_EQ(b.status, 42) << "edu_user's pass value";
}

TEST_F(LinuxL2, EduOverVfioUserPassesTheLinuxChecks) {
    const std::string sock = "/tmp/l2-edu-" + std::to_string(::getpid()) + ".sock";
    potemkin::testing::ServerProcess server(sock, "edu");
    ASSERT_TRUE(server.start()) << "potemkin serve edu in L1";
    auto b = boot("    <device class=\"PCI_FRONT\" id=\"edu0\" bus=\"pci0\" hostdev=\"vfio-user:" +
                      sock + "\" slot=\"3\"/>",
                  "edu");
    EXPECT_TRUE(b.has("edu_user: factorial: ok"));
    EXPECT_TRUE(b.has("edu_user: DMA data came back intact: ok"));
    EXPECT_TRUE(b.has("edu_user: PASS"));
    EXPECT_EQ(b.status, 42);
}

TEST_F(LinuxL2, LinuxNvmeDriverReadsThePassedThroughDiskWithInterrupts) {
    const std::string nvme = env("POTEMKIN_NESTED_NVME");
    if (nvme.empty()) GTEST_SKIP() << "POTEMKIN_NESTED_NVME is not set";
    auto b = boot(
        "    <device class=\"PCI_PASSTHROUGH\" id=\"nvme0\" bus=\"pci0\" hostdev=\"vfio:" + nvme +
            "\" slot=\"4\"/>",
        "nvme 2048");
    EXPECT_TRUE(b.has("blockcheck: 2048 of 2048 blocks hold their pattern"));
    EXPECT_FALSE(b.has("l2: nvme interrupts 0")) << "the driver's completions were interrupts";
    EXPECT_FALSE(b.has("nobody cared")) << "an INTx storm: the line stayed up after the device "
                                           "was served";
    EXPECT_EQ(b.status, 0);
}

}  // namespace
