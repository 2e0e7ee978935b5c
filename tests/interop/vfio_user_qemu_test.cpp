// Interop: QEMU >= 10.1's vfio-user client (`-device vfio-user-pci`) runs a Debian Linux guest
// (TCG) against real `potemkin serve edu` and `potemkin serve multibar` processes. The guest's
// /init runs tests/interop/linux/edu_user.c with the options each test gives it after "--" on
// the kernel command line, and ends QEMU through isa-debug-exit.
//
// Each boot costs 6-25 s here under TCG (with the machine's load), so one boot covers several
// scenarios: the assertions are the lines the guest prints, one per check, and each names what it
// proves.
//
// Parts, all real: QEMU 10.2.2 built by scripts/build-qemu-vfio-user.sh into
// ${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/qemu-vfio-user/qemu-system-x86_64
// (POTEMKIN_QEMU_VFIO_USER overrides); Debian 12's kernel and its vfio modules from
// scripts/fetch-linux.sh (POTEMKIN_LINUX_KERNEL overrides the kernel; the modules are taken from
// modules/ beside it); potemkin serve (the build's binary).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "host_device_fakes.hpp"
#include "hostdev/host_device.hpp"
#include "machine/builtins.hpp"
#include "pci/express.hpp"
#include "server_process.hpp"

namespace {

using potemkin::testing::ServerProcess;

std::string cache_dir() {
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != 0)
        return std::string(x) + "/potemkin";
    if (const char* h = std::getenv("HOME"); h != nullptr)
        return std::string(h) + "/.cache/potemkin";
    return "/nonexistent";
}

std::string env_or(const char* name, const std::string& fallback) {
    if (const char* v = std::getenv(name); v != nullptr && *v != 0) return v;
    return fallback;
}

std::string qemu_path() {
    return env_or("POTEMKIN_QEMU_VFIO_USER", cache_dir() + "/qemu-vfio-user/qemu-system-x86_64");
}
std::string kernel_path() {
    return env_or("POTEMKIN_LINUX_KERNEL", cache_dir() + "/linux/vmlinuz");
}
std::string modules_dir() {
    const std::string k = kernel_path();
    return k.substr(0, k.rfind('/') + 1) + "modules";
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A private directory for sockets, logs and the initramfs; removed with everything in it.
class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/potemkin-vfio-user-qemu-XXXXXX";
        if (::mkdtemp(tmpl) != nullptr) path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty() && std::filesystem::remove_all(path_, ec) == static_cast<uintmax_t>(-1))
            std::fprintf(stderr, "removing %s: %s\n", path_.c_str(), ec.message().c_str());
    }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

struct GuestRun {
    int status = -1;      // raw wait status of QEMU
    std::string console;  // the guest's serial console (QEMU's stdout)
    std::string err;      // QEMU's stderr
    double seconds = 0;   // QEMU start to exit
};

// Runs QEMU with stdin and stdout on pipes (the guest's console) and stderr into a file.
// on_output sees the console so far after every read, and the fd that types into the console
// (the test reacts to what the guest prints). A guest that hangs is killed after 280 s, below
// ctest's 300 s, so the failure shows the console.
GuestRun run_qemu(const std::vector<std::string>& args, const std::string& err_path,
                  const std::function<void(const std::string&, int)>& on_output) {
    GuestRun r;
    int out[2], in[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return r;
    if (::pipe2(in, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return r;
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid < 0) {
        for (const int fd : {out[0], out[1], in[0], in[1]}) ::close(fd);
        r.console = "[test: fork failed]";
        return r;
    }
    if (pid == 0) {
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (err < 0 || ::dup2(in[0], 0) != 0 || ::dup2(out[1], 1) != 1 || ::dup2(err, 2) != 2)
            ::_exit(126);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(out[1]);
    ::close(in[0]);
    const auto deadline = start + std::chrono::seconds(280);
    char buf[4096];
    while (true) {
        pollfd p{out[0], POLLIN, 0};
        const int ready = ::poll(&p, 1, 1000);
        if (ready > 0) {
            const ssize_t n = ::read(out[0], buf, sizeof buf);
            if (n <= 0) break;
            r.console.append(buf, static_cast<size_t>(n));
            on_output(r.console, in[1]);
        }
        if (std::chrono::steady_clock::now() > deadline) {
            r.console += "\n[test: QEMU killed after 280 s]\n";
            ::kill(pid, SIGKILL);
            break;
        }
    }
    ::close(out[0]);
    ::close(in[1]);
    ::waitpid(pid, &r.status, 0);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.err = read_file(err_path);
    return r;
}

// The serial console may end lines with \r\n.
bool has_line(const std::string& console, std::string line) {
    line += '\n';
    std::string crlf = line;
    crlf.insert(crlf.size() - 1, "\r");
    return console.find(line) != std::string::npos || console.find(crlf) != std::string::npos;
}

// The server's log lines that report an error reply.
std::vector<std::string> error_replies(const std::string& log) {
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);)
        if (line.find("→ error") != std::string::npos) out.push_back(line);
    return out;
}

std::string vfio_user_device(const std::string& socket, int slot) {
    return R"({"driver":"vfio-user-pci","socket":{"path":")" + socket +
           R"(","type":"unix"},"addr":")" + std::to_string(slot) + R"("})";
}

