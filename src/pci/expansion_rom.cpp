#include "pci/expansion_rom.hpp"

#include <algorithm>
#include <numeric>

#include "common/bytes.hpp"

namespace potemkin::pci {

namespace {
constexpr uint32_t kUnit = 512;
constexpr uint32_t kMaxUnits = 0xFFFF;  // the 16-bit image length field
}  // namespace

std::vector<uint8_t> make_expansion_rom(const ExpansionRomSettings& s) {
    if (s.size == 0 || s.size % kUnit != 0 || s.size / kUnit > kMaxUnits) return {};
    if (s.pcir_offset < kRomPcirPointer + 2 || s.pcir_offset % 4 != 0 ||
        uint32_t{s.pcir_offset} + kPcirLength > s.size - 1)
        return {};
    std::vector<uint8_t> rom(s.size, 0);
    auto at = [&](uint32_t off, unsigned n) { return std::span<uint8_t>(rom).subspan(off, n); };
    // ROM header (5.1.1): signature, the initialization size in 512-byte units (one byte: the
    // legacy field saturates; the PCIR image length is the real one), the PCIR pointer.
    store_le(at(0, 2), kRomSignature);
    rom[2] = static_cast<uint8_t>(std::min<uint32_t>(s.size / kUnit, 0xFF));
    store_le(at(kRomPcirPointer, 2), s.pcir_offset);
    // PCI Data Structure (5.1.2).
    const uint32_t p = s.pcir_offset;
    store_le(at(p + 0x00, 4), kPcirSignature);
    store_le(at(p + 0x04, 2), s.vendor_id);
    store_le(at(p + 0x06, 2), s.device_id);
    store_le(at(p + 0x08, 2), 0);  // device list pointer: none
    store_le(at(p + 0x0A, 2), kPcirLength);
    rom[p + 0x0C] = kPcirRevision;
    store_le(at(p + 0x0D, 3), s.class_code & 0xFFFFFF);
    store_le(at(p + 0x10, 2), s.size / kUnit);
    store_le(at(p + 0x12, 2), s.code_revision);
    rom[p + 0x14] = s.code_type;
    rom[p + 0x15] = kPcirLastImage;
    // 0x16 maximum run-time image length, 0x18 configuration utility code header, 0x1A DMTF
    // CLP entry point: 0, none.
    seal_expansion_rom(rom);
    return rom;
}

void seal_expansion_rom(std::span<uint8_t> image) {
    if (image.empty()) return;
    image.back() = 0;
    const auto sum = std::accumulate(image.begin(), image.end(), 0u);
    image.back() = static_cast<uint8_t>(-static_cast<uint8_t>(sum));
}

}  // namespace potemkin::pci
