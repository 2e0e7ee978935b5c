// PciBus: configuration mechanism #1 through real port accesses, slot placement, BusChanges
// applied all-or-nothing on real PortBus/MmioBus/GuestMemory, INTx routing. No VM.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "pci/config_write.hpp"
#include "pci/header.hpp"
#include "pci/pci_bus.hpp"
#include "pci/registers.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"
#include "vm/guest_memory.hpp"
#include "vm_fakes.hpp"

namespace potemkin::pci {
namespace {

constexpr uint64_t kRamSize = 16 << 20;  // guest RAM at 0..16 MiB
constexpr uint16_t kTestVendor = 0x1234;
constexpr uint16_t kTestDevice = 0x11e8;

// BARs of the test function.
constexpr int kIoBar = 0;     // I/O, 32 bytes
constexpr int kMemBar = 1;    // mem32, 4 KiB
constexpr int kMem64Bar = 2;  // mem64, 16 KiB (BAR 2 and 3)

using testing::NullTimers;
using testing::RecordingSink;

// A real config-space function: type 0 header, an I/O BAR, a mem32 BAR, a mem64 BAR and a
// ROM, the generic write path, rollback on rejection. Its BAR handlers record each access
// and answer 0xB0 + BAR number.
class TestFunction final : public PciFunction {
  public:
    struct Access {
        int bar;
        uint64_t offset;
        unsigned size;
        bool is_write;
        uint64_t value;
    };

    explicit TestFunction(std::string name, InterruptPin pin = InterruptPin::inta)
        : name_(std::move(name)) {
        layout_.bars[kIoBar] = BarSettings{.kind = BarKind::io, .size = 0x20};
        layout_.bars[kMemBar] = BarSettings{.kind = BarKind::mem32, .size = 0x1000};
        layout_.bars[kMem64Bar] = BarSettings{.kind = BarKind::mem64, .size = 0x4000};
        layout_.rom = RomSettings{.size = 0x1'0000};
        auto h = make_type0_header({.vendor_id = kTestVendor,
                                    .device_id = kTestDevice,
                                    .class_code = 0xFF'0000,
                                    .interrupt_pin = pin});
        EXPECT_TRUE(h);
        if (h) cs_ = std::move(*h);
        auto r = install_bars(cs_, layout_);
        EXPECT_TRUE(r) << r.error().message;
    }

    const std::string& function_name() const override { return name_; }
    uint32_t config_read(uint32_t offset, unsigned size) override {
        EXPECT_LE((offset & 3) + size, 4u) << "the bus must not pass dword-crossing accesses";
        return cs_.read(offset, size);
    }
    ConfigWriteResult config_write(uint32_t offset, unsigned size, uint32_t value) override {
        EXPECT_LE((offset & 3) + size, 4u) << "the bus must not pass dword-crossing accesses";
        saved_ = cs_;
        return write_config(cs_, layout_, offset, size, value);
    }
    void config_write_rejected() override {
        cs_ = saved_;
        ++rejections;
    }
    vm::BusHandler bar_handler(int bar) override {
        return {[this, bar](uint64_t o, unsigned n) -> uint64_t {
                    accesses.push_back({bar, o, n, false, 0});
                    if (on_access) on_access();
                    return 0xB0u + static_cast<unsigned>(bar);
                },
                [this, bar](uint64_t o, unsigned n, uint64_t v) {
                    accesses.push_back({bar, o, n, true, v});
                    if (on_access) on_access();
                }};
    }

    void intx_eoi(uint8_t pin) override {
        eois.push_back(pin);
        if (on_eoi) on_eoi(pin);
    }

    const ConfigSpace& cs() const { return cs_; }

    std::vector<Access> accesses;
    std::vector<uint8_t> eois;  // intx_eoi() pins, in order
    std::function<void(uint8_t)> on_eoi;
    std::function<void()> on_access;
    int rejections = 0;

  private:
    std::string name_;
    BarLayout layout_;
    ConfigSpace cs_;
    ConfigSpace saved_;
};

std::unique_ptr<vm::GuestMemory> make_memory() {
    auto m = vm::GuestMemory::create({{Gpa(0), kRamSize}});
    EXPECT_TRUE(m) << m.error().message;
    return m ? std::move(*m) : nullptr;
}

// Everything a device sees, without a VM.
struct Platform {
    std::unique_ptr<vm::GuestMemory> memory = make_memory();
    vm::PortBus ports{vm::Space::io, 0x1'0000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    RecordingSink sink;
    NullTimers timers;
    vm::DeviceClassRegistry classes;
    vm::DeviceManager manager{classes};
    vm::DeviceContext ctx{ports, mmio, *memory, sink, timers, manager, nullptr};
};

uint32_t latch(uint8_t bus, uint8_t dev, uint8_t fn, uint32_t reg) {
    return 0x8000'0000u | uint32_t{bus} << 16 | uint32_t{dev} << 11 | uint32_t{fn} << 8 |
           (reg & 0xFC);
}

class PciBusTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto b = PciBus::create("pci0", p.ctx, {.memory = p.memory.get()});
        ASSERT_TRUE(b) << b.error().message;
        bus = std::move(*b);
    }

    // Mechanism #1, as a guest does it: latch the dword, then access 0xCFC + (reg & 3).
    uint32_t cfg_read(uint8_t dev, uint8_t fn, uint32_t reg, unsigned size, uint8_t busno = 0) {
        p.ports.write(Port(0xCF8), 4, latch(busno, dev, fn, reg));
        return static_cast<uint32_t>(
            p.ports.read(Port(static_cast<uint16_t>(0xCFC + (reg & 3))), size));
    }
    void cfg_write(uint8_t dev, uint8_t fn, uint32_t reg, unsigned size, uint32_t value) {
        p.ports.write(Port(0xCF8), 4, latch(0, dev, fn, reg));
        p.ports.write(Port(static_cast<uint16_t>(0xCFC + (reg & 3))), size, value);
    }

