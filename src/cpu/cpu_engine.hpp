// The engine that runs guest code, behind one small interface so Unicorn (embedded default)
// and KVM are interchangeable. One CpuEngine instance is one vCPU.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/address.hpp"
#include "common/result.hpp"

namespace potemkin::cpu {

struct Registers {
    uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0, esi = 0, edi = 0, ebp = 0, esp = 0;
    uint32_t eip = 0, eflags = 0x2;
    uint32_t cr0 = 0, cr2 = 0, cr3 = 0, cr4 = 0;
    uint16_t cs = 0, ds = 0, es = 0, fs = 0, gs = 0, ss = 0;
};
std::string format_registers(const Registers& r);

// Where guest port and MMIO accesses go. Called on the engine's thread. The machine gives every
// engine a BusIo (cpu/bus_io.hpp) over its buses; tests give fakes.
class CpuIo {
  public:
    virtual ~CpuIo() = default;
    virtual uint32_t port_in(uint16_t port, unsigned size) = 0;
    virtual void port_out(uint16_t port, unsigned size, uint32_t value) = 0;
    virtual uint64_t mmio_read(uint64_t address, unsigned size) = 0;
    virtual void mmio_write(uint64_t address, unsigned size, uint64_t value) = 0;
};

class CpuEngine;

struct DescriptorTable {
    uint32_t base = 0;
    uint16_t limit = 0;
};

// The state a guest is entered in (docs/guest-abi.md).
struct BootState {
    Registers regs;
    DescriptorTable gdt;
};

enum class ExitReason {
    stop_requested,  // the kick flag or the preemption quantum ended the slice
    halted,          // the vCPU executed HLT
    fault,           // a guest fault the engine could not deliver; see RunExit::fault
};

struct FaultReport {
    int vector = -1;  // -1 when the fault has no vector (e.g. fetch from unassigned memory)
    std::string what;
    Registers regs;
    std::string describe() const;
};

struct RunExit {
    ExitReason reason = ExitReason::stop_requested;
    std::optional<FaultReport> fault;
};

struct EngineSettings {
    CpuIo* io = nullptr;
    // Set by anyone (any thread) who needs the engine to return from run() soon: timers,
    // interrupts, device threads, exit. The engine only reads it.
    const std::atomic<bool>* kick = nullptr;
    unsigned vcpu_index = 0;
    // Return from run() after this many translation blocks (0 = never): round-robin
    // scheduling of several vCPUs on one host thread. Engines that see no blocks (KVM) use
    // preempt_interval instead: return from run() after this much time (0 = never).
    uint64_t preempt_blocks = 0;
    std::chrono::microseconds preempt_interval{0};
    // Engines whose vCPUs share one VM (KVM: the VM holds the memory slots) join the VM of this
    // engine, vCPU 0's; nullptr for vCPU 0. Unicorn ignores it (every engine is its own VM).
    CpuEngine* vm_peer = nullptr;
    // The KVM device (tests point it elsewhere to see the errors).
    std::string kvm_device = "/dev/kvm";
};

class CpuEngine {
  public:
    virtual ~CpuEngine() = default;
    virtual const char* name() const = 0;

    // Map guest RAM at `base` backed by `host` (shared with every other vCPU).
    virtual Result<void> map_ram(Gpa base, uint64_t size, uint8_t* host) = 0;
    // Route accesses to [base, base+size) to CpuIo::mmio_*. Any physical address that is
    // neither RAM nor mapped here is routed there too on first touch, so this is only an
    // optimisation; the MmioBus decides who answers.
    virtual Result<void> map_mmio(Gpa base, uint64_t size) = 0;
    // Map host memory (a device's shared BAR memory) straight into guest-physical space at
    // [base, base+size): guest accesses no longer exit. Page-aligned base and size; may be
    // called from inside an I/O callback (a config write that enables a BAR). MMIO pages
    // mapped lazily in the range are dropped first. unmap_host takes back exactly a range
    // map_host mapped; afterwards the range traps again (and reads all-ones if nothing decodes).
    virtual Result<void> map_host(Gpa base, uint64_t size, uint8_t* host) = 0;
    virtual Result<void> unmap_host(Gpa base, uint64_t size) = 0;

    // The entry state of docs/guest-abi.md: `state`'s registers and GDT, no IDT (base 0, limit
    // 0), paging off, CR0/CR3/CR4 as when the engine was created. Also a vCPU's reset.
    virtual Result<void> set_boot_state(const BootState& state) = 0;
    virtual Registers registers() = 0;

    // Run until the kick flag is seen, the preemption quantum ends, HLT, or a fault.
    virtual RunExit run() = 0;
    // Thread-safe: called after the kick flag was set, for engines that cannot poll the flag
    // while guest code runs (KVM interrupts KVM_RUN). A kick while run() is not running makes
    // the next run() return soon, at the latest when it sees the flag. Unicorn polls the flag
    // at every block and needs nothing more.
    virtual void kick() {}

    // Whether the stopped vCPU can take an external interrupt now: EFLAGS.IF (KVM also needs
    // it out of an interrupt shadow).
    virtual bool interrupts_enabled() = 0;
    // Deliver an external interrupt through the guest IDT now (the vCPU is stopped).
    // A vCPU stopped in front of HLT resumes after it (the STI shadow is invisible here,
    // and that is what hardware does for `sti; hlt`).
    virtual Result<void> inject_interrupt(uint8_t vector) = 0;
    // While an interrupt is pending with IF=0, also stop as soon as the guest sets IF.
    virtual void set_interrupt_window(bool on) = 0;

    // Drop translated code for a range written behind the engine's back (DMA, loader).
    virtual void invalidate_code(Gpa base, uint64_t size) = 0;
};

// Engines are made by name: cpu/engine_factory.hpp.

}  // namespace potemkin::cpu
