// VM configuration: every error names file, line, element and attribute.
#include <gtest/gtest.h>

#include "devices/builtin.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"

using namespace potemkin;
using namespace potemkin::vm;

namespace {

Result<VmConfig> parse(const std::string& xml) {
    auto doc = ConfigDocument::load_string(xml, "vm.xml");
    if (!doc) return fail(doc.error());
    return parse_vm_config(*doc);
}

std::string error_of(const std::string& xml) {
    auto r = parse(xml);
    return r ? std::string("(no error)") : r.error().message;
}

// A device class that refers to another device, like PCI_FRONT's bus="pci0".
struct Bus0 : Device {
    using Device::Device;
};
struct NeedsBus : Device {
    using Device::Device;
};

std::string create_error(const std::string& xml) {
    auto cfg = parse(xml);
    if (!cfg) return cfg.error().message;
    DeviceClassRegistry classes;
    EXPECT_TRUE(classes.add(
        "BUS", [](const ConfigElement& e, DeviceContext&) -> Result<std::unique_ptr<Device>> {
            return std::unique_ptr<Device>(new Bus0(*e.attr("id")));
        }));
    EXPECT_TRUE(classes.add(
        "CHILD", [](const ConfigElement& e, DeviceContext& ctx) -> Result<std::unique_ptr<Device>> {
            auto bus = ctx.devices.reference<Bus0>(e, "bus", "a BUS");
            if (!bus) return fail(bus.error());
            auto n = e.number("slot", 0, 31);
            if (!n) return fail(n.error());
            return std::unique_ptr<Device>(new NeedsBus(*e.attr("id")));
        }));
    DeviceManager mgr(classes);
    // The factories above touch only ctx.devices.
    auto mem = GuestMemory::create({{Gpa(0), 0x1000}});
    PortBus ports(Space::io, 0x10000);
    MmioBus mmio(Space::mmio, 0);
    struct NullSink : InterruptSink {
        void set_irq(unsigned, bool) override {}
        void send_msi(uint64_t, uint32_t) override {}
    } sink;
    struct NullTimers : TimerService {
        Clock::time_point now() const override { return {}; }
        TimerId schedule(Clock::time_point, std::function<void()>) override { return 0; }
        void cancel(TimerId) override {}
    } timers;
    DeviceContext ctx{ports, mmio, **mem, sink, timers, mgr, nullptr};
    auto r = mgr.create_all(cfg->devices, ctx);
    return r ? std::string("(no error)") : r.error().message;
}

}  // namespace

TEST(Config, ValidConfigParses) {
    auto r = parse(R"(<vm class="PC">
  <memory>64</memory>
  <cores count="2"/>
  <guest file="guests/hello.elf" cmdline="status=3"/>
  <devices>
    <device class="TEST_DEVICE" id="t0"/>
  </devices>
</vm>)");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->memory_mib, 64u);
    EXPECT_EQ(r->cores, 2u);
    EXPECT_EQ(r->guest_file, "guests/hello.elf");
    EXPECT_EQ(r->cmdline, "status=3");
    ASSERT_EQ(r->devices.size(), 1u);
    EXPECT_EQ(r->devices[0].line(), 6u);
}

TEST(Config, MalformedXmlNamesTheLine) {
    EXPECT_EQ(error_of("<vm>\n<memory>64</memory>\n<devices>\n</vm>"),
              "vm.xml:4: XML error: Start-end tags mismatch");
}

TEST(Config, BadNumbersAreRejectedWithLine) {
    EXPECT_EQ(error_of("<vm>\n  <memory>lots</memory>\n</vm>"),
              "vm.xml:2: <memory>: 'lots' is not a positive number of MiB");
    EXPECT_EQ(error_of("<vm>\n<memory>64</memory>\n<cores count=\"two\"/>\n</vm>"),
              "vm.xml:3: <cores>: attribute 'count' is not a number: 'two'");
    EXPECT_EQ(error_of("<vm>\n<memory>64</memory>\n<cores count=\"0\"/>\n</vm>"),
              "vm.xml:3: <cores>: attribute 'count' must be at least 1");
    EXPECT_EQ(error_of("<vm>\n<memory>64</memory>\n<cores count=\"99\"/>\n</vm>"),
              "vm.xml:3: <cores>: attribute 'count' is 99 but must be at most 0x8");
    EXPECT_EQ(error_of("<vm><memory>4096</memory></vm>"),
              "vm.xml:1: <memory>: 4096 MiB is more than the 3072 MiB that fit below the PCI hole");
}

TEST(Config, MissingRequiredPartsAreRejected) {
    EXPECT_EQ(error_of("<vm class=\"PC\">\n</vm>"),
              "vm.xml:1: <vm class=\"PC\">: missing child element <memory> (MiB of guest RAM)");
    EXPECT_EQ(error_of("<vm><memory>8</memory>\n<guest/></vm>"),
              "vm.xml:2: <guest>: attribute 'file' is required");
    EXPECT_EQ(error_of("<config/>"),
              "vm.xml:1: <config>: the root element must be <vm>, not <config>");
}

TEST(Config, UnknownElementsAndAttributesAreRejected) {
    EXPECT_EQ(error_of("<vm><memory>8</memory>\n<memroy>8</memroy></vm>"),
              "vm.xml:2: <memroy>: unknown element inside <vm>");
    EXPECT_EQ(error_of("<vm><memory>8</memory>\n<guest file=\"a\" cmd=\"x\"/></vm>"),
              "vm.xml:2: <guest>: attribute 'cmd' is not known here");
    EXPECT_EQ(error_of("<vm><memory>8</memory><devices>\n<dev/></devices></vm>"),
              "vm.xml:2: <dev>: only <device> elements may appear in <devices>");
}

