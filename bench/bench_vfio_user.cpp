// vfio-user benchmark (issue: out-of-process devices). In one run:
//  1. the floor: a raw AF_UNIX ping-pong between two processes with REGION_READ-sized messages
//     (32-byte request, 36-byte reply), one send and one receive loop per side;
//  2. potemkin's client → `potemkin serve edu` REGION_READ of 4 bytes (p50, p99, mean);
//     1 and 2 alternate in 10 rounds, so that both figures see the same machine load;
//  3. a guest loop reading edu's liveness register through PCI_FRONT, over vfio-user and over
//     inproc, ns per access;
//  4. DMA bandwidth into guest RAM through a second MAP_SHARED mapping of its memfd (what a
//     server does after DMA_MAP), next to memcpy into private memory.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "bench_runner.hpp"
#include "bench_util.hpp"
#include "flat_elf.hpp"
#include "hostdev/host_device.hpp"
#include "machine/builtins.hpp"
#include "machine/machine.hpp"
#include "pci/pci_bus.hpp"
#include "server_process.hpp"

using namespace potemkin;
using bench::Clock;

namespace {

struct Latency {
    double p50, p99, mean;
};

Latency summarize(std::vector<double> ns) {
    std::sort(ns.begin(), ns.end());
    double mean = std::accumulate(ns.begin(), ns.end(), 0.0) / double(ns.size());
    return {ns[ns.size() / 2], ns[ns.size() * 99 / 100], mean};
}

bool full_io(int fd, void* buf, size_t n, bool send) {
    auto* p = static_cast<uint8_t*>(buf);
    while (n) {
        ssize_t k = send ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
        if (k <= 0) return false;
        p += k, n -= size_t(k);
    }
    return true;
}

// The floor: an echo child process on a socketpair, alive for the whole measurement.
class RawPingPong {
  public:
    RawPingPong() {
        int sv[2];
        ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
        child_ = ::fork();
        if (child_ == 0) {
            ::close(sv[0]);
            uint8_t req[32], rep[36] = {};
            while (full_io(sv[1], req, sizeof req, false)) {
                std::memcpy(rep, req, 16);
                if (!full_io(sv[1], rep, sizeof rep, true)) break;
            }
            ::_exit(0);
        }
        ::close(sv[1]);
        fd_ = sv[0];
    }
    ~RawPingPong() {
        ::close(fd_);
        ::waitpid(child_, nullptr, 0);
    }
    void run(unsigned n, std::vector<double>& ns) {
        uint8_t req[32] = {}, rep[36];
        for (unsigned i = 0; i < n; ++i) {
            auto t0 = Clock::now();
            full_io(fd_, req, sizeof req, true);
            full_io(fd_, rep, sizeof rep, false);
            ns.push_back(bench::ns_since(t0));
        }
    }

  private:
    int fd_ = -1;
    pid_t child_ = -1;
};

class NoGuest final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no guest"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return fail("no guest"); }
    void disconnected(std::string_view) override {}
};

// The floor and the client, measured in interleaved rounds so that both see the same load on a
// shared machine (one figure measured after the other would compare two moments).
std::pair<Latency, Latency> floor_and_client(const std::string& url, unsigned n) {
    NoGuest events;
    auto dev = hostdev::TransportRegistry::builtin().open(url, hostdev::OpenContext{&events});
    if (!dev) {
        std::fprintf(stderr, "bench: %s\n", dev.error().message.c_str());
        std::exit(1);
    }
    RawPingPong raw;
    std::vector<double> floor_ns, client_ns;
    floor_ns.reserve(n);
    client_ns.reserve(n);
    uint8_t buf[4];
    constexpr unsigned kRounds = 10;
    for (unsigned r = 0; r < kRounds; ++r) {
        const unsigned k = n / kRounds + (r < n % kRounds ? 1 : 0);
        raw.run(k, floor_ns);
        for (unsigned i = 0; i < k; ++i) {
            auto t0 = Clock::now();
            if (!(*dev)->region_read(0, 0x04, buf)) std::exit(1);
            client_ns.push_back(bench::ns_since(t0));
        }
    }
    (*dev)->close();
    return {summarize(std::move(floor_ns)), summarize(std::move(client_ns))};
}

