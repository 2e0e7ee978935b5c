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

#include "bench_util.hpp"
#include "flat_elf.hpp"
#include "machine/machine.hpp"
#include "pci/pci_bus.hpp"
#include "pci/registers.hpp"

using namespace potemkin;

namespace {

constexpr uint32_t kCodeBase = 0x100000;
constexpr uint32_t kBar0 = 0xc000'0000;
using bench::Clock;
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
    uc_engine* uc = nullptr;
    uc_open(UC_ARCH_X86, UC_MODE_32, &uc);
    uc_mem_map(uc, 0, 4 << 20, UC_PROT_ALL);
    auto code = loop_code(write, n);
    uc_mem_write(uc, kCodeBase, code.data(), code.size());
    uc_hook h;
    auto out = +[](uc_engine*, uint32_t, int, uint32_t, void*) {};
    auto block = +[](uc_engine*, uint64_t, uint32_t, void*) {};
    uc_hook_add(uc, &h, UC_HOOK_INSN, reinterpret_cast<void*>(out), nullptr, 1, 0, UC_X86_INS_OUT);
    uc_hook_add(uc, &h, UC_HOOK_BLOCK, reinterpret_cast<void*>(block), nullptr, 1, 0);
    uc_mmio_map(
        uc, kBar0, 0x1000, [](uc_engine*, uint64_t, unsigned, void*) -> uint64_t { return 0; },
        nullptr, [](uc_engine*, uint64_t, unsigned, uint64_t, void*) {}, nullptr);
    auto t0 = Clock::now();
    uc_emu_start(uc, kCodeBase, 0xffff'ffff'ffff'fff0ull, 0, 0);
    auto t1 = Clock::now();
    uc_close(uc);
    return std::chrono::duration<double, std::nano>(t1 - t0).count();
}

double potemkin_run(bool write, uint32_t n) {
    const std::string path = "/tmp/potemkin-bench-edu.elf";
    testing::write_flat_elf(path, loop_code(write, n));
    auto doc = vm::ConfigDocument::load_string(
        "<vm><memory>16</memory><guest file=\"" + path +
            "\"/><devices><device class=\"PCI\" id=\"pci0\"/>"
            "<device class=\"PCI_FRONT\" id=\"edu0\" bus=\"pci0\" hostdev=\"inproc:edu\" "
            "slot=\"3\"/></devices></vm>",
        "bench.xml");
    auto cfg = vm::parse_vm_config(*doc);
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    auto m = machine::Machine::create(std::move(s));
    if (!m) {
        std::fprintf(stderr, "bench: %s\n", m.error().message.c_str());
        std::exit(1);
    }
    // Firmware's job, done from the host side: BAR0 at kBar0, memory decode on.
    auto* bus = (*m)->devices().find_as<pci::PciBus>("pci0");
    pci::PciAddress edu{0, 3, 0};
    bus->config_write(edu, 0x10, 4, kBar0);
    bus->config_write(edu, 0x04, 2, 0x0002);
    auto t0 = Clock::now();
    auto r = (*m)->run();
    auto t1 = Clock::now();
    if (r.outcome != machine::RunOutcome::exited) {
        std::fprintf(stderr, "bench: guest did not exit: %s\n", r.message.c_str());
        std::exit(1);
    }
    return std::chrono::duration<double, std::nano>(t1 - t0).count();
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
