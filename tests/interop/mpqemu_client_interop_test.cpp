// potemkin as the front-end, real QEMU (Debian 12's 7.2, `-machine x-remote`) hosting its nvme
// device over mpqemu (docs/interop.md). Each test starts its own QEMU (about 0.3 s) with a raw
// disk image the test creates.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "../guest/guest_runner.hpp"
#include "machine/builtins.hpp"
#include "mpqemu/client.hpp"
#include "vm/guest_memory.hpp"

using namespace potemkin;
using namespace std::chrono_literals;

namespace {

// NVMe 1.4 controller registers (section 3.1).
constexpr uint64_t kCap = 0x00, kVs = 0x08, kIntms = 0x0C, kCc = 0x14, kCsts = 0x1C, kAqa = 0x24,
                   kAsq = 0x28, kAcq = 0x30, kSq0Tail = 0x1000, kCq0Head = 0x1004;

class RecordingEvents final : public hostdev::HostDeviceEvents {
  public:
    explicit RecordingEvents(vm::GuestMemory* mem) : mem_(mem) {}
    void intx(bool asserted) override {
        level = asserted;
        if (asserted) ++asserts;
    }
    void msi(unsigned) override { ++msis; }
    Result<void> dma_read(uint64_t a, std::span<uint8_t> out) override {
        return mem_->read(Gpa{a}, out);
    }
    Result<void> dma_write(uint64_t a, std::span<const uint8_t> in) override {
        return mem_->write(Gpa{a}, in);
    }
    void disconnected(std::string_view why) override {
        ++disconnects;
        last_why = std::string(why);
    }
    void reconnected() override { ++reconnects; }
    bool level = false;
    int asserts = 0, msis = 0, disconnects = 0, reconnects = 0;
    std::string last_why;

  private:
    vm::GuestMemory* mem_;
};

struct Disk {
    std::string path;
    explicit Disk(const char* what) {
        path = (std::filesystem::temp_directory_path() /
                ("potemkin-nvme-" + std::string(what) + "-" + std::to_string(::getpid()) + ".raw"))
                   .string();
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.seekp((1 << 20) - 1);
        f.put('\0');
    }
    ~Disk() { std::filesystem::remove(path); }
};

std::string nvme_url(const Disk& d) {
    return "qemu:nvme,drive=" + d.path + ",serial=pk1?qemu=" POTEMKIN_QEMU;
}

struct Opened {
    std::unique_ptr<vm::GuestMemory> mem;
    std::unique_ptr<RecordingEvents> events;
    std::unique_ptr<hostdev::HostDevice> dev;
};

Opened open_nvme(const Disk& disk, const std::string& params = "") {
    Opened o;
    if (auto b = machine::register_builtins(); !b) ADD_FAILURE() << b.error().message;
    auto mem = vm::GuestMemory::create({{Gpa{0}, 16u << 20}});
    EXPECT_TRUE(mem) << mem.error().message;
    o.mem = std::move(*mem);
    o.events = std::make_unique<RecordingEvents>(o.mem.get());
    hostdev::OpenContext ctx;
    ctx.events = o.events.get();
    ctx.memory = o.mem.get();
    auto dev = hostdev::TransportRegistry::builtin().open(nvme_url(disk) + params, ctx);
    EXPECT_TRUE(dev) << dev.error().message;
    if (dev) o.dev = std::move(*dev);
    return o;
}

uint64_t rd(hostdev::HostDevice& d, uint64_t off, size_t n) {
    uint8_t b[8] = {};
    EXPECT_TRUE(d.region_read(0, off, std::span(b, n)));
    uint64_t v = 0;
    std::memcpy(&v, b, n);
    return v;
}
void wr(hostdev::HostDevice& d, uint64_t off, uint64_t v, size_t n) {
    uint8_t b[8];
    std::memcpy(b, &v, n);
    EXPECT_TRUE(d.region_write(0, off, std::span<const uint8_t>(b, n)));
}
uint32_t cfg(hostdev::HostDevice& d, uint32_t off, size_t n) {
    uint8_t b[4] = {};
    EXPECT_TRUE(d.config_read(off, std::span(b, n)));
    uint32_t v = 0;
    std::memcpy(&v, b, n);
    return v;
}

// Polls `cond` while letting the client deliver what its thread queued; bounded.
template <typename F>
bool eventually(hostdev::HostDevice& d, F cond) {
    auto* c = dynamic_cast<mpqemu::MpqemuClient*>(&d);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (c) c->poll_events();
        if (cond()) return true;
        std::this_thread::sleep_for(1ms);
    }
    return false;
}

