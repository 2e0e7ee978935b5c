// HostLink (src/devices/host_link.hpp): the one link from a front-end to its host device,
// against the shared fake HostDevice, without a front-end.
#include "devices/host_link.hpp"

#include <gtest/gtest.h>

#include "fake_host_device.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin {
namespace {

using testing::FakeHostState;

struct RecordingOwner final : devices::HostLinkOwner {
    std::vector<bool> intx_calls;
    std::vector<unsigned> msis;
    const char* refusal = nullptr;
    int restored = 0;
    void intx(bool asserted) override { intx_calls.push_back(asserted); }
    void msi(unsigned vector) override { msis.push_back(vector); }
    const char* dma_refusal() const override { return refusal; }
    void link_restored() override { ++restored; }
};

class HostLinkTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(testing::add_fake_transport(transports, fake));
        auto m = vm::GuestMemory::create({{Gpa(0), 0x10000}});
        ASSERT_TRUE(m);
        memory = std::move(*m);
        manager = std::make_unique<vm::DeviceManager>(classes);
        ctx = std::make_unique<vm::DeviceContext>(
            vm::DeviceContext{ports, mmio, *memory, sink, timers, *manager, nullptr});
        ctx->post = [this](std::function<void()> f) {
            ++posted;
            f();
        };
        ctx->external_source = [this](int d) { sources += d; };
        link = std::make_unique<devices::HostLink>("dev0", owner, *ctx);
        ASSERT_TRUE(link->open({.url = "fake:x", .transports = &transports}));
    }
    hostdev::HostDeviceEvents& events() { return *fake.events; }

    FakeHostState fake;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    std::unique_ptr<vm::GuestMemory> memory;
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    testing::RecordingSink sink;
    testing::NullTimers timers;
    std::unique_ptr<vm::DeviceManager> manager;
    std::unique_ptr<vm::DeviceContext> ctx;
    int posted = 0, sources = 0;
    RecordingOwner owner;
    std::unique_ptr<devices::HostLink> link;
};

TEST_F(HostLinkTest, OpensWithACompleteOpenContext) {
    const auto& oc = fake.open_context;
    EXPECT_EQ(fake.url, "fake:x");
    EXPECT_NE(oc.events, nullptr);
    EXPECT_EQ(oc.memory, memory.get());
    ASSERT_TRUE(oc.post);
    ASSERT_TRUE(oc.external_source);
    oc.post([] {});
    oc.external_source(+1);
    EXPECT_EQ(posted, 1);
    EXPECT_EQ(sources, 1);
    EXPECT_TRUE(link->connected());
}

TEST_F(HostLinkTest, ReadsAndWritesAreLittleEndianOfTheAccessSize) {
    link->write(8, 0x3f8, 4, 0x11223344);
    ASSERT_EQ(fake.region_writes.size(), 1u);
    EXPECT_EQ(fake.region_writes[0].bytes, (std::vector<uint8_t>{0x44, 0x33, 0x22, 0x11}));
    EXPECT_EQ(link->read(8, 0x3f8, 2), 0x3344u);
    EXPECT_EQ(link->read(8, 0x3f9, 1), 0x33u);
    EXPECT_EQ(link->read(8, 0x3f8, 0), 0u) << "size 0: nothing asked";
    EXPECT_EQ(fake.accesses.size(), 3u);
}

TEST_F(HostLinkTest, FailedReadsAreAllOnesFailedWritesDroppedAllCountedEachKindLoggedOnce) {
    fake.fail_reads = fake.fail_writes = true;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(link->read(0, 0, 1), 0xFFu);
    EXPECT_EQ(link->read(0, 0, 8), ~0ull);
    link->write(0, 0, 4, 1);
    link->write(0, 0, 4, 2);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(link->stats().failed_reads, 2u);
    EXPECT_EQ(link->stats().failed_writes, 2u);
    EXPECT_EQ(link->stats().host_errors(), 4u);
    auto count = [&](const std::string& what) {
        size_t n = 0;
        for (auto p = log.find(what); p != std::string::npos; p = log.find(what, p + 1)) ++n;
        return n;
    };
    EXPECT_EQ(count("host device read failed"), 1u) << log;
    EXPECT_EQ(count("host device write failed"), 1u) << log;
    std::array<uint8_t, 2> b{};
    link->config_read(0, b);  // the fake has no config space
    EXPECT_EQ(b, (std::array<uint8_t, 2>{0xFF, 0xFF}));
    EXPECT_EQ(link->stats().failed_reads, 3u);
}

