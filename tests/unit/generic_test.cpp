// GENERIC (docs/generic.md): Palacios' modes on real buses, host-device forwarding through a
// test-local "fake" transport, and configuration errors with their exact lines.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "devices/generic.hpp"
#include "devices/test_device.hpp"
#include "fake_host_device.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"

using namespace potemkin;
using namespace potemkin::vm;
using devices::Generic;

namespace {

using potemkin::testing::FakeHostState;
using potemkin::testing::NullTimers;
using potemkin::testing::RecordingSink;

struct RecordingTrace final : TraceNotes {
    std::vector<std::pair<std::string, std::string>> notes;
    void note(std::string_view device, std::string_view text) override {
        notes.emplace_back(device, text);
    }
};

// Devices go inside a fixed frame so their lines are known: the first <device> is on line 4.
std::string vm_xml(const std::string& devices) {
    return "<vm class=\"PC\">\n  <memory>1</memory>\n  <devices>\n" + devices +
           "  </devices>\n</vm>\n";
}

constexpr const char* kSpy = "vm.xml:4: <device class=\"GENERIC\" id=\"spy\">";
// A UART's ports forwarded to the fake host device, its INTx routed to IRQ 5.
constexpr const char* kUartOnIrq5 =
    R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x" irq="5">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)";

class GenericTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(potemkin::testing::add_fake_transport(transports, fake));
        ASSERT_TRUE(devices::register_generic(classes, &transports));
        ASSERT_TRUE(devices::register_test_device(classes));
    }

    // Parse and create; the error message, or "" on success.
    // With `file` set, the configuration is written there and loaded from it (a document with
    // a directory); `machine` fills what a machine gives devices (post, external_source).
    std::string create(const std::string& devices_xml, const std::string& file = "",
                       const std::function<void(DeviceContext&)>& machine = nullptr) {
        auto doc = ConfigDocument::load_string(vm_xml(devices_xml), "vm.xml");
        if (!file.empty()) {
            std::ofstream(file) << vm_xml(devices_xml);
            doc = ConfigDocument::load_file(file);
        }
        if (!doc) return doc.error().message;
        auto cfg = parse_vm_config(*doc);
        if (!cfg) return cfg.error().message;
        mgr = std::make_unique<DeviceManager>(classes);
        ctx = std::make_unique<DeviceContext>(
            DeviceContext{ports, mmio, **memory, sink, timers, *mgr, &trace});
        if (machine) machine(*ctx);
        auto r = mgr->create_all(cfg->devices, *ctx);
        return r ? "" : r.error().message;
    }

    Generic& spy() { return *mgr->find_as<Generic>("spy"); }

    std::vector<std::string> note_texts() const {
        std::vector<std::string> out;
        for (const auto& [dev, text] : trace.notes) {
            EXPECT_EQ(dev, "spy");
            out.push_back(text);
        }
        return out;
    }

    // Declared before the manager, so devices unhook from live buses when the test ends.
    Result<std::unique_ptr<GuestMemory>> memory = GuestMemory::create({{Gpa(0), 0x10000}});
    PortBus ports{Space::io, 0x10000};
    MmioBus mmio{Space::mmio, 0};
    RecordingSink sink;
    NullTimers timers;
    RecordingTrace trace;
    FakeHostState fake;
    hostdev::TransportRegistry transports;
    DeviceClassRegistry classes;
    // ctx before mgr: devices use their context while the manager destroys them.
    std::unique_ptr<DeviceContext> ctx;
    std::unique_ptr<DeviceManager> mgr;
};

// --- modes -------------------------------------------------------------------------------

