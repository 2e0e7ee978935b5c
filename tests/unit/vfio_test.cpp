// The kernel VFIO transport where no IOMMU is needed: device addresses and sysfs paths, the
// sysfs checks against a fake sysfs tree (a temporary directory laid out as /sys is: device
// directories with driver and iommu_group links), the errors that name the device and say what
// to do, the "vfio:" URL and the PCI_PASSTHROUGH configuration. What needs a real device and
// IOMMU runs in the nested tests (tests/nested/).
#include <gtest/gtest.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "devices/pci_front.hpp"
#include "hostdev/host_device.hpp"
#include "machine/builtins.hpp"
#include "pci/pci_bus.hpp"
#include "sdk/device_model.hpp"
#include "vfio/client.hpp"
#include "vfio/region_caps.hpp"
#include "vfio/sysfs.hpp"
#include "vm/bus.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"
#include "vm/guest_memory.hpp"
#include "vm_fakes.hpp"

using namespace potemkin;
using namespace potemkin::vfio;
namespace fs = std::filesystem;

namespace {

bool mentions(const std::string& text, std::string_view what) {
    return text.find(what) != std::string::npos;
}

// A temporary directory laid out like /sys (and /dev), removed at the end.
struct FakeSys {
    fs::path root;
    FakeSys() {
        std::string t = (fs::temp_directory_path() / "potemkin-vfio-XXXXXX").string();
        EXPECT_NE(::mkdtemp(t.data()), nullptr);
        root = t;
    }
    ~FakeSys() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
    std::string sys() const { return (root / "sys").string(); }
    std::string dev() const { return (root / "dev").string(); }
    fs::path device(const std::string& a) const { return root / "sys/bus/pci/devices" / a; }
    // A function, optionally bound to `driver` and in IOMMU group `group` (-1: none).
    void add(const std::string& a, const std::string& driver, int group) {
        fs::create_directories(device(a));
        if (!driver.empty()) {
            fs::create_directories(root / "sys/bus/pci/drivers" / driver);
            fs::create_directory_symlink(root / "sys/bus/pci/drivers" / driver,
                                         device(a) / "driver");
        }
        if (group >= 0) {
            const fs::path g = root / "sys/kernel/iommu_groups" / std::to_string(group);
            fs::create_directories(g / "devices");
            fs::create_directory_symlink(g, device(a) / "iommu_group");
            fs::create_directory_symlink(device(a), g / "devices" / a);
        }
    }
};

struct NoEvents final : hostdev::HostDeviceEvents {
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return ok(); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return ok(); }
    void disconnected(std::string_view) override {}
};

std::string open_error(const FakeSys& f, const std::string& device) {
    NoEvents events;
    VfioClientSettings s;
    s.device = device;
    s.sysfs_root = f.sys();
    s.dev_root = f.dev();
    s.events = &events;
    auto c = VfioClient::open(std::move(s));
    return c ? std::string() : c.error().message;
}

}  // namespace

// ---- Addresses -------------------------------------------------------------------------------

TEST(VfioAddress, TheFullFormTheShortFormAndSysfsPathsAllName0000_00_03_0) {
    const PciAddress want{0, 0, 3, 0};
    for (const char* text :
         {"0000:00:03.0", "00:03.0", "/sys/bus/pci/devices/0000:00:03.0",
          "/sys/bus/pci/devices/0000:00:03.0/", "/sys/devices/pci0000:00/0000:00:03.0"}) {
        auto a = parse_pci_address(text);
        ASSERT_TRUE(a) << text << ": " << a.error().message;
        EXPECT_EQ(*a, want) << text;
        EXPECT_EQ(a->str(), "0000:00:03.0");
    }
}

TEST(VfioAddress, HexDigitsInEitherCaseAndTheHighestValues) {
    auto a = parse_pci_address("ABCD:Ff:1f.7");
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_EQ(a->domain, 0xabcdu);
    EXPECT_EQ(a->bus, 0xff);
    EXPECT_EQ(a->device, 0x1f);
    EXPECT_EQ(a->function, 7);
    EXPECT_EQ(a->str(), "abcd:ff:1f.7");
}

TEST(VfioAddress, MalformedAddressesAreErrorsShowingTheExpectedForm) {
    for (const char* text :
         {"", "edu", "0000:00:03", "0000:00:20.0", "0000:00:03.8", "0000:100:03.0", "10000:00:03.0",
          "0000:00:3g.0", "0000:00:03.00", ":00:03.0"}) {
        auto a = parse_pci_address(text);
        ASSERT_FALSE(a) << text;
        EXPECT_TRUE(mentions(a.error().message, "DDDD:BB:DD.F")) << a.error().message;
    }
}

// ---- sysfs -----------------------------------------------------------------------------------

