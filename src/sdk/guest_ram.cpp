#include "sdk/guest_ram.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/log.hpp"

namespace potemkin::sdk {

namespace {

void unmap(void* base, size_t len) {
    if (::munmap(base, len) != 0)
        log::warn("guest RAM: munmap of {} bytes at {}: {}", len, base, std::strerror(errno));
}

}  // namespace

GuestRam::Range::Range(Range&& o) noexcept
    : base(o.base),
      size(o.size),
      host(std::exchange(o.host, nullptr)),
      share(o.share),
      fd(std::move(o.fd)),
      dev(o.dev),
      ino(o.ino),
      map_base_(std::exchange(o.map_base_, nullptr)),
      map_len_(o.map_len_),
      guard_(std::move(o.guard_)) {}

GuestRam::Range& GuestRam::Range::operator=(Range&& o) noexcept {
    if (this == &o) return *this;
    guard_ = ShrinkGuard();  // before the unmap: the address range may be reused
    if (map_base_ != nullptr) unmap(map_base_, map_len_);
    base = o.base;
    size = o.size;
    host = std::exchange(o.host, nullptr);
    share = o.share;
    fd = std::move(o.fd);
    dev = o.dev;
    ino = o.ino;
    map_base_ = std::exchange(o.map_base_, nullptr);
    map_len_ = o.map_len_;
    guard_ = std::move(o.guard_);
    return *this;
}

GuestRam::Range::~Range() {
    guard_ = ShrinkGuard();  // before the unmap: the address range may be reused
    if (map_base_ != nullptr) unmap(map_base_, map_len_);
}

Result<void> GuestRam::add(const Share& share, UniqueFd fd) {
    Range r;
    r.base = share.base;
    r.size = share.size;
    r.share = share;
    if (share.backing != Backing::message) {
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) return failf(Errno{errno}, "fstat of fd {}", fd.get());
        // Touching a MAP_SHARED page past the end of a file is SIGBUS (and pread there reads
        // nothing): refuse up front.
        const auto file_size = static_cast<uint64_t>(st.st_size);
        if (S_ISREG(st.st_mode) &&
            (share.fd_offset > file_size || share.size > file_size - share.fd_offset))
            return failf("offset {:#x} + size {:#x} runs past the end of its file ({:#x} bytes)",
                         share.fd_offset, share.size, file_size);
        r.dev = st.st_dev;
        r.ino = st.st_ino;
    }

    const auto slot = table_.slot(r.base, r.size);
    if (slot.overlaps != nullptr) {
        const Range& o = *slot.overlaps;
        // The same range of the same file again: nothing to do (QEMU re-sends maps).
        if (o.base == r.base && o.size == r.size && o.share.fd_offset == share.fd_offset &&
            o.share.readable == share.readable && o.share.writable == share.writable &&
            o.share.backing == share.backing && o.dev == r.dev && o.ino == r.ino)
            return ok();
        return fail(fmt::format("[{:#x}, +{:#x}) overlaps the range at {:#x}", r.base.value, r.size,
                                o.base.value),
                    EEXIST);
    }
    if (table_.size() >= max_ranges_) return failf("more than {} ranges", max_ranges_);

    if (share.backing == Backing::mmap) {
        const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        const uint64_t skew = share.fd_offset % page;
        if (share.size > SIZE_MAX - skew) return failf("size {:#x} too large", share.size);
        int prot = PROT_NONE;
        if (share.readable) prot |= PROT_READ;
        if (share.writable) prot |= PROT_WRITE;
        const auto len = static_cast<size_t>(share.size + skew);
        void* p = ::mmap(nullptr, len, prot, MAP_SHARED, fd.get(),
                         static_cast<off_t>(share.fd_offset - skew));
        if (p == MAP_FAILED)
            return failf(Errno{errno}, "mmap of fd {} ({:#x} bytes at offset {:#x})", fd.get(), len,
                         share.fd_offset - skew);
        r.map_base_ = p;
        r.map_len_ = len;
        r.host = static_cast<uint8_t*>(p) + skew;
        // The client may shrink the file later: a DMA there must fail, not kill the server.
        POTEMKIN_TRY_ASSIGN(r.guard_, ShrinkGuard::watch(p, len));
        // fd closes here: the mapping keeps the memory.
    } else if (share.backing == Backing::file_io) {
        r.fd = std::move(fd);
    }
    table_.insert(slot, std::move(r));
    return ok();
}

Result<void> GuestRam::replace(std::span<const Share> shares, std::vector<UniqueFd> fds) {
    clear();
    for (size_t i = 0; i < shares.size(); ++i) {
        auto r = add(shares[i], i < fds.size() ? std::move(fds[i]) : UniqueFd());
        if (!r) {
            clear();
            return fail(r.error().context(fmt::format("entry {}", i)));
        }
    }
    return ok();
}

Result<void> GuestRam::access(Gpa gpa, std::span<uint8_t> buf, bool write,
                              const MessageIo& by_message) const {
    const char* dir = write ? "write" : "read";
    Result<void> failure = ok();
    const size_t done =
        table_.walk(gpa, buf, [&](const Range& r, uint64_t off, std::span<uint8_t> piece) {
            const Gpa at = r.base + off;
            if (!(write ? r.share.writable : r.share.readable)) {
                failure = failf("DMA {} at {:#x}: the mapping at {:#x} is not {}", dir, at.value,
                                r.base.value, write ? "writable" : "readable");
                return false;
            }
            if (r.host != nullptr) {
                const uint64_t faults = r.guard_.faults();
                if (write)
                    std::memcpy(r.host + off, piece.data(), piece.size());
                else
                    std::memcpy(piece.data(), r.host + off, piece.size());
                if (r.guard_.faults() == faults) return true;
                failure = failf(
                    "DMA {} at {:#x}: the client shrank the file behind the mapping at {:#x} "
                    "(pages past its end now read zeros here)",
                    dir, at.value, r.base.value);
                return false;
            }
            if (r.fd) {
                const auto pos = static_cast<off_t>(r.share.fd_offset + off);
                const ssize_t n = write ? ::pwrite(r.fd.get(), piece.data(), piece.size(), pos)
                                        : ::pread(r.fd.get(), piece.data(), piece.size(), pos);
                if (n == static_cast<ssize_t>(piece.size())) return true;
                failure = n < 0 ? failf(Errno{errno}, "DMA {} at {:#x}: file I/O", dir, at.value)
                                : failf("DMA {} at {:#x}: file I/O: short transfer", dir, at.value);
                return false;
            }
            if (!by_message) {
                failure = failf("DMA {} at {:#x}: no way to reach the range at {:#x}", dir,
                                at.value, r.base.value);
                return false;
            }
            failure = by_message(at, piece, write);
            return static_cast<bool>(failure);
        });
    if (!failure) return failure;
    if (done == buf.size()) return ok();
    const Gpa at = gpa + done;
    if (at < gpa) return failf("DMA {} at {:#x}: address overflow", dir, gpa.value);
    return failf("DMA {} at {:#x} (+{}): not mapped by the client", dir, at.value,
                 buf.size() - done);
}

}  // namespace potemkin::sdk
