// CmosRtc: the PC's Motorola MC146818 real-time clock and CMOS memory at ports 0x70 (index,
// bit 7 = NMI disable) and 0x71 (data), so an operating system reads the wall-clock time at
// boot instead of finding an absent RTC (Linux warns and uses the epoch).
//
// Implements (MC146818A data sheet, "Address Map" and "Registers A-D"):
// - Time and date registers 0x00-0x09 (seconds, alarm seconds, minutes, alarm minutes, hours,
//   alarm hours, day of week, day of month, month, year), from the host's UTC clock at the
//   moment of the read, in the format register B selects: BCD or binary (DM, bit 2), 24- or
//   12-hour (bit 1; PM in bit 7 of the hour). Writes to them are kept as an offset from the
//   host clock, so a guest that sets the time reads its time back, advancing.
// - Register A: the divider bits as written (reset 0x26, 32.768 kHz and 1024 Hz); UIP (bit 7)
//   always reads 0: an update is instantaneous here.
// - Register B: as written, except that SET (bit 7) freezes nothing (no update cycle to stop).
// - Register C reads 0 (no interrupt flags: periodic, alarm and update-ended interrupts are not
//   implemented), register D reads 0x80 (VRT: the battery is fine).
// - CMOS bytes 0x0E-0x7F as plain memory, zero at power-on (no BIOS put anything there);
//   the century byte 0x32 follows the clock.
//
// Does not implement: the interrupts (IRQ 8 is never raised), the square-wave output, the
// NMI mask's effect (there is no NMI), the "extended" CMOS bank at 0x72/0x73.
//
// Threading: engine thread only.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>

#include "common/result.hpp"
#include "vm/bus.hpp"

namespace potemkin::vm {

class CmosRtc {
  public:
    static constexpr uint16_t kIndexPort = 0x70;
    // Seconds since the epoch, UTC; tests give a fixed clock.
    using Clock = std::function<std::time_t()>;
    explicit CmosRtc(Clock clock = nullptr);

    Result<void> attach(PortBus& bus, const std::string& owner);
    void reset();

    uint8_t read_register(uint8_t index);
    void write_register(uint8_t index, uint8_t value);

  private:
    std::time_t now() const;
    uint8_t encode(unsigned value) const;      // to register B's format
    unsigned decode(uint8_t value) const;      // from it
    uint8_t encode_hour(unsigned hour) const;  // 12/24-hour and PM bit
    unsigned decode_hour(uint8_t value) const;

    Clock clock_;
    std::time_t offset_ = 0;  // guest time minus host time, from writes to the clock
    uint8_t index_ = 0;
    uint8_t reg_a_ = 0x26, reg_b_ = 0x02;
    std::array<uint8_t, 128> cmos_{};
};

}  // namespace potemkin::vm
