// UnicornEngine: the embedded CPU engine (Debian 12's Unicorn 2.0.1), honouring every gotcha in
// ../shared/design/UNICORN.md:
// - stop only through the kick flag checked in a UC_HOOK_BLOCK callback, never uc_emu_stop()
//   from an I/O hook or another thread (gotcha 1);
// - the guest IDT is walked here: INT n, CPU exceptions and external interrupts are delivered
//   by the VMM for ring-0 32-bit guests (gotchas 3, 4);
// - HLT returns from run() and the machine decides when an interrupt wakes it;
// - unassigned physical memory is mapped on first touch as MMIO routed to the bus, which reads
//   all-ones where nothing answers: the whole free part of the 16 MiB block around the access,
//   merged with adjacent MMIO ranges, so a guest probing address space page by page adds at
//   most a few ranges per block. (Per-page mappings piled up: every one is a section in
//   Unicorn's dispatch table, each access got slower, and at 4096 sections Unicorn asserts.)
// - translated code is dropped after writes behind the engine's back (gotcha 10).
#include <unicorn/unicorn.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "common/log.hpp"
#include "cpu/bus_io.hpp"
#include "cpu/cpu_engine.hpp"
#include "cpu/unicorn_env_probe.hpp"

namespace potemkin::cpu {
namespace {

constexpr uint64_t kPage = 4096;
// Unassigned memory is mapped as MMIO a block at a time (see the header).
constexpr uint64_t kMmioBlock = 16ull << 20;
constexpr uint32_t kIf = 1u << 9, kTf = 1u << 8, kNt = 1u << 14, kRf = 1u << 16;
// An exit address a 32-bit EIP can never equal: uc_emu_start needs one, we want none.
constexpr uint64_t kNoExit = 0xffff'ffff'ffff'fff0ull;

// Exceptions for which the processor pushes an error code (SDM vol. 3, table 6-1).
bool pushes_error_code(uint32_t vector) {
    switch (vector) {
        case 8:
        case 10:
        case 11:
        case 12:
        case 13:
        case 14:
        case 17:
        case 21:
            return true;
        default:
            return false;
    }
}

class UnicornEngine final : public CpuEngine {
  public:
    explicit UnicornEngine(const EngineSettings& s) : settings_(s) {}
    ~UnicornEngine() override {
        if (ctx_) uc_context_free(ctx_);
        if (uc_)
            if (auto e = uc_close(uc_); e != UC_ERR_OK)
                log::error("unicorn: uc_close: {}", uc_strerror(e));
    }

    Result<void> open() {
        if (!settings_.io || !settings_.kick)
            return fail("unicorn: engine settings lack io or kick");
        hooks_ = dynamic_cast<BusIo*>(settings_.io) ? io_hooks<BusIo>() : io_hooks<CpuIo>();
        if (auto e = uc_open(UC_ARCH_X86, UC_MODE_32, &uc_); e != UC_ERR_OK)
            return failf("unicorn: uc_open: {}", uc_strerror(e));
        uc_hook h;
        POTEMKIN_TRY(check(
            uc_hook_add(uc_, &h, UC_HOOK_BLOCK, reinterpret_cast<void*>(&on_block), this, 1, 0),
            "hook block"));
        POTEMKIN_TRY(check(uc_hook_add(uc_, &h, UC_HOOK_INSN, hooks_.in, this, 1, 0, UC_X86_INS_IN),
                           "hook IN"));
        POTEMKIN_TRY(
            check(uc_hook_add(uc_, &h, UC_HOOK_INSN, hooks_.out, this, 1, 0, UC_X86_INS_OUT),
                  "hook OUT"));
        POTEMKIN_TRY(
            check(uc_hook_add(uc_, &h, UC_HOOK_INTR, reinterpret_cast<void*>(&on_intr), this, 1, 0),
                  "hook INTR"));
        POTEMKIN_TRY(check(uc_hook_add(uc_, &h, UC_HOOK_INSN_INVALID,
                                       reinterpret_cast<void*>(&on_invalid), this, 1, 0),
                           "hook invalid instruction"));
        POTEMKIN_TRY(check(uc_hook_add(uc_, &h, UC_HOOK_MEM_UNMAPPED,
                                       reinterpret_cast<void*>(&on_unmapped), this, 1, 0),
                           "hook unmapped"));
        return ok();
    }

