#include "tools/trace_command.hpp"

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>

#include "tools/trace_file.hpp"
#include "tools/trace_perfetto.hpp"
#include "tools/trace_summary.hpp"
#include "tools/trace_svg.hpp"

namespace potemkin::tools {

namespace {

struct TraceOptions {
    std::string file;
    bool summary = false;
    std::string perfetto;
    std::string svg;
};

// Writes `produce`'s output to `path`; the first write error ends the file with an error.
Result<void> write_file(const std::string& path,
                        const std::function<void(const TextSink&)>& produce) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return failf(Errno{errno}, "{}: cannot create", path);
    int write_errno = 0;
    produce([&](std::string_view piece) {
        if (write_errno == 0 && std::fwrite(piece.data(), 1, piece.size(), f) != piece.size())
            write_errno = errno ? errno : EIO;
    });
    if (std::fclose(f) != 0 && write_errno == 0) write_errno = errno ? errno : EIO;
    if (write_errno != 0) return failf(Errno{write_errno}, "{}: write", path);
    return ok();
}

int trace_command(const TraceOptions& o) {
    auto t = load_trace(o.file);
    if (!t) {
        std::fprintf(stderr, "potemkin trace: %s\n", t.error().message.c_str());
        return 1;
    }
    if (o.summary || (o.perfetto.empty() && o.svg.empty()))
        std::fputs(format_summary(summarize(*t)).c_str(), stdout);
    if (!o.perfetto.empty()) {
        auto r =
            write_file(o.perfetto, [&](const TextSink& out) { write_perfetto(*t, o.file, out); });
        if (!r) {
            std::fprintf(stderr, "potemkin trace: %s\n", r.error().message.c_str());
            return 1;
        }
    }
    if (!o.svg.empty()) {
        if (t->version < 2)
            std::fprintf(stderr,
                         "potemkin trace: %s is a v1 trace, which has no durations: the "
                         "histogram is empty\n",
                         o.file.c_str());
        const std::string svg =
            latency_svg(latencies_by_device(*t), "Access latency per device: " + o.file);
        if (auto r = write_file(o.svg, [&](const TextSink& out) { out(svg); }); !r) {
            std::fprintf(stderr, "potemkin trace: %s\n", r.error().message.c_str());
            return 1;
        }
    }
    return 0;
}

}  // namespace

void add_trace_command(CLI::App& app) {
    // Owned by the callback: the options outlive parsing.
    auto o = std::make_shared<TraceOptions>();
    auto* cmd = app.add_subcommand(
        "trace", "Summarise a --trace file, or turn it into a Perfetto timeline or an SVG");
    cmd->add_option("file", o->file, "Trace written by potemkin run --trace (v1 or v2)")
        ->required()
        ->option_text("FILE");
    cmd->add_flag("--summary", o->summary,
                  "Print per device and region: counts, bytes, latency p50/p99/max (the "
                  "default when no output is asked for)");
    cmd->add_option("--perfetto", o->perfetto,
                    "Write the Chrome trace event format JSON that ui.perfetto.dev and "
                    "chrome://tracing open")
        ->option_text("OUT.json");
    cmd->add_option("--svg", o->svg, "Write a latency histogram per device as SVG")
        ->option_text("OUT.svg");
    cmd->footer(
        "Exit status: 0 done; 1 the trace is malformed (the message names the line) or an "
        "output\nfile could not be written; 2 a usage error. Formats: docs/trace.md.");
    cmd->callback([o] { std::exit(trace_command(*o)); });
}

}  // namespace potemkin::tools
