#include "pci/config_space.hpp"

#include <cassert>

namespace potemkin::pci {

namespace {

bool valid_size(unsigned size) {
    return size == 1 || size == 2 || size == 4;
}

uint32_t size_mask(unsigned size) {
    return size >= 4 ? 0xFFFF'FFFFu : (1u << (size * 8)) - 1;
}

uint8_t byte_of(uint32_t v, unsigned i) {
    return static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

ConfigSpace::ConfigSpace(SpaceSize size)
    : bytes_(static_cast<size_t>(size), 0),
      wmask_(static_cast<size_t>(size), 0),
      w1c_(static_cast<size_t>(size), 0),
      w1s_(static_cast<size_t>(size), 0),
      claimed_(static_cast<size_t>(size), 0) {}

bool ConfigSpace::fits(uint32_t offset, unsigned size) const {
    return valid_size(size) && offset < bytes_.size() && size <= bytes_.size() - offset;
}

uint32_t ConfigSpace::read(uint32_t offset, unsigned size) const {
    // Master abort: all-ones, never 0 (a 0 vendor ID would look like a present device).
    if (!fits(offset, size)) return size_mask(valid_size(size) ? size : 4);
    uint32_t v = 0;
    for (unsigned i = 0; i < size; ++i) v |= static_cast<uint32_t>(bytes_[offset + i]) << (8 * i);
    return v;
}

void ConfigSpace::write(uint32_t offset, unsigned size, uint32_t value) {
    if (!fits(offset, size)) return;
    for (unsigned i = 0; i < size; ++i) {
        const uint32_t at = offset + i;
        const uint8_t in = byte_of(value, i);
        const uint8_t wm = wmask_[at], c = w1c_[at], s = w1s_[at];
        // The setters refuse overlapping masks; an overlap here means memory corruption or a
        // bug in a setter, and would make the result depend on the order below.
        assert((wm & c) == 0 && (wm & s) == 0 && (c & s) == 0);
        uint8_t b = static_cast<uint8_t>((bytes_[at] & ~wm) | (in & wm));
        b = static_cast<uint8_t>(b & ~(in & c));
        b = static_cast<uint8_t>(b | (in & s));
        bytes_[at] = b;
    }
}

Result<void> ConfigSpace::set(uint32_t offset, unsigned size, uint32_t value, Masks masks) {
    if (!valid_size(size)) return failf("config space: bad register size {}", size);
    if (!fits(offset, size))
        return failf("config space: register {:#x}+{} is outside the {}-byte space", offset, size,
                     bytes_.size());
    const uint32_t lim = size_mask(size);
    if ((value | masks.wmask | masks.w1c | masks.w1s) & ~lim)
        return failf("config space: register {:#x}: value or mask wider than {} bytes", offset,
                     size);
    if ((masks.wmask & masks.w1c) || (masks.wmask & masks.w1s) || (masks.w1c & masks.w1s))
        return failf(
            "config space: register {:#x}: masks overlap (wmask {:#x}, w1c {:#x}, w1s {:#x})",
            offset, masks.wmask, masks.w1c, masks.w1s);
    for (unsigned i = 0; i < size; ++i) {
        const uint32_t at = offset + i;
        bytes_[at] = byte_of(value, i);
        wmask_[at] = byte_of(masks.wmask, i);
        w1c_[at] = byte_of(masks.w1c, i);
        w1s_[at] = byte_of(masks.w1s, i);
        claimed_[at] = 1;
    }
    return ok();
}

Result<void> ConfigSpace::set_bytes(uint32_t offset, std::span<const uint8_t> value,
                                    std::span<const uint8_t> wmask, std::span<const uint8_t> w1c,
                                    std::span<const uint8_t> w1s) {
    const size_t n = value.size();
    if (offset > bytes_.size() || n > bytes_.size() - offset)
        return failf("config space: {} bytes at {:#x} do not fit the {}-byte space", n, offset,
                     bytes_.size());
    for (auto m : {wmask, w1c, w1s})
        if (!m.empty() && m.size() != n)
            return failf("config space: {} bytes at {:#x}: a mask has {} bytes", n, offset,
                         m.size());
    auto at = [](std::span<const uint8_t> m, size_t i) -> uint8_t { return m.empty() ? 0 : m[i]; };
    for (size_t i = 0; i < n; ++i) {
        const uint8_t wm = at(wmask, i), c = at(w1c, i), s = at(w1s, i);
        if ((wm & c) || (wm & s) || (c & s))
            return failf(
                "config space: byte {:#x}: masks overlap (wmask {:#x}, w1c {:#x}, "
                "w1s {:#x})",
                offset + i, wm, c, s);
    }
    for (size_t i = 0; i < n; ++i) {
        bytes_[offset + i] = value[i];
        wmask_[offset + i] = at(wmask, i);
        w1c_[offset + i] = at(w1c, i);
        w1s_[offset + i] = at(w1s, i);
        claimed_[offset + i] = 1;
    }
    return ok();
}

Result<void> ConfigSpace::store(uint32_t offset, unsigned size, uint32_t value) {
    return update(offset, size, size_mask(valid_size(size) ? size : 4), value);
}

Result<void> ConfigSpace::update(uint32_t offset, unsigned size, uint32_t clear, uint32_t set) {
    if (!fits(offset, size))
        return failf("config space: store of {} bytes at {:#x} is outside the {}-byte space", size,
                     offset, bytes_.size());
    for (unsigned i = 0; i < size; ++i) {
        uint8_t& b = bytes_[offset + i];
        b = static_cast<uint8_t>((b & ~byte_of(clear, i)) | byte_of(set, i));
    }
    return ok();
}

Masks ConfigSpace::masks(uint32_t offset, unsigned size) const {
    Masks m;
    if (!fits(offset, size)) return m;
    for (unsigned i = 0; i < size; ++i) {
        m.wmask |= static_cast<uint32_t>(wmask_[offset + i]) << (8 * i);
        m.w1c |= static_cast<uint32_t>(w1c_[offset + i]) << (8 * i);
        m.w1s |= static_cast<uint32_t>(w1s_[offset + i]) << (8 * i);
    }
    return m;
}

bool ConfigSpace::claimed(uint32_t offset) const {
    return offset < claimed_.size() && claimed_[offset] != 0;
}

bool ConfigSpace::masks_disjoint() const {
    for (size_t i = 0; i < bytes_.size(); ++i)
        if ((wmask_[i] & w1c_[i]) || (wmask_[i] & w1s_[i]) || (w1c_[i] & w1s_[i])) return false;
    return true;
}

}  // namespace potemkin::pci
