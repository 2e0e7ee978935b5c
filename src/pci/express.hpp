// PCI Express configuration structures (PCI Express Base Specification, rev. 4.0 and later;
// section numbers below are those of rev. 5.0): the PCI Express capability (section 7.5.3) in
// the conventional capability list, and the extended capabilities that live in the extended
// configuration space from 0x100 (section 7.6): Advanced Error Reporting (7.8.4), Device
// Serial Number (7.9.3) and Vendor-Specific Extended Capability (7.9.5).
//
// Implemented: the register layout with the spec's RO / RW / RW1C attribute per bit, so a
// guest driver sees a consistent endpoint. Not implemented: link training (Link Status says
// the link is up at its maximum speed and width, Link Training reads 0), ASPM (ASPM Support
// 00b, ASPM Control hardwired 0), function-level reset (FLR Capable 0), AER signalling (no
// error is ever logged or raised: the status registers only hold what a device model stores),
// slots and root-port registers (only endpoint and port types without a slot are built).
//
// The extended capability chain (7.6.3): each capability starts with a 32-bit header, ID in
// bits 15:0, version in 19:16, next offset in 31:20 (0 ends the chain). The first one is at
// 0x100; a function without extended capabilities reads 0 there. Walking never trusts the
// chain (it may come from a host device).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "pci/capabilities.hpp"
#include "pci/config_space.hpp"