// A vfio-user-pci device on a given bus (a pcie-root-port's id), at device 0.
std::string vfio_user_device_on(const std::string& socket, const std::string& bus) {
    return R"({"driver":"vfio-user-pci","socket":{"path":")" + socket +
           R"(","type":"unix"},"bus":")" + bus + R"(","addr":"0"})";
}

// The model's own extended chain, in process: what the guest should see.
std::vector<std::string> declared_chain(const std::string& url) {
    potemkin::testing::RecordingEvents events;
    std::vector<std::string> out;
    auto reg = potemkin::machine::register_builtins();
    EXPECT_TRUE(reg) << reg.error().message;
    auto dev = potemkin::hostdev::TransportRegistry::builtin().open(
        url, potemkin::hostdev::OpenContext{&events});
    EXPECT_TRUE(dev) << dev.error().message;
    if (!dev) return out;
    std::vector<uint8_t> cfg(4096);
    EXPECT_TRUE((*dev)->config_read(0, cfg));
    auto chain = potemkin::pci::walk_extended_capabilities(cfg);
    EXPECT_TRUE(chain) << chain.error().message;
    if (chain)
        for (const auto& c : *chain)
            out.push_back(fmt::format("edu_user: multibar ext [{:03x}] {:04x} v{}", c.offset, c.id,
                                      c.version));
    (*dev)->close();
    return out;
}

struct BootSettings {
    bool shared_ram = true;            // guest RAM a shared memfd: DMA_MAP carries fds
    bool iommu = false;                // QEMU's intel-iommu, for vfio-pci in the guest
    std::vector<std::string> devices;  // -device values, in slot order
    std::string initrd;
    std::string guest_args;  // after "--" on the kernel command line: edu_user's options
};

std::vector<std::string> qemu_command(const BootSettings& s) {
    std::vector<std::string> a = {qemu_path(),
                                  "-L",
                                  "/usr/share/seabios",
                                  "-L",
                                  "/usr/share/qemu",
                                  "-accel",
                                  "tcg",
                                  "-cpu",
                                  "max",
                                  "-m",
                                  "256M"};
    if (s.shared_ram) {
        a.insert(a.end(), {"-machine", "q35,memory-backend=ram0", "-object",
                           "memory-backend-memfd,id=ram0,size=256M,share=on"});
    } else {
        a.insert(a.end(), {"-machine", "q35"});
    }
    // Debian's kernel has no vfio no-IOMMU mode (CONFIG_VFIO_NOIOMMU is off): vfio-pci in the
    // guest needs an IOMMU. caching-mode is what QEMU requires for vfio devices behind it;
    // intremap keeps MSI usable through vfio (type1 refuses a group without it).
    if (s.iommu) a.insert(a.end(), {"-device", "intel-iommu,intremap=on,caching-mode=on"});
    a.insert(a.end(), {"-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none",
                       "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"});
    for (const auto& d : s.devices) a.insert(a.end(), {"-device", d});
    // iommu=pt: devices no driver claims (edu, multibar before the vfio part) keep identity
    // DMA, so physical addresses from pagemap work for the sysfs-level DMA checks.
    const std::string append = std::string("console=ttyS0 panic=-1 quiet") +
                               (s.iommu ? " intel_iommu=on iommu=pt" : "") + " -- " + s.guest_args;
    a.insert(a.end(), {"-kernel", kernel_path(), "-initrd", s.initrd, "-append", append});
    return a;
}

