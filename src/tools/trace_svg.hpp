// `potemkin trace FILE --svg OUT.svg`: a latency histogram per device as an SVG picture
// (docs/trace.md, "Latency histogram"). Written by hand: no maintained C++ library on Debian
// 12 writes SVG charts without pulling in a plotting stack (docs/trace.md says which were
// considered and why not).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace potemkin::tools {

// The bins: kBinsPerDecade per power of ten of nanoseconds, on a log scale.
inline constexpr int kBinsPerDecade = 5;

// One histogram bin: [low_ns, high_ns) and how many durations fell in it.
struct HistogramBin {
    double low_ns, high_ns;
    uint64_t count;
};
// `sorted` durations in ns into log-scale bins from 10^first_decade to 10^last_decade ns;
// durations below 1 ns count in the first bin.
std::vector<HistogramBin> log_histogram(const std::vector<uint64_t>& sorted, int first_decade,
                                        int last_decade);

// One panel per device, on a shared logarithmic latency axis; p50 and p99 marked.
std::string latency_svg(const std::vector<std::pair<std::string, std::vector<uint64_t>>>& devices,
                        const std::string& title);

}  // namespace potemkin::tools
