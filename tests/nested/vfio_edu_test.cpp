// QEMU's edu, a real (emulated by L0) PCI function bound to vfio-pci in L1, through the vfio:
// transport: directly as a HostDevice (the IOMMU mapping, DMA both ways and outside guest RAM,
// INTx, MSI, reset), and passed through to a potemkin guest (PCI_PASSTHROUGH, guests/pcitest).
// QEMU 7.2's edu aborts QEMU on a 4096-byte DMA: every DMA here is smaller (nested.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "../guest/guest_runner.hpp"
#include "devices/pci_front.hpp"
#include "nested_env.hpp"
#include "vfio/client.hpp"
#include "vm/guest_memory.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

constexpr uint32_t kId = 0x00, kLiveness = 0x04, kFactorial = 0x08, kStatus = 0x20,
                   kIrqStatus = 0x24, kIrqRaise = 0x60, kIrqAck = 0x64, kDmaSrc = 0x80,
                   kDmaDst = 0x88, kDmaCount = 0x90, kDmaCmd = 0x98;
constexpr uint32_t kDmaBuffer = 0x40000;
constexpr uint32_t kDmaToRam = 0x2, kDmaStart = 0x1;
constexpr uint64_t kRam = 16u << 20;

struct Recorder final : hostdev::HostDeviceEvents {
    bool line = false;
    unsigned intx_rises = 0, msis = 0, dma_calls = 0;
    void intx(bool asserted) override {
        if (asserted && !line) ++intx_rises;
        line = asserted;
    }
    void msi(unsigned) override { ++msis; }
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override {
        ++dma_calls;
        return fail("the IOMMU does DMA, not the VMM");
    }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override {
        ++dma_calls;
        return fail("the IOMMU does DMA, not the VMM");
    }
    void disconnected(std::string_view) override {}
};

class EduHost : public ::testing::Test {
  protected:
    void SetUp() override {
        POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_EDU", edu);
        auto m = vm::GuestMemory::create({{Gpa(0), kRam}});
        ASSERT_TRUE(m) << m.error().message;
        memory_ = std::move(*m);
        vfio::VfioClientSettings s;
        s.device = edu;
        s.events = &events_;
        s.memory = memory_.get();
        auto c = vfio::VfioClient::open(std::move(s));
        ASSERT_TRUE(c) << c.error().message;
        dev_ = std::move(*c);
    }
    void TearDown() override {
        if (dev_) dev_->close();
    }

    uint32_t rd(uint32_t reg) {
        std::array<uint8_t, 4> b{};
        auto r = dev_->region_read(0, reg, b);
        EXPECT_TRUE(r) << r.error().message;
        uint32_t v = 0;
        std::memcpy(&v, b.data(), 4);
        return v;
    }
    void wr(uint32_t reg, uint32_t v) {
        std::array<uint8_t, 4> b{};
        std::memcpy(b.data(), &v, 4);
        auto r = dev_->region_write(0, reg, b);
        EXPECT_TRUE(r) << r.error().message;
    }
    void wr64(uint32_t reg, uint64_t v) {
        wr(reg, static_cast<uint32_t>(v));
        wr(reg + 4, static_cast<uint32_t>(v >> 32));
    }
    uint16_t command() {
        std::array<uint8_t, 2> b{};
        EXPECT_TRUE(dev_->config_read(0x04, b));
        return static_cast<uint16_t>(b[0] | b[1] << 8);
    }
    void set_command(uint16_t v) {
        std::array<uint8_t, 2> b{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
        auto r = dev_->config_write(0x04, b);
        ASSERT_TRUE(r) << r.error().message;
    }
    // Starts a DMA and waits for edu to finish it (true) or gives up after 2 s.
    bool dma(uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd) {
        wr64(kDmaSrc, src);
        wr64(kDmaDst, dst);
        wr(kDmaCount, count);
        wr(kDmaCmd, cmd | kDmaStart);
        for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
             std::chrono::steady_clock::now() < end;)
            if ((rd(kDmaCmd) & kDmaStart) == 0) return true;
        return false;
    }
    // Delivers what the poll thread queued until `done` or 2 s pass.
    template <typename F>
    bool wait_events(F done) {
        for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
             std::chrono::steady_clock::now() < end;) {
            dev_->poll_events();
            if (done()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return false;
    }

    Recorder events_;
    std::unique_ptr<vm::GuestMemory> memory_;
    std::unique_ptr<vfio::VfioClient> dev_;
};

// Every message the kernel logged since boot (/dev/kmsg, as root).
std::string kernel_log() {
    std::string out;
    const int fd = ::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return "(/dev/kmsg: " + std::string(std::strerror(errno)) + ")";
    char rec[8192];
    for (;;) {
        const ssize_t n = ::read(fd, rec, sizeof rec);
        if (n < 0 && errno == EPIPE) continue;  // a record was overwritten: go on
        if (n <= 0) break;
        out.append(rec, static_cast<size_t>(n));
    }
    if (::close(fd) != 0) out += "(closing /dev/kmsg: " + std::string(std::strerror(errno)) + ")";
    return out;
}

}  // namespace

