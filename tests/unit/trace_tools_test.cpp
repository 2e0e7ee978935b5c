// The trace reader and its outputs (src/tools/trace_*.hpp, docs/trace.md): a small trace with
// hand-computed numbers, the Perfetto JSON parsed back and checked per event phase, the SVG
// parsed as XML, v1 traces, and malformed files named by line and column.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "tools/trace_file.hpp"
#include "tools/trace_perfetto.hpp"
#include "tools/trace_summary.hpp"
#include "tools/trace_svg.hpp"

namespace potemkin::tools {
namespace {

// Three edu0 MMIO accesses of 100, 300 and 200 ns, one edu0 port write of 50 ns, one read of
// unassigned space, and one of each device event.
constexpr const char* kTrace =
    "# potemkin trace v2\n"
    "# time_ns\tdur_ns\tvcpu\tkind\top\tdevice\taddress\tsize\tvalue\tregion\tdetail\n"
    "1000\t100\t0\tmmio\tR\tedu0\t0xfea00000\t4\t0x10000ed\t0xfea00000+0x100000\t-\n"
    "2000\t300\t0\tmmio\tW\tedu0\t0xfea00004\t4\t0x1\t0xfea00000+0x100000\t-\n"
    "2100\t-\t-\tmsi\tsend\tedu0\t0xfee00000\t4\t0x4041\tvector0\t-\n"
    "3000\t200\t1\tmmio\tR\tedu0\t0xfea00004\t4\t0xfffffffe\t0xfea00000+0x100000\t-\n"
    "4000\t50\t0\tio\tW\tedu0\t0xc000\t2\t0x1\t0xc000+0x40\t-\n"
    "5000\t0\t0\tmmio\tR\t-\t0xe0000000\t4\t0xffffffff\t-\t-\n"
    "6000\t-\t-\tdma\tW\tedu0\t0x10000\t4096\t-\t-\t-\n"
    "6500\t-\t-\tdma\tR\tedu0\t0x20000\t16\t-\t-\trefused: bus mastering is off\n"
    "7000\t-\t-\tintx\tassert\tmb0\t-\t-\t-\tline11\t-\n"
    "7100\t-\t-\tlink\tlost\tmb0\t-\t-\t-\t-\tsocket closed\n"
    "7200\t-\t-\tlink\tback\tmb0\t-\t-\t-\t-\t-\n"
    "7300\t-\t0\tnote\t-\tspy\t-\t-\t-\t-\tIN 0x3f8 size 1 -> 0x41\n";

Trace parsed(const char* text) {
    auto t = parse_trace(text, "t.tsv");
    EXPECT_TRUE(t) << t.error().message;
    return t ? *t : Trace{};
}

std::string parse_error(const std::string& text) {
    auto t = parse_trace(text, "t.tsv");
    return t ? "parsed" : t.error().message;
}

TEST(TraceFile, ReadsEveryRecordKindOfV2) {
    const Trace t = parsed(kTrace);
    EXPECT_EQ(t.version, 2u);
    ASSERT_EQ(t.records.size(), 12u);
    const TraceRecord& w = t.records[1];
    EXPECT_EQ(w.line, 4u);
    EXPECT_EQ(w.kind, RecordKind::mmio);
    EXPECT_EQ(w.op, "W");
    EXPECT_EQ(w.dur_ns, 300u);
    EXPECT_EQ(w.address, 0xfea00004u);
    EXPECT_EQ(w.region, "0xfea00000+0x100000");
    const TraceRecord& msi = t.records[2];
    EXPECT_EQ(msi.kind, RecordKind::msi);
    EXPECT_FALSE(msi.dur_ns);
    EXPECT_FALSE(msi.vcpu);
    EXPECT_EQ(msi.value, 0x4041u);
    EXPECT_EQ(t.records[5].device, "");  // unassigned
    EXPECT_EQ(t.records[11].detail, "IN 0x3f8 size 1 -> 0x41");
}

TEST(TraceFile, ReadsV1WithoutDurations) {
    const Trace t = parsed(
        "# potemkin trace v1\n# time_ns\tvcpu\tspace\top\taddress\tsize\tvalue\tdevice\n"
        "1834021\t0\tio\tW\t0xe9\t1\t0x68\tconsole\n"
        "1902113\t0\tmmio\tR\t0xe0000000\t4\t0xffffffff\t-\n"
        "2001002\t0\tnote\t-\t-\t-\t-\tspy\tIN 0x3f8 size 1 -> 0x41\n");
    EXPECT_EQ(t.version, 1u);
    ASSERT_EQ(t.records.size(), 3u);
    EXPECT_EQ(t.records[0].kind, RecordKind::io);
    EXPECT_FALSE(t.records[0].dur_ns);
    EXPECT_EQ(t.records[0].device, "console");
    EXPECT_EQ(t.records[2].kind, RecordKind::note);
    EXPECT_EQ(t.records[2].detail, "IN 0x3f8 size 1 -> 0x41");
    const TraceSummary s = summarize(t);
    ASSERT_EQ(s.regions.size(), 2u);
    EXPECT_EQ(s.regions[0].device, "-");
    EXPECT_FALSE(s.regions[0].p50);  // no durations in v1
}

TEST(TraceFile, MalformedFilesNameTheLineAndColumn) {
    const std::string head =
        "# potemkin trace v2\n"
        "# time_ns\tdur_ns\tvcpu\tkind\top\tdevice\taddress\tsize\tvalue\tregion\tdetail\n";
    EXPECT_EQ(parse_error(""), "t.tsv: empty file, not a potemkin trace");
    EXPECT_EQ(parse_error("time\tvcpu\n"),
              "t.tsv:1: not a potemkin trace: the first line is not '# potemkin trace v2' "
              "(docs/trace.md)");
    EXPECT_EQ(parse_error("# potemkin trace v3\n"),
              "t.tsv:1: trace format version '3' is not one this potemkin reads (v1, v2); a "
              "newer potemkin wrote it?");
    EXPECT_EQ(parse_error(head + "12x\t1\t0\tio\tR\td\t0x1\t1\t0x0\t-\t-\n"),
              "t.tsv:3: column 1 (time_ns): '12x' is not a decimal number");
    EXPECT_EQ(parse_error(head + "12\t1\t0\tio\tR\td\t0x1\t1\t0x0\t-\n"),
              "t.tsv:3: 10 tab-separated columns, a v2 record has 11");
    EXPECT_EQ(parse_error(head + "1\t1\t0\tcpu\tR\td\t0x1\t1\t0x0\t-\t-\n"),
              "t.tsv:3: column 4 (kind): 'cpu' is not one of 'io', 'mmio', 'intx', 'msi', "
              "'msix', 'dma', 'link', 'note'");
    EXPECT_EQ(parse_error(head + "1\t1\t0\tio\tX\td\t0x1\t1\t0x0\t-\t-\n"),
              "t.tsv:3: column 5 (op): 'X' is not one of 'R', 'W'");
    EXPECT_EQ(parse_error(head + "1\t1\t0\tio\tR\td\t17\t1\t0x0\t-\t-\n"),
              "t.tsv:3: column 7 (address): '17' is not a 0x-prefixed hexadecimal number");
    EXPECT_EQ(parse_error(head + "1\t1\t0\tio\tR\td\t0x1\t16\t0x0\t-\t-\n"),
              "t.tsv:3: column 8 (size): an access is 1 to 8 bytes");
    EXPECT_EQ(parse_error(head + "1\t-\t0\tmmio\tR\td\t0x1\t4\t0x0\t-\t-\n"),
              "t.tsv:3: column 2 (dur_ns): a mmio record needs a value here, not '-'");
    EXPECT_EQ(parse_error(head + "1\t1\t0\tio\tR\td\t0x1\t1\t0x1ffffffffffffffff\t-\t-\n"),
              "t.tsv:3: column 9 (value): '0x1ffffffffffffffff' is not a hexadecimal number of "
              "at most 64 bits");
    EXPECT_EQ(parse_error(head + "1\t-\t-\tdma\tW\td\t-\t4\t-\t-\t-\n"),
              "t.tsv:3: column 7 (address): a dma record needs a value here, not '-'");
    EXPECT_EQ(parse_error(std::string("# potemkin trace v1\n1\t0\tio\tR\t0x1\t1\t0x0\n")),
              "t.tsv:2: 7 tab-separated columns, a v1 record has 8 (9 for a note)");
}

TEST(TraceSummary, NearestRankPercentiles) {
    std::vector<uint64_t> ten;
    for (uint64_t v = 10; v <= 100; v += 10) ten.push_back(v);
    EXPECT_EQ(nearest_rank(ten, 50), 50u);   // rank ceil(5.0) = 5
    EXPECT_EQ(nearest_rank(ten, 99), 100u);  // rank ceil(9.9) = 10
    EXPECT_EQ(nearest_rank(ten, 1), 10u);    // rank ceil(0.1) = 1
    EXPECT_EQ(nearest_rank({7}, 99), 7u);
    EXPECT_FALSE(nearest_rank({}, 50));
    std::vector<uint64_t> hundred;
    for (uint64_t v = 1; v <= 200; ++v) hundred.push_back(v);
    EXPECT_EQ(nearest_rank(hundred, 50), 100u);  // rank 100 of 200
    EXPECT_EQ(nearest_rank(hundred, 99), 198u);  // rank 198 of 200
}

TEST(TraceSummary, AKnownTraceGivesTheKnownNumbers) {
    const TraceSummary s = summarize(parsed(kTrace));
    ASSERT_EQ(s.regions.size(), 3u);
    // Sorted by device ("-" first), then region.
    const RegionSummary& unassigned = s.regions[0];
    EXPECT_EQ(unassigned.device, "-");
    EXPECT_EQ(unassigned.region, "mmio");
    EXPECT_EQ(unassigned.reads, 1u);
    EXPECT_EQ(unassigned.max, 0u);
    const RegionSummary& port = s.regions[1];
    EXPECT_EQ(port.device, "edu0");
    EXPECT_EQ(port.region, "io 0xc000+0x40");
    EXPECT_EQ(port.writes, 1u);
    EXPECT_EQ(port.bytes, 2u);
    EXPECT_EQ(port.p50, 50u);
    const RegionSummary& bar = s.regions[2];
    EXPECT_EQ(bar.region, "mmio 0xfea00000+0x100000");
    EXPECT_EQ(bar.reads, 2u);
    EXPECT_EQ(bar.writes, 1u);
    EXPECT_EQ(bar.bytes, 12u);
    // Durations 100, 200, 300: p50 is rank ceil(1.5) = 2, p99 rank ceil(2.97) = 3.
    EXPECT_EQ(bar.p50, 200u);
    EXPECT_EQ(bar.p99, 300u);
    EXPECT_EQ(bar.max, 300u);

    ASSERT_EQ(s.devices.size(), 2u);
    const DeviceEvents& edu = s.devices[0];
    EXPECT_EQ(edu.device, "edu0");
    EXPECT_EQ(edu.msi_sent, 1u);
    EXPECT_EQ(edu.dma_writes, 1u);
    EXPECT_EQ(edu.dma_reads, 0u);
    EXPECT_EQ(edu.dma_bytes, 4096u);
    EXPECT_EQ(edu.dma_refused, 1u);
    const DeviceEvents& mb = s.devices[1];
    EXPECT_EQ(mb.intx_asserts, 1u);
    EXPECT_EQ(mb.link_lost, 1u);
    EXPECT_EQ(mb.link_back, 1u);

    const std::string table = format_summary(s);
    EXPECT_NE(table.find("edu0    mmio 0xfea00000+0x100000      2       1     12     200     "
                         "300     300"),
              std::string::npos)
        << table;
}

// The Chrome Trace Event Format's required fields, per phase.
void expect_valid_event(const nlohmann::json& e) {
    ASSERT_TRUE(e.is_object()) << e;
    ASSERT_TRUE(e.contains("name") && e["name"].is_string()) << e;
    ASSERT_TRUE(e.contains("ph") && e["ph"].is_string()) << e;
    ASSERT_TRUE(e.contains("ts") && e["ts"].is_number()) << e;
    ASSERT_TRUE(e.contains("pid") && e["pid"].is_number_integer()) << e;
    ASSERT_TRUE(e.contains("tid") && e["tid"].is_number_integer()) << e;
    const std::string ph = e["ph"];
    if (ph == "X") {
        ASSERT_TRUE(e.contains("dur") && e["dur"].is_number()) << e;
        EXPECT_GE(e["dur"].get<double>(), 0.0);
    } else if (ph == "i") {
        ASSERT_TRUE(e.contains("s")) << e;
        EXPECT_TRUE(e["s"] == "t" || e["s"] == "p" || e["s"] == "g") << e;
    } else if (ph == "s" || ph == "f") {
        ASSERT_TRUE(e.contains("id")) << e;
        if (ph == "f") {
            EXPECT_EQ(e["bp"], "e") << e;
        }
    } else if (ph == "M") {
        EXPECT_TRUE(e["name"] == "process_name" || e["name"] == "thread_name") << e;
        ASSERT_TRUE(e.contains("args") && e["args"].contains("name")) << e;
    } else {
        ADD_FAILURE() << "unexpected phase " << ph;
    }
}

TEST(TracePerfetto, ParsesBackWithTheRequiredFieldsPerPhase) {
    std::string text;
    write_perfetto(parsed(kTrace), "t.tsv", [&](std::string_view piece) { text += piece; });
    const nlohmann::json j = nlohmann::json::parse(text);
    ASSERT_TRUE(j.contains("traceEvents"));
    const auto& events = j["traceEvents"];
    std::map<std::string, int> phases;
    std::map<std::pair<int, int>, std::string> tracks;
    for (const auto& e : events) {
        expect_valid_event(e);
        phases[e["ph"]]++;
        if (e["name"] == "thread_name") {
            const std::pair<int, int> track{e["pid"], e["tid"]};
            tracks[track] = e["args"]["name"];
        }
    }
    // Tracks: devices edu0, mb0, spy, unassigned; vCPUs 0 and 1; two process names.
    EXPECT_EQ(phases["M"], 2 + 4 + 2);
    EXPECT_EQ(phases["X"], 5 * 2);  // each access on its device's and its vCPU's track
    EXPECT_EQ(phases["i"], 7);
    // The MSI at 2100 ns happened during the write at 2000 ns (300 ns long): one flow from the
    // write on vCPU 0's track to edu0's track; the DMA at 6000 ns during no access: none.
    EXPECT_EQ(phases["s"], 1);
    EXPECT_EQ(phases["f"], 1);
    std::set<std::string> names;
    for (const auto& [k, v] : tracks) names.insert(v);
    EXPECT_EQ(names,
              (std::set<std::string>{"edu0", "mb0", "spy", "unassigned", "vCPU 0", "vCPU 1"}));
    // The 300 ns write: ts and dur in microseconds, on edu0's track.
    bool found = false;
    for (const auto& e : events)
        if (e["ph"] == "X" && e["name"] == "W 0xfea00004") {
            found = true;
            EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 2.0);
            EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 0.3);
            const std::pair<int, int> track{e["pid"], e["tid"]};
            EXPECT_EQ(tracks[track], "edu0");
            EXPECT_EQ(e["args"]["region"], "0xfea00000+0x100000");
        }
    EXPECT_TRUE(found);
    for (const auto& e : events) {
        const std::pair<int, int> track{e["pid"], e["tid"]};
        if (e["ph"] == "s") {
            EXPECT_EQ(tracks[track], "vCPU 0");
            EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 2.0);  // the write's start
        }
        if (e["ph"] == "f") {
            EXPECT_EQ(tracks[track], "edu0");
            EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 2.1);  // the MSI
        }
    }
    // Link events are global markers; the MSI carries its message.
    for (const auto& e : events) {
        if (e["ph"] != "i") continue;
        if (e["cat"] == "link") {
            EXPECT_EQ(e["s"], "g");
        }
        if (e["cat"] == "msi") {
            EXPECT_EQ(e["args"]["during_access_line"], 4);  // the write's line in the file
            EXPECT_EQ(e["args"]["address"], "0xfee00000");
            EXPECT_EQ(e["args"]["data"], "0x4041");
        }
    }
}

