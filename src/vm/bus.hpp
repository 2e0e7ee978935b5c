// PortBus and MmioBus: a sorted map of disjoint address ranges, each owned by a named device.
//
// Semantics (documented in docs/buses.md):
// - Registration of a range that overlaps an existing one fails, naming both owners.
// - An access that fits entirely in one range goes to that range's handler as
//   (offset-from-range-base, size[, value]).
// - An access that straddles a range boundary, or touches unassigned space in part, is split
//   into single-byte accesses, each routed to its owner, as a PC chipset splits a port access
//   that spans two devices. Read bytes are assembled little-endian.
// - Reads of unassigned space return all-ones (master abort); writes are dropped and counted.
// - remove() is safe while any handler, including the removed one, is running: the entry is
//   parked until the outermost dispatch returns (kvmtool's refcount + deferred removal,
//   without atomics because every bus access happens on the VM's one engine thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.hpp"
#include "common/result.hpp"

namespace potemkin::vm {

// What a device provides for a range. Offsets are relative to the range base.
struct BusHandler {
    std::function<uint64_t(uint64_t offset, unsigned size)> read;
    std::function<void(uint64_t offset, unsigned size, uint64_t value)> write;
};

enum class Space : uint8_t { io, mmio };

// One device access, as reported to a tracer once it completed (docs/trace.md). The clock is
// read only while a tracer is set.
struct BusAccess {
    Space space;
    bool is_write;
    uint64_t address;
    unsigned size;
    uint64_t value;
    std::string_view owner;  // "" when unassigned
    // When the handler was entered, and how long until it returned (the value came back, the
    // write was taken); zero for unassigned space, which no handler answers.
    std::chrono::steady_clock::time_point start;
    std::chrono::nanoseconds duration{0};
    // The registered range the access hit: base and length; 0 and 0 when unassigned.
    uint64_t range_base = 0;
    uint64_t range_length = 0;
};
using BusTracer = std::function<void(const BusAccess&)>;

using RangeId = uint64_t;

template <typename Addr>
class Bus {
  public:
    explicit Bus(Space space, uint64_t space_size) : space_(space), space_size_(space_size) {}
    Bus(const Bus&) = delete;
    Bus& operator=(const Bus&) = delete;

    // Register [base, base+length) for `owner`.
    Result<RangeId> add(Addr base, uint64_t length, std::string owner, BusHandler handler);
    // Unregister; false when the id is unknown. Safe from inside any handler.
    bool remove(RangeId id);

    uint64_t read(Addr addr, unsigned size);
    void write(Addr addr, unsigned size, uint64_t value);

    struct RangeInfo {
        RangeId id;
        Addr base;
        uint64_t length;
        std::string owner;
    };
    // The range covering `addr`, if any.
    const RangeInfo* find(Addr addr) const;
    std::vector<RangeInfo> ranges() const;
    // Whether [base, base+length) overlaps any registered range.
    bool overlaps(Addr base, uint64_t length) const;

    uint64_t unassigned_reads() const { return unassigned_reads_; }
    uint64_t dropped_writes() const { return dropped_writes_; }
    void set_tracer(BusTracer t) { tracer_ = std::move(t); }
    Space space() const { return space_; }

  private:
    struct Entry {
        RangeInfo info;
        BusHandler handler;
        uint64_t end() const { return info.base.value + info.length; }  // exclusive
    };
    Entry* lookup(uint64_t addr) const;
    bool unassigned_whole(uint64_t addr, unsigned size) const;
    uint64_t read_split(uint64_t addr, unsigned size);
    void write_split(uint64_t addr, unsigned size, uint64_t value);
    uint64_t read_one(Entry* e, uint64_t addr, unsigned size);
    void write_one(Entry* e, uint64_t addr, unsigned size, uint64_t value);
    void end_dispatch() {
        if (--depth_ == 0 && !parked_.empty()) parked_.clear();
    }

    Space space_;
    uint64_t space_size_;  // 1<<16 for ports; 0 means the full 64-bit space
    std::map<uint64_t, std::unique_ptr<Entry>> by_base_;
    mutable Entry* last_ = nullptr;  // one-entry lookup cache, reset on every change
    std::vector<std::unique_ptr<Entry>> parked_;
    unsigned depth_ = 0;
    RangeId next_id_ = 1;
    uint64_t unassigned_reads_ = 0;
    uint64_t dropped_writes_ = 0;
    BusTracer tracer_;
};

using PortBus = Bus<Port>;
using MmioBus = Bus<Gpa>;

extern template class Bus<Port>;
extern template class Bus<Gpa>;

}  // namespace potemkin::vm
