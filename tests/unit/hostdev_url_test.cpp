// hostdev URL parsing and the transport registry.
#include <gtest/gtest.h>

#include "hostdev/host_device.hpp"

namespace potemkin::hostdev {
namespace {

TEST(HostdevUrl, SchemePathAndParams) {
    auto u = parse_url("inproc:edu?dma_limit=4096&x=1");
    ASSERT_TRUE(u) << u.error().message;
    EXPECT_EQ(u->scheme, "inproc");
    EXPECT_EQ(u->path, "edu");
    ASSERT_EQ(u->params.size(), 2u);
    EXPECT_EQ(u->params[0], (std::pair<std::string, std::string>{"dma_limit", "4096"}));
    EXPECT_EQ(u->params[1], (std::pair<std::string, std::string>{"x", "1"}));
    EXPECT_EQ(u->text, "inproc:edu?dma_limit=4096&x=1");
    ASSERT_NE(u->param("x"), nullptr);
    EXPECT_EQ(*u->param("x"), "1");
    EXPECT_EQ(u->param("y"), nullptr);
}

TEST(HostdevUrl, NoParams) {
    auto u = parse_url("vfio-user:/run/uart.sock");
    ASSERT_TRUE(u) << u.error().message;
    EXPECT_EQ(u->scheme, "vfio-user");
    EXPECT_EQ(u->path, "/run/uart.sock");
    EXPECT_TRUE(u->params.empty());
}

TEST(HostdevUrl, PathKeepsColonsAfterTheFirst) {
    auto u = parse_url("vfio:/sys/bus/pci/devices/0000:00:02.0");
    ASSERT_TRUE(u) << u.error().message;
    EXPECT_EQ(u->scheme, "vfio");
    EXPECT_EQ(u->path, "/sys/bus/pci/devices/0000:00:02.0");
}

TEST(HostdevUrl, EmptyValueIsAllowed) {
    auto u = parse_url("qemu:edu?props=");
    ASSERT_TRUE(u) << u.error().message;
    ASSERT_NE(u->param("props"), nullptr);
    EXPECT_EQ(*u->param("props"), "");
}

TEST(HostdevUrl, NoSchemeNamesTheUrl) {
    auto u = parse_url("foo");
    ASSERT_FALSE(u);
    EXPECT_EQ(u.error().message, "hostdev URL 'foo' has no scheme (expected e.g. inproc:edu)");
    EXPECT_FALSE(parse_url(":edu"));
    EXPECT_FALSE(parse_url(""));
}

TEST(HostdevUrl, BadSchemeCharactersAreRejected) {
    for (const char* url : {"1nproc:edu", "in proc:edu", "in_proc:edu"}) {
        auto u = parse_url(url);
        ASSERT_FALSE(u) << url;
        EXPECT_NE(u.error().message.find(url), std::string::npos) << u.error().message;
    }
}

TEST(HostdevUrl, EmptyPath) {
    for (const char* url : {"inproc:", "inproc:?a=1"}) {
        auto u = parse_url(url);
        ASSERT_FALSE(u) << url;
        EXPECT_NE(u.error().message.find("empty path"), std::string::npos) << u.error().message;
        EXPECT_NE(u.error().message.find(url), std::string::npos) << u.error().message;
    }
}

TEST(HostdevUrl, MalformedParams) {
    for (const char* url : {"inproc:edu?", "inproc:edu?a", "inproc:edu?=1", "inproc:edu?a=1&&b=2",
                            "inproc:edu?a=1&"}) {
        auto u = parse_url(url);
        ASSERT_FALSE(u) << url;
        EXPECT_NE(u.error().message.find(url), std::string::npos) << u.error().message;
    }
}

TEST(HostdevUrl, DuplicateKeyIsAnError) {
    auto u = parse_url("inproc:edu?a=1&b=2&a=3");
    ASSERT_FALSE(u);
    EXPECT_NE(u.error().message.find("'a' is given twice"), std::string::npos) << u.error().message;
}

// A HostDevice that does nothing; enough to see which opener ran.
class NullDevice final : public HostDevice {
  public:
    explicit NullDevice(std::string p) : path(std::move(p)) {}
    Result<DeviceInfo> info() override { return DeviceInfo{.name = path}; }
    Result<RegionInfo> region_info(uint32_t) override { return RegionInfo{}; }
    Result<void> config_read(uint32_t, std::span<uint8_t>) override { return ok(); }
    Result<void> config_write(uint32_t, std::span<const uint8_t>) override { return ok(); }
    Result<void> region_read(uint32_t, uint64_t, std::span<uint8_t>) override { return ok(); }
    Result<void> region_write(uint32_t, uint64_t, std::span<const uint8_t>) override {
        return ok();
    }
    Result<void> set_irqs(IrqKind, uint32_t) override { return ok(); }
    Result<void> ack_intx() override { return ok(); }
    Result<void> reset() override { return ok(); }
    void close() override {}
    std::string path;
};

class NullEvents final : public HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return ok(); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return ok(); }
    void disconnected(std::string_view) override {}
};