class VfioUserQemu : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_FALSE(dir_.path().empty());
        ASSERT_TRUE(exists(qemu_path()))
            << "QEMU with vfio-user-pci is missing: " << qemu_path()
            << "\nBuild it with scripts/build-qemu-vfio-user.sh (scripts/test.sh does)";
        ASSERT_TRUE(exists(kernel_path()))
            << "the Linux interop guest's kernel is missing: " << kernel_path()
            << "\nFetch it with scripts/fetch-linux.sh (scripts/test.sh does)";
        ASSERT_TRUE(exists(POTEMKIN_LINUX_INITRAMFS)) << POTEMKIN_LINUX_INITRAMFS;
    }

    // The initramfs with the vfio modules appended.
    std::string initrd_with_modules() {
        const std::string out = dir_.path() + "/initrd.cpio.gz";
        const std::string cmd = std::string(POTEMKIN_SOURCE_DIR) +
                                "/tests/interop/linux/add-modules.sh '" + out + "' '" +
                                POTEMKIN_LINUX_INITRAMFS + "' '" + modules_dir() + "'";
        EXPECT_EQ(std::system(cmd.c_str()), 0)
            << cmd << "\n(the modules come from scripts/fetch-linux.sh)";
        return out;
    }

    // The console and the end of QEMU's stderr (a dead device costs two stderr lines per guest
    // access, so it can be long).
    std::string context(const GuestRun& r) const {
        constexpr size_t kTail = 8192;
        const std::string err =
            r.err.size() > kTail ? "[...]" + r.err.substr(r.err.size() - kTail) : r.err;
        return "\n--- console ---\n" + r.console + "\n--- QEMU stderr ---\n" + err;
    }

    void expect_lines(const GuestRun& r, const std::vector<const char*>& lines) {
        for (const char* line : lines)
            EXPECT_TRUE(has_line(r.console, line)) << "missing: " << line << context(r);
    }

    TempDir dir_;
};

// Guest RAM shared (memfd, share=on): edu and multibar side by side, one boot.
// Enumeration, registers through mmap'ed BARs, edu DMA into guest RAM straight through the
// mapped memfd, multibar's expansion ROM through sysfs (Linux returns it only for an image with
// a PCI data structure), INTx, MSI and MSI-X delivered to the guest (taken in user space through
// vfio-pci behind QEMU's intel-iommu), then the edu server SIGKILLed under the running guest.
TEST_F(VfioUserQemu, EduAndMultibarWithSharedGuestRam) {
    ServerProcess edu(dir_.path() + "/edu.sock", "edu");
    ServerProcess multibar(dir_.path() + "/multibar.sock", "multibar");
    edu.set_log(dir_.path() + "/edu.log");
    multibar.set_log(dir_.path() + "/multibar.log");
    ASSERT_TRUE(edu.start());
    ASSERT_TRUE(multibar.start());

    BootSettings s;
    s.iommu = true;
    s.devices = {vfio_user_device(dir_.path() + "/edu.sock", 5),
                 vfio_user_device(dir_.path() + "/multibar.sock", 6)};
    s.initrd = initrd_with_modules();
    s.guest_args = "--multibar --rom --vfio-irqs --kill";
    bool killed = false;
    const GuestRun r =
        run_qemu(qemu_command(s), dir_.path() + "/qemu.err",
                 [&](const std::string& console, int console_in) {
                     if (!killed && has_line(console, "edu_user: kill the edu server now")) {
                         edu.kill_hard();  // returns once the server is reaped
                         killed = true;
                         EXPECT_EQ(::write(console_in, "killed\n", 7), 7);
                     }
                 });
    std::printf("guest run: %.1f s\n", r.seconds);
    ASSERT_TRUE(WIFEXITED(r.status)) << context(r);
    // isa-debug-exit: (0x2a << 1) | 1 — every check in the guest passed, and QEMU outlived the
    // edu server.
    EXPECT_EQ(WEXITSTATUS(r.status), 85) << context(r);
    EXPECT_TRUE(killed) << context(r);
    expect_lines(r, {
                        // Enumeration and registers.
                        "edu_user: found /sys/bus/pci/devices/0000:00:05.0",
                        "edu_user: BAR0 is 1 MiB: ok",
                        "edu_user: identification 0x010000ed",
                        "edu_user: liveness 0x12345678 -> 0xedcba987",
                        "edu_user: factorial 10! = 3628800",
                        "edu_user: found multibar /sys/bus/pci/devices/0000:00:06.0",
                        "edu_user: multibar BAR1 ID register: ok",
                        "edu_user: multibar BAR2 pattern: ok",
                        "edu_user: multibar BAR2 write reads back: ok",
                        "edu_user: multibar ROM read through sysfs: ok",
                        // DMA through the shared memfd.
                        "edu_user: DMA data came back intact: ok",
                        // Interrupts.
                        "edu_user: edu INTx through vfio-pci: ok",
                        "edu_user: edu MSI through vfio-pci: ok",
                        "edu_user: multibar MSI-X through vfio-pci: ok",
                        "edu_user: multibar MSI through vfio-pci: ok",
                        "edu_user: multibar INTx through vfio-pci: ok",
                        // The server killed under the running guest.
                        "edu_user: edu answers before the server dies: ok",
                        "edu_user: edu reads all-ones after its server died: ok",
                        "edu_user: and keeps reading all-ones: ok",
                        "edu_user: multibar still answers: ok",
                        "edu_user: PASS (0 failures)",
                    });
    // edu's DMA went through the mapped memfd, never refused.
    EXPECT_EQ(edu.log().find("DMA refused"), std::string::npos) << edu.log();
    // The multibar server served the whole run without dropping QEMU, and is still up (QEMU's
    // exit is an ordinary disconnect).
    EXPECT_TRUE(multibar.running());
    const std::string mlog = multibar.log();
    EXPECT_EQ(mlog.find("dropping the client"), std::string::npos) << mlog;
    // Its only error replies are to DMA_UNMAPs of ranges it never mapped: intel-iommu's
    // address-space switch (when vfio-pci takes the device) unmaps the whole IOVA space in
    // power-of-two pieces, and the server answers ENOENT to each (QEMU logs them, goes on).
    for (const auto& line : error_replies(mlog))
        EXPECT_NE(line.find("DMA_UNMAP"), std::string::npos) << line;
}