// The QEMU processes this test process started (children of any of its threads).
std::vector<pid_t> qemu_children() {
    std::vector<pid_t> out;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream children(task.path() / "children");
        pid_t pid;
        while (children >> pid) {
            std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
            std::string name;
            comm >> name;
            if (name.rfind("qemu-system", 0) == 0) out.push_back(pid);
        }
    }
    return out;
}

}  // namespace

TEST(MpqemuInterop, NvmeIdentityRegionsAndRegisters) {
    Disk disk("ids");
    auto o = open_nvme(disk);
    ASSERT_TRUE(o.dev);
    auto& d = *o.dev;
    EXPECT_EQ(cfg(d, 0x00, 2), 0x1b36u);
    EXPECT_EQ(cfg(d, 0x02, 2), 0x0010u);
    EXPECT_EQ(cfg(d, 0x08, 4) >> 8, 0x010802u);  // class: mass storage, NVM, NVMe
    EXPECT_EQ(cfg(d, 0x3d, 1), 1u);              // INTA
    // Bytes 0xFD-0xFF are read through the dword at 0xFC (the remote refuses offset + 4 > 256).
    uint8_t tail[3];
    EXPECT_TRUE(d.config_read(0xFD, tail));
    std::vector<uint8_t> beyond(4);
    EXPECT_FALSE(d.config_read(0x100, beyond));

    auto bar0 = d.region_info(0);
    ASSERT_TRUE(bar0);
    EXPECT_EQ(bar0->bar_kind, pci::BarKind::mem64);
    EXPECT_EQ(bar0->size, 16u * 1024);
    auto bar1 = d.region_info(1);
    ASSERT_TRUE(bar1);
    EXPECT_FALSE(bar1->present());

    const uint64_t cap = rd(d, kCap, 8);
    EXPECT_EQ(cap & 0xFFFF, 0x7FFu);    // MQES: QEMU's default 2048 entries, 0-based
    EXPECT_NE(cap & (1ull << 37), 0u);  // CSS: NVM command set
    EXPECT_EQ(rd(d, kVs, 4), 0x00010400u);
    // Two 4-byte halves read the same CAP.
    EXPECT_EQ(rd(d, kCap, 4) | (rd(d, kCap + 4, 4) << 32), cap);
    // Out of the BAR: refused locally, the remote lives on.
    uint8_t b[4];
    EXPECT_FALSE(d.region_read(0, 16 * 1024, b));
    EXPECT_FALSE(d.region_read(2, 0, b));
    EXPECT_EQ(rd(d, kVs, 4), 0x00010400u);
    EXPECT_EQ(o.events->disconnects, 0);
}

