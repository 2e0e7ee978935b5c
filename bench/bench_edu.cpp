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

constexpr uint32_t kBar0 = 0xc000'0000;
using bench::per_iteration;

// mov ecx, n; mov ebx, BAR0+4; loop: mov eax,[ebx] | mov [ebx],ecx; dec ecx; jnz loop;
// mov eax, 0; out 0xf4, eax; hlt
std::vector<uint8_t> loop_code(bool write, uint32_t n) {
    const uint32_t reg = kBar0 + 4;
    std::vector<uint8_t> c = {
        0xb9, uint8_t(n),   uint8_t(n >> 8),   uint8_t(n >> 16),   uint8_t(n >> 24),
        0xbb, uint8_t(reg), uint8_t(reg >> 8), uint8_t(reg >> 16), uint8_t(reg >> 24)};
    if (write)
        c.insert(c.end(), {0x89, 0x0b});
    else
        c.insert(c.end(), {0x8b, 0x03});
    c.insert(c.end(), {0x49, 0x75, uint8_t(-5)});
    c.insert(c.end(), {0xb8, 0, 0, 0, 0, 0xe7, 0xf4, 0xf4});
    return c;
}

double bare_run(bool write, uint32_t n) {
    return bench::time_bare_unicorn(loop_code(write, n), {true, kBar0});
}

double potemkin_run(bool write, uint32_t n) {
    return bench::time_pci_front(loop_code(write, n), "inproc:edu", kBar0);
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