TEST(TraceSvg, LogBinsCountEveryDuration) {
    const std::vector<uint64_t> v{0, 1, 9, 10, 100, 999, 5000};
    const auto bins = log_histogram(v, 0, 4);
    ASSERT_EQ(bins.size(), 4u * kBinsPerDecade);
    uint64_t total = 0;
    for (const auto& b : bins) total += b.count;
    EXPECT_EQ(total, v.size());
    EXPECT_EQ(bins[0].count, 2u);                       // 0 (counted as 1 ns) and 1
    EXPECT_EQ(bins[kBinsPerDecade].count, 1u);          // 10 starts the second decade
    EXPECT_EQ(bins[kBinsPerDecade - 1].count, 1u);      // 9
    EXPECT_EQ(bins[2 * kBinsPerDecade].count, 1u);      // 100
    EXPECT_EQ(bins[3 * kBinsPerDecade - 1].count, 1u);  // 999
    EXPECT_EQ(bins[3 * kBinsPerDecade + 3].count, 1u);  // 5000 in [3981, 6310)
}

TEST(TraceSvg, LongDeviceNamesAreShortenedToFitBesideThePlot) {
    const std::string svg = latency_svg({{std::string(40, 'd') + "<&>", {10, 20}}}, "t");
    pugi::xml_document doc;
    ASSERT_TRUE(doc.load_string(svg.c_str()));
    EXPECT_NE(svg.find(">" + std::string(17, 'd') + "...<"), std::string::npos) << svg;
}

TEST(TraceSvg, OnePanelPerDeviceInWellFormedXml) {
    const std::string svg =
        latency_svg(latencies_by_device(parsed(kTrace)), "latency <of> \"t.tsv\" & more");
    pugi::xml_document doc;
    const auto r = doc.load_string(svg.c_str());
    ASSERT_TRUE(r) << r.description();
    const auto root = doc.child("svg");
    ASSERT_TRUE(root);
    int panels = 0;
    for (auto g : root.children("g")) {
        ++panels;
        (void)g;
    }
    EXPECT_EQ(panels, 2);  // edu0 and unassigned ("-"); events have no durations
    EXPECT_EQ(std::string(root.child("text").child_value()), "latency <of> \"t.tsv\" & more");
}

}  // namespace
}  // namespace potemkin::tools
