// Shared by the guest-driven benchmarks.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <vector>

namespace potemkin::bench {

using Clock = std::chrono::steady_clock;

// Per-iteration cost of `run(k)` (which runs k iterations and returns ns): (T(2n) - T(n)) / n,
// which cancels start-up costs; median of 5.
template <typename F>
double per_iteration(F run, uint32_t n) {
    std::vector<double> v;
    for (int i = 0; i < 5; ++i) v.push_back((run(2 * n) - run(n)) / n);
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Percentiles and mean of a sample of latencies (any unit).
struct Latency {
    double p50, p99, mean;
};
inline Latency summarize(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
    return {v[v.size() / 2], v[v.size() * 99 / 100], mean};
}

inline double ns_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

}  // namespace potemkin::bench