TEST(Config, FilesAreResolvedAndCheckedByLine) {
    auto cfg = parse(
        "<vm><memory>8</memory><files><file id=\"disk0\" filename=\"/tmp/d.raw\"/>"
        "<file id=\"rel\" filename=\"d.raw\"/></files></vm>");
    ASSERT_TRUE(cfg) << cfg.error().message;
    ASSERT_EQ(cfg->files.size(), 2u);
    EXPECT_EQ(cfg->files[0].id, "disk0");
    EXPECT_EQ(cfg->files[0].path, "/tmp/d.raw");
    EXPECT_EQ(cfg->files[1].path, "d.raw");  // a string config has no directory
    EXPECT_EQ(error_of("<vm><memory>8</memory><files>\n<file id=\"a\" filename=\"x\"/>\n"
                       "<file id=\"a\" filename=\"y\"/></files></vm>"),
              "vm.xml:3: <file id=\"a\">: attribute 'id' 'a' is defined twice");
    EXPECT_EQ(error_of("<vm><memory>8</memory><files>\n<file id=\"a\"/></files></vm>"),
              "vm.xml:2: <file id=\"a\">: attribute 'filename' is required");
    EXPECT_EQ(error_of("<vm><memory>8</memory><files>\n<disk/></files></vm>"),
              "vm.xml:2: <disk>: only <file> elements may appear in <files>");
}

TEST(Config, UnknownDeviceClassIsRejected) {
    std::string e = create_error(
        "<vm><memory>8</memory>\n<devices>\n<device class=\"NOPE\" id=\"x\"/>\n</devices></vm>");
    EXPECT_EQ(e.rfind("vm.xml:3: <device class=\"NOPE\" id=\"x\">: attribute 'class' names unknown "
                      "device class 'NOPE' (known: BUS, CHILD)",
                      0),
              0u)
        << e;
}

TEST(Config, DuplicateIdsAreRejected) {
    EXPECT_EQ(create_error("<vm><memory>8</memory><devices>\n<device class=\"BUS\" id=\"pci0\"/>\n"
                           "<device class=\"BUS\" id=\"pci0\"/>\n</devices></vm>"),
              "vm.xml:3: <device class=\"BUS\" id=\"pci0\">: attribute 'id' 'pci0' is used by "
              "another device");
}

TEST(Config, MissingClassOrIdIsRejected) {
    EXPECT_EQ(create_error("<vm><memory>8</memory><devices>\n<device id=\"a\"/>\n</devices></vm>"),
              "vm.xml:2: <device id=\"a\">: attribute 'class' is required");
    EXPECT_EQ(
        create_error("<vm><memory>8</memory><devices>\n<device class=\"BUS\"/>\n</devices></vm>"),
        "vm.xml:2: <device class=\"BUS\">: attribute 'id' is required");
}

TEST(Config, ReferenceToUnknownDeviceNamesIt) {
    EXPECT_EQ(create_error("<vm><memory>8</memory>\n<devices>\n"
                           "  <device class=\"BUS\" id=\"pci0\"/>\n"
                           "  <device class=\"CHILD\" id=\"x\" bus=\"pci9\"/>\n</devices></vm>"),
              "vm.xml:4: <device class=\"CHILD\" id=\"x\">: attribute 'bus' refers to unknown "
              "device 'pci9'");
    EXPECT_EQ(create_error("<vm><memory>8</memory>\n<devices>\n"
                           "  <device class=\"CHILD\" id=\"a\" bus=\"pci0\"/>\n</devices></vm>"),
              "vm.xml:3: <device class=\"CHILD\" id=\"a\">: attribute 'bus' refers to unknown "
              "device 'pci0'");
    EXPECT_EQ(create_error("<vm><memory>8</memory>\n<devices>\n"
                           "  <device class=\"BUS\" id=\"b\"/>\n"
                           "  <device class=\"CHILD\" id=\"a\" bus=\"b\"/>\n"
                           "  <device class=\"CHILD\" id=\"c\" bus=\"a\"/>\n</devices></vm>"),
              "vm.xml:5: <device class=\"CHILD\" id=\"c\">: attribute 'bus' refers to 'a', which "
              "is not a BUS");
    EXPECT_EQ(create_error(
                  "<vm><memory>8</memory>\n<devices>\n"
                  "  <device class=\"BUS\" id=\"b\"/>\n"
                  "  <device class=\"CHILD\" id=\"a\" bus=\"b\" slot=\"0x40\"/>\n</devices></vm>"),
              "vm.xml:4: <device class=\"CHILD\" id=\"a\">: attribute 'slot' is 0x40 but must be "
              "at most 0x1f");
}

TEST(Config, NumbersAcceptDecimalAndHex) {
    EXPECT_EQ(parse_number("42"), 42u);
    EXPECT_EQ(parse_number(" 0x3F8 "), 0x3f8u);
    EXPECT_EQ(parse_number("0x"), std::nullopt);
    EXPECT_EQ(parse_number("12abc"), std::nullopt);
    EXPECT_EQ(parse_number("-1"), std::nullopt);
    EXPECT_EQ(parse_number("99999999999999999999999"), std::nullopt);
}

TEST(Config, BuiltinClassesIncludeTheTestDevice) {
    DeviceClassRegistry classes;
    ASSERT_TRUE(devices::register_builtin_device_classes(classes));
    EXPECT_NE(classes.find("TEST_DEVICE"), nullptr);
    EXPECT_FALSE(classes.add("TEST_DEVICE", nullptr));
}
