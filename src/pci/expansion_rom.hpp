// PCI expansion ROM images (PCI Firmware Specification 3.x, section 5.1): the ROM header
// (0x55AA signature, a pointer at 0x18 to the PCI Data Structure) and the "PCIR" data
// structure naming the device. Linux reads a device's ROM through sysfs only when the image
// carries a PCIR structure ("Invalid PCI ROM data signature" otherwise), so a model that
// exposes a ROM builds it here.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace potemkin::pci {

// Code types of the PCI Data Structure (section 5.1.3).
namespace rom_code {
inline constexpr uint8_t kX86 = 0x00;  // a BIOS runs it: only for real x86 code
inline constexpr uint8_t kOpenFirmware = 0x01;
inline constexpr uint8_t kHpPaRisc = 0x02;
inline constexpr uint8_t kEfi = 0x03;
inline constexpr uint8_t kNone = 0xFF;  // reserved value: no firmware runs the image
}  // namespace rom_code

struct ExpansionRomSettings {
    uint16_t vendor_id = 0;  // must match the device's (Linux, firmware check it)
    uint16_t device_id = 0;
    uint32_t class_code = 0;  // 24 bits, as the configuration header's
    uint32_t size = 2048;     // image bytes: a multiple of 512, at most 0x1FFFE00
    uint16_t code_revision = 0;
    uint8_t code_type = rom_code::kNone;
    uint16_t pcir_offset = 0x1C;  // where the data structure goes: 4-byte aligned, in the image
};

// Layout constants (section 5.1.1 ROM header, 5.1.2 PCI Data Structure revision 3).
inline constexpr uint16_t kRomSignature = 0xAA55;  // bytes 0x55 0xAA
inline constexpr uint32_t kRomPcirPointer = 0x18;
inline constexpr uint32_t kPcirSignature = 0x52494350;  // "PCIR"
inline constexpr uint16_t kPcirLength = 0x1C;
inline constexpr uint8_t kPcirRevision = 3;
inline constexpr uint8_t kPcirLastImage = 0x80;  // indicator byte (0x15), bit 7

// A zero-filled single image of `size` bytes with the ROM header and the PCI Data Structure
// filled in (last-image bit set) and the last byte making the byte sum 0 (the legacy option
// ROM checksum). The caller may place other data outside both structures and the last byte.
// Settings that do not fit (size not a multiple of 512 or too large, a data structure outside
// the image or overlapping the header, misaligned) give an empty vector.
std::vector<uint8_t> make_expansion_rom(const ExpansionRomSettings& settings);

// Recomputes the checksum byte (the image's last byte) after the caller wrote its data.
void seal_expansion_rom(std::span<uint8_t> image);

}  // namespace potemkin::pci
