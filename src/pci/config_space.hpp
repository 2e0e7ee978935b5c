// ConfigSpace: the bytes of one PCI function's configuration space plus, per byte, the masks
// that say how a guest write affects them (QEMU's config/wmask/w1cmask, crosvm's
// registers/writable_bits, Seoul's register table rows).
//
// Semantics (docs/pci.md has the full story):
// - 256 bytes (conventional PCI) or 4096 bytes (PCI Express), chosen at construction.
// - One generic guest write path: per byte, bits in `wmask` take the written value, bits in
//   `w1c` are cleared where a 1 is written, bits in `w1s` are set where a 1 is written, every
//   other bit is read-only. The three masks are disjoint (checked by the setters, asserted on
//   the write path).
// - Guest accesses are 1, 2 or 4 bytes, little-endian, at any offset whose whole access stays
//   inside the space. An access that crosses a dword boundary is applied byte by byte like
//   any other; real configuration mechanisms never produce one (mechanism #1 addresses a
//   dword at 0xCFC..0xCFF, ECAM accesses are naturally aligned), so splitting or rejecting
//   such accesses is the caller's decision.
// - A read outside the space or of an unsupported size returns all-ones (master abort); such
//   a write is ignored.
// - Nothing here calls out: side effects of a write (BAR moves, MSI enables) are computed by
//   the caller by comparing state before and after (see config_write.hpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.hpp"

namespace potemkin::pci {

// How guest writes affect the bits of one register. Bits set in none of the three masks are
// read-only. The masks must be disjoint.
struct Masks {
    uint32_t wmask = 0;  // plain read/write bits
    uint32_t w1c = 0;    // write 1 to clear (status error bits, pending bits)
    uint32_t w1s = 0;    // write 1 to set (doorbells, "start" bits)
};

enum class SpaceSize : uint16_t {
    conventional = 256,  // PCI Local Bus Spec 3.0 section 6.1
    express = 4096,      // PCI Express extended configuration space
};

class ConfigSpace {
  public:
    explicit ConfigSpace(SpaceSize size = SpaceSize::conventional);

    uint32_t size() const { return static_cast<uint32_t>(bytes_.size()); }
    bool is_express() const { return bytes_.size() == static_cast<size_t>(SpaceSize::express); }

    // ---- Guest view --------------------------------------------------------------------
    // Little-endian read of `size` (1, 2 or 4) bytes; all-ones when out of range or a bad size.
    uint32_t read(uint32_t offset, unsigned size) const;
    // Applies wmask, W1C and W1S byte by byte; ignored when out of range or a bad size.
    void write(uint32_t offset, unsigned size, uint32_t value);

    // ---- Building a device -------------------------------------------------------------
    // Set a register's value and its masks (replacing the previous masks of those bytes) and
    // mark its bytes as claimed. Fails, changing nothing, when the register does not fit the
    // space, `size` is not 1, 2 or 4, a mask has bits beyond `size` bytes, or the masks
    // overlap.
    Result<void> set(uint32_t offset, unsigned size, uint32_t value, Masks masks = {});
    Result<void> set_u8(uint32_t offset, uint8_t value, Masks masks = {}) {
        return set(offset, 1, value, masks);
    }
    Result<void> set_u16(uint32_t offset, uint16_t value, Masks masks = {}) {
        return set(offset, 2, value, masks);
    }
    Result<void> set_u32(uint32_t offset, uint32_t value, Masks masks = {}) {
        return set(offset, 4, value, masks);
    }
    // Bulk form for capability images: `wmask`, `w1c` and `w1s` are each empty (all zero) or
    // as long as `value`.
    Result<void> set_bytes(uint32_t offset, std::span<const uint8_t> value,
                           std::span<const uint8_t> wmask = {}, std::span<const uint8_t> w1c = {},
                           std::span<const uint8_t> w1s = {});

    // ---- Device side -------------------------------------------------------------------
    // Change register contents regardless of the masks, as the hardware itself does (the
    // interrupt-status bit, MSI pending bits, an error bit the device signals). Masks and
    // claims are unchanged. Fails when out of range or a bad size.
    Result<void> store(uint32_t offset, unsigned size, uint32_t value);
    // Set and clear bits regardless of the masks: value = (value & ~clear) | set.
    Result<void> update(uint32_t offset, unsigned size, uint32_t clear, uint32_t set);

    // ---- Introspection -----------------------------------------------------------------
    // The masks of `size` bytes at `offset` (zero outside the space).
    Masks masks(uint32_t offset, unsigned size) const;
    // Whether a setter has defined this byte (header registers, BARs, capabilities). Used to
    // place capabilities in free space; a byte nobody claimed reads 0 and is read-only.
    bool claimed(uint32_t offset) const;
    // The invariant every setter maintains; exposed for tests and debug checks.
    bool masks_disjoint() const;
    std::span<const uint8_t> bytes() const { return bytes_; }

  private:
    bool fits(uint32_t offset, unsigned size) const;

    std::vector<uint8_t> bytes_;
    std::vector<uint8_t> wmask_;
    std::vector<uint8_t> w1c_;
    std::vector<uint8_t> w1s_;
    std::vector<uint8_t> claimed_;  // 0/1 per byte
};

}  // namespace potemkin::pci
