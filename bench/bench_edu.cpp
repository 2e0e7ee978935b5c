// Guest-driven edu benchmark (issue: the seed). A guest loop reads edu's liveness register
// (BAR0 + 0x04) or writes it, through PCI_FRONT and the inproc transport to the edu model,
// next to the same loop against a bare Unicorn MMIO hook in the same run. Figures are
// (T(2N) - T(N)) / N in ns per access, median of 5. Target (ARCHITECTURE.md §8): within 2x.
#include <unicorn/unicorn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

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

double potemkin_run(bool write, uint32_t n) {
    return bench::time_pci_front(bench::mmio_loop(kBar0 + 4, n, write), "inproc:edu", kBar0);
}

}  // namespace

int main(int argc, char** argv) {
    uint32_t n = argc > 1 ? uint32_t(std::atoi(argv[1])) : 500'000;
    std::printf("potemkin bench_edu: %u iterations per run, median of 5, ns per access\n", n);
    std::printf("%-34s %12s %22s %8s\n", "access", "bare hook", "PCI_FRONT+inproc:edu", "ratio");
    for (bool write : {false, true}) {
        double bare = per_iteration([&](uint32_t k) { return bare_run(write, k); }, n);
        double pot = per_iteration([&](uint32_t k) { return potemkin_run(write, k); }, n);
        std::printf("%-34s %12.1f %22.1f %7.2fx\n",
                    write ? "edu liveness write (4 bytes)" : "edu liveness read (4 bytes)", bare,
                    pot, pot / bare);
    }
    return 0;
}