TEST_F(GenericTest, PortIgnoreReadsZeroAndDropsWrites) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>IGNORE</mode></ports>
    </device>
)"),
              "");
    ports.write(Port(0x3f8), 1, 0x41);
    ports.write(Port(0x3fc), 4, 0xdeadbeef);
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0u);  // Palacios: zeros, not all-ones
    EXPECT_EQ(ports.read(Port(0x3fa), 2), 0u);
    EXPECT_EQ(ports.read(Port(0x3fc), 4), 0u);
    EXPECT_TRUE(trace.notes.empty());
    EXPECT_EQ(ports.unassigned_reads(), 0u);  // the device owns the range
    ASSERT_EQ(ports.ranges().size(), 1u);
    EXPECT_EQ(ports.ranges()[0].base, Port(0x3f8));
    EXPECT_EQ(ports.ranges()[0].length, 8u);  // <end> is inclusive
}

TEST_F(GenericTest, MemoryIgnoreReadsZeroAndDropsWritesWithoutPageGranularity) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <memory><start>0xd1000010</start><end>0xd100001f</end><mode>IGNORE</mode></memory>
    </device>
)"),
              "");
    mmio.write(Gpa(0xd1000010), 8, 0x1122334455667788);
    EXPECT_EQ(mmio.read(Gpa(0xd1000010), 8), 0u);
    EXPECT_EQ(mmio.read(Gpa(0xd100001c), 4), 0u);
    EXPECT_EQ(mmio.read(Gpa(0xd1000020), 1), 0xffu);  // past <end>: unassigned
    EXPECT_TRUE(trace.notes.empty());
}

TEST_F(GenericTest, PortPrintAndIgnoreLogsAndNotesEveryAccess) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PRINT_AND_IGNORE</mode></ports>
    </device>
)"),
              "");
    ports.write(Port(0x3f8), 1, 0x41);
    EXPECT_EQ(ports.read(Port(0x3fd), 1), 0u);
    ports.write(Port(0x3fa), 2, 0x4142);
    EXPECT_EQ(ports.read(Port(0x3fc), 4), 0u);
    EXPECT_EQ(note_texts(), (std::vector<std::string>{
                                "GENERIC spy: OUT 0x3f8 size 1 <- 0x41",
                                "GENERIC spy: IN 0x3fd size 1 -> 0x0",
                                "GENERIC spy: OUT 0x3fa size 2 <- 0x4142",
                                "GENERIC spy: IN 0x3fc size 4 -> 0x0",
                            }));
}

TEST_F(GenericTest, MemoryPrintAndIgnoreNotesEveryAccess) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <memory><start>0xd1000000</start><end>0xd1000fff</end><mode>PRINT_AND_IGNORE</mode></memory>
    </device>
)"),
              "");
    mmio.write(Gpa(0xd1000008), 8, 0x1122334455667788);
    EXPECT_EQ(mmio.read(Gpa(0xd1000004), 4), 0u);
    EXPECT_EQ(note_texts(), (std::vector<std::string>{
                                "GENERIC spy: WRITE 0xd1000008 size 8 <- 0x1122334455667788",
                                "GENERIC spy: READ 0xd1000004 size 4 -> 0x0",
                            }));
}

TEST_F(GenericTest, PrintWithoutTraceOnlyLogs) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PRINT_AND_IGNORE</mode></ports>
    </device>
)"),
              "");
    ctx->trace = nullptr;  // tracing off: the device must not need a TraceNotes
    ports.write(Port(0x3f8), 1, 0x41);
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0u);
    EXPECT_TRUE(trace.notes.empty());
}

