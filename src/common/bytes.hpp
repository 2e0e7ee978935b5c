// Little-endian loads and stores of 1 to 8 bytes: register values travel as byte spans
// between the guest, the front-ends and device models (PCI is little-endian).
#pragma once

#include <cstdint>
#include <span>

namespace potemkin {

inline uint64_t load_le(std::span<const uint8_t> bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes.size() && i < 8; ++i) v |= uint64_t{bytes[i]} << (8 * i);
    return v;
}

inline void store_le(std::span<uint8_t> bytes, uint64_t v) {
    for (size_t i = 0; i < bytes.size() && i < 8; ++i)
        bytes[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace potemkin
