#include "machine/machine.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/log.hpp"
#include "devices/platform.hpp"
#include "machine/builtins.hpp"
#include "machine/elf_loader.hpp"
#include "machine/linux_loader.hpp"
#include "machine/trace_writer.hpp"
#include "pci/pci_bus.hpp"

namespace potemkin::machine {

namespace {
constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint32_t kGdtBase = 0x1000;
constexpr uint32_t kBootInfoBase = 0x2000;
constexpr uint32_t kCmdlineBase = 0x2100;
constexpr uint32_t kCmdlineMax = 0xeff;  // up to 0x2fff, NUL included
constexpr uint32_t kStackTop = 0x90000;
constexpr uint32_t kStackSize = 0x10000;

// docs/guest-abi.md
struct BootInfo {
    uint32_t magic = 0x4e4b5450;
    uint32_t version = 3;  // 2: reset_count (was reserved, 0, in version 1); 3: ECAM
    uint32_t cpu_count = 0;
    uint32_t reset_count = 0;
    uint64_t ram_size = 0;
    uint32_t cmdline = kCmdlineBase;
    uint32_t cmdline_len = 0;
    uint32_t ecam_base = 0;  // the PCI bus's ECAM window; 0 when there is none
    uint32_t ecam_size = 0;
};
static_assert(sizeof(BootInfo) == 40);
}  // namespace

int RunResult::process_status() const {
    switch (outcome) {
        case RunOutcome::exited:
            return static_cast<int>(exit_value & 0xff);
        case RunOutcome::timeout:
            return 124;
        case RunOutcome::halted:
            return 125;
        case RunOutcome::fault:
            return 126;
    }
    return 126;
}

Machine::Machine(MachineSettings settings)
    : settings_(std::move(settings)), timers_([this] { kick(); }) {}

Machine::~Machine() {
    {
        std::lock_guard lk(mutex_);
        quit_ = true;
    }
    kicker_cv_.notify_all();
    if (kicker_.joinable()) kicker_.join();
    // Devices go before the buses and controllers they registered with.
    devices_.reset();
    pit_.reset();
}

Result<std::unique_ptr<Machine>> Machine::create(MachineSettings settings) {
    POTEMKIN_TRY(register_builtins());
    std::unique_ptr<Machine> m(new Machine(std::move(settings)));
    POTEMKIN_TRY(m->build());
    return m;
}

Result<std::string> Machine::resolve_guest_file(const std::string& name) const {
    const auto& cfg = settings_.config;
    namespace fs = std::filesystem;
    if (fs::path(name).is_absolute()) return name;
    std::vector<std::string> tried;
    std::vector<std::string> dirs = {cfg.document->directory()};
    dirs.insert(dirs.end(), settings_.guest_search_path.begin(), settings_.guest_search_path.end());
    for (const auto& d : dirs) {
        if (d.empty()) continue;
        fs::path p = fs::path(d) / name;
        // The error_code form: a name too long for the file system is "not here", not an
        // exception.
        std::error_code ec;
        if (fs::exists(p, ec)) return p.string();
        tried.push_back(ec ? fmt::format("{} ({})", p.string(), ec.message()) : p.string());
    }
    std::string list;
    for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
    return failf("{}: guest file '{}' not found (looked in: {})", cfg.guest_where, name, list);
}

// Errors about the guest image name the <guest> line it came from (not for --guest).
Error Machine::guest_error(const Error& e) const {
    if (settings_.guest_override || settings_.config.guest_where.empty()) return e;
    return e.context(settings_.config.guest_where);
}

Result<void> Machine::build() {
    const auto& cfg = settings_.config;
    // An unknown engine, or KVM asked for where it cannot run, fails before any device (or
    // device process) exists. --engine wins over <vm engine>.
    std::string requested = settings_.engine;
    if (requested.empty()) requested = cfg.engine;
    if (requested.empty()) requested = cpu::kDefaultEngine;
    auto chosen = cpu::choose_engine(requested, settings_.kvm_device);
    if (!chosen) {
        if (settings_.engine.empty() && !cfg.engine_where.empty())
            return fail(chosen.error().context(cfg.engine_where));
        return fail(chosen.error());
    }
    const cpu::EngineEntry* engine_kind = *chosen;
    engine_name_ = engine_kind->name;
    if (!settings_.console) {
        settings_.console = [reported = false](std::string_view s) mutable {
            if (std::fwrite(s.data(), 1, s.size(), stdout) == s.size() && std::fflush(stdout) == 0)
                return;
            if (!std::exchange(reported, true))
                log::error("guest console: writing to standard output failed: {}",
                           std::strerror(errno));
        };
    }
    auto mem = vm::GuestMemory::create({{Gpa(0), cfg.memory_mib * kMiB}});
    if (!mem) return fail(mem.error());
    memory_ = std::move(*mem);
    memory_->set_write_observer([this](Gpa a, uint64_t n) {
        for (auto& v : vcpus_) v.engine->invalidate_code(a, n);
    });

    irq_ = std::make_unique<vm::InterruptController>(cfg.cores, [this] { kick(); });
    POTEMKIN_TRY(irq_->attach(ports_, mmio_, [this] { return current_vcpu_; }));

    if (settings_.trace_path) {
        auto t = TraceWriter::open(
            *settings_.trace_path, [this] { return current_vcpu_; }, *irq_);
        if (!t) return fail(t.error());
        trace_ = std::move(*t);
        ports_.set_tracer([this](const vm::BusAccess& a) { trace_->access(a); });
        mmio_.set_tracer([this](const vm::BusAccess& a) { trace_->access(a); });
    }

    const vm::DeviceClassRegistry& classes =
        settings_.classes ? *settings_.classes : vm::DeviceClassRegistry::builtin();
    devices_ = std::make_unique<vm::DeviceManager>(classes);
    auto console = devices::DebugConsole::create(ports_, settings_.console);
    if (!console) return fail(console.error());
    POTEMKIN_TRY(devices_->adopt(std::move(*console)));
    auto exit =
        devices::ExitPort::create(ports_, [this](uint32_t status) { request_exit(status); });
    if (!exit) return fail(exit.error());
    POTEMKIN_TRY(devices_->adopt(std::move(*exit)));

    pit_ = std::make_unique<vm::Pit8254>(timers_, [this](bool level) { irq_->set_irq(0, level); });
    POTEMKIN_TRY(pit_->attach(ports_, "pit"));
    POTEMKIN_TRY(rtc_.attach(ports_, "rtc"));

    device_ctx_ = std::make_unique<vm::DeviceContext>(vm::DeviceContext{
        // With a trace, devices' interrupts pass the writer, which records what they deliver.
        ports_, mmio_, *memory_, trace_ ? trace_->interrupts() : *irq_, timers_, *devices_,
        trace_.get(), [this](std::function<void()> fn) { post(std::move(fn)); },
        [this](int delta) {
            if (delta > 0)
                add_external_source();
            else
                remove_external_source();
        },
        [this](Gpa base, uint64_t size, uint8_t* host) { return map_direct(base, size, host); },
        [this](Gpa base, uint64_t size) { return unmap_direct(base, size); },
        [this](std::string why) { request_reset(std::move(why)); }, settings_.console});
    POTEMKIN_TRY(devices_->create_all(cfg.devices, *device_ctx_));

    for (unsigned i = 0; i < cfg.cores; ++i) {
        cpu::EngineSettings es;
        es.io = &io_;
        es.kick = &kick_;
        es.vcpu_index = i;
        es.preempt_blocks = cfg.cores > 1 ? settings_.preempt_blocks : 0;
        if (cfg.cores > 1) es.preempt_interval = settings_.preempt_interval;
        es.vm_peer = vcpus_.empty() ? nullptr : vcpus_.front().engine.get();
        es.kvm_device = settings_.kvm_device;
        POTEMKIN_TRY_ASSIGN(std::unique_ptr<cpu::CpuEngine> engine, engine_kind->make(es));
        for (const auto& r : memory_->regions())
            POTEMKIN_TRY(engine->map_ram(r.base, r.size, r.host));
        for (const auto& [base, d] : direct_)
            POTEMKIN_TRY(engine->map_host(Gpa(base), d.first, d.second));
        vcpus_.push_back(Vcpu{std::move(engine), false});
    }

    if (settings_.guest_override) {
        guest_path_ = *settings_.guest_override;
    } else if (!cfg.linux_kernel.empty()) {
        POTEMKIN_TRY_ASSIGN(linux_kernel_path_, resolve_guest_file(cfg.linux_kernel));
        if (!cfg.linux_initrd.empty()) {
            POTEMKIN_TRY_ASSIGN(linux_initrd_path_, resolve_guest_file(cfg.linux_initrd));
        }
    } else if (cfg.guest_file.empty()) {
        return failf("{}: no guest image: add <guest file=\"...\"/> to <vm> or pass --guest",
                     cfg.document->display_name());
    } else {
        POTEMKIN_TRY_ASSIGN(guest_path_, resolve_guest_file(cfg.guest_file));
    }
    return load_guest();
}

std::vector<pci::PciBus*> Machine::pci_buses() const {
    std::vector<pci::PciBus*> buses;
    for (const auto& d : devices_->devices())
        if (auto* bus = dynamic_cast<pci::PciBus*>(d.get())) buses.push_back(bus);
    return buses;
}

void Machine::firmware_for_linux() {
    // Linux booted without ACPI or a $PIR table takes a PCI function's IRQ from its
    // interrupt-line register and leaves the ELCR as it finds it: both are the BIOS's job.
    std::vector<uint8_t> lines;
    for (pci::PciBus* bus : pci_buses())
        for (uint8_t line : bus->assign_interrupt_lines()) lines.push_back(line);
    // ELCR1 (0x4D0, lines 0-7) and ELCR2 (0x4D1, lines 8-15): PCI lines are level-triggered.
    for (unsigned chip = 0; chip < 2; ++chip) {
        const Port port(static_cast<uint16_t>(0x4d0 + chip));
        auto elcr = static_cast<uint8_t>(ports_.read(port, 1));
        for (uint8_t line : lines)
            if (line / 8 == chip) elcr = static_cast<uint8_t>(elcr | (1u << (line % 8)));
        ports_.write(port, 1, elcr);
    }
}

Result<void> Machine::load_guest() {
    if (!linux_kernel_path_.empty()) {
        LinuxBootSettings linux;
        linux.kernel = linux_kernel_path_;
        linux.initrd = linux_initrd_path_;
        linux.cmdline = settings_.config.cmdline;
        auto state = load_linux(linux, *memory_);
        if (!state) return fail(guest_error(state.error()));
        firmware_for_linux();
        // One vCPU (the configuration insists): the kernel starts the others itself, which
        // needs INIT/SIPI (not emulated).
        return vcpus_.front().engine->set_boot_state(*state);
    }
    auto image = load_elf32(guest_path_, *memory_);
    if (!image) return fail(guest_error(image.error()));
    return write_boot_state(image->entry);
}

Result<void> Machine::map_direct(Gpa base, uint64_t size, uint8_t* host) {
    if (direct_.count(base.value))
        return failf("direct mapping at {:#x} exists already", base.value);
    for (size_t i = 0; i < vcpus_.size(); ++i) {
        if (auto r = vcpus_[i].engine->map_host(base, size, host); !r) {
            for (size_t k = 0; k < i; ++k)
                if (auto u = vcpus_[k].engine->unmap_host(base, size); !u)
                    log::error("vCPU {}: taking back [{:#x}, +{:#x}) after a failed map: {}", k,
                               base.value, size, u.error().message);
            return r;
        }
    }
    direct_[base.value] = {size, host};
    return ok();
}

Result<void> Machine::unmap_direct(Gpa base, uint64_t size) {
    auto it = direct_.find(base.value);
    if (it == direct_.end() || it->second.first != size)
        return failf("no direct mapping [{:#x}, +{:#x})", base.value, size);
    direct_.erase(it);
    Result<void> result = ok();
    for (auto& v : vcpus_)
        if (auto r = v.engine->unmap_host(base, size); !r && result) result = r;
    return result;
}

Result<void> Machine::write_boot_state(uint32_t entry) {
    const auto& cfg = settings_.config;
    // Flat 4 GiB ring-0 code (0x08) and data (0x10) segments.
    const uint64_t gdt[3] = {0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull};
    POTEMKIN_TRY(memory_->write_obj(Gpa(kGdtBase), gdt));
    if (cfg.cmdline.size() > kCmdlineMax)
        return failf("{}: <guest cmdline> is {} bytes; at most {} fit",
                     cfg.document->display_name(), cfg.cmdline.size(), kCmdlineMax);
    BootInfo info;
    info.cpu_count = cfg.cores;
    info.reset_count = resets_;
    info.ram_size = memory_->total_size();
    info.cmdline_len = static_cast<uint32_t>(cfg.cmdline.size());
    // The first PCI bus with an ECAM window (the window lies below 4 GiB, PciBus checks).
    for (const pci::PciBus* bus : pci_buses()) {
        if (!bus->ecam()) continue;
        info.ecam_base = static_cast<uint32_t>(bus->ecam()->base);
        info.ecam_size = static_cast<uint32_t>(bus->ecam()->size);
        break;
    }
    POTEMKIN_TRY(memory_->write_obj(Gpa(kBootInfoBase), info));
    std::vector<uint8_t> cmd(cfg.cmdline.begin(), cfg.cmdline.end());
    cmd.push_back(0);
    POTEMKIN_TRY(memory_->write(Gpa(kCmdlineBase), cmd));

    for (unsigned i = 0; i < vcpus_.size(); ++i) {
        cpu::BootState s;
        s.gdt = {kGdtBase, sizeof gdt - 1};
        s.regs.cs = 0x08;
        s.regs.ds = s.regs.es = s.regs.fs = s.regs.gs = s.regs.ss = 0x10;
        s.regs.eip = entry;
        s.regs.esp = kStackTop - i * kStackSize;
        s.regs.ebx = kBootInfoBase;
        s.regs.esi = i;
        s.regs.eflags = 0x2;
        POTEMKIN_TRY(vcpus_[i].engine->set_boot_state(s));
    }
    return ok();
}

void Machine::request_exit(uint32_t status) {
    if (exit_requested_) return;  // the first exit wins
    exit_requested_ = true;
    exit_value_ = status;
    kick();
}

void Machine::request_reset(std::string why) {
    if (reset_requested_) return;
    reset_requested_ = true;
    reset_reason_ = std::move(why);
    kick();
}

std::optional<RunResult> Machine::reset_vm() {
    reset_requested_ = false;
    if (resets_ >= settings_.max_resets)
        return RunResult{RunOutcome::fault, 0,
                         fmt::format("the guest asked for VM reset number {} ({}), but at most {} "
                                     "are allowed per run (max_resets): a reset loop?",
                                     resets_ + 1, reset_reason_, settings_.max_resets)};
    ++resets_;
    log::info("VM reset {}: {}", resets_, reset_reason_);
    // Devices first (vfio-user DEVICE_RESET, in-process models, PCI decode), while the
    // interrupt controllers still listen to the lines they drop; then the controllers.
    devices_->reset_all();
    irq_->reset();
    pit_->reset();
    rtc_.reset();
    auto fail_run = [](const std::string& what) {
        return RunResult{RunOutcome::fault, 0, "VM reset failed: " + what};
    };
    for (const auto& r : memory_->regions())
        if (auto f = memory_->fill(r.base, 0, r.size); !f) return fail_run(f.error().message);
    if (auto g = load_guest(); !g) return fail_run(g.error().message);
    for (auto& v : vcpus_) v.halted = false;
    return std::nullopt;
}

void Machine::kick() {
    {
        std::lock_guard lk(mutex_);
        kick_.store(true, std::memory_order_seq_cst);
    }
    kick_running_engine();
    wake_cv_.notify_all();
}

void Machine::kick_running_engine() {
    // Between runs `running_` is null and the flag alone does it: every run() looks at the flag
    // before it enters guest code.
    if (cpu::CpuEngine* e = running_.load(std::memory_order_seq_cst)) e->kick();
}

void Machine::post(std::function<void()> fn) {
    {
        std::lock_guard lk(mutex_);
        posted_.push_back(std::move(fn));
        kick_.store(true, std::memory_order_seq_cst);
    }
    kick_running_engine();
    wake_cv_.notify_all();
}

void Machine::run_posted() {
    std::vector<std::function<void()>> work;
    {
        std::lock_guard lk(mutex_);
        work.swap(posted_);
    }
    for (auto& fn : work) fn();
}

void Machine::set_kicker_deadline(std::optional<vm::Clock::time_point> when) {
    {
        std::lock_guard lk(mutex_);
        if (kicker_deadline_ == when) return;
        kicker_deadline_ = when;
    }
    kicker_cv_.notify_all();
}

void Machine::kicker_loop() {
    std::unique_lock lk(mutex_);
    while (!quit_) {
        if (!kicker_deadline_) {
            kicker_cv_.wait(lk);
            continue;
        }
        auto d = *kicker_deadline_;
        kicker_cv_.wait_until(lk, d);
        if (kicker_deadline_ && *kicker_deadline_ <= vm::Clock::now()) {
            kicker_deadline_.reset();
            kick_.store(true, std::memory_order_seq_cst);
            kick_running_engine();
            wake_cv_.notify_all();
        }
    }
}

void Machine::wait_for_kick() {
    std::unique_lock lk(mutex_);
    wake_cv_.wait(lk, [this] { return kick_.load(std::memory_order_relaxed) || !posted_.empty(); });
}

RunResult Machine::run() {
    if (!kicker_.joinable()) kicker_ = std::thread([this] { kicker_loop(); });
    std::optional<vm::Clock::time_point> timeout_at;
    if (settings_.timeout) timeout_at = vm::Clock::now() + *settings_.timeout;

    auto fault = [&](const cpu::FaultReport& f, unsigned vcpu) {
        return RunResult{RunOutcome::fault, 0, fmt::format("vCPU {}: {}", vcpu, f.describe())};
    };
    for (;;) {
        kick_.store(false, std::memory_order_relaxed);
        run_posted();
        timers_.run_due(vm::Clock::now());
        if (exit_requested_) return {RunOutcome::exited, exit_value_, {}};
        if (reset_requested_)
            if (auto end = reset_vm()) return *end;
        if (timeout_at && vm::Clock::now() >= *timeout_at)
            return {RunOutcome::timeout, 0,
                    fmt::format("timeout: the guest ran for {} ms without exiting",
                                settings_.timeout->count())};

        // The kicker turns the next deadline into a kick while the guest runs.
        auto next = timers_.next_deadline();
        if (timeout_at && (!next || *timeout_at < *next)) next = timeout_at;
        set_kicker_deadline(next);

        bool all_halted = true;
        for (unsigned i = 0; i < vcpus_.size(); ++i) {
            Vcpu& v = vcpus_[i];
            cpu::CpuEngine& e = *v.engine;
            current_vcpu_ = i;
            bool pending = irq_->has_interrupt(i);
            if (pending && e.interrupts_enabled()) {
                if (auto vector = irq_->acknowledge(i)) {
                    if (auto r = e.inject_interrupt(*vector); !r) {
                        cpu::FaultReport f{*vector,
                                           "interrupt could not be delivered: " + r.error().message,
                                           e.registers()};
                        return fault(f, i);
                    }
                    v.halted = false;
                }
                pending = irq_->has_interrupt(i);
            }
            if (v.halted) continue;
            all_halted = false;
            e.set_interrupt_window(pending);
            running_.store(&e, std::memory_order_seq_cst);
            cpu::RunExit ex = e.run();
            running_.store(nullptr, std::memory_order_seq_cst);
            if (ex.reason == cpu::ExitReason::fault) return fault(*ex.fault, i);
            if (ex.reason == cpu::ExitReason::halted) v.halted = true;
            if (exit_requested_) return {RunOutcome::exited, exit_value_, {}};
            if (reset_requested_) break;  // no other vCPU runs before the reset
        }
        if (reset_requested_) continue;

        if (all_halted ||
            std::all_of(vcpus_.begin(), vcpus_.end(), [](const Vcpu& v) { return v.halted; })) {
            // Something must be able to wake a halted vCPU: an interrupt needs IF=1 and a
            // source (a timer, a pending request, or work posted by a device thread).
            bool can_wake = false, deliverable_now = false;
            for (unsigned i = 0; i < vcpus_.size(); ++i) {
                if (!vcpus_[i].engine->interrupts_enabled()) continue;
                if (irq_->has_interrupt(i)) deliverable_now = true;
                if (!timers_.empty() || external_sources_ > 0) can_wake = true;
            }
            can_wake = can_wake || deliverable_now;
            if (!can_wake) {
                std::string regs = cpu::format_registers(vcpus_[0].engine->registers());
                return {RunOutcome::halted, 0,
                        fmt::format("every vCPU is halted and no interrupt can wake it "
                                    "(interrupts disabled or no interrupt source)\n{}",
                                    regs)};
            }
            if (!deliverable_now) wait_for_kick();
        }
    }
}

}  // namespace potemkin::machine
