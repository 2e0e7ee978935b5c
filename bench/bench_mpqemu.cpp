// mpqemu client benchmark (issue 5: QEMU hosts the device). Opens QEMU's nvme through
// `qemu:nvme,drive=...` and measures, in one run:
//  1. how long opening takes (spawn, QMP running, SYNC_SYSMEM, SET_IRQFD, BAR probe and
//     programming);
//  2. a 4-byte BAR_READ of NVMe's VS register through the client (p50, p99, mean);
//  3. a 4-byte PCI_CFGREAD through the client (p50, p99, mean);
//  4. a guest loop reading VS through PCI_FRONT + qemu:nvme, ns per access (T(2n) - T(n));
//  5. the same guest loop against potemkin's edu (BAR0 + 8, the factorial register) through
//     every transport side by side: inproc, vfio-user (`potemkin serve edu --socket`) and
//     mpqemu (`potemkin serve edu --mpqemu-fd`), in alternating rounds of one run.
// Usage: bench_mpqemu [ITERATIONS] (default 20000); QEMU from PATH.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "bench_runner.hpp"
#include "bench_util.hpp"
#include "hostdev/host_device.hpp"
#include "machine/builtins.hpp"
#include "server_process.hpp"

using namespace potemkin;
using bench::Clock;
using bench::Latency;
using bench::summarize;

namespace {

class NoGuest final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no guest"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return fail("no guest"); }
    void disconnected(std::string_view why) override {
        std::fprintf(stderr, "bench: disconnected: %.*s\n", int(why.size()), why.data());
        std::exit(1);
    }
};

constexpr uint32_t kBar0 = bench::kBenchBar0;

// Section 5: one guest loop, the edu model behind each transport, rounds alternating so that
// load on this shared machine hits every transport alike; the median round is reported.
int compare_transports(uint32_t g) {
    const std::string sock = "/tmp/potemkin-bench-mpq-" + std::to_string(::getpid()) + ".sock";
    testing::ServerProcess vfu(sock);
    testing::MpqemuServerProcess mpq("edu");
    if (!vfu.start() || !mpq.start()) {
        std::fprintf(stderr, "bench: could not start potemkin serve edu\n");
        return 1;
    }
    const std::vector<std::pair<std::string, std::string>> urls = {
        {"inproc:edu", "PCI_FRONT + inproc:edu"},
        {"vfio-user:" + sock, "PCI_FRONT + vfio-user (potemkin serve)"},
        {"mpqemu-fd:" + std::to_string(mpq.sock()), "PCI_FRONT + mpqemu (potemkin serve)"},
    };
    std::vector<std::vector<double>> rounds(urls.size());
    for (int r = 0; r < 3; ++r)
        for (size_t i = 0; i < urls.size(); ++i) {
            // In-process accesses are ~1000x faster: give them enough iterations to time.
            const uint32_t k = i == 0 ? g * 200 : g;
            rounds[i].push_back(bench::per_iteration(
                [&](uint32_t m) {
                    return bench::time_pci_front(bench::mmio_loop(kBar0 + 0x08, m), urls[i].first,
                                                 kBar0);
                },
                k));
        }
    std::printf("\nguest edu register read, ns per access (median of 3 alternating rounds)\n");
    double inproc = 0;
    for (size_t i = 0; i < urls.size(); ++i) {
        std::sort(rounds[i].begin(), rounds[i].end());
        const double ns = rounds[i][1];
        if (i == 0) inproc = ns;
        std::printf("  %-42s %10.0f  (%.0fx inproc)\n", urls[i].second.c_str(), ns, ns / inproc);
    }
    return 0;
}

}  // namespace

constexpr const char* kUsage = R"(usage: bench_mpqemu [N] [--help]
  N        iterations of the BAR/config read loops and the guest loop (default 20000)
  --help   this text
QEMU's nvme through qemu: (time to open, BAR and config read latency, a guest access), then one
guest loop against edu through inproc, vfio-user and mpqemu side by side. Needs
qemu-system-x86_64 with -machine x-remote.
)";

int main(int argc, char** argv) {
    unsigned n = 20000;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (a.empty() || a.find_first_not_of("0123456789") != std::string::npos) {
            std::fprintf(stderr, "bench_mpqemu: unknown argument '%s'\n%s", a.c_str(), kUsage);
            return 2;
        }
        n = static_cast<unsigned>(std::strtoul(a.c_str(), nullptr, 10));
    }
    if (n == 0) n = 1;
    if (auto r = machine::register_builtins(); !r) {
        std::fprintf(stderr, "bench: %s\n", r.error().message.c_str());
        return 1;
    }
    const std::string disk = "/tmp/potemkin-bench-nvme-" + std::to_string(::getpid()) + ".raw";
    {
        std::ofstream f(disk, std::ios::binary | std::ios::trunc);
        f.seekp((1 << 20) - 1);
        f.put('\0');
    }
    NoGuest events;
    const auto t0 = Clock::now();
    auto dev = hostdev::TransportRegistry::builtin().open("qemu:nvme,drive=" + disk + ",serial=b1",
                                                          hostdev::OpenContext{&events});
    const double open_ns = bench::ns_since(t0);
    if (!dev) {
        std::filesystem::remove(disk);
        std::fprintf(stderr, "bench: %s\n", dev.error().message.c_str());
        return 1;
    }
    std::vector<double> bar_ns, cfg_ns;
    bar_ns.reserve(n);
    cfg_ns.reserve(n);
    uint8_t buf[4];
    for (unsigned i = 0; i < n; ++i) {
        auto a = Clock::now();
        if (!(*dev)->region_read(0, 0x08, buf)) return 1;
        bar_ns.push_back(bench::ns_since(a));
        a = Clock::now();
        if (!(*dev)->config_read(0x00, buf)) return 1;
        cfg_ns.push_back(bench::ns_since(a));
    }
    (*dev)->close();
    const std::string url = "qemu:nvme,drive=" + disk + ",serial=b1";
    const uint32_t g = std::max(500u, n / 10);
    const double guest_ns = bench::per_iteration(
        [&](uint32_t k) {
            return bench::time_pci_front(bench::mmio_loop(kBar0 + 0x08, k), url, kBar0);
        },
        g);
    std::filesystem::remove(disk);
    const Latency bar = summarize(bar_ns), cfg = summarize(cfg_ns);
    std::printf("open qemu:nvme (spawn to programmed)   %8.1f ms\n", open_ns / 1e6);
    std::printf("BAR_READ 4 bytes  p50 %6.1f us  p99 %6.1f us  mean %6.1f us  (n=%u)\n",
                bar.p50 / 1e3, bar.p99 / 1e3, bar.mean / 1e3, n);
    std::printf("PCI_CFGREAD 4 B   p50 %6.1f us  p99 %6.1f us  mean %6.1f us  (n=%u)\n",
                cfg.p50 / 1e3, cfg.p99 / 1e3, cfg.mean / 1e3, n);
    std::printf("guest VS read through PCI_FRONT + qemu:nvme   %6.1f us per access (n=%u)\n",
                guest_ns / 1e3, g);
    return compare_transports(g);
}