TransportOpener null_opener() {
    return [](const ParsedUrl& url, const OpenContext&) -> Result<std::unique_ptr<HostDevice>> {
        return std::unique_ptr<HostDevice>(std::make_unique<NullDevice>(url.path));
    };
}

TEST(TransportRegistry, UnknownSchemeNamesItAndTheKnownOnes) {
    TransportRegistry reg;
    ASSERT_TRUE(reg.add("inproc", null_opener()));
    NullEvents events;
    auto d = reg.open("vfio-usr:/x", {&events});
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().message,
              "hostdev URL 'vfio-usr:/x': unknown scheme 'vfio-usr' (known: inproc)");
}

TEST(TransportRegistry, UnknownSchemeWithNothingRegistered) {
    TransportRegistry reg;
    NullEvents events;
    auto d = reg.open("inproc:edu", {&events});
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().message.find("(known: none)"), std::string::npos) << d.error().message;
}

TEST(TransportRegistry, OpenDispatchesOnScheme) {
    TransportRegistry reg;
    ASSERT_TRUE(reg.add("inproc", null_opener()));
    ASSERT_TRUE(reg.add("vfio-user", null_opener()));
    EXPECT_EQ(reg.schemes(), (std::vector<std::string>{"inproc", "vfio-user"}));
    NullEvents events;
    auto d = reg.open("vfio-user:/run/a.sock", {&events});
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ((*d)->info()->name, "/run/a.sock");
}

TEST(TransportRegistry, BadUrlIsReportedBeforeLookup) {
    TransportRegistry reg;
    NullEvents events;
    auto d = reg.open("foo", {&events});
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().message.find("has no scheme"), std::string::npos);
}

TEST(TransportRegistry, DuplicateOrInvalidSchemeIsRejected) {
    TransportRegistry reg;
    ASSERT_TRUE(reg.add("inproc", null_opener()));
    EXPECT_FALSE(reg.add("inproc", null_opener()));
    EXPECT_FALSE(reg.add("", null_opener()));
    EXPECT_FALSE(reg.add("a:b", null_opener()));
    EXPECT_FALSE(reg.add("qemu", TransportOpener{}));
    EXPECT_EQ(reg.schemes(), std::vector<std::string>{"inproc"});
}

TEST(TransportRegistry, OpenerErrorGetsTheUrlAsContext) {
    TransportRegistry reg;
    ASSERT_TRUE(reg.add(
        "x", [](const ParsedUrl&, const OpenContext&) -> Result<std::unique_ptr<HostDevice>> {
            return fail("boom");
        }));
    NullEvents events;
    auto d = reg.open("x:y", {&events});
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().message, "hostdev URL 'x:y': boom");
}

TEST(TransportRegistry, OpenWithoutEventsFails) {
    TransportRegistry reg;
    ASSERT_TRUE(reg.add("inproc", null_opener()));
    auto d = reg.open("inproc:edu", {});
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().message.find("inproc:edu"), std::string::npos);
}

}  // namespace
}  // namespace potemkin::hostdev
