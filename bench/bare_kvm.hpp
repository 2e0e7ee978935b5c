// A bare KVM VM running a benchmark guest loop: the floor potemkin's KvmEngine is measured
// against. The same exits as under potemkin (IN returns 0, MMIO reads 0, writes are dropped),
// with nothing between KVM_RUN and the answer. Errors end the benchmark: a figure from a
// half-set-up VM would mean nothing.
#pragma once

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench_util.hpp"

namespace potemkin::bench {

inline int kvm_check(int r, const char* what) {
    if (r >= 0) return r;
    std::fprintf(stderr, "bench: kvm %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

// The code runs from `base` in flat 32-bit protected mode until it writes port 0xF4 or halts.
inline double time_bare_kvm(const std::vector<uint8_t>& code, uint32_t base) {
    constexpr size_t kRam = 4 << 20;
    const int kvm = kvm_check(::open("/dev/kvm", O_RDWR | O_CLOEXEC), "open /dev/kvm");
    const int vm = kvm_check(::ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM");
    void* ram = ::mmap(nullptr, kRam, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED) kvm_check(-1, "mmap RAM");
    std::memcpy(static_cast<uint8_t*>(ram) + base, code.data(), code.size());
    kvm_userspace_memory_region region{0, 0, 0, kRam, reinterpret_cast<uintptr_t>(ram)};
    kvm_check(::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region), "KVM_SET_USER_MEMORY_REGION");
    const int vcpu = kvm_check(::ioctl(vm, KVM_CREATE_VCPU, 0), "KVM_CREATE_VCPU");
    const int run_size = kvm_check(::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), "mmap size");
    void* run_map = ::mmap(nullptr, size_t(run_size), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run_map == MAP_FAILED) kvm_check(-1, "mmap kvm_run");
    auto* run = static_cast<kvm_run*>(run_map);

    kvm_sregs sregs{};
    kvm_check(::ioctl(vcpu, KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");
    kvm_segment flat{};
    flat.limit = 0xffffffff, flat.present = 1, flat.s = 1, flat.db = 1, flat.g = 1;
    sregs.cs = flat, sregs.cs.type = 0xb, sregs.cs.selector = 0x08;
    flat.type = 0x3, flat.selector = 0x10;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat;
    sregs.cr0 = 0x11, sregs.cr4 = 0, sregs.efer = 0;
    kvm_check(::ioctl(vcpu, KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");
    kvm_regs regs{};
    regs.rip = base, regs.rsp = 0x90000, regs.rflags = 0x2;
    kvm_check(::ioctl(vcpu, KVM_SET_REGS, &regs), "KVM_SET_REGS");

    auto t0 = Clock::now();
    for (bool done = false; !done;) {
        kvm_check(::ioctl(vcpu, KVM_RUN, 0), "KVM_RUN");
        switch (run->exit_reason) {
            case KVM_EXIT_IO:
                if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0xf4)
                    done = true;
                else if (run->io.direction == KVM_EXIT_IO_IN)
                    std::memset(reinterpret_cast<uint8_t*>(run) + run->io.data_offset, 0,
                                size_t(run->io.size) * run->io.count);
                break;
            case KVM_EXIT_MMIO:
                if (!run->mmio.is_write) std::memset(run->mmio.data, 0, sizeof run->mmio.data);
                break;
            case KVM_EXIT_HLT:
                done = true;
                break;
            default:
                std::fprintf(stderr, "bench: bare KVM: unexpected exit %u\n", run->exit_reason);
                std::exit(1);
        }
    }
    const double ns = ns_since(t0);
    ::munmap(run_map, size_t(run_size));
    ::munmap(ram, kRam);
    ::close(vcpu);
    ::close(vm);
    ::close(kvm);
    return ns;
}

}  // namespace potemkin::bench
