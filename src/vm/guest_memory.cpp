#include "vm/guest_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.hpp"

namespace potemkin::vm {

namespace {
constexpr uint64_t kPage = 4096;
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::create(std::vector<RamRegionSpec> specs) {
    if (specs.empty()) return fail("guest memory: no RAM regions");
    std::sort(specs.begin(), specs.end(),
              [](const RamRegionSpec& a, const RamRegionSpec& b) { return a.base < b.base; });
    uint64_t total = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
        const auto& s = specs[i];
        if (s.size == 0 || s.size % kPage || s.base.value % kPage)
            return failf("guest memory: region at {:#x} size {:#x} is not page aligned",
                         s.base.value, s.size);
        if (s.base.value + s.size < s.base.value)
            return failf("guest memory: region at {:#x} wraps", s.base.value);
        if (i > 0 && specs[i - 1].base.value + specs[i - 1].size > s.base.value)
            return failf("guest memory: regions at {:#x} and {:#x} overlap",
                         specs[i - 1].base.value, s.base.value);
        total += s.size;
    }

    std::unique_ptr<GuestMemory> mem(new GuestMemory());
    mem->fd_ = memfd_create("potemkin-guest-ram", MFD_CLOEXEC);
    if (mem->fd_ < 0) return failf(Errno{errno}, "memfd_create");
    if (ftruncate(mem->fd_, static_cast<off_t>(total)) != 0)
        return failf(Errno{errno}, "ftruncate guest RAM to {} bytes", total);
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, mem->fd_, 0);
    if (p == MAP_FAILED) return failf(Errno{errno}, "mmap guest RAM ({} bytes)", total);
    mem->map_ = static_cast<uint8_t*>(p);
    mem->total_ = total;
    uint64_t off = 0;
    for (const auto& s : specs) {
        // Sorted and checked disjoint above: every slot is free.
        mem->table_.insert(mem->table_.slot(s.base, s.size),
                           RamRegion{s.base, s.size, off, mem->map_ + off});
        off += s.size;
    }
    return mem;
}

GuestMemory::~GuestMemory() {
    if (map_ && munmap(map_, total_) != 0)
        log::warn("guest memory: munmap of {} bytes: {}", total_, std::strerror(errno));
    if (fd_ >= 0 && close(fd_) != 0)
        log::warn("guest memory: close of the memfd: {}", std::strerror(errno));
}

Result<void> GuestMemory::read(Gpa gpa, std::span<uint8_t> out) const {
    const RamRegion* r = find(gpa, out.size());
    if (!r)
        return failf("guest memory read of {} bytes at {:#x} is outside RAM", out.size(),
                     gpa.value);
    if (!out.empty()) std::memcpy(out.data(), r->host + (gpa - r->base), out.size());
    return ok();
}

Result<void> GuestMemory::write(Gpa gpa, std::span<const uint8_t> in) {
    const RamRegion* r = find(gpa, in.size());
    if (!r)
        return failf("guest memory write of {} bytes at {:#x} is outside RAM", in.size(),
                     gpa.value);
    if (!in.empty()) std::memcpy(r->host + (gpa - r->base), in.data(), in.size());
    notify_written(gpa, in.size());
    return ok();
}

Result<void> GuestMemory::fill(Gpa gpa, uint8_t byte, uint64_t len) {
    const RamRegion* r = find(gpa, len);
    if (!r) return failf("guest memory fill of {} bytes at {:#x} is outside RAM", len, gpa.value);
    std::memset(r->host + (gpa - r->base), byte, len);
    notify_written(gpa, len);
    return ok();
}

Result<std::span<uint8_t>> GuestMemory::span(Gpa gpa, uint64_t len) {
    const RamRegion* r = find(gpa, len);
    if (!r) return failf("guest memory range {:#x}+{:#x} is outside RAM", gpa.value, len);
    return std::span<uint8_t>(r->host + (gpa - r->base), len);
}

}  // namespace potemkin::vm
