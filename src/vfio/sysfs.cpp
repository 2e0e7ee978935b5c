#include "vfio/sysfs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <system_error>

namespace potemkin::vfio {

namespace fs = std::filesystem;

namespace {

bool is_hex(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c)) != 0;
    });
}

bool parse_hex(std::string_view s, uint32_t max, uint32_t& out) {
    if (!is_hex(s)) return false;
    uint32_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
    if (ec != std::errc() || end != s.data() + s.size() || v > max) return false;
    out = v;
    return true;
}

// The last component of a symlink's target ("../../../bus/pci/drivers/vfio-pci" → "vfio-pci"),
// or empty when there is no such link.
std::string link_name(const fs::path& link) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(link, ec);
    if (ec) return {};
    return target.filename().string();
}

}  // namespace

std::string PciAddress::str() const {
    return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, device, function);
}

Result<PciAddress> parse_pci_address(std::string_view text) {
    std::string_view s = text;
    while (!s.empty() && s.back() == '/') s.remove_suffix(1);
    if (const auto slash = s.rfind('/'); slash != std::string_view::npos) s = s.substr(slash + 1);
    auto bad = [&] {
        return failf(
            "'{}' is not a PCI address: expected DDDD:BB:DD.F (e.g. 0000:00:03.0), BB:DD.F, or "
            "a sysfs path ending in one (/sys/bus/pci/devices/0000:00:03.0)",
            text);
    };
    // [DDDD:]BB:DD.F
    const auto dot = s.rfind('.');
    if (dot == std::string_view::npos) return bad();
    const std::string_view fn = s.substr(dot + 1);
    std::string_view head = s.substr(0, dot);
    const auto c2 = head.rfind(':');
    if (c2 == std::string_view::npos) return bad();
    const std::string_view dev = head.substr(c2 + 1);
    head = head.substr(0, c2);
    const auto c1 = head.rfind(':');
    const std::string_view bus = c1 == std::string_view::npos ? head : head.substr(c1 + 1);
    const std::string_view dom =
        c1 == std::string_view::npos ? std::string_view("0") : head.substr(0, c1);
    uint32_t d = 0, b = 0, v = 0, f = 0;
    if (!parse_hex(dom, 0xffff, d) || bus.size() > 2 || !parse_hex(bus, 0xff, b) ||
        dev.size() > 2 || !parse_hex(dev, 0x1f, v) || fn.size() != 1 || !parse_hex(fn, 7, f))
        return bad();
    return PciAddress{d, static_cast<uint8_t>(b), static_cast<uint8_t>(v), static_cast<uint8_t>(f)};
}

Result<SysfsDevice> read_sysfs_device(const std::string& sysfs_root, const PciAddress& address) {
    SysfsDevice out;
    out.address = address;
    out.path = (fs::path(sysfs_root) / "bus/pci/devices" / address.str()).string();
    std::error_code ec;
    if (!fs::exists(out.path, ec)) {
        if (ec)
            return failf(Errno{ec.value()}, "PCI device {}: looking at {}", address.str(),
                         out.path);
        return failf("PCI device {} does not exist (no {})", address.str(), out.path);
    }
    out.driver = link_name(fs::path(out.path) / "driver");
    const fs::path group_link = fs::path(out.path) / "iommu_group";
    const std::string group = link_name(group_link);
    if (!group.empty()) {
        uint32_t n = 0;
        const auto [end, perr] = std::from_chars(group.data(), group.data() + group.size(), n);
        if (perr != std::errc() || end != group.data() + group.size())
            return failf("PCI device {}: {} points at '{}', not a group number", address.str(),
                         group_link.string(), group);
        out.has_group = true;
        out.group = n;
        const fs::path members = group_link / "devices";
        for (fs::directory_iterator it(members, ec), end_it; !ec && it != end_it; it.increment(ec))
            out.group_members.push_back(it->path().filename().string());
        if (ec)
            return failf(Errno{ec.value()}, "PCI device {}: listing IOMMU group {}'s devices ({})",
                         address.str(), n, members.string());
        std::sort(out.group_members.begin(), out.group_members.end());
    }
    return out;
}

Result<void> check_vfio_ready(const SysfsDevice& dev) {
    const std::string a = dev.address.str();
    if (dev.driver != "vfio-pci") {
        const std::string now =
            dev.driver.empty() ? std::string("no driver") : fmt::format("driver '{}'", dev.driver);
        return failf(
            "PCI device {} is bound to {}, not vfio-pci: bind it first (as root: "
            "modprobe vfio-pci; {}echo vfio-pci > {}/driver_override; echo {} > "
            "/sys/bus/pci/drivers_probe; docs/passthrough.md)",
            a, now,
            dev.driver.empty() ? std::string()
                               : fmt::format("echo {} > {}/driver/unbind; ", a, dev.path),
            dev.path, a);
    }
    if (!dev.has_group)
        return failf(
            "PCI device {} has no IOMMU group ({}/iommu_group is missing): VFIO needs an IOMMU; "
            "enable it (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d/AMD-Vi "
            "in the firmware)",
            a, dev.path);
    return ok();
}

std::vector<std::string> blocking_group_members(const std::string& sysfs_root,
                                                const SysfsDevice& dev) {
    std::vector<std::string> out;
    for (const auto& m : dev.group_members) {
        if (m == dev.address.str()) continue;
        const std::string driver =
            link_name(fs::path(sysfs_root) / "bus/pci/devices" / m / "driver");
        // The kernel accepts members bound to a VFIO driver, pci-stub, PCIe port drivers
        // (bridges), or to nothing.
        if (driver.empty() || driver == "vfio-pci" || driver == "pci-stub" || driver == "pcieport")
            continue;
        out.push_back(fmt::format("{} (driver {})", m, driver));
    }
    return out;
}

}  // namespace potemkin::vfio
