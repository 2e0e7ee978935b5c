// GuestRam: the VMM's guest RAM as a device server process sees it, for the model's DMA. The
// client shares ranges of it at guest-physical (vfio-user: IOVA) addresses, each as an fd
// (mapped here MAP_SHARED, or read and written with pread/pwrite) or without one (the server's
// protocol then carries every access as a message). Both device servers keep one: vfio-user
// adds and removes ranges one at a time (DMA_MAP/DMA_UNMAP), mpqemu replaces the whole set
// (SYNC_SYSMEM).
//
// Every access is bounds-checked: a range the client did not share, or shared without the
// access right, is an error value, never a fault. A file too short when shared is refused; a
// client that shrinks a file after sharing it makes the accesses past its new end fail with an
// error (common/shrink_guard.hpp absorbs the SIGBUS), and the server lives on.
//
// Rows live in a vm::RamTable, the core vm::GuestMemory uses too.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/address.hpp"
#include "common/result.hpp"
#include "common/shrink_guard.hpp"
#include "common/unique_fd.hpp"
#include "vm/ram_table.hpp"

namespace potemkin::sdk {

class GuestRam {
  public:
    // How a range is reached from here.
    enum class Backing {
        mmap,     // mapped MAP_SHARED: memcpy
        file_io,  // pread/pwrite on the fd
        message,  // no fd: the server's protocol carries the access (vfio-user DMA_READ/WRITE)
    };
    struct Share {
        Gpa base;
        uint64_t size = 0;
        uint64_t fd_offset = 0;  // where the range starts in the fd
        bool readable = true;
        bool writable = true;
        Backing backing = Backing::mmap;
    };
    // One shared range (a vm::RamTable row).
    struct Range {
        Gpa base;
        uint64_t size = 0;
        uint8_t* host = nullptr;  // Backing::mmap: base's byte in this process
        Share share;
        UniqueFd fd;    // file_io: the file (mmap: closed once mapped; the mapping keeps it)
        dev_t dev = 0;  // the file's identity (an identical add() is a no-op)
        ino_t ino = 0;

        Range() = default;
        Range(Range&& o) noexcept;
        Range& operator=(Range&& o) noexcept;
        ~Range();

      private:
        friend class GuestRam;
        void* map_base_ = nullptr;  // the page-aligned mmap under host
        size_t map_len_ = 0;
        ShrinkGuard guard_;  // watches the mmap for a client shrinking the file
    };

    explicit GuestRam(size_t max_ranges = SIZE_MAX) : max_ranges_(max_ranges) {}

    // Adds one range; `fd` is ignored (and may be empty) for Backing::message. Checked in this
    // order: the fd (fstat; a regular file must hold [fd_offset, fd_offset + size)), identity
    // (the same base, size, offset, rights, backing and file as a range already there: ok,
    // nothing changes), overlap with another range, max_ranges, then the mmap.
    Result<void> add(const Share& share, UniqueFd fd);
    // Removes the range at exactly [base, base + size): false if there is none.
    bool remove(Gpa base, uint64_t size) { return table_.erase(base, size); }
    void clear() { table_.clear(); }
    // Drops every range, then adds these (shares[i] with fds[i]). On an error ("entry i: ...")
    // no range is left: a half-applied set would mislead DMA.
    Result<void> replace(std::span<const Share> shares, std::vector<UniqueFd> fds);

    // Reads or writes [gpa, gpa + buf.size()), which may run across adjacent ranges. Pieces in
    // Backing::message ranges go to `by_message` (unset: those pieces fail). Errors name the
    // address and why ("not mapped by the client", "not writable", a file I/O error).
    using MessageIo = std::function<Result<void>(Gpa, std::span<uint8_t>, bool write)>;
    Result<void> access(Gpa gpa, std::span<uint8_t> buf, bool write,
                        const MessageIo& by_message = {}) const;

    size_t size() const { return table_.size(); }
    const std::vector<Range>& ranges() const { return table_.regions(); }

  private:
    size_t max_ranges_;
    vm::RamTable<Range> table_;
};

}  // namespace potemkin::sdk
