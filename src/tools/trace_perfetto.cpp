#include "tools/trace_perfetto.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

namespace potemkin::tools {

namespace {

constexpr int kDevicesPid = 1;
constexpr int kVcpusPid = 2;

// Microseconds, the format's unit, keeping the nanoseconds as the fraction.
double us(uint64_t ns) {
    return static_cast<double>(ns) / 1000.0;
}

std::string hex(uint64_t v) {
    return fmt::format("{:#x}", v);
}

nlohmann::json metadata(const char* what, int pid, int tid, const std::string& name) {
    return {{"name", what}, {"ph", "M"},  {"ts", 0},
            {"pid", pid},   {"tid", tid}, {"args", {{"name", name}}}};
}

std::string device_label(const TraceRecord& r) {
    return r.device.empty() ? "unassigned" : r.device;
}

nlohmann::json access_args(const TraceRecord& r) {
    nlohmann::json a{{"space", kind_name(r.kind)}, {"address", hex(r.address.value_or(0))},
                     {"size", r.size.value_or(0)}, {"value", hex(r.value.value_or(0))},
                     {"device", device_label(r)},  {"line", r.line}};
    if (r.vcpu) a["vcpu"] = *r.vcpu;
    if (!r.region.empty()) a["region"] = r.region;
    if (r.dur_ns) a["dur_ns"] = *r.dur_ns;
    return a;
}

// Name and arguments of an instant event.
std::pair<std::string, nlohmann::json> instant(const TraceRecord& r) {
    nlohmann::json a{{"line", r.line}};
    if (!r.detail.empty()) a["detail"] = r.detail;
    switch (r.kind) {
        case RecordKind::intx:
            if (!r.region.empty()) a["line_driven"] = r.region;
            return {"INTx " + r.op, a};
        case RecordKind::msi:
        case RecordKind::msix: {
            const std::string k = r.kind == RecordKind::msi ? "MSI" : "MSI-X";
            if (!r.region.empty()) a["vector"] = r.region;
            if (r.address) a["address"] = hex(*r.address);
            if (r.value) a["data"] = hex(*r.value);
            return {fmt::format("{} {} {}", k, r.region, r.op == "send" ? "sent" : "dropped"), a};
        }
        case RecordKind::dma:
            a["guest_address"] = hex(r.address.value_or(0));
            a["length"] = r.size.value_or(0);
            return {fmt::format("DMA {} {} B", r.op == "W" ? "to guest" : "from guest",
                                r.size.value_or(0)),
                    a};
        case RecordKind::link:
            return {r.op == "lost" ? "link lost" : "link back", a};
        default:
            return {"note", a};
    }
}

// The accesses of one device by start time, to find the one an event happened during.
class AccessIndex {
  public:
    explicit AccessIndex(const Trace& t) {
        for (const TraceRecord& r : t.records)
            if (r.is_access() && r.dur_ns && r.vcpu) by_device_[r.device].push_back(&r);
        for (auto& [d, v] : by_device_)
            std::stable_sort(v.begin(), v.end(), [](const TraceRecord* a, const TraceRecord* b) {
                return a->time_ns < b->time_ns;
            });
    }
    // The latest-starting access of `r`'s device whose [start, start + dur] holds r's time
    // (an interrupt a register write raised, the DMA it started); null when there is none, as
    // for events an out-of-process device sends between accesses.
    const TraceRecord* during(const TraceRecord& r) const {
        auto it = by_device_.find(r.device);
        if (it == by_device_.end()) return nullptr;
        const auto& v = it->second;
        auto pos =
            std::upper_bound(v.begin(), v.end(), r.time_ns,
                             [](uint64_t t, const TraceRecord* a) { return t < a->time_ns; });
        // Accesses nest only when a device's handler makes one: a few steps back suffice.
        for (int steps = 0; pos != v.begin() && steps < kLookBack; ++steps) {
            --pos;
            if ((*pos)->time_ns + *(*pos)->dur_ns >= r.time_ns) return *pos;
        }
        return nullptr;
    }

