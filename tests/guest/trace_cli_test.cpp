// `potemkin run --trace` on the edu demo and `potemkin trace` on what it wrote, as a user runs
// them (docs/trace.md): the trace holds timed accesses, the edu device's interrupts and its
// DMA; the summary, the Perfetto JSON and the SVG come out of it and parse.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>
#include <string>

namespace {

struct Cli {
    int status = -1;
    std::string out;  // stdout and stderr together
};

Cli run_potemkin(const std::string& args) {
    Cli r;
    std::string engine;
    const char* e = std::getenv("POTEMKIN_TEST_ENGINE");
    if (e && *e && args.rfind("run ", 0) == 0) engine = std::string(" --engine ") + e;
    const std::string cmd = std::string(POTEMKIN_BINARY) + " " + args + engine + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> columns(const std::string& line) {
    std::vector<std::string> out;
    std::string field;
    std::istringstream f(line);
    while (std::getline(f, field, '\t')) out.push_back(field);
    return out;
}

TEST(TraceCli, EduDemoTraceHasDurationsInterruptsAndDmaAndEveryOutputParses) {
    const std::string dir = ::testing::TempDir();
    const std::string trace = dir + "/edu-trace.tsv";
    auto run =
        run_potemkin("run " POTEMKIN_SOURCE_DIR "/examples/edu.xml --timeout 120 --trace " + trace);
    ASSERT_EQ(run.status, 0) << run.out;

    std::ifstream in(trace);
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, "# potemkin trace v2");
    size_t timed_edu_reads = 0, edu_interrupts = 0, edu_dma = 0;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto c = columns(line);
        ASSERT_EQ(c.size(), 11u) << line;
        if (c[3] == "mmio" && c[4] == "R" && c[5] == "edu0" && c[1] != "-" && c[9] != "-")
            ++timed_edu_reads;
        if ((c[3] == "intx" || c[3] == "msi" || c[3] == "msix") && c[5] == "edu0") ++edu_interrupts;
        if (c[3] == "dma" && c[5] == "edu0" && c[10] == "-") ++edu_dma;
    }
    EXPECT_GT(timed_edu_reads, 10u);
    EXPECT_GT(edu_interrupts, 0u);
    EXPECT_GT(edu_dma, 0u);

    const std::string json = dir + "/edu-trace.json", svg = dir + "/edu-trace.svg";
    auto t = run_potemkin("trace " + trace + " --summary --perfetto " + json + " --svg " + svg);
    ASSERT_EQ(t.status, 0) << t.out;
    EXPECT_NE(t.out.find("p50_ns"), std::string::npos) << t.out;
    EXPECT_NE(t.out.find("edu0"), std::string::npos) << t.out;

    const auto j = nlohmann::json::parse(slurp(json), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << json;
    size_t slices = 0, instants = 0;
    for (const auto& e : j.at("traceEvents")) {
        for (const char* k : {"name", "ph", "ts", "pid", "tid"}) ASSERT_TRUE(e.contains(k)) << e;
        if (e["ph"] == "X") {
            ASSERT_TRUE(e.contains("dur")) << e;
            ++slices;
        }
        if (e["ph"] == "i") ++instants;
    }
    EXPECT_GT(slices, 0u);
    EXPECT_GT(instants, 0u);

    pugi::xml_document doc;
    ASSERT_TRUE(doc.load_file(svg.c_str())) << svg;
    EXPECT_TRUE(doc.child("svg"));
    EXPECT_NE(slurp(svg).find(">edu0<"), std::string::npos);
}

TEST(TraceCli, AMalformedTraceIsAnErrorNamingTheLine) {
    const std::string path = ::testing::TempDir() + "/bad-trace.tsv";
    std::ofstream(path) << "# potemkin trace v2\n"
                           "# time_ns\tdur_ns\tvcpu\tkind\top\tdevice\taddress\tsize\tvalue\t"
                           "region\tdetail\n"
                           "100\t5\t0\tmmio\tR\tedu0\t0xc0000000\t4\t0x1\t-\t-\n"
                           "oops\n";
    auto r = run_potemkin("trace " + path + " --summary");
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find(path + ":4: 1 tab-separated columns, a v2 record has 11"),
              std::string::npos)
        << r.out;
    // A good trace, an output that cannot be written: the error names the output.
    const std::string good = ::testing::TempDir() + "/good-trace.tsv";
    std::ofstream(good) << "# potemkin trace v2\n"
                           "100\t5\t0\tmmio\tR\tedu0\t0xc0000000\t4\t0x1\t-\t-\n";
    auto unwritable = run_potemkin("trace " + good + " --svg /nonexistent-dir/x.svg");
    EXPECT_EQ(unwritable.status, 1) << unwritable.out;
    EXPECT_NE(unwritable.out.find("/nonexistent-dir/x.svg: cannot create"), std::string::npos)
        << unwritable.out;
    auto missing = run_potemkin("trace " + path + ".none");
    EXPECT_EQ(missing.status, 1) << missing.out;
    EXPECT_NE(missing.out.find(path + ".none: cannot open trace"), std::string::npos)
        << missing.out;
}

}  // namespace