    const char* name() const override { return "unicorn"; }

    Result<void> map_ram(Gpa base, uint64_t size, uint8_t* host) override {
        POTEMKIN_TRY(check(uc_mem_map_ptr(uc_, base.value, size, UC_PROT_ALL, host), "map RAM"));
        ram_.push_back({base.value, base.value + size});
        return ok();
    }

    Result<void> map_mmio(Gpa base, uint64_t size) override {
        const uint64_t first = base.value & ~(kPage - 1);
        const uint64_t last = (base.value + size + kPage - 1) & ~(kPage - 1);
        return map_mmio_range(first, last);
    }

    Result<void> map_host(Gpa base, uint64_t size, uint8_t* host) override {
        const uint64_t begin = base.value, end = base.value + size;
        if (size == 0 || (begin | size) % kPage != 0 || !host)
            return failf("unicorn: map_host [{:#x}, +{:#x}) is not page-aligned", begin, size);
        if (is_ram(begin) || is_ram(end - 1) || overlaps_direct(begin, end))
            return failf("unicorn: map_host [{:#x}, +{:#x}) overlaps mapped memory", begin, size);
        // Lazily mapped MMIO in the range gives way; what it covered outside the range stays
        // MMIO (the range comes back as MMIO on the next touch after unmap_host).
        POTEMKIN_TRY(carve_mmio(begin, end));
        POTEMKIN_TRY(check(uc_mem_map_ptr(uc_, begin, size, UC_PROT_ALL, host), "map host memory"));
        direct_.push_back({begin, end});
        POTEMKIN_TRY(check(uc_ctl_remove_cache(uc_, begin, end), "drop translated code"));
        return ok();
    }

    Result<void> unmap_host(Gpa base, uint64_t size) override {
        const uint64_t begin = base.value, end = base.value + size;
        auto it = std::find_if(direct_.begin(), direct_.end(),
                               [&](const Range& r) { return r.begin == begin && r.end == end; });
        if (it == direct_.end())
            return failf("unicorn: unmap_host [{:#x}, +{:#x}) was not mapped by map_host", begin,
                         size);
        POTEMKIN_TRY(check(uc_mem_unmap(uc_, begin, size), "unmap host memory"));
        direct_.erase(it);
        POTEMKIN_TRY(check(uc_ctl_remove_cache(uc_, begin, end), "drop translated code"));
        return ok();
    }

    Result<void> set_boot_state(const BootState& s) override {
        // The control registers as the engine came up (protected mode, paging off); a guest
        // that changed them before a VM reset gets them back.
        if (!initial_cr_) {
            std::array<uint32_t, 3> cr{};
            POTEMKIN_TRY(check(uc_reg_read(uc_, UC_X86_REG_CR0, &cr[0]), "read CR0"));
            POTEMKIN_TRY(check(uc_reg_read(uc_, UC_X86_REG_CR3, &cr[1]), "read CR3"));
            POTEMKIN_TRY(check(uc_reg_read(uc_, UC_X86_REG_CR4, &cr[2]), "read CR4"));
            initial_cr_ = cr;
        } else {
            const int ids[] = {UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4};
            for (size_t i = 0; i < 3; ++i) {
                uint32_t v = (*initial_cr_)[i];
                POTEMKIN_TRY(check(uc_reg_write(uc_, ids[i], &v), "write control registers"));
            }
        }
        uc_x86_mmr idtr{0, 0, 0, 0};
        POTEMKIN_TRY(check(uc_reg_write(uc_, UC_X86_REG_IDTR, &idtr), "write IDTR"));
        uc_x86_mmr gdtr{0, s.gdt.base, s.gdt.limit, 0};
        POTEMKIN_TRY(check(uc_reg_write(uc_, UC_X86_REG_GDTR, &gdtr), "write GDTR"));
        const auto& r = s.regs;
        const std::pair<int, uint32_t> regs[] = {
            {UC_X86_REG_CS, r.cs},        {UC_X86_REG_DS, r.ds},   {UC_X86_REG_ES, r.es},
            {UC_X86_REG_FS, r.fs},        {UC_X86_REG_GS, r.gs},   {UC_X86_REG_SS, r.ss},
            {UC_X86_REG_EAX, r.eax},      {UC_X86_REG_EBX, r.ebx}, {UC_X86_REG_ECX, r.ecx},
            {UC_X86_REG_EDX, r.edx},      {UC_X86_REG_ESI, r.esi}, {UC_X86_REG_EDI, r.edi},
            {UC_X86_REG_EBP, r.ebp},      {UC_X86_REG_ESP, r.esp}, {UC_X86_REG_EIP, r.eip},
            {UC_X86_REG_EFLAGS, r.eflags}};
        for (const auto& [id, v] : regs) {
            uint32_t value = v;
            POTEMKIN_TRY(check(uc_reg_write(uc_, id, &value), "write boot registers"));
        }
        return ok();
    }