// The admin queue in guest RAM: Identify Controller is DMA'd through the memfd sent with
// SYNC_SYSMEM, the completion raises INTx through the irqfd, and the CQ doorbell (the handler's
// acknowledgement) lowers it.
TEST(MpqemuInterop, NvmeIdentifyByDmaWithIntx) {
    Disk disk("identify");
    auto o = open_nvme(disk);
    ASSERT_TRUE(o.dev);
    auto& d = *o.dev;
    auto& mem = *o.mem;
    constexpr uint64_t sq = 0x10000, cq = 0x11000, buf = 0x12000;
    // Bus master + memory space (the client keeps decode on in the remote anyway).
    const uint8_t cmd[2] = {0x06, 0x00};
    ASSERT_TRUE(d.config_write(0x04, cmd));
    wr(d, kCc, 0, 4);
    ASSERT_TRUE(eventually(d, [&] { return (rd(d, kCsts, 4) & 1) == 0; }));
    wr(d, kAqa, (3u << 16) | 3u, 4);
    wr(d, kAsq, sq, 8);
    wr(d, kAcq, cq, 8);
    wr(d, kIntms, 0, 4);
    wr(d, kCc, (4u << 20) | (6u << 16) | 1u, 4);
    ASSERT_TRUE(eventually(d, [&] { return (rd(d, kCsts, 4) & 1) == 1; }));

    std::array<uint32_t, 16> sqe{};
    sqe[0] = 0x06 | (7u << 16);  // Identify, command id 7
    sqe[6] = static_cast<uint32_t>(buf);
    sqe[10] = 1;  // CNS 1: controller
    ASSERT_TRUE(mem.write_obj(Gpa{sq}, sqe));
    wr(d, kSq0Tail, 1, 4);
    ASSERT_TRUE(eventually(d, [&] {
        auto dw3 = mem.read_obj<uint32_t>(Gpa{cq + 12});
        return dw3 && (*dw3 & (1u << 16)) != 0;  // phase tag flipped to 1
    }));
    const uint32_t dw3 = *mem.read_obj<uint32_t>(Gpa{cq + 12});
    EXPECT_EQ(dw3 & 0xFFFF, 7u);                            // command id
    EXPECT_EQ((dw3 >> 17) & 0x7FFF, 0u);                    // status: success
    EXPECT_EQ(*mem.read_obj<uint16_t>(Gpa{buf}), 0x1b36u);  // Identify: PCI vendor id
    std::array<char, 3> serial{};
    ASSERT_TRUE(mem.read(Gpa{buf + 4}, std::span(reinterpret_cast<uint8_t*>(serial.data()), 3)));
    EXPECT_EQ(std::string(serial.data(), 3), "pk1");

    ASSERT_TRUE(eventually(d, [&] { return o.events->level; })) << "no INTx from the completion";
    EXPECT_EQ(o.events->asserts, 1);
    wr(d, kCq0Head, 1, 4);         // consumed: the device lowers its line
    EXPECT_TRUE(o.events->level);  // held until the EOI, as a level line at the PIC is
    ASSERT_TRUE(d.ack_intx());     // the EOI: dropped, and the remote does not fire again
    EXPECT_FALSE(o.events->level);
    for (int i = 0; i < 200 && !o.events->level; ++i) {  // 200 ms for a wrong re-fire
        dynamic_cast<mpqemu::MpqemuClient&>(d).poll_events();
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_FALSE(o.events->level);
    EXPECT_EQ(o.events->asserts, 1);
    EXPECT_EQ(o.events->msis, 0);
    EXPECT_EQ(o.events->disconnects, 0);
}

TEST(MpqemuInterop, ResetReprogramsTheRemote) {
    Disk disk("reset");
    auto o = open_nvme(disk);
    ASSERT_TRUE(o.dev);
    auto& d = *o.dev;
    ASSERT_TRUE(d.reset());
    EXPECT_EQ(rd(d, kVs, 4), 0x00010400u);  // BAR0 decodes again after DEVICE_RESET
    EXPECT_EQ(o.events->disconnects, 0);
}

// Interop test 3 of issue 5: the remote is SIGKILLed mid-run; potemkin survives, reads return
// all-ones, writes are dropped, and the front-end hears about it once.
TEST(MpqemuInterop, KilledRemoteReadsAllOnes) {
    Disk disk("kill");
    auto o = open_nvme(disk);
    ASSERT_TRUE(o.dev);
    auto* c = dynamic_cast<mpqemu::MpqemuClient*>(o.dev.get());
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(rd(*o.dev, kVs, 4), 0x00010400u);
    ASSERT_GT(c->qemu_pid(), 0);
    ASSERT_EQ(::kill(c->qemu_pid(), SIGKILL), 0);
    ASSERT_TRUE(eventually(*o.dev, [&] {
        uint8_t b[4];
        return !o.dev->region_read(0, kVs, b);
    }));
    uint8_t b[4] = {};
    EXPECT_FALSE(o.dev->region_read(0, kVs, b));
    EXPECT_EQ(b[0] & b[1] & b[2] & b[3], 0xFF);
    EXPECT_FALSE(o.dev->config_read(0, b));
    EXPECT_EQ(b[0] & b[1], 0xFF);
    EXPECT_FALSE(o.dev->region_write(0, kCc, b));
    EXPECT_FALSE(c->connected());
    ASSERT_TRUE(eventually(*o.dev, [&] { return o.events->disconnects > 0; }));
    EXPECT_EQ(o.events->disconnects, 1);
    EXPECT_NE(o.events->last_why.find("qemu:nvme"), std::string::npos) << o.events->last_why;
    o.dev->close();
}

TEST(MpqemuInterop, FailingQemuIsReportedWithItsStderr) {
    ASSERT_TRUE(machine::register_builtins());
    RecordingEvents events(nullptr);
    hostdev::OpenContext ctx;
    ctx.events = &events;
    auto dev =
        hostdev::TransportRegistry::builtin().open("qemu:no-such-device?qemu=" POTEMKIN_QEMU, ctx);
    ASSERT_FALSE(dev);
    const auto& m = dev.error().message;
    EXPECT_NE(m.find("qemu:no-such-device"), std::string::npos) << m;
    EXPECT_NE(m.find("no-such-device"), std::string::npos) << m;
    EXPECT_NE(m.find("exited with status"), std::string::npos) << m;
}

// PCI_FRONT projects QEMU's nvme into a guest: pcitest enumerates it and assigns its 64-bit
// BAR0.
TEST(MpqemuInterop, PciFrontShowsNvmeToAGuest) {
    Disk disk("guest");
    auto r = potemkin::testing::run_guest(
        {.guest = "pcitest",
         .devices_xml = R"(<device class="PCI" id="pci0"/>)"
                        R"(<device class="PCI_FRONT" id="nvme0" bus="pci0" hostdev=")" +
                        nvme_url(disk) + R"(" slot="5"/>)"});
    EXPECT_NE(r.console.find("00:05.0 0108: 1b36:0010 (rev 02)"), std::string::npos)
        << potemkin::testing::describe(r);
    EXPECT_NE(r.console.find("BAR0: mem64"), std::string::npos) << potemkin::testing::describe(r);
    EXPECT_NE(r.console.find("[size 0x4000]"), std::string::npos) << potemkin::testing::describe(r);
}

// Interop test 3 through a whole VM: a guest keeps reading nvme's VS register through PCI_FRONT
// while the test SIGKILLs QEMU; the VM survives, the guest sees all-ones and exits normally.
TEST(MpqemuInterop, GuestSurvivesItsQemuBeingKilled) {
    Disk disk("guestkill");
    std::mutex mu;
    std::condition_variable cv;
    std::string console;
    auto wait_for = [&](const std::string& text, std::chrono::seconds limit) {
        std::unique_lock lk(mu);
        return cv.wait_for(lk, limit, [&] { return console.find(text) != std::string::npos; });
    };
    const std::string devices = R"(<device class="PCI" id="pci0"/>)"
                                R"(<device class="PCI_FRONT" id="nvme0" bus="pci0" hostdev=")" +
                                nvme_url(disk) + R"(" slot="5"/>)";
    auto doc = vm::ConfigDocument::load_string(
        potemkin::testing::vm_xml({.guest = "mpqkill", .devices_xml = devices}), "test.xml");
    ASSERT_TRUE(doc) << doc.error().message;
    auto cfg = vm::parse_vm_config(*doc);
    ASSERT_TRUE(cfg) << cfg.error().message;
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.timeout = 60s;
    s.console = [&](std::string_view text) {
        {
            std::lock_guard lk(mu);
            console.append(text);
        }
        cv.notify_all();
    };
    const auto before = qemu_children();
    auto m = machine::Machine::create(std::move(s));
    ASSERT_TRUE(m) << m.error().message;
    std::vector<pid_t> mine;
    for (pid_t p : qemu_children())
        if (std::find(before.begin(), before.end(), p) == before.end()) mine.push_back(p);
    ASSERT_EQ(mine.size(), 1u);

    machine::RunResult result;
    std::thread vm([&] { result = (*m)->run(); });
    const bool phase1 = wait_for("phase 1", 30s);
    bool gone = false;
    if (phase1) {
        EXPECT_EQ(::kill(mine[0], SIGKILL), 0);
        gone = wait_for("all-ones", 30s);
    }
    vm.join();  // bounded by the VM's timeout
    const std::string text = [&] {
        std::lock_guard lk(mu);
        return console;
    }();
    ASSERT_TRUE(phase1) << text << result.message;
    EXPECT_TRUE(gone) << text;
    EXPECT_EQ(result.outcome, machine::RunOutcome::exited) << result.message << "\n" << text;
    EXPECT_EQ(result.exit_value, 0u) << text;
    EXPECT_NE(text.find("mpqkill: done"), std::string::npos) << text;
}