TEST_F(EduHost, IdentifiesAsEduWithItsBarAndInterrupts) {
    auto info = dev_->info();
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_GE(info->num_regions, 8u);
    EXPECT_GE(info->num_irqs, 3u);
    std::array<uint8_t, 4> ids{};
    ASSERT_TRUE(dev_->config_read(0, ids));
    EXPECT_EQ(ids, (std::array<uint8_t, 4>{0x34, 0x12, 0xe8, 0x11}));
    auto bar0 = dev_->region_info(0);
    ASSERT_TRUE(bar0) << bar0.error().message;
    EXPECT_EQ(bar0->size, 1u << 20);
    EXPECT_EQ(bar0->bar_kind, pci::BarKind::mem32);
    // vfio-pci lets BAR0 be mmapped: PCI_FRONT maps it straight into the guest.
    EXPECT_GE(bar0->fd, 0);
    ASSERT_FALSE(bar0->mmap_areas.empty());
    EXPECT_EQ(bar0->mmap_areas.front().size, 1u << 20);
    auto bar1 = dev_->region_info(1);
    ASSERT_TRUE(bar1);
    EXPECT_FALSE(bar1->present());
    set_command(0x2);  // memory decode: BAR accesses reach the device
    EXPECT_EQ(rd(kId), 0x010000edu);
    wr(kLiveness, 0x12345678);
    EXPECT_EQ(rd(kLiveness), ~0x12345678u);
    wr(kFactorial, 6);
    for (int i = 0; i < 100000 && (rd(kStatus) & 1) != 0; ++i) {
    }
    EXPECT_EQ(rd(kFactorial), 720u);
    std::printf("edu: %u regions, %u interrupt indexes, reset %s\n", info->num_regions,
                info->num_irqs, info->reset_supported ? "supported" : "not offered by VFIO");
    const auto st = dev_->stats();
    EXPECT_TRUE(st.type1v2);
    EXPECT_EQ(st.dma_mappings, 1u);
    EXPECT_EQ(st.dma_bytes, kRam);
}

TEST_F(EduHost, DmaGoesThroughTheIommuToGuestRamBothWays) {
    set_command(0x6);  // memory decode and bus mastering
    std::array<uint8_t, 2000> src{};
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 7 + 3);
    ASSERT_TRUE(memory_->write(Gpa(0x10000), src));
    ASSERT_TRUE(dma(0x10000, kDmaBuffer, src.size(), 0));
    ASSERT_TRUE(dma(kDmaBuffer, 0x80000, src.size(), kDmaToRam));
    std::array<uint8_t, 2000> back{};
    ASSERT_TRUE(memory_->read(Gpa(0x80000), back));
    EXPECT_EQ(back, src);
    EXPECT_EQ(events_.dma_calls, 0u) << "the VMM was asked to copy: the IOMMU should have";
}

