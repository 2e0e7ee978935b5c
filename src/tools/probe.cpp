#include "tools/probe.hpp"

#include <cstdio>

#include "hostdev/host_device.hpp"
#include "pci/capabilities.hpp"
#include "pci/config_space.hpp"
#include "pci/express.hpp"
#include "pci/registers.hpp"
#include "tools/pci_ids.hpp"

namespace potemkin::tools {
namespace {

// The probe is a client with no guest: it refuses DMA and only reports interrupts.
class ProbeEvents final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t a, std::span<uint8_t>) override {
        return failf("probe: no guest memory (DMA read at {:#x})", a);
    }
    Result<void> dma_write(uint64_t a, std::span<const uint8_t>) override {
        return failf("probe: no guest memory (DMA write at {:#x})", a);
    }
    void disconnected(std::string_view why) override {
        std::fprintf(stderr, "potemkin probe: disconnected: %.*s\n", int(why.size()), why.data());
    }
};

std::string human_size(uint64_t s) {
    const char* units[] = {"", "K", "M", "G", "T"};
    int u = 0;
    while (s >= 1024 && s % 1024 == 0 && u < 4) s /= 1024, ++u;
    return fmt::format("{}{}", s, units[u]);
}

std::string or_unknown(const std::string& name, const char* what, unsigned id) {
    return name.empty() ? fmt::format("{} {:04x}", what, id) : name;
}

const char* kind_name(const hostdev::RegionInfo& r) {
    if (!r.bar_kind) return r.index == hostdev::kConfigRegion ? "Config space" : "Device-specific";
    switch (*r.bar_kind) {
        case pci::BarKind::io:
            return "I/O ports";
        case pci::BarKind::mem32:
            return r.prefetchable ? "Memory (32-bit, prefetchable)"
                                  : "Memory (32-bit, non-prefetchable)";
        case pci::BarKind::mem24:
            return "Memory (below 1M)";
        case pci::BarKind::mem64:
            return r.prefetchable ? "Memory (64-bit, prefetchable)"
                                  : "Memory (64-bit, non-prefetchable)";
        case pci::BarKind::rom:
            return "Expansion ROM";
    }
    return "?";
}

const char* cap_name(uint8_t id) {
    switch (id) {
        case pci::cap_id::kPowerManagement:
            return "Power Management";
        case pci::cap_id::kMsi:
            return "MSI";
        case pci::cap_id::kVendorSpecific:
            return "Vendor Specific";
        case pci::cap_id::kPciExpress:
            return "Express";
        case pci::cap_id::kMsix:
            return "MSI-X";
        default:
            return "Unknown";
    }
}

const char* flag(bool on) {
    return on ? "+" : "-";
}

// The PCI Express capability decoded, as lspci -vv prints it (PCIe Base Spec section 7.5.3).
void print_express(const pci::ConfigSpace& cs, uint8_t at) {
    const pci::PcieState st = pci::read_pcie(cs, at);
    fmt::print(" (v{}) {}\n", st.version, pci::port_type_name(st.type));
    fmt::print("\t\tDevCap:\tMaxPayload {} bytes, ExtTag{}, FLReset{}\n", st.max_payload_supported,
               flag(st.extended_tag), flag(st.flr));
    const uint32_t ctl = st.device_control, sta = st.device_status;
    fmt::print(
        "\t\tDevCtl:\tCorrErr{} NonFatalErr{} FatalErr{} UnsupReq{}\n\t\t\tRlxdOrd{} ExtTag{} "
        "NoSnoop{}\n\t\t\tMaxPayload {} bytes, MaxReadReq {} bytes\n",
        flag(ctl & pci::pcie::kDevCtlCorrErrEnable),
        flag(ctl & pci::pcie::kDevCtlNonFatalErrEnable),
        flag(ctl & pci::pcie::kDevCtlFatalErrEnable), flag(ctl & pci::pcie::kDevCtlUrEnable),
        flag(ctl & pci::pcie::kDevCtlRelaxedOrdering), flag(ctl & pci::pcie::kDevCtlExtTag),
        flag(ctl & pci::pcie::kDevCtlNoSnoop), st.max_payload, st.max_read_request);
    fmt::print("\t\tDevSta:\tCorrErr{} NonFatalErr{} FatalErr{} UnsupReq{} TransPend{}\n",
               flag(sta & pci::pcie::kDevStaCorrErr), flag(sta & pci::pcie::kDevStaNonFatalErr),
               flag(sta & pci::pcie::kDevStaFatalErr), flag(sta & pci::pcie::kDevStaUnsupportedReq),
               flag(sta & pci::pcie::kDevStaTransactionsPending));
    if (st.type == pci::PortType::rc_integrated_endpoint) return;  // no link registers
    fmt::print("\t\tLnkCap:\tSpeed {}, Width x{}, ASPM {}\n",
               pci::link_speed_name(st.link_speed_max), st.link_width_max,
               st.aspm_support == 0 ? "not supported" : "supported");
    fmt::print("\t\tLnkSta:\tSpeed {}, Width x{}\n", pci::link_speed_name(st.link_speed),
               st.link_width);
}

