// KvmEngine: guest code on the host CPU through Linux KVM (/dev/kvm), behind the same CpuEngine
// interface as Unicorn. What stays the VMM's, exactly as with Unicorn:
// - the interrupt controllers: no in-kernel irqchip. Potemkin's PIC and LAPIC pick the vector;
//   the machine injects it with KVM_INTERRUPT when the guest can take it (IF=1 and no interrupt
//   shadow: kvm_run's if_flag and ready_for_interrupt_injection), and asks for an exit when the
//   window opens (request_interrupt_window). EOIs are port or MMIO writes that exit like any
//   other, so they reach the devices as they do under Unicorn.
// - port and MMIO accesses: KVM_EXIT_IO (string I/O with its count) and KVM_EXIT_MMIO go to the
//   same CpuIo. The LAPIC page is plain MMIO that exits.
// - HLT: KVM_EXIT_HLT (userspace irqchip) returns `halted`.
// Guest memory (RAM and direct-mapped BAR memory) is KVM memory slots. Slots belong to the VM,
// not to a vCPU: vCPU 0's engine creates the VM and owns the slots, the others join it
// (EngineSettings::vm_peer) and leave memory to it.
//
// Stopping KVM_RUN from another thread (kick()): immediate_exit in the shared kvm_run page,
// plus SIGUSR1 to the vCPU thread. The thread keeps SIGUSR1 blocked except inside KVM_RUN
// (KVM_SET_SIGNAL_MASK), so a kick that arrives outside KVM_RUN interrupts no other system
// call: it stays pending, makes the next KVM_RUN return EINTR at once and is then consumed.
// The same signal, from a per-vCPU POSIX timer, is the round-robin quantum.
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "cpu/bus_io.hpp"
#include "cpu/cpu_engine.hpp"
#include "cpu/engine_factory.hpp"

