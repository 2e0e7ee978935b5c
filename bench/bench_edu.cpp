// Guest-driven edu benchmark (issue: the seed). A guest loop reads edu's liveness register
// (BAR0 + 0x04) or writes it, through PCI_FRONT and the inproc transport to the edu model,
// next to the same loop against a bare Unicorn MMIO hook in the same run, and, with --trace,
// the potemkin figure again with `potemkin run --trace` on (docs/trace.md: one record per
// access, timed). Figures are (T(2N) - T(N)) / N in ns per access, median of 5. Target
// (ARCHITECTURE.md §8): within 2x.
#include <unicorn/unicorn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench_runner.hpp"
#include "bench_util.hpp"
#include "flat_elf.hpp"
#include "machine/machine.hpp"
#include "pci/pci_bus.hpp"
#include "pci/registers.hpp"

using namespace potemkin;

namespace {

constexpr uint32_t kBar0 = bench::kBenchBar0;
using bench::per_iteration;

double bare_run(bool write, uint32_t n) {
    return bench::time_bare_unicorn(bench::mmio_loop(kBar0 + 4, n, write), {true, kBar0});
}

double potemkin_run(bool write, uint32_t n, const std::string& trace = "") {
    return bench::time_pci_front(bench::mmio_loop(kBar0 + 4, n, write), "inproc:edu", kBar0, trace);
}

constexpr const char* kUsage = R"(usage: bench_edu [N] [--trace] [--help]
  N         iterations per run (default 500000); each figure is (T(2N)-T(N))/N in ns per
            access, median of 5 runs
  --trace   also measure with the trace on (potemkin run --trace, docs/trace.md), written to a
            file in $TMPDIR (or /tmp) and removed afterwards
  --help    this text
Guest reads and writes of edu's liveness register (BAR0 + 0x04) through PCI_FRONT and inproc:edu,
next to the same guest loop on a bare Unicorn MMIO hook in the same run.
)";

}  // namespace

int main(int argc, char** argv) {
    uint32_t n = 500'000;
    bool trace = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (a == "--trace") {
            trace = true;
        } else if (!a.empty() && a.find_first_not_of("0123456789") == std::string::npos) {
            n = static_cast<uint32_t>(std::strtoul(a.c_str(), nullptr, 10));
        } else {
            std::fprintf(stderr, "bench_edu: unknown argument '%s'\n%s", a.c_str(), kUsage);
            return 2;
        }
    }
    if (n == 0) n = 1;
    const char* tmp = std::getenv("TMPDIR");
    const std::string trace_path = std::string(tmp && *tmp ? tmp : "/tmp") +
                                   "/potemkin-bench-edu-" + std::to_string(::getpid()) + ".tsv";
    std::printf("potemkin bench_edu: %u iterations per run, median of 5, ns per access\n", n);
    std::printf("%-34s %12s %22s %8s", "access", "bare hook", "PCI_FRONT+inproc:edu", "ratio");
    if (trace) std::printf(" %14s %15s", "with --trace", "traced/untraced");
    std::printf("\n");
    for (bool write : {false, true}) {
        double bare = per_iteration([&](uint32_t k) { return bare_run(write, k); }, n);
        double pot = per_iteration([&](uint32_t k) { return potemkin_run(write, k); }, n);
        std::printf("%-34s %12.1f %22.1f %7.2fx",
                    write ? "edu liveness write (4 bytes)" : "edu liveness read (4 bytes)", bare,
                    pot, pot / bare);
        if (trace) {
            double traced =
                per_iteration([&](uint32_t k) { return potemkin_run(write, k, trace_path); }, n);
            std::printf(" %14.1f %14.2fx", traced, traced / pot);
        }
        std::printf("\n");
    }
    if (trace) {
        std::error_code ec;
        std::filesystem::remove(trace_path, ec);
    }
    return 0;
}
