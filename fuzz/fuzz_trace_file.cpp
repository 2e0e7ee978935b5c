// A hostile trace file: any bytes, read as `potemkin trace` reads a --trace file, then summarised
// and turned into the Perfetto JSON and the SVG. Every input is either a trace or an error
// naming the file; nothing crashes (docs/trace.md).
#include <string>

#include "tools/trace_file.hpp"
#include "tools/trace_perfetto.hpp"
#include "tools/trace_summary.hpp"
#include "tools/trace_svg.hpp"

using namespace potemkin;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto t = tools::parse_trace(text, "fuzz.tsv");
    if (!t) {
        if (t.error().message.rfind("fuzz.tsv", 0) != 0)
            __builtin_trap();  // an error that does not name the file
        return 0;
    }
    (void)tools::format_summary(tools::summarize(*t));
    std::string json;
    tools::write_perfetto(*t, "fuzz.tsv", [&](std::string_view piece) { json += piece; });
    (void)tools::latency_svg(tools::latencies_by_device(*t), "fuzz");
    return 0;
}