  private:
    static constexpr int kLookBack = 8;
    std::map<std::string, std::vector<const TraceRecord*>> by_device_;
};

bool has_cause(RecordKind k) {
    return k == RecordKind::intx || k == RecordKind::msi || k == RecordKind::msix ||
           k == RecordKind::dma;
}

// Events go out one at a time: a trace of millions of accesses never becomes one JSON tree.
class EventWriter {
  public:
    explicit EventWriter(const TextSink& out) : out_(out) {}
    void add(const nlohmann::json& event) {
        out_(first_ ? "\n" : ",\n");
        first_ = false;
        // Names and notes come from the file: invalid UTF-8 is replaced, not fatal.
        out_(event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }

  private:
    const TextSink& out_;
    bool first_ = true;
};

}  // namespace

void write_perfetto(const Trace& trace, const std::string& source_name, const TextSink& out) {
    std::set<std::string> device_names;
    std::set<unsigned> vcpus;
    for (const TraceRecord& r : trace.records) {
        device_names.insert(device_label(r));
        if (r.is_access() && r.vcpu) vcpus.insert(*r.vcpu);
    }
    std::map<std::string, int> device_tid;
    const nlohmann::json other{{"source", source_name},
                               {"format", fmt::format("potemkin trace v{}", trace.version)}};
    out(R"({"displayTimeUnit":"ns","otherData":)");
    out(other.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    out(R"(,"traceEvents":[)");
    EventWriter events(out);
    events.add(metadata("process_name", kDevicesPid, 0, "devices"));
    events.add(metadata("process_name", kVcpusPid, 0, "vCPUs"));
    for (const std::string& d : device_names) {
        const int tid = static_cast<int>(device_tid.size()) + 1;
        device_tid[d] = tid;
        events.add(metadata("thread_name", kDevicesPid, tid, d));
    }
    for (unsigned v : vcpus)
        events.add(
            metadata("thread_name", kVcpusPid, static_cast<int>(v) + 1, fmt::format("vCPU {}", v)));

    const AccessIndex accesses(trace);
    uint64_t flow_id = 0;
    for (const TraceRecord& r : trace.records) {
        const int dev_tid = device_tid[device_label(r)];
        if (r.is_access()) {
            const double dur = us(r.dur_ns.value_or(0));
            const nlohmann::json args = access_args(r);
            const std::string what = fmt::format("{} {}", r.op, hex(r.address.value_or(0)));
            events.add({{"name", what},
                        {"cat", kind_name(r.kind)},
                        {"ph", "X"},
                        {"ts", us(r.time_ns)},
                        {"dur", dur},
                        {"pid", kDevicesPid},
                        {"tid", dev_tid},
                        {"args", args}});
            if (r.vcpu)
                events.add({{"name", device_label(r) + " " + what},
                            {"cat", kind_name(r.kind)},
                            {"ph", "X"},
                            {"ts", us(r.time_ns)},
                            {"dur", dur},
                            {"pid", kVcpusPid},
                            {"tid", static_cast<int>(*r.vcpu) + 1},
                            {"args", args}});
            continue;
        }
        auto [name, args] = instant(r);
        if (r.kind == RecordKind::note && !r.detail.empty()) name = "note: " + r.detail;
        // An interrupt or DMA that happened while a vCPU's access to the device ran: a flow
        // arrow from that access on the vCPU's track to the device's track at the event.
        if (const TraceRecord* cause = has_cause(r.kind) ? accesses.during(r) : nullptr) {
            args["during_access_line"] = cause->line;
            ++flow_id;
            events.add({{"name", "caused"},
                        {"cat", "cause"},
                        {"ph", "s"},
                        {"id", flow_id},
                        {"ts", us(cause->time_ns)},
                        {"pid", kVcpusPid},
                        {"tid", static_cast<int>(*cause->vcpu) + 1}});
            events.add({{"name", "caused"},
                        {"cat", "cause"},
                        {"ph", "f"},
                        {"bp", "e"},
                        {"id", flow_id},
                        {"ts", us(r.time_ns)},
                        {"pid", kDevicesPid},
                        {"tid", dev_tid}});
        }
        events.add({{"name", name},
                    {"cat", kind_name(r.kind)},
                    {"ph", "i"},
                    // Link events concern the whole timeline: a global marker.
                    {"s", r.kind == RecordKind::link ? "g" : "t"},
                    {"ts", us(r.time_ns)},
                    {"pid", kDevicesPid},
                    {"tid", dev_tid},
                    {"args", args}});
    }
    out("\n]}\n");
}

}  // namespace potemkin::tools
