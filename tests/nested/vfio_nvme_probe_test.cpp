// QEMU's nvme (bound to vfio-pci in L1, its 1 MiB image written with pattern=lba by the
// harness) passed through to guests/nvme, which drives the controller and verifies every block;
// and `potemkin probe vfio:...` (the real binary) on both devices.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../guest/guest_runner.hpp"
#include "nested_env.hpp"
#include "vfio/client.hpp"
#include "vm/guest_memory.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

constexpr uint32_t kBlockSize = 512;
constexpr uint32_t kBlocks = 2048;  // the harness's 1 MiB image

// The image the harness wrote (guests/nvme's pattern=lba): each block starts with its LBA
// (little-endian u64), then byte i is (LBA * 13 + i) & 0xff. Its FNV-1a 32 checksum.
uint32_t image_sum() {
    uint32_t h = 0x811c9dc5u;
    for (uint32_t lba = 0; lba < kBlocks; lba++)
        for (uint32_t i = 0; i < kBlockSize; i++) {
            const auto b = static_cast<uint8_t>(i < 8 ? uint64_t{lba} >> (8 * i) : lba * 13u + i);
            h ^= b;
            h *= 0x01000193u;
        }
    return h;
}

std::string hex32(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
}

GuestRun run_nvme(const std::string& device, const std::string& mode) {
    std::string serial = nested::env("POTEMKIN_NESTED_NVME_SERIAL");
    if (serial.empty()) serial = "potemkin-nested";
    return run_guest({.guest = "nvme",
                      .devices_xml = R"(<device class="PCI" id="pci0"/>
    <device class="PCI_PASSTHROUGH" id="nvme0" bus="pci0" slot="4" hostdev="vfio:)" +
                                     device + R"("/>)",
                      .cmdline = "mode=" + mode + " pattern=lba expect_serial=" + serial +
                                 " expect_sum=" + hex32(image_sum()),
                      .timeout_ms = 300000});
}

// Runs `cmd` with the shell; its output (stdout and stderr) and exit status.
std::pair<std::string, int> run_command(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (p == nullptr) return {"popen failed", -1};
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int st = ::pclose(p);
    return {out, WIFEXITED(st) ? WEXITSTATUS(st) : -1};
}

}  // namespace

TEST(NvmePassthrough, TheGuestReadsAndVerifiesTheWholeImageByInterrupt) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_NVME", nvme);
    auto r = run_nvme(nvme, "irq");
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    auto has = [&](const std::string& s) { return r.console.find(s) != std::string::npos; };
    EXPECT_TRUE(has(" 0 failed")) << describe(r);
    EXPECT_TRUE(has("model number: \"QEMU NVMe Ctrl\"")) << describe(r);
    EXPECT_TRUE(has("namespace 1: 2048 blocks of 512 bytes")) << describe(r);
    EXPECT_TRUE(has("checksum: fnv1a32 " + hex32(image_sum()) + " over 1048576 bytes"))
        << describe(r);
    EXPECT_TRUE(has("pattern verified in 2048 blocks")) << describe(r);
    EXPECT_TRUE(has("PASS: every completion signalled by INTx")) << describe(r);
}

TEST(NvmePassthrough, TheGuestReadsAndVerifiesTheWholeImageByPolling) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_NVME", nvme);
    auto r = run_nvme(nvme, "poll");
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_NE(r.console.find("pattern verified in 2048 blocks"), std::string::npos) << describe(r);
}

namespace {

struct NoEvents final : hostdev::HostDeviceEvents {
    unsigned msis = 0;
    void intx(bool) override {}
    void msi(unsigned) override { ++msis; }
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no DMA"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return fail("no DMA"); }
    void disconnected(std::string_view) override {}
};

}  // namespace