// Guest RAM not shared (QEMU's default anonymous RAM): DMA_MAP carries no fds and every edu DMA
// becomes DMA_READ/DMA_WRITE messages that QEMU serves from its main loop. multibar beside it:
// its BARs do not depend on guest RAM.
TEST_F(VfioUserQemu, DmaByMessage) {
    ServerProcess edu(dir_.path() + "/edu.sock", "edu");
    ServerProcess multibar(dir_.path() + "/multibar.sock", "multibar");
    edu.set_log(dir_.path() + "/edu.log");
    multibar.set_log(dir_.path() + "/multibar.log");
    ASSERT_TRUE(edu.start());
    ASSERT_TRUE(multibar.start());

    BootSettings s;
    s.shared_ram = false;
    s.devices = {vfio_user_device(dir_.path() + "/edu.sock", 5),
                 vfio_user_device(dir_.path() + "/multibar.sock", 6)};
    s.initrd = POTEMKIN_LINUX_INITRAMFS;
    s.guest_args = "--multibar";
    const GuestRun r =
        run_qemu(qemu_command(s), dir_.path() + "/qemu.err", [](const std::string&, int) {});
    std::printf("guest run: %.1f s\n", r.seconds);
    const std::string logs =
        "\n--- edu server ---\n" + edu.log() + "\n--- multibar server ---\n" + multibar.log();
    ASSERT_TRUE(WIFEXITED(r.status)) << context(r) << logs;
    EXPECT_EQ(WEXITSTATUS(r.status), 85) << context(r) << logs;
    expect_lines(r, {
                        "edu_user: factorial 10! = 3628800",
                        "edu_user: DMA RAM -> edu completes (polled): ok",
                        "edu_user: DMA edu -> RAM completes (polled): ok",
                        "edu_user: DMA data came back intact: ok",
                        "edu_user: multibar BAR1 ID register: ok",
                        "edu_user: multibar BAR2 pattern: ok",
                        "edu_user: PASS (0 failures)",
                    });
    EXPECT_EQ(edu.log().find("DMA refused"), std::string::npos) << logs;
}