namespace potemkin::pci {

// Extended capability IDs (PCI Code and ID Assignment Specification, section 3).
namespace ext_cap_id {
inline constexpr uint16_t kAer = 0x0001;
inline constexpr uint16_t kVirtualChannel = 0x0002;
inline constexpr uint16_t kDeviceSerialNumber = 0x0003;
inline constexpr uint16_t kPowerBudgeting = 0x0004;
inline constexpr uint16_t kVendorSpecific = 0x000B;
inline constexpr uint16_t kAcs = 0x000D;
inline constexpr uint16_t kAri = 0x000E;
inline constexpr uint16_t kAts = 0x000F;
inline constexpr uint16_t kSriov = 0x0010;
inline constexpr uint16_t kLtr = 0x0018;
inline constexpr uint16_t kSecondaryPcie = 0x0019;
inline constexpr uint16_t kPasid = 0x001B;
inline constexpr uint16_t kL1PmSubstates = 0x001E;
inline constexpr uint16_t kDvsec = 0x0023;
}  // namespace ext_cap_id

// Name of an extended capability as lspci prints it ("Device Serial Number"); empty when
// the ID is not one of the common ones.
std::string ext_cap_name(uint16_t id);

inline constexpr uint32_t kExtCapabilityStart = 0x100;
inline constexpr uint32_t kExtCapabilityEnd = 0x1000;

// ---- PCI Express capability (section 7.5.3) ------------------------------------------------

namespace pcie {
// Offsets inside the capability.
inline constexpr uint8_t kCapabilities = 0x02;  // 16 bits
inline constexpr uint8_t kDevCap = 0x04;        // 32 bits
inline constexpr uint8_t kDevCtl = 0x08;        // 16 bits
inline constexpr uint8_t kDevSta = 0x0A;        // 16 bits
inline constexpr uint8_t kLinkCap = 0x0C;       // 32 bits
inline constexpr uint8_t kLinkCtl = 0x10;       // 16 bits
inline constexpr uint8_t kLinkSta = 0x12;       // 16 bits
inline constexpr uint8_t kDevCap2 = 0x24;
inline constexpr uint8_t kDevCtl2 = 0x28;
inline constexpr uint8_t kLinkCap2 = 0x2C;
inline constexpr uint8_t kLinkCtl2 = 0x30;
inline constexpr uint8_t kLinkSta2 = 0x32;
inline constexpr uint8_t kLength = 0x3C;  // capability version 2

// Device Control (7.5.3.4).
inline constexpr uint16_t kDevCtlCorrErrEnable = 1u << 0;
inline constexpr uint16_t kDevCtlNonFatalErrEnable = 1u << 1;
inline constexpr uint16_t kDevCtlFatalErrEnable = 1u << 2;
inline constexpr uint16_t kDevCtlUrEnable = 1u << 3;
inline constexpr uint16_t kDevCtlRelaxedOrdering = 1u << 4;
inline constexpr uint16_t kDevCtlPayloadShift = 5;  // 7:5 Max_Payload_Size
inline constexpr uint16_t kDevCtlPayloadMask = 0x7u << kDevCtlPayloadShift;
inline constexpr uint16_t kDevCtlExtTag = 1u << 8;
inline constexpr uint16_t kDevCtlNoSnoop = 1u << 11;
inline constexpr uint16_t kDevCtlReadReqShift = 12;  // 14:12 Max_Read_Request_Size
inline constexpr uint16_t kDevCtlReadReqMask = 0x7u << kDevCtlReadReqShift;
// Device Status (7.5.3.5): the four "error detected" bits are RW1C.
inline constexpr uint16_t kDevStaCorrErr = 1u << 0;
inline constexpr uint16_t kDevStaNonFatalErr = 1u << 1;
inline constexpr uint16_t kDevStaFatalErr = 1u << 2;
inline constexpr uint16_t kDevStaUnsupportedReq = 1u << 3;
inline constexpr uint16_t kDevStaW1c =
    kDevStaCorrErr | kDevStaNonFatalErr | kDevStaFatalErr | kDevStaUnsupportedReq;
inline constexpr uint16_t kDevStaTransactionsPending = 1u << 5;  // RO
// Link Control (7.5.3.7) bits a function without ASPM or clock PM implements as RW.
inline constexpr uint16_t kLinkCtlRcb = 1u << 3;
inline constexpr uint16_t kLinkCtlCommonClock = 1u << 6;
inline constexpr uint16_t kLinkCtlExtendedSynch = 1u << 7;
// Link Status (7.5.3.8): the two bandwidth status bits are RW1C in downstream ports.
inline constexpr uint16_t kLinkStaBandwidthMgmt = 1u << 14;
inline constexpr uint16_t kLinkStaAutonomousBw = 1u << 15;
}  // namespace pcie

// Device/Port Type (7.5.3.2, bits 7:4 of the PCI Express Capabilities register).
enum class PortType : uint8_t {
    endpoint = 0x0,
    legacy_endpoint = 0x1,
    root_port = 0x4,
    upstream_port = 0x5,
    downstream_port = 0x6,
    pcie_to_pci_bridge = 0x7,
    pci_to_pcie_bridge = 0x8,
    rc_integrated_endpoint = 0x9,
    rc_event_collector = 0xA,
};
const char* port_type_name(PortType type);  // "Endpoint", "Root Port", ...

struct PcieSettings {
    PortType type = PortType::endpoint;
    // Max_Payload_Size Supported in bytes: 128, 256, 512, 1024, 2048 or 4096.
    unsigned max_payload = 256;
    bool extended_tag = true;  // 8-bit tags supported (Device Capabilities bit 5)
    // Maximum link speed: 1 = 2.5 GT/s, 2 = 5, 3 = 8, 4 = 16, 5 = 32, 6 = 64 GT/s.
    unsigned link_speed = 3;
    // Maximum link width: 1, 2, 4, 8, 12, 16 or 32 lanes.
    unsigned link_width = 1;
    uint8_t port_number = 0;  // Link Capabilities 31:24
};

// Version 2, 0x3C bytes. Read-only: the Capabilities register, Device/Link Capabilities (1
// and 2), Link Status (current speed and width = the maximum: the link is always up, never
// training). RW: Device Control's error reporting enables, relaxed ordering, Max_Payload_Size,
// extended tag (when supported), no snoop, Max_Read_Request_Size; Link Control's RCB, common
// clock and extended synch; Link Control 2's target link speed. RW1C: Device Status bits 3:0;
// Link Status bits 15:14 in root and downstream ports. Everything else RO 0 (ASPM, clock PM,
// FLR, completion timeout, slot and root registers are not implemented). Reset values as the
// spec gives them: Device Control 0x2810 (relaxed ordering, no snoop, 512-byte read requests).
Result<CapabilityImage> pcie_capability(const PcieSettings& settings);

struct PcieState {
    PortType type = PortType::endpoint;
    uint8_t version = 0;
    unsigned max_payload_supported = 0;  // bytes
    unsigned max_payload = 0;            // bytes, Device Control
    unsigned max_read_request = 0;       // bytes
    bool extended_tag = false;
    bool flr = false;
    uint32_t device_control = 0;
    uint32_t device_status = 0;
    unsigned link_speed_max = 0, link_width_max = 0;  // Link Capabilities (speed code, lanes)
    unsigned link_speed = 0, link_width = 0;          // Link Status
    unsigned aspm_support = 0;                        // Link Capabilities 11:10
};
PcieState read_pcie(const ConfigSpace& cs, uint8_t cap_offset);
// "2.5GT/s", "5GT/s", ...; "unknown" for reserved encodings.
const char* link_speed_name(unsigned code);

// ---- Extended capabilities (section 7.6) ----------------------------------------------------

struct ExtCapabilityImage {
    uint16_t id = 0;
    uint8_t version = 1;  // 4 bits
    // bytes[0..3] is the header, filled in by add_extended_capability; masks as long as bytes.
    CapabilityImage body;
};

// Place `image` and link it at the end of the chain: at 0x100 when the chain is empty
// (section 7.6: "Extended Capabilities in Configuration Space always begin at offset 100h"),
// else at the first dword-aligned window of unclaimed bytes above 0x100. The header is
// read-only. Returns the offset. Fails on a 256-byte space, an image shorter than its header
// or longer than the space, a malformed chain or no room.
Result<uint16_t> add_extended_capability(ConfigSpace& cs, const ExtCapabilityImage& image);

struct ExtCapabilityRef {
    uint16_t offset = 0;
    uint16_t id = 0;
    uint8_t version = 0;
    bool operator==(const ExtCapabilityRef&) const = default;
};

// The chain in order; empty for a 256-byte space or a header of 0 at 0x100 (and of
// all-ones, what a device without extended space returns). The next offset's low two bits
// are masked off (they are reserved). Fails on a pointer below 0x100, one whose header would
// not fit the space, or a loop; `bytes` is the config space from offset 0 (256 or 4096).
Result<std::vector<ExtCapabilityRef>> walk_extended_capabilities(std::span<const uint8_t> bytes);
Result<std::vector<ExtCapabilityRef>> walk_extended_capabilities(const ConfigSpace& cs);
std::optional<uint16_t> find_extended_capability(const ConfigSpace& cs, uint16_t id);

// Device Serial Number (7.9.3): 12 bytes, version 1, the 64-bit serial (an EUI-64) RO.
ExtCapabilityImage dsn_capability(uint64_t serial);

// Vendor-Specific Extended Capability (7.9.5): version 1; the VSEC header at 0x04 holds the
// VSEC ID (15:0), revision (19:16) and length in bytes including both headers (31:20), all
// RO; the vendor's registers follow at 0x08 with the masks the model gives them.
struct VendorSpecificSettings {
    uint16_t vsec_id = 0;
    uint8_t vsec_revision = 0;  // 4 bits
    std::vector<uint8_t> data;  // the registers from 0x08
    // Per byte of `data`; empty = all read-only.
    std::vector<uint8_t> wmask, w1c;
};
Result<ExtCapabilityImage> vendor_specific_capability(const VendorSpecificSettings& settings);

// Advanced Error Reporting (7.8.4) for a non-root function: version 2, 0x48 bytes. Uncorrectable
// and Correctable Error Status RW1C, their Mask and the Uncorrectable Error Severity RW (sticky
// in the spec; there is no cold/warm reset distinction here) for the errors an endpoint
// reports (uncorrectable bits 4 and 12-20, correctable bits 0, 6-8, 12, 13), with the spec's
// default values (severity 0x00062010, correctable mask 0x00002000: Advisory Non-Fatal
// masked); capabilities
// and control, header log and TLP prefix log RO 0 (no ECRC, no first-error pointer). Nothing
// ever sets an error bit: the registers exist so drivers that look for AER find it.
ExtCapabilityImage aer_capability();

}  // namespace potemkin::pci
