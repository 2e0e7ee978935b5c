// CPU engines by name (cpu/engine_factory.hpp) and the CpuIo over the buses (cpu/bus_io.hpp).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "cpu/bus_io.hpp"
#include "cpu/engine_factory.hpp"
#include "flat_elf.hpp"
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
    EXPECT_EQ(m.error().message, "unknown CPU engine 'kvn' (known: unicorn, kvm, auto)");
}

// ---- Choosing the engine: "kvm", "auto", <vm engine> (the KVM device is injected) ----------

namespace {

const std::string kNoKvm = "/nonexistent/potemkin-test/kvm";

Result<std::unique_ptr<machine::Machine>> machine_with(const std::string& vm_attrs,
                                                       const std::string& engine,
                                                       const std::string& kvm_device) {
    // One file per process: ctest runs these tests in parallel processes.
    const std::string elf =
        ::testing::TempDir() + "/engine-choice-" + std::to_string(::getpid()) + ".elf";
    if (!potemkin::testing::write_flat_elf(elf, {0xf4})) return fail("writing " + elf);  // hlt
    auto doc = vm::ConfigDocument::load_string(
        "<vm" + vm_attrs + "><memory>16</memory><guest file=\"" + elf + "\"/></vm>", "engine.xml");
    if (!doc) return fail(doc.error());
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg) return fail(cfg.error());
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.engine = engine;
    s.kvm_device = kvm_device;
    auto m = machine::Machine::create(std::move(s));
    ::unlink(elf.c_str());  // loaded by now (or failed to be)
    return m;
}

}  // namespace

TEST(EngineChoice, KvmIsListedAmongTheEngines) {
    EXPECT_EQ(engine_names(), "unicorn, kvm");
    auto kvm = find_engine("kvm");
    ASSERT_TRUE(kvm) << kvm.error().message;
    EXPECT_EQ((*kvm)->name, "kvm");
}

TEST(EngineChoice, AutoTakesUnicornWithoutKvm) {
    auto e = choose_engine("auto", kNoKvm);
    ASSERT_TRUE(e) << e.error().message;
    EXPECT_EQ((*e)->name, "unicorn");
}

TEST(EngineChoice, KvmWithoutTheDeviceNamesTheMissingModules) {
    auto e = choose_engine("kvm", kNoKvm);
    ASSERT_FALSE(e);
    const std::string& m = e.error().message;
    EXPECT_NE(m.find(kNoKvm + " does not exist"), std::string::npos) << m;
    EXPECT_NE(m.find("kvm_amd or kvm_intel"), std::string::npos) << m;
}

TEST(EngineChoice, KvmOnADeviceThatIsNotKvmSaysSo) {
    // /dev/null opens but answers no KVM ioctl.
    auto e = choose_engine("kvm", "/dev/null");
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message.find("/dev/null is not a KVM device"), std::string::npos)
        << e.error().message;
    EXPECT_EQ(kvm_usable("/dev/null").error().message, e.error().message);
}

TEST(EngineChoice, KvmOnAFileWithNoDriverSaysWhichModulesToLoad) {
    // A unix socket opens with ENXIO, as a device node whose driver is not loaded does.
    const std::string path =
        ::testing::TempDir() + "/engine-choice-kvm-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path.c_str());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    auto e = choose_engine("kvm", path);
    ::close(fd);
    ::unlink(path.c_str());
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message.find(path + " has no driver behind it (load kvm_amd or "
                                            "kvm_intel)"),
              std::string::npos)
        << e.error().message;
}

TEST(EngineChoice, UnicornIsChosenWithoutLookingForKvm) {
    auto e = choose_engine("unicorn", kNoKvm);
    ASSERT_TRUE(e) << e.error().message;
    EXPECT_EQ((*e)->name, "unicorn");
    auto bad = choose_engine("kvn", kNoKvm);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "unknown CPU engine 'kvn' (known: unicorn, kvm, auto)");
}

TEST(EngineChoice, AnEngineNotOpenableFailsCleanly) {
    NullIo io;
    std::atomic<bool> kick{false};
    EngineSettings s;
    s.io = &io;
    s.kick = &kick;
    s.kvm_device = kNoKvm;
    auto e = create_engine("kvm", s);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message.find("does not exist"), std::string::npos) << e.error().message;
}

TEST(EngineChoice, TheConfigNamesTheEngineAndErrorsNameTheAttribute) {
    auto m = machine_with(" engine=\"kvm\"", "", kNoKvm);
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().message.rfind("engine.xml:1: <vm>: attribute 'engine': KVM is not "
                                      "available: " +
                                          kNoKvm + " does not exist",
                                      0),
              0u)
        << m.error().message;
    auto typo = machine_with(" engine=\"kvn\"", "", kNoKvm);
    ASSERT_FALSE(typo);
    EXPECT_EQ(typo.error().message,
              "engine.xml:1: <vm>: attribute 'engine': unknown CPU engine 'kvn' (known: unicorn, "
              "kvm, auto)");
}

TEST(EngineChoice, AutoInTheConfigFallsBackToUnicorn) {
    auto m = machine_with(" engine=\"auto\"", "", kNoKvm);
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ((*m)->engine_name(), "unicorn");
}

TEST(EngineChoice, TheCommandLineWinsOverTheConfig) {
    auto m = machine_with(" engine=\"kvm\"", "unicorn", kNoKvm);
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ((*m)->engine_name(), "unicorn");
    auto none = machine_with("", "", kNoKvm);
    ASSERT_TRUE(none) << none.error().message;
    EXPECT_EQ((*none)->engine_name(), "unicorn");
}
