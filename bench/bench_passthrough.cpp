// A physical device passed through with kernel VFIO (docs/passthrough.md): the cost of a guest
// register read of QEMU's edu (liveness, BAR0 + 0x04) when the BAR traps (vfio:...?mmap=0: every
// access a pread on the VFIO device fd), when it is mapped straight into the guest (vfio:...,
// the default), and through in-process edu (inproc:edu) for scale, in one run. Meant for the
// nested harness's L1 guest, where edu is QEMU's own behind an emulated IOMMU: under TCG the
// absolute figures mean little, the ratios are the result. Figures are (T(2N) - T(N)) / N in
// ns per access, median of 5.
//
// Usage: bench_passthrough [DEVICE] [N] [--help]. DEVICE: an edu's address (0000:00:03.0) or
// vfio: URL; default $POTEMKIN_NESTED_EDU. Without one it says so and exits 0 (skipped).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench_runner.hpp"
#include "bench_util.hpp"

using namespace potemkin;

namespace {

constexpr const char* kUsage = R"(usage: bench_passthrough [DEVICE] [N] [--help]
  DEVICE   QEMU edu bound to vfio-pci: 0000:00:03.0 or vfio:0000:00:03.0
           (default: $POTEMKIN_NESTED_EDU; none: the benchmark is skipped)
  N        trapped reads per run (default 2000; the direct and in-process rows, 50x as
           fast, make 50 N); each figure is the median of 5 runs of N and 2N
  --help   this text
Guest reads of edu's liveness register through a trapped VFIO BAR (pread per access), through
the BAR mapped straight into the guest, and through in-process edu; ratios to the direct map.
)";

constexpr uint32_t kBar0 = bench::kBenchBar0;

double read_cost(const std::string& hostdev, uint32_t n) {
    return bench::per_iteration(
        [&](uint32_t k) {
            return bench::time_pci_front(bench::mmio_loop(kBar0 + 4, k), hostdev, kBar0);
        },
        n);
}

}  // namespace

int main(int argc, char** argv) {
    std::string device;
    uint32_t n = 2000;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (!a.empty() && a.find_first_not_of("0123456789") == std::string::npos) {
            n = static_cast<uint32_t>(std::strtoul(a.c_str(), nullptr, 10));
        } else if (a.empty() || a[0] == '-') {
            std::fprintf(stderr, "bench_passthrough: unknown option '%s'\n%s", a.c_str(), kUsage);
            return 2;
        } else {
            device = a;
        }
    }
    if (device.empty()) {
        if (const char* e = std::getenv("POTEMKIN_NESTED_EDU")) device = e;
    }
    if (device.empty()) {
        std::printf(
            "bench_passthrough: skipped: no vfio device given (an edu bound to "
            "vfio-pci; --help)\n");
        return 0;
    }
    if (n == 0) n = 1;
    const std::string url = device.rfind("vfio:", 0) == 0 ? device : "vfio:" + device;
    // A trapped read costs tens of direct ones: the same N would leave the direct figure in
    // the noise of starting a VM.
    const uint32_t fast_n = n * 50;
    std::printf(
        "potemkin bench_passthrough: %s, %u trapped / %u other reads per run, median of 5, ns "
        "per read\n",
        url.c_str(), n, fast_n);
    const double trapped = read_cost(url + "?mmap=0", n);
    const double direct = read_cost(url, fast_n);
    const double inproc = read_cost("inproc:edu", fast_n);
    std::printf("%-40s %12s %10s\n", "edu liveness read (4 bytes)", "ns/read", "vs direct");
    std::printf("%-40s %12.1f %9.2fx\n", "VFIO BAR, trapped (pread)", trapped, trapped / direct);
    std::printf("%-40s %12.1f %9.2fx\n", "VFIO BAR, mapped into the guest", direct, 1.0);
    std::printf("%-40s %12.1f %9.2fx\n", "inproc:edu (PCI_FRONT, in-process model)", inproc,
                inproc / direct);
    return 0;
}