TEST(VfioSysfs, AMissingDeviceIsAnErrorNamingItAndWhereItLooked) {
    FakeSys f;
    fs::create_directories(f.root / "sys/bus/pci/devices");
    auto d = read_sysfs_device(f.sys(), {0, 0, 3, 0});
    ASSERT_FALSE(d);
    EXPECT_TRUE(mentions(d.error().message, "PCI device 0000:00:03.0 does not exist"))
        << d.error().message;
    EXPECT_TRUE(mentions(d.error().message, f.sys() + "/bus/pci/devices/0000:00:03.0"));
}

TEST(VfioSysfs, DriverGroupAndMembersAreRead) {
    FakeSys f;
    f.add("0000:00:03.0", "vfio-pci", 7);
    f.add("0000:00:03.1", "e1000e", 7);
    auto d = read_sysfs_device(f.sys(), {0, 0, 3, 0});
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->driver, "vfio-pci");
    EXPECT_TRUE(d->has_group);
    EXPECT_EQ(d->group, 7u);
    EXPECT_EQ(d->group_members, (std::vector<std::string>{"0000:00:03.0", "0000:00:03.1"}));
    EXPECT_TRUE(check_vfio_ready(*d));
    EXPECT_EQ(blocking_group_members(f.sys(), *d),
              std::vector<std::string>{"0000:00:03.1 (driver e1000e)"});
}

TEST(VfioSysfs, GroupMembersOnVfioPciOrNoDriverDoNotBlock) {
    FakeSys f;
    f.add("0000:00:03.0", "vfio-pci", 7);
    f.add("0000:00:03.1", "vfio-pci", 7);
    f.add("0000:00:03.2", "", 7);
    auto d = read_sysfs_device(f.sys(), {0, 0, 3, 0});
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_TRUE(blocking_group_members(f.sys(), *d).empty());
}

TEST(VfioSysfs, ADeviceOnAnotherDriverIsToldHowToBindIt) {
    FakeSys f;
    f.add("0000:00:03.0", "e1000e", 3);
    auto d = read_sysfs_device(f.sys(), {0, 0, 3, 0});
    ASSERT_TRUE(d) << d.error().message;
    auto r = check_vfio_ready(*d);
    ASSERT_FALSE(r);
    EXPECT_TRUE(
        mentions(r.error().message, "0000:00:03.0 is bound to driver 'e1000e', not vfio-pci"))
        << r.error().message;
    EXPECT_TRUE(mentions(r.error().message, "/driver/unbind")) << r.error().message;
    EXPECT_TRUE(mentions(r.error().message, "driver_override")) << r.error().message;
}

TEST(VfioSysfs, AnUnboundDeviceIsToldHowToBindIt) {
    FakeSys f;
    f.add("0000:00:03.0", "", 3);
    auto d = read_sysfs_device(f.sys(), {0, 0, 3, 0});
    ASSERT_TRUE(d) << d.error().message;
    auto r = check_vfio_ready(*d);
    ASSERT_FALSE(r);
    EXPECT_TRUE(mentions(r.error().message, "bound to no driver, not vfio-pci"))
        << r.error().message;
    EXPECT_FALSE(mentions(r.error().message, "unbind")) << r.error().message;
}

TEST(VfioSysfs, ADeviceWithoutAnIommuGroupIsToldToEnableTheIommu) {
    FakeSys f;
    f.add("0000:00:03.0", "vfio-pci", -1);
    auto d = read_sysfs_device(f.sys(), {0, 0, 3, 0});
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_FALSE(d->has_group);
    auto r = check_vfio_ready(*d);
    ASSERT_FALSE(r);
    EXPECT_TRUE(mentions(r.error().message, "has no IOMMU group")) << r.error().message;
    EXPECT_TRUE(mentions(r.error().message, "intel_iommu=on")) << r.error().message;
}

// ---- Opening ---------------------------------------------------------------------------------

TEST(VfioOpen, EachSysfsProblemStopsTheOpenBeforeDevVfioIsTouched) {
    FakeSys f;
    f.add("0000:00:04.0", "nvme", 4);
    f.add("0000:00:05.0", "vfio-pci", -1);
    EXPECT_TRUE(mentions(open_error(f, "0000:00:03.0"), "does not exist"));
    EXPECT_TRUE(mentions(open_error(f, "00:04.0"), "not vfio-pci"));
    EXPECT_TRUE(
        mentions(open_error(f, f.sys() + "/bus/pci/devices/0000:00:05.0"), "no IOMMU group"));
    EXPECT_TRUE(mentions(open_error(f, "nonsense"), "DDDD:BB:DD.F"));
}

