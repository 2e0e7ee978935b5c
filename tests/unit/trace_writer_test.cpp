// The trace writer (src/machine/trace_writer.hpp) fed by the real hooks: bus accesses with
// their durations and ranges, and the host link's interrupts, DMA and link events with what
// the front-end delivered; read back with the trace reader (docs/trace.md, v2).
#include "machine/trace_writer.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "devices/host_link.hpp"
#include "fake_host_device.hpp"
#include "tools/trace_file.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin {
namespace {

using tools::RecordKind;

// A front-end in miniature: INTx onto line 11, MSI vector v as the message 0xfee00000 / 0x40+v
// (vector 3 is masked: nothing delivered).
struct Owner final : devices::HostLinkOwner {
    vm::InterruptSink* sink = nullptr;
    const char* refusal = nullptr;
    void intx(bool asserted) override { sink->set_irq(11, asserted); }
    void msi(unsigned vector) override {
        if (vector != 3) sink->send_msi(0xfee00000, 0x40 + vector);
    }
    const char* dma_refusal() const override { return refusal; }
};

class TraceWriterTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = (std::filesystem::temp_directory_path() /
                ("potemkin-trace-" + std::to_string(::getpid()) + ".tsv"))
                   .string();
        auto w = machine::TraceWriter::open(
            path, [] { return 1u; }, real);
        ASSERT_TRUE(w) << w.error().message;
        writer = std::move(*w);
        owner.sink = &writer->interrupts();
        ASSERT_TRUE(testing::add_fake_transport(transports, fake));
        auto m = vm::GuestMemory::create({{Gpa(0), 0x10000}});
        ASSERT_TRUE(m);
        memory = std::move(*m);
        manager = std::make_unique<vm::DeviceManager>(classes);
        ctx = std::make_unique<vm::DeviceContext>(vm::DeviceContext{
            ports, mmio, *memory, writer->interrupts(), timers, *manager, writer.get()});
        link = std::make_unique<devices::HostLink>("dev0", owner, *ctx);
        ASSERT_TRUE(link->open({.url = "fake:x", .transports = &transports}));
        mmio.set_tracer([this](const vm::BusAccess& a) { writer->access(a); });
    }
    void TearDown() override { std::filesystem::remove(path); }

    tools::Trace read_back() {
        link.reset();
        writer.reset();  // flushes
        auto t = tools::load_trace(path);
        EXPECT_TRUE(t) << t.error().message;
        return t ? *t : tools::Trace{};
    }

    std::string path;
    testing::RecordingSink real;
    std::unique_ptr<machine::TraceWriter> writer;
    Owner owner;
    testing::FakeHostState fake;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    std::unique_ptr<vm::GuestMemory> memory;
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    testing::NullTimers timers;
    std::unique_ptr<vm::DeviceManager> manager;
    std::unique_ptr<vm::DeviceContext> ctx;
    std::unique_ptr<devices::HostLink> link;
};

TEST_F(TraceWriterTest, AccessesCarryTheirDurationRangeAndVcpu) {
    ASSERT_TRUE(mmio.add(Gpa(0xd0000000), 0x1000, "slow",
                         {[](uint64_t, unsigned) -> uint64_t {
                              std::this_thread::sleep_for(std::chrono::milliseconds(2));
                              return 0x1234;
                          },
                          [](uint64_t, unsigned, uint64_t) {}}));
    EXPECT_EQ(mmio.read(Gpa(0xd0000010), 2), 0x1234u);
    mmio.write(Gpa(0xd0000020), 4, 7);
    EXPECT_EQ(mmio.read(Gpa(0xe0000000), 4), 0xffffffffu);
    const tools::Trace t = read_back();
    EXPECT_EQ(t.version, 2u);
    ASSERT_EQ(t.records.size(), 3u);
    const auto& r = t.records[0];
    EXPECT_EQ(r.kind, RecordKind::mmio);
    EXPECT_EQ(r.op, "R");
    EXPECT_EQ(r.device, "slow");
    EXPECT_EQ(r.vcpu, 1u);
    EXPECT_EQ(r.address, 0xd0000010u);
    EXPECT_EQ(r.value, 0x1234u);
    EXPECT_EQ(r.region, "0xd0000000+0x1000");
    ASSERT_TRUE(r.dur_ns);
    EXPECT_GE(*r.dur_ns, 2'000'000u);  // the handler slept 2 ms: the duration includes it
    EXPECT_EQ(t.records[1].op, "W");
    EXPECT_GE(t.records[1].time_ns, r.time_ns + *r.dur_ns);
    EXPECT_EQ(t.records[2].device, "");  // unassigned: nobody answered
    EXPECT_EQ(t.records[2].dur_ns, 0u);
    EXPECT_EQ(t.records[2].region, "");
}