// Every extended capability from 0x100, as lspci -vv lists them.
void print_extended(const pci::ConfigSpace& cs) {
    auto chain = pci::walk_extended_capabilities(cs);
    if (!chain) {
        fmt::print("\tCapabilities: [100] malformed extended list: {}\n", chain.error().message);
        return;
    }
    for (const auto& c : *chain) {
        const std::string name = pci::ext_cap_name(c.id);
        fmt::print("\tCapabilities: [{:03x} v{}] {}", c.offset, c.version,
                   name.empty() ? fmt::format("Extended Capability ID {:#x}", c.id) : name);
        if (c.id == pci::ext_cap_id::kDeviceSerialNumber) {
            const uint32_t lo = cs.read(c.offset + 4u, 4), hi = cs.read(c.offset + 8u, 4);
            fmt::print(" {:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}", hi >> 24,
                       (hi >> 16) & 0xFF, (hi >> 8) & 0xFF, hi & 0xFF, lo >> 24, (lo >> 16) & 0xFF,
                       (lo >> 8) & 0xFF, lo & 0xFF);
        } else if (c.id == pci::ext_cap_id::kVendorSpecific) {
            const uint32_t h = cs.read(c.offset + 4u, 4);
            fmt::print(": ID={:04x} Rev={} Len={:03x}", h & 0xFFFF, (h >> 16) & 0xF, h >> 20);
        }
        fmt::print("\n");
    }
}

}  // namespace