namespace potemkin::cpu {
namespace {

constexpr int kKickSignal = SIGUSR1;

// Three ioctls take a struct ending in a flexible array, which <linux/kvm.h> wraps so that the
// struct is bigger in C++ than in C; the _IOW size, part of the number, then comes out wrong
// (the kernel answers EINVAL). Their numbers with the C sizes: struct kvm_signal_mask is 4
// bytes, struct kvm_cpuid2 8.
constexpr unsigned long kSetSignalMask = _IOC(_IOC_WRITE, KVMIO, 0x8b, 4);
constexpr unsigned long kGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr unsigned long kSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
constexpr uint64_t kPage = 4096;
constexpr uint32_t kIf = 1u << 9;

// The reasons /dev/kvm cannot be used, in the words a user can act on.
Error open_error(std::string_view device, int err) {
    switch (err) {
        case ENOENT:
            return Error{fmt::format("KVM is not available: {} does not exist (load the kvm module "
                                     "and kvm_amd or kvm_intel; is virtualization enabled in the "
                                     "firmware, or the CPU virtualized for nested guests?)",
                                     device),
                         err};
        case EACCES:
        case EPERM:
            return Error{fmt::format("KVM is not available: permission denied opening {} (add the "
                                     "user to the group that owns it, usually 'kvm')",
                                     device),
                         err};
        case ENXIO:
        case ENODEV:
            return Error{fmt::format("KVM is not available: {} has no driver behind it (load "
                                     "kvm_amd or kvm_intel)",
                                     device),
                         err};
        default:
            return Error{
                fmt::format("KVM is not available: open {}: {}", device, std::strerror(err)), err};
    }
}

// Capabilities the engine relies on.
struct NeededCap {
    int cap;
    const char* name;
};
constexpr std::array kNeededCaps = {
    NeededCap{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    NeededCap{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};

// /dev/kvm opened and checked: the API version and the capabilities above.
Result<UniqueFd> open_kvm(std::string_view device) {
    const std::string path(device);
    UniqueFd kvm(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!kvm) return fail(open_error(device, errno));
    const int version = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
    if (version < 0)
        return failf(Errno{errno},
                     "KVM is not available: {} is not a KVM device (KVM_GET_API_VERSION)", device);
    if (version != KVM_API_VERSION)
        return failf("KVM is not available: {} speaks KVM API version {}, this build needs {}",
                     device, version, KVM_API_VERSION);
    for (const auto& c : kNeededCaps)
        if (::ioctl(kvm.get(), KVM_CHECK_EXTENSION, c.cap) <= 0)
            return failf("KVM is not available: the kernel's KVM lacks {}", c.name);
    return kvm;
}

// The kick signal's handler does nothing: its arrival is what interrupts KVM_RUN.
void on_kick_signal(int) {}

Result<void> install_kick_handler() {
    static const Result<void> installed = []() -> Result<void> {
        struct sigaction sa {};
        sa.sa_handler = &on_kick_signal;
        sigemptyset(&sa.sa_mask);
        if (::sigaction(kKickSignal, &sa, nullptr) != 0)
            return failf(Errno{errno}, "kvm: installing the SIGUSR1 handler");
        return ok();
    }();
    return installed;
}

// The VM: its fd, the kvm_run size and the memory slots. Shared by the engines of its vCPUs.
class KvmVm {
  public:
    static Result<std::shared_ptr<KvmVm>> create(std::string_view device) {
        POTEMKIN_TRY_ASSIGN(UniqueFd kvm, open_kvm(device));
        auto vm = std::shared_ptr<KvmVm>(new KvmVm());
        vm->kvm_ = std::move(kvm);
        // Retry on EINTR: KVM_CREATE_VM may be interrupted while the kernel sets up the VM.
        int fd;
        do fd = ::ioctl(vm->kvm_.get(), KVM_CREATE_VM, 0);
        while (fd < 0 && errno == EINTR);
        if (fd < 0) return failf(Errno{errno}, "kvm: KVM_CREATE_VM");
        vm->vm_ = UniqueFd(fd);
        const int mmap_size = ::ioctl(vm->kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
        if (mmap_size < static_cast<int>(sizeof(kvm_run)))
            return failf(Errno{errno}, "kvm: KVM_GET_VCPU_MMAP_SIZE");
        vm->run_size_ = static_cast<size_t>(mmap_size);
        const int slots = ::ioctl(vm->kvm_.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
        vm->max_slots_ = slots > 0 ? static_cast<unsigned>(slots) : 32;
        // Without it guests see an empty CPUID; none of ours needs more, so it is not fatal.
        if (auto cpuid = vm->supported_cpuid())
            vm->cpuid_ = std::move(*cpuid);
        else
            log::warn("{}; guests see no CPUID leaves", cpuid.error().message);
        return vm;
    }

    int fd() const { return vm_.get(); }
    size_t run_size() const { return run_size_; }
    const std::vector<uint8_t>& cpuid() const { return cpuid_; }

    Result<void> add_slot(uint64_t base, uint64_t size, uint8_t* host, const char* what) {
        if (size == 0 || (base | size) % kPage != 0 || !host ||
            reinterpret_cast<uintptr_t>(host) % kPage != 0)
            return failf("kvm: {} [{:#x}, +{:#x}) is not page-aligned", what, base, size);
        for (const auto& s : slots_)
            if (base < s.base + s.size && s.base < base + size)
                return failf("kvm: {} [{:#x}, +{:#x}) overlaps mapped memory [{:#x}, +{:#x})", what,
                             base, size, s.base, s.size);
        unsigned id = 0;
        while (id < max_slots_ &&
               std::any_of(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.id == id; }))
            ++id;
        if (id == max_slots_) return failf("kvm: {}: all {} memory slots in use", what, max_slots_);
        POTEMKIN_TRY(set_slot(id, base, size, host, what));
        slots_.push_back({id, base, size});
        return ok();
    }

    Result<void> remove_slot(uint64_t base, uint64_t size, const char* what) {
        auto it = std::find_if(slots_.begin(), slots_.end(),
                               [&](const Slot& s) { return s.base == base && s.size == size; });
        if (it == slots_.end())
            return failf("kvm: {} [{:#x}, +{:#x}) was not mapped by map_host", what, base, size);
        // Size 0 deletes the slot; the range traps as MMIO again.
        POTEMKIN_TRY(set_slot(it->id, base, 0, nullptr, what));
        slots_.erase(it);
        return ok();
    }

  private:
    KvmVm() = default;

    struct Slot {
        unsigned id;
        uint64_t base, size;
    };

    Result<void> set_slot(unsigned id, uint64_t base, uint64_t size, uint8_t* host,
                          const char* what) {
        kvm_userspace_memory_region region{};
        region.slot = id;
        region.guest_phys_addr = base;
        region.memory_size = size;
        region.userspace_addr = reinterpret_cast<uintptr_t>(host);
        if (::ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
            const int err = errno;
            // KVM refuses a slot above the guest-physical address width it supports (e.g. a
            // 64-bit BAR placed high by a guest); the caller then traps the range instead.
            return failf(Errno{err}, "kvm: {} [{:#x}, +{:#x}): KVM_SET_USER_MEMORY_REGION{}", what,
                         base, size,
                         err == EINVAL ? " (beyond the guest-physical address width?)" : "");
        }
        return ok();
    }

    // What the host CPU and KVM offer, given to every vCPU as is (guests may ask CPUID).
    // KVM offers its paravirtual leaves (0x40000000: "KVMKVMKVM", kvmclock and friends) but
    // leaves CPUID.1:ECX bit 31, "running under a hypervisor", to the VMM. A guest OS only looks
    // for the leaves when that bit is set: without it Linux finds no kvmclock, fails to calibrate
    // the TSC (no HPET or PM timer here) and falls back to jiffies.
    static void mark_hypervisor(std::vector<uint8_t>& buf) {
        uint32_t n = 0;
        std::memcpy(&n, buf.data(), sizeof n);
        for (uint32_t i = 0; i < n; ++i) {
            kvm_cpuid_entry2 e;
            uint8_t* at = buf.data() + 8 + i * sizeof e;
            std::memcpy(&e, at, sizeof e);
            if (e.function != 1) continue;
            e.ecx |= 1u << 31;
            std::memcpy(at, &e, sizeof e);
        }
    }

    Result<std::vector<uint8_t>> supported_cpuid() const {
        for (uint32_t n = 64; n <= 4096; n *= 2) {
            // The C layout: u32 nent, u32 padding, then the entries (see kGetSupportedCpuid).
            std::vector<uint8_t> buf(8 + n * sizeof(kvm_cpuid_entry2));
            std::memcpy(buf.data(), &n, sizeof n);
            if (::ioctl(kvm_.get(), kGetSupportedCpuid, buf.data()) == 0) {
                mark_hypervisor(buf);
                return buf;
            }
            if (errno != E2BIG) return failf(Errno{errno}, "kvm: KVM_GET_SUPPORTED_CPUID");
        }
        return fail("kvm: KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
    }

    UniqueFd kvm_, vm_;
    size_t run_size_ = 0;
    unsigned max_slots_ = 32;
    std::vector<Slot> slots_;
    std::vector<uint8_t> cpuid_;
};

class KvmEngine final : public CpuEngine {
  public:
    explicit KvmEngine(const EngineSettings& s) : settings_(s) {}
    ~KvmEngine() override {
        if (timer_) ::timer_delete(*timer_);
        if (run_ && ::munmap(run_, vm_->run_size()) != 0)
            log::error("kvm: munmap of the vCPU's kvm_run: {}", std::strerror(errno));
    }

    // The VM this vCPU belongs to (vm_peer's when given).
    std::shared_ptr<KvmVm> vm() const { return vm_; }

    Result<void> open() {
        if (!settings_.io || !settings_.kick) return fail("kvm: engine settings lack io or kick");
        if (settings_.vm_peer) {
            auto* peer = dynamic_cast<KvmEngine*>(settings_.vm_peer);
            if (!peer) return fail("kvm: vm_peer is not a KVM engine");
            vm_ = peer->vm();
            owns_memory_ = false;
        } else {
            POTEMKIN_TRY_ASSIGN(vm_, KvmVm::create(settings_.kvm_device));
        }
        POTEMKIN_TRY(install_kick_handler());
        const int fd = ::ioctl(vm_->fd(), KVM_CREATE_VCPU, settings_.vcpu_index);
        if (fd < 0) return failf(Errno{errno}, "kvm: KVM_CREATE_VCPU {}", settings_.vcpu_index);
        vcpu_ = UniqueFd(fd);
        void* run =
            ::mmap(nullptr, vm_->run_size(), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_.get(), 0);
        if (run == MAP_FAILED) return failf(Errno{errno}, "kvm: mmap of the vCPU's kvm_run");
        run_ = static_cast<kvm_run*>(run);
        auto cpuid = vm_->cpuid();
        if (!cpuid.empty() && ::ioctl(vcpu_.get(), kSetCpuid2, cpuid.data()) != 0)
            return failf(Errno{errno}, "kvm: KVM_SET_CPUID2");
        return ok();
    }

    const char* name() const override { return "kvm"; }

    Result<void> map_ram(Gpa base, uint64_t size, uint8_t* host) override {
        ram_.push_back({base.value, size, host});  // for reading the GDT at boot
        if (!owns_memory_) return ok();            // vCPU 0's engine mapped it for the whole VM
        return vm_->add_slot(base.value, size, host, "map RAM");
    }

    // Nothing to do: every guest-physical address outside a memory slot exits as MMIO.
    Result<void> map_mmio(Gpa, uint64_t) override { return ok(); }

    Result<void> map_host(Gpa base, uint64_t size, uint8_t* host) override {
        if (!owns_memory_) return ok();
        return vm_->add_slot(base.value, size, host, "map_host");
    }

    Result<void> unmap_host(Gpa base, uint64_t size) override {
        if (!owns_memory_) return ok();
        return vm_->remove_slot(base.value, size, "unmap_host");
    }

    Result<void> set_boot_state(const BootState& s) override {
        kvm_sregs sregs{};
        if (::ioctl(vcpu_.get(), KVM_GET_SREGS, &sregs) != 0)
            return failf(Errno{errno}, "kvm: KVM_GET_SREGS");
        // The descriptor caches as loading each selector from the guest's GDT would fill them:
        // the engine enters protected mode directly, so nothing else would load them.
        POTEMKIN_TRY(load_segment(sregs.cs, s.gdt, s.regs.cs));
        POTEMKIN_TRY(load_segment(sregs.ds, s.gdt, s.regs.ds));
        POTEMKIN_TRY(load_segment(sregs.es, s.gdt, s.regs.es));
        POTEMKIN_TRY(load_segment(sregs.fs, s.gdt, s.regs.fs));
        POTEMKIN_TRY(load_segment(sregs.gs, s.gdt, s.regs.gs));
        POTEMKIN_TRY(load_segment(sregs.ss, s.gdt, s.regs.ss));
        // A task register and LDT VM entry accepts (a busy 32-bit TSS, an LDT), never used by a
        // ring-0 guest without task switches.
        auto system_segment = [](uint8_t type) {
            kvm_segment seg{};
            seg.limit = 0xffff;
            seg.type = type;
            seg.present = 1;
            return seg;
        };
        sregs.tr = system_segment(11);  // busy 32-bit TSS
        sregs.ldt = system_segment(2);  // LDT
        sregs.gdt = kvm_dtable{.base = s.gdt.base, .limit = s.gdt.limit, .padding = {}};
        sregs.idt = kvm_dtable{.base = 0, .limit = 0, .padding = {}};
        // Protected mode (PE) with the x87 extension type bit (ET), as Unicorn starts; paging,
        // long mode and everything in CR4 off.
        sregs.cr0 = 0x11;
        sregs.cr2 = sregs.cr3 = sregs.cr4 = 0;
        sregs.efer = 0;
        std::memset(sregs.interrupt_bitmap, 0, sizeof sregs.interrupt_bitmap);
        if (::ioctl(vcpu_.get(), KVM_SET_SREGS, &sregs) != 0)
            return failf(Errno{errno}, "kvm: KVM_SET_SREGS");
        const auto& r = s.regs;
        kvm_regs regs{};
        regs.rax = r.eax, regs.rbx = r.ebx, regs.rcx = r.ecx, regs.rdx = r.edx;
        regs.rsi = r.esi, regs.rdi = r.edi, regs.rbp = r.ebp, regs.rsp = r.esp;
        regs.rip = r.eip, regs.rflags = r.eflags | 0x2;
        if (::ioctl(vcpu_.get(), KVM_SET_REGS, &regs) != 0)
            return failf(Errno{errno}, "kvm: KVM_SET_REGS");
        // A reset drops whatever an earlier run left queued.
        kvm_vcpu_events events{};
        if (::ioctl(vcpu_.get(), KVM_SET_VCPU_EVENTS, &events) != 0)
            return failf(Errno{errno}, "kvm: KVM_SET_VCPU_EVENTS");
        fresh_state_ = true;
        return ok();
    }

    Registers registers() override {
        Registers r;
        kvm_regs regs{};
        kvm_sregs sregs{};
        if (::ioctl(vcpu_.get(), KVM_GET_REGS, &regs) != 0 ||
            ::ioctl(vcpu_.get(), KVM_GET_SREGS, &sregs) != 0) {
            log::error("kvm: vCPU {}: reading registers: {}", settings_.vcpu_index,
                       std::strerror(errno));
            return r;
        }
        auto lo = [](uint64_t v) { return static_cast<uint32_t>(v); };
        r.eax = lo(regs.rax), r.ebx = lo(regs.rbx), r.ecx = lo(regs.rcx), r.edx = lo(regs.rdx);
        r.esi = lo(regs.rsi), r.edi = lo(regs.rdi), r.ebp = lo(regs.rbp), r.esp = lo(regs.rsp);
        r.eip = lo(regs.rip), r.eflags = lo(regs.rflags);
        r.cr0 = lo(sregs.cr0), r.cr2 = lo(sregs.cr2), r.cr3 = lo(sregs.cr3), r.cr4 = lo(sregs.cr4);
        r.cs = sregs.cs.selector, r.ds = sregs.ds.selector, r.es = sregs.es.selector;
        r.fs = sregs.fs.selector, r.gs = sregs.gs.selector, r.ss = sregs.ss.selector;
        return r;
    }

    RunExit run() override {
        if (auto t = enter_thread(); !t) return fault_exit(-1, t.error().message);
        run_->request_interrupt_window = irq_window_ ? 1 : 0;
        if (settings_.preempt_interval.count() > 0) arm_quantum(settings_.preempt_interval);
        RunExit exit = run_loop();
        if (settings_.preempt_interval.count() > 0) arm_quantum(std::chrono::microseconds(0));
        {
            std::lock_guard lk(thread_mu_);
            in_run_ = false;
        }
        return exit;
    }

    void kick() override {
        // immediate_exit covers a KVM_RUN about to start, the signal one under way.
        __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
        std::lock_guard lk(thread_mu_);
        if (in_run_)
            if (int e = ::pthread_kill(thread_, kKickSignal); e != 0)
                log::error("kvm: kicking vCPU {}: {}", settings_.vcpu_index, std::strerror(e));
    }

    bool interrupts_enabled() override {
        // After set_boot_state the last exit says nothing about the current state.
        if (fresh_state_) return registers().eflags & kIf;
        // IF alone is not enough: in an interrupt shadow (after STI or MOV SS) KVM cannot inject.
        return run_->if_flag && run_->ready_for_interrupt_injection;
    }

    Result<void> inject_interrupt(uint8_t vector) override {
        kvm_interrupt irq{};
        irq.irq = vector;
        if (::ioctl(vcpu_.get(), KVM_INTERRUPT, &irq) != 0)
            return failf(Errno{errno}, "kvm: KVM_INTERRUPT {}", vector);
        // Queued: the guest takes it on the next entry, so it cannot take another before that.
        run_->ready_for_interrupt_injection = 0;
        return ok();
    }

    void set_interrupt_window(bool on) override { irq_window_ = on; }

    // The host CPU sees guest memory writes: no translated code to drop.
    void invalidate_code(Gpa, uint64_t) override {}

  private:
    // The descriptor cache for `selector`, read from the GDT in guest RAM.
    Result<void> load_segment(kvm_segment& seg, const DescriptorTable& gdt, uint16_t selector) {
        const uint32_t index = selector & ~7u;
        if (selector & 4)
            return failf("kvm: boot selector {:#x} names the LDT; only GDT selectors are supported",
                         selector);
        if (index + 7 > gdt.limit)
            return failf("kvm: boot selector {:#x} is beyond the GDT limit {:#x}", selector,
                         gdt.limit);
        uint64_t d = 0;
        POTEMKIN_TRY(read_ram(gdt.base + index, &d, sizeof d));
        uint32_t limit = static_cast<uint32_t>((d & 0xffff) | ((d >> 32) & 0xf0000));
        const bool g = (d >> 55) & 1;
        if (g) limit = (limit << 12) | 0xfff;
        seg = kvm_segment{};
        seg.base = static_cast<uint32_t>(((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000));
        seg.limit = limit;
        seg.selector = selector;
        seg.type = static_cast<uint8_t>((d >> 40) & 0xf);
        seg.s = (d >> 44) & 1;
        seg.dpl = (d >> 45) & 3;
        seg.present = (d >> 47) & 1;
        seg.avl = (d >> 52) & 1;
        seg.l = (d >> 53) & 1;
        seg.db = (d >> 54) & 1;
        seg.g = g;
        if (!seg.present)
            return failf("kvm: GDT entry for boot selector {:#x} is not present", selector);
        return ok();
    }

    // The GDT is read from guest RAM at boot, through the host mapping map_ram was given.
    Result<void> read_ram(uint64_t gpa, void* out, size_t n) {
        for (const auto& r : ram_)
            if (gpa >= r.base && gpa + n <= r.base + r.size) {
                std::memcpy(out, r.host + (gpa - r.base), n);
                return ok();
            }
        return failf("kvm: the GDT at {:#x} is not in guest RAM", gpa);
    }

    // The thread calling run() gets the kick signal blocked, except inside KVM_RUN; a new
    // thread (tests run a machine on a thread of their own) is set up once.
    Result<void> enter_thread() {
        const pthread_t self = ::pthread_self();
        const bool same = thread_set_ && ::pthread_equal(self, thread_);
        if (!same) {
            sigset_t block, current;
            sigemptyset(&block);
            sigaddset(&block, kKickSignal);
            if (int e = ::pthread_sigmask(SIG_BLOCK, &block, &current); e != 0)
                return failf(Errno{e}, "kvm: blocking SIGUSR1 on the vCPU thread");
            sigdelset(&current, kKickSignal);
            // The kernel's sigset is 8 bytes on x86-64: the first 64 signals of glibc's.
            // Laid out by hand, as in C: { u32 len; u8 sigset[len]; } (see kSetSignalMask).
            alignas(uint32_t) std::array<uint8_t, 4 + 8> mask{};
            const uint32_t len = 8;
            std::memcpy(mask.data(), &len, 4);
            std::memcpy(mask.data() + 4, &current, 8);
            if (::ioctl(vcpu_.get(), kSetSignalMask, mask.data()) != 0)
                return failf(Errno{errno}, "kvm: KVM_SET_SIGNAL_MASK");
            if (timer_) {
                ::timer_delete(*timer_);
                timer_.reset();
            }
        }
        std::lock_guard lk(thread_mu_);
        thread_ = self;
        thread_set_ = true;
        tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
        in_run_ = true;
        return ok();
    }

    // The round-robin quantum: one SIGUSR1 to this thread after `after` (0 disarms).
    void arm_quantum(std::chrono::microseconds after) {
        if (!timer_) {
            sigevent ev{};
            ev.sigev_notify = SIGEV_THREAD_ID;
            ev.sigev_signo = kKickSignal;
            ev._sigev_un._tid = tid_;
            timer_t t;
            if (::timer_create(CLOCK_MONOTONIC, &ev, &t) != 0) {
                log::error("kvm: vCPU {}: timer_create for the quantum: {}", settings_.vcpu_index,
                           std::strerror(errno));
                return;
            }
            timer_ = t;
        }
        itimerspec spec{};
        spec.it_value.tv_sec = after.count() / 1000000;
        spec.it_value.tv_nsec = (after.count() % 1000000) * 1000;
        if (::timer_settime(*timer_, 0, &spec, nullptr) != 0)
            log::error("kvm: vCPU {}: timer_settime: {}", settings_.vcpu_index,
                       std::strerror(errno));
    }

    // A kick signal that arrived outside KVM_RUN stays pending (blocked there) and would end
    // every later KVM_RUN at once: take it.
    void drain_kick_signal() {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, kKickSignal);
        const timespec zero{0, 0};
        while (::sigtimedwait(&set, nullptr, &zero) == kKickSignal) {
        }
    }

    RunExit run_loop() {
        for (;;) {
            if (settings_.kick->load(std::memory_order_seq_cst))
                __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
            const int r = ::ioctl(vcpu_.get(), KVM_RUN, 0);
            fresh_state_ = false;
            if (r != 0) {
                const int err = errno;
                if (err == EINTR || err == EAGAIN) {
                    // A kick, the quantum, or a stale signal: back to the machine either way.
                    // KVM_RUN has completed a pending I/O before returning, so the state is
                    // consistent.
                    __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
                    drain_kick_signal();
                    return {ExitReason::stop_requested, {}};
                }
                return fault_exit(-1, fmt::format("KVM_RUN failed: {}", std::strerror(err)));
            }
            switch (run_->exit_reason) {
                case KVM_EXIT_IO:
                    handle_io();
                    break;
                case KVM_EXIT_MMIO:
                    handle_mmio();
                    break;
                case KVM_EXIT_HLT:
                    return {ExitReason::halted, {}};
                case KVM_EXIT_IRQ_WINDOW_OPEN:
                    return {ExitReason::stop_requested, {}};
                case KVM_EXIT_INTR:
                    return {ExitReason::stop_requested, {}};
                case KVM_EXIT_SHUTDOWN:
                    // A triple fault: an exception met a missing IDT gate, then #DF did too.
                    // KVM reports neither the vector nor (on AMD, where it re-initialises the
                    // vCPU) the faulting EIP.
                    return fault_exit(-1,
                                      "triple fault (KVM_EXIT_SHUTDOWN): an exception could not "
                                      "be delivered and neither could #DF; KVM does not report "
                                      "which exception or where (the registers below may be the "
                                      "reset state)");
                case KVM_EXIT_INTERNAL_ERROR:
                    return internal_error();
                case KVM_EXIT_FAIL_ENTRY:
                    return fault_exit(
                        -1, fmt::format("VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason "
                                        "{:#x}): the vCPU state is invalid",
                                        run_->fail_entry.hardware_entry_failure_reason));
                default:
                    return fault_exit(
                        -1, fmt::format("unexpected KVM exit reason {}", run_->exit_reason));
            }
        }
    }

    // KVM_EXIT_IO: `count` accesses of `size` bytes (count > 1 for REP INS/OUTS), the data in
    // the kvm_run page at data_offset; for IN the page is filled and KVM_RUN copies it in.
    void handle_io() {
        auto& io = run_->io;
        uint8_t* data = reinterpret_cast<uint8_t*>(run_) + io.data_offset;
        const unsigned size = io.size;
        for (uint32_t i = 0; i < io.count; ++i, data += size) {
            if (io.direction == KVM_EXIT_IO_OUT) {
                uint32_t v = 0;
                std::memcpy(&v, data, size);
                settings_.io->port_out(io.port, size, v);
            } else {
                const uint32_t v = settings_.io->port_in(io.port, size);
                std::memcpy(data, &v, size);
            }
        }
    }

    void handle_mmio() {
        auto& m = run_->mmio;
        const unsigned size = std::min<unsigned>(m.len, 8);
        if (m.is_write) {
            uint64_t v = 0;
            std::memcpy(&v, m.data, size);
            settings_.io->mmio_write(m.phys_addr, size, v);
        } else {
            const uint64_t v = settings_.io->mmio_read(m.phys_addr, size);
            std::memcpy(m.data, &v, size);
        }
    }

    RunExit internal_error() {
        const auto& e = run_->internal;
        std::string what;
        switch (e.suberror) {
            case KVM_INTERNAL_ERROR_EMULATION:
                what =
                    "KVM could not emulate an instruction (an instruction fetch from memory "
                    "that is not RAM, or an instruction touching MMIO that KVM cannot "
                    "emulate)";
                break;
            case KVM_INTERNAL_ERROR_SIMUL_EX:
                what = "an exception while delivering an exception (KVM_INTERNAL_ERROR_SIMUL_EX)";
                break;
            case KVM_INTERNAL_ERROR_DELIVERY_EV:
                what = "an exit while delivering an event (KVM_INTERNAL_ERROR_DELIVERY_EV)";
                break;
            default:
                what = fmt::format("KVM internal error, suberror {}", e.suberror);
        }
        std::string data;
        for (uint32_t i = 0; i < std::min<uint32_t>(e.ndata, 16); ++i)
            data += fmt::format(" {:#x}", e.data[i]);
        if (!data.empty()) what += "; data" + data;
        Registers regs = registers();
        what += fmt::format(" at eip {:#x}", regs.eip);
        return {ExitReason::fault, FaultReport{-1, std::move(what), regs}};
    }

    RunExit fault_exit(int vector, std::string what) {
        return {ExitReason::fault, FaultReport{vector, std::move(what), registers()}};
    }

    EngineSettings settings_;
    std::shared_ptr<KvmVm> vm_;
    bool owns_memory_ = true;  // vCPU 0's engine: the memory slots are its to manage
    UniqueFd vcpu_;
    kvm_run* run_ = nullptr;
    struct Ram {
        uint64_t base, size;
        const uint8_t* host;
    };
    std::vector<Ram> ram_;
    bool irq_window_ = false;
    bool fresh_state_ = true;  // registers set since the last exit
    // The thread in run(), for kick() from other threads.
    std::mutex thread_mu_;
    pthread_t thread_{};
    bool thread_set_ = false;
    bool in_run_ = false;
    pid_t tid_ = 0;
    std::optional<timer_t> timer_;
};

}  // namespace

Result<void> kvm_usable(std::string_view device) {
    POTEMKIN_TRY_ASSIGN(UniqueFd kvm, open_kvm(device));
    return kvm.close();
}

Result<std::unique_ptr<CpuEngine>> create_kvm_engine(const EngineSettings& settings) {
    auto engine = std::make_unique<KvmEngine>(settings);
    POTEMKIN_TRY(engine->open());
    return std::unique_ptr<CpuEngine>(std::move(engine));
}

}  // namespace potemkin::cpu