// The QEMU child inherits its socket at fd 3 and nothing else of ours, not even fds without
// close-on-exec.
TEST(MpqemuInterop, QemuInheritsOnlyItsSocket) {
    int leak[2];
    ASSERT_EQ(::pipe(leak), 0);  // deliberately without O_CLOEXEC
    auto link = [](const std::string& path) {
        std::error_code ec;
        auto t = std::filesystem::read_symlink(path, ec);
        return ec ? std::string() : t.string();
    };
    const std::string leak_name = link("/proc/self/fd/" + std::to_string(leak[0]));
    Disk disk("fds");
    auto o = open_nvme(disk);
    ASSERT_TRUE(o.dev);
    auto* c = dynamic_cast<mpqemu::MpqemuClient*>(o.dev.get());
    ASSERT_NE(c, nullptr);
    const std::string dir = "/proc/" + std::to_string(c->qemu_pid()) + "/fd";
    EXPECT_EQ(link(dir + "/3").rfind("socket:", 0), 0u) << link(dir + "/3");
    EXPECT_EQ(link(dir + "/0"), "/dev/null");
    EXPECT_EQ(link(dir + "/1"), "/dev/null");
    for (const auto& e : std::filesystem::directory_iterator(dir))
        EXPECT_NE(link(e.path().string()), leak_name) << e.path();
    ::close(leak[0]);
    ::close(leak[1]);
}