TEST_F(EduHost, ADmaOutsideGuestRamIsBlockedAndTheVmmLivesOn) {
    set_command(0x6);
    std::array<uint8_t, 256> src{};
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(0xa5 ^ i);
    ASSERT_TRUE(memory_->write(Gpa(0x10000), src));
    ASSERT_TRUE(dma(0x10000, kDmaBuffer, src.size(), 0));
    // 16 MiB + 0x30000: no RAM there, no IOMMU mapping. A device without an IOMMU (or a VMM
    // truncating addresses) would write host memory; here the IOMMU refuses it.
    const std::string before = kernel_log();
    EXPECT_TRUE(dma(kDmaBuffer, kRam + 0x30000, src.size(), kDmaToRam));
    std::array<uint8_t, 256> at{};
    ASSERT_TRUE(memory_->read(Gpa(0x30000), at));
    EXPECT_EQ(at, (std::array<uint8_t, 256>{})) << "the DMA landed in guest RAM, wrapped";
    // Still alive and the device still works, DMA into RAM included.
    EXPECT_EQ(rd(kId), 0x010000edu);
    ASSERT_TRUE(dma(kDmaBuffer, 0x50000, src.size(), kDmaToRam));
    std::array<uint8_t, 256> back{};
    ASSERT_TRUE(memory_->read(Gpa(0x50000), back));
    EXPECT_EQ(back, src);
    const std::string after = kernel_log();
    EXPECT_NE(after.substr(std::min(before.size(), after.size())).find("DMAR"), std::string::npos)
        << "no DMAR fault logged by L1's kernel; its log since: "
        << after.substr(std::min(before.size(), after.size()));
}

TEST_F(EduHost, IntxIsHeldUntilTheAckAndMsiIsDeliveredPerRaise) {
    set_command(0x6);  // an MSI is a memory write by the device: bus mastering on
    wr(kIrqRaise, 0x1);
    ASSERT_TRUE(wait_events([&] { return events_.line; })) << "INTx not delivered";
    EXPECT_EQ(rd(kIrqStatus), 0x1u);
    // Still asserted at the EOI: it comes again.
    ASSERT_TRUE(dev_->ack_intx());
    EXPECT_TRUE(wait_events([&] { return events_.line && events_.intx_rises == 2; }))
        << "a level still asserted at the EOI was not delivered again";
    // Acknowledged in the device, then EOI: the line stays down.
    wr(kIrqAck, 0x1);
    ASSERT_TRUE(dev_->ack_intx());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    dev_->poll_events();
    EXPECT_FALSE(events_.line);
    EXPECT_EQ(events_.intx_rises, 2u);

    // MSI: edu's one vector. The front-end has shadowed the capability; the kernel programs it.
    ASSERT_TRUE(dev_->set_irqs(hostdev::IrqKind::msi, 1));
    for (unsigned i = 1; i <= 20; ++i) {
        wr(kIrqRaise, 0x4);
        ASSERT_TRUE(wait_events([&] { return events_.msis == i; })) << "MSI " << i;
        wr(kIrqAck, 0x4);
    }
    EXPECT_EQ(events_.intx_rises, 2u) << "INTx while MSI was enabled";
    ASSERT_TRUE(dev_->set_irqs(hostdev::IrqKind::intx, 1));
    wr(kIrqRaise, 0x8);
    EXPECT_TRUE(wait_events([&] { return events_.intx_rises == 3; })) << "INTx after MSI";
    wr(kIrqAck, 0x8);
    EXPECT_TRUE(dev_->ack_intx());
    EXPECT_GE(dev_->stats().interrupts, 23u);
}

TEST_F(EduHost, ResetTurnsDecodeAndBusMasteringOffAndRearmsIntx) {
    set_command(0x6);
    ASSERT_TRUE(dev_->set_irqs(hostdev::IrqKind::msi, 1));
    auto r = dev_->reset();
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(command() & 0x7, 0) << "decode or bus mastering survived the reset";
    set_command(0x2);
    wr(kIrqRaise, 0x10);
    EXPECT_TRUE(wait_events([&] { return events_.line; })) << "INTx not armed after the reset";
    EXPECT_EQ(events_.msis, 0u);
    wr(kIrqAck, 0x10);
    EXPECT_TRUE(dev_->ack_intx());
}

