// Guest-driven I/O benchmark (issue: foundation). The same guest loop — IN from a port, a
// 4-byte MMIO read, a 4-byte MMIO write — runs:
//   bare:        on a raw Unicorn engine whose hooks return at once (the engine's floor);
//   bare+block:  the same plus the UC_HOOK_BLOCK potemkin needs for safe stops;
//   potemkin:    in a potemkin Machine, through PortBus/MmioBus to a null device.
// With --engine kvm: a bare KVM_RUN loop answering the same exits at once (bare_kvm.hpp), next
// to a potemkin Machine on KvmEngine (inside a nested TCG guest only the ratio means anything).
// Each figure is (T(2N) - T(N)) / N, which cancels start-up costs, median of 5 runs. The
// ratio potemkin / bare is the figure to watch (ARCHITECTURE.md §8: within 2x).
#include <unicorn/unicorn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include "bare_kvm.hpp"
#include "bench_runner.hpp"
#include "bench_util.hpp"
#include "flat_elf.hpp"
#include "machine/machine.hpp"

using namespace potemkin;

namespace {

constexpr uint16_t kNullPort = 0x600;
constexpr uint32_t kNullMmio = 0xd0000000;

enum class Op { port_in, mmio_read, mmio_write };
const char* op_name(Op op) {
    switch (op) {
        case Op::port_in:
            return "port I/O round trip (IN)";
        case Op::mmio_read:
            return "MMIO read (4 bytes)";
        case Op::mmio_write:
            return "MMIO write (4 bytes)";
    }
    return "?";
}

std::vector<uint8_t> loop_code(Op op, uint32_t n) {
    std::vector<uint8_t> c = {0xb9,
                              uint8_t(n),
                              uint8_t(n >> 8),
                              uint8_t(n >> 16),
                              uint8_t(n >> 24),  // mov ecx, n
                              0xba,
                              uint8_t(kNullPort),
                              uint8_t(kNullPort >> 8),
                              0,
                              0,  // mov edx, port
                              0xbb,
                              0,
                              0,
                              0,
                              0xd0};  // mov ebx, mmio
    switch (op) {
        case Op::port_in:
            c.push_back(0xed);
            break;  // in eax, dx
        case Op::mmio_read:
            c.insert(c.end(), {0x8b, 0x03});
            break;  // mov eax, [ebx]
        case Op::mmio_write:
            c.insert(c.end(), {0x89, 0x03});
            break;  // mov [ebx], eax
    }
    int body = op == Op::port_in ? 1 : 2;
    c.insert(c.end(), {0x49, 0x75, uint8_t(-(body + 3))});    // dec ecx; jnz loop
    c.insert(c.end(), {0xb8, 0, 0, 0, 0, 0xe7, 0xf4, 0xf4});  // mov eax,0; out f4; hlt
    return c;
}

using bench::per_iteration;

double bare_run(Op op, uint32_t n, bool block_hook) {
    return bench::time_bare_unicorn(loop_code(op, n), {block_hook, kNullMmio});
}

double potemkin_run(Op op, uint32_t n, const std::string& engine = "") {
    vm::BusHandler null{[](uint64_t, unsigned) -> uint64_t { return 0; },
                        [](uint64_t, unsigned, uint64_t) {}};
    return bench::time_machine(
        loop_code(op, n), "",
        [&](machine::Machine& m) {
            auto p = m.ports().add(Port(kNullPort), 4, "null", null);
            auto r = m.mmio().add(Gpa(kNullMmio), 0x1000, "null", null);
            if (!p || !r) {
                std::fprintf(stderr, "bench: %s\n", (!p ? p.error() : r.error()).message.c_str());
                std::exit(1);
            }
        },
        engine);
}

}  // namespace

int usage(const char* self, int status) {
    std::printf(
        "usage: %s [N] [--engine unicorn|kvm]\n"
        "  N                iterations per run (default 1000000; each figure is (T(2N)-T(N))/N,\n"
        "                   median of 5)\n"
        "  --engine unicorn potemkin on Unicorn next to bare Unicorn hooks (default)\n"
        "  --engine kvm     potemkin on KVM next to a bare KVM_RUN loop taking the same exits\n",
        self);
    return status;
}

int main(int argc, char** argv) {
    uint32_t n = 1'000'000;
    std::string engine = "unicorn";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return usage(argv[0], 0);
        if (a == "--engine" && i + 1 < argc)
            engine = argv[++i];
        else if (!a.empty() && a[0] != '-')
            n = uint32_t(std::atoi(a.c_str()));
        else
            return usage(argv[0], 2);
    }
    if (engine == "kvm") {
        std::printf("potemkin bench_io (kvm): %u iterations per run, median of 5, ns per access\n",
                    n);
        std::printf("%-28s %14s %10s %16s\n", "access", "bare KVM_RUN", "potemkin",
                    "potemkin/bare");
        for (Op op : {Op::port_in, Op::mmio_read, Op::mmio_write}) {
            double bare = per_iteration(
                [&](uint32_t k) {
                    return bench::time_bare_kvm(loop_code(op, k), bench::kCodeBase);
                },
                n);
            double pot = per_iteration([&](uint32_t k) { return potemkin_run(op, k, "kvm"); }, n);
            std::printf("%-28s %14.1f %10.1f %15.2fx\n", op_name(op), bare, pot, pot / bare);
        }
        return 0;
    }
    if (engine != "unicorn") return usage(argv[0], 2);
    std::printf("potemkin bench_io: %u iterations per run, median of 5, ns per access\n", n);
    std::printf("%-28s %10s %12s %10s %16s\n", "access", "bare", "bare+block", "potemkin",
                "potemkin/bare");
    for (Op op : {Op::port_in, Op::mmio_read, Op::mmio_write}) {
        double bare = per_iteration([&](uint32_t k) { return bare_run(op, k, false); }, n);
        double bare_block = per_iteration([&](uint32_t k) { return bare_run(op, k, true); }, n);
        double pot = per_iteration([&](uint32_t k) { return potemkin_run(op, k, "unicorn"); }, n);
        std::printf("%-28s %10.1f %12.1f %10.1f %15.2fx\n", op_name(op), bare, bare_block, pot,
                    pot / bare);
    }
    return 0;
}