    PciAddress add(TestFunction& fn, std::optional<uint8_t> slot, uint8_t function = 0) {
        auto a = bus->add_function(fn, slot, function);
        EXPECT_TRUE(a) << a.error().message;
        return a ? *a : PciAddress{};
    }

    // A typical firmware assignment: I/O BAR at `io`, mem32 BAR at `mem`, mem64 BAR at
    // `mem64`, ROM at `rom` (enabled), then decode on.
    void program(uint8_t dev, uint16_t io, uint32_t mem, uint64_t mem64, uint32_t rom) {
        cfg_write(dev, 0, reg::bar(kIoBar), 4, io);
        cfg_write(dev, 0, reg::bar(kMemBar), 4, mem);
        cfg_write(dev, 0, reg::bar(kMem64Bar), 4, static_cast<uint32_t>(mem64));
        cfg_write(dev, 0, reg::bar(kMem64Bar + 1), 4, static_cast<uint32_t>(mem64 >> 32));
        cfg_write(dev, 0, reg::kRomBar, 4, rom | 1);
        cfg_write(dev, 0, reg::kCommand, 2, command::kIoSpace | command::kMemorySpace);
    }

    size_t ranges_owned_by(const std::string& owner) const {
        size_t n = 0;
        for (const auto& r : p.mmio.ranges()) n += r.owner == owner;
        for (const auto& r : p.ports.ranges()) n += r.owner == owner;
        return n;
    }

