// Guest RAM: one memfd holding every RAM region, mapped MAP_SHARED into this process so the
// same fd can be handed to device processes for zero-copy DMA. Every access is bounds-checked
// and an access outside RAM is an error value, never undefined behaviour.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "common/address.hpp"
#include "common/result.hpp"
#include "vm/ram_table.hpp"

namespace potemkin::vm {

struct RamRegionSpec {
    Gpa base;
    uint64_t size = 0;  // bytes, a multiple of 4 KiB
};

struct RamRegion {
    Gpa base;
    uint64_t size = 0;
    uint64_t fd_offset = 0;   // where this region lives in the memfd
    uint8_t* host = nullptr;  // this process' mapping

    bool contains(Gpa a, uint64_t len) const {
        return a >= base && len <= size && a.value - base.value <= size - len;
    }
};

class GuestMemory {
  public:
    // Regions must be page aligned and disjoint.
    static Result<std::unique_ptr<GuestMemory>> create(std::vector<RamRegionSpec> specs);
    ~GuestMemory();
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;

    // The memfd behind all regions (owned by this object; dup() it to hand it out).
    int fd() const { return fd_; }
    uint64_t total_size() const { return total_; }
    const std::vector<RamRegion>& regions() const { return table_.regions(); }

    // The region holding [gpa, gpa+len) entirely, or nullptr.
    const RamRegion* find(Gpa gpa, uint64_t len = 1) const { return table_.find(gpa, len); }
    bool contains(Gpa gpa, uint64_t len) const { return find(gpa, len) != nullptr; }

    Result<void> read(Gpa gpa, std::span<uint8_t> out) const;
    Result<void> write(Gpa gpa, std::span<const uint8_t> in);
    Result<void> fill(Gpa gpa, uint8_t byte, uint64_t len);
    // A host view of [gpa, gpa+len); the range must lie in one region. Writes through a
    // span bypass the write observer: call notify_written() afterwards if code may live there.
    Result<std::span<uint8_t>> span(Gpa gpa, uint64_t len);

    template <typename T>
    Result<T> read_obj(Gpa gpa) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T v{};
        POTEMKIN_TRY(read(gpa, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v)));
        return v;
    }
    template <typename T>
    Result<void> write_obj(Gpa gpa, const T& v) {
        static_assert(std::is_trivially_copyable_v<T>);
        return write(gpa, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof v));
    }

    // Called after every write made through this object (DMA, loader). The VM uses it to drop
    // stale translated code (UNICORN.md gotcha 10).
    using WriteObserver = std::function<void(Gpa, uint64_t)>;
    void set_write_observer(WriteObserver o) { observer_ = std::move(o); }
    void notify_written(Gpa gpa, uint64_t len) {
        if (observer_) observer_(gpa, len);
    }

  private:
    GuestMemory() = default;
    int fd_ = -1;
    uint8_t* map_ = nullptr;
    uint64_t total_ = 0;
    // The same table as a device server's view of a client's RAM (sdk::GuestRam); here every
    // row is a slice of the one memfd mapping, and an access must fit in one row.
    RamTable<RamRegion> table_;
    WriteObserver observer_;
};

}  // namespace potemkin::vm
