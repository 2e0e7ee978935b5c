// PCI_FRONT against a fake HostDevice: the ten semantics of ARCHITECTURE.md §4, each named
// after the bug it catches. The front-end is created through its device class with a real
// PciBus, PortBus, MmioBus and GuestMemory.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "devices/pci_front.hpp"
#include "devices/test_device.hpp"
#include "fake_host_device.hpp"
#include "pci/capabilities.hpp"
#include "pci/express.hpp"
#include "pci/header.hpp"
#include "pci/pci_bus.hpp"
#include "pci/registers.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"

namespace potemkin {
namespace {

using devices::PciFront;
using hostdev::IrqKind;
using pci::BusChanges;
using pci::IoRange;
using pci::MmioRange;
namespace reg = pci::reg;

constexpr uint16_t kIo = pci::command::kIoSpace;
constexpr uint16_t kMem = pci::command::kMemorySpace;
constexpr uint16_t kMaster = pci::command::kBusMaster;
constexpr uint16_t kIntxOff = pci::command::kInterruptDisable;

// Where the MSI-X table and PBA live in BAR1.
constexpr uint32_t kTableOffset = 0x800;
constexpr uint32_t kPbaOffset = 0xC00;
constexpr uint32_t kVendorReg = 0xC0;  // a vendor-specific register past the capabilities

using testing::ConfigAccess;
using testing::FakeHostState;
using testing::NullTimers;
using testing::RecordingSink;

// Region contents: a pattern that identifies the region and the offset.
uint8_t region_byte(uint32_t index, uint64_t offset) {
    return static_cast<uint8_t>((index << 4) | (offset & 0xF));
}

// The fake device's config space: built with the pci helpers, then given the values a real
// device might hold that the front-end must not trust (a BAR value that implies another size,
// error bits in the status register).
std::vector<uint8_t> fake_config() {
    auto h = pci::make_type0_header({.vendor_id = 0x1234,
                                     .device_id = 0x11e8,
                                     .class_code = 0x00FF00,
                                     .interrupt_pin = pci::InterruptPin::inta});
    EXPECT_TRUE(h);
    pci::ConfigSpace cs = std::move(h).value();
    auto msi = pci::msi_capability({.vectors = 4, .address64 = true, .per_vector_masking = true});
    EXPECT_TRUE(msi && pci::add_capability(cs, *msi));
    auto msix = pci::msix_capability({.vectors = 4,
                                      .table_bir = 1,
                                      .table_offset = kTableOffset,
                                      .pba_bir = 1,
                                      .pba_offset = kPbaOffset});
    EXPECT_TRUE(msix && pci::add_capability(cs, *msix));
    // The seed sized BARs from their value: this one says 64 KiB, region info says 4 KiB.
    EXPECT_TRUE(cs.store(reg::bar(1), 4, 0xFEBF'0000));
    EXPECT_TRUE(cs.update(reg::kStatus, 2, 0,
                          pci::status::kSignaledTargetAbort | pci::status::kReceivedMasterAbort));
    EXPECT_TRUE(cs.store(kVendorReg, 4, 0xDEAD'BEEF));
    EXPECT_TRUE(cs.store(reg::kInterruptLine, 1, 0xFF));
    return {cs.bytes().begin(), cs.bytes().end()};
}

FakeHostState fake_state() {
    FakeHostState s;
    s.config = fake_config();
    s.num_irqs = 3;
    s.pattern = region_byte;
    s.store_writes = false;
    auto region = [&](uint32_t i, pci::BarKind kind, uint64_t size, bool pf = false) {
        s.regions[i].bar_kind = kind;
        s.regions[i].size = size;
        s.regions[i].readable = s.regions[i].writable = true;
        s.regions[i].prefetchable = pf;
    };
    region(0, pci::BarKind::io, 0x20);
    region(1, pci::BarKind::mem32, 0x1000);
    region(2, pci::BarKind::mem64, 0x4000, true);
    region(6, pci::BarKind::rom, 0x1'0000);
    return s;
}

constexpr const char* kDefaultDevice =
    R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="fake:dev" slot="3"/>)";

std::string vm_xml(const std::string& devices) {
    return "<vm class=\"PC\">\n<memory>16</memory>\n<devices>\n"
           "<device class=\"PCI\" id=\"pci0\"/>\n"
           "<device class=\"TEST_DEVICE\" id=\"t0\" mmio=\"0xf0000000\"/>\n" +
           devices + "\n</devices>\n</vm>\n";
}

// A VM without a CPU: buses, RAM, the device manager, a test-local transport registry with
// the "fake" scheme.
struct Env {
    FakeHostState state = fake_state();
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    std::unique_ptr<vm::GuestMemory> memory;
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    RecordingSink sink;
    NullTimers timers;
    std::unique_ptr<vm::DeviceManager> manager;
    std::unique_ptr<vm::DeviceContext> ctx;

    Env() {
        EXPECT_TRUE(testing::add_fake_transport(transports, state, "fake", "dev"));
        EXPECT_TRUE(devices::register_test_device(classes));
        EXPECT_TRUE(pci::register_pci_bus(classes));
        EXPECT_TRUE(devices::register_pci_front(classes, &transports));
        auto m = vm::GuestMemory::create({{Gpa(0), 16u << 20}});
        EXPECT_TRUE(m);
        memory = std::move(*m);
        manager = std::make_unique<vm::DeviceManager>(classes);
        ctx = std::make_unique<vm::DeviceContext>(
            vm::DeviceContext{ports, mmio, *memory, sink, timers, *manager, nullptr});
    }
    ~Env() { manager.reset(); }  // devices first: they unhook from the buses

    // Create the configured devices; "" on success, else the error message.
    std::string create(const std::string& device_xml = kDefaultDevice) {
        auto doc = vm::ConfigDocument::load_string(vm_xml(device_xml), "vm.xml");
        if (!doc) return doc.error().message;
        auto cfg = vm::parse_vm_config(*doc);
        if (!cfg) return cfg.error().message;
        auto r = manager->create_all(cfg->devices, *ctx);
        state.opened = true;
        return r ? std::string() : r.error().message;
    }
    PciFront& front() { return *manager->find_as<PciFront>("edu0"); }
    pci::PciBus& bus() { return *manager->find_as<pci::PciBus>("pci0"); }
    pci::PciAddress addr() { return *front().address(); }
    hostdev::HostDeviceEvents& events() { return *state.events; }
};

class PciFrontTest : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_EQ(env.create(), ""); }
    // Straight to the PciFunction, bypassing the bus: the returned changes are not applied.
    BusChanges write(uint32_t offset, unsigned size, uint32_t value) {
        return env.front().config_write(offset, size, value).bus;
    }
    uint32_t read(uint32_t offset, unsigned size = 4) {
        return env.front().config_read(offset, size);
    }
    // Through mechanism #1's entry point: the bus applies the changes.
    void bus_write(uint32_t offset, unsigned size, uint32_t value) {
        env.bus().config_write(env.addr(), offset, size, value);
    }
    uint32_t bus_read(uint32_t offset, unsigned size = 4) {
        return env.bus().config_read(env.addr(), offset, size);
    }
    uint8_t cap(uint8_t id) {
        auto c = pci::find_capability(env.front().shadow(), id);
        EXPECT_TRUE(c);
        return c.value_or(0);
    }
    std::string owner_at(uint64_t gpa) {
        const auto* r = env.mmio.find(Gpa(gpa));
        return r ? r->owner : std::string("(none)");
    }
    std::string port_owner_at(uint16_t port) {
        const auto* r = env.ports.find(Port(port));
        return r ? r->owner : std::string("(none)");
    }
    // BAR0 I/O 0xC000, BAR1 0xE000_0000, BAR2/3 0x1_0000_0000, ROM 0xE010_0000 (enabled).
    void program_bars() {
        EXPECT_TRUE(write(reg::bar(0), 4, 0xC000).empty());
        EXPECT_TRUE(write(reg::bar(1), 4, 0xE000'0000).empty());
        EXPECT_TRUE(write(reg::bar(2), 4, 0).empty());
        EXPECT_TRUE(write(reg::bar(3), 4, 1).empty());
        EXPECT_TRUE(write(reg::kRomBar, 4, 0xE010'0001).empty());
    }

    Env env;
};

vm::BusHandler idle_handler() {
    return {[](uint64_t, unsigned) { return uint64_t{0}; }, [](uint64_t, unsigned, uint64_t) {}};
}

const IoRange kBar0{0xC000, 0x20, 0};
const MmioRange kBar1{0xE000'0000, 0x1000, 1};
const MmioRange kBar2{0x1'0000'0000, 0x4000, 2};
const MmioRange kRom{0xE010'0000, 0x1'0000, pci::kRomBarIndex};

TEST_F(PciFrontTest, BarSizeComesFromRegionInfoNotFromBarValue) {
    // The device's BAR1 said 0xFEBF0000 (a 64 KiB BAR by the seed's arithmetic); the local
    // BAR starts unassigned and sizes as region info says: 4 KiB.
    EXPECT_EQ(read(reg::bar(1)), 0u);
    write(reg::bar(1), 4, 0xFFFF'FFFF);
    EXPECT_EQ(read(reg::bar(1)), 0xFFFF'F000u);
    write(reg::bar(0), 4, 0xFFFF'FFFF);
    EXPECT_EQ(read(reg::bar(0)), 0xFFFF'FFE1u);  // 32 bytes of I/O
    write(reg::bar(2), 4, 0xFFFF'FFFF);
    write(reg::bar(3), 4, 0xFFFF'FFFF);
    EXPECT_EQ(read(reg::bar(2)), 0xFFFF'C00Cu);  // 16 KiB, 64-bit, prefetchable
    EXPECT_EQ(read(reg::bar(3)), 0xFFFF'FFFFu);
    write(reg::bar(4), 4, 0xFFFF'FFFF);
    EXPECT_EQ(read(reg::bar(4)), 0u);  // absent region: unimplemented BAR
    write(reg::kRomBar, 4, 0xFFFF'F800);
    EXPECT_EQ(read(reg::kRomBar), 0xFFFF'0000u);  // 64 KiB ROM from region 6
    // And none of it reached the device: BARs are shadowed.
    EXPECT_FALSE(env.state.config_written_in(reg::kBar0, reg::kCardbusCis));
    EXPECT_FALSE(env.state.config_written_in(reg::kRomBar, reg::kRomBar + 4));
}

TEST_F(PciFrontTest, SizingWriteNeverMapsAnything) {
    program_bars();
    EXPECT_EQ(write(reg::kCommand, 2, kIo | kMem),
              (BusChanges{.io_add = {kBar0}, .mmio_add = {kBar1, kBar2, kRom}}));
    // The probe unmaps while in progress and never maps at the all-ones address.
    EXPECT_EQ(write(reg::bar(1), 4, 0xFFFF'FFFF), (BusChanges{.mmio_remove = {kBar1}}));
    EXPECT_EQ(write(reg::bar(1), 4, 0xE000'0000), (BusChanges{.mmio_add = {kBar1}}));
    EXPECT_EQ(write(reg::bar(0), 4, 0xFFFF'FFFF), (BusChanges{.io_remove = {kBar0}}));
    EXPECT_EQ(write(reg::bar(0), 4, 0xC000), (BusChanges{.io_add = {kBar0}}));
    EXPECT_EQ(write(reg::bar(2), 4, 0xFFFF'FFFF), (BusChanges{.mmio_remove = {kBar2}}));
    EXPECT_EQ(write(reg::bar(2), 4, 0), (BusChanges{.mmio_add = {kBar2}}));
    EXPECT_EQ(write(reg::bar(3), 4, 0xFFFF'FFFF), (BusChanges{.mmio_remove = {kBar2}}));
    EXPECT_EQ(write(reg::bar(3), 4, 1), (BusChanges{.mmio_add = {kBar2}}));
    EXPECT_EQ(write(reg::kRomBar, 4, 0xFFFF'F800), (BusChanges{.mmio_remove = {kRom}}));
}

TEST_F(PciFrontTest, SizingThroughTheBusLeavesNoRangeAtAllOnes) {
    bus_write(reg::bar(1), 4, 0xE000'0000);
    bus_write(reg::kCommand, 2, kMem);
    EXPECT_EQ(owner_at(0xE000'0000), "edu0");
    bus_write(reg::bar(1), 4, 0xFFFF'FFFF);
    EXPECT_EQ(bus_read(reg::bar(1)), 0xFFFF'F000u);
    EXPECT_EQ(owner_at(0xFFFF'F000), "(none)");
    EXPECT_EQ(owner_at(0xE000'0000), "(none)");
    bus_write(reg::bar(1), 4, 0xE000'0000);
    EXPECT_EQ(owner_at(0xE000'0000), "edu0");
}

TEST_F(PciFrontTest, Mem64RelocatesInEitherWriteOrder) {
    program_bars();
    write(reg::kCommand, 2, kMem);
    const MmioRange moved{0x2'8000'0000, 0x4000, 2};
    // Low half first: the half-written 0x1_8000_0000 is never mapped.
    EXPECT_TRUE(write(reg::bar(2), 4, 0x8000'0000).empty());
    EXPECT_EQ(read(reg::bar(2)), 0x8000'000Cu);  // the register reads what was written
    EXPECT_EQ(write(reg::bar(3), 4, 2), (BusChanges{.mmio_remove = {kBar2}, .mmio_add = {moved}}));
    // High half first, back again: 0x1_8000_0000 is not mapped either.
    EXPECT_TRUE(write(reg::bar(3), 4, 1).empty());
    EXPECT_EQ(write(reg::bar(2), 4, 0), (BusChanges{.mmio_remove = {moved}, .mmio_add = {kBar2}}));
    // A lone half-write lands with the next config write of anything else.
    EXPECT_TRUE(write(reg::bar(2), 4, 0x8000'0000).empty());
    const MmioRange lone{0x1'8000'0000, 0x4000, 2};
    EXPECT_EQ(write(reg::kInterruptLine, 1, 5),
              (BusChanges{.mmio_remove = {kBar2}, .mmio_add = {lone}}));
}

TEST_F(PciFrontTest, Mem64RelocationThroughTheBus) {
    bus_write(reg::bar(2), 4, 0);
    bus_write(reg::bar(3), 4, 1);
    bus_write(reg::kCommand, 2, kMem);
    EXPECT_EQ(owner_at(0x1'0000'0000), "edu0");
    bus_write(reg::bar(3), 4, 2);
    EXPECT_EQ(owner_at(0x2'0000'0000), "(none)");  // not the intermediate
    EXPECT_EQ(owner_at(0x1'0000'0000), "edu0");
    bus_write(reg::bar(2), 4, 0x8000'0000);
    EXPECT_EQ(owner_at(0x2'8000'0000), "edu0");
    EXPECT_EQ(owner_at(0x1'0000'0000), "(none)");
    EXPECT_EQ(env.bus().rejected_writes(), 0u);
}

TEST_F(PciFrontTest, DecodeGatedByCommandRegister) {
    program_bars();  // decode off: nothing maps
    EXPECT_EQ(write(reg::kCommand, 2, kIo), (BusChanges{.io_add = {kBar0}}));
    EXPECT_EQ(write(reg::kCommand, 2, kIo | kMem), (BusChanges{.mmio_add = {kBar1, kBar2, kRom}}));
    EXPECT_EQ(write(reg::kCommand, 2, kMem), (BusChanges{.io_remove = {kBar0}}));
    EXPECT_EQ(write(reg::kCommand, 2, 0), (BusChanges{.mmio_remove = {kBar1, kBar2, kRom}}));
    EXPECT_EQ(read(reg::kCommand, 2), 0u);
}

TEST_F(PciFrontTest, RomEnableBitGatesRom) {
    write(reg::kCommand, 2, kMem);
    EXPECT_TRUE(write(reg::kRomBar, 4, 0xE010'0000).empty());  // enable bit clear
    EXPECT_EQ(write(reg::kRomBar, 4, 0xE010'0001), (BusChanges{.mmio_add = {kRom}}));
    EXPECT_EQ(read(reg::kRomBar), 0xE010'0001u);
    EXPECT_EQ(write(reg::kRomBar, 4, 0xE010'0000), (BusChanges{.mmio_remove = {kRom}}));
}

TEST_F(PciFrontTest, RomReadsReachRegion6AndWritesAreDropped) {
    bus_write(reg::kRomBar, 4, 0xE010'0001);
    bus_write(reg::kCommand, 2, kMem);
    ASSERT_EQ(owner_at(0xE010'0000), "edu0");
    EXPECT_EQ(env.mmio.read(Gpa(0xE010'0004), 4), 0x6766'6564u);  // region 6, offsets 4..7
    ASSERT_EQ(env.state.region_reads.size(), 1u);
    EXPECT_EQ(env.state.region_reads[0].index, hostdev::kRomRegion);
    EXPECT_EQ(env.state.region_reads[0].offset, 4u);
    env.mmio.write(Gpa(0xE010'0000), 4, 0x1234);
    EXPECT_TRUE(env.state.region_writes.empty());
}

TEST_F(PciFrontTest, StatusW1c) {
    using namespace pci::status;
    const uint32_t s = read(reg::kStatus, 2);
    EXPECT_EQ(s, uint32_t{kCapabilitiesList | kSignaledTargetAbort | kReceivedMasterAbort});
    write(reg::kStatus, 2, kSignaledTargetAbort);  // clears that bit only
    EXPECT_EQ(read(reg::kStatus, 2), uint32_t{kCapabilitiesList | kReceivedMasterAbort});
    write(reg::kStatus, 2, 0);  // writing 0 changes nothing
    EXPECT_EQ(read(reg::kStatus, 2), uint32_t{kCapabilitiesList | kReceivedMasterAbort});
    // Read-only bits (capabilities list, interrupt status) and reserved bits cannot be set or
    // cleared; all W1C bits clear.
    write(reg::kStatus, 2, 0xFFFF);
    EXPECT_EQ(read(reg::kStatus, 2), uint32_t{kCapabilitiesList});
    // The write went through to the device too, so it can clear its own error state.
    EXPECT_TRUE(env.state.wrote_config(reg::kStatus, {0xFF, 0xFF}));
}

TEST_F(PciFrontTest, InterruptStatusFollowsIntxEvents) {
    env.events().intx(true);
    EXPECT_TRUE(read(reg::kStatus, 2) & pci::status::kInterruptStatus);
    write(reg::kCommand, 2, kIntxOff);  // disable does not hide the status (6.2.3)
    EXPECT_TRUE(read(reg::kStatus, 2) & pci::status::kInterruptStatus);
    env.events().intx(false);
    EXPECT_FALSE(read(reg::kStatus, 2) & pci::status::kInterruptStatus);
}

TEST_F(PciFrontTest, NonShadowedConfigIsForwarded) {
    EXPECT_EQ(read(kVendorReg), 0xDEAD'BEEFu);
    env.state.config[kVendorReg] = 0x11;  // read from the device each time, never cached
    EXPECT_EQ(read(kVendorReg), 0xDEAD'BE11u);
    write(kVendorReg + 4, 4, 0xCAFE'F00D);
    EXPECT_TRUE(env.state.wrote_config(kVendorReg + 4, {0x0D, 0xF0, 0xFE, 0xCA}));
    // Identification comes from the device.
    EXPECT_EQ(read(reg::kVendorId), 0x11e8'1234u);
    EXPECT_FALSE(env.front().shadowed(reg::kVendorId));
    EXPECT_FALSE(env.front().shadowed(kVendorReg));
}

TEST_F(PciFrontTest, ConfigDwordStraddlingShadowedAndForwardedBytesIsSplit) {
    // 0x3C: interrupt line (shadowed), pin, Min_Gnt, Max_Lat (forwarded).
    env.state.config_writes.clear();
    write(reg::kInterruptLine, 4, 0xAABB'CC0B);
    EXPECT_EQ(env.state.config_writes, (std::vector<ConfigAccess>{{0x3D, {0xCC, 0xBB, 0xAA}}}));
    EXPECT_EQ(read(reg::kInterruptLine, 1), 0x0Bu);  // local RW
    env.state.config_reads.clear();
    EXPECT_EQ(read(reg::kInterruptLine, 4), 0x0000'010Bu);  // pin 1 from the device
    EXPECT_EQ(env.state.config_reads, (std::vector<ConfigAccess>{{0x3D, {0x01, 0x00, 0x00}}}));
}

TEST_F(PciFrontTest, CommandWriteIsForwardedToo) {
    env.state.config_writes.clear();
    write(reg::kCommand, 2, kMem | kMaster | kIntxOff);
    EXPECT_TRUE(env.state.wrote_config(reg::kCommand, {0x06, 0x04}));
    // Decode is decided locally: the device's copy of the command register is not read.
    env.state.config_reads.clear();
    EXPECT_EQ(read(reg::kCommand, 2), uint32_t{kMem | kMaster | kIntxOff});
    EXPECT_TRUE(env.state.config_reads.empty());
    // Bits a type 0 function does not implement stay 0.
    write(reg::kCommand, 2, 0xFFFF);
    EXPECT_EQ(read(reg::kCommand, 2), uint32_t{pci::command::kWritable});
}

TEST_F(PciFrontTest, FailedHostReadReturnsAllOnesAndLogsOnce) {
    bus_write(reg::bar(1), 4, 0xE000'0000);
    bus_write(reg::kCommand, 2, kMem);
    env.state.fail_reads = true;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(env.mmio.read(Gpa(0xE000'0010), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(env.mmio.read(Gpa(0xE000'0010), 2), 0xFFFFu);
    const std::string log = ::testing::internal::GetCapturedStderr();
    size_t count = 0;
    for (size_t p = log.find("host device read failed"); p != std::string::npos;
         p = log.find("host device read failed", p + 1))
        ++count;
    EXPECT_EQ(count, 1u) << log;
    EXPECT_NE(log.find("connection reset"), std::string::npos) << log;
    EXPECT_EQ(env.front().host_errors(), 2u);
    // Forwarded config reads fail the same way.
    env.state.fail_config_reads_after_open = true;
    EXPECT_EQ(read(kVendorReg), 0xFFFF'FFFFu);
    EXPECT_EQ(env.front().host_errors(), 3u);
}

TEST_F(PciFrontTest, DisconnectedDeviceReadsAllOnes) {
    bus_write(reg::bar(1), 4, 0xE000'0000);
    bus_write(reg::kCommand, 2, kMem);
    env.events().intx(true);
    const uint8_t line = env.bus().intx_line(env.addr(), 1);
    EXPECT_TRUE(env.sink.levels[line]);
    ::testing::internal::CaptureStderr();
    env.events().disconnected("peer closed the socket");
    env.events().disconnected("again");
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("peer closed the socket"), std::string::npos);
    EXPECT_EQ(log.find("again"), std::string::npos);
    EXPECT_FALSE(env.sink.levels[line]);  // a device that is gone holds no line
    EXPECT_EQ(env.mmio.read(Gpa(0xE000'0010), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(bus_read(reg::kVendorId), 0xFFFF'FFFFu);
    EXPECT_EQ(bus_read(reg::kCommand, 2), 0xFFFFu);
    EXPECT_TRUE(env.front().is_disconnected());
}

TEST_F(PciFrontTest, MsiMessageBuiltFromShadowedCapability) {
    const uint8_t msi = cap(pci::cap_id::kMsi);
    const bool a64 = true;
    write(reg::kCommand, 2, kMaster);
    env.state.config_writes.clear();
    write(msi + pci::msi::kAddressLo, 4, 0xFEE0'0000);
    write(msi + pci::msi::kAddressHi, 4, 0);
    write(msi + pci::msi::data_offset(a64), 2, 0x4040);
    write(msi + pci::msi::kControl, 2, pci::msi::kEnable | (2u << pci::msi::kMmeShift));
    EXPECT_FALSE(env.state.config_written_in(msi, msi + 0x18));  // shadowed, not forwarded
    env.events().msi(2);
    ASSERT_EQ(env.sink.msis.size(), 1u);
    EXPECT_EQ(env.sink.msis[0], (pci::MsiMessage{0xFEE0'0000, 0x4042}));
    // Masked: no message, pending bit set; unmasking delivers it and clears the bit.
    write(msi + pci::msi::mask_offset(a64), 4, 0x2);
    env.events().msi(1);
    EXPECT_EQ(env.sink.msis.size(), 1u);
    EXPECT_EQ(read(msi + pci::msi::pending_offset(a64)), 0x2u);
    write(msi + pci::msi::mask_offset(a64), 4, 0);
    ASSERT_EQ(env.sink.msis.size(), 2u);
    EXPECT_EQ(env.sink.msis[1], (pci::MsiMessage{0xFEE0'0000, 0x4041}));
    EXPECT_EQ(read(msi + pci::msi::pending_offset(a64)), 0u);
}

TEST_F(PciFrontTest, MsiNeedsBusMastering) {
    const uint8_t msi = cap(pci::cap_id::kMsi);
    write(msi + pci::msi::kAddressLo, 4, 0xFEE0'0000);
    write(msi + pci::msi::kControl, 2, pci::msi::kEnable);
    env.events().msi(0);
    EXPECT_TRUE(env.sink.msis.empty());
    write(reg::kCommand, 2, kMaster);
    env.events().msi(0);
    EXPECT_EQ(env.sink.msis.size(), 1u);
}

TEST_F(PciFrontTest, MsixTableEmulatedLocally) {
    const uint8_t msix = cap(pci::cap_id::kMsix);
    bus_write(reg::bar(1), 4, 0xE000'0000);
    bus_write(reg::kCommand, 2, kMem | kMaster);
    bus_write(msix + pci::msix::kControl, 2, pci::msix::kEnable | pci::msix::kFunctionMask);
    const uint64_t entry0 = 0xE000'0000 + kTableOffset;
    env.mmio.write(Gpa(entry0 + pci::msix::kEntryAddressLo), 4, 0xFEE0'1000);
    env.mmio.write(Gpa(entry0 + pci::msix::kEntryAddressHi), 4, 0);
    env.mmio.write(Gpa(entry0 + pci::msix::kEntryData), 4, 0x55);
    env.mmio.write(Gpa(entry0 + pci::msix::kEntryVectorControl), 4, 0);  // unmask vector 0
    EXPECT_EQ(env.mmio.read(Gpa(entry0 + pci::msix::kEntryData), 4), 0x55u);
    // Function mask: pending, visible in the PBA.
    env.events().msi(0);
    EXPECT_TRUE(env.sink.msis.empty());
    EXPECT_EQ(env.mmio.read(Gpa(0xE000'0000 + kPbaOffset), 8), 0x1u);
    // Clearing the function mask delivers it.
    bus_write(msix + pci::msix::kControl, 2, pci::msix::kEnable);
    ASSERT_EQ(env.sink.msis.size(), 1u);
    EXPECT_EQ(env.sink.msis[0], (pci::MsiMessage{0xFEE0'1000, 0x55}));
    EXPECT_EQ(env.mmio.read(Gpa(0xE000'0000 + kPbaOffset), 8), 0x0u);
    // Vector mask: pending; unmasking through the table delivers.
    env.mmio.write(Gpa(entry0 + pci::msix::kEntryVectorControl), 4, 1);
    env.events().msi(0);
    EXPECT_EQ(env.sink.msis.size(), 1u);
    env.mmio.write(Gpa(entry0 + pci::msix::kEntryVectorControl), 4, 0);
    EXPECT_EQ(env.sink.msis.size(), 2u);
    // Unmasked and enabled: straight through.
    env.events().msi(0);
    EXPECT_EQ(env.sink.msis.size(), 3u);
    // None of the table or PBA traffic reached the device; the rest of BAR1 does.
    for (const auto& a : env.state.region_writes) EXPECT_LT(a.offset, kTableOffset);
    for (const auto& a : env.state.region_reads) EXPECT_LT(a.offset, kTableOffset);
    env.mmio.write(Gpa(0xE000'0010), 4, 0x1234'5678);
    ASSERT_EQ(env.state.region_writes.size(), 1u);
    EXPECT_EQ(env.state.region_writes[0].index, 1u);
    EXPECT_EQ(env.state.region_writes[0].offset, 0x10u);
    EXPECT_EQ(env.state.region_writes[0].bytes, (std::vector<uint8_t>{0x78, 0x56, 0x34, 0x12}));
}

TEST_F(PciFrontTest, IntxRoutedThroughBusAndInterruptDisable) {
    const uint8_t line = env.bus().intx_line(env.addr(), 1);
    env.events().intx(true);
    EXPECT_TRUE(env.sink.levels[line]);
    write(reg::kCommand, 2, kIntxOff);
    EXPECT_FALSE(env.sink.levels[line]);
    env.events().intx(false);
    env.events().intx(true);  // remembered, not delivered
    EXPECT_FALSE(env.sink.levels[line]);
    write(reg::kCommand, 2, 0);  // re-enabled: the remembered level applies
    EXPECT_TRUE(env.sink.levels[line]);
    env.events().intx(false);
    EXPECT_FALSE(env.sink.levels[line]);
}

TEST_F(PciFrontTest, GuestEoiReachesTheHostDeviceOnlyWhileItDrivesTheLine) {
    const uint8_t line = env.bus().intx_line(env.addr(), 1);
    const uint8_t other = line == 10 ? 11 : 10;
    env.bus().eoi(line);
    EXPECT_EQ(env.state.acks, 0) << "not asserted: nothing to acknowledge";
    env.events().intx(true);
    env.bus().eoi(other);
    EXPECT_EQ(env.state.acks, 0) << "an EOI on another line";
    env.bus().eoi(line);
    EXPECT_EQ(env.state.acks, 1);
    EXPECT_TRUE(env.sink.levels[line]) << "the device did not lower it: still asserted";
    // Interrupt Disable holds the line back: the guest took no interrupt of ours.
    write(reg::kCommand, 2, kIntxOff);
    env.bus().eoi(line);
    EXPECT_EQ(env.state.acks, 1);
    write(reg::kCommand, 2, 0);
    // A transport that lowers the line on the acknowledgement (VFIO unmask, mpqemu resample):
    // the line is down before the EOI write returns.
    env.state.on_ack = [&] { env.events().intx(false); };
    env.bus().eoi(line);
    EXPECT_EQ(env.state.acks, 2);
    EXPECT_FALSE(env.sink.levels[line]);
    env.bus().eoi(line);
    EXPECT_EQ(env.state.acks, 2);
}

TEST_F(PciFrontTest, VmResetRestoresThePowerOnShadowAndResetsTheDevice) {
    const uint8_t line = env.bus().intx_line(env.addr(), 1);
    bus_write(reg::bar(0), 4, 0xC000);
    bus_write(reg::bar(1), 4, 0xE000'0000);
    bus_write(reg::kCommand, 2, kIo | kMem | kMaster);
    ASSERT_EQ(owner_at(0xE000'0000), "edu0");
    ASSERT_EQ(port_owner_at(0xC000), "edu0");
    env.events().intx(true);
    ASSERT_TRUE(env.sink.levels[line]);
    const uint8_t msi = cap(pci::cap_id::kMsi);
    bus_write(msi + pci::msi::kControl, 2, pci::msi::kEnable);  // MSI on at the reset
    env.events().msi(0);
    ASSERT_EQ(env.sink.msis.size(), 1u);
    const auto irq_calls = env.state.irqs.size();

    env.manager->reset_all();  // the bus first, then the front-end, as in a VM reset

    EXPECT_EQ(env.state.resets, 1);
    EXPECT_EQ(bus_read(reg::kCommand, 2), 0u);
    EXPECT_EQ(bus_read(reg::bar(1)), 0u) << "BARs unassigned";
    EXPECT_EQ(bus_read(reg::bar(0)), 1u) << "I/O BAR: address 0, the I/O type bit";
    EXPECT_EQ(bus_read(msi + pci::msi::kControl, 2) & pci::msi::kEnable, 0u);
    EXPECT_EQ(bus_read(reg::kStatus, 2) & pci::status::kInterruptStatus, 0u);
    EXPECT_EQ(owner_at(0xE000'0000), "(none)");
    EXPECT_EQ(port_owner_at(0xC000), "(none)");
    EXPECT_FALSE(env.sink.levels[line]) << "a reset function drives no INTx";
    ASSERT_EQ(env.state.irqs.size(), irq_calls + 1);
    EXPECT_EQ(env.state.irqs.back(), std::make_pair(IrqKind::intx, 1u)) << "back in INTx mode";
    // It works again from scratch: the guest assigns the BAR anew, INTx is delivered.
    bus_write(reg::bar(1), 4, 0xE100'0000);
    bus_write(reg::kCommand, 2, kMem);
    EXPECT_EQ(owner_at(0xE100'0000), "edu0");
    env.events().intx(true);
    EXPECT_TRUE(env.sink.levels[line]);
}

TEST_F(PciFrontTest, SetIrqsToldOnMsiEnable) {
    const uint8_t msi = cap(pci::cap_id::kMsi);
    const uint8_t msix = cap(pci::cap_id::kMsix);
    using Calls = std::vector<std::pair<IrqKind, uint32_t>>;
    write(msi + pci::msi::kControl, 2, pci::msi::kEnable | (1u << pci::msi::kMmeShift));
    EXPECT_EQ(env.state.irqs, (Calls{{IrqKind::msi, 2}}));
    write(msi + pci::msi::kControl, 2, 0);
    EXPECT_EQ(env.state.irqs, (Calls{{IrqKind::msi, 2}, {IrqKind::intx, 1}}));
    write(msix + pci::msix::kControl, 2, pci::msix::kEnable);
    write(msix + pci::msix::kControl, 2, pci::msix::kEnable | pci::msix::kFunctionMask);
    write(msix + pci::msix::kControl, 2, 0);
    EXPECT_EQ(
        env.state.irqs,
        (Calls{{IrqKind::msi, 2}, {IrqKind::intx, 1}, {IrqKind::msix, 4}, {IrqKind::intx, 1}}));
}

TEST_F(PciFrontTest, DmaOutOfRangeIsAnError) {
    std::array<uint8_t, 16> buf{1, 2, 3, 4};
    // Without bus mastering the function cannot master the bus.
    EXPECT_FALSE(env.events().dma_write(0x1000, buf));
    write(reg::kCommand, 2, kMaster);
    EXPECT_TRUE(env.events().dma_write(0x1000, buf));
    std::array<uint8_t, 16> back{};
    EXPECT_TRUE(env.events().dma_read(0x1000, back));
    EXPECT_EQ(back, buf);
    auto beyond = env.events().dma_read((16u << 20) - 8, back);  // straddles the end of RAM
    ASSERT_FALSE(beyond);
    EXPECT_NE(beyond.error().message.find("edu0"), std::string::npos);
    EXPECT_FALSE(env.events().dma_write(0xFFFF'FFFF'FFFF'FFF8, buf));  // wraps: no crash
}

TEST_F(PciFrontTest, ConfigWriteRejectedRestoresPreviousBar) {
    // Another device's range at 0xE000_0000.
    auto other = env.mmio.add(Gpa(0xE000'0000), 0x1000, "other", idle_handler());
    ASSERT_TRUE(other) << other.error().message;
    bus_write(reg::bar(1), 4, 0xD000'0000);
    bus_write(reg::kCommand, 2, kMem);
    ASSERT_EQ(owner_at(0xD000'0000), "edu0");
    bus_write(reg::bar(1), 4, 0xE000'0000);
    EXPECT_EQ(env.bus().rejected_writes(), 1u);
    EXPECT_EQ(bus_read(reg::bar(1)), 0xD000'0000u);
    EXPECT_EQ(owner_at(0xD000'0000), "edu0");
    EXPECT_EQ(owner_at(0xE000'0000), "other");
    // Over guest RAM: refused the same way.
    bus_write(reg::bar(1), 4, 0x0010'0000);
    EXPECT_EQ(env.bus().rejected_writes(), 2u);
    EXPECT_EQ(bus_read(reg::bar(1)), 0xD000'0000u);
    // A 64-bit move that collides restores both the register and the deferred half.
    bus_write(reg::bar(2), 4, 0);
    bus_write(reg::bar(3), 4, 1);
    ASSERT_EQ(owner_at(0x1'0000'0000), "edu0");
    auto other64 = env.mmio.add(Gpa(0x2'0000'0000), 0x4000, "other64", idle_handler());
    ASSERT_TRUE(other64);
    bus_write(reg::bar(3), 4, 2);  // deferred: nothing to reject yet
    EXPECT_EQ(env.bus().rejected_writes(), 2u);
    bus_write(reg::bar(2), 4, 0);  // lands at 0x2_0000_0000: collides
    EXPECT_EQ(env.bus().rejected_writes(), 3u);
    EXPECT_EQ(owner_at(0x1'0000'0000), "edu0");
    EXPECT_EQ(bus_read(reg::bar(3)), 2u);  // the high half was an earlier, accepted write
    // The next write to the high half moves it back where it is mapped; nothing changes.
    bus_write(reg::bar(3), 4, 1);
    EXPECT_EQ(owner_at(0x1'0000'0000), "edu0");
    EXPECT_EQ(env.bus().rejected_writes(), 3u);
}

TEST_F(PciFrontTest, TeardownUnhooksAndClosesWithoutUseAfterFree) {
    // A second front-end the test owns, so it can be destroyed while mapped.
    FakeHostState& s = env.state;
    devices::PciFrontSettings settings{
        .hostdev = "fake:dev", .bus = &env.bus(), .slot = 5, .transports = &env.transports};
    const int destroyed_before = s.destroyed;
    auto f = PciFront::create("edu1", *env.ctx, settings);
    ASSERT_TRUE(f) << f.error().message;
    const pci::PciAddress addr = *(*f)->address();
    env.bus().config_write(addr, reg::bar(0), 4, 0xD000);
    env.bus().config_write(addr, reg::bar(1), 4, 0xD000'0000);
    env.bus().config_write(addr, reg::kCommand, 2, kIo | kMem);
    ASSERT_EQ(owner_at(0xD000'0000), "edu1");
    ASSERT_EQ(port_owner_at(0xD000), "edu1");
    s.events->intx(true);
    const uint8_t line = env.bus().intx_line(addr, 1);
    ASSERT_TRUE(env.sink.levels[line]);
    const int closes_before = s.closes;

    f.value().reset();  // destroy while mapped and asserting INTx

    EXPECT_EQ(owner_at(0xD000'0000), "(none)");
    EXPECT_EQ(port_owner_at(0xD000), "(none)");
    EXPECT_EQ(env.mmio.read(Gpa(0xD000'0000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(env.bus().config_read(addr, reg::kVendorId, 4), 0xFFFF'FFFFu);
    EXPECT_FALSE(env.sink.levels[line]);
    EXPECT_EQ(s.closes, closes_before + 1);
    EXPECT_EQ(s.destroyed, destroyed_before + 1);
    // The slot is free again.
    auto again = PciFront::create("edu2", *env.ctx, settings);
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ((*again)->address()->device, 5);
}

TEST_F(PciFrontTest, FailedOpenClosesTheDevice) {
    devices::PciFrontSettings settings{
        .hostdev = "fake:dev", .bus = &env.bus(), .slot = 3, .transports = &env.transports};
    const int destroyed_before = env.state.destroyed;
    auto f = PciFront::create("dup", *env.ctx, settings);  // slot 3 is edu0's
    ASSERT_FALSE(f);
    EXPECT_NE(f.error().message.find("slot 3"), std::string::npos) << f.error().message;
    EXPECT_EQ(env.state.destroyed, destroyed_before + 1);
}

// ---- Configuration errors ---------------------------------------------------------------

std::string config_error(const std::string& device_xml) {
    Env env;
    return env.create(device_xml);
}

// A VM reset must take back what the front-end mapped straight into the guest: the machine's
// mapping would otherwise outlive the BAR (and refuse the guest's next assignment there).
TEST(PciFrontReset, VmResetRemovesDirectMappings) {
    Env env;
    const int fd = ::memfd_create("pci-front-test-bar2", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 0x4000), 0);
    env.state.regions[2].fd = fd;
    env.state.regions[2].mmap_areas = {{0, 0x4000}};
    std::vector<std::pair<uint64_t, uint64_t>> mapped, unmapped;
    env.ctx->map_direct = [&](Gpa base, uint64_t size, uint8_t*) -> Result<void> {
        mapped.emplace_back(base.value, size);
        return ok();
    };
    env.ctx->unmap_direct = [&](Gpa base, uint64_t size) -> Result<void> {
        unmapped.emplace_back(base.value, size);
        return ok();
    };
    ASSERT_EQ(env.create(), "");
    env.bus().config_write(env.addr(), reg::bar(2), 4, 0xE100'0000);
    env.bus().config_write(env.addr(), reg::bar(3), 4, 0);
    env.bus().config_write(env.addr(), reg::kCommand, 2, kMem);
    ASSERT_EQ(mapped, (std::vector<std::pair<uint64_t, uint64_t>>{{0xE100'0000, 0x4000}}));
    ASSERT_EQ(env.front().direct_base(2), 0xE100'0000u);

    env.manager->reset_all();
    EXPECT_EQ(unmapped, mapped);
    EXPECT_EQ(env.front().direct_base(2), std::nullopt);
    EXPECT_EQ(env.state.resets, 1);
    env.manager.reset();  // before the fd the fake region names goes
    ::close(fd);
}

// Issue 11: a server that offers a 16 KiB mmap area on a 4 KiB file used to kill the VMM with
// SIGBUS at the guest's first access past the file's end. Such a BAR traps instead.
TEST(PciFrontDirect, AreasPastTheEndOfTheRegionFileAreNotMapped) {
    Env env;
    const int fd = ::memfd_create("pci-front-test-short", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 0x1000), 0);
    env.state.regions[2].fd = fd;
    env.state.regions[2].mmap_areas = {{0, 0x4000}};
    int maps = 0;
    env.ctx->map_direct = [&](Gpa, uint64_t, uint8_t*) -> Result<void> {
        ++maps;
        return ok();
    };
    env.ctx->unmap_direct = [&](Gpa, uint64_t) -> Result<void> { return ok(); };
    ASSERT_EQ(env.create(), "");
    env.bus().config_write(env.addr(), reg::bar(2), 4, 0xE100'0000);
    env.bus().config_write(env.addr(), reg::bar(3), 4, 0);
    env.bus().config_write(env.addr(), reg::kCommand, 2, kMem);
    EXPECT_EQ(maps, 0);
    EXPECT_EQ(env.front().direct_base(2), std::nullopt);
    env.manager.reset();
    ::close(fd);
}

// A server that shrinks the file after the BAR was mapped: the guest's accesses past the new
// end read zeros instead of killing the VMM.
TEST(PciFrontDirect, AFileShrunkAfterMappingReadsZerosInsteadOfKilling) {
    Env env;
    const int fd = ::memfd_create("pci-front-test-shrink", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 0x4000), 0);
    env.state.regions[2].fd = fd;
    env.state.regions[2].mmap_areas = {{0, 0x4000}};
    uint8_t* host = nullptr;
    env.ctx->map_direct = [&](Gpa, uint64_t, uint8_t* h) -> Result<void> {
        host = h;
        return ok();
    };
    env.ctx->unmap_direct = [&](Gpa, uint64_t) -> Result<void> { return ok(); };
    ASSERT_EQ(env.create(), "");
    env.bus().config_write(env.addr(), reg::bar(2), 4, 0xE100'0000);
    env.bus().config_write(env.addr(), reg::bar(3), 4, 0);
    env.bus().config_write(env.addr(), reg::kCommand, 2, kMem);
    ASSERT_NE(host, nullptr);
    host[0x3000] = 0x77;
    ASSERT_EQ(::ftruncate(fd, 0x1000), 0);
    volatile uint8_t* guest_view = host;  // what the engine reads for the guest
    EXPECT_EQ(guest_view[0x3000], 0);     // a zero page now, not SIGBUS
    guest_view[0x3004] = 1;               // and a write there is absorbed too
    guest_view[0x10] = 0x42;              // below the new end: still the server's memory
    uint8_t b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, 0x10), 1);
    EXPECT_EQ(b, 0x42);
    env.manager.reset();
    ::close(fd);
}

TEST(PciFrontConfig, UnknownBusIsRejectedWithLine) {
    const auto e =
        config_error(R"(<device class="PCI_FRONT" id="edu0" bus="pci9" hostdev="fake:dev"/>)");
    EXPECT_NE(e.find("vm.xml:6:"), std::string::npos) << e;
    EXPECT_NE(e.find("attribute 'bus' refers to unknown device 'pci9'"), std::string::npos) << e;
}

TEST(PciFrontConfig, BusThatIsNotAPciBusIsRejected) {
    const auto e =
        config_error(R"(<device class="PCI_FRONT" id="edu0" bus="t0" hostdev="fake:dev"/>)");
    EXPECT_NE(e.find("vm.xml:6:"), std::string::npos) << e;
    EXPECT_NE(e.find("'t0', which is not a PCI bus"), std::string::npos) << e;
}

TEST(PciFrontConfig, BadHostdevUrlIsRejected) {
    auto e = config_error(R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="nope:x"/>)");
    EXPECT_NE(e.find("vm.xml:6:"), std::string::npos) << e;
    EXPECT_NE(e.find("attribute 'hostdev'"), std::string::npos) << e;
    EXPECT_NE(e.find("unknown scheme 'nope'"), std::string::npos) << e;
    e = config_error(R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="fake:gone"/>)");
    EXPECT_NE(e.find("attribute 'hostdev'"), std::string::npos) << e;
    EXPECT_NE(e.find("no fake device 'gone'"), std::string::npos) << e;
    e = config_error(R"(<device class="PCI_FRONT" id="edu0" bus="pci0"/>)");
    EXPECT_NE(e.find("attribute 'hostdev' is required"), std::string::npos) << e;
}

TEST(PciFrontConfig, UnknownAttributeIsRejected) {
    const auto e = config_error(
        R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="fake:dev" colour="red"/>)");
    EXPECT_NE(e.find("vm.xml:6:"), std::string::npos) << e;
    EXPECT_NE(e.find("attribute 'colour' is not known here"), std::string::npos) << e;
}

TEST(PciFrontConfig, BadSlotIsRejected) {
    auto e = config_error(
        R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="fake:dev" slot="0"/>)");
    EXPECT_NE(e.find("attribute 'slot'"), std::string::npos) << e;
    e = config_error(
        R"(<device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="fake:dev" slot="32"/>)");
    EXPECT_NE(e.find("attribute 'slot'"), std::string::npos) << e;
}

TEST(PciFrontConfig, MalformedMsixPlacementIsRejectedAtOpen) {
    Env env;
    // Region info says BAR1 is 1 KiB: the MSI-X table at 0x800 does not fit.
    env.state.regions[1].size = 0x400;
    const auto e = env.create();
    EXPECT_NE(e.find("attribute 'hostdev'"), std::string::npos) << e;
    EXPECT_NE(e.find("MSI-X table"), std::string::npos) << e;
    EXPECT_GE(env.state.destroyed, 1);
}

}  // namespace
}  // namespace potemkin

// ---- PCI Express ---------------------------------------------------------------------------

namespace potemkin {
namespace {

// A PCIe device whose Device Status holds error bits at open, with two extended capabilities.
std::vector<uint8_t> express_config() {
    auto h = pci::make_type0_header({.vendor_id = 0x1234, .device_id = 0x11e8, .express = true});
    EXPECT_TRUE(h);
    pci::ConfigSpace cs = std::move(h).value();
    auto cap = pci::pcie_capability({});
    EXPECT_TRUE(cap);
    auto at = pci::add_capability(cs, *cap);
    EXPECT_TRUE(at);
    EXPECT_TRUE(cs.update(*at + pci::pcie::kDevSta, 2, 0,
                          pci::pcie::kDevStaCorrErr | pci::pcie::kDevStaUnsupportedReq |
                              pci::pcie::kDevStaTransactionsPending));
    EXPECT_TRUE(pci::add_extended_capability(cs, pci::dsn_capability(0x1122'3344'5566'7788ull)));
    EXPECT_TRUE(pci::add_extended_capability(cs, pci::aer_capability()));
    return {cs.bytes().begin(), cs.bytes().end()};
}

TEST(PciFrontExpress, ExtendedSpaceIsForwardedAndDeviceStatusShadowedW1c) {
    Env env;
    env.state.config = express_config();
    ASSERT_EQ(env.create(), "");
    PciFront& f = env.front();
    ASSERT_EQ(f.shadow().size(), 4096u);
    const uint8_t cap = pci::find_capability(f.shadow(), pci::cap_id::kPciExpress).value_or(0);
    ASSERT_NE(cap, 0);
    const uint32_t devsta = cap + uint32_t{pci::pcie::kDevSta};
    EXPECT_TRUE(f.shadowed(devsta));
    EXPECT_EQ(f.config_read(devsta, 2), 0x0029u);  // CorrErr, UR, Transactions Pending
    f.config_write(devsta, 2, pci::pcie::kDevStaCorrErr | pci::pcie::kDevStaTransactionsPending);
    EXPECT_EQ(f.config_read(devsta, 2), 0x0028u);  // CorrErr cleared, RO bit kept
    f.config_write(devsta, 2, 0xFFFF);
    EXPECT_EQ(f.config_read(devsta, 2), 0x0020u);  // every RW1C bit clears, none sets
    // Written through, so the device can clear its own copies.
    EXPECT_TRUE(env.state.wrote_config(devsta, {0xFF, 0xFF}));
    // The extended space comes from the device on every read, through the bus as well.
    EXPECT_FALSE(f.shadowed(0x100));
    EXPECT_EQ(f.config_read(0x104, 4), 0x5566'7788u);
    env.state.config[0x104] = 0x99;
    EXPECT_EQ(env.bus().config_read(env.addr(), 0x104, 4), 0x5566'7799u);
    env.state.config_writes.clear();
    f.config_write(0x100 + 0x0C + 0x08, 4, 0xFFFF'FFFF);  // AER uncorrectable mask at 0x10C+8
    EXPECT_EQ(env.state.config_writes,
              (std::vector<ConfigAccess>{{0x114, {0xFF, 0xFF, 0xFF, 0xFF}}}));
}

TEST(PciFrontExpress, ConventionalDeviceReadsAllOnesPast0x100) {
    Env env;
    ASSERT_EQ(env.create(), "");
    EXPECT_EQ(env.front().shadow().size(), 256u);
    EXPECT_EQ(env.bus().config_read(env.addr(), 0x100, 4), 0xFFFF'FFFFu);
}

}  // namespace
}  // namespace potemkin
