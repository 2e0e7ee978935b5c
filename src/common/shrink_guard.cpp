#include "common/shrink_guard.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

namespace potemkin {

namespace {

// Read by the signal handler: fixed storage, lock-free atomics only. A slot is claimed by
// setting `length` last (release), and the handler only trusts a slot whose length is non-zero.
struct Slot {
    std::atomic<uintptr_t> base{0};
    std::atomic<size_t> length{0};
    std::atomic<uint64_t> faults{0};
};
Slot g_slots[ShrinkGuard::kMaxWatched];
std::mutex g_claim;  // claiming and releasing slots (never taken by the handler)
struct sigaction g_previous {};
bool g_installed = false;

void on_sigbus(int sig, siginfo_t* info, void* context) {
    const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (auto& s : g_slots) {
        const size_t len = s.length.load(std::memory_order_acquire);
        if (len == 0) continue;
        const uintptr_t base = s.base.load(std::memory_order_relaxed);
        if (addr < base || addr - base >= len) continue;
        const long page_size = ::sysconf(_SC_PAGESIZE);
        const uintptr_t page = addr & ~static_cast<uintptr_t>(page_size - 1);
        void* p = ::mmap(reinterpret_cast<void*>(page), static_cast<size_t>(page_size),
                         PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED) break;  // cannot repair: fall through to the default action
        s.faults.fetch_add(1, std::memory_order_relaxed);
        return;  // the access is retried on the zero page
    }
    // Not ours: whatever SIGBUS meant before (by default, the process dies with it).
    if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
        g_previous.sa_sigaction(sig, info, context);
        return;
    }
    if (g_previous.sa_handler != SIG_IGN && g_previous.sa_handler != SIG_DFL &&
        g_previous.sa_handler != nullptr) {
        g_previous.sa_handler(sig);
        return;
    }
    ::signal(SIGBUS, SIG_DFL);
    ::raise(SIGBUS);
}

}  // namespace

Result<ShrinkGuard> ShrinkGuard::watch(void* base, size_t length) {
    if (base == nullptr || length == 0) return fail("shrink guard: empty mapping");
    std::lock_guard lk(g_claim);
    if (!g_installed) {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        if (::sigemptyset(&sa.sa_mask) != 0 || ::sigaction(SIGBUS, &sa, &g_previous) != 0)
            return failf(Errno{errno}, "shrink guard: installing the SIGBUS handler");
        g_installed = true;
    }
    for (int i = 0; i < kMaxWatched; ++i) {
        Slot& s = g_slots[i];
        if (s.length.load(std::memory_order_relaxed) != 0) continue;
        s.faults.store(0, std::memory_order_relaxed);
        s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_relaxed);
        s.length.store(length, std::memory_order_release);
        return ShrinkGuard(i);
    }
    return failf("shrink guard: {} mappings are watched already", kMaxWatched);
}

ShrinkGuard& ShrinkGuard::operator=(ShrinkGuard&& o) noexcept {
    if (this != &o) {
        release();
        slot_ = o.slot_;
        o.slot_ = -1;
    }
    return *this;
}

uint64_t ShrinkGuard::faults() const {
    return slot_ < 0 ? 0 : g_slots[slot_].faults.load(std::memory_order_relaxed);
}

void ShrinkGuard::release() {
    if (slot_ < 0) return;
    std::lock_guard lk(g_claim);
    g_slots[slot_].length.store(0, std::memory_order_release);
    slot_ = -1;
}

}  // namespace potemkin
