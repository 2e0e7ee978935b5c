// `potemkin trace FILE --summary`: per device and region, counts, bytes and latency
// percentiles of the accesses; per device, the interrupts, DMA and link events
// (docs/trace.md, "Summary").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/trace_file.hpp"

namespace potemkin::tools {

// Nearest-rank percentile of sorted values: the smallest value with at least p% of the values
// at or below it, i.e. sorted[ceil(p/100 * n) - 1]. nullopt when `sorted` is empty.
std::optional<uint64_t> nearest_rank(const std::vector<uint64_t>& sorted, unsigned percent);

// Accesses to one region of one device.
struct RegionSummary {
    std::string device;  // "-" for unassigned space
    std::string region;  // "mmio 0xfebf0000+0x1000", "io 0xcf8+0x4"; just the space in v1
    uint64_t reads = 0, writes = 0;
    uint64_t bytes = 0;                     // sum of access sizes
    std::optional<uint64_t> p50, p99, max;  // ns; nullopt without durations (v1)
};

// What one device did besides answering accesses.
struct DeviceEvents {
    std::string device;
    uint64_t intx_asserts = 0, intx_deasserts = 0;
    uint64_t msi_sent = 0, msi_dropped = 0;  // MSI and MSI-X
    uint64_t dma_reads = 0, dma_writes = 0, dma_bytes = 0, dma_refused = 0;
    uint64_t link_lost = 0, link_back = 0;
};

struct TraceSummary {
    std::vector<RegionSummary> regions;  // by device, then region
    std::vector<DeviceEvents> devices;   // devices with at least one event, by name
};

TraceSummary summarize(const Trace& trace);
// The table `potemkin trace --summary` prints.
std::string format_summary(const TraceSummary& s);

// Each device's access durations (ns), sorted; devices by name ("-" for unassigned).
std::vector<std::pair<std::string, std::vector<uint64_t>>> latencies_by_device(const Trace& t);

}  // namespace potemkin::tools
