// Strongly typed addresses: a port number, an MMIO/guest-physical address and a size
// cannot be mixed up by accident (rust-vmm's PioAddress/MmioAddress, in C++).
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace potemkin {

template <typename Tag, typename Rep>
struct Address {
    Rep value = 0;

    constexpr Address() = default;
    constexpr explicit Address(Rep v) : value(v) {}
    constexpr auto operator<=>(const Address&) const = default;
    constexpr Address operator+(uint64_t off) const {
        return Address(static_cast<Rep>(value + off));
    }
    constexpr uint64_t operator-(Address other) const { return value - other.value; }
};

struct PortTag {};
struct GpaTag {};

// I/O port (16-bit space).
using Port = Address<PortTag, uint16_t>;
// Guest-physical address: RAM and MMIO (64-bit space).
using Gpa = Address<GpaTag, uint64_t>;

}  // namespace potemkin

template <typename Tag, typename Rep>
struct std::hash<potemkin::Address<Tag, Rep>> {
    size_t operator()(const potemkin::Address<Tag, Rep>& a) const {
        return std::hash<Rep>{}(a.value);
    }
};