    Registers registers() override {
        Registers r;
        auto rd32 = [&](int id) {
            uint32_t v = 0;
            uc_reg_read(uc_, id, &v);
            return v;
        };
        r.eax = rd32(UC_X86_REG_EAX), r.ebx = rd32(UC_X86_REG_EBX), r.ecx = rd32(UC_X86_REG_ECX);
        r.edx = rd32(UC_X86_REG_EDX), r.esi = rd32(UC_X86_REG_ESI), r.edi = rd32(UC_X86_REG_EDI);
        r.ebp = rd32(UC_X86_REG_EBP), r.esp = rd32(UC_X86_REG_ESP), r.eip = rd32(UC_X86_REG_EIP);
        r.eflags = rd32(UC_X86_REG_EFLAGS);
        r.cr0 = rd32(UC_X86_REG_CR0), r.cr2 = rd32(UC_X86_REG_CR2), r.cr3 = rd32(UC_X86_REG_CR3);
        r.cr4 = rd32(UC_X86_REG_CR4);
        r.cs = static_cast<uint16_t>(rd32(UC_X86_REG_CS));
        r.ds = static_cast<uint16_t>(rd32(UC_X86_REG_DS));
        r.es = static_cast<uint16_t>(rd32(UC_X86_REG_ES));
        r.fs = static_cast<uint16_t>(rd32(UC_X86_REG_FS));
        r.gs = static_cast<uint16_t>(rd32(UC_X86_REG_GS));
        r.ss = static_cast<uint16_t>(rd32(UC_X86_REG_SS));
        return r;
    }

    RunExit run() override {
        blocks_ = 0;
        halted_ = false;
        for (;;) {
            fault_.reset();
            invalid_insn_ = false;
            uint32_t eip = reg(UC_X86_REG_EIP);
            uc_err err = uc_emu_start(uc_, eip, kNoExit, 0, 0);
            if (fault_) return {ExitReason::fault, std::move(fault_)};
            if (err == UC_ERR_INSN_INVALID || invalid_insn_) {
                // #UD: EIP points at the offending instruction, as the architecture wants.
                if (auto r = deliver(6, std::nullopt, reg(UC_X86_REG_EIP)); !r)
                    return fault_exit(
                        6, "invalid opcode (#UD) with no usable IDT gate: " + r.error().message);
                continue;
            }
            if (err != UC_ERR_OK)
                return fault_exit(-1, fmt::format("engine error: {}", uc_strerror(err)));
            if (stopped_by_hook_) {
                stopped_by_hook_ = false;
                return {ExitReason::stop_requested, {}};
            }
            // Unicorn gives no stop reason; with no stop of ours pending, only HLT ends a run.
            uint8_t prev = 0;
            uint32_t at = reg(UC_X86_REG_EIP);
            if (at > 0 && uc_mem_read(uc_, at - 1, &prev, 1) == UC_ERR_OK && prev == 0xf4) {
                halted_ = true;
                return {ExitReason::halted, {}};
            }
            return {ExitReason::stop_requested, {}};
        }
    }

    bool interrupts_enabled() override { return reg(UC_X86_REG_EFLAGS) & kIf; }

    Result<void> inject_interrupt(uint8_t vector) override {
        uint32_t eip = reg(UC_X86_REG_EIP);
        uint8_t insn = 0;
        // Stopped in front of HLT: the interrupt returns past it (hardware would have
        // executed the HLT and been woken by this very interrupt).
        // A vCPU that did execute HLT already has EIP past it.
        if (!halted_ && uc_mem_read(uc_, eip, &insn, 1) == UC_ERR_OK && insn == 0xf4) ++eip;
        halted_ = false;
        return deliver(vector, std::nullopt, eip);
    }

