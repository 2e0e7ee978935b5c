#include "tools/probe.hpp"

#include <cstdio>

#include "hostdev/host_device.hpp"
#include "pci/capabilities.hpp"
#include "pci/config_space.hpp"
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
    std::vector<uint8_t> raw(256);
    if (auto r = d.config_read(0, raw); !r) {
        std::fprintf(stderr, "potemkin probe: %s: config read: %s\n", url.c_str(),
                     r.error().message.c_str());
        return 1;
    }
    pci::ConfigSpace cs;
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
            }
            fmt::print("\n");
        }
    }
    d.close();
    return 0;
}

}  // namespace potemkin::tools