TEST_F(GenericTest, PortPassthroughForwardsToRegion8AtTheAbsolutePort) {
    ASSERT_EQ(
        create(
            R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:uart?x=1">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
        "");
    EXPECT_EQ(fake.opens, 1);
    EXPECT_EQ(fake.url, "fake:uart?x=1");
    EXPECT_NE(fake.events, nullptr);
    for (uint64_t i = 0; i < 8; ++i) fake.bytes[{Generic::kPortRegion, 0x3f8 + i}] = 0x10 + i;

    EXPECT_EQ(ports.read(Port(0x3f9), 1), 0x11u);
    EXPECT_EQ(ports.read(Port(0x3fa), 2), 0x1312u);
    EXPECT_EQ(ports.read(Port(0x3fc), 4), 0x17161514u);
    ports.write(Port(0x3f8), 1, 0xaa);
    ports.write(Port(0x3fa), 2, 0xbbcc);
    ports.write(Port(0x3fc), 4, 0x11223344);

    ASSERT_EQ(fake.accesses.size(), 6u);
    const std::vector<std::tuple<bool, uint64_t, std::vector<uint8_t>>> want = {
        {false, 0x3f9, {0}},   {false, 0x3fa, {0, 0}},      {false, 0x3fc, {0, 0, 0, 0}},
        {true, 0x3f8, {0xaa}}, {true, 0x3fa, {0xcc, 0xbb}}, {true, 0x3fc, {0x44, 0x33, 0x22, 0x11}},
    };
    for (size_t i = 0; i < want.size(); ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(fake.accesses[i].index, Generic::kPortRegion);
        EXPECT_EQ(fake.accesses[i].is_write, std::get<0>(want[i]));
        EXPECT_EQ(fake.accesses[i].offset, std::get<1>(want[i]));
        EXPECT_EQ(fake.accesses[i].bytes.size(), std::get<2>(want[i]).size());
        if (std::get<0>(want[i])) {
            EXPECT_EQ(fake.accesses[i].bytes, std::get<2>(want[i]));
        }
    }
    EXPECT_TRUE(trace.notes.empty());  // PASSTHROUGH alone prints nothing
}

TEST_F(GenericTest, MemoryPassthroughForwardsToRegion9AtTheGuestPhysicalAddress) {
    ASSERT_EQ(
        create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:mem">
      <memory><start>0xd1000000</start><end>0xd1000fff</end><mode>PASSTHROUGH</mode></memory>
    </device>
)"),
        "");
    mmio.write(Gpa(0xd1000001), 1, 0x5a);
    mmio.write(Gpa(0xd1000002), 2, 0x1234);
    mmio.write(Gpa(0xd1000004), 4, 0x89abcdef);
    mmio.write(Gpa(0xd1000008), 8, 0x0102030405060708);
    EXPECT_EQ(mmio.read(Gpa(0xd1000001), 1), 0x5au);
    EXPECT_EQ(mmio.read(Gpa(0xd1000002), 2), 0x1234u);
    EXPECT_EQ(mmio.read(Gpa(0xd1000004), 4), 0x89abcdefu);
    EXPECT_EQ(mmio.read(Gpa(0xd1000008), 8), 0x0102030405060708u);
    EXPECT_EQ(mmio.read(Gpa(0xd1000000), 8), 0x89abcdef12345a00u);

    ASSERT_EQ(fake.accesses.size(), 9u);
    const std::vector<std::pair<uint64_t, size_t>> want = {
        {0xd1000001, 1}, {0xd1000002, 2}, {0xd1000004, 4}, {0xd1000008, 8}};
    for (size_t i = 0; i < 8; ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(fake.accesses[i].index, Generic::kMemoryRegion);
        EXPECT_EQ(fake.accesses[i].is_write, i < 4);
        EXPECT_EQ(fake.accesses[i].offset, want[i % 4].first);
        EXPECT_EQ(fake.accesses[i].bytes.size(), want[i % 4].second);
    }
    EXPECT_EQ(fake.accesses[3].bytes,
              (std::vector<uint8_t>{0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01}));
}