// ---- Passed through to a potemkin guest --------------------------------------------------------

TEST(EduPassthrough, PcitestPassesEveryCheckWithEveryBarAccessTrapped) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_EDU", edu);
    // mmap=0: no direct mapping, every register access is a pread/pwrite on the device fd.
    LiveGuest g({.guest = "pcitest",
                 .devices_xml = R"(<device class="PCI" id="pci0"/>
    <device class="PCI_PASSTHROUGH" id="edu0" bus="pci0" slot="3" hostdev="vfio:)" +
                                edu + R"(?mmap=0"/>)",
                 .cmdline = "edu_dma=1000",
                 .timeout_ms = 240000});
    ASSERT_EQ(g.error(), "");
    const auto& r = g.join();
    const std::string console = g.console();
    ASSERT_EQ(r.outcome, RunOutcome::exited) << r.message << "\n" << console;
    EXPECT_EQ(r.process_status(), 0) << console;
    EXPECT_NE(console.find(" 0 failed"), std::string::npos) << console;
    EXPECT_NE(console.find("edu: 1000 bytes went to the device and came back intact"),
              std::string::npos)
        << console;
    auto* front = g.machine().devices().find_as<devices::PciFront>("edu0");
    ASSERT_NE(front, nullptr);
    EXPECT_FALSE(front->direct_base(0).has_value());
    EXPECT_GT(front->trapped_accesses(), 100u);
    EXPECT_EQ(front->host_errors(), 0u);
}

TEST(EduPassthrough, PcitestPassesEveryCheckOnThePhysicalEdu) {
    POTEMKIN_NESTED_DEVICE_OR_SKIP("POTEMKIN_NESTED_EDU", edu);
    LiveGuest g({.guest = "pcitest",
                 .devices_xml = R"(<device class="PCI" id="pci0"/>
    <device class="PCI_PASSTHROUGH" id="edu0" bus="pci0" slot="3" device=")" +
                                edu + R"("/>)",
                 .cmdline = "edu_dma=2048",
                 .timeout_ms = 240000});
    ASSERT_EQ(g.error(), "");
    const auto& r = g.join();
    const std::string console = g.console();
    ASSERT_EQ(r.outcome, RunOutcome::exited) << r.message << "\n" << console;
    EXPECT_EQ(r.process_status(), 0) << console;
    auto has = [&](const std::string& s) { return console.find(s) != std::string::npos; };
    EXPECT_TRUE(has(" 0 failed")) << console;
    EXPECT_TRUE(has("00:03.0 00ff: 1234:11e8 (rev 10) irq 11 pin A")) << console;
    EXPECT_TRUE(has("  BAR0: mem32 0xc0000000 [size 0x100000]")) << console;
    EXPECT_TRUE(has("edu: 5! = 120, 10! = 3628800")) << console;
    EXPECT_TRUE(has("edu: 2048 bytes went to the device and came back intact")) << console;
    EXPECT_TRUE(has("-- edu BAR0 relocation")) << console;
    EXPECT_TRUE(has("-- edu MSI")) << console;
    // BAR0 ends up mapped straight into the guest at its relocated address: the register
    // accesses did not all trap (only those made while decode was being switched could).
    auto* front = g.machine().devices().find_as<devices::PciFront>("edu0");
    ASSERT_NE(front, nullptr);
    const auto base = front->direct_base(0);
    ASSERT_TRUE(base.has_value()) << "BAR0 is not mapped directly";
    EXPECT_NE(*base, 0xc0000000u) << "the mapping did not follow the relocation";
    EXPECT_EQ(front->host_errors(), 0u);
    std::printf("edu0: BAR0 mapped at %#llx; %llu BAR accesses trapped\n",
                static_cast<unsigned long long>(*base),
                static_cast<unsigned long long>(front->trapped_accesses()));
}
