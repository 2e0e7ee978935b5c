// The assembled VM: guest memory, buses, interrupt controllers, timers, devices and one CPU
// engine per vCPU, all driven from one host thread (UNICORN.md gotcha 12: LOCK-prefixed
// instructions are only atomic across vCPUs that share a thread).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cpu/bus_io.hpp"
#include "cpu/cpu_engine.hpp"
#include "cpu/engine_factory.hpp"
#include "vm/bus.hpp"
#include "vm/cmos_rtc.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"
#include "vm/guest_memory.hpp"
#include "vm/interrupt_controller.hpp"
#include "vm/pit.hpp"
#include "vm/timer_queue.hpp"

namespace potemkin::pci {
class PciBus;
}  // namespace potemkin::pci

namespace potemkin::machine {

class TraceWriter;

struct MachineSettings {
    vm::VmConfig config;
    std::optional<std::string> guest_override;  // --guest
    // Searched for a relative guest path after the config file's directory (the build's
    // guests/ folder, so `potemkin run examples/hello.xml` finds hello.elf).
    std::vector<std::string> guest_search_path;
    std::optional<std::chrono::milliseconds> timeout;
    std::optional<std::string> trace_path;
    // Guest console bytes; default: standard output, flushed per write.
    std::function<void(std::string_view)> console;
    // Device classes; default: the built-in ones (vm::DeviceClassRegistry::builtin(), filled by
    // register_builtins()).
    const vm::DeviceClassRegistry* classes = nullptr;
    // The CPU engine every vCPU runs on, by name (cpu/engine_factory.hpp: "unicorn", "kvm", or
    // "auto"); empty: the config's <vm engine>, else cpu::kDefaultEngine.
    std::string engine;
    // The KVM device "kvm" and "auto" look at (tests point it elsewhere).
    std::string kvm_device = "/dev/kvm";
    // Translation blocks (Unicorn), or time (KVM), a vCPU runs before the next one gets its turn
    // (several vCPUs only).
    uint64_t preempt_blocks = 20000;
    std::chrono::microseconds preempt_interval{2000};
    // VM resets the guest may trigger in one run (docs/guest-abi.md, "VM reset"); the one after
    // that ends the run as a fault, so a guest stuck in a reset loop does not run forever.
    unsigned max_resets = 16;
};

enum class RunOutcome { exited, timeout, halted, fault };

struct RunResult {
    RunOutcome outcome = RunOutcome::exited;
    uint32_t exit_value = 0;  // what the guest wrote to port 0xF4
    std::string message;      // for timeout, halted, fault
    // The process status `potemkin run` exits with (docs/guest-abi.md).
    int process_status() const;
};

class Machine final {
  public:
    static Result<std::unique_ptr<Machine>> create(MachineSettings settings);
    ~Machine();

    RunResult run();

    // Thread-safe: make the engine return to the run loop soon (device threads, timers).
    void kick();
    // Thread-safe: run `fn` on the engine thread at the next opportunity.
    void post(std::function<void()> fn);
    // A device thread that may raise interrupts while every vCPU is halted registers here, so a
    // halted guest waits for it instead of ending the run.
    void add_external_source() { ++external_sources_; }
    void remove_external_source() { --external_sources_; }

    vm::PortBus& ports() { return ports_; }
    vm::MmioBus& mmio() { return mmio_; }
    vm::GuestMemory& memory() { return *memory_; }
    vm::DeviceManager& devices() { return *devices_; }
    vm::InterruptController& interrupts() { return *irq_; }
    unsigned current_vcpu() const { return current_vcpu_; }
    // The engine the vCPUs run on ("unicorn", "kvm"; "auto" resolved).
    std::string_view engine_name() const { return engine_name_; }
    // VM resets performed so far (the guest sees it in its boot-info block).
    unsigned resets() const { return resets_; }