TEST_F(GenericTest, PrintAndPassthroughForwardsAndNotesTheForwardedValue) {
    ASSERT_EQ(
        create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:uart">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PRINT_AND_PASSTHROUGH</mode></ports>
      <memory><start>0xd1000000</start><end>0xd1000fff</end>
        <mode>PRINT_AND_PASSTHROUGH</mode></memory>
    </device>
)"),
        "");
    fake.bytes[{Generic::kPortRegion, 0x3f8}] = 0x41;
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0x41u);
    ports.write(Port(0x3f9), 1, 0x7);
    mmio.write(Gpa(0xd1000010), 4, 0xcafe);
    EXPECT_EQ(mmio.read(Gpa(0xd1000010), 4), 0xcafeu);
    EXPECT_EQ(note_texts(), (std::vector<std::string>{
                                "GENERIC spy: IN 0x3f8 size 1 -> 0x41",
                                "GENERIC spy: OUT 0x3f9 size 1 <- 0x7",
                                "GENERIC spy: WRITE 0xd1000010 size 4 <- 0xcafe",
                                "GENERIC spy: READ 0xd1000010 size 4 -> 0xcafe",
                            }));
    ASSERT_EQ(fake.accesses.size(), 4u);
    EXPECT_EQ(fake.accesses[1].index, Generic::kPortRegion);
    EXPECT_EQ(fake.accesses[1].offset, 0x3f9u);
    EXPECT_EQ(fake.accesses[2].index, Generic::kMemoryRegion);
    EXPECT_EQ(fake.accesses[2].offset, 0xd1000010u);
}

TEST_F(GenericTest, SeveralRangesShareOneRegionByAbsolutePort) {
    ASSERT_EQ(
        create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:two">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
      <ports><start>0x2f8</start><end>0x2ff</end><mode>PASSTHROUGH</mode></ports>
      <ports><start>0x80</start><end>0x80</end><mode>IGNORE</mode></ports>
    </device>
)"),
        "");
    ports.write(Port(0x3f8), 1, 1);
    ports.write(Port(0x2f8), 1, 2);
    ports.write(Port(0x80), 1, 3);  // IGNORE: never reaches the host device
    ASSERT_EQ(fake.accesses.size(), 2u);
    EXPECT_EQ(fake.accesses[0].offset, 0x3f8u);
    EXPECT_EQ(fake.accesses[1].offset, 0x2f8u);
    EXPECT_EQ(spy().ranges().size(), 3u);
}

TEST_F(GenericTest, FailedHostReadsReturnAllOnesAndAreCounted) {
    ASSERT_EQ(
        create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:dead">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PRINT_AND_PASSTHROUGH</mode></ports>
      <memory><start>0xd1000000</start><end>0xd1000fff</end><mode>PASSTHROUGH</mode></memory>
    </device>
)"),
        "");
    fake.fail_reads = true;
    fake.fail_writes = true;
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0xffu);
    EXPECT_EQ(ports.read(Port(0x3fa), 2), 0xffffu);
    EXPECT_EQ(ports.read(Port(0x3fc), 4), 0xffffffffu);
    EXPECT_EQ(mmio.read(Gpa(0xd1000000), 8), ~0ull);
    ports.write(Port(0x3f8), 1, 0);
    mmio.write(Gpa(0xd1000000), 4, 0);
    EXPECT_EQ(spy().stats().failed_reads, 4u);
    EXPECT_EQ(spy().stats().failed_writes, 2u);
    // The printed value is what the guest got.
    EXPECT_EQ(note_texts().at(0), "GENERIC spy: IN 0x3f8 size 1 -> 0xff");
}

TEST_F(GenericTest, DestructionUnhooksEveryRangeAndClosesTheHostDevice) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
      <ports><start>0x60</start><end>0x64</end><mode>IGNORE</mode></ports>
      <memory><start>0xd1000000</start><end>0xd1000fff</end><mode>PASSTHROUGH</mode></memory>
    </device>
)"),
              "");
    EXPECT_EQ(ports.ranges().size(), 2u);
    EXPECT_EQ(mmio.ranges().size(), 1u);
    mgr.reset();
    EXPECT_TRUE(ports.ranges().empty());
    EXPECT_TRUE(mmio.ranges().empty());
    EXPECT_EQ(fake.closes, 1);
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0xffu);
}

// --- events from the host device -----------------------------------------------------------