TEST_F(TraceWriterTest, InterruptsRecordWhatTheFrontEndDelivered) {
    fake.events->intx(true);
    fake.events->intx(false);
    link->set_irqs(hostdev::IrqKind::msix, 4);
    fake.events->msi(2);
    fake.events->msi(3);  // masked by the owner
    link->set_irqs(hostdev::IrqKind::msi, 1);
    fake.events->msi(0);
    // The real sink got everything the front-end sent.
    EXPECT_EQ(real.irq_calls.size(), 2u);
    EXPECT_EQ(real.msis.size(), 2u);
    const tools::Trace t = read_back();
    ASSERT_EQ(t.records.size(), 5u);
    EXPECT_EQ(t.records[0].kind, RecordKind::intx);
    EXPECT_EQ(t.records[0].op, "assert");
    EXPECT_EQ(t.records[0].device, "dev0");
    EXPECT_EQ(t.records[0].region, "line11");
    EXPECT_EQ(t.records[1].op, "deassert");
    EXPECT_EQ(t.records[2].kind, RecordKind::msix);
    EXPECT_EQ(t.records[2].op, "send");
    EXPECT_EQ(t.records[2].address, 0xfee00000u);
    EXPECT_EQ(t.records[2].value, 0x42u);
    EXPECT_EQ(t.records[2].region, "vector2");
    EXPECT_EQ(t.records[3].op, "drop");
    EXPECT_EQ(t.records[3].region, "vector3");
    EXPECT_FALSE(t.records[3].address);
    EXPECT_EQ(t.records[4].kind, RecordKind::msi);
    EXPECT_EQ(t.records[4].value, 0x40u);
}

TEST_F(TraceWriterTest, DmaAndLinkEventsAreRecorded) {
    std::vector<uint8_t> buf(64, 0xab);
    ASSERT_TRUE(fake.events->dma_write(0x1000, buf));
    ASSERT_TRUE(fake.events->dma_read(0x2000, buf));
    EXPECT_FALSE(fake.events->dma_read(0x20000, buf));  // outside guest RAM
    owner.refusal = "bus mastering is off";
    EXPECT_FALSE(fake.events->dma_write(0x1000, buf));
    fake.events->disconnected("socket\tclosed");
    fake.events->reconnected();
    const tools::Trace t = read_back();
    ASSERT_EQ(t.records.size(), 6u);
    EXPECT_EQ(t.records[0].kind, RecordKind::dma);
    EXPECT_EQ(t.records[0].op, "W");
    EXPECT_EQ(t.records[0].address, 0x1000u);
    EXPECT_EQ(t.records[0].size, 64u);
    EXPECT_EQ(t.records[0].detail, "");
    EXPECT_EQ(t.records[1].op, "R");
    EXPECT_EQ(t.records[2].detail.rfind("refused: ", 0), 0u) << t.records[2].detail;
    EXPECT_EQ(t.records[3].detail, "refused: bus mastering is off");
    EXPECT_EQ(t.records[4].kind, RecordKind::link);
    EXPECT_EQ(t.records[4].op, "lost");
    EXPECT_EQ(t.records[4].detail, "socket closed");  // the tab cannot split the record
    EXPECT_EQ(t.records[5].op, "back");
}

}  // namespace
}  // namespace potemkin
