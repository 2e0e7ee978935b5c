#include "vm/cmos_rtc.hpp"

#include <chrono>

namespace potemkin::vm {

namespace {

enum : uint8_t {
    kSeconds = 0x00,
    kMinutes = 0x02,
    kHours = 0x04,
    kWeekday = 0x06,
    kDay = 0x07,
    kMonth = 0x08,
    kYear = 0x09,
    kRegA = 0x0a,
    kRegB = 0x0b,
    kRegC = 0x0c,
    kRegD = 0x0d,
    kCentury = 0x32,
};
constexpr uint8_t kBinary = 0x04, k24Hour = 0x02;

}  // namespace

CmosRtc::CmosRtc(Clock clock) : clock_(std::move(clock)) {}

std::time_t CmosRtc::now() const {
    const std::time_t host =
        clock_ ? clock_() : std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    return host + offset_;
}

void CmosRtc::reset() {
    // The clock keeps running through a reset (it has its own battery); the index and the
    // control registers return to what a BIOS leaves them at.
    index_ = 0;
    reg_a_ = 0x26;
    reg_b_ = 0x02;
}

uint8_t CmosRtc::encode(unsigned value) const {
    if (reg_b_ & kBinary) return static_cast<uint8_t>(value);
    return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

unsigned CmosRtc::decode(uint8_t value) const {
    if (reg_b_ & kBinary) return value;
    return (value >> 4) * 10u + (value & 0x0f);
}

uint8_t CmosRtc::encode_hour(unsigned hour) const {
    if (reg_b_ & k24Hour) return encode(hour);
    const unsigned h12 = hour % 12 == 0 ? 12 : hour % 12;
    return static_cast<uint8_t>(encode(h12) | (hour >= 12 ? 0x80 : 0));
}

unsigned CmosRtc::decode_hour(uint8_t value) const {
    if (reg_b_ & k24Hour) return decode(value);
    const unsigned h12 = decode(value & 0x7f) % 12;
    return (value & 0x80) ? h12 + 12 : h12;
}

uint8_t CmosRtc::read_register(uint8_t index) {
    index &= 0x7f;
    const std::time_t t = now();
    std::tm tm{};
    if (index <= kYear || index == kCentury) gmtime_r(&t, &tm);
    switch (index) {
        case kSeconds:
            return encode(static_cast<unsigned>(tm.tm_sec));
        case kMinutes:
            return encode(static_cast<unsigned>(tm.tm_min));
        case kHours:
            return encode_hour(static_cast<unsigned>(tm.tm_hour));
        case kWeekday:
            return encode(static_cast<unsigned>(tm.tm_wday) + 1);  // 1 = Sunday
        case kDay:
            return encode(static_cast<unsigned>(tm.tm_mday));
        case kMonth:
            return encode(static_cast<unsigned>(tm.tm_mon) + 1);
        case kYear:
            return encode(static_cast<unsigned>(tm.tm_year % 100));
        case kCentury:
            return encode(static_cast<unsigned>((tm.tm_year + 1900) / 100));
        case kRegA:
            return reg_a_ & 0x7f;  // UIP clear: never mid-update
        case kRegB:
            return reg_b_;
        case kRegC:
            return 0;
        case kRegD:
            return 0x80;
        default:
            // Alarm registers (0x01, 0x03, 0x05) and CMOS memory.
            return cmos_[index];
    }
}

void CmosRtc::write_register(uint8_t index, uint8_t value) {
    index &= 0x7f;
    auto set_field = [&](auto apply) {
        // Re-base the clock so the field now reads `value`, everything else unchanged.
        const std::time_t t = now();
        std::tm tm{};
        gmtime_r(&t, &tm);
        apply(tm);
        offset_ += timegm(&tm) - t;
    };
    switch (index) {
        case kSeconds:
            set_field([&](std::tm& tm) { tm.tm_sec = static_cast<int>(decode(value)); });
            break;
        case kMinutes:
            set_field([&](std::tm& tm) { tm.tm_min = static_cast<int>(decode(value)); });
            break;
        case kHours:
            set_field([&](std::tm& tm) { tm.tm_hour = static_cast<int>(decode_hour(value)); });
            break;
        case kDay:
            set_field([&](std::tm& tm) { tm.tm_mday = static_cast<int>(decode(value)); });
            break;
        case kMonth:
            set_field([&](std::tm& tm) { tm.tm_mon = static_cast<int>(decode(value)) - 1; });
            break;
        case kYear:
            set_field([&](std::tm& tm) {
                tm.tm_year =
                    (tm.tm_year + 1900) / 100 * 100 + static_cast<int>(decode(value)) - 1900;
            });
            break;
        case kCentury:
            set_field([&](std::tm& tm) {
                tm.tm_year = static_cast<int>(decode(value)) * 100 + tm.tm_year % 100 - 1900;
            });
            break;
        case kWeekday:
            break;  // derived from the date
        case kRegA:
            reg_a_ = value & 0x7f;
            break;
        case kRegB:
            reg_b_ = value;
            break;
        case kRegC:
        case kRegD:
            break;  // read-only
        default:
            cmos_[index] = value;
            break;
    }
}

Result<void> CmosRtc::attach(PortBus& bus, const std::string& owner) {
    BusHandler h{[this](uint64_t offset, unsigned) -> uint64_t {
                     // The index port reads back as all-ones on most chipsets (write-only).
                     return offset == 0 ? 0xff : read_register(index_);
                 },
                 [this](uint64_t offset, unsigned, uint64_t value) {
                     if (offset == 0)
                         index_ = static_cast<uint8_t>(value) & 0x7f;
                     else
                         write_register(index_, static_cast<uint8_t>(value));
                 }};
    auto id = bus.add(Port(kIndexPort), 2, owner, std::move(h));
    if (!id) return fail(id.error());
    return ok();
}

}  // namespace potemkin::vm