TEST_F(GenericTest, IntxGoesToTheConfiguredIrq) {
    ASSERT_EQ(
        create(
            R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x" irq="4">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
        "");
    ASSERT_NE(fake.events, nullptr);
    fake.events->intx(true);
    fake.events->intx(false);
    EXPECT_EQ(sink.irq_calls, (std::vector<std::pair<unsigned, bool>>{{4, true}, {4, false}}));
    EXPECT_EQ(spy().stats().dropped_intx, 0u);
}

TEST_F(GenericTest, GuestEoiOfTheIrqReachesTheHostDeviceWhileItIsUp) {
    ASSERT_EQ(create(kUartOnIrq5), "");
    ASSERT_EQ(sink.listeners.size(), 1u);
    sink.eoi(5);
    EXPECT_EQ(fake.acks, 0) << "the line is not up";
    fake.events->intx(true);
    sink.eoi(4);
    EXPECT_EQ(fake.acks, 0) << "another line";
    sink.eoi(5);
    EXPECT_EQ(fake.acks, 1);
    fake.events->intx(false);
    sink.eoi(5);
    EXPECT_EQ(fake.acks, 1);
    mgr.reset();
    EXPECT_TRUE(sink.listeners.empty()) << "the listener goes with the device";
}

TEST_F(GenericTest, IntxWithoutIrqAndMsiAreDroppedAndCounted) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
              "");
    fake.events->intx(true);
    fake.events->intx(false);
    fake.events->msi(0);
    EXPECT_TRUE(sink.irq_calls.empty());
    EXPECT_EQ(spy().stats().dropped_intx, 2u);
    EXPECT_EQ(spy().stats().dropped_msi, 1u);
}

TEST_F(GenericTest, DmaIsBoundsCheckedAgainstGuestRam) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x">
      <memory><start>0xd1000000</start><end>0xd1000fff</end><mode>PASSTHROUGH</mode></memory>
    </device>
)"),
              "");
    const uint8_t in[4] = {1, 2, 3, 4};
    ASSERT_TRUE(fake.events->dma_write(0x1000, in));
    uint8_t out[4] = {};
    ASSERT_TRUE(fake.events->dma_read(0x1000, out));
    EXPECT_EQ(std::vector<uint8_t>(out, out + 4), std::vector<uint8_t>(in, in + 4));
    EXPECT_EQ((*memory)->read_obj<uint32_t>(Gpa(0x1000)).value_or(0), 0x04030201u);
    // RAM is 64 KiB: the last two bytes of this write and any read at the MMIO range fail.
    EXPECT_FALSE(fake.events->dma_write(0xfffe, in));
    EXPECT_FALSE(fake.events->dma_read(0xd1000000, out));
    EXPECT_EQ(spy().stats().failed_dma, 2u);
}

TEST_F(GenericTest, HostDisconnectIsRecordedNotFatal) {
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
              "");
    fake.events->disconnected("peer closed the socket");
    EXPECT_TRUE(spy().host_disconnected());
    fake.fail_reads = true;  // what a disconnected transport does
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0xffu);
}

// Regression (issue 9): GENERIC never cleared its disconnected flag (it had no reconnected()),
// so after a transport reconnected it never passed a guest's EOI on as ack_intx() again and a
// vfio-user device, which holds its line until then, stayed masked for good.
TEST_F(GenericTest, ForwardsEoiAgainAfterReconnect) {
    ASSERT_EQ(create(kUartOnIrq5), "");
    fake.events->intx(true);
    sink.eoi(5);
    ASSERT_EQ(fake.acks, 1);
    fake.events->disconnected("server killed");
    EXPECT_TRUE(spy().host_disconnected());
    sink.eoi(5);
    EXPECT_EQ(fake.acks, 1) << "nobody to acknowledge while disconnected";

    fake.events->reconnected();
    EXPECT_FALSE(spy().host_disconnected());
    fake.events->intx(true);  // the restarted device raises its line again
    sink.eoi(5);
    EXPECT_EQ(fake.acks, 2) << "the EOI reaches the device again after the reconnect";
    fake.bytes[{Generic::kPortRegion, 0x3f8}] = 0x41;
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0x41u) << "and so do accesses";
}