TEST_F(HostLinkTest, EoiIsAcknowledgedOnlyWhileTheDeviceHoldsItsLineAndIsConnected) {
    link->eoi();
    EXPECT_EQ(fake.acks, 0) << "the line is not up";
    events().intx(true);
    EXPECT_EQ(owner.intx_calls, std::vector<bool>{true});
    link->eoi();
    EXPECT_EQ(fake.acks, 1);
    fake.fail_acks = true;
    link->eoi();
    EXPECT_EQ(link->stats().failed_acks, 1u);
    fake.fail_acks = false;
    events().disconnected("gone");
    EXPECT_EQ(owner.intx_calls, (std::vector<bool>{true, false})) << "a lost device holds no line";
    events().intx(true);
    link->eoi();
    EXPECT_EQ(fake.acks, 2) << "not while disconnected";
    events().reconnected();
    link->eoi();
    EXPECT_EQ(fake.acks, 3) << "again after the reconnect";
}

TEST_F(HostLinkTest, DisconnectedDeviceIsNotAskedAndReconnectRestoresIt) {
    events().disconnected("peer closed the socket");
    events().disconnected("again");
    EXPECT_FALSE(link->connected());
    EXPECT_EQ(link->read(8, 0, 4), 0xFFFF'FFFFu);
    link->write(8, 0, 4, 0);
    link->set_irqs(hostdev::IrqKind::msi, 1);
    EXPECT_TRUE(link->reset()) << "nothing to reset";
    EXPECT_TRUE(fake.accesses.empty());
    EXPECT_TRUE(fake.irqs.empty());
    EXPECT_EQ(fake.resets, 0);
    EXPECT_EQ(link->stats().host_errors(), 0u) << "not failures: the device is known gone";
    events().reconnected();
    EXPECT_TRUE(link->connected());
    EXPECT_EQ(owner.restored, 1);
    EXPECT_EQ(link->read(8, 0, 1), 0u);
    EXPECT_EQ(fake.accesses.size(), 1u);
    events().reconnected();  // a transport that reconnects without reporting the loss
    EXPECT_EQ(owner.restored, 2);
}

TEST_F(HostLinkTest, DmaIsCheckedAgainstTheOwnerAndGuestRam) {
    const std::array<uint8_t, 4> in{1, 2, 3, 4};
    ASSERT_TRUE(events().dma_write(0x100, in));
    std::array<uint8_t, 4> out{};
    ASSERT_TRUE(events().dma_read(0x100, out));
    EXPECT_EQ(out, in);
    auto beyond = events().dma_write(0xFFFE, in);
    ASSERT_FALSE(beyond);
    EXPECT_NE(beyond.error().message.find("dev0: DMA write of 4 bytes at 0xfffe"),
              std::string::npos)
        << beyond.error().message;
    owner.refusal = "bus mastering is disabled";
    auto refused = events().dma_read(0x100, out);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("bus mastering is disabled"), std::string::npos);
    EXPECT_EQ(link->stats().failed_dma, 2u);
    EXPECT_EQ(link->stats().host_errors(), 0u);
}

TEST_F(HostLinkTest, MsiGoesToTheOwnerAndCloseDestroysTheDevice) {
    events().msi(3);
    EXPECT_EQ(owner.msis, std::vector<unsigned>{3});
    link->close();
    link->close();
    EXPECT_EQ(fake.closes, 1);
    EXPECT_EQ(fake.destroyed, 1);
    EXPECT_FALSE(link->connected());
    EXPECT_EQ(link->read(8, 0, 2), 0xFFFFu);
}

TEST(HostLinkOpen, TransportErrorsComeBackUnprefixed) {
    hostdev::TransportRegistry none;
    vm::DeviceClassRegistry classes;
    auto memory = vm::GuestMemory::create({{Gpa(0), 0x1000}});
    ASSERT_TRUE(memory);
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    testing::RecordingSink sink;
    testing::NullTimers timers;
    vm::DeviceManager manager(classes);
    vm::DeviceContext ctx{ports, mmio, **memory, sink, timers, manager, nullptr};
    RecordingOwner owner;
    devices::HostLink link("dev0", owner, ctx);
    auto r = link.open({.url = "nope:x", .transports = &none});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("unknown scheme 'nope'"), std::string::npos)
        << r.error().message;
    EXPECT_FALSE(link.is_open());
}

}  // namespace
}  // namespace potemkin