// QEMU's nvme has a function reset VFIO can use (edu has none): VFIO_DEVICE_RESET runs, decode
// and bus mastering are off afterwards, and the controller answers again once decode is back.
// (Which controller registers a function reset clears is QEMU's business: its nvme keeps the
// admin queue attributes, so nothing here asserts on them.)
TEST(NvmeHost, ResetRunsTheFunctionResetAndTheControllerAnswersAfterIt) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_NVME", nvme);
    NoEvents events;
    vfio::VfioClientSettings s;
    s.device = nvme;
    s.events = &events;
    auto dev = vfio::VfioClient::open(std::move(s));
    ASSERT_TRUE(dev) << dev.error().message;
    auto info = (*dev)->info();
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->reset_supported);
    const std::array<uint8_t, 2> mem_on{0x06, 0x00};
    ASSERT_TRUE((*dev)->config_write(0x04, mem_on));
    constexpr uint32_t kVs = 0x08;  // Version
    std::array<uint8_t, 4> vs{};
    ASSERT_TRUE((*dev)->region_read(0, kVs, vs));
    EXPECT_NE(vs, (std::array<uint8_t, 4>{}));
    auto r = (*dev)->reset();
    ASSERT_TRUE(r) << r.error().message;
    std::array<uint8_t, 2> cmd{0xff, 0xff};
    ASSERT_TRUE((*dev)->config_read(0x04, cmd));
    EXPECT_EQ(cmd[0] & 0x7, 0);
    ASSERT_TRUE((*dev)->config_write(0x04, mem_on));
    std::array<uint8_t, 4> after{};
    ASSERT_TRUE((*dev)->region_read(0, kVs, after));
    EXPECT_EQ(after, vs);
    (*dev)->close();
}

// MSI-X through VFIO: the admin queues in guest RAM (mapped at IOVA = guest-physical), an
// Identify Controller command, and its completion signalled on MSI-X vector 0 (the eventfd the
// kernel was given for it); the controller DMAs the command in and the data and completion out.
TEST(NvmeHost, AnIdentifyCommandCompletesByMsixWithItsDataInGuestRam) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_NVME", nvme);
    auto mem = vm::GuestMemory::create({{Gpa(0), 16u << 20}});
    ASSERT_TRUE(mem) << mem.error().message;
    NoEvents events;
    vfio::VfioClientSettings s;
    s.device = nvme;
    s.events = &events;
    s.memory = mem->get();
    auto opened = vfio::VfioClient::open(std::move(s));
    ASSERT_TRUE(opened) << opened.error().message;
    auto& dev = **opened;
    auto w32 = [&](uint32_t reg, uint32_t v) {
        std::array<uint8_t, 4> b{};
        std::memcpy(b.data(), &v, 4);
        ASSERT_TRUE(dev.region_write(0, reg, b));
    };
    auto r32 = [&](uint32_t reg) {
        std::array<uint8_t, 4> b{};
        EXPECT_TRUE(dev.region_read(0, reg, b));
        uint32_t v = 0;
        std::memcpy(&v, b.data(), 4);
        return v;
    };
    const std::array<uint8_t, 2> on{0x06, 0x00};  // memory decode, bus mastering
    ASSERT_TRUE(dev.config_write(0x04, on));
    ASSERT_TRUE(dev.set_irqs(hostdev::IrqKind::msix, 1));
    constexpr uint64_t kAsq = 0x10000, kAcq = 0x20000, kData = 0x30000;
    w32(0x14, 0);  // CC.EN = 0: disabled, then wait for CSTS.RDY = 0
    for (int i = 0; i < 100000 && (r32(0x1c) & 1) != 0; ++i) {
    }
    w32(0x24, 0x000f000f);  // AQA: 16 entries each
    w32(0x28, static_cast<uint32_t>(kAsq));
    w32(0x2c, 0);
    w32(0x30, static_cast<uint32_t>(kAcq));
    w32(0x34, 0);
    w32(0x14, 0x00460001);  // CC: EN, IOSQES 6 (64 bytes), IOCQES 4 (16 bytes)
    bool ready = false;
    for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
         !ready && std::chrono::steady_clock::now() < end;)
        ready = (r32(0x1c) & 1) != 0;
    ASSERT_TRUE(ready) << "CSTS.RDY never set; CSTS " << r32(0x1c);
    // Identify Controller: opcode 0x06, CID 7, PRP1 = kData, CDW10 CNS = 1.
    std::array<uint8_t, 64> cmd{};
    cmd[0] = 0x06;
    cmd[2] = 7;
    const uint64_t prp1 = kData;
    std::memcpy(cmd.data() + 24, &prp1, 8);
    cmd[40] = 1;
    ASSERT_TRUE(mem->get()->write(Gpa(kAsq), cmd));
    w32(0x1000, 1);  // SQ 0 tail doorbell (the first doorbell, whatever CAP.DSTRD says)
    bool signalled = false;
    for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
         !signalled && std::chrono::steady_clock::now() < end;) {
        dev.poll_events();
        signalled = events.msis > 0;
        if (!signalled) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(signalled) << "no MSI-X vector 0 signal for the completion";
    std::array<uint8_t, 16> cqe{};
    ASSERT_TRUE(mem->get()->read(Gpa(kAcq), cqe));
    EXPECT_EQ(cqe[12] | cqe[13] << 8, 7) << "completion for another command";
    EXPECT_EQ(cqe[14] & 1, 1) << "phase tag not set: no completion";
    EXPECT_EQ((cqe[14] | cqe[15] << 8) >> 1, 0) << "the command failed";
    std::array<uint8_t, 20> sn{};
    ASSERT_TRUE(mem->get()->read(Gpa(kData + 4), sn));
    std::string serial(sn.begin(), sn.end());
    serial.erase(serial.find_last_not_of(' ') + 1);
    std::string want = nested::env("POTEMKIN_NESTED_NVME_SERIAL");
    if (want.empty()) want = "potemkin-nested";
    EXPECT_EQ(serial, want);
    w32(0x14, 0);
    dev.close();
}

