// Type 0 configuration header register offsets and bit definitions (PCI Local Bus Spec 3.0,
// section 6.1 and 6.2). Plain constants, shared by the config-space model, the BAR and
// capability code and the front-end.
#pragma once

#include <cstdint>

namespace potemkin::pci {

// Register offsets in the type 0 header (spec 3.0 figure 6-1).
namespace reg {
inline constexpr uint32_t kVendorId = 0x00;           // 16 bits, RO
inline constexpr uint32_t kDeviceId = 0x02;           // 16 bits, RO
inline constexpr uint32_t kCommand = 0x04;            // 16 bits
inline constexpr uint32_t kStatus = 0x06;             // 16 bits
inline constexpr uint32_t kRevisionId = 0x08;         // 8 bits, RO
inline constexpr uint32_t kClassCode = 0x09;          // 24 bits, RO: prog-if, sub-class, base
inline constexpr uint32_t kCacheLineSize = 0x0C;      // 8 bits, RW
inline constexpr uint32_t kLatencyTimer = 0x0D;       // 8 bits, RW
inline constexpr uint32_t kHeaderType = 0x0E;         // 8 bits, RO
inline constexpr uint32_t kBist = 0x0F;               // 8 bits, RO 0 (BIST not supported)
inline constexpr uint32_t kBar0 = 0x10;               // six dwords, 0x10..0x27
inline constexpr uint32_t kCardbusCis = 0x28;         // 32 bits, RO 0
inline constexpr uint32_t kSubsystemVendorId = 0x2C;  // 16 bits, RO
inline constexpr uint32_t kSubsystemId = 0x2E;        // 16 bits, RO
inline constexpr uint32_t kRomBar = 0x30;             // expansion ROM base address
inline constexpr uint32_t kCapabilityPointer = 0x34;  // 8 bits, RO
inline constexpr uint32_t kInterruptLine = 0x3C;      // 8 bits, RW
inline constexpr uint32_t kInterruptPin = 0x3D;       // 8 bits, RO
inline constexpr uint32_t kMinGnt = 0x3E;             // 8 bits, RO
inline constexpr uint32_t kMaxLat = 0x3F;             // 8 bits, RO
inline constexpr uint32_t kHeaderEnd = 0x40;          // first byte after the header
// Offset of BAR `index` (0..5).
constexpr uint32_t bar(int index) {
    return kBar0 + 4 * static_cast<uint32_t>(index);
}
}  // namespace reg

// Command register bits (spec 3.0 section 6.2.2, figure 6-2).
namespace command {
inline constexpr uint16_t kIoSpace = 1u << 0;
inline constexpr uint16_t kMemorySpace = 1u << 1;
inline constexpr uint16_t kBusMaster = 1u << 2;
inline constexpr uint16_t kParityErrorResponse = 1u << 6;
inline constexpr uint16_t kSerrEnable = 1u << 8;
inline constexpr uint16_t kInterruptDisable = 1u << 10;
// The bits a type 0 function implements as RW; the rest (special cycles, MWI, VGA snoop,
// IDSEL stepping, fast back-to-back) are hardwired to 0.
inline constexpr uint16_t kWritable =
    kIoSpace | kMemorySpace | kBusMaster | kParityErrorResponse | kSerrEnable | kInterruptDisable;
}  // namespace command

// Status register bits (spec 3.0 section 6.2.3, figure 6-3).
namespace status {
inline constexpr uint16_t kInterruptStatus = 1u << 3;   // RO, reflects INTx assertion
inline constexpr uint16_t kCapabilitiesList = 1u << 4;  // RO, set when a capability exists
inline constexpr uint16_t kMasterDataParityError = 1u << 8;
inline constexpr uint16_t kSignaledTargetAbort = 1u << 11;
inline constexpr uint16_t kReceivedTargetAbort = 1u << 12;
inline constexpr uint16_t kReceivedMasterAbort = 1u << 13;
inline constexpr uint16_t kSignaledSystemError = 1u << 14;
inline constexpr uint16_t kDetectedParityError = 1u << 15;
// Error bits: "Reads to this register behave normally. Writes are slightly different in
// that bits can be reset, but not set. A one bit is reset (if it is not reserved) whenever the
// register is written, and the write data in the corresponding bit location is a 1"
// (section 6.2.3).
inline constexpr uint16_t kW1c = kMasterDataParityError | kSignaledTargetAbort |
                                 kReceivedTargetAbort | kReceivedMasterAbort |
                                 kSignaledSystemError | kDetectedParityError;
}  // namespace status

// Header type register (offset 0x0E).
namespace header_type {
inline constexpr uint8_t kLayoutMask = 0x7F;  // 0 = type 0 (endpoint)
inline constexpr uint8_t kMultiFunction = 0x80;
}  // namespace header_type

}  // namespace potemkin::pci