TEST(VfioOpen, AMissingVfioContainerNamesTheFileAndTheModule) {
    FakeSys f;
    f.add("0000:00:03.0", "vfio-pci", 3);
    const std::string e = open_error(f, "0000:00:03.0");
    EXPECT_TRUE(mentions(e, "0000:00:03.0: open " + f.dev() + "/vfio/vfio")) << e;
    EXPECT_TRUE(mentions(e, "modprobe vfio-pci")) << e;
}

TEST(VfioOpen, AContainerThatIsNotVfioFailsNamingTheIoctl) {
    FakeSys f;
    f.add("0000:00:03.0", "vfio-pci", 3);
    fs::create_directories(f.root / "dev/vfio");
    std::ofstream(f.root / "dev/vfio/vfio") << "not a character device";
    const std::string e = open_error(f, "0000:00:03.0");
    EXPECT_TRUE(mentions(e, "0000:00:03.0: VFIO_GET_API_VERSION")) << e;
}

TEST(VfioOpen, TheUrlTakesAnAddressOrASysfsPathAndOnlyKnownParameters) {
    hostdev::TransportRegistry transports;
    ASSERT_TRUE(register_vfio_transport(transports));
    NoEvents events;
    hostdev::OpenContext ctx;
    ctx.events = &events;
    FakeSys f;
    f.add("0000:00:03.0", "e1000e", 3);
    const std::string q = "?sysfs_root=" + f.sys() + "&dev_root=" + f.dev();
    for (const std::string path : {"0000:00:03.0", "/sys/bus/pci/devices/0000:00:03.0"}) {
        auto d = transports.open("vfio:" + path + q, ctx);
        ASSERT_FALSE(d);
        EXPECT_TRUE(mentions(d.error().message, "not vfio-pci")) << d.error().message;
    }
    auto bad = transports.open("vfio:0000:00:03.0?group=3", ctx);
    ASSERT_FALSE(bad);
    EXPECT_TRUE(mentions(bad.error().message, "unknown parameter 'group'")) << bad.error().message;
}

// ---- PCI_PASSTHROUGH -------------------------------------------------------------------------

namespace {

// A VM without a CPU and the built-in classes and transports; returns the first error.
std::string create_vm(const std::string& device_xml) {
    sdk::ModelRegistry models;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    if (auto r = machine::register_builtins({models, transports, classes}); !r)
        return r.error().message;
    auto memory = vm::GuestMemory::create({{Gpa(0), 16u << 20}});
    if (!memory) return memory.error().message;
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    potemkin::testing::RecordingSink sink;
    potemkin::testing::NullTimers timers;
    vm::DeviceManager manager(classes);
    vm::DeviceContext ctx{ports, mmio, **memory, sink, timers, manager, nullptr};
    auto doc = vm::ConfigDocument::load_string(
        "<vm class=\"PC\">\n<memory>16</memory>\n<devices>\n<device class=\"PCI\" id=\"pci0\"/>\n" +
            device_xml + "\n</devices>\n</vm>\n",
        "vm.xml");
    if (!doc) return doc.error().message;
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg) return cfg.error().message;
    auto r = manager.create_all(cfg->devices, ctx);
    return r ? std::string() : r.error().message;
}

}  // namespace

TEST(PciPassthrough, NeedsExactlyOneOfDeviceAndHostdev) {
    const std::string neither =
        create_vm(R"(<device class="PCI_PASSTHROUGH" id="p0" bus="pci0"/>)");
    EXPECT_TRUE(mentions(neither, "vm.xml:5")) << neither;
    EXPECT_TRUE(mentions(neither, "exactly one of them")) << neither;
    const std::string both = create_vm(
        R"(<device class="PCI_PASSTHROUGH" id="p0" bus="pci0" device="00:03.0" hostdev="vfio:00:03.0"/>)");
    EXPECT_TRUE(mentions(both, "exactly one of them")) << both;
}

TEST(PciPassthrough, AnotherTransportIsRefusedPointingAtPciFront) {
    const std::string e =
        create_vm(R"(<device class="PCI_PASSTHROUGH" id="p0" bus="pci0" hostdev="inproc:edu"/>)");
    EXPECT_TRUE(mentions(e, "attribute 'hostdev'")) << e;
    EXPECT_TRUE(mentions(e, "use PCI_FRONT")) << e;
}

TEST(PciPassthrough, OpenFailuresAreReportedOnTheAttributeThatNamedTheDevice) {
    FakeSys f;
    f.add("0000:00:03.0", "e1000e", 3);
    const std::string q = "?sysfs_root=" + f.sys() + "&amp;dev_root=" + f.dev();
    const std::string by_hostdev = create_vm(
        R"(<device class="PCI_PASSTHROUGH" id="p0" bus="pci0" hostdev="vfio:0000:00:03.0)" + q +
        R"("/>)");
    EXPECT_TRUE(mentions(by_hostdev, "attribute 'hostdev'")) << by_hostdev;
    EXPECT_TRUE(mentions(by_hostdev, "not vfio-pci")) << by_hostdev;
    const std::string by_device =
        create_vm(R"(<device class="PCI_PASSTHROUGH" id="p0" bus="pci0" device="0000:00:1f.7"/>)");
    EXPECT_TRUE(mentions(by_device, "attribute 'device'")) << by_device;
    EXPECT_TRUE(mentions(by_device, "0000:00:1f.7")) << by_device;
}