constexpr uint32_t kBar0 = 0xc000'0000;

std::vector<uint8_t> read_loop(uint32_t n) {
    const uint32_t reg = kBar0 + 4;
    return {0xb9,
            uint8_t(n),
            uint8_t(n >> 8),
            uint8_t(n >> 16),
            uint8_t(n >> 24),  // mov ecx, n
            0xbb,
            uint8_t(reg),
            uint8_t(reg >> 8),
            uint8_t(reg >> 16),
            uint8_t(reg >> 24),
            0x8b,
            0x03,
            0x49,
            0x75,
            uint8_t(-5),  // mov eax,[ebx]; dec; jnz
            0xb8,
            0,
            0,
            0,
            0,
            0xe7,
            0xf4,
            0xf4};  // exit 0
}

double guest_run(const std::string& url, uint32_t n) {
    return bench::time_pci_front(read_loop(n), url, kBar0);
}

// GB/s of memcpy of `bytes` into dst, best of 5.
double bandwidth(uint8_t* dst, const uint8_t* src, size_t bytes) {
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
        auto t0 = Clock::now();
        std::memcpy(dst, src, bytes);
        best = std::min(best, bench::ns_since(t0));
    }
    return double(bytes) / best;  // bytes per ns = GB/s
}

}  // namespace

int main(int argc, char** argv) {
    const unsigned n = argc > 1 ? unsigned(std::atoi(argv[1])) : 50'000;
    machine::register_builtins();
    const std::string sock = "/tmp/potemkin-bench-" + std::to_string(::getpid()) + ".sock";
    testing::ServerProcess server(sock);
    if (!server.start()) {
        std::fprintf(stderr, "bench: could not start potemkin serve edu\n");
        return 1;
    }
    const std::string url = "vfio-user:" + sock;

    std::printf("potemkin bench_vfio_user: %u round trips per figure\n\n", n);
    const auto [floor, client] = floor_and_client(url, n);
    std::printf("%-46s %9s %9s %9s\n", "round trip (ns)", "p50", "p99", "mean");
    std::printf("%-46s %9.0f %9.0f %9.0f\n", "raw AF_UNIX ping-pong, 32 B / 36 B (floor)",
                floor.p50, floor.p99, floor.mean);
    std::printf("%-46s %9.0f %9.0f %9.0f\n", "client -> potemkin serve edu, REGION_READ 4 B",
                client.p50, client.p99, client.mean);
    std::printf("%-46s %8.2fx %8.2fx %8.2fx\n\n", "ratio to the floor", client.p50 / floor.p50,
                client.p99 / floor.p99, client.mean / floor.mean);

    const uint32_t g = std::max(1000u, n / 5);
    double over_vfu = bench::per_iteration([&](uint32_t k) { return guest_run(url, k); }, g);
    double inproc = bench::per_iteration([&](uint32_t k) { return guest_run("inproc:edu", k); }, g);
    std::printf("%-46s %12s\n", "guest edu liveness read (ns per access)", "");
    std::printf("%-46s %12.0f\n", "  PCI_FRONT + inproc:edu", inproc);
    std::printf("%-46s %12.0f  (%.1fx inproc)\n\n", "  PCI_FRONT + vfio-user (potemkin serve)",
                over_vfu, over_vfu / inproc);

    const size_t bytes = 64u << 20;
    auto mem = vm::GuestMemory::create({{Gpa(0), bytes}});
    void* shared = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, (*mem)->fd(), 0);
    std::vector<uint8_t> src(bytes, 0x5a), priv(bytes, 0);
    std::memset(shared, 0, bytes);  // fault the pages in before timing
    double shared_gbs = bandwidth(static_cast<uint8_t*>(shared), src.data(), bytes);
    double private_gbs = bandwidth(priv.data(), src.data(), bytes);
    std::printf("%-46s %9.2f GB/s\n", "DMA into guest RAM via the memfd mapping", shared_gbs);
    std::printf("%-46s %9.2f GB/s  (%.0f%%)\n", "memcpy into private memory", private_gbs,
                100.0 * shared_gbs / private_gbs);
    ::munmap(shared, bytes);
    return 0;
}
