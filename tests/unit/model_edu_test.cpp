// The edu model (QEMU docs/specs/edu.rst) through the inproc transport, as a guest driver
// would see it: identification, liveness, factorial, interrupts (INTx level and MSI), DMA.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "hostdev/host_device.hpp"
#include "inproc/transport.hpp"
#include "models/builtin.hpp"
#include "models/edu.hpp"
#include "pci/registers.hpp"

namespace potemkin::models {
namespace {

using hostdev::IrqKind;

// Guest RAM as a vector; DMA outside it fails as the front-end's would.
class FakeVmm final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool asserted) override { intx_log.push_back(asserted); }
    void msi(unsigned vector) override { msi_log.push_back(vector); }
    Result<void> dma_read(uint64_t a, std::span<uint8_t> out) override {
        if (!inside(a, out.size())) return failf("DMA read at {:#x}", a);
        std::memcpy(out.data(), ram.data() + (a - ram_base), out.size());
        return ok();
    }
    Result<void> dma_write(uint64_t a, std::span<const uint8_t> in) override {
        if (!inside(a, in.size())) return failf("DMA write at {:#x}", a);
        std::memcpy(ram.data() + (a - ram_base), in.data(), in.size());
        return ok();
    }
    bool inside(uint64_t a, size_t n) const {
        return a >= ram_base && a - ram_base <= ram.size() && n <= ram.size() - (a - ram_base);
    }
    void disconnected(std::string_view) override {}

    std::vector<bool> intx_log;
    std::vector<unsigned> msi_log;
    uint64_t ram_base = 0;  // guest-physical address of ram[0]
    std::vector<uint8_t> ram = std::vector<uint8_t>(1 << 20, 0);
};

class EduTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(register_builtin_models(models));
        ASSERT_TRUE(inproc::register_inproc_transport(transports, models));
        open("inproc:edu");
    }
    void open(const std::string& url) {
        auto d = transports.open(url, {&vmm});
        ASSERT_TRUE(d) << d.error().message;
        dev = std::move(d).value();
        edu = dynamic_cast<Edu*>(&dynamic_cast<inproc::InprocHostDevice&>(*dev).server()->model());
        ASSERT_NE(edu, nullptr);
        bus_master(true);  // as a driver does before it starts DMA
    }
    void bus_master(bool on) {
        const uint8_t b[2] = {static_cast<uint8_t>(on ? pci::command::kBusMaster : 0), 0};
        ASSERT_TRUE(dev->config_write(pci::reg::kCommand, std::span<const uint8_t>(b, 2)));
    }
    uint64_t rd(uint64_t offset, unsigned size = 4) {
        uint8_t b[8] = {};
        auto r = dev->region_read(0, offset, std::span(b, size));
        EXPECT_TRUE(r) << r.error().message;
        uint64_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void wr(uint64_t offset, uint64_t value, unsigned size = 4) {
        uint8_t b[8];
        for (unsigned i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(value >> (8 * i));
        auto r = dev->region_write(0, offset, std::span<const uint8_t>(b, size));
        EXPECT_TRUE(r) << r.error().message;
    }
    uint32_t cfg(uint32_t offset, unsigned size) {
        uint8_t b[4] = {};
        EXPECT_TRUE(dev->config_read(offset, std::span(b, size)));
        uint32_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint32_t{b[i]} << (8 * i);
        return v;
    }
    void dma(uint64_t src, uint64_t dst, uint64_t count, uint64_t cmd) {
        wr(Edu::kDmaSource, src, 8);
        wr(Edu::kDmaDestination, dst, 8);
        wr(Edu::kDmaCount, count, 8);
        wr(Edu::kDmaCommand, cmd, 8);
    }

    sdk::ModelRegistry models;
    hostdev::TransportRegistry transports;
    FakeVmm vmm;
    std::unique_ptr<hostdev::HostDevice> dev;
    Edu* edu = nullptr;
};

TEST_F(EduTest, PciIdentityMatchesQemu) {
    EXPECT_EQ(cfg(pci::reg::kVendorId, 2), 0x1234u);
    EXPECT_EQ(cfg(pci::reg::kDeviceId, 2), 0x11e8u);
    EXPECT_EQ(cfg(pci::reg::kRevisionId, 1), 0x10u);
    EXPECT_EQ(cfg(pci::reg::kClassCode, 1) | cfg(pci::reg::kClassCode + 1, 2) << 8, 0x00ff00u);
    EXPECT_EQ(cfg(pci::reg::kInterruptPin, 1), 1u);
    auto bar0 = dev->region_info(0);
    ASSERT_TRUE(bar0);
    EXPECT_EQ(bar0->bar_kind, pci::BarKind::mem32);
    EXPECT_EQ(bar0->size, 1u << 20);
    EXPECT_FALSE(bar0->prefetchable);
    EXPECT_FALSE(dev->region_info(hostdev::kRomRegion)->present());
}

TEST_F(EduTest, Identification) {
    EXPECT_EQ(rd(Edu::kIdentification), 0x010000edu);
}

TEST_F(EduTest, LivenessReadsTheInverse) {
    EXPECT_EQ(rd(Edu::kLiveness), 0u);
    wr(Edu::kLiveness, 0x12345678);
    EXPECT_EQ(rd(Edu::kLiveness), 0xEDCBA987u);
    wr(Edu::kLiveness, 0);
    EXPECT_EQ(rd(Edu::kLiveness), 0xFFFFFFFFu);
}

TEST_F(EduTest, Factorial) {
    wr(Edu::kFactorial, 5);
    EXPECT_EQ(rd(Edu::kStatus) & Edu::kStatusComputing, 0u);
    EXPECT_EQ(rd(Edu::kFactorial), 120u);
    wr(Edu::kFactorial, 12);
    EXPECT_EQ(rd(Edu::kFactorial), 479001600u);
    wr(Edu::kFactorial, 0);
    EXPECT_EQ(rd(Edu::kFactorial), 1u);
    wr(Edu::kFactorial, 13);  // 6227020800 wraps in 32 bits, as edu.c's uint32_t loop
    EXPECT_EQ(rd(Edu::kFactorial), static_cast<uint32_t>(6227020800u));
    EXPECT_TRUE(vmm.intx_log.empty());
}

TEST_F(EduTest, StatusBit7RaisesAnInterruptAfterFactorial) {
    wr(Edu::kStatus, 0x81);  // bit 0 is read-only
    EXPECT_EQ(rd(Edu::kStatus), 0x80u);
    wr(Edu::kFactorial, 4);
    EXPECT_EQ(rd(Edu::kFactorial), 24u);
    EXPECT_EQ(rd(Edu::kIrqStatus), Edu::kFactorialIrq);
    EXPECT_EQ(vmm.intx_log, std::vector<bool>{true});
    wr(Edu::kIrqAck, Edu::kFactorialIrq);
    EXPECT_EQ(vmm.intx_log, (std::vector<bool>{true, false}));
    wr(Edu::kStatus, 0);
    EXPECT_EQ(rd(Edu::kStatus), 0u);
}

TEST_F(EduTest, RaiseAndAcknowledgeFollowIntxLevelSemantics) {
    wr(Edu::kIrqRaise, 0x5);
    EXPECT_EQ(rd(Edu::kIrqStatus), 0x5u);
    EXPECT_EQ(vmm.intx_log, std::vector<bool>{true});
    EXPECT_NE(cfg(pci::reg::kStatus, 2) & pci::status::kInterruptStatus, 0u);
    wr(Edu::kIrqRaise, 0x2);  // already asserted: no new edge
    EXPECT_EQ(vmm.intx_log, std::vector<bool>{true});
    wr(Edu::kIrqAck, 0x1);
    EXPECT_EQ(rd(Edu::kIrqStatus), 0x6u);
    EXPECT_EQ(vmm.intx_log, std::vector<bool>{true});  // still pending: line stays high
    ASSERT_TRUE(dev->ack_intx());                      // EOI while still pending: resample
    EXPECT_EQ(vmm.intx_log, (std::vector<bool>{true, true}));
    wr(Edu::kIrqAck, 0x6);
    EXPECT_EQ(rd(Edu::kIrqStatus), 0u);
    EXPECT_EQ(vmm.intx_log, (std::vector<bool>{true, true, false}));
    ASSERT_TRUE(dev->ack_intx());  // nothing pending: no re-assert
    EXPECT_EQ(vmm.intx_log.back(), false);
    EXPECT_TRUE(vmm.msi_log.empty());
}

TEST_F(EduTest, MsiWhenEnabled) {
    ASSERT_TRUE(dev->set_irqs(IrqKind::msi, 1));
    wr(Edu::kIrqRaise, 0x10);
    EXPECT_EQ(vmm.msi_log, std::vector<unsigned>{0});
    EXPECT_TRUE(vmm.intx_log.empty());
    wr(Edu::kIrqRaise, 0x20);  // every raise sends, as edu.c's msi_notify
    EXPECT_EQ(vmm.msi_log, (std::vector<unsigned>{0, 0}));
    wr(Edu::kIrqAck, 0x30);  // the driver still acknowledges; no INTx traffic
    EXPECT_EQ(rd(Edu::kIrqStatus), 0u);
    EXPECT_TRUE(vmm.intx_log.empty());
    EXPECT_FALSE(dev->set_irqs(IrqKind::msi, 2));   // one vector only
    EXPECT_FALSE(dev->set_irqs(IrqKind::msix, 1));  // no MSI-X
}

TEST_F(EduTest, DmaRoundTripRamToEduToRam) {
    for (size_t i = 0; i < 256; ++i) vmm.ram[0x1000 + i] = static_cast<uint8_t>(i * 7 + 3);
    dma(0x1000, Edu::kDmaBufferAddress + 0x100, 256, Edu::kDmaRun);
    EXPECT_EQ(rd(Edu::kDmaCommand) & Edu::kDmaRun, 0u);  // done at once
    EXPECT_EQ(edu->dma_buffer()[0x100], 3);
    dma(Edu::kDmaBufferAddress + 0x100, 0x8000, 256,
        Edu::kDmaRun | Edu::kDmaToRam | Edu::kDmaIrqWhenDone);
    EXPECT_EQ(rd(Edu::kDmaCommand) & Edu::kDmaRun, 0u);
    EXPECT_TRUE(
        std::equal(vmm.ram.begin() + 0x1000, vmm.ram.begin() + 0x1100, vmm.ram.begin() + 0x8000));
    EXPECT_EQ(rd(Edu::kIrqStatus), Edu::kDmaIrq);
    EXPECT_EQ(vmm.intx_log, std::vector<bool>{true});
    EXPECT_EQ(edu->refused_dma(), 0u);
    // The registers read back what was written (8 and 4-byte reads).
    EXPECT_EQ(rd(Edu::kDmaSource, 8), Edu::kDmaBufferAddress + 0x100);
    EXPECT_EQ(rd(Edu::kDmaDestination), 0x8000u);
    EXPECT_EQ(rd(Edu::kDmaCount, 8), 256u);
}

TEST_F(EduTest, DmaIsRefusedWhileBusMasteringIsOff) {
    vmm.ram[0x1000] = 0x77;
    bus_master(false);
    dma(0x1000, Edu::kDmaBufferAddress, 1, Edu::kDmaRun | Edu::kDmaIrqWhenDone);
    EXPECT_EQ(edu->refused_dma(), 1u);
    EXPECT_EQ(edu->dma_buffer()[0], 0);  // nothing transferred
    EXPECT_EQ(rd(Edu::kDmaCommand) & Edu::kDmaRun, 0u);
    EXPECT_EQ(rd(Edu::kIrqStatus), Edu::kDmaIrq);  // completion still signalled
    bus_master(true);
    dma(0x1000, Edu::kDmaBufferAddress, 1, Edu::kDmaRun);
    EXPECT_EQ(edu->refused_dma(), 1u);
    EXPECT_EQ(edu->dma_buffer()[0], 0x77);
}

// The model side of "DMA after the reply": the command write only queues the transfer; the
// transport runs it once the write has returned (inproc: before region_write returns).
TEST_F(EduTest, DmaRunsAsDeferredWorkAfterTheCommandWrite) {
    vmm.ram[0x1000] = 0x42;
    auto& server = *dynamic_cast<inproc::InprocHostDevice&>(*dev).server();
    wr(Edu::kDmaSource, 0x1000, 8);
    wr(Edu::kDmaDestination, Edu::kDmaBufferAddress, 8);
    wr(Edu::kDmaCount, 1, 8);
    // Straight to the model, as a transport's dispatch does: nothing transferred yet.
    edu->bar_write(0, Edu::kDmaCommand, 8, Edu::kDmaRun);
    EXPECT_TRUE(server.has_deferred());
    EXPECT_EQ(edu->dma_buffer()[0], 0);
    EXPECT_EQ(edu->bar_read(0, Edu::kDmaCommand, 8) & Edu::kDmaRun, Edu::kDmaRun);
    edu->bar_write(0, Edu::kDmaSource, 8, 0x2000);  // ignored while the transfer is pending
    EXPECT_EQ(edu->bar_read(0, Edu::kDmaSource, 8), 0x1000u);
    server.run_deferred();
    EXPECT_FALSE(server.has_deferred());
    EXPECT_EQ(edu->dma_buffer()[0], 0x42);
    EXPECT_EQ(edu->bar_read(0, Edu::kDmaCommand, 8) & Edu::kDmaRun, 0u);
}

TEST_F(EduTest, ResetDropsAPendingDma) {
    vmm.ram[0x1000] = 0x42;
    auto& server = *dynamic_cast<inproc::InprocHostDevice&>(*dev).server();
    wr(Edu::kDmaSource, 0x1000, 8);
    wr(Edu::kDmaDestination, Edu::kDmaBufferAddress, 8);
    wr(Edu::kDmaCount, 1, 8);
    edu->bar_write(0, Edu::kDmaCommand, 8, Edu::kDmaRun);
    server.reset();
    EXPECT_FALSE(server.has_deferred());
    server.run_deferred();
    EXPECT_EQ(edu->dma_buffer()[0], 0);
}

TEST_F(EduTest, WholeBufferDmaIsInRange) {
    dma(0, Edu::kDmaBufferAddress, Edu::kDmaBufferSize, Edu::kDmaRun);
    EXPECT_EQ(edu->refused_dma(), 0u);
}

TEST_F(EduTest, OutOfRangeDmaIsRefusedNotFatal) {
    vmm.ram[0x2000] = 0xAB;
    const struct {
        uint64_t src, dst, count, cmd;
    } bad[] = {
        {0x2000, Edu::kDmaBufferAddress + 4000, 200, Edu::kDmaRun},    // runs past the buffer
        {0x2000, Edu::kDmaBufferAddress - 1, 1, Edu::kDmaRun},         // before the buffer
        {0x2000, Edu::kDmaBufferAddress, 0, Edu::kDmaRun},             // count 0 (edu.c aborts)
        {0x2000, Edu::kDmaBufferAddress, ~uint64_t{0}, Edu::kDmaRun},  // count wraps
        {0x10000000, Edu::kDmaBufferAddress, 16, Edu::kDmaRun},  // RAM side beyond 28-bit mask
        {Edu::kDmaBufferAddress, 0x0FFFFFF8, 16, Edu::kDmaRun | Edu::kDmaToRam},  // crosses mask
        {0x200000, Edu::kDmaBufferAddress, 16, Edu::kDmaRun},  // guest memory refuses
    };
    uint64_t expected = 0;
    for (const auto& b : bad) {
        dma(b.src, b.dst, b.count, b.cmd | Edu::kDmaIrqWhenDone);
        EXPECT_EQ(edu->refused_dma(), ++expected) << std::hex << b.src << " " << b.dst;
        EXPECT_EQ(rd(Edu::kDmaCommand) & Edu::kDmaRun, 0u);
    }
    EXPECT_EQ(edu->dma_buffer()[0], 0);  // nothing transferred
    // Completion is still signalled so a waiting driver does not hang.
    EXPECT_EQ(rd(Edu::kIrqStatus), Edu::kDmaIrq);
}

TEST_F(EduTest, DmaMaskParameter) {
    open("inproc:edu?dma_mask=0xFFFFFFFF");
    vmm.ram_base = 0x10000000;  // RAM just beyond the default 28-bit mask
    vmm.ram[0] = 0x5A;
    dma(0x10000000, Edu::kDmaBufferAddress, 1, Edu::kDmaRun);
    EXPECT_EQ(edu->refused_dma(), 0u);
    EXPECT_EQ(edu->dma_buffer()[0], 0x5A);
    EXPECT_FALSE(transports.open("inproc:edu?dma_mask=lots", {&vmm}));
    EXPECT_FALSE(transports.open("inproc:edu?dma_limit=4096", {&vmm}));
}

TEST_F(EduTest, CommandWithoutStartBitIsIgnored) {
    wr(Edu::kDmaCommand, Edu::kDmaToRam, 8);
    EXPECT_EQ(rd(Edu::kDmaCommand, 8), 0u);
}

TEST_F(EduTest, BadAccessSizesReadAllOnesAndAreIgnored) {
    EXPECT_EQ(rd(Edu::kIdentification, 1), 0xFFu);
    EXPECT_EQ(rd(Edu::kIdentification, 2), 0xFFFFu);
    EXPECT_EQ(rd(Edu::kIdentification, 8), ~uint64_t{0});  // 8 bytes only from 0x80
    wr(Edu::kLiveness, 0x1234, 2);
    EXPECT_EQ(rd(Edu::kLiveness), 0u);  // ignored
    wr(Edu::kDmaSource, 0x42, 2);
    EXPECT_EQ(rd(Edu::kDmaSource, 8), 0u);
    EXPECT_EQ(rd(Edu::kDmaSource, 2), 0xFFFFu);
    // A 4-byte write sets the whole 64-bit register; the upper half is no register.
    wr(Edu::kDmaSource, 0x1111111122222222, 8);
    wr(Edu::kDmaSource, 0x33333333, 4);
    EXPECT_EQ(rd(Edu::kDmaSource, 8), 0x33333333u);
    EXPECT_EQ(rd(Edu::kDmaSource + 4), 0xFFFFFFFFu);
    // Unlisted offsets read all-ones.
    EXPECT_EQ(rd(0x10), 0xFFFFFFFFu);
    EXPECT_EQ(rd(0xFFFFC), 0xFFFFFFFFu);
}

TEST_F(EduTest, ResetReturnsToPowerOnState) {
    wr(Edu::kLiveness, 1);
    wr(Edu::kFactorial, 3);
    wr(Edu::kIrqRaise, 1);
    ASSERT_TRUE(dev->reset());
    EXPECT_EQ(rd(Edu::kLiveness), 0u);
    EXPECT_EQ(rd(Edu::kFactorial), 0u);
    EXPECT_EQ(rd(Edu::kIrqStatus), 0u);
    EXPECT_EQ(vmm.intx_log, (std::vector<bool>{true, false}));
}

}  // namespace
}  // namespace potemkin::models