// A device that is gone cannot hold its interrupt line: the IRQ it held drops with it.
TEST_F(GenericTest, DisconnectReleasesTheIrqTheDeviceHeld) {
    ASSERT_EQ(create(kUartOnIrq5), "");
    fake.events->intx(true);
    fake.events->disconnected("peer closed the socket");
    EXPECT_EQ(sink.irq_calls, (std::vector<std::pair<unsigned, bool>>{{5, true}, {5, false}}));
    EXPECT_EQ(ports.read(Port(0x3f8), 1), 0xffu);
    EXPECT_TRUE(fake.accesses.empty()) << "a disconnected device is not asked";
}

// Regression (issue 9): GENERIC opened its host device with an OpenContext holding only the
// events sink, so over vfio-user its interrupts waited for the guest's next access (no post)
// and a halted guest was not kept waiting for them (no external_source); DMA could not share
// guest RAM (no memory) and relative paths in the URL ignored the config's directory.
TEST_F(GenericTest, OpenContextCarriesPostExternalSourceMemoryAndBaseDir) {
    const auto dir =
        std::filesystem::temp_directory_path() / ("generic-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    int posted = 0, sources = 0;
    ASSERT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)",
                     (dir / "vm.xml").string(),
                     [&](DeviceContext& c) {
                         c.post = [&](std::function<void()> f) {
                             ++posted;
                             f();
                         };
                         c.external_source = [&](int delta) { sources += delta; };
                     }),
              "");
    const hostdev::OpenContext& oc = fake.open_context;
    EXPECT_NE(oc.events, nullptr);
    EXPECT_EQ(oc.memory, memory->get());
    ASSERT_TRUE(oc.post);
    ASSERT_TRUE(oc.external_source);
    EXPECT_EQ(oc.base_dir, dir.string());
    // They are the machine's: what the transport posts runs, its sources are counted.
    bool ran = false;
    oc.post([&] { ran = true; });
    EXPECT_TRUE(ran);
    EXPECT_EQ(posted, 1);
    oc.external_source(+1);
    EXPECT_EQ(sources, 1);
    oc.external_source(-1);
    std::filesystem::remove_all(dir);
}

// --- configuration errors --------------------------------------------------------------------

TEST_F(GenericTest, EndBelowStartIsRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x3f8</start><end>0x3f0</end><mode>IGNORE</mode></ports>
    </device>
)"),
              "vm.xml:5: <ports>: <end> 0x3f0 is below <start> 0x3f8");
}

TEST_F(GenericTest, MissingModeIsRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x3f8</start><end>0x3ff</end></ports>
    </device>
)"),
              "vm.xml:5: <ports>: missing child element <mode> (PASSTHROUGH, "
              "PRINT_AND_PASSTHROUGH, IGNORE or PRINT_AND_IGNORE)");
}

TEST_F(GenericTest, UnknownModeIsRejectedAtItsLine) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <memory>
        <start>0xd1000000</start>
        <end>0xd1000fff</end>
        <mode>LOUD</mode>
      </memory>
    </device>
)"),
              "vm.xml:8: <mode>: unknown mode 'LOUD' (known: PASSTHROUGH, PRINT_AND_PASSTHROUGH, "
              "IGNORE, PRINT_AND_IGNORE)");
}

TEST_F(GenericTest, BadNumbersAreRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports>
        <start>0x3fz</start><end>0x3ff</end><mode>IGNORE</mode>
      </ports>
    </device>
)"),
              "vm.xml:6: <start>: '0x3fz' is not a number");
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0xfff8</start><end>0x10007</end><mode>IGNORE</mode></ports>
    </device>
)"),
              "vm.xml:5: <end>: 0x10007 is larger than 0xffff");
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><end>0x3ff</end><mode>IGNORE</mode></ports>
    </device>
)"),
              "vm.xml:5: <ports>: missing child element <start>");
}

