// Building a type 0 configuration header (PCI Local Bus Spec 3.0 section 6.1, 6.2) from a
// settings struct: which registers are read-only, which RW, which W1C.
#pragma once

#include <cstdint>

#include "common/result.hpp"
#include "pci/config_space.hpp"
#include "pci/registers.hpp"

namespace potemkin::pci {

// Interrupt Pin register values (spec 3.0 section 6.2.4).
enum class InterruptPin : uint8_t { none = 0, inta = 1, intb = 2, intc = 3, intd = 4 };

struct HeaderSettings {
    uint16_t vendor_id = 0;  // 0xFFFF is rejected: it is what an empty slot reads
    uint16_t device_id = 0;
    uint32_t class_code = 0;  // 24 bits: base class << 16 | sub-class << 8 | prog-if
    uint8_t revision_id = 0;
    uint16_t subsystem_vendor_id = 0;
    uint16_t subsystem_id = 0;
    InterruptPin interrupt_pin = InterruptPin::none;
    bool multi_function = false;  // header type bit 7
    bool express = false;         // 4096-byte configuration space
};

// A configuration space holding a type 0 header:
// - vendor, device, revision, class code, header type, subsystem IDs, interrupt pin,
//   capability pointer, CardBus CIS, Min_Gnt, Max_Lat: read-only;
// - command: RW for I/O space, memory space, bus master, parity error response, SERR# enable
//   and interrupt disable; every other bit reads 0 (spec 3.0 section 6.2.2);
// - status: interrupt status and capabilities list read-only (set by the device and by
//   add_capability), the six error bits write-1-to-clear, the rest read 0 (section 6.2.3);
// - cache line size, latency timer, interrupt line: RW; BIST: 0 (not supported);
// - BARs and the ROM BAR: unimplemented (read 0) until install_bars() defines them.
// All of 0x00..0x3F is claimed, so capabilities are placed at 0x40 and above.
Result<ConfigSpace> make_type0_header(const HeaderSettings& settings);

}  // namespace potemkin::pci