  private:
    explicit Machine(MachineSettings settings);
    Result<void> build();
    // A file named in <guest> (file=, kernel=, initrd=), found next to the config or in the
    // guest search path.
    Result<std::string> resolve_guest_file(const std::string& name) const;
    Error guest_error(const Error& e) const;
    // Resolves the guest's files (once), loads them into RAM and puts every vCPU at its entry
    // state: an ELF guest (docs/guest-abi.md) or a Linux kernel (docs/linux-guest.md). At
    // build and at every VM reset.
    Result<void> load_guest();
    // What a PC BIOS leaves behind that a Linux kernel relies on (interrupt-line registers,
    // level-triggered PCI lines in the ELCR).
    void firmware_for_linux();
    // The VM's PCI buses (devices of the PCI class), in configuration order.
    std::vector<pci::PciBus*> pci_buses() const;
    Result<void> write_boot_state(uint32_t entry);
    void request_exit(uint32_t status);
    // DeviceContext::request_reset: reset once the running vCPU stops (the next turn of run()).
    void request_reset(std::string why);
    // The VM reset: devices, interrupt controllers and PIT to their power-on state, guest RAM
    // cleared, the guest reloaded, every vCPU at the entry state. A result when the run must
    // end (the reset limit, or the guest could not be reloaded).
    std::optional<RunResult> reset_vm();
    void kicker_loop();
    // After setting kick_: interrupt the engine that is running, if it cannot poll the flag.
    void kick_running_engine();
    void set_kicker_deadline(std::optional<vm::Clock::time_point> when);
    void wait_for_kick();
    void run_posted();
    // DeviceContext::map_direct / unmap_direct: on every vCPU (and vCPUs created later).
    Result<void> map_direct(Gpa base, uint64_t size, uint8_t* host);
    Result<void> unmap_direct(Gpa base, uint64_t size);

    MachineSettings settings_;
    std::unique_ptr<vm::GuestMemory> memory_;
    vm::PortBus ports_{vm::Space::io, 0x10000};
    vm::MmioBus mmio_{vm::Space::mmio, 0};
    // What every vCPU's engine calls for guest port and MMIO accesses.
    cpu::BusIo io_{ports_, mmio_};
    std::unique_ptr<vm::InterruptController> irq_;
    vm::TimerQueue timers_;
    std::unique_ptr<TraceWriter> trace_;
    std::unique_ptr<vm::DeviceManager> devices_;
    std::unique_ptr<vm::Pit8254> pit_;
    vm::CmosRtc rtc_;
    std::unique_ptr<vm::DeviceContext> device_ctx_;

    struct Vcpu {
        std::unique_ptr<cpu::CpuEngine> engine;
        bool halted = false;
    };
    std::vector<Vcpu> vcpus_;
    std::map<uint64_t, std::pair<uint64_t, uint8_t*>> direct_;  // base -> size, host
    unsigned current_vcpu_ = 0;

    std::atomic<bool> kick_{false};
    // The engine inside run(), for kick_running_engine() from other threads.
    std::atomic<cpu::CpuEngine*> running_{nullptr};
    std::string engine_name_;
    bool exit_requested_ = false;
    bool reset_requested_ = false;
    std::string reset_reason_;
    unsigned resets_ = 0;
    std::string guest_path_;  // resolved at build, reloaded by a VM reset
    std::string linux_kernel_path_, linux_initrd_path_;  // the same for a Linux guest
    // Threads outside the engine that may raise interrupts (out-of-process devices).
    std::atomic<unsigned> external_sources_{0};
    uint32_t exit_value_ = 0;

    // The kicker thread turns deadlines (timers, --timeout) into kicks.
    std::mutex mutex_;
    std::condition_variable kicker_cv_, wake_cv_;
    std::optional<vm::Clock::time_point> kicker_deadline_;
    bool quit_ = false;
    std::vector<std::function<void()>> posted_;
    std::thread kicker_;
};

}  // namespace potemkin::machine