    Platform p;
    std::unique_ptr<PciBus> bus;
};

// ---- Mechanism #1 ------------------------------------------------------------------------

TEST_F(PciBusTest, HostBridgeIsAnI440fxAt00_00_0) {
    EXPECT_EQ(cfg_read(0, 0, reg::kVendorId, 4), 0x1237'8086u);
    EXPECT_EQ(cfg_read(0, 0, reg::kRevisionId, 4) >> 8, 0x06'0000u);  // host bridge class
    EXPECT_EQ(cfg_read(0, 0, reg::kHeaderType, 1), 0u);               // type 0, single function
    EXPECT_EQ(cfg_read(0, 0, reg::bar(0), 4), 0u);                    // decodes nothing
    // The command register keeps its writable bits.
    cfg_write(0, 0, reg::kCommand, 2, 0xFFFF);
    EXPECT_EQ(cfg_read(0, 0, reg::kCommand, 2), command::kWritable);
}

TEST_F(PciBusTest, ByteWordAndDwordReadsAtEveryDataPortOffset) {
    p.ports.write(Port(0xCF8), 4, latch(0, 0, 0, 0));
    EXPECT_EQ(p.ports.read(Port(0xCFC), 1), 0x86u);
    EXPECT_EQ(p.ports.read(Port(0xCFD), 1), 0x80u);
    EXPECT_EQ(p.ports.read(Port(0xCFE), 1), 0x37u);
    EXPECT_EQ(p.ports.read(Port(0xCFF), 1), 0x12u);
    EXPECT_EQ(p.ports.read(Port(0xCFC), 2), 0x8086u);
    EXPECT_EQ(p.ports.read(Port(0xCFD), 2), 0x3780u);
    EXPECT_EQ(p.ports.read(Port(0xCFE), 2), 0x1237u);
    EXPECT_EQ(p.ports.read(Port(0xCFC), 4), 0x1237'8086u);
}

TEST_F(PciBusTest, DataAccessCrossingTheDwordEndIsSplitByThePortBus) {
    p.ports.write(Port(0xCF8), 4, latch(0, 0, 0, 0));
    // Byte 0xCFF is register 3 (device ID high byte); 0xD00 is nobody's.
    EXPECT_EQ(p.ports.read(Port(0xCFF), 2), 0xFF12u);
    EXPECT_EQ(p.ports.read(Port(0xCFE), 4), 0xFFFF'1237u);
}

TEST_F(PciBusTest, AddressLatchIsDwordOnlyAndSubDwordAccessesAreUnassigned) {
    p.ports.write(Port(0xCF8), 4, 0x8000'1234);
    EXPECT_EQ(p.ports.read(Port(0xCF8), 4), 0x8000'1234u);
    p.ports.write(Port(0xCF8), 1, 0x00);  // not the latch: dropped
    p.ports.write(Port(0xCFA), 2, 0x0000);
    EXPECT_EQ(p.ports.read(Port(0xCF8), 4), 0x8000'1234u);
    EXPECT_EQ(p.ports.read(Port(0xCF8), 1), 0xFFu);
    EXPECT_EQ(p.ports.read(Port(0xCFB), 1), 0xFFu);
    EXPECT_EQ(p.ports.read(Port(0xCFA), 2), 0xFFFFu);
}

TEST_F(PciBusTest, EnableBitClearReadsAllOnesAndDropsWrites) {
    TestFunction f("f1");
    add(f, 1);
    p.ports.write(Port(0xCF8), 4, latch(0, 1, 0, reg::kCommand) & ~0x8000'0000u);
    EXPECT_EQ(p.ports.read(Port(0xCFC), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.ports.read(Port(0xCFC), 2), 0xFFFFu);
    p.ports.write(Port(0xCFC), 2, command::kMemorySpace);
    EXPECT_EQ(f.cs().read(reg::kCommand, 2), 0u);
}

TEST_F(PciBusTest, AbsentSlotsFunctionsAndOtherBusesReadAllOnes) {
    TestFunction f("f1");
    add(f, 1);
    EXPECT_EQ(cfg_read(1, 0, reg::kVendorId, 2), kTestVendor);
    EXPECT_EQ(cfg_read(2, 0, reg::kVendorId, 2), 0xFFFFu);     // empty slot
    EXPECT_EQ(cfg_read(1, 1, reg::kVendorId, 2), 0xFFFFu);     // absent function
    EXPECT_EQ(cfg_read(0, 0, reg::kVendorId, 2, 1), 0xFFFFu);  // bus 1 (the bridge's number)
    EXPECT_EQ(cfg_read(1, 0, reg::kVendorId, 4, 1), 0xFFFF'FFFFu);
    EXPECT_EQ(bus->config_read({1, 1, 0}, 0, 4), 0xFFFF'FFFFu);
    // Writes there are dropped, and do not reach the function on bus 0.
    p.ports.write(Port(0xCF8), 4, latch(1, 1, 0, reg::kCommand));
    p.ports.write(Port(0xCFC), 2, command::kMemorySpace);
    EXPECT_EQ(f.cs().read(reg::kCommand, 2), 0u);
}

TEST_F(PciBusTest, ByteAndWordWritesReachTheCommandRegister) {
    TestFunction f("f1");
    add(f, 1);
    cfg_write(1, 0, reg::kCommand, 1, command::kIoSpace | command::kMemorySpace);
    EXPECT_EQ(f.cs().read(reg::kCommand, 2), 0x0003u);
    cfg_write(1, 0, reg::kCommand + 1, 1, command::kInterruptDisable >> 8);  // 0xCFD
    EXPECT_EQ(f.cs().read(reg::kCommand, 2), 0x0403u);
    EXPECT_EQ(cfg_read(1, 0, reg::kCommand + 1, 1), 0x04u);
    cfg_write(1, 0, reg::kCommand, 2, 0);
    EXPECT_EQ(cfg_read(1, 0, reg::kCommand, 4) & 0xFFFF, 0u);
}

TEST_F(PciBusTest, DirectConfigAccessCrossingADwordIsSplitIntoBytes) {
    TestFunction f("f1");
    add(f, 1);
    // 0x0B..0x0E: class base, cache line, latency, header type.
    EXPECT_EQ(bus->config_read({0, 1, 0}, 0x0B, 4), 0x0000'00FFu);
    bus->config_write({0, 1, 0}, 0x0B, 4, 0x0020'1000);  // cache line 0x10, latency 0x20
    EXPECT_EQ(f.cs().read(reg::kCacheLineSize, 2), 0x2010u);
}

// ---- Placement ---------------------------------------------------------------------------

TEST_F(PciBusTest, FunctionsArePlacedAtTheirSlotOrTheLowestFreeSlot) {
    TestFunction a("a"), b("b"), c("c");
    EXPECT_EQ(add(a, std::nullopt), (PciAddress{0, 1, 0}));
    EXPECT_EQ(add(b, 3), (PciAddress{0, 3, 0}));
    EXPECT_EQ(add(c, std::nullopt), (PciAddress{0, 2, 0}));
    EXPECT_EQ(PciAddress({0, 3, 0}).to_string(), "00:03.0");
    EXPECT_EQ(cfg_read(2, 0, reg::kVendorId, 2), kTestVendor);
}

TEST_F(PciBusTest, SlotConflictIsRejectedNamingTheOwner) {
    TestFunction edu("edu0"), other("other0");
    add(edu, 3);
    auto r = bus->add_function(other, 3);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("slot 3 is already used by edu0"), std::string::npos)
        << r.error().message;
}

TEST_F(PciBusTest, InvalidPlacementsAreRejected) {
    TestFunction a("a"), b("b");
    EXPECT_FALSE(bus->add_function(a, 0));     // host bridge
    EXPECT_FALSE(bus->add_function(a, 32));    // out of range
    EXPECT_FALSE(bus->add_function(a, 4, 8));  // function out of range
    auto r = bus->add_function(a, 4, 1);       // no function 0 in slot 4
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("function 0"), std::string::npos) << r.error().message;
    EXPECT_FALSE(bus->add_function(a, std::nullopt, 1));  // function > 0 needs a slot
    add(a, 4);
    EXPECT_FALSE(bus->add_function(a, 5));  // already on the bus
}

TEST_F(PciBusTest, NoFreeSlotIsAnError) {
    std::vector<std::unique_ptr<TestFunction>> fns;
    for (int i = 1; i < 32; ++i) {
        fns.push_back(std::make_unique<TestFunction>("f" + std::to_string(i)));
        add(*fns.back(), std::nullopt);
    }
    TestFunction extra("extra");
    EXPECT_FALSE(bus->add_function(extra, std::nullopt));
}

TEST_F(PciBusTest, FunctionZeroHeaderTypeSaysMultiFunctionWhenOthersExist) {
    TestFunction f0("f0"), f1("f1");
    add(f0, 5);
    EXPECT_EQ(cfg_read(5, 0, reg::kHeaderType, 1), 0x00u);
    EXPECT_EQ(add(f1, 5, 1), (PciAddress{0, 5, 1}));
    EXPECT_EQ(cfg_read(5, 0, reg::kHeaderType, 1), 0x80u);           // patched by the bus
    EXPECT_EQ(cfg_read(5, 0, reg::kCacheLineSize, 4) >> 16, 0x80u);  // in a dword read too
    EXPECT_EQ(cfg_read(5, 1, reg::kHeaderType, 1), 0x00u);           // only function 0 says it
    EXPECT_EQ(cfg_read(5, 1, reg::kVendorId, 2), kTestVendor);
    EXPECT_EQ(f0.cs().read(reg::kHeaderType, 1), 0x00u);  // the function itself is untouched
    bus->remove_function({0, 5, 1});
    EXPECT_EQ(cfg_read(5, 0, reg::kHeaderType, 1), 0x00u);
}

TEST_F(PciBusTest, RemovingFunctionZeroRemovesTheWholeSlot) {
    TestFunction f0("f0"), f1("f1");
    add(f0, 5);
    add(f1, 5, 1);
    cfg_write(5, 1, reg::bar(kMemBar), 4, 0xE000'0000);
    cfg_write(5, 1, reg::kCommand, 2, command::kMemorySpace);
    ASSERT_NE(p.mmio.find(Gpa(0xE000'0000)), nullptr);
    bus->remove_function({0, 5, 0});
    EXPECT_EQ(cfg_read(5, 1, reg::kVendorId, 2), 0xFFFFu);
    EXPECT_EQ(p.mmio.find(Gpa(0xE000'0000)), nullptr);
    bus->remove_function({0, 5, 1});  // already gone: a no-op
}

// ---- BARs on the buses -------------------------------------------------------------------

TEST_F(PciBusTest, ProgrammedBarsReachTheFunctionHandlers) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    EXPECT_EQ(p.ports.read(Port(0xC004), 2), 0xB0u + kIoBar);
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0010), 4), 0xB0u + kMemBar);
    EXPECT_EQ(p.mmio.read(Gpa(0x1'0000'4008), 8), 0xB0u + kMem64Bar);
    EXPECT_EQ(p.mmio.read(Gpa(0xE100'0000), 4), 0xB0u + kRomBarIndex);
    p.mmio.write(Gpa(0xE000'0020), 4, 0x1234);
    ASSERT_EQ(f.accesses.size(), 5u);
    EXPECT_EQ(f.accesses[0].offset, 4u);
    EXPECT_EQ(f.accesses[1].offset, 0x10u);
    EXPECT_EQ(f.accesses[2].offset, 8u);
    EXPECT_TRUE(f.accesses[4].is_write);
    EXPECT_EQ(f.accesses[4].offset, 0x20u);
    EXPECT_EQ(f.accesses[4].value, 0x1234u);
    // Registered under the function's name.
    EXPECT_EQ(p.mmio.find(Gpa(0xE000'0000))->owner, "f1");
    EXPECT_EQ(p.ports.find(Port(0xC000))->owner, "f1");
    EXPECT_EQ(ranges_owned_by("f1"), 4u);
    EXPECT_EQ(bus->rejected_writes(), 0u);
}

TEST_F(PciBusTest, MemoryDecodeOffReadsAllOnesAndSkipsTheHandler) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    cfg_write(1, 0, reg::kCommand, 2, command::kIoSpace);  // memory space off
    f.accesses.clear();
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.mmio.read(Gpa(0x1'0000'4000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.mmio.read(Gpa(0xE100'0000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.ports.read(Port(0xC000), 4), 0xB0u + kIoBar);  // I/O still decodes
    EXPECT_EQ(f.accesses.size(), 1u);
    cfg_write(1, 0, reg::kCommand, 2, 0);
    EXPECT_EQ(p.ports.read(Port(0xC000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(ranges_owned_by("f1"), 0u);
}

TEST_F(PciBusTest, SizingProbeWithDecodeOnMapsNothingAndRestoreRemaps) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    cfg_write(1, 0, reg::bar(kMemBar), 4, 0xFFFF'FFFF);
    EXPECT_EQ(cfg_read(1, 0, reg::bar(kMemBar), 4), 0xFFFF'F000u);
    EXPECT_EQ(p.mmio.find(Gpa(0xE000'0000)), nullptr);
    EXPECT_EQ(p.mmio.find(Gpa(0xFFFF'F000)), nullptr);
    cfg_write(1, 0, reg::bar(kMemBar), 4, 0xE000'0000);
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xB0u + kMemBar);
    EXPECT_EQ(bus->rejected_writes(), 0u);
}

TEST_F(PciBusTest, RelocatedBarAnswersOnlyAtItsNewAddress) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    cfg_write(1, 0, reg::bar(kMemBar), 4, 0xE020'0000);
    cfg_write(1, 0, reg::bar(kIoBar), 4, 0xD000);
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.mmio.read(Gpa(0xE020'0000), 4), 0xB0u + kMemBar);
    EXPECT_EQ(p.ports.read(Port(0xC000), 1), 0xFFu);
    EXPECT_EQ(p.ports.read(Port(0xD000), 1), 0xB0u + kIoBar);
    EXPECT_EQ(ranges_owned_by("f1"), 4u);
}

TEST_F(PciBusTest, Mem64BarRelocatesWithEitherHalfWrittenFirst) {
    for (bool low_first : {true, false}) {
        SCOPED_TRACE(low_first ? "low half first" : "high half first");
        TestFunction f("f1");
        add(f, 1);
        program(1, 0xC000, 0xE000'0000, 0xE800'0000, 0xE100'0000);
        ASSERT_EQ(p.mmio.read(Gpa(0xE800'0000), 4), 0xB0u + kMem64Bar);
        const uint64_t target = 0x2'4000'8000;
        if (low_first) {
            cfg_write(1, 0, reg::bar(kMem64Bar), 4, static_cast<uint32_t>(target));
            cfg_write(1, 0, reg::bar(kMem64Bar + 1), 4, static_cast<uint32_t>(target >> 32));
        } else {
            cfg_write(1, 0, reg::bar(kMem64Bar + 1), 4, static_cast<uint32_t>(target >> 32));
            cfg_write(1, 0, reg::bar(kMem64Bar), 4, static_cast<uint32_t>(target));
        }
        EXPECT_EQ(p.mmio.read(Gpa(0xE800'0000), 4), 0xFFFF'FFFFu);
        EXPECT_EQ(p.mmio.read(Gpa(target + 0x3FF8), 8), 0xB0u + kMem64Bar);
        EXPECT_EQ(cfg_read(1, 0, reg::bar(kMem64Bar), 4), 0x4000'8004u);  // type 10b = 64-bit
        EXPECT_EQ(cfg_read(1, 0, reg::bar(kMem64Bar + 1), 4), 0x2u);
        EXPECT_EQ(ranges_owned_by("f1"), 4u);  // no intermediate left behind
        EXPECT_EQ(bus->rejected_writes(), 0u);
        bus->remove_function({0, 1, 0});
        EXPECT_EQ(ranges_owned_by("f1"), 0u);
    }
}

TEST_F(PciBusTest, BarMovedOntoAnotherDeviceIsRefusedAndRolledBack) {
    TestFunction a("a"), b("b");
    add(a, 1);
    add(b, 2);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'0000, 0xE100'0000);
    program(2, 0xC100, 0xE001'0000, 0x1'0001'0000, 0xE101'0000);
    b.accesses.clear();

    cfg_write(2, 0, reg::bar(kMemBar), 4, 0xE000'0000);  // onto a's BAR 1
    EXPECT_EQ(bus->rejected_writes(), 1u);
    EXPECT_EQ(b.rejections, 1);
    EXPECT_EQ(cfg_read(2, 0, reg::bar(kMemBar), 4), 0xE001'0000u);  // the old value
    EXPECT_EQ(p.mmio.find(Gpa(0xE000'0000))->owner, "a");
    EXPECT_EQ(p.mmio.find(Gpa(0xE001'0000))->owner, "b");  // the old decode still answers
    EXPECT_EQ(p.mmio.read(Gpa(0xE001'0000), 4), 0xB0u + kMemBar);
    EXPECT_EQ(b.accesses.size(), 1u);
    EXPECT_EQ(ranges_owned_by("b"), 4u);

    // The same for an I/O BAR, and a mem64 BAR whose high half would land on a's.
    cfg_write(2, 0, reg::bar(kIoBar), 4, 0xC000);
    EXPECT_EQ(cfg_read(2, 0, reg::bar(kIoBar), 4), 0xC101u);
    EXPECT_EQ(p.ports.find(Port(0xC100))->owner, "b");
    cfg_write(2, 0, reg::bar(kMem64Bar), 4, 0x0000'0000);  // low half: 0x1_0000_0000 is a's
    EXPECT_EQ(cfg_read(2, 0, reg::bar(kMem64Bar), 4), 0x0001'0004u);
    EXPECT_EQ(p.mmio.find(Gpa(0x1'0001'0000))->owner, "b");
    EXPECT_EQ(bus->rejected_writes(), 3u);
    EXPECT_EQ(b.rejections, 3);
}

TEST_F(PciBusTest, RefusedWriteRestoresEveryRangeItRemoved) {
    // Enabling decode adds several ranges at once; when the last one collides, the ones added
    // before it are taken away again, and nothing else changes.
    TestFunction a("a"), b("b");
    add(a, 1);
    add(b, 2);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'0000, 0xE100'0000);
    cfg_write(2, 0, reg::bar(kIoBar), 4, 0xC100);
    cfg_write(2, 0, reg::bar(kMemBar), 4, 0xE001'0000);
    cfg_write(2, 0, reg::bar(kMem64Bar + 1), 4, 0x1);  // BAR 2/3 at 0x1_0000_0000: a's
    cfg_write(2, 0, reg::kCommand, 2, command::kIoSpace | command::kMemorySpace);
    EXPECT_EQ(bus->rejected_writes(), 1u);
    EXPECT_EQ(cfg_read(2, 0, reg::kCommand, 2), 0u);
    EXPECT_EQ(ranges_owned_by("b"), 0u);
    EXPECT_EQ(ranges_owned_by("a"), 4u);
}

TEST_F(PciBusTest, BarMovedOntoGuestRamIsRefused) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    cfg_write(1, 0, reg::bar(kMemBar), 4, 0x0010'0000);  // inside the 16 MiB of RAM
    EXPECT_EQ(bus->rejected_writes(), 1u);
    EXPECT_EQ(cfg_read(1, 0, reg::bar(kMemBar), 4), 0xE000'0000u);
    EXPECT_EQ(p.mmio.find(Gpa(0x0010'0000)), nullptr);
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xB0u + kMemBar);
    // A BAR that ends exactly where RAM ends does not overlap... but one that starts there is
    // fine too.
    cfg_write(1, 0, reg::bar(kMemBar), 4, static_cast<uint32_t>(kRamSize));
    EXPECT_EQ(bus->rejected_writes(), 1u);
    EXPECT_EQ(p.mmio.read(Gpa(kRamSize), 4), 0xB0u + kMemBar);
}

TEST_F(PciBusTest, BarMovedOntoTheLapicPageIsRefused) {
    vm::BusHandler none{[](uint64_t, unsigned) -> uint64_t { return 0; },
                        [](uint64_t, unsigned, uint64_t) {}};
    ASSERT_TRUE(p.mmio.add(Gpa(0xFEE0'0000), 0x1000, "lapic", none));
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    ::testing::internal::CaptureStderr();
    cfg_write(1, 0, reg::bar(kMemBar), 4, 0xFEE0'0000);
    cfg_write(1, 0, reg::bar(kMemBar), 4, 0xFEE0'0000);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(bus->rejected_writes(), 2u);
    EXPECT_EQ(p.mmio.find(Gpa(0xFEE0'0000))->owner, "lapic");
    // Warned once, naming the function, the BAR, the address and the other owner.
    EXPECT_NE(log.find("f1"), std::string::npos) << log;
    EXPECT_NE(log.find("BAR 1"), std::string::npos) << log;
    EXPECT_NE(log.find("0xfee00000"), std::string::npos) << log;
    EXPECT_NE(log.find("lapic"), std::string::npos) << log;
    EXPECT_EQ(log.find("warn"), log.rfind("warn")) << log;
}

TEST_F(PciBusTest, IoBarOverTheConfigPortsIsRefused) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    cfg_write(1, 0, reg::bar(kIoBar), 4, 0x0CE0);  // 0xCE0-0xCFF covers 0xCF8 and 0xCFC
    EXPECT_EQ(bus->rejected_writes(), 1u);
    EXPECT_EQ(p.ports.find(Port(0xCF8))->owner, "pci0");
    EXPECT_EQ(cfg_read(1, 0, reg::bar(kIoBar), 4), 0xC001u);
}

// ---- INTx --------------------------------------------------------------------------------

TEST_F(PciBusTest, IntxIsSwizzledBySlotAndPin) {
    // pirq = (device + pin - 1) % 4; PIRQ A-D → 10, 10, 11, 11.
    EXPECT_EQ(bus->intx_line({0, 1, 0}, 1), 10u);    // PIRQB
    EXPECT_EQ(bus->intx_line({0, 2, 0}, 1), 11u);    // PIRQC
    EXPECT_EQ(bus->intx_line({0, 3, 0}, 1), 11u);    // PIRQD
    EXPECT_EQ(bus->intx_line({0, 4, 0}, 1), 10u);    // PIRQA
    EXPECT_EQ(bus->intx_line({0, 1, 0}, 2), 11u);    // INTB of slot 1: PIRQC
    EXPECT_EQ(bus->intx_line({0, 3, 2}, 2), 10u);    // the function number does not matter
    EXPECT_EQ(bus->intx_line({0, 1, 0}, 0), 0xFFu);  // no pin

    Platform q;
    auto custom = PciBus::create("pci1", q.ctx, {.pirq_lines = {5, 9, 10, 11}});
    ASSERT_TRUE(custom);
    EXPECT_EQ((*custom)->intx_line({0, 2, 0}, 1), 10u);
    EXPECT_FALSE(PciBus::create("pci2", q.ctx, {.pirq_lines = {5, 9, 10, 16}}));
}

TEST_F(PciBusTest, SharedIntxLineStaysHighUntilEveryFunctionDeasserts) {
    TestFunction a("a"), b("b");
    const PciAddress aa = add(a, 1), ba = add(b, 5);  // both PIRQB → line 10
    ASSERT_EQ(bus->intx_line(aa, 1), bus->intx_line(ba, 1));
    bus->set_intx(aa, 1, true);
    EXPECT_TRUE(p.sink.levels[10]);
    bus->set_intx(ba, 1, true);
    bus->set_intx(aa, 1, false);
    EXPECT_TRUE(p.sink.levels[10]);
    bus->set_intx(ba, 1, false);
    EXPECT_FALSE(p.sink.levels[10]);
    EXPECT_FALSE(p.sink.levels.count(11));
}

TEST_F(PciBusTest, RemovingAnAssertingFunctionReleasesItsLine) {
    TestFunction a("a");
    const PciAddress aa = add(a, 2);
    bus->set_intx(aa, 1, true);
    EXPECT_TRUE(p.sink.levels[11]);
    bus->remove_function(aa);
    EXPECT_FALSE(p.sink.levels[11]);
    bus->set_intx(aa, 1, true);  // gone: ignored
    EXPECT_FALSE(p.sink.levels[11]);
}

// ---- EOI fan-out ---------------------------------------------------------------------------

TEST_F(PciBusTest, EoiReachesEveryAssertingFunctionOnTheLineThroughTheSwizzle) {
    TestFunction a("a"), b("b"), c("c", InterruptPin::intb), d("d");
    const PciAddress aa = add(a, 1);  // INTA of slot 1 → PIRQB → line 10
    const PciAddress ba = add(b, 4);  // INTA of slot 4 → PIRQA → line 10
    const PciAddress ca = add(c, 2);  // INTB of slot 2 → PIRQD → line 11
    const PciAddress da = add(d, 3);  // INTA of slot 3 → PIRQD → line 11, not asserting
    ASSERT_EQ(bus->intx_line(aa, 1), 10u);
    ASSERT_EQ(bus->intx_line(ba, 1), 10u);
    ASSERT_EQ(bus->intx_line(ca, 2), 11u);
    ASSERT_EQ(bus->intx_line(da, 1), 11u);
    ASSERT_EQ(p.sink.listeners.size(), 1u) << "the bus listens for EOIs";
    bus->set_intx(aa, 1, true);
    bus->set_intx(ba, 1, true);
    bus->set_intx(ca, 2, true);

    p.sink.eoi(10);
    EXPECT_EQ(a.eois, std::vector<uint8_t>{1});
    EXPECT_EQ(b.eois, std::vector<uint8_t>{1});  // wired-OR: both may have interrupted
    EXPECT_TRUE(c.eois.empty());
    p.sink.eoi(11);
    EXPECT_EQ(c.eois, std::vector<uint8_t>{2});  // swizzled INTB
    EXPECT_TRUE(d.eois.empty()) << "a function that does not assert has nothing to resample";
    p.sink.eoi(5);  // a line no function reaches
    EXPECT_EQ(a.eois.size() + b.eois.size() + c.eois.size(), 3u);

    // Deasserted: no longer told.
    bus->set_intx(aa, 1, false);
    p.sink.eoi(10);
    EXPECT_EQ(a.eois.size(), 1u);
    EXPECT_EQ(b.eois.size(), 2u);
}

// What a BIOS leaves for Linux without ACPI or $PIR: each pin's PIC line in the interrupt-line
// register; functions without a pin keep theirs.
TEST_F(PciBusTest, AssignInterruptLinesWritesEachPinsLineLikeABios) {
    TestFunction a("a"), b("b", InterruptPin::intb), none("none", InterruptPin::none);
    add(a, 3);
    add(b, 1);
    add(none, 2);
    cfg_write(2, 0, reg::kInterruptLine, 1, 0x42);
    auto lines = bus->assign_interrupt_lines();
    EXPECT_EQ(cfg_read(3, 0, reg::kInterruptLine, 1), 11u);  // slot 3 INTA: PIRQD
    EXPECT_EQ(cfg_read(1, 0, reg::kInterruptLine, 1), 11u);  // slot 1 INTB: PIRQC
    EXPECT_EQ(cfg_read(2, 0, reg::kInterruptLine, 1), 0x42u);
    EXPECT_EQ(lines, std::vector<uint8_t>{11});
}

TEST_F(PciBusTest, FunctionMayDeassertOrRemoveOthersInItsEoi) {
    TestFunction a("a"), b("b");
    const PciAddress aa = add(a, 1), ba = add(b, 5);  // both line 10
    bus->set_intx(aa, 1, true);
    bus->set_intx(ba, 1, true);
    // a resamples, finds its condition gone, and (as a misbehaving test) removes b.
    a.on_eoi = [&](uint8_t pin) {
        bus->set_intx(aa, pin, false);
        bus->remove_function(ba);
    };
    p.sink.eoi(10);
    EXPECT_EQ(a.eois.size(), 1u);
    EXPECT_TRUE(b.eois.empty());
    EXPECT_FALSE(p.sink.levels[10]);
}

TEST_F(PciBusTest, DestroyingTheBusStopsListeningForEois) {
    bus.reset();
    EXPECT_TRUE(p.sink.listeners.empty());
}

// ---- Reset -------------------------------------------------------------------------------

TEST_F(PciBusTest, ResetControlRegisterAt0xCF9RequestsAVmReset) {
    std::vector<std::string> requests;
    p.ctx.request_reset = [&](std::string why) { requests.push_back(std::move(why)); };
    p.ports.write(Port(0xCF8), 4, latch(0, 0, 0, 0));
    p.ports.write(Port(0xCF9), 1, 0x02);  // SRST only: the type is chosen, nothing happens
    EXPECT_TRUE(requests.empty());
    EXPECT_EQ(p.ports.read(Port(0xCF9), 1), 0x02u);
    EXPECT_EQ(p.ports.read(Port(0xCF8), 4), latch(0, 0, 0, 0)) << "the latch is untouched";
    p.ports.write(Port(0xCF9), 1, 0x06);  // hard reset
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_NE(requests[0].find("hard reset"), std::string::npos) << requests[0];
    EXPECT_NE(requests[0].find("0xCF9"), std::string::npos) << requests[0];
    p.ports.write(Port(0xCF9), 1, 0x04);  // soft reset: the same VM reset here
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_NE(requests[1].find("soft reset"), std::string::npos) << requests[1];
    // A word write covering 0xCF9 is not the register.
    p.ports.write(Port(0xCF8), 2, 0x0600);
    EXPECT_EQ(requests.size(), 2u);
    bus->reset();
    EXPECT_EQ(p.ports.read(Port(0xCF9), 1), 0u);
}

TEST_F(PciBusTest, ResetReleasesEveryFunctionsRangesAndIntx) {
    TestFunction f("f1");
    const PciAddress a = add(f, 2);
    program(2, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    bus->set_intx(a, 1, true);
    ASSERT_TRUE(p.sink.levels[11]);
    ASSERT_GT(ranges_owned_by("f1"), 0u);
    bus->reset();
    EXPECT_EQ(ranges_owned_by("f1"), 0u);
    EXPECT_FALSE(p.sink.levels[11]);
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xFFFF'FFFFu);
    p.sink.eoi(11);
    EXPECT_TRUE(f.eois.empty()) << "a reset function asserts nothing";
    // The function is still on the bus.
    EXPECT_EQ(cfg_read(2, 0, reg::kVendorId, 2), kTestVendor);
}

// ---- Removal and teardown ----------------------------------------------------------------

TEST_F(PciBusTest, RemoveFunctionFromItsOwnBarHandlerUnhooks) {
    TestFunction f("f1");
    const PciAddress a = add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    f.on_access = [&] { bus->remove_function(a); };
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xB0u + kMemBar);  // the running access ends
    f.on_access = nullptr;
    EXPECT_EQ(p.mmio.read(Gpa(0xE000'0000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.ports.read(Port(0xC000), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(ranges_owned_by("f1"), 0u);
    EXPECT_EQ(cfg_read(1, 0, reg::kVendorId, 2), 0xFFFFu);
    EXPECT_EQ(f.accesses.size(), 1u);
}

TEST_F(PciBusTest, DestroyingTheBusUnhooksEverything) {
    TestFunction f("f1");
    add(f, 1);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    EXPECT_FALSE(p.mmio.ranges().empty());
    bus.reset();
    EXPECT_TRUE(p.mmio.ranges().empty());
    EXPECT_TRUE(p.ports.ranges().empty());
    EXPECT_EQ(p.ports.read(Port(0xCF8), 4), 0xFFFF'FFFFu);
}

TEST_F(PciBusTest, ResetClearsTheAddressLatch) {
    p.ports.write(Port(0xCF8), 4, latch(0, 0, 0, 0));
    bus->reset();
    EXPECT_EQ(p.ports.read(Port(0xCF8), 4), 0u);
    EXPECT_EQ(p.ports.read(Port(0xCFC), 4), 0xFFFF'FFFFu);
}

TEST_F(PciBusTest, SecondBusOnTheSamePortsIsRejected) {
    auto second = PciBus::create("pci1", p.ctx, {});
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message.find("pci0"), std::string::npos) << second.error().message;
    EXPECT_EQ(p.ports.find(Port(0xCF8))->owner, "pci0");
    EXPECT_EQ(p.ports.ranges().size(), 2u);
}

// ---- Configuration -----------------------------------------------------------------------

Result<void> create_from_xml(Platform& q, const std::string& device) {
    auto doc = vm::ConfigDocument::load_string(
        "<vm class=\"PC\"><memory>16</memory><devices>" + device + "</devices></vm>", "vm.xml");
    if (!doc) return fail(doc.error());
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg) return fail(cfg.error());
    return q.manager.create_all(cfg->devices, q.ctx);
}

TEST(PciBusConfig, PciClassCreatesABusOnTheConfigPorts) {
    Platform q;
    ASSERT_TRUE(register_pci_bus(q.classes));
    auto r = create_from_xml(q, R"(<device class="PCI" id="pci0"/>)");
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_NE(q.manager.find_as<PciBus>("pci0"), nullptr);
    q.ports.write(Port(0xCF8), 4, latch(0, 0, 0, 0));
    EXPECT_EQ(q.ports.read(Port(0xCFC), 4), 0x1237'8086u);
    // It was given guest RAM: a BAR on RAM is refused.
    TestFunction f("f1");
    auto* b = q.manager.find_as<PciBus>("pci0");
    ASSERT_TRUE(b->add_function(f, 1));
    b->config_write({0, 1, 0}, reg::bar(kMemBar), 4, 0x1000);
    b->config_write({0, 1, 0}, reg::kCommand, 2, command::kMemorySpace);
    EXPECT_EQ(b->rejected_writes(), 1u);
}

TEST(PciBusConfig, UnknownAttributeIsRejected) {
    Platform q;
    ASSERT_TRUE(register_pci_bus(q.classes));
    auto r = create_from_xml(q, R"(<device class="PCI" id="pci0" slot="3"/>)");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("slot"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("vm.xml:1"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace potemkin::pci

// ---- ECAM (PCI Express Base Spec section 7.2.2) --------------------------------------------

namespace potemkin::pci {
namespace {

constexpr uint64_t kEcam = 0xF800'0000;
uint64_t ecam(uint8_t bus, uint8_t dev, uint8_t fn, uint32_t reg) {
    return kEcam + (uint64_t{bus} << 20 | uint64_t{dev} << 15 | uint64_t{fn} << 12 | reg);
}

TEST_F(PciBusTest, EcamWindowIsRegisteredAtTheDefaultBase) {
    ASSERT_TRUE(bus->ecam());
    EXPECT_EQ(bus->ecam()->base, kEcam);
    EXPECT_EQ(p.mmio.find(Gpa(kEcam))->owner, "pci0.ecam");
    EXPECT_EQ(p.mmio.find(Gpa(kEcam + kEcamBusSize - 1))->owner, "pci0.ecam");
    EXPECT_EQ(p.mmio.find(Gpa(kEcam + kEcamBusSize)), nullptr);  // bus 0 only by default
}

TEST_F(PciBusTest, EcamReadsWhatMechanismOneReads) {
    TestFunction f("f1");
    add(f, 2);
    for (uint32_t reg : {0u, 2u, 8u, 0x10u, 0x3Cu})
        for (unsigned size : {1u, 2u, 4u}) {
            if (reg % size != 0) continue;
            EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 2, 0, reg)), size), cfg_read(2, 0, reg, size))
                << "reg " << reg << " size " << size;
        }
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 0, 0, 0)), 4), 0x1237'8086u);  // the host bridge
}

TEST_F(PciBusTest, EcamMasterAbortAndUnalignedAccesses) {
    TestFunction f("f1");
    add(f, 2);
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 5, 0, 0)), 4), 0xFFFF'FFFFu);  // empty slot
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 2, 3, 0)), 2), 0xFFFFu);       // absent function
    // A 256-byte function beyond 0x100 (ConfigSpace reads all-ones outside itself).
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 2, 0, 0x100)), 4), 0xFFFF'FFFFu);
    // Crossing a dword, or 8 bytes: refused whole, nothing written.
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 2, 0, 2)), 4), 0xFFFF'FFFFu);
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 2, 0, 0)), 8), ~uint64_t{0});
    p.mmio.write(Gpa(ecam(0, 2, 0, 0x3B)), 2, 0x1234);
    EXPECT_EQ(cfg_read(2, 0, reg::kInterruptLine, 1), 0u);
}

TEST_F(PciBusTest, EcamWriteMovesABarThroughTheAllOrNothingPath) {
    TestFunction f("f1"), g("f2");
    add(f, 1);
    add(g, 2);
    program(1, 0xC000, 0xE000'0000, 0x1'0000'4000, 0xE100'0000);
    program(2, 0xC100, 0xE200'0000, 0x1'0000'8000, 0xE300'0000);
    p.mmio.write(Gpa(ecam(0, 1, 0, reg::bar(kMemBar))), 4, 0xE400'0000);
    EXPECT_EQ(p.mmio.find(Gpa(0xE400'0000))->owner, "f1");
    EXPECT_EQ(p.mmio.find(Gpa(0xE000'0000)), nullptr);
    // Onto f2's BAR: refused, the BAR keeps its value and decode.
    p.mmio.write(Gpa(ecam(0, 1, 0, reg::bar(kMemBar))), 4, 0xE200'0000);
    EXPECT_EQ(bus->rejected_writes(), 1u);
    EXPECT_EQ(p.mmio.read(Gpa(ecam(0, 1, 0, reg::bar(kMemBar))), 4), 0xE400'0000u);
    EXPECT_EQ(p.mmio.find(Gpa(0xE200'0000))->owner, "f2");
    EXPECT_EQ(p.mmio.find(Gpa(0xE400'0000))->owner, "f1");
}

TEST(PciBusEcam, WindowSettingsAreChecked) {
    Platform p;
    auto bad = [&](EcamSettings e) {
        auto b = PciBus::create("pci0", p.ctx, {.memory = p.memory.get(), .ecam = e});
        return b ? std::string() : b.error().message;
    };
    EXPECT_NE(bad({.base = 0xF800'0000, .size = 0x18'0000}).find("not a power of two"),
              std::string::npos);
    EXPECT_NE(bad({.base = 0xF810'0000, .size = 0x20'0000}).find("not aligned"), std::string::npos);
    EXPECT_NE(bad({.base = 0xFF00'0000, .size = 0x10'0000}).find("does not end by"),
              std::string::npos);
    EXPECT_NE(bad({.base = 0, .size = 0x10'0000}).find("overlaps guest RAM"), std::string::npos);
    // Bus 1 inside a 2 MiB window: nobody there.
    auto b = PciBus::create("pci0", p.ctx,
                            {.memory = p.memory.get(), .ecam = EcamSettings{0xF000'0000, 2 << 20}});
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_EQ(p.mmio.read(Gpa(0xF010'0000), 4), 0xFFFF'FFFFu);
}

TEST(PciBusEcam, NoWindowWhenOff) {
    Platform p;
    auto b = PciBus::create("pci0", p.ctx, {.memory = p.memory.get(), .ecam = std::nullopt});
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_FALSE((*b)->ecam());
    EXPECT_TRUE(p.mmio.ranges().empty());
}

}  // namespace
}  // namespace potemkin::pci