// `potemkin probe qemu:nvme,...` prints the lspci-like view of the device QEMU hosts.
TEST(MpqemuInterop, ProbePrintsTheDevice) {
    Disk disk("probe");
    const std::string cmd = std::string(POTEMKIN_BINARY) + " probe '" + nvme_url(disk) + "' 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("[0108]"), std::string::npos) << out;
    EXPECT_NE(out.find("IDs: 1b36:0010"), std::string::npos) << out;
    EXPECT_NE(out.find("Interrupt: pin A"), std::string::npos) << out;
    EXPECT_NE(out.find("Region 0: Memory (64-bit, non-prefetchable) [size=16K]"), std::string::npos)
        << out;
    EXPECT_EQ(out.find("Region 1:"), std::string::npos) << out;
}

// e1000 has what nvme lacks: an I/O BAR and an expansion ROM (QEMU's iPXE image). The ROM is
// read through the ROM BAR the client programs in the remote; the I/O BAR is reached at the
// port the client gave it.
TEST(MpqemuInterop, E1000IoBarAndRom) {
    ASSERT_TRUE(machine::register_builtins());
    RecordingEvents events(nullptr);
    hostdev::OpenContext ctx;
    ctx.events = &events;
    auto dev = hostdev::TransportRegistry::builtin().open("qemu:e1000?qemu=" POTEMKIN_QEMU, ctx);
    ASSERT_TRUE(dev) << dev.error().message;
    auto& d = **dev;
    EXPECT_EQ(cfg(d, 0x00, 4), 0x100e8086u);
    EXPECT_EQ(d.region_info(0)->bar_kind, pci::BarKind::mem32);
    EXPECT_EQ(d.region_info(1)->bar_kind, pci::BarKind::io);
    auto rom = d.region_info(6);
    ASSERT_TRUE(rom);
    ASSERT_EQ(rom->bar_kind, pci::BarKind::rom);
    uint8_t sig[2] = {};
    ASSERT_TRUE(d.region_read(6, 0, sig));
    EXPECT_EQ(sig[0], 0x55);  // PCI expansion ROM header signature (PCI 3.0 6.3.1.1)
    EXPECT_EQ(sig[1], 0xAA);
    uint8_t w[4] = {};
    EXPECT_FALSE(d.region_write(6, 0, w));

    // QEMU's e1000 implements its I/O window as a stub (reads 0, writes ignored), so only the
    // decode is checked: a port the remote does not decode would have made it exit.
    const uint32_t ioaddr = 0x8;
    ASSERT_TRUE(d.region_write(1, 0, std::span(reinterpret_cast<const uint8_t*>(&ioaddr), 4)));
    uint8_t iodata[4] = {};
    ASSERT_TRUE(d.region_read(1, 4, iodata));
    EXPECT_NE(rd(d, 0x8, 4), 0xFFFFFFFFu);       // STATUS through BAR0
    EXPECT_FALSE(d.region_read(1, 64, iodata));  // past the 64-byte I/O BAR: never sent
    EXPECT_EQ(cfg(d, 0x00, 2), 0x8086u);         // the remote is still there
    EXPECT_EQ(events.disconnects, 0);
    d.close();
}