    void set_interrupt_window(bool on) override { irq_window_ = on; }

    void invalidate_code(Gpa base, uint64_t size) override {
        if (!size) return;
        if (auto e = uc_ctl_remove_cache(uc_, base.value, base.value + size); e != UC_ERR_OK)
            log::error("unicorn: dropping translated code at [{:#x}, +{:#x}): {}", base.value, size,
                       uc_strerror(e));
    }

  private:
    struct MmioWindow {
        UnicornEngine* self;
        uint64_t base;
    };
    struct MmioRange {
        uint64_t end;
        std::unique_ptr<MmioWindow> ctx;
    };

    static Result<void> check(uc_err e, const char* what) {
        if (e == UC_ERR_OK) return ok();
        return failf("unicorn: {}: {}", what, uc_strerror(e));
    }

    uint32_t reg(int id) {
        uint32_t v = 0;
        uc_reg_read(uc_, id, &v);
        return v;
    }

    RunExit fault_exit(int vector, std::string what) {
        return {ExitReason::fault, FaultReport{vector, std::move(what), registers()}};
    }

    bool is_ram(uint64_t a) const {
        for (const auto& r : ram_)
            if (a >= r.begin && a < r.end) return true;
        return false;
    }

    bool overlaps_direct(uint64_t begin, uint64_t end) const {
        for (const auto& r : direct_)
            if (begin < r.end && r.begin < end) return true;
        return false;
    }

    // Maps every unassigned part of [begin, end) as MMIO, merged with the MMIO ranges it
    // touches, so that the number of ranges stays bounded by the RAM and direct mappings
    // between them, not by how many accesses made them.
    Result<void> map_mmio_range(uint64_t begin, uint64_t end) {
        for (uint64_t at = begin; at < end;) {
            const uint64_t stop = free_until(at, end);
            if (stop == at) {  // `at` is taken: skip to the end of what holds it
                at = taken_until(at, end);
                continue;
            }
            POTEMKIN_TRY(map_mmio_merged(at, stop));
            at = stop;
        }
        return ok();
    }

    // Maps the free range [begin, end) together with MMIO ranges ending at `begin` or starting
    // at `end`, as one range.
    Result<void> map_mmio_merged(uint64_t begin, uint64_t end) {
        if (auto left = mmio_.lower_bound(begin); left != mmio_.begin()) {
            --left;
            if (left->second.end == begin) {
                begin = left->first;
                POTEMKIN_TRY(unmap_mmio(left));
            }
        }
        if (auto right = mmio_.find(end); right != mmio_.end()) {
            end = right->second.end;
            POTEMKIN_TRY(unmap_mmio(right));
        }
        auto ctx = std::make_unique<MmioWindow>(MmioWindow{this, begin});
        POTEMKIN_TRY(check(uc_mmio_map(uc_, begin, end - begin, hooks_.mmio_read, ctx.get(),
                                       hooks_.mmio_write, ctx.get()),
                           "map MMIO"));
        mmio_.emplace(begin, MmioRange{end, std::move(ctx)});
        return ok();
    }

    Result<void> unmap_mmio(std::map<uint64_t, MmioRange>::iterator it) {
        POTEMKIN_TRY(check(uc_mem_unmap(uc_, it->first, it->second.end - it->first), "unmap MMIO"));
        mmio_.erase(it);
        return ok();
    }

    // Removes MMIO from [begin, end), keeping what the affected ranges covered outside it.
    Result<void> carve_mmio(uint64_t begin, uint64_t end) {
        std::vector<Range> keep;
        auto it = mmio_.lower_bound(begin);
        if (it != mmio_.begin() && std::prev(it)->second.end > begin) --it;
        while (it != mmio_.end() && it->first < end) {
            if (it->first < begin) keep.push_back({it->first, begin});
            if (it->second.end > end) keep.push_back({end, it->second.end});
            auto next = std::next(it);
            POTEMKIN_TRY(unmap_mmio(it));
            it = next;
        }
        for (const auto& r : keep) {
            auto ctx = std::make_unique<MmioWindow>(MmioWindow{this, r.begin});
            POTEMKIN_TRY(check(uc_mmio_map(uc_, r.begin, r.end - r.begin, hooks_.mmio_read,
                                           ctx.get(), hooks_.mmio_write, ctx.get()),
                               "map MMIO"));
            mmio_.emplace(r.begin, MmioRange{r.end, std::move(ctx)});
        }
        return ok();
    }

