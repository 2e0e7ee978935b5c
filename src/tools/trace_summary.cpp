#include "tools/trace_summary.hpp"

#include <algorithm>
#include <map>
#include <tuple>

namespace potemkin::tools {

std::optional<uint64_t> nearest_rank(const std::vector<uint64_t>& sorted, unsigned percent) {
    if (sorted.empty()) return std::nullopt;
    const uint64_t n = sorted.size();
    uint64_t rank = (uint64_t{percent} * n + 99) / 100;  // ceil(p * n / 100)
    rank = std::clamp<uint64_t>(rank, 1, n);
    return sorted[rank - 1];
}

namespace {

std::string device_name(const TraceRecord& r) {
    return r.device.empty() ? "-" : r.device;
}

std::string region_name(const TraceRecord& r) {
    std::string s(kind_name(r.kind));
    if (!r.region.empty()) s += " " + r.region;
    return s;
}

}  // namespace

TraceSummary summarize(const Trace& trace) {
    struct Acc {
        RegionSummary s;
        std::vector<uint64_t> durations;
    };
    std::map<std::pair<std::string, std::string>, Acc> regions;
    std::map<std::string, DeviceEvents> events;
    for (const TraceRecord& r : trace.records) {
        const std::string dev = device_name(r);
        if (r.is_access()) {
            Acc& a = regions[{dev, region_name(r)}];
            (r.op == "W" ? a.s.writes : a.s.reads)++;
            a.s.bytes += r.size.value_or(0);
            if (r.dur_ns) a.durations.push_back(*r.dur_ns);
            continue;
        }
        if (r.kind == RecordKind::note) continue;
        DeviceEvents& e = events[dev];
        switch (r.kind) {
            case RecordKind::intx:
                (r.op == "assert" ? e.intx_asserts : e.intx_deasserts)++;
                break;
            case RecordKind::msi:
            case RecordKind::msix:
                (r.op == "send" ? e.msi_sent : e.msi_dropped)++;
                break;
            case RecordKind::dma:
                if (!r.detail.empty() && r.detail.rfind("refused", 0) == 0) {
                    ++e.dma_refused;
                    break;
                }
                (r.op == "W" ? e.dma_writes : e.dma_reads)++;
                e.dma_bytes += r.size.value_or(0);
                break;
            case RecordKind::link:
                (r.op == "lost" ? e.link_lost : e.link_back)++;
                break;
            default:
                break;
        }
    }
    TraceSummary out;
    for (auto& [key, a] : regions) {
        a.s.device = key.first;
        a.s.region = key.second;
        std::sort(a.durations.begin(), a.durations.end());
        a.s.p50 = nearest_rank(a.durations, 50);
        a.s.p99 = nearest_rank(a.durations, 99);
        if (!a.durations.empty()) a.s.max = a.durations.back();
        out.regions.push_back(std::move(a.s));
    }
    for (auto& [dev, e] : events) {
        e.device = dev;
        out.devices.push_back(e);
    }
    return out;
}

std::vector<std::pair<std::string, std::vector<uint64_t>>> latencies_by_device(const Trace& t) {
    std::map<std::string, std::vector<uint64_t>> by;
    for (const TraceRecord& r : t.records)
        if (r.is_access() && r.dur_ns) by[device_name(r)].push_back(*r.dur_ns);
    std::vector<std::pair<std::string, std::vector<uint64_t>>> out;
    for (auto& [dev, v] : by) {
        std::sort(v.begin(), v.end());
        out.emplace_back(dev, std::move(v));
    }
    return out;
}

namespace {

// A plain text table: the first row is the header; numbers right-aligned.
std::string table(const std::vector<std::vector<std::string>>& rows, size_t left_columns) {
    std::vector<size_t> width;
    for (const auto& row : rows)
        for (size_t i = 0; i < row.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], row[i].size());
        }
    std::string out;
    for (const auto& row : rows) {
        std::string line;
        for (size_t i = 0; i < row.size(); ++i) {
            if (i) line += "  ";
            const std::string pad(width[i] - row[i].size(), ' ');
            line += i < left_columns ? row[i] + pad : pad + row[i];
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string opt(std::optional<uint64_t> v) {
    return v ? std::to_string(*v) : "-";
}

}  // namespace

std::string format_summary(const TraceSummary& s) {
    std::vector<std::vector<std::string>> rows{
        {"device", "region", "reads", "writes", "bytes", "p50_ns", "p99_ns", "max_ns"}};
    for (const RegionSummary& r : s.regions)
        rows.push_back({r.device, r.region, std::to_string(r.reads), std::to_string(r.writes),
                        std::to_string(r.bytes), opt(r.p50), opt(r.p99), opt(r.max)});
    std::string out = "Accesses (latency: nearest-rank percentiles of dur_ns)\n" + table(rows, 2);
    if (s.devices.empty()) return out;
    std::vector<std::vector<std::string>> ev{{"device", "intx_up", "intx_down", "msi_sent",
                                              "msi_dropped", "dma_reads", "dma_writes", "dma_bytes",
                                              "dma_refused", "lost", "back"}};
    for (const DeviceEvents& e : s.devices)
        ev.push_back({e.device, std::to_string(e.intx_asserts), std::to_string(e.intx_deasserts),
                      std::to_string(e.msi_sent), std::to_string(e.msi_dropped),
                      std::to_string(e.dma_reads), std::to_string(e.dma_writes),
                      std::to_string(e.dma_bytes), std::to_string(e.dma_refused),
                      std::to_string(e.link_lost), std::to_string(e.link_back)});
    out += "\nDevice events\n" + table(ev, 1);
    return out;
}

}  // namespace potemkin::tools