TEST(VfioProbe, ThePotemkinBinaryProbesBothDevices) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_EDU", edu);
    const std::string nvme = nested::env("POTEMKIN_NESTED_NVME");
    auto [out, status] = run_command(std::string(POTEMKIN_BINARY) + " probe vfio:" + edu);
    std::printf("%s", out.c_str());
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("vfio:" + edu + ": "), std::string::npos) << out;
    EXPECT_NE(out.find("Vendor 1234 Device 11e8"), std::string::npos) << out;
    EXPECT_NE(out.find("Region 0: Memory (32-bit, non-prefetchable) [size=1M]"), std::string::npos)
        << out;
    EXPECT_NE(out.find("MSI"), std::string::npos) << out;
    if (nvme.empty()) return;
    auto [nout, nstatus] =
        run_command(std::string(POTEMKIN_BINARY) + " probe /sys/bus/pci/devices/" + nvme);
    // Without the scheme it is not a URL the probe knows: the sysfs form goes after vfio:.
    EXPECT_NE(nstatus, 0) << nout;
    auto [vout, vstatus] =
        run_command(std::string(POTEMKIN_BINARY) + " probe vfio:/sys/bus/pci/devices/" + nvme);
    std::printf("%s", vout.c_str());
    EXPECT_EQ(vstatus, 0) << vout;
    EXPECT_NE(vout.find("Vendor 1b36 Device 0010"), std::string::npos) << vout;
    EXPECT_NE(vout.find("MSI-X"), std::string::npos) << vout;
}

// The setup errors against L1's real sysfs and /dev/vfio: a group opened twice, a device on
// another driver (q35's SATA controller on ahci), a slot with no device.
TEST(VfioErrors, RealKernelRefusalsNameTheDeviceAndWhatToDo) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_EDU", edu);
    NoEvents events;
    auto open = [&](const std::string& device) {
        vfio::VfioClientSettings s;
        s.device = device;
        s.events = &events;
        return vfio::VfioClient::open(std::move(s));
    };
    auto first = open(edu);
    ASSERT_TRUE(first) << first.error().message;
    auto second = open(edu);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message.find("the group is in use"), std::string::npos)
        << second.error().message;
    (*first)->close();
    auto again = open(edu);
    EXPECT_TRUE(again) << "the group was not given back at close: " << again.error().message;

    auto sata = open("0000:00:1f.2");
    ASSERT_FALSE(sata);
    EXPECT_NE(sata.error().message.find("not vfio-pci"), std::string::npos) << sata.error().message;
    auto none = open("0000:00:1e.0");
    ASSERT_FALSE(none);
    EXPECT_NE(none.error().message.find("does not exist"), std::string::npos)
        << none.error().message;
}