    // The end of the unassigned run starting at `at` (== at when `at` is assigned), capped at
    // `limit`.
    uint64_t free_until(uint64_t at, uint64_t limit) const {
        uint64_t stop = limit;
        auto clip = [&](uint64_t b, uint64_t e) {
            if (at >= b && at < e)
                stop = at;
            else if (b > at && b < stop)
                stop = b;
        };
        for (const auto& r : ram_) clip(r.begin, r.end);
        for (const auto& r : direct_) clip(r.begin, r.end);
        if (auto it = mmio_.upper_bound(at); it != mmio_.begin()) {
            auto prev = std::prev(it);
            clip(prev->first, prev->second.end);
        }
        if (auto it = mmio_.upper_bound(at); it != mmio_.end()) clip(it->first, it->second.end);
        return stop;
    }

    // The end of the assigned range holding `at`, capped at `limit`.
    uint64_t taken_until(uint64_t at, uint64_t limit) const {
        auto holds = [&](uint64_t b, uint64_t e) { return at >= b && at < e; };
        for (const auto& r : ram_)
            if (holds(r.begin, r.end)) return std::min(r.end, limit);
        for (const auto& r : direct_)
            if (holds(r.begin, r.end)) return std::min(r.end, limit);
        if (auto it = mmio_.upper_bound(at); it != mmio_.begin()) {
            auto prev = std::prev(it);
            if (holds(prev->first, prev->second.end)) return std::min(prev->second.end, limit);
        }
        return limit;
    }

    // Push the interrupt frame and enter the handler through the guest IDT (SDM vol. 3,
    // 6.12.1): ring 0 to ring 0, so no stack switch; interrupt gates clear IF, trap gates
    // do not; TF, NT and RF are cleared either way.
    Result<void> deliver(uint32_t vector, std::optional<uint32_t> error_code, uint32_t return_eip) {
        uc_x86_mmr idtr{};
        POTEMKIN_TRY(check(uc_reg_read(uc_, UC_X86_REG_IDTR, &idtr), "read IDTR"));
        if (vector * 8 + 7 > idtr.limit)
            return failf("vector {} is beyond the IDT limit {:#x}", vector, idtr.limit);
        std::array<uint8_t, 8> gate{};
        if (uc_mem_read(uc_, idtr.base + vector * 8, gate.data(), gate.size()) != UC_ERR_OK)
            return failf("IDT entry {} at {:#x} is not in RAM", vector, idtr.base + vector * 8);
        const uint32_t offset =
            gate[0] | gate[1] << 8 | gate[6] << 16 | static_cast<uint32_t>(gate[7]) << 24;
        const uint16_t selector = static_cast<uint16_t>(gate[2] | gate[3] << 8);
        const uint8_t type = gate[5] & 0x1f, present = gate[5] & 0x80;
        if (!present) return failf("IDT gate {} is not present", vector);
        if (type != 0x0e && type != 0x0f)
            return failf(
                "IDT gate {} has type {:#x}; only 32-bit interrupt and trap gates are supported",
                vector, type);
        uint32_t eflags = reg(UC_X86_REG_EFLAGS);
        uint32_t cs = reg(UC_X86_REG_CS);
        uint32_t esp = reg(UC_X86_REG_ESP);
        std::vector<uint32_t> frame = {return_eip, cs, eflags};
        if (error_code) frame.insert(frame.begin(), *error_code);
        esp -= static_cast<uint32_t>(frame.size() * 4);
        if (uc_mem_write(uc_, esp, frame.data(), frame.size() * 4) != UC_ERR_OK)
            return failf("stack at {:#x} is not writable RAM while delivering vector {}", esp,
                         vector);
        eflags &= ~(kTf | kNt | kRf);
        if (type == 0x0e) eflags &= ~kIf;
        uint32_t sel = selector;
        POTEMKIN_TRY(check(uc_reg_write(uc_, UC_X86_REG_CS, &sel), "load handler CS"));
        POTEMKIN_TRY(check(uc_reg_write(uc_, UC_X86_REG_ESP, &esp), "write ESP"));
        POTEMKIN_TRY(check(uc_reg_write(uc_, UC_X86_REG_EFLAGS, &eflags), "write EFLAGS"));
        uint32_t target = offset;
        POTEMKIN_TRY(check(uc_reg_write(uc_, UC_X86_REG_EIP, &target), "write EIP"));
        return ok();
    }

