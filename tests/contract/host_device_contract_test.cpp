// The transport contract suite (ARCHITECTURE.md section 7, layer 2): one list of HostDevice
// behaviours (hostdev/host_device.hpp) run against every transport with the same model,
// testing::ContractModel. Each test drives the device only through HostDevice calls, as a
// front-end would; events come back through OpenContext::post onto this thread (the "engine
// thread"), and the tests wait for them, bounded, never for a guessed time. What a transport
// cannot do by design is skipped with its reason (transports.hpp); docs/testing.md lists them.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "contract_model.hpp"
#include "host_device_fakes.hpp"
#include "pci/registers.hpp"
#include "sdk/model_server.hpp"
#include "transports.hpp"

namespace potemkin::testing {
namespace {

using namespace std::chrono_literals;
using hostdev::IrqKind;
using Kind = RecordingEvents::Kind;
using M = ContractModel;

constexpr uint32_t kIoBar = 0;
constexpr uint32_t kMmioBar = 1;
constexpr uint32_t kMem64Bar = 2;
constexpr uint64_t kRamSize = 1 << 20;
// Long enough for an interrupt that should NOT come to have shown up if a transport sent it;
// only used to check absence, so a slow machine can make such a test pass wrongly, never fail.
constexpr auto kQuiet = 200ms;

std::string name_of(const ::testing::TestParamInfo<ContractParam>& info) {
    return param_name(info.param);
}

class HostDeviceContract : public ::testing::TestWithParam<ContractParam> {
  protected:
    void SetUp() override {
        auto ram = make_guest_ram(kRamSize);
        ASSERT_TRUE(ram) << ram.error().message;
        ram_ = std::move(ram).value();
        events_ = std::make_unique<RecordingEvents>(ram_.get());
        harness_ = make_harness(GetParam().kind);
        ASSERT_NE(harness_, nullptr);
        traits_ = harness_->traits();
        hostdev::OpenContext ctx;
        ctx.events = events_.get();
        ctx.memory = ram_.get();
        if (GetParam().post) ctx.post = queue_.poster();
        ctx.external_source = [this](int d) { external_ += d; };
        auto dev = harness_->open(ctx);
        ASSERT_TRUE(dev) << dev.error().message;
        dev_ = std::move(dev).value();
        if (!GetParam().post) {
            queue_.set_poke([this] {
                if (dev_) (void)dev_->info();
            });
        }
    }

    void TearDown() override {
        if (dev_) dev_->close();
        queue_.run_pending();
        dev_.reset();
        if (harness_) {
            harness_->kill();
            EXPECT_TRUE(harness_->server_result()) << harness_->server_result().error().message;
        }
        harness_.reset();
        queue_.run_pending();
        EXPECT_EQ(external_.load(), 0) << "external sources still held after close()";
        if (events_) {
            EXPECT_EQ(events_->off_thread_calls(), 0u) << "events off the engine thread";
        }
    }

