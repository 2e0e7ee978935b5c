// Runs one benchmark guest loop either on a bare Unicorn engine (the floor) or in a potemkin
// Machine, and returns the wall time of the run in ns. Shared by every guest-driven benchmark.
#pragma once

#include <unicorn/unicorn.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "flat_elf.hpp"
#include "machine/machine.hpp"
#include "pci/pci_bus.hpp"

namespace potemkin::bench {

inline constexpr uint32_t kCodeBase = 0x100000;
// Where the guest-driven benchmarks put BAR0 of the device under test.
inline constexpr uint32_t kBenchBar0 = 0xc000'0000;

// The guest loop every device benchmark runs: n 4-byte MMIO reads (or writes of the counter)
// of `address`, then exit 0 through port 0xF4.
//   mov ecx, n; mov ebx, address; 1: mov eax,[ebx] | mov [ebx],ecx; dec ecx; jnz 1b;
//   mov eax, 0; out 0xf4, eax; hlt
inline std::vector<uint8_t> mmio_loop(uint32_t address, uint32_t n, bool write = false) {
    std::vector<uint8_t> c = {0xb9,
                              uint8_t(n),
                              uint8_t(n >> 8),
                              uint8_t(n >> 16),
                              uint8_t(n >> 24),
                              0xbb,
                              uint8_t(address),
                              uint8_t(address >> 8),
                              uint8_t(address >> 16),
                              uint8_t(address >> 24)};
    if (write)
        c.insert(c.end(), {0x89, 0x0b});
    else
        c.insert(c.end(), {0x8b, 0x03});
    c.insert(c.end(), {0x49, 0x75, uint8_t(-5)});
    c.insert(c.end(), {0xb8, 0, 0, 0, 0, 0xe7, 0xf4, 0xf4});
    return c;
}

struct BareSettings {
    // The UC_HOOK_BLOCK potemkin needs for safe stops; off measures the engine's own floor.
    bool block_hook = true;
    // A 4 KiB page of null MMIO (reads 0, writes dropped); 0 for none.
    uint64_t mmio_page = 0;
};

// A Unicorn call in the floor's setup failed: its figure would mean nothing.
inline void uc_check(uc_err e, const char* what) {
    if (e == UC_ERR_OK) return;
    std::fprintf(stderr, "bench: unicorn %s: %s\n", what, uc_strerror(e));
    std::exit(1);
}

// The code runs from kCodeBase until HLT; IN returns 0 and OUT is ignored.
inline double time_bare_unicorn(const std::vector<uint8_t>& code, const BareSettings& s) {
    uc_engine* uc = nullptr;
    uc_check(uc_open(UC_ARCH_X86, UC_MODE_32, &uc), "open");
    uc_check(uc_mem_map(uc, 0, 4 << 20, UC_PROT_ALL), "map RAM");
    uc_check(uc_mem_write(uc, kCodeBase, code.data(), code.size()), "load code");
    uint32_t esp = 0x90000;
    uc_check(uc_reg_write(uc, UC_X86_REG_ESP, &esp), "write ESP");
    uc_hook h;
    auto in = +[](uc_engine*, uint32_t, int, void*) -> uint32_t { return 0; };
    auto out = +[](uc_engine*, uint32_t, int, uint32_t, void*) {};
    // The same work as potemkin's hook: one relaxed load of a flag that never gets set.
    auto block = +[](uc_engine*, uint64_t, uint32_t, void* flag) {
        if (static_cast<std::atomic<bool>*>(flag)->load(std::memory_order_relaxed)) std::abort();
    };
    std::atomic<bool> never{false};
    uc_check(uc_hook_add(uc, &h, UC_HOOK_INSN, reinterpret_cast<void*>(in), nullptr, 1, 0,
                         UC_X86_INS_IN),
             "hook IN");
    uc_check(uc_hook_add(uc, &h, UC_HOOK_INSN, reinterpret_cast<void*>(out), nullptr, 1, 0,
                         UC_X86_INS_OUT),
             "hook OUT");
    if (s.block_hook)
        uc_check(uc_hook_add(uc, &h, UC_HOOK_BLOCK, reinterpret_cast<void*>(block), &never, 1, 0),
                 "hook block");
    if (s.mmio_page)
        uc_check(uc_mmio_map(
                     uc, s.mmio_page, 0x1000,
                     [](uc_engine*, uint64_t, unsigned, void*) -> uint64_t { return 0; }, nullptr,
                     [](uc_engine*, uint64_t, unsigned, uint64_t, void*) {}, nullptr),
                 "map MMIO");
    auto t0 = Clock::now();
    const uc_err run = uc_emu_start(uc, kCodeBase, 0xffff'ffff'ffff'fff0ull, 0, 0);
    double ns = ns_since(t0);
    uc_check(run, "run");
    uc_check(uc_close(uc), "close");
    return ns;
}

// The code (which must exit through port 0xF4) runs in a Machine with `devices_xml` inside
// <devices>; `setup` runs after creation and before the clock starts (firmware's work).
// `engine`: the CPU engine by name ("" for the default).
// How time_machine runs the VM besides the guest and its devices.
struct MachineRunSettings {
    std::string engine;      // the CPU engine by name ("" for the default)
    std::string trace_path;  // "" for no trace; else `potemkin run --trace` to this file
};

inline double time_machine(const std::vector<uint8_t>& code, const std::string& devices_xml,
                           const std::function<void(machine::Machine&)>& setup,
                           const MachineRunSettings& run) {
    const std::string path = "/tmp/potemkin-bench-guest.elf";
    if (!testing::write_flat_elf(path, code, kCodeBase)) {
        std::fprintf(stderr, "bench: could not write %s\n", path.c_str());
        std::exit(1);
    }
    auto doc =
        vm::ConfigDocument::load_string("<vm><memory>16</memory><guest file=\"" + path +
                                            "\"/><devices>" + devices_xml + "</devices></vm>",
                                        "bench.xml");
    if (!doc) {
        std::fprintf(stderr, "bench: %s\n", doc.error().message.c_str());
        std::exit(1);
    }
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg) {
        std::fprintf(stderr, "bench: %s\n", cfg.error().message.c_str());
        std::exit(1);
    }
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.engine = run.engine;
    if (!run.trace_path.empty()) s.trace_path = run.trace_path;
    auto m = machine::Machine::create(std::move(s));
    if (!m) {
        std::fprintf(stderr, "bench: %s\n", m.error().message.c_str());
        std::exit(1);
    }
    if (setup) setup(**m);
    auto t0 = Clock::now();
    auto r = (*m)->run();
    double ns = ns_since(t0);
    if (r.outcome != machine::RunOutcome::exited) {
        std::fprintf(stderr, "bench: guest did not exit: %s\n", r.message.c_str());
        std::exit(1);
    }
    return ns;
}

inline double time_machine(const std::vector<uint8_t>& code, const std::string& devices_xml,
                           const std::function<void(machine::Machine&)>& setup = {},
                           const std::string& engine = "") {
    return time_machine(code, devices_xml, setup, MachineRunSettings{engine, ""});
}

// A PCI bus with PCI_FRONT `hostdev` in slot 3, and its BAR0 programmed at `bar0` with memory
// decode on, as firmware would. `trace_path`: trace the run there ("" for none).
inline double time_pci_front(const std::vector<uint8_t>& code, const std::string& hostdev,
                             uint32_t bar0, const std::string& trace_path = "") {
    return time_machine(
        code,
        "<device class=\"PCI\" id=\"pci0\"/><device class=\"PCI_FRONT\" "
        "id=\"dev0\" bus=\"pci0\" hostdev=\"" +
            hostdev + "\" slot=\"3\"/>",
        [bar0](machine::Machine& m) {
            auto* bus = m.devices().find_as<pci::PciBus>("pci0");
            bus->config_write({0, 3, 0}, 0x10, 4, bar0);
            bus->config_write({0, 3, 0}, 0x04, 2, 0x0002);
            if (bus->rejected_writes() != 0) {
                std::fprintf(stderr, "bench: BAR0 at %#x was refused\n", bar0);
                std::exit(1);
            }
        },
        MachineRunSettings{"", trace_path});
}

}  // namespace potemkin::bench