    static void on_block(uc_engine* uc, uint64_t, uint32_t, void* user) {
        auto* self = static_cast<UnicornEngine*>(user);
        bool stop = self->settings_.kick->load(std::memory_order_relaxed);
        if (!stop && self->irq_window_) stop = self->reg(UC_X86_REG_EFLAGS) & kIf;
        if (!stop && self->settings_.preempt_blocks)
            stop = ++self->blocks_ >= self->settings_.preempt_blocks;
        if (stop) {
            // At a block boundary nothing of the next block has run: the only safe place
            // to stop (UNICORN.md gotcha 1).
            self->stopped_by_hook_ = true;
            uc_emu_stop(uc);
        }
    }

    // The guest I/O hooks, made for an `Io` type: for the machine's BusIo (a final class) the
    // calls are direct and reach the bus lookup with no virtual call in between; for any other
    // CpuIo (tests' fakes) they are one virtual call. open() picks the pair once.
    template <typename Io>
    static Io& io(UnicornEngine* self) {
        return *static_cast<Io*>(self->settings_.io);
    }

    template <typename Io>
    static uint32_t on_in(uc_engine*, uint32_t port, int size, void* user) {
        return io<Io>(static_cast<UnicornEngine*>(user))
            .port_in(static_cast<uint16_t>(port), static_cast<unsigned>(size));
    }

    template <typename Io>
    static void on_out(uc_engine*, uint32_t port, int size, uint32_t value, void* user) {
        io<Io>(static_cast<UnicornEngine*>(user))
            .port_out(static_cast<uint16_t>(port), static_cast<unsigned>(size), value);
    }

    template <typename Io>
    static uint64_t on_mmio_read(uc_engine*, uint64_t offset, unsigned size, void* user) {
        auto* page = static_cast<MmioWindow*>(user);
        return io<Io>(page->self).mmio_read(page->base + offset, size);
    }

    template <typename Io>
    static void on_mmio_write(uc_engine*, uint64_t offset, unsigned size, uint64_t value,
                              void* user) {
        auto* page = static_cast<MmioWindow*>(user);
        io<Io>(page->self).mmio_write(page->base + offset, size, value);
    }

    struct IoHooks {
        void* in;
        void* out;
        uc_cb_mmio_read_t mmio_read;
        uc_cb_mmio_write_t mmio_write;
    };
    template <typename Io>
    static IoHooks io_hooks() {
        return {reinterpret_cast<void*>(&on_in<Io>), reinterpret_cast<void*>(&on_out<Io>),
                &on_mmio_read<Io>, &on_mmio_write<Io>};
    }

    // INT n and CPU exceptions (UNICORN.md gotcha 3). EIP is already past an INT n and at the
    // faulting instruction for a fault, which is what the frame must hold in both cases.
    static void on_intr(uc_engine* uc, uint32_t intno, void* user) {
        auto* self = static_cast<UnicornEngine*>(user);
        uint32_t eip = self->reg(UC_X86_REG_EIP);
        std::optional<uint32_t> error_code;
        if (pushes_error_code(intno) && !self->is_software_int(eip, intno))
            error_code = self->env_int(unicorn_env_offsets().error_code).value_or(0);
        if (auto r = self->deliver(intno, error_code, eip); !r) {
            self->fault_ = FaultReport{
                static_cast<int>(intno),
                fmt::format("exception {} could not be delivered: {}", intno, r.error().message),
                self->registers()};
            uc_emu_stop(uc);
            return;
        }
        // Delivered: no exception is in flight any more (see unicorn_env_probe.hpp).
        self->set_env_int(unicorn_env_offsets().old_exception, -1);
    }