    // ---- Access helpers (a failure is reported, and the test goes on) ---------------------
    std::vector<uint8_t> read(uint32_t region, uint64_t offset, size_t n) {
        std::vector<uint8_t> out(n);
        auto r = dev_->region_read(region, offset, out);
        EXPECT_TRUE(r) << "read of " << n << " bytes at region " << region << " offset " << offset
                       << ": " << r.error().message;
        return out;
    }
    void write(uint32_t region, uint64_t offset, const std::vector<uint8_t>& in) {
        auto r = dev_->region_write(region, offset, in);
        EXPECT_TRUE(r) << "write of " << in.size() << " bytes at region " << region << " offset "
                       << offset << ": " << r.error().message;
    }
    uint64_t read_le(uint32_t region, uint64_t offset, unsigned size) {
        const auto b = read(region, offset, size);
        uint64_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void write_le(uint32_t region, uint64_t offset, unsigned size, uint64_t value) {
        std::vector<uint8_t> b(size);
        for (unsigned i = 0; i < size; ++i) b[i] = static_cast<uint8_t>(value >> (8 * i));
        write(region, offset, b);
    }
    uint32_t reg(uint64_t offset) { return static_cast<uint32_t>(read_le(kMmioBar, offset, 4)); }
    void set_reg(uint64_t offset, uint32_t value) { write_le(kMmioBar, offset, 4, value); }
    std::vector<uint8_t> config(uint32_t offset, size_t n) {
        std::vector<uint8_t> out(n);
        auto r = dev_->config_read(offset, out);
        EXPECT_TRUE(r) << "config read at " << offset << ": " << r.error().message;
        return out;
    }
    uint32_t config_le(uint32_t offset, unsigned size) {
        const auto b = config(offset, size);
        uint32_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint32_t{b[i]} << (8 * i);
        return v;
    }
    void set_config(uint32_t offset, const std::vector<uint8_t>& in) {
        auto r = dev_->config_write(offset, in);
        EXPECT_TRUE(r) << "config write at " << offset << ": " << r.error().message;
    }

    // Raises the model's INTx and waits for the front-end to hear it.
    void assert_intx() {
        set_reg(M::kRegIntx, 1);
        ASSERT_TRUE(queue_.wait_until([&] { return events_->intx_level(); }))
            << "no intx(true) after the model raised its line";
    }

    // Every size at several offsets of a BAR's storage [start, end): what was written reads
    // back, at the same size and byte by byte (little-endian).
    void check_round_trips(uint32_t region, uint64_t start, uint64_t end) {
        uint8_t seed = 0x10;
        for (unsigned size : {1u, 2u, 4u, 8u}) {
            for (uint64_t offset : {start, start + size, (start + end) / 2, end - size}) {
                offset &= ~uint64_t{size - 1};
                SCOPED_TRACE(::testing::Message() << size << " bytes at " << offset);
                std::vector<uint8_t> bytes(size);
                for (unsigned i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed + i);
                seed = static_cast<uint8_t>(seed + 0x11);
                write(region, offset, bytes);
                EXPECT_EQ(read(region, offset, size), bytes);
                for (unsigned i = 0; i < size; ++i)
                    EXPECT_EQ(read_le(region, offset + i, 1), bytes[i]) << "byte " << i;
                uint64_t value = 0;
                for (unsigned i = 0; i < size; ++i) value |= uint64_t{bytes[i]} << (8 * i);
                EXPECT_EQ(read_le(region, offset, size), value) << "little-endian value";
            }
        }
    }

    // Bus Master Enable in the command register, as a driver sets it before DMA.
    void bus_master(bool on) {
        set_config(pci::reg::kCommand,
                   {static_cast<uint8_t>(on ? pci::command::kBusMaster : 0), 0});
    }
    // The DMA registers: address, length, then the command; returns the status. Bus mastering
    // goes on first unless `master` says otherwise.
    uint32_t run_dma(uint64_t address, uint32_t length, uint32_t command, bool master = true) {
        bus_master(master);
        write_le(kMmioBar, M::kRegDmaAddress, 8, address);
        set_reg(M::kRegDmaLength, length);
        set_reg(M::kRegDmaCommand, command);
        return reg(M::kRegDmaStatus);
    }

    // MSI or MSI-X with every vector; then the INTx line stays quiet, and leaving the mode
    // stops the messages.
    void check_message_interrupts(IrqKind kind) {
        if (traits_.no_msi != nullptr) {
            EXPECT_FALSE(dev_->set_irqs(kind, 1)) << "must refuse, not pretend";
            GTEST_SKIP() << traits_.no_msi;
        }
        auto r = dev_->set_irqs(kind, M::kVectors);
        ASSERT_TRUE(r) << r.error().message;
        for (unsigned v : {2u, 0u, 3u, 1u}) {
            const size_t mark = events_->size();
            set_reg(M::kRegDoorbell, v);
            EXPECT_TRUE(queue_.wait_until([&] { return events_->has_msi(v, mark); }))
                << "vector " << v << " did not arrive";
        }
        const size_t mark = events_->size();
        set_reg(M::kRegIntx, 1);
        queue_.settle(kQuiet);
        EXPECT_EQ(events_->count_intx(true, mark), 0u) << "INTx in a message mode";
        // Back to INTx, as a front-end does when the guest clears the enable bit: the doorbell
        // sends no more messages and the INTx line works again.
        set_reg(M::kRegIntx, 0);
        ASSERT_TRUE(dev_->set_irqs(IrqKind::intx, 1));
        queue_.run_pending();
        const size_t after = events_->size();
        set_reg(M::kRegDoorbell, 1);
        assert_intx();
        queue_.settle(kQuiet);
        EXPECT_EQ(events_->count(Kind::msi, after), 0u) << "a message after leaving the mode";
    }

    std::unique_ptr<vm::GuestMemory> ram_;
    EngineQueue queue_;
    std::unique_ptr<RecordingEvents> events_;
    std::atomic<int> external_{0};
    std::unique_ptr<TransportHarness> harness_;
    TransportTraits traits_{};
    std::unique_ptr<hostdev::HostDevice> dev_;
};

// ---- Identity and regions -------------------------------------------------------------------

TEST_P(HostDeviceContract, RegionInfoDescribesTheModelsBars) {
    auto info = dev_->info();
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_GE(info->num_regions, hostdev::kPciRegionCount);
    EXPECT_GE(info->num_irqs, 1u);
    EXPECT_TRUE(info->reset_supported);

    struct Want {
        uint32_t index;
        std::optional<pci::BarKind> kind;
        uint64_t size;
        bool prefetchable;
    };
    for (const Want& w :
         {Want{0, pci::BarKind::io, M::kIoSize, false},
          Want{1, pci::BarKind::mem32, M::kMmioSize, false},
          Want{2, pci::BarKind::mem64, M::kMem64Size, true}, Want{3, std::nullopt, 0, false},
          Want{4, std::nullopt, 0, false}, Want{5, std::nullopt, 0, false},
          Want{hostdev::kRomRegion, pci::BarKind::rom, M::kRomSize, false}}) {
        SCOPED_TRACE(::testing::Message() << "region " << w.index);
        auto r = dev_->region_info(w.index);
        ASSERT_TRUE(r) << r.error().message;
        EXPECT_EQ(r->bar_kind, w.kind);
        EXPECT_EQ(r->size, w.size);
        if (w.size == 0) continue;
        EXPECT_EQ(r->prefetchable, w.prefetchable);
        EXPECT_TRUE(r->readable);
        EXPECT_EQ(r->writable, w.index != hostdev::kRomRegion);
    }
    auto cfg = dev_->region_info(hostdev::kConfigRegion);
    ASSERT_TRUE(cfg) << cfg.error().message;
    EXPECT_EQ(cfg->size, traits_.config_size);
    EXPECT_FALSE(cfg->bar_kind.has_value());
}

// ---- Config space ---------------------------------------------------------------------------

TEST_P(HostDeviceContract, ConfigReadGivesTheModelsIdentity) {
    namespace reg = pci::reg;
    EXPECT_EQ(config_le(reg::kVendorId, 2), M::kVendor);
    EXPECT_EQ(config_le(reg::kDeviceId, 2), M::kDevice);
    EXPECT_EQ(config_le(reg::kVendorId, 4), uint32_t{M::kDevice} << 16 | M::kVendor);
    EXPECT_EQ(config(reg::kVendorId, 2), (std::vector<uint8_t>{0x36, 0x1b}));  // little-endian
    EXPECT_EQ(config_le(reg::kRevisionId, 1), M::kRevision);
    EXPECT_EQ(config_le(reg::kClassCode, 1) | config_le(reg::kClassCode + 1, 2) << 8, M::kClass);
    EXPECT_EQ(config_le(reg::kSubsystemVendorId, 2), M::kVendor);
    EXPECT_EQ(config_le(reg::kSubsystemId, 2), M::kDevice);
    EXPECT_EQ(config_le(reg::kInterruptPin, 1), 1u);  // INTA#
    // The same bytes through region 7.
    std::vector<uint8_t> ids(4);
    ASSERT_TRUE(dev_->region_read(hostdev::kConfigRegion, 0, ids));
    EXPECT_EQ(ids, (std::vector<uint8_t>{0x36, 0x1b, 0x0c, 0xff}));
}

TEST_P(HostDeviceContract, ConfigCapabilitiesAreTheModels) {
    // The reference: the same model behind a ModelServer in this test, no transport.
    auto reference = sdk::ModelServer::create(std::make_unique<M>(), nullptr);
    ASSERT_TRUE(reference) << reference.error().message;
    const uint32_t n = traits_.config_size;
    std::vector<uint8_t> want(n);
    ASSERT_TRUE((*reference)->config_read(0, want));
    const auto got = config(0, n);
    EXPECT_EQ(got[pci::reg::kCapabilityPointer], want[pci::reg::kCapabilityPointer]);
    EXPECT_NE(want[pci::reg::kCapabilityPointer], 0) << "the model has MSI and MSI-X";
    // Capabilities (MSI, MSI-X, and for a 4096-byte space the extended ones): the model's bytes.
    EXPECT_TRUE(std::equal(got.begin() + pci::reg::kHeaderEnd, got.end(),
                           want.begin() + pci::reg::kHeaderEnd));
}

TEST_P(HostDeviceContract, ConfigWritableRegistersRoundTrip) {
    namespace reg = pci::reg;
    set_config(reg::kInterruptLine, {0x5a});
    EXPECT_EQ(config_le(reg::kInterruptLine, 1), 0x5au);
    set_config(reg::kCacheLineSize, {0x10, 0x40});  // cache line size and latency timer
    EXPECT_EQ(config_le(reg::kCacheLineSize, 2), 0x4010u);
    EXPECT_EQ(config_le(reg::kLatencyTimer, 1), 0x40u);
    // Read-only registers keep their value.
    set_config(reg::kVendorId, {0xff, 0xff, 0xff, 0xff});
    EXPECT_EQ(config_le(reg::kVendorId, 4), uint32_t{M::kDevice} << 16 | M::kVendor);
    set_config(reg::kInterruptPin, {4});
    EXPECT_EQ(config_le(reg::kInterruptPin, 1), 1u);
}

TEST_P(HostDeviceContract, ConfigExtendedSpaceIsReachable) {
    if (traits_.no_extended_config != nullptr) {
        std::vector<uint8_t> out(4);
        EXPECT_FALSE(dev_->config_read(0x100, out)) << "must fail, not invent bytes";
        GTEST_SKIP() << traits_.no_extended_config;
    }
    auto reference = sdk::ModelServer::create(std::make_unique<M>(), nullptr);
    ASSERT_TRUE(reference) << reference.error().message;
    std::vector<uint8_t> want(4096 - 0x100);
    ASSERT_TRUE((*reference)->config_read(0x100, want));
    EXPECT_EQ(config(0x100, want.size()), want);
    EXPECT_EQ(config(0xFFC, 4), std::vector<uint8_t>(want.end() - 4, want.end()));
}

TEST_P(HostDeviceContract, ConfigAccessBeyondTheSpaceFails) {
    std::vector<uint8_t> out(4);
    EXPECT_FALSE(dev_->config_read(traits_.config_size, out));
    EXPECT_FALSE(dev_->config_read(traits_.config_size - 2, out));
    // And the device still answers.
    EXPECT_EQ(config_le(pci::reg::kVendorId, 2), M::kVendor);
}

// ---- BARs -----------------------------------------------------------------------------------

TEST_P(HostDeviceContract, IoBarReadsBackEverySize) {
    check_round_trips(kIoBar, 0, M::kIoSize);
}

TEST_P(HostDeviceContract, Mem32BarReadsBackEverySize) {
    check_round_trips(kMmioBar, M::kScratchStart, M::kScratchEnd);
}

TEST_P(HostDeviceContract, Mem64BarReadsBackEverySize) {
    check_round_trips(kMem64Bar, 0, M::kMem64Size);
}

TEST_P(HostDeviceContract, RegistersAreLittleEndian) {
    // The model computes the ID as a 32-bit value; its bytes arrive in memory order.
    EXPECT_EQ(read(kMmioBar, M::kRegId, 4), (std::vector<uint8_t>{'C', 'T', 'R', 'T'}));
    EXPECT_EQ(reg(M::kRegId), M::kId);
    // A 64-bit register written whole reads back in dwords, low first.
    write_le(kMmioBar, M::kRegDmaAddress, 8, 0x0123'4567'89ab'cdefull);
    EXPECT_EQ(reg(M::kRegDmaAddress), 0x89ab'cdefu);
    EXPECT_EQ(reg(M::kRegDmaAddress + 4), 0x0123'4567u);
    // The MEM64 BAR's power-on pattern, byte by byte and as one 8-byte value.
    uint64_t want = 0;
    for (unsigned i = 0; i < 8; ++i) want |= uint64_t{M::mem64_pattern(0x40 + i)} << (8 * i);
    EXPECT_EQ(read_le(kMem64Bar, 0x40, 8), want);
}

TEST_P(HostDeviceContract, BulkAccessesRoundTrip) {
    const auto data = test_pattern(100);
    // Aligned, and starting at an odd offset (split into naturally aligned pieces).
    write(kMem64Bar, 0x200, data);
    EXPECT_EQ(read(kMem64Bar, 0x200, data.size()), data);
    write(kMmioBar, M::kScratchStart + 3, data);
    EXPECT_EQ(read(kMmioBar, M::kScratchStart + 3, data.size()), data);
    const std::vector<uint8_t> io(test_pattern(M::kIoSize, 0x33));
    write(kIoBar, 0, io);
    EXPECT_EQ(read(kIoBar, 0, io.size()), io);
}

TEST_P(HostDeviceContract, AccessOutsideABarFails) {
    std::vector<uint8_t> out(4);
    EXPECT_FALSE(dev_->region_read(kIoBar, M::kIoSize, out));
    EXPECT_FALSE(dev_->region_read(kMmioBar, M::kMmioSize - 2, out));
    EXPECT_FALSE(dev_->region_read(3, 0, out)) << "the upper half of a 64-bit BAR is absent";
    const std::vector<uint8_t> in(4, 0xAB);
    EXPECT_FALSE(dev_->region_write(kMem64Bar, M::kMem64Size, in));
    EXPECT_EQ(reg(M::kRegId), M::kId) << "the device still answers";
}

TEST_P(HostDeviceContract, RomReadsTheImageAndRefusesWrites) {
    EXPECT_EQ(read(hostdev::kRomRegion, 0, 2), (std::vector<uint8_t>{0x55, 0xAA}));
    const std::string s = M::kRomString;
    const auto got = read(hostdev::kRomRegion, M::kRomStringOffset, s.size());
    EXPECT_EQ(std::string(got.begin(), got.end()), s);
    const std::vector<uint8_t> in(4, 0);
    EXPECT_FALSE(dev_->region_write(hostdev::kRomRegion, 0, in));
    EXPECT_EQ(read(hostdev::kRomRegion, 0, 2), (std::vector<uint8_t>{0x55, 0xAA}));
}

// ---- INTx and EOI (host_device.hpp, ack_intx) -----------------------------------------------

TEST_P(HostDeviceContract, IntxRaisedByTheDeviceAssertsTheLine) {
    EXPECT_FALSE(events_->intx_level());
    assert_intx();
    EXPECT_GE(events_->count_intx(true), 1u);
}

TEST_P(HostDeviceContract, IntxStatusBitFollowsTheLine) {
    const uint32_t status = pci::reg::kStatus;
    EXPECT_EQ(config_le(status, 2) & pci::status::kInterruptStatus, 0u);
    assert_intx();
    EXPECT_NE(config_le(status, 2) & pci::status::kInterruptStatus, 0u)
        << "config reads must reach the device, not a stale copy";
    set_reg(M::kRegIntx, 0);
    EXPECT_EQ(config_le(status, 2) & pci::status::kInterruptStatus, 0u);
}

TEST_P(HostDeviceContract, IntxInterruptDisableHoldsTheLineBack) {
    const uint32_t command = pci::reg::kCommand;
    const auto disable = static_cast<uint16_t>(pci::command::kInterruptDisable);
    set_config(command, {static_cast<uint8_t>(disable), static_cast<uint8_t>(disable >> 8)});
    set_reg(M::kRegIntx, 1);
    queue_.settle(kQuiet);
    EXPECT_EQ(events_->count_intx(true), 0u) << "INTx delivered with Interrupt Disable set";
    // Clearing the bit lets the level through.
    set_config(command, {0, 0});
    EXPECT_TRUE(queue_.wait_until([&] { return events_->intx_level(); }))
        << "the device still asserts; clearing Interrupt Disable must deliver it";
}

TEST_P(HostDeviceContract, IntxWritesToTheDeviceAreNotAcknowledgements) {
    assert_intx();
    const size_t mark = events_->size();
    write(kMmioBar, M::kScratchStart, {1, 2, 3, 4});
    (void)read(kIoBar, 0, 4);
    set_config(pci::reg::kInterruptLine, {0x0b});
    queue_.run_pending();
    EXPECT_EQ(events_->count_intx(false, mark), 0u) << "a transport lowered the line on a write";
    EXPECT_TRUE(events_->intx_level());
}

TEST_P(HostDeviceContract, IntxEoiWhileTheDeviceAssertsDeliversItAgain) {
    assert_intx();
    ASSERT_TRUE(dev_->ack_intx());
    // Either the line never dropped (a transport that reports every level) or it dropped and
    // came back (resample): either way it ends up asserted.
    EXPECT_TRUE(queue_.wait_until([&] { return events_->intx_level(); }))
        << "the device still asserts, but the line stayed down after the EOI";
    // Again: the resample is re-armed after each EOI.
    ASSERT_TRUE(dev_->ack_intx());
    EXPECT_TRUE(queue_.wait_until([&] { return events_->intx_level(); }));
}

TEST_P(HostDeviceContract, IntxEoiAfterTheDeviceLoweredItDoesNotReassert) {
    assert_intx();
    set_reg(M::kRegIntx, 0);
    ASSERT_TRUE(dev_->ack_intx());
    const size_t mark = events_->size();
    EXPECT_TRUE(queue_.wait_until([&] { return !events_->intx_level(); }))
        << "the device lowered its line and the guest EOId, but the line is still up";
    queue_.settle(kQuiet);
    EXPECT_FALSE(events_->intx_level());
    EXPECT_EQ(events_->count_intx(true, mark), 0u) << "re-asserted after the device lowered it";
}

TEST_P(HostDeviceContract, IntxAssertedAgainAfterAnEoiIsDelivered) {
    for (int round = 0; round < 3; ++round) {
        SCOPED_TRACE(::testing::Message() << "round " << round);
        const size_t mark = events_->size();
        set_reg(M::kRegIntx, 1);
        ASSERT_TRUE(queue_.wait_until([&] { return events_->count_intx(true, mark) > 0; }))
            << "a new assertion after the EOI was lost (line left masked?)";
        set_reg(M::kRegIntx, 0);
        ASSERT_TRUE(dev_->ack_intx());
        ASSERT_TRUE(queue_.wait_until([&] { return !events_->intx_level(); }));
    }
}

// ---- MSI and MSI-X --------------------------------------------------------------------------

TEST_P(HostDeviceContract, MsiVectorsArrive) {
    check_message_interrupts(IrqKind::msi);
}

TEST_P(HostDeviceContract, MsixVectorsArrive) {
    check_message_interrupts(IrqKind::msix);
}

// ---- DMA ------------------------------------------------------------------------------------

TEST_P(HostDeviceContract, DmaWriteLandsInGuestMemory) {
    const auto data = test_pattern(300);
    write(kMmioBar, M::kDmaBuffer, data);
    constexpr uint64_t kAt = 0x2345;
    EXPECT_EQ(run_dma(kAt, static_cast<uint32_t>(data.size()), M::kDmaToGuest), M::kDmaOk);
    std::vector<uint8_t> got(data.size());
    ASSERT_TRUE(ram_->read(Gpa{kAt}, got));
    EXPECT_EQ(got, data);
    std::vector<uint8_t> around(1);
    ASSERT_TRUE(ram_->read(Gpa{kAt - 1}, around));
    EXPECT_EQ(around[0], 0) << "wrote before the range";
    ASSERT_TRUE(ram_->read(Gpa{kAt + data.size()}, around));
    EXPECT_EQ(around[0], 0) << "wrote past the range";
    if (traits_.shares_guest_ram)
        EXPECT_EQ(events_->dma_writes(), 0u) << "DMA should go through the shared memfd";
    else
        EXPECT_EQ(events_->dma_writes(), 1u);
}

TEST_P(HostDeviceContract, DmaReadSeesGuestMemory) {
    const auto data = test_pattern(512, 0x77);
    constexpr uint64_t kAt = 0x8000 - 100;  // across a page boundary
    ASSERT_TRUE(ram_->write(Gpa{kAt}, data));
    EXPECT_EQ(run_dma(kAt, static_cast<uint32_t>(data.size()), M::kDmaToDevice), M::kDmaOk);
    EXPECT_EQ(read(kMmioBar, M::kDmaBuffer, data.size()), data);
    if (traits_.shares_guest_ram)
        EXPECT_EQ(events_->dma_reads(), 0u) << "DMA should go through the shared memfd";
    else
        EXPECT_EQ(events_->dma_reads(), 1u);
}

TEST_P(HostDeviceContract, DmaOutsideGuestRamFailsWithoutHarm) {
    write(kMmioBar, M::kDmaBuffer, test_pattern(64));
    EXPECT_EQ(run_dma(uint64_t{1} << 36, 64, M::kDmaToGuest), M::kDmaFailed);
    EXPECT_EQ(run_dma(uint64_t{1} << 36, 64, M::kDmaToDevice), M::kDmaFailed);
    // Straddling the end of RAM: fails. Not asserted: whether the part inside RAM was
    // written. inproc checks the whole range first; the vfio-user and mpqemu servers copy
    // mapping by mapping (a DMA may span adjacent maps) and stop at the gap, as a device
    // behind an IOMMU that faults mid-transfer would.
    EXPECT_EQ(run_dma(kRamSize - 16, 64, M::kDmaToGuest), M::kDmaFailed);
    EXPECT_EQ(run_dma(kRamSize - 16, 64, M::kDmaToDevice), M::kDmaFailed);
    // The device and DMA keep working.
    EXPECT_EQ(reg(M::kRegId), M::kId);
    EXPECT_EQ(run_dma(0x1000, 64, M::kDmaToGuest), M::kDmaOk);
}

// The device side refuses a model's DMA while the command register's bus-master bit is clear
// (PCI 3.0 section 6.2.2: the function may not generate requests as a master).
TEST_P(HostDeviceContract, DmaIsRefusedWhileBusMasteringIsOff) {
    const auto data = test_pattern(16);
    write(kMmioBar, M::kDmaBuffer, data);
    constexpr uint64_t kAt = 0x3000;
    EXPECT_EQ(run_dma(kAt, 16, M::kDmaToGuest, /*master=*/false), M::kDmaFailed);
    std::vector<uint8_t> got(16);
    ASSERT_TRUE(ram_->read(Gpa{kAt}, got));
    EXPECT_EQ(got, std::vector<uint8_t>(16, 0)) << "DMA reached guest RAM with mastering off";
    EXPECT_EQ(run_dma(kAt, 16, M::kDmaToGuest), M::kDmaOk);
    ASSERT_TRUE(ram_->read(Gpa{kAt}, got));
    EXPECT_EQ(got, data);
}

// ---- Reset ----------------------------------------------------------------------------------

TEST_P(HostDeviceContract, ResetRestoresPowerOnState) {
    set_reg(M::kRegPowerOn, 0x12345678);
    write(kIoBar, 8, {1, 2, 3, 4});
    write(kMmioBar, M::kScratchStart, {9, 9, 9, 9});
    write(kMem64Bar, 0x40, {0, 0, 0, 0});
    set_config(pci::reg::kInterruptLine, {0x0a});
    ASSERT_EQ(reg(M::kRegPowerOn), 0x12345678u);

    auto r = dev_->reset();
    ASSERT_TRUE(r) << r.error().message;
    queue_.run_pending();

    EXPECT_EQ(reg(M::kRegPowerOn), M::kPowerOn);
    EXPECT_EQ(read(kIoBar, 8, 4), std::vector<uint8_t>(4, 0));
    EXPECT_EQ(read(kMmioBar, M::kScratchStart, 4), std::vector<uint8_t>(4, 0));
    EXPECT_EQ(read_le(kMem64Bar, 0x40, 1), M::mem64_pattern(0x40));
    EXPECT_EQ(config_le(pci::reg::kInterruptLine, 1), 0u);
    EXPECT_EQ(config_le(pci::reg::kVendorId, 2), M::kVendor);
}

TEST_P(HostDeviceContract, ResetDeassertsTheLine) {
    assert_intx();
    auto r = dev_->reset();
    ASSERT_TRUE(r) << r.error().message;
    queue_.run_pending();
    EXPECT_FALSE(events_->intx_level()) << "reset is synchronous and leaves the line down";
    // And it stays down: the device's condition was reset too.
    const size_t mark = events_->size();
    ASSERT_TRUE(dev_->ack_intx());
    queue_.settle(kQuiet);
    EXPECT_EQ(events_->count_intx(true, mark), 0u);
    // INTx works afterwards.
    assert_intx();
}

// host_device.hpp: reset() leaves the device "in INTx mode". The front-end must not need to
// call set_irqs(intx) after it for INTx to work.
TEST_P(HostDeviceContract, ResetReturnsToIntxMode) {
    if (traits_.no_msi != nullptr) GTEST_SKIP() << traits_.no_msi;
    ASSERT_TRUE(dev_->set_irqs(IrqKind::msi, M::kVectors));
    ASSERT_TRUE(dev_->reset());
    // After the reset the device is in INTx mode: its line works, its doorbell sends nothing.
    const size_t mark = events_->size();
    set_reg(M::kRegDoorbell, 0);
    assert_intx();
    queue_.settle(kQuiet);
    EXPECT_EQ(events_->count(Kind::msi, mark), 0u);
}

// ---- Disconnect -----------------------------------------------------------------------------

TEST_P(HostDeviceContract, DisconnectIsReportedAndCallsFail) {
    if (traits_.no_disconnect != nullptr) GTEST_SKIP() << traits_.no_disconnect;
    EXPECT_EQ(reg(M::kRegId), M::kId);
    harness_->kill();

    std::vector<uint8_t> out(4, 0);
    EXPECT_FALSE(dev_->region_read(kMmioBar, M::kRegId, out)) << "read after the server died";
    EXPECT_TRUE(queue_.wait_until([&] { return events_->has_disconnected(); }))
        << "disconnected() not reported";
    out.assign(4, 0);
    EXPECT_FALSE(dev_->region_read(kIoBar, 0, out));
    EXPECT_FALSE(dev_->config_read(0, out));
    EXPECT_FALSE(dev_->region_write(kMmioBar, M::kScratchStart, out));
    EXPECT_FALSE(dev_->config_write(pci::reg::kInterruptLine, std::vector<uint8_t>{1}));
    EXPECT_FALSE(dev_->reset());
    queue_.run_pending();
    EXPECT_EQ(events_->count(Kind::disconnected), 1u) << "reported once";
    for (const auto& e : events_->events()) {
        if (e.kind == Kind::disconnected) {
            EXPECT_FALSE(e.why.empty());
        }
    }
    EXPECT_FALSE(events_->intx_level()) << "a device that is gone cannot hold its line";
}

TEST_P(HostDeviceContract, DisconnectWhileTheLineIsUpDropsIt) {
    if (traits_.no_disconnect != nullptr) GTEST_SKIP() << traits_.no_disconnect;
    assert_intx();
    harness_->kill();
    EXPECT_TRUE(queue_.wait_until([&] { return events_->has_disconnected(); }))
        << "disconnected() not reported without a call";
    EXPECT_FALSE(events_->intx_level()) << "a device that is gone cannot hold its line";
}

TEST_P(HostDeviceContract, ReconnectRestoresAccessAndGuestConfig) {
    if (traits_.no_reconnect != nullptr) GTEST_SKIP() << traits_.no_reconnect;
    set_config(pci::reg::kInterruptLine, {0x0b});
    harness_->kill();
    ASSERT_TRUE(queue_.wait_until([&] { return events_->has_disconnected(); }))
        << "disconnected() not reported";
    auto r = harness_->restart();
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_TRUE(queue_.wait_until([&] { return events_->count(Kind::reconnected) > 0; }, 5s))
        << "reconnected() not reported after the device side came back";
    // A new device: its registers are fresh, but the config the guest wrote is restored.
    EXPECT_EQ(reg(M::kRegId), M::kId);
    EXPECT_EQ(reg(M::kRegPowerOn), M::kPowerOn);
    EXPECT_EQ(config_le(pci::reg::kInterruptLine, 1), 0x0bu);
    // Interrupts and DMA are set up again.
    assert_intx();
    const auto data = test_pattern(32);
    write(kMmioBar, M::kDmaBuffer, data);
    EXPECT_EQ(run_dma(0x4000, 32, M::kDmaToGuest), M::kDmaOk);
    std::vector<uint8_t> got(32);
    ASSERT_TRUE(ram_->read(Gpa{0x4000}, got));
    EXPECT_EQ(got, data);
}

INSTANTIATE_TEST_SUITE_P(Transports, HostDeviceContract,
                         ::testing::Values(ContractParam{TransportKind::inproc},
                                           ContractParam{TransportKind::vfio_user},
                                           ContractParam{TransportKind::vfio_user_messages},
                                           ContractParam{TransportKind::mpqemu},
                                           ContractParam{TransportKind::vfio_user, false},
                                           ContractParam{TransportKind::mpqemu, false}),
                         name_of);

}  // namespace
}  // namespace potemkin::testing
