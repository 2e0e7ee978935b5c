#include "pci/header.hpp"

namespace potemkin::pci {

Result<ConfigSpace> make_type0_header(const HeaderSettings& s) {
    if (s.vendor_id == 0xFFFF)
        return fail("type 0 header: vendor ID 0xffff is reserved (it reads as an empty slot)");
    if (s.class_code > 0xFF'FFFF)
        return failf("type 0 header: class code {:#x} is wider than 24 bits", s.class_code);
    if (static_cast<uint8_t>(s.interrupt_pin) > static_cast<uint8_t>(InterruptPin::intd))
        return failf("type 0 header: interrupt pin {} is not 0 (none) or 1..4 (INTA#..INTD#)",
                     static_cast<unsigned>(s.interrupt_pin));

    ConfigSpace cs(s.express ? SpaceSize::express : SpaceSize::conventional);
    // Claim the whole header first (all read-only zero), then define what is not.
    for (uint32_t off = 0; off < reg::kHeaderEnd; off += 4) POTEMKIN_TRY(cs.set_u32(off, 0));

    POTEMKIN_TRY(cs.set_u16(reg::kVendorId, s.vendor_id));
    POTEMKIN_TRY(cs.set_u16(reg::kDeviceId, s.device_id));
    POTEMKIN_TRY(cs.set_u16(reg::kCommand, 0, {.wmask = command::kWritable}));
    POTEMKIN_TRY(cs.set_u16(reg::kStatus, 0, {.w1c = status::kW1c}));
    // Revision ID and the three class-code bytes form one read-only dword.
    POTEMKIN_TRY(cs.set_u32(reg::kRevisionId, s.revision_id | (s.class_code << 8)));
    POTEMKIN_TRY(cs.set_u8(reg::kCacheLineSize, 0, {.wmask = 0xFF}));
    POTEMKIN_TRY(cs.set_u8(reg::kLatencyTimer, 0, {.wmask = 0xFF}));
    POTEMKIN_TRY(cs.set_u8(reg::kHeaderType, s.multi_function ? header_type::kMultiFunction : 0));
    POTEMKIN_TRY(cs.set_u16(reg::kSubsystemVendorId, s.subsystem_vendor_id));
    POTEMKIN_TRY(cs.set_u16(reg::kSubsystemId, s.subsystem_id));
    POTEMKIN_TRY(cs.set_u8(reg::kInterruptLine, 0, {.wmask = 0xFF}));
    POTEMKIN_TRY(cs.set_u8(reg::kInterruptPin, static_cast<uint8_t>(s.interrupt_pin)));
    return cs;
}

}  // namespace potemkin::pci
