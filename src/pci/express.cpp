#include "pci/express.hpp"

#include <algorithm>
#include <bit>
#include <vector>

#include <fmt/format.h>

namespace potemkin::pci {

namespace {

// Header of an extended capability (section 7.6.3).
constexpr uint32_t ext_header(uint16_t id, uint8_t version, uint32_t next) {
    return uint32_t{id} | (uint32_t{version & 0xFu} << 16) | (next << 20);
}
constexpr uint16_t header_id(uint32_t h) {
    return static_cast<uint16_t>(h & 0xFFFF);
}
constexpr uint8_t header_version(uint32_t h) {
    return static_cast<uint8_t>((h >> 16) & 0xF);
}
constexpr uint32_t header_next(uint32_t h) {
    // "The bottom two bits of this offset are Reserved and must be implemented as 00b
    // although software must mask them to allow for future uses of these bits."
    return (h >> 20) & 0xFFC;
}

uint32_t le32(std::span<const uint8_t> b, uint32_t at) {
    return uint32_t{b[at]} | uint32_t{b[at + 1]} << 8 | uint32_t{b[at + 2]} << 16 |
           uint32_t{b[at + 3]} << 24;
}

// Max_Payload_Size / Max_Read_Request_Size encoding: 128 << code.
std::optional<unsigned> size_code(unsigned bytes) {
    if (bytes < 128 || bytes > 4096 || !std::has_single_bit(bytes)) return std::nullopt;
    return static_cast<unsigned>(std::countr_zero(bytes / 128));
}

bool valid_width(unsigned w) {
    return w == 1 || w == 2 || w == 4 || w == 8 || w == 12 || w == 16 || w == 32;
}

Result<void> walk_into(std::span<const uint8_t> bytes, std::vector<ExtCapabilityRef>& out) {
    const auto size = static_cast<uint32_t>(bytes.size());
    if (size < kExtCapabilityEnd) return ok();
    std::vector<bool> seen(size / 4, false);
    uint32_t at = kExtCapabilityStart;
    uint32_t from = 0;  // 0: the fixed start at 0x100
    while (true) {
        if (at < kExtCapabilityStart)
            return failf(
                "extended capability chain: next pointer at {:#x} points below 0x100 ({:#x})", from,
                at);
        if (at + 4 > size)
            return failf(
                "extended capability chain: next pointer at {:#x} points past the end "
                "({:#x})",
                from, at);
        if (seen[at / 4])
            return failf("extended capability chain: next pointer at {:#x} loops back to {:#x}",
                         from, at);
        seen[at / 4] = true;
        const uint32_t h = le32(bytes, at);
        // No extended capabilities: a header of 0 at 0x100 (section 7.6.3); a device without
        // extended space returns all-ones.
        if (at == kExtCapabilityStart && (h == 0 || h == 0xFFFF'FFFFu)) return ok();
        out.push_back({static_cast<uint16_t>(at), header_id(h), header_version(h)});
        const uint32_t next = header_next(h);
        if (next == 0) return ok();
        from = at;
        at = next;
    }
}

}  // namespace

std::string ext_cap_name(uint16_t id) {
    switch (id) {
        case ext_cap_id::kAer:
            return "Advanced Error Reporting";
        case ext_cap_id::kVirtualChannel:
            return "Virtual Channel";
        case ext_cap_id::kDeviceSerialNumber:
            return "Device Serial Number";
        case ext_cap_id::kPowerBudgeting:
            return "Power Budgeting";
        case ext_cap_id::kVendorSpecific:
            return "Vendor Specific Information";
        case ext_cap_id::kAcs:
            return "Access Control Services";
        case ext_cap_id::kAri:
            return "Alternative Routing-ID Interpretation (ARI)";
        case ext_cap_id::kAts:
            return "Address Translation Service (ATS)";
        case ext_cap_id::kSriov:
            return "Single Root I/O Virtualization (SR-IOV)";
        case ext_cap_id::kLtr:
            return "Latency Tolerance Reporting";
        case ext_cap_id::kSecondaryPcie:
            return "Secondary PCI Express";
        case ext_cap_id::kPasid:
            return "Process Address Space ID (PASID)";
        case ext_cap_id::kL1PmSubstates:
            return "L1 PM Substates";
        case ext_cap_id::kDvsec:
            return "Designated Vendor-Specific";
        default:
            return {};
    }
}

const char* port_type_name(PortType type) {
    switch (type) {
        case PortType::endpoint:
            return "Endpoint";
        case PortType::legacy_endpoint:
            return "Legacy Endpoint";
        case PortType::root_port:
            return "Root Port";
        case PortType::upstream_port:
            return "Upstream Port";
        case PortType::downstream_port:
            return "Downstream Port";
        case PortType::pcie_to_pci_bridge:
            return "PCI-Express to PCI/PCI-X Bridge";
        case PortType::pci_to_pcie_bridge:
            return "PCI/PCI-X to PCI-Express Bridge";
        case PortType::rc_integrated_endpoint:
            return "Root Complex Integrated Endpoint";
        case PortType::rc_event_collector:
            return "Root Complex Event Collector";
    }
    return "Unknown type";
}

const char* link_speed_name(unsigned code) {
    switch (code) {
        case 1:
            return "2.5GT/s";
        case 2:
            return "5GT/s";
        case 3:
            return "8GT/s";
        case 4:
            return "16GT/s";
        case 5:
            return "32GT/s";
        case 6:
            return "64GT/s";
        default:
            return "unknown";
    }
}

// ---- PCI Express capability ------------------------------------------------------------------

Result<CapabilityImage> pcie_capability(const PcieSettings& s) {
    const auto mps = size_code(s.max_payload);
    if (!mps)
        return failf("PCIe capability: Max_Payload_Size {} is not 128, 256, ..., 4096 bytes",
                     s.max_payload);
    if (s.link_speed < 1 || s.link_speed > 6)
        return failf("PCIe capability: link speed code {} is not 1-6 (2.5-64 GT/s)", s.link_speed);
    if (!valid_width(s.link_width))
        return failf("PCIe capability: link width x{} is not 1, 2, 4, 8, 12, 16 or 32",
                     s.link_width);
    switch (s.type) {
        case PortType::endpoint:
        case PortType::legacy_endpoint:
        case PortType::rc_integrated_endpoint:
        case PortType::upstream_port:
        case PortType::downstream_port:
        case PortType::root_port:
            break;
        default:
            return failf("PCIe capability: device/port type {} is not built here",
                         port_type_name(s.type));
    }
    const bool has_link = s.type != PortType::rc_integrated_endpoint;  // 7.5.3: no link registers
    const bool downstream = s.type == PortType::root_port || s.type == PortType::downstream_port;

    auto img = CapabilityImage::zeroed(cap_id::kPciExpress, pcie::kLength);
    // PCI Express Capabilities: version 2, type; no slot, interrupt message number 0.
    img.set(pcie::kCapabilities, 2, 0x2u | (uint32_t{static_cast<uint8_t>(s.type)} << 4));
    // Device Capabilities: Max_Payload_Size Supported 2:0, Extended Tag 5, endpoint L0s/L1
    // acceptable latency 8:6 / 11:9 = 111b (no limit), Role-Based Error Reporting 15 (must be 1
    // since 1.1). No phantom functions, no FLR, no slot power limit.
    uint32_t devcap = *mps | (s.extended_tag ? 1u << 5 : 0) | (1u << 15);
    if (s.type == PortType::endpoint || s.type == PortType::legacy_endpoint)
        devcap |= (0x7u << 6) | (0x7u << 9);
    img.set(pcie::kDevCap, 4, devcap);
    // Device Control: reset value 2810h (relaxed ordering, no snoop, 512-byte read requests).
    const uint16_t devctl_w = pcie::kDevCtlCorrErrEnable | pcie::kDevCtlNonFatalErrEnable |
                              pcie::kDevCtlFatalErrEnable | pcie::kDevCtlUrEnable |
                              pcie::kDevCtlRelaxedOrdering | pcie::kDevCtlPayloadMask |
                              (s.extended_tag ? pcie::kDevCtlExtTag : 0) | pcie::kDevCtlNoSnoop |
                              pcie::kDevCtlReadReqMask;
    img.set(pcie::kDevCtl, 2,
            pcie::kDevCtlRelaxedOrdering | pcie::kDevCtlNoSnoop | (2u << pcie::kDevCtlReadReqShift),
            {.wmask = devctl_w});
    img.set(pcie::kDevSta, 2, 0, {.w1c = pcie::kDevStaW1c});
    img.set(pcie::kDevCap2, 4, 0);  // no completion timeout ranges, no ARI, no LTR, ...
    img.set(pcie::kDevCtl2, 2, 0);
    if (has_link) {
        // Link Capabilities: speed 3:0, width 9:4, no ASPM (11:10 = 00b), ASPM Optionality
        // Compliance 22 (required of all functions since 3.0), port number 31:24.
        img.set(pcie::kLinkCap, 4,
                s.link_speed | (s.link_width << 4) | (1u << 22) | (uint32_t{s.port_number} << 24));
        img.set(
            pcie::kLinkCtl, 2, 0,
            {.wmask = pcie::kLinkCtlRcb | pcie::kLinkCtlCommonClock | pcie::kLinkCtlExtendedSynch});
        // The link is up at its maximum: no training ever happens.
        img.set(
            pcie::kLinkSta, 2, s.link_speed | (s.link_width << 4),
            {.w1c = downstream ? uint32_t{pcie::kLinkStaBandwidthMgmt | pcie::kLinkStaAutonomousBw}
                               : 0u});
        // Link Capabilities 2: Supported Link Speeds Vector 7:1, every speed up to the maximum.
        img.set(pcie::kLinkCap2, 4, ((1u << s.link_speed) - 1) << 1);
        // Link Control 2: Target Link Speed 3:0, reset value the maximum speed.
        img.set(pcie::kLinkCtl2, 2, s.link_speed, {.wmask = 0xF});
    }
    return img;
}

PcieState read_pcie(const ConfigSpace& cs, uint8_t cap) {
    PcieState st;
    const uint32_t caps = cs.read(cap + uint32_t{pcie::kCapabilities}, 2);
    st.version = static_cast<uint8_t>(caps & 0xF);
    st.type = static_cast<PortType>((caps >> 4) & 0xF);
    const uint32_t devcap = cs.read(cap + uint32_t{pcie::kDevCap}, 4);
    st.max_payload_supported = 128u << std::min(devcap & 0x7u, 5u);
    st.extended_tag = (devcap >> 5) & 1;
    st.flr = (devcap >> 28) & 1;
    st.device_control = cs.read(cap + uint32_t{pcie::kDevCtl}, 2);
    st.device_status = cs.read(cap + uint32_t{pcie::kDevSta}, 2);
    st.max_payload = 128u << std::min((st.device_control >> pcie::kDevCtlPayloadShift) & 0x7u, 5u);
    st.max_read_request =
        128u << std::min((st.device_control >> pcie::kDevCtlReadReqShift) & 0x7u, 5u);
    const uint32_t linkcap = cs.read(cap + uint32_t{pcie::kLinkCap}, 4);
    st.link_speed_max = linkcap & 0xF;
    st.link_width_max = (linkcap >> 4) & 0x3F;
    st.aspm_support = (linkcap >> 10) & 0x3;
    const uint32_t linksta = cs.read(cap + uint32_t{pcie::kLinkSta}, 2);
    st.link_speed = linksta & 0xF;
    st.link_width = (linksta >> 4) & 0x3F;
    return st;
}

// ---- Extended capabilities ---------------------------------------------------------------------

Result<uint16_t> add_extended_capability(ConfigSpace& cs, const ExtCapabilityImage& image) {
    const std::string what = fmt::format("extended capability {:#06x}", image.id);
    if (!cs.is_express()) return failf("{}: the configuration space has 256 bytes", what);
    const size_t len = image.body.bytes.size();
    if (len < 4) return failf("{}: image of {} bytes has no header", what, len);
    if (len > kExtCapabilityEnd - kExtCapabilityStart)
        return failf("{}: image of {} bytes does not fit the extended space", what, len);
    if (image.version > 0xF)
        return failf("{}: version {} does not fit 4 bits", what, image.version);
    std::vector<ExtCapabilityRef> chain;
    if (auto r = walk_into(cs.bytes(), chain); !r) return fail(r.error().context(what));

    uint32_t at = 0;
    if (chain.empty()) {
        for (uint32_t i = kExtCapabilityStart; i < kExtCapabilityStart + len; ++i)
            if (cs.claimed(i)) return failf("{}: 0x100 is taken and the chain is empty", what);
        at = kExtCapabilityStart;
    } else {
        for (uint32_t off = kExtCapabilityStart; off + len <= kExtCapabilityEnd; off += 4) {
            bool free = true;
            for (uint32_t i = off; i < off + len && free; ++i) free = !cs.claimed(i);
            if (free) {
                at = off;
                break;
            }
        }
        if (at == 0) return failf("{}: no room for {} bytes in 0x100..0xfff", what, len);
    }

    std::vector<uint8_t> bytes = image.body.bytes, wmask = image.body.wmask, w1c = image.body.w1c,
                         w1s = image.body.w1s;
    for (auto* m : {&wmask, &w1c, &w1s}) m->resize(len, 0);
    const uint32_t h = ext_header(image.id, image.version, 0);
    for (unsigned i = 0; i < 4; ++i) {
        bytes[i] = static_cast<uint8_t>(h >> (8 * i));
        wmask[i] = w1c[i] = w1s[i] = 0;  // the header is read-only
    }
    if (auto r = cs.set_bytes(at, bytes, wmask, w1c, w1s); !r) return fail(r.error().context(what));
    if (!chain.empty()) {
        // Link the previous last capability to this one: its next field, bits 31:20.
        const uint32_t prev = chain.back().offset;
        POTEMKIN_TRY(cs.update(prev, 4, 0xFFFu << 20, at << 20));
    }
    return static_cast<uint16_t>(at);
}

Result<std::vector<ExtCapabilityRef>> walk_extended_capabilities(std::span<const uint8_t> bytes) {
    std::vector<ExtCapabilityRef> chain;
    POTEMKIN_TRY(walk_into(bytes, chain));
    return chain;
}

Result<std::vector<ExtCapabilityRef>> walk_extended_capabilities(const ConfigSpace& cs) {
    return walk_extended_capabilities(cs.bytes());
}

std::optional<uint16_t> find_extended_capability(const ConfigSpace& cs, uint16_t id) {
    std::vector<ExtCapabilityRef> chain;
    (void)walk_into(cs.bytes(), chain);  // a malformed tail leaves the well-formed prefix usable
    for (const auto& c : chain)
        if (c.id == id) return c.offset;
    return std::nullopt;
}

ExtCapabilityImage dsn_capability(uint64_t serial) {
    ExtCapabilityImage img{ext_cap_id::kDeviceSerialNumber, 1, CapabilityImage::zeroed(0, 12)};
    img.body.set(0x04, 4, static_cast<uint32_t>(serial));
    img.body.set(0x08, 4, static_cast<uint32_t>(serial >> 32));
    return img;
}

Result<ExtCapabilityImage> vendor_specific_capability(const VendorSpecificSettings& s) {
    const size_t len = 8 + s.data.size();
    if (s.vsec_revision > 0xF)
        return failf("vendor-specific capability {:#06x}: revision {} does not fit 4 bits",
                     s.vsec_id, s.vsec_revision);
    if (len > 0xFFC || len % 4 != 0)
        return failf(
            "vendor-specific capability {:#06x}: {} data bytes; the length must be a multiple "
            "of 4 up to 0xffc with the 8 header bytes",
            s.vsec_id, s.data.size());
    for (const auto* m : {&s.wmask, &s.w1c})
        if (!m->empty() && m->size() != s.data.size())
            return failf(
                "vendor-specific capability {:#06x}: a mask has {} bytes for {} data bytes",
                s.vsec_id, m->size(), s.data.size());
    ExtCapabilityImage img{ext_cap_id::kVendorSpecific, 1, CapabilityImage::zeroed(0, len)};
    img.body.set(0x04, 4,
                 uint32_t{s.vsec_id} | (uint32_t{s.vsec_revision} << 16) |
                     (static_cast<uint32_t>(len) << 20));
    for (size_t i = 0; i < s.data.size(); ++i) {
        img.body.bytes[8 + i] = s.data[i];
        if (!s.wmask.empty()) img.body.wmask[8 + i] = s.wmask[i];
        if (!s.w1c.empty()) img.body.w1c[8 + i] = s.w1c[i];
    }
    for (size_t i = 8; i < len; ++i)
        if (img.body.wmask[i] & img.body.w1c[i])
            return failf("vendor-specific capability {:#06x}: byte {:#x} is both RW and RW1C",
                         s.vsec_id, i);
    return img;
}

ExtCapabilityImage aer_capability() {
    // Uncorrectable: Data Link Protocol 4, Poisoned TLP 12, Flow Control Protocol 13,
    // Completion Timeout 14, Completer Abort 15, Unexpected Completion 16, Receiver Overflow 17,
    // Malformed TLP 18, ECRC 19, Unsupported Request 20.
    constexpr uint32_t kUncorrectable = 0x001F'F010;
    // Correctable: Receiver Error 0, Bad TLP 6, Bad DLLP 7, REPLAY_NUM Rollover 8, Replay Timer
    // Timeout 12, Advisory Non-Fatal 13.
    constexpr uint32_t kCorrectable = 0x0000'31C1;
    ExtCapabilityImage img{ext_cap_id::kAer, 2, CapabilityImage::zeroed(0, 0x48)};
    img.body.set(0x04, 4, 0, {.w1c = kUncorrectable});              // status
    img.body.set(0x08, 4, 0, {.wmask = kUncorrectable});            // mask
    img.body.set(0x0C, 4, 0x0006'2010, {.wmask = kUncorrectable});  // severity
    img.body.set(0x10, 4, 0, {.w1c = kCorrectable});                // status
    img.body.set(0x14, 4, 0x0000'2000, {.wmask = kCorrectable});    // mask
    return img;
}

}  // namespace potemkin::pci
