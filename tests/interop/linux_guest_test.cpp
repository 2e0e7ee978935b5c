// Interop test 2: QEMU runs a Debian Linux guest, potemkin hosts the device. `potemkin
// qemu-proxy edu` starts `potemkin serve edu --mpqemu-fd` and qemu-system-x86_64 (TCG) with
// -device x-pci-proxy-dev; the guest's /init runs tests/interop/linux/edu_user.c, which finds
// the device in sysfs, checks BAR0, computes a factorial through the mmap'ed BAR and runs an
// edu DMA round trip through pinned pages (polled: under TCG the proxy delivers no
// interrupts), then ends QEMU through isa-debug-exit with 0x2a (status 85) when all passed.
//
// The kernel is Debian 12's linux-image-6.1.0-*-amd64, fetched by scripts/fetch-linux.sh into
// ${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/linux/vmlinuz (POTEMKIN_LINUX_KERNEL overrides).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string kernel_path() {
    if (const char* k = std::getenv("POTEMKIN_LINUX_KERNEL"); k != nullptr && *k != 0) return k;
    std::string cache;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != 0)
        cache = x;
    else if (const char* h = std::getenv("HOME"); h != nullptr)
        cache = std::string(h) + "/.cache";
    return cache + "/potemkin/linux/vmlinuz";
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
}

struct ProcessRun {
    int status = -1;  // raw wait status
    std::string out;  // QEMU's serial console (stdout)
    std::string err;  // launcher, server and QEMU diagnostics
};

// Runs argv with stdin /dev/null, stdout into a pipe, stderr into a file.
ProcessRun run(const std::vector<std::string>& args) {
    ProcessRun r;
    int out[2];
    if (::pipe(out) != 0) return r;
    char err_path[] = "/tmp/potemkin-linux-guest-XXXXXX";
    const int err_fd = ::mkstemp(err_path);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        ::dup2(out[1], 1);
        ::dup2(err_fd, 2);
        ::close(out[0]);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(out[1]);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
    ::close(out[0]);
    ::waitpid(pid, &r.status, 0);
    std::ifstream f(err_path);
    std::stringstream ss;
    ss << f.rdbuf();
    r.err = ss.str();
    ::close(err_fd);
    ::unlink(err_path);
    return r;
}

TEST(LinuxGuest, EduThroughXPciProxyDev) {
    const std::string kernel = kernel_path();
    ASSERT_TRUE(exists(kernel)) << "the Linux interop guest's kernel is missing: " << kernel
                                << "\nFetch it with scripts/fetch-linux.sh (scripts/test.sh does)";
    ASSERT_TRUE(exists(POTEMKIN_LINUX_INITRAMFS)) << POTEMKIN_LINUX_INITRAMFS;
    const ProcessRun r = run({POTEMKIN_BINARY, "qemu-proxy", "edu", "--qemu", POTEMKIN_QEMU,
                              "--timeout", "240", "--", "-kernel", kernel, "-initrd",
                              POTEMKIN_LINUX_INITRAMFS, "-append", "console=ttyS0 panic=-1 quiet"});
    const std::string context = "\n--- console ---\n" + r.out + "\n--- stderr ---\n" + r.err;
    ASSERT_TRUE(WIFEXITED(r.status)) << context;
    // isa-debug-exit: (0x2a << 1) | 1.
    EXPECT_EQ(WEXITSTATUS(r.status), 85) << context;
    for (const char* line : {
             "edu_user: found /sys/bus/pci/devices/0000:00:05.0\n",
             "edu_user: BAR0 is 1 MiB: ok\n",
             "edu_user: BAR0 is memory: ok\n",
             "edu_user: resource0 file is 1 MiB: ok\n",
             "edu_user: identification 0x010000ed\n",
             "edu_user: liveness 0x12345678 -> 0xedcba987\n",
             "edu_user: factorial 10! = 3628800\n",
             "edu_user: pagemap gives physical addresses: ok\n",
             "edu_user: DMA RAM -> edu completes (polled): ok\n",
             "edu_user: DMA edu -> RAM completes (polled): ok\n",
             "edu_user: DMA data came back intact: ok\n",
             "edu_user: PASS (0 failures)\n",
         }) {
        // The serial console may end lines with \r\n.
        std::string crlf = line;
        crlf.insert(crlf.size() - 1, "\r");
        EXPECT_TRUE(r.out.find(line) != std::string::npos || r.out.find(crlf) != std::string::npos)
            << "missing: " << line << context;
    }
    EXPECT_EQ(r.out.find("FAILED"), std::string::npos) << context;
    // The device server saw no protocol error and no stray access.
    EXPECT_EQ(r.err.find("dropping the proxy"), std::string::npos) << context;
    EXPECT_EQ(r.err.find("decodes to no BAR"), std::string::npos) << context;
    EXPECT_EQ(r.err.find("DMA refused"), std::string::npos) << context;
}

}  // namespace

namespace {

// The launcher alone: QEMU without a kernel sits in the firmware; --timeout stops it, the device
// server sees EOF and exits by itself, and the launcher reports 124.
TEST(QemuProxy, TimeoutStopsQemuAndTheServerFollows) {
    const ProcessRun r = run(
        {POTEMKIN_BINARY, "qemu-proxy", "edu", "-v", "--qemu", POTEMKIN_QEMU, "--timeout", "3"});
    const std::string context = "\n--- console ---\n" + r.out + "\n--- stderr ---\n" + r.err;
    ASSERT_TRUE(WIFEXITED(r.status)) << context;
    EXPECT_EQ(WEXITSTATUS(r.status), 124) << context;
    EXPECT_NE(r.err.find("timeout after 3 s"), std::string::npos) << context;
    // The server served the proxy (its reset at machine start) and left on EOF, status 0.
    EXPECT_NE(r.err.find("edu: DEVICE_RESET"), std::string::npos) << context;
    EXPECT_NE(r.err.find("the proxy closed the connection"), std::string::npos) << context;
    EXPECT_EQ(r.err.find("the device server exited with status"), std::string::npos) << context;
}

TEST(QemuProxy, UnknownModelFailsBeforeQemuStarts) {
    const ProcessRun r = run({POTEMKIN_BINARY, "qemu-proxy", "no-such-model"});
    ASSERT_TRUE(WIFEXITED(r.status));
    EXPECT_EQ(WEXITSTATUS(r.status), 2);
    EXPECT_NE(r.err.find("unknown device model 'no-such-model'"), std::string::npos) << r.err;
}

}  // namespace