// qemu:...?respawn=1: a killed QEMU is replaced; guest RAM, interrupts, the BAR layout, the
// guest's command bits and the config bytes it wrote are restored, and the front-end hears
// disconnected() then reconnected().
TEST(MpqemuInterop, RespawnRestoresTheDevice) {
    Disk disk("respawn");
    auto o = open_nvme(disk, "&respawn=1");
    ASSERT_TRUE(o.dev);
    auto& d = *o.dev;
    auto* c = dynamic_cast<mpqemu::MpqemuClient*>(o.dev.get());
    ASSERT_NE(c, nullptr);
    const uint8_t cmd[2] = {0x06, 0x00};  // memory + bus master
    ASSERT_TRUE(d.config_write(0x04, cmd));
    const uint8_t cls = 0x10;  // cache line size: a plain read-write byte
    ASSERT_TRUE(d.config_write(0x0C, std::span(&cls, 1)));
    const pid_t first = c->qemu_pid();
    ASSERT_EQ(::kill(first, SIGKILL), 0);
    ASSERT_TRUE(eventually(d, [&] { return o.events->reconnects > 0; }));
    EXPECT_EQ(o.events->disconnects, 1);
    EXPECT_EQ(c->respawns(), 1u);
    EXPECT_NE(c->qemu_pid(), first);
    EXPECT_TRUE(c->connected());
    EXPECT_EQ(rd(d, kVs, 4), 0x00010400u);
    EXPECT_EQ(cfg(d, 0x0C, 1), 0x10u);
    EXPECT_EQ(cfg(d, 0x04, 2) & 0x6, 0x6u);
}