int probe_command(const std::string& url) {
    ProbeEvents events;
    auto dev = hostdev::TransportRegistry::builtin().open(url, hostdev::OpenContext{&events});
    if (!dev) {
        std::fprintf(stderr, "potemkin probe: %s\n", dev.error().message.c_str());
        return 1;
    }
    auto& d = **dev;
    auto info = d.info();
    if (!info) {
        std::fprintf(stderr, "potemkin probe: %s: %s\n", url.c_str(), info.error().message.c_str());
        return 1;
    }
    // A PCI Express function's config region has 4 KiB: the extended capabilities are there.
    const auto config_info = d.region_info(hostdev::kConfigRegion);
    const bool express = config_info && config_info->size >= 4096;
    std::vector<uint8_t> raw(express ? 4096 : 256);
    if (auto r = d.config_read(0, raw); !r) {
        std::fprintf(stderr, "potemkin probe: %s: config read: %s\n", url.c_str(),
                     r.error().message.c_str());
        return 1;
    }
    pci::ConfigSpace cs(express ? pci::SpaceSize::express : pci::SpaceSize::conventional);
    for (uint32_t i = 0; i < raw.size(); ++i) {
        if (auto r = cs.store(i, 1, raw[i]); !r) {
            std::fprintf(stderr, "potemkin probe: %s: %s\n", url.c_str(),
                         r.error().message.c_str());
            return 1;
        }
    }
    const PciIds ids = PciIds::load_system();
    const uint16_t vendor = static_cast<uint16_t>(cs.read(pci::reg::kVendorId, 2));
    const uint16_t device = static_cast<uint16_t>(cs.read(pci::reg::kDeviceId, 2));
    const uint8_t base = static_cast<uint8_t>(cs.read(pci::reg::kClassCode + 2, 1)),
                  sub = static_cast<uint8_t>(cs.read(pci::reg::kClassCode + 1, 1));

    fmt::print("{}: {} {}: {} {} (rev {:02x})\n", url,
               or_unknown(ids.class_name(base, sub), "Class", unsigned(base) << 8 | sub),
               fmt::format("[{:02x}{:02x}]", base, sub),
               or_unknown(ids.vendor(vendor), "Vendor", vendor),
               or_unknown(ids.device(vendor, device), "Device", device),
               cs.read(pci::reg::kRevisionId, 1));
    fmt::print(
        "\tIDs: {:04x}:{:04x}, subsystem {:04x}:{:04x}, prog-if {:02x}, header type {:02x}\n",
        vendor, device, cs.read(pci::reg::kSubsystemVendorId, 2),
        cs.read(pci::reg::kSubsystemId, 2), cs.read(pci::reg::kClassCode, 1),
        cs.read(pci::reg::kHeaderType, 1));
    fmt::print("\tDevice: {} ({} regions, {} interrupt types{})\n", info->name, info->num_regions,
               info->num_irqs, info->reset_supported ? ", reset" : "");
    const uint8_t pin = static_cast<uint8_t>(cs.read(pci::reg::kInterruptPin, 1));
    if (pin >= 1 && pin <= 4) fmt::print("\tInterrupt: pin {}\n", char('A' + pin - 1));

    for (uint32_t i = 0; i < hostdev::kPciRegionCount; ++i) {
        auto ri = d.region_info(i);
        if (!ri) {
            fmt::print("\tRegion {}: error: {}\n", i, ri.error().message);
            continue;
        }
        if (!ri->present()) continue;
        std::string flags =
            fmt::format("{}{}", ri->readable ? "read " : "", ri->writable ? "write" : "");
        std::string label = i == hostdev::kRomRegion      ? "Expansion ROM"
                            : i == hostdev::kConfigRegion ? "Config"
                                                          : fmt::format("Region {}", i);
        fmt::print("\t{}: {} [size={}] [{}]", label, kind_name(*ri), human_size(ri->size), flags);
        if (!ri->mmap_areas.empty()) {
            fmt::print(" mmap:");
            for (const auto& a : ri->mmap_areas) fmt::print(" {:#x}+{:#x}", a.offset, a.size);
        }
        fmt::print("\n");
    }

    auto caps = pci::walk_capabilities(cs);
    if (!caps) {
        fmt::print("\tCapabilities: malformed list: {}\n", caps.error().message);
    } else {
        for (const auto& c : *caps) {
            fmt::print("\tCapabilities: [{:02x}] {}", c.offset, cap_name(c.id));
            if (c.id == pci::cap_id::kMsi) {
                auto m = pci::read_msi(cs, c.offset);
                fmt::print(": Enable{} Count={}/{} 64bit{} Maskable{}", m.enabled ? '+' : '-',
                           m.vectors_enabled, m.vectors_capable, m.address64 ? '+' : '-',
                           m.per_vector_masking ? '+' : '-');
            } else if (c.id == pci::cap_id::kMsix) {
                auto m = pci::read_msix(cs, c.offset);
                fmt::print(
                    ": Enable{} Count={} Masked{}\n\t\tVector table: BAR={} "
                    "offset={:08x}\n\t\tPBA: BAR={} offset={:08x}",
                    m.enabled ? '+' : '-', m.vectors, m.function_masked ? '+' : '-', m.table_bir,
                    m.table_offset, m.pba_bir, m.pba_offset);
            } else if (c.id == pci::cap_id::kPciExpress) {
                print_express(cs, c.offset);
                continue;
            }
            fmt::print("\n");
        }
    }
    if (express) print_extended(cs);
    d.close();
    return 0;
}

}  // namespace potemkin::tools
