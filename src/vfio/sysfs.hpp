// Finding a PCI function for kernel VFIO: its address from what the user wrote, and from sysfs
// the driver it is bound to, its IOMMU group and the group's other members. Everything the
// VFIO client needs to know before it touches /dev/vfio, so that every "it cannot work" has a
// message that says what to do (bind to vfio-pci, turn the IOMMU on, unbind the group's other
// devices). The sysfs root is a parameter so that unit tests can build a fake tree.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace potemkin::vfio {

// A PCI function's address, DDDD:BB:DD.F.
struct PciAddress {
    uint32_t domain = 0;  // 16 bits in practice; sysfs prints four hex digits
    uint8_t bus = 0;
    uint8_t device = 0;       // 0-31
    uint8_t function = 0;     // 0-7
    std::string str() const;  // "0000:00:03.0", the form sysfs names it by
    bool operator==(const PciAddress&) const = default;
};

// "0000:00:03.0", "00:03.0" (domain 0), or a sysfs path ending in one
// ("/sys/bus/pci/devices/0000:00:03.0", "/sys/devices/pci0000:00/0000:00:03.0/"). Hex digits in
// either case. Errors say which form is expected.
Result<PciAddress> parse_pci_address(std::string_view text);

// What sysfs says about a function (as far as VFIO cares).
struct SysfsDevice {
    PciAddress address;
    std::string path;                        // <root>/bus/pci/devices/<address>
    std::string driver;                      // bound driver's name; empty: none
    bool has_group = false;                  // an iommu_group link exists
    unsigned group = 0;                      // its number (/dev/vfio/<group>)
    std::vector<std::string> group_members;  // addresses of every device in the group
};

// Looks `address` up under `sysfs_root` ("/sys"). Fails only when the function does not exist
// (the message says so and where it looked); a missing driver or group is reported in the
// result, so the caller decides the message.
Result<SysfsDevice> read_sysfs_device(const std::string& sysfs_root, const PciAddress& address);

// The device is usable through VFIO as far as sysfs can tell: bound to vfio-pci and in an IOMMU
// group. Errors say how to get there (bind it; enable the IOMMU).
Result<void> check_vfio_ready(const SysfsDevice& dev);

// The members of the group other than `dev` that are not bound to vfio-pci (or no driver), as
// "ADDRESS (driver NAME)": what makes a group not viable.
std::vector<std::string> blocking_group_members(const std::string& sysfs_root,
                                                const SysfsDevice& dev);

}  // namespace potemkin::vfio