    // Hidden CPU state through a saved context (unicorn_env_probe.hpp).
    std::optional<uint32_t> env_int(std::optional<size_t> offset) {
        if (!offset || !context()) return std::nullopt;
        uc_context_save(uc_, ctx_);
        int32_t v;
        std::memcpy(&v, reinterpret_cast<uint8_t*>(ctx_) + *offset, sizeof v);
        return static_cast<uint32_t>(v);
    }
    void set_env_int(std::optional<size_t> offset, int32_t value) {
        if (!offset || !context()) return;
        uc_context_save(uc_, ctx_);
        std::memcpy(reinterpret_cast<uint8_t*>(ctx_) + *offset, &value, sizeof value);
        uc_context_restore(uc_, ctx_);
    }
    uc_context* context() {
        if (!ctx_ && uc_context_alloc(uc_, &ctx_) != UC_ERR_OK) ctx_ = nullptr;
        return ctx_;
    }

    // `int n` (CD nn) just before EIP: a software interrupt, which pushes no error code.
    bool is_software_int(uint32_t eip, uint32_t vector) {
        uint8_t b[2] = {};
        return eip >= 2 && uc_mem_read(uc_, eip - 2, b, 2) == UC_ERR_OK && b[0] == 0xcd &&
               b[1] == vector;
    }

    static bool on_invalid(uc_engine*, void* user) {
        static_cast<UnicornEngine*>(user)->invalid_insn_ = true;
        return true;  // stop; run() delivers #UD
    }

    static bool on_unmapped(uc_engine*, uc_mem_type type, uint64_t address, int size, int64_t,
                            void* user) {
        auto* self = static_cast<UnicornEngine*>(user);
        if (type == UC_MEM_FETCH_UNMAPPED) {
            self->fault_ = FaultReport{
                -1, fmt::format("instruction fetch from {:#x}, which is not RAM", address),
                self->registers()};
            return false;
        }
        // Unassigned so far: route the free part of the block(s) the access touches to the
        // bus, which answers all-ones where no device is, and retry the access.
        const uint64_t first = address & ~(kMmioBlock - 1);
        const uint64_t last = (address + static_cast<uint64_t>(size) - 1) | (kMmioBlock - 1);
        if (auto r = self->map_mmio_range(first, last + 1); !r) {
            self->fault_ = FaultReport{
                -1, fmt::format("access to unassigned {:#x}: {}", address, r.error().message),
                self->registers()};
            return false;
        }
        return true;
    }

    EngineSettings settings_;
    IoHooks hooks_{};
    uc_engine* uc_ = nullptr;
    uc_context* ctx_ = nullptr;
    std::optional<std::array<uint32_t, 3>> initial_cr_;  // CR0, CR3, CR4 at the first boot
    struct Range {
        uint64_t begin, end;
    };
    std::vector<Range> ram_;
    std::vector<Range> direct_;  // map_host ranges
    // MMIO ranges by first address, with the callback context Unicorn holds for each; a range
    // unmapped (merged, or carved for a direct mapping) frees its context with it.
    std::map<uint64_t, MmioRange> mmio_;
    std::optional<FaultReport> fault_;
    bool stopped_by_hook_ = false;
    bool invalid_insn_ = false;
    bool irq_window_ = false;
    bool halted_ = false;  // the last run() ended in HLT
    uint64_t blocks_ = 0;
};

}  // namespace

std::string format_registers(const Registers& r) {
    return fmt::format(
        "eax={:08x} ebx={:08x} ecx={:08x} edx={:08x} esi={:08x} edi={:08x} ebp={:08x} esp={:08x}\n"
        "eip={:08x} eflags={:08x} cs={:04x} ds={:04x} ss={:04x} cr0={:08x} cr2={:08x} cr3={:08x}",
        r.eax, r.ebx, r.ecx, r.edx, r.esi, r.edi, r.ebp, r.esp, r.eip, r.eflags, r.cs, r.ds, r.ss,
        r.cr0, r.cr2, r.cr3);
}

std::string FaultReport::describe() const {
    std::string v = vector >= 0 ? fmt::format("vector {}", vector) : std::string("no vector");
    return fmt::format("guest fault ({}) at eip {:#010x}: {}\n{}", v, regs.eip, what,
                       format_registers(regs));
}

Result<std::unique_ptr<CpuEngine>> create_unicorn_engine(const EngineSettings& settings) {
    auto engine = std::make_unique<UnicornEngine>(settings);
    POTEMKIN_TRY(engine->open());
    return std::unique_ptr<CpuEngine>(std::move(engine));
}

}  // namespace potemkin::cpu
