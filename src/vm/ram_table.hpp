// RamTable: guest-physical ranges mapped into this process, the one core under every guest-RAM
// view in potemkin. The VMM's own RAM (vm::GuestMemory: slices of one memfd mapping) and a
// device server's view of a client's RAM (sdk::GuestRam: one mapping per fd the client shared)
// are both a table of disjoint ranges, each with a host pointer, and bounds-checked copies.
//
// `Region` is the caller's row type; it needs the fields `Gpa base`, `uint64_t size` and
// `uint8_t* host` (nullptr: the range exists but is not mapped here; copies stop there and the
// owner serves it its own way) and may carry anything else (an fd, flags, a mapping it owns).
// It must be movable.
//
// Why one header-only template and not a class with a virtual row: GuestMemory::read/write sit
// on the DMA path of in-process devices, and there the lookup must stay what it was, a scan of
// a few rows inlined at the call (the scan GuestMemory always did: a binary search over one or
// three rows measured slower). Rows are kept sorted by base in a vector: find() scans a few rows
// and searches more, at() always searches, and insertion is O(rows), which is fine for the bounded
// tables here (a VM's RAM layout; at most a server's max_ranges).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "common/address.hpp"

namespace potemkin::vm {

template <typename Region>
class RamTable {
  public:
    const std::vector<Region>& regions() const { return rows_; }
    size_t size() const { return rows_.size(); }
    bool empty() const { return rows_.empty(); }
    void clear() { rows_.clear(); }

    // The row holding `gpa`, or nullptr.
    const Region* at(Gpa gpa) const {
        auto it = std::upper_bound(rows_.begin(), rows_.end(), gpa,
                                   [](Gpa a, const Region& r) { return a < r.base; });
        if (it == rows_.begin()) return nullptr;
        --it;
        return gpa - it->base < it->size ? &*it : nullptr;
    }
    // The row holding all of [gpa, gpa+len), or nullptr (len 0: a row whose [base, end] holds
    // gpa). A few rows (a VM's RAM) are scanned, which beats a binary search there; more are
    // searched.
    const Region* find(Gpa gpa, uint64_t len = 1) const {
        if (rows_.size() <= kScanRows) {
            for (const Region& r : rows_)
                if (holds(r, gpa, len)) return &r;
            return nullptr;
        }
        auto it = std::upper_bound(rows_.begin(), rows_.end(), gpa,
                                   [](Gpa a, const Region& r) { return a < r.base; });
        if (it == rows_.begin()) return nullptr;
        --it;
        return holds(*it, gpa, len) ? &*it : nullptr;
    }

    // Where [base, base + size) would go: a row it overlaps (nullptr when it fits) and where.
    struct Slot {
        const Region* overlaps = nullptr;
        size_t index = 0;
    };
    Slot slot(Gpa base, uint64_t size) const {
        auto it = std::lower_bound(rows_.begin(), rows_.end(), base,
                                   [](const Region& r, Gpa a) { return r.base < a; });
        Slot s{nullptr, static_cast<size_t>(it - rows_.begin())};
        if (it != rows_.end() && it->base - base < size) s.overlaps = &*it;
        if (it != rows_.begin() && std::prev(it)->size > base - std::prev(it)->base)
            s.overlaps = &*std::prev(it);
        return s;
    }
    // Inserts at a slot() that had no overlap.
    Region& insert(const Slot& s, Region r) {
        return *rows_.insert(rows_.begin() + static_cast<std::ptrdiff_t>(s.index), std::move(r));
    }
    // Removes the row starting at `base` with exactly `size` bytes: false if there is none.
    bool erase(Gpa base, uint64_t size) {
        auto it = std::lower_bound(rows_.begin(), rows_.end(), base,
                                   [](const Region& r, Gpa a) { return r.base < a; });
        if (it == rows_.end() || it->base != base || it->size != size) return false;
        rows_.erase(it);
        return true;
    }

    // A copy between `buf` and [gpa, gpa + buf.size()) that may run across adjacent rows, one
    // row at a time: `step(row, offset in row, piece of buf)` does the piece (a memcpy to or
    // from row.host when it is mapped here) and returns false to stop. Returns the bytes done;
    // fewer than buf.size() when the range leaves the table, wraps, or a step stopped.
    template <typename Step>
    size_t walk(Gpa gpa, std::span<uint8_t> buf, Step&& step) const {
        size_t done = 0;
        while (done < buf.size()) {
            const Gpa at_gpa = gpa + done;
            if (at_gpa < gpa) break;  // wrapped
            const Region* r = at(at_gpa);
            if (r == nullptr) break;
            const uint64_t off = at_gpa - r->base;
            const auto n =
                static_cast<size_t>(std::min<uint64_t>(buf.size() - done, r->size - off));
            if (!step(*r, off, buf.subspan(done, n))) break;
            done += n;
        }
        return done;
    }

  private:
    static constexpr size_t kScanRows = 4;
    static bool holds(const Region& r, Gpa gpa, uint64_t len) {
        return gpa >= r.base && len <= r.size && gpa - r.base <= r.size - len;
    }
    std::vector<Region> rows_;  // sorted by base, disjoint
};

}  // namespace potemkin::vm
