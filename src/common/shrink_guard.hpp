// ShrinkGuard: survive a peer that truncates a file we mapped MAP_SHARED.
//
// Both ends of an out-of-process device map the other side's files: a device server maps the
// VMM's guest RAM for DMA, the VMM maps a server's BAR memory into the guest. An access to a
// page of such a mapping that lies past the end of the file (the peer shrank it after sending
// it) raises SIGBUS, which would kill this process for the peer's misbehaviour.
//
// A registered mapping is watched by a process-wide SIGBUS handler: a fault inside it replaces
// the faulting page with a private zero page (mmap MAP_FIXED, async-signal-safe) and returns,
// so the access is retried and completes — reads see zeros, writes are lost — and the fault is
// counted for that mapping. The owner checks the count after its copies (a server turns it into
// an error reply; the VMM reports the device broken) and never sees a signal. A SIGBUS anywhere
// else keeps its default meaning: the handler restores the previous disposition and the fault
// is raised again.
//
// Sealed memfds (F_SEAL_SHRINK) cannot shrink at all; the guard is for the peers that do not
// seal (QEMU, libvfio-user and most programs do not).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/result.hpp"

namespace potemkin {

class ShrinkGuard {
  public:
    // Watches [base, base + length) (page-aligned) until destroyed. Fails when the table of
    // watched mappings is full or the handler cannot be installed.
    static Result<ShrinkGuard> watch(void* base, size_t length);
    ShrinkGuard() = default;
    ShrinkGuard(ShrinkGuard&& o) noexcept : slot_(o.slot_) { o.slot_ = -1; }
    ShrinkGuard& operator=(ShrinkGuard&& o) noexcept;
    ShrinkGuard(const ShrinkGuard&) = delete;
    ShrinkGuard& operator=(const ShrinkGuard&) = delete;
    ~ShrinkGuard() { release(); }

    // Faults absorbed in this mapping so far (each replaced one page).
    uint64_t faults() const;
    bool active() const { return slot_ >= 0; }

    // The most mappings watched at once (a VM's RAM ranges plus its devices' BARs).
    static constexpr int kMaxWatched = 1024;

  private:
    explicit ShrinkGuard(int slot) : slot_(slot) {}
    void release();
    int slot_ = -1;
};

}  // namespace potemkin