// ---- The region-info capability chain ------------------------------------------------------

namespace {

// A vfio_region_info reply as the kernel lays it out: the struct, then capabilities.
struct InfoBytes {
    std::vector<uint8_t> b = std::vector<uint8_t>(sizeof(vfio_region_info), 0);
    // Appends a capability header (id, version 1, next) and returns its offset.
    uint32_t cap(uint16_t id, uint32_t next) {
        const auto at = static_cast<uint32_t>(b.size());
        vfio_info_cap_header h{id, 1, next};
        append(&h, sizeof h);
        return at;
    }
    void append(const void* p, size_t n) {
        const auto* c = static_cast<const uint8_t*>(p);
        b.insert(b.end(), c, c + n);
    }
    void sparse(std::initializer_list<std::pair<uint64_t, uint64_t>> areas, uint32_t next = 0) {
        cap(VFIO_REGION_INFO_CAP_SPARSE_MMAP, next);
        const uint32_t nr = static_cast<uint32_t>(areas.size()), reserved = 0;
        append(&nr, 4);
        append(&reserved, 4);
        for (const auto& [off, size] : areas) {
            vfio_region_sparse_mmap_area a{off, size};
            append(&a, sizeof a);
        }
    }
};

}  // namespace

TEST(VfioRegionCaps, NoChainOrNoSparseCapabilityMeansTheWholeRegion) {
    InfoBytes i;
    EXPECT_FALSE(find_sparse_mmap(i.b, 0, 0x4000));
    const uint32_t at = i.cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0);
    EXPECT_FALSE(find_sparse_mmap(i.b, at, 0x4000));
}

TEST(VfioRegionCaps, SparseAreasAfterAnotherCapabilityAreFoundAndBadOnesIgnored) {
    InfoBytes i;
    const uint32_t first = sizeof(vfio_region_info);
    const uint32_t second = first + sizeof(vfio_info_cap_header);
    i.cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, second);
    // The MSI-X table page left out, as vfio-pci does; one area past the end, one empty.
    i.sparse({{0, 0x2000}, {0x3000, 0x1000}, {0x3000, 0x2000}, {0x1000, 0}});
    auto s = find_sparse_mmap(i.b, first, 0x4000);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->areas.size(), 2u);
    EXPECT_EQ(s->areas[0].offset, 0u);
    EXPECT_EQ(s->areas[0].size, 0x2000u);
    EXPECT_EQ(s->areas[1].offset, 0x3000u);
    EXPECT_EQ(s->areas[1].size, 0x1000u);
    EXPECT_EQ(s->ignored, (std::vector<std::string>{"0x3000+0x2000", "0x1000+0x0"}));
}

TEST(VfioRegionCaps, ASparseCapabilityWithNoAreasMeansNothingIsMappable) {
    InfoBytes i;
    i.sparse({});
    auto s = find_sparse_mmap(i.b, sizeof(vfio_region_info), 0x4000);
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->areas.empty());
}

TEST(VfioRegionCaps, MalformedChainsEndTheWalkWithoutReadingOutsideTheReply) {
    InfoBytes loop;
    const uint32_t at = loop.cap(VFIO_REGION_INFO_CAP_TYPE, sizeof(vfio_region_info));  // itself
    EXPECT_FALSE(find_sparse_mmap(loop.b, at, 0x1000));
    InfoBytes past;
    past.cap(VFIO_REGION_INFO_CAP_TYPE, 0x10000);
    EXPECT_FALSE(find_sparse_mmap(past.b, sizeof(vfio_region_info), 0x1000));
    InfoBytes odd;
    EXPECT_FALSE(find_sparse_mmap(odd.b, 3, 0x1000));
    // nr_areas says 3 but the reply holds one and 4 bytes of the next: the one is taken.
    InfoBytes cut;
    cut.sparse({{0, 0x1000}, {0x1000, 0x1000}, {0x2000, 0x1000}});
    cut.b.resize(cut.b.size() - 2 * sizeof(vfio_region_sparse_mmap_area) + 4);
    auto s = find_sparse_mmap(cut.b, sizeof(vfio_region_info), 0x4000);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->areas.size(), 1u);
    EXPECT_EQ(s->areas[0].size, 0x1000u);
}