TEST_F(GenericTest, OverlappingRangesWithinTheDeviceAreRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>IGNORE</mode></ports>
      <memory><start>0x3f8</start><end>0x3ff</end><mode>IGNORE</mode></memory>
      <ports><start>0x3fc</start><end>0x403</end><mode>PRINT_AND_IGNORE</mode></ports>
    </device>
)"),
              "vm.xml:7: <ports>: port range 0x3fc-0x403 overlaps 0x3f8-0x3ff of the same "
              "device (vm.xml:5: <ports>)");
    EXPECT_TRUE(ports.ranges().empty());
}

TEST_F(GenericTest, OverlapWithAnotherDeviceNamesBothOwnersAndTheLine) {
    // TEST_DEVICE takes ports 0x3f0-0x3ff and MMIO 0xd1000000-0xd1000fff.
    EXPECT_EQ(create(R"(    <device class="TEST_DEVICE" id="t0" port="0x3f0" mmio="0xd1000000"/>
    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x">
      <ports><start>0x2f8</start><end>0x2ff</end><mode>PASSTHROUGH</mode></ports>
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
              "vm.xml:7: <ports>: spy: port range 0x3f8-0x3ff overlaps t0 (0x3f0-0x3ff)");
    // Nothing of the failed device stays behind.
    ASSERT_EQ(ports.ranges().size(), 1u);
    EXPECT_EQ(ports.ranges()[0].owner, "t0");
    EXPECT_EQ(fake.closes, fake.opens);

    EXPECT_EQ(create(R"(    <device class="TEST_DEVICE" id="t0" port="0x3f0" mmio="0xd1000000"/>
    <device class="GENERIC" id="spy">
      <memory><start>0xd1000ff0</start><end>0xd1001fff</end><mode>IGNORE</mode></memory>
    </device>
)"),
              "vm.xml:6: <memory>: spy: MMIO range 0xd1000ff0-0xd1001fff overlaps t0 "
              "(0xd1000000-0xd1000fff)");
}

TEST_F(GenericTest, PassthroughWithoutForwardIsRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <ports><start>0x80</start><end>0x80</end><mode>IGNORE</mode></ports>
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PRINT_AND_PASSTHROUGH</mode></ports>
    </device>
)"),
              std::string(kSpy) +
                  ": attribute 'forward' is required when a range passes accesses through (port "
                  "range 0x3f8-0x3ff uses PRINT_AND_PASSTHROUGH); use forward=\"host_device\" or "
                  "forward=\"physical_device\"");
}

TEST_F(GenericTest, HostDeviceWithoutHostdevIsRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="host_device">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
              std::string(kSpy) + ": attribute 'hostdev' is required with forward=\"host_device\"");
}

TEST_F(GenericTest, HostdevWithoutHostDeviceForwardIsRejected) {
    EXPECT_EQ(
        create(R"(    <device class="GENERIC" id="spy" hostdev="fake:x">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>IGNORE</mode></ports>
    </device>
)"),
        std::string(kSpy) + ": attribute 'hostdev' is only used with forward=\"host_device\"");
}

TEST_F(GenericTest, UnknownForwardIsRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="magic">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
              std::string(kSpy) +
                  ": attribute 'forward' must be host_device or physical_device, not 'magic'");
}

TEST_F(GenericTest, UnknownAttributesAndElementsAreRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy" irq2="4">
    </device>
)"),
              std::string(kSpy) + ": attribute 'irq2' is not known here");
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy">
      <port><start>0x3f8</start><end>0x3ff</end><mode>IGNORE</mode></port>
    </device>
)"),
              "vm.xml:5: <port>: unknown element inside GENERIC (expected <ports> or <memory>)");
    EXPECT_EQ(
        create(
            R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="fake:x" irq="16">
    </device>
)"),
        std::string(kSpy) + ": attribute 'irq' is 16 but must be at most 0xf");
}

