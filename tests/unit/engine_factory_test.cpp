// CPU engines by name (cpu/engine_factory.hpp) and the CpuIo over the buses (cpu/bus_io.hpp).
#include <gtest/gtest.h>

#include <atomic>

#include "cpu/bus_io.hpp"
#include "cpu/engine_factory.hpp"
#include "machine/machine.hpp"
#include "vm/bus.hpp"
#include "vm/config.hpp"

using namespace potemkin;
using namespace potemkin::cpu;

namespace {

struct NullIo final : CpuIo {
    uint32_t port_in(uint16_t, unsigned) override { return 0; }
    void port_out(uint16_t, unsigned, uint32_t) override {}
    uint64_t mmio_read(uint64_t, unsigned) override { return 0; }
    void mmio_write(uint64_t, unsigned, uint64_t) override {}
};

}  // namespace

TEST(EngineFactory, TheDefaultEngineIsListedFirst) {
    ASSERT_FALSE(engines().empty());
    EXPECT_EQ(engines().front().name, kDefaultEngine);
    EXPECT_EQ(kDefaultEngine, "unicorn");
    EXPECT_NE(engine_names().find("unicorn"), std::string::npos);
}

TEST(EngineFactory, KnownNameMakesAnEngineOfThatName) {
    NullIo io;
    std::atomic<bool> kick{false};
    EngineSettings s;
    s.io = &io;
    s.kick = &kick;
    auto e = create_engine("unicorn", s);
    ASSERT_TRUE(e) << e.error().message;
    EXPECT_STREQ((*e)->name(), "unicorn");
    auto entry = find_engine("unicorn");
    ASSERT_TRUE(entry) << entry.error().message;
    EXPECT_EQ((*entry)->name, "unicorn");
}

TEST(EngineFactory, UnknownNameIsAnErrorNamingItAndTheKnownOnes) {
    NullIo io;
    std::atomic<bool> kick{false};
    EngineSettings s;
    s.io = &io;
    s.kick = &kick;
    auto e = create_engine("kvn", s);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message.find("'kvn'"), std::string::npos) << e.error().message;
    EXPECT_NE(e.error().message.find("known: unicorn"), std::string::npos) << e.error().message;
    EXPECT_FALSE(find_engine(""));
}

TEST(EngineFactory, AnEngineFailsCleanlyWithoutIo) {
    EngineSettings s;  // no io, no kick
    auto e = create_engine("unicorn", s);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message.find("io"), std::string::npos) << e.error().message;
}

TEST(BusIo, ForwardsPortAndMmioAccessesToTheBuses) {
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    uint64_t last_port_write = 0, last_mmio_write = 0, mmio_offset = 0;
    ASSERT_TRUE(
        ports.add(Port(0x600), 4, "p",
                  vm::BusHandler{[](uint64_t off, unsigned) -> uint64_t { return 0x40 + off; },
                                 [&](uint64_t, unsigned, uint64_t v) { last_port_write = v; }}));
    ASSERT_TRUE(
        mmio.add(Gpa(0xd000'0000), 0x1000, "m",
                 vm::BusHandler{[&](uint64_t off, unsigned) -> uint64_t {
                                    mmio_offset = off;
                                    return 0x1122'3344'5566'7788ull;
                                },
                                [&](uint64_t, unsigned, uint64_t v) { last_mmio_write = v; }}));
    BusIo io(ports, mmio);
    CpuIo& cpu = io;
    EXPECT_EQ(cpu.port_in(0x602, 1), 0x42u);
    cpu.port_out(0x600, 2, 0xbeef);
    EXPECT_EQ(last_port_write, 0xbeefu);
    EXPECT_EQ(cpu.mmio_read(0xd000'0010, 8), 0x1122'3344'5566'7788ull);
    EXPECT_EQ(mmio_offset, 0x10u);
    cpu.mmio_write(0xd000'0000, 4, 0xcafe);
    EXPECT_EQ(last_mmio_write, 0xcafeu);
    // Where nothing decodes, reads are all-ones as on real hardware.
    EXPECT_EQ(cpu.port_in(0x700, 4), 0xffff'ffffu);
    EXPECT_EQ(cpu.mmio_read(0xe000'0000, 4), 0xffff'ffffu);
}

TEST(EngineFactory, MachineRefusesAnUnknownEngineBeforeCreatingAnything) {
    // A device whose creation would fail: the engine error must come first.
    auto doc = vm::ConfigDocument::load_string(
        R"(<vm><memory>16</memory><devices><device class="NOPE" id="x"/></devices></vm>)",
        "engine.xml");
    ASSERT_TRUE(doc) << doc.error().message;
    auto cfg = vm::parse_vm_config(*doc);
    ASSERT_TRUE(cfg) << cfg.error().message;
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.engine = "kvn";
    auto m = machine::Machine::create(std::move(s));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().message, "unknown CPU engine 'kvn' (known: unicorn)");
}
