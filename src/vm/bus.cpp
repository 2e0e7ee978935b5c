#include "vm/bus.hpp"

#include <fmt/format.h>

namespace potemkin::vm {

namespace {
uint64_t size_mask(unsigned size) {
    return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1;
}
const char* space_name(Space s) {
    return s == Space::io ? "port" : "MMIO";
}
}  // namespace

template <typename Addr>
Result<RangeId> Bus<Addr>::add(Addr base, uint64_t length, std::string owner, BusHandler handler) {
    const uint64_t b = base.value;
    if (length == 0) return failf("{}: empty {} range at {:#x}", owner, space_name(space_), b);
    if (b + length <= b || (space_size_ && (b >= space_size_ || length > space_size_ - b)))
        return failf("{}: {} range {:#x}+{:#x} does not fit the address space", owner,
                     space_name(space_), b, length);
    if (!handler.read || !handler.write)
        return failf("{}: {} range {:#x} registered without read and write handlers", owner,
                     space_name(space_), b);
    for (auto it = by_base_.lower_bound(b); it != by_base_.begin();) {
        --it;  // the range starting below b may reach into it
        if (it->second->end() > b)
            return failf("{}: {} range {:#x}-{:#x} overlaps {} ({:#x}-{:#x})", owner,
                         space_name(space_), b, b + length - 1, it->second->info.owner, it->first,
                         it->second->end() - 1);
        break;
    }
    if (auto it = by_base_.lower_bound(b); it != by_base_.end() && it->first < b + length)
        return failf("{}: {} range {:#x}-{:#x} overlaps {} ({:#x}-{:#x})", owner,
                     space_name(space_), b, b + length - 1, it->second->info.owner, it->first,
                     it->second->end() - 1);
    RangeId id = next_id_++;
    auto e = std::make_unique<Entry>(
        Entry{RangeInfo{id, base, length, std::move(owner)}, std::move(handler)});
    by_base_.emplace(b, std::move(e));
    last_ = nullptr;
    return id;
}

template <typename Addr>
bool Bus<Addr>::remove(RangeId id) {
    for (auto it = by_base_.begin(); it != by_base_.end(); ++it) {
        if (it->second->info.id != id) continue;
        if (depth_ > 0) parked_.push_back(std::move(it->second));  // a handler may be running
        by_base_.erase(it);
        last_ = nullptr;
        return true;
    }
    return false;
}

template <typename Addr>
typename Bus<Addr>::Entry* Bus<Addr>::lookup(uint64_t addr) const {
    if (last_ && addr >= last_->info.base.value && addr < last_->end()) return last_;
    auto it = by_base_.upper_bound(addr);
    if (it == by_base_.begin()) return nullptr;
    --it;
    if (addr >= it->second->end()) return nullptr;
    last_ = it->second.get();
    return last_;
}

template <typename Addr>
const typename Bus<Addr>::RangeInfo* Bus<Addr>::find(Addr addr) const {
    Entry* e = lookup(addr.value);
    return e ? &e->info : nullptr;
}

template <typename Addr>
std::vector<typename Bus<Addr>::RangeInfo> Bus<Addr>::ranges() const {
    std::vector<RangeInfo> out;
    for (const auto& [b, e] : by_base_) out.push_back(e->info);
    return out;
}

template <typename Addr>
bool Bus<Addr>::overlaps(Addr base, uint64_t length) const {
    const uint64_t b = base.value;
    auto it = by_base_.lower_bound(b);
    if (it != by_base_.end() && it->first < b + length) return true;
    if (it != by_base_.begin() && std::prev(it)->second->end() > b) return true;
    return false;
}

template <typename Addr>
uint64_t Bus<Addr>::read_one(Entry* e, uint64_t addr, unsigned size) {
    if (!e) {
        ++unassigned_reads_;
        const uint64_t v = size_mask(size);
        if (tracer_) tracer_({space_, false, addr, size, v, {}, std::chrono::steady_clock::now()});
        return v;
    }
    ++depth_;
    uint64_t v;
    if (!tracer_) {
        v = e->handler.read(addr - e->info.base.value, size) & size_mask(size);
    } else {
        // Timed around the handler alone: the access's latency as the device gave it.
        const auto start = std::chrono::steady_clock::now();
        v = e->handler.read(addr - e->info.base.value, size) & size_mask(size);
        const auto took = std::chrono::steady_clock::now() - start;
        tracer_({space_, false, addr, size, v, e->info.owner, start, took, e->info.base.value,
                 e->info.length});
    }
    end_dispatch();
    return v;
}

template <typename Addr>
void Bus<Addr>::write_one(Entry* e, uint64_t addr, unsigned size, uint64_t value) {
    value &= size_mask(size);
    if (!e) {
        ++dropped_writes_;
        if (tracer_)
            tracer_({space_, true, addr, size, value, {}, std::chrono::steady_clock::now()});
        return;
    }
    ++depth_;
    if (!tracer_) {
        e->handler.write(addr - e->info.base.value, size, value);
    } else {
        // The entry may be parked by the handler (a BAR moved); it stays alive until
        // end_dispatch(), so its owner and range are still readable afterwards.
        const auto start = std::chrono::steady_clock::now();
        e->handler.write(addr - e->info.base.value, size, value);
        const auto took = std::chrono::steady_clock::now() - start;
        tracer_({space_, true, addr, size, value, e->info.owner, start, took, e->info.base.value,
                 e->info.length});
    }
    end_dispatch();
}

template <typename Addr>
bool Bus<Addr>::unassigned_whole(uint64_t addr, unsigned size) const {
    if (space_size_ && addr + size > space_size_) return false;
    return !overlaps(Addr(static_cast<decltype(Addr{}.value)>(addr)), size);
}

template <typename Addr>
uint64_t Bus<Addr>::read(Addr a, unsigned size) {
    const uint64_t addr = a.value;
    Entry* e = lookup(addr);
    if (e ? addr + size <= e->end() : unassigned_whole(addr, size)) return read_one(e, addr, size);
    return read_split(addr, size);
}

template <typename Addr>
void Bus<Addr>::write(Addr a, unsigned size, uint64_t value) {
    const uint64_t addr = a.value;
    Entry* e = lookup(addr);
    if (e ? addr + size <= e->end() : unassigned_whole(addr, size))
        return write_one(e, addr, size, value);
    write_split(addr, size, value);
}

template <typename Addr>
uint64_t Bus<Addr>::read_split(uint64_t addr, unsigned size) {
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) {
        uint64_t byte_addr = addr + i;
        uint64_t b = (space_size_ && byte_addr >= space_size_)
                         ? 0xff
                         : read_one(lookup(byte_addr), byte_addr, 1);
        v |= b << (8 * i);
    }
    return v;
}

template <typename Addr>
void Bus<Addr>::write_split(uint64_t addr, unsigned size, uint64_t value) {
    for (unsigned i = 0; i < size; ++i) {
        uint64_t byte_addr = addr + i;
        if (space_size_ && byte_addr >= space_size_) continue;
        write_one(lookup(byte_addr), byte_addr, 1, (value >> (8 * i)) & 0xff);
    }
}

template class Bus<Port>;
template class Bus<Gpa>;

}  // namespace potemkin::vm