TEST_F(GenericTest, PhysicalDeviceWithoutOptInIsRejected) {
    EXPECT_EQ(create(R"(    <device class="GENERIC" id="spy" forward="physical_device">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)"),
              std::string(kSpy) +
                  ": forward=\"physical_device\" needs allow_physical=\"true\" (it gives the guest "
                  "the host's real I/O ports)");
    EXPECT_EQ(create(
                  R"(    <device class="GENERIC" id="spy" forward="physical_device"
            allow_physical="false">
      <memory><start>0xd1000000</start><end>0xd1000fff</end><mode>PASSTHROUGH</mode></memory>
    </device>
)"),
              std::string(kSpy) +
                  ": forward=\"physical_device\" needs allow_physical=\"true\" (it gives the guest "
                  "the host's real I/O ports)");
    EXPECT_TRUE(ports.ranges().empty());
    EXPECT_TRUE(mmio.ranges().empty());
}

// With the opt-in, ioperm() either succeeds (root with CAP_SYS_RAWIO) or fails with a clear
// message. The test never touches a real port: on success it only destroys the device.
TEST_F(GenericTest, PhysicalDeviceWithOptInSucceedsOrExplainsIoperm) {
    std::string err = create(
        R"(    <device class="GENERIC" id="spy" forward="physical_device" allow_physical="true">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)");
    if (err.empty()) {
        EXPECT_EQ(ports.ranges().size(), 1u);
        mgr.reset();
        EXPECT_TRUE(ports.ranges().empty());
        return;
    }
    const std::string prefix = std::string(kSpy) + ": ioperm(0x3f8, 8) failed: ";
    EXPECT_EQ(err.substr(0, prefix.size()), prefix) << err;
    // EPERM and friends: a privilege hint; ENOSYS (gVisor, non-x86 kernels): no false hint.
    const bool privilege = err.ends_with(" (run as root with CAP_SYS_RAWIO)");
    const bool missing = err.ends_with(" (this kernel or sandbox does not provide it)");
    EXPECT_TRUE(privilege || missing) << err;
    EXPECT_TRUE(ports.ranges().empty());
}

TEST_F(GenericTest, UnknownUrlSchemeIsRejected) {
    std::string err =
        create(R"(    <device class="GENERIC" id="spy" forward="host_device" hostdev="nosuch:x">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PASSTHROUGH</mode></ports>
    </device>
)");
    const std::string prefix = std::string(kSpy) + ": cannot open hostdev=\"nosuch:x\": ";
    EXPECT_EQ(err.substr(0, prefix.size()), prefix) << err;
    EXPECT_NE(err.find("nosuch", prefix.size()), std::string::npos) << err;
    EXPECT_TRUE(ports.ranges().empty());
}

// --- in code ---------------------------------------------------------------------------------

TEST_F(GenericTest, CreatedInCodeErrorsNameTheDevice) {
    mgr = std::make_unique<DeviceManager>(classes);
    ctx = std::make_unique<DeviceContext>(
        DeviceContext{ports, mmio, **memory, sink, timers, *mgr, &trace});
    Generic::Settings s;
    s.ranges.push_back({Space::io, 0x3f8, 0x3ff, Generic::Mode::passthrough, ""});
    auto d = Generic::create("spy", s, *ctx);
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().message,
              "GENERIC spy: attribute 'forward' is required when a range passes accesses "
              "through (port range 0x3f8-0x3ff uses PASSTHROUGH); use forward=\"host_device\" or "
              "forward=\"physical_device\"");
    s.forward = Generic::Forward::host_device;
    s.hostdev = "fake:code";
    s.transports = &transports;
    auto made = Generic::create("spy", s, *ctx);
    ASSERT_TRUE(made) << made.error().message;
    fake.bytes[{Generic::kPortRegion, 0x3ff}] = 0x99;
    EXPECT_EQ(ports.read(Port(0x3ff), 1), 0x99u);
}

}  // namespace