// q35 with multibar's PCIe form behind a pcie-root-port: Linux reads the whole 4 KiB through
// MMCONFIG, sees a PCI Express endpoint and the extended chain the model declares (QEMU's
// vfio-pci rebuilds the chain from what it reads; these three come through as they are).
TEST_F(VfioUserQemu, PcieEndpointBehindARootPort) {
    ServerProcess edu(dir_.path() + "/edu.sock", "edu");
    ServerProcess multibar(dir_.path() + "/multibar.sock", "multibar");
    multibar.set_params({"pcie=1"});
    multibar.set_log(dir_.path() + "/multibar.log");
    ASSERT_TRUE(edu.start());
    ASSERT_TRUE(multibar.start());

    BootSettings s;
    s.devices = {vfio_user_device(dir_.path() + "/edu.sock", 5),
                 "pcie-root-port,id=rp0,chassis=1,bus=pcie.0,addr=7",
                 vfio_user_device_on(dir_.path() + "/multibar.sock", "rp0")};
    s.initrd = POTEMKIN_LINUX_INITRAMFS;
    s.guest_args = "--multibar --pcie";
    const GuestRun r =
        run_qemu(qemu_command(s), dir_.path() + "/qemu.err", [](const std::string&, int) {});
    std::printf("guest run: %.1f s\n", r.seconds);
    // What the guest saw of the device, for the test log (docs/pci.md quotes it).
    std::istringstream console(r.console);
    for (std::string line; std::getline(console, line);)
        if (line.find("edu_user: multibar") != std::string::npos) std::printf("%s\n", line.c_str());
    const std::string logs = "\n--- multibar server ---\n" + multibar.log();
    ASSERT_TRUE(WIFEXITED(r.status)) << context(r) << logs;
    EXPECT_EQ(WEXITSTATUS(r.status), 85) << context(r) << logs;
    expect_lines(r, {
                        "edu_user: found multibar /sys/bus/pci/devices/0000:01:00.0",
                        "edu_user: multibar BAR1 ID register: ok",
                        "edu_user: multibar config is 4096 bytes",
                        "edu_user: multibar sysfs config has 4096 bytes: ok",
                        "edu_user: multibar PCIe device/port type 0",
                        "edu_user: multibar behind 0000:00:07.0, PCIe device/port type 4",
                        "edu_user: multibar serial 1b36ff0100000001",
                        "edu_user: PASS (0 failures)",
                    });
    const std::vector<std::string> chain = declared_chain("inproc:multibar?pcie=1");
    ASSERT_EQ(chain.size(), 3u);
    for (const auto& line : chain) EXPECT_TRUE(has_line(r.console, line)) << line << context(r);
    EXPECT_TRUE(has_line(r.console, "edu_user: multibar extended capabilities: 3")) << context(r);
    // QEMU passes the model's Device and Link Capabilities through unchanged (Device Control is
    // whatever Linux programmed).
    EXPECT_NE(r.console.find("edu_user: multibar PCIe devcap 00008fe1 devctl "), std::string::npos)
        << context(r);
    EXPECT_NE(r.console.find(" lnkcap 00400043 lnksta 0043"), std::string::npos) << context(r);
    // The VSEC's RW1C register: the write reaches the model through QEMU, the low bits clear.
    EXPECT_TRUE(has_line(r.console,
                         "edu_user: multibar VSEC RW1C after writing 0xf: a5a5a5a0 "
                         "(4, 4)"))
        << context(r);
}

// The same device on q35's root bus (pcie.0): QEMU's vfio-pci turns the endpoint into a Root
// Complex Integrated Endpoint (type 9) and clears its Link Capabilities and Link Status (an
// integrated endpoint has no link); the extended chain is unchanged.
TEST_F(VfioUserQemu, PcieEndpointOnTheRootBus) {
    ServerProcess edu(dir_.path() + "/edu.sock", "edu");
    ServerProcess multibar(dir_.path() + "/multibar.sock", "multibar");
    multibar.set_params({"pcie=1"});
    ASSERT_TRUE(edu.start());
    ASSERT_TRUE(multibar.start());
    BootSettings s;
    s.devices = {vfio_user_device(dir_.path() + "/edu.sock", 5),
                 vfio_user_device(dir_.path() + "/multibar.sock", 6)};
    s.initrd = POTEMKIN_LINUX_INITRAMFS;
    s.guest_args = "--multibar --pcie";
    const GuestRun r =
        run_qemu(qemu_command(s), dir_.path() + "/qemu.err", [](const std::string&, int) {});
    std::istringstream console(r.console);
    for (std::string line; std::getline(console, line);)
        if (line.find("edu_user: multibar") != std::string::npos) std::printf("%s\n", line.c_str());
    ASSERT_TRUE(WIFEXITED(r.status)) << context(r);
    EXPECT_EQ(WEXITSTATUS(r.status), 85) << context(r);
    expect_lines(r, {
                        "edu_user: multibar sysfs config has 4096 bytes: ok",
                        "edu_user: multibar PCIe device/port type 9",
                        "edu_user: multibar extended capabilities: 3",
                        "edu_user: PASS (0 failures)",
                    });
    EXPECT_NE(r.console.find(" lnkcap 00000000 lnksta 0000"), std::string::npos) << context(r);
    for (const auto& line : declared_chain("inproc:multibar?pcie=1"))
        EXPECT_TRUE(has_line(r.console, line)) << line << context(r);
}

}  // namespace
