// Pit8254: the Intel 8254 programmable interval timer at ports 0x40-0x43, input clock
// 1193182 Hz. Channel 0's OUT drives ISA IRQ 0.
//
// Implements:
// - The control word (port 0x43): channel select, access modes lobyte, hibyte, lobyte/hibyte
//   (with the read and write byte toggles), the counter latch command and the read-back
//   command (latch count and/or status of any set of channels; status byte = OUT, null
//   count, access mode, mode, BCD bit as written).
// - Modes 0 (interrupt on terminal count), 2 (rate generator) and 3 (square wave) fully,
//   including the 8254's aliases 6 and 7 for 2 and 3. In modes 2 and 3 a count written while
//   counting takes effect at the next period boundary, as the datasheet says; in mode 0 it
//   restarts the count.
// - Reload value 0 means 65536. Counts start when the last byte of the count is written (the
//   datasheet's extra CLK before the first decrement is not modelled).
// - Counter reads compute the count from the time elapsed since the count was loaded.
// - Channel 0 and IRQ 0: the PIT keeps a timer on the TimerService for the next OUT edge.
//   Mode 0 raises the line at terminal count and holds it high until the channel is
//   reprogrammed. Modes 2/3 give one pulse per period, irq0(true) then irq0(false): the PIC
//   sees the same rising edges as from the real waveform, while the line rests low between
//   pulses (it is forced edge-triggered, so the rest level does not matter). A late VM gets
//   one coalesced pulse for any number of elapsed periods and the next deadline stays on the
//   period grid (coalesced_periods() counts the pulses not delivered).
//
// Does not implement:
// - BCD counting: the BCD bit is stored and reported in the status byte, but counts are
//   binary.
// - Modes 1, 4 and 5 need a GATE rising edge (1, 5) or give a one-clock strobe (4). With the
//   gates tied high and no GATE input, they are run as mode 0 (count once from the write,
//   raise OUT at terminal count); the status byte reports the mode as written.
// - GATE inputs: all gates are tied high. Port 0x61 (channel 2's gate and the speaker) is not
//   implemented.
// - Channels 1 and 2 count and can be read, but their OUT drives nothing.
//
// References: Intel 8254 Programmable Interval Timer datasheet (order 231164), "Control Word
// Format", "Counter Latch Command", "Read-Back Command", "Modes of Operation".
//
// Threading: every call happens on the VM's engine thread (timer callbacks included).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "vm/bus.hpp"
#include "vm/timer.hpp"

namespace potemkin::vm {

class Pit8254 {
  public:
    static constexpr uint64_t kInputHz = 1193182;

    Pit8254(TimerService& timers, std::function<void(bool)> irq0);
    ~Pit8254();
    Pit8254(const Pit8254&) = delete;
    Pit8254& operator=(const Pit8254&) = delete;

    // Ports 0x40-0x43; others read 0xFF and ignore writes. Port 0x43 is write-only: reads
    // return 0xFF.
    uint8_t io_read(uint16_t port);
    void io_write(uint16_t port, uint8_t value);

    // Register 0x40-0x43 on `bus` under `owner`.
    Result<void> attach(PortBus& bus, const std::string& owner);

    // A VM reset: every channel unprogrammed, channel 0's timer cancelled, IRQ 0 low.
    void reset();

    // Channel 0 periods that elapsed without their own pulse because the VM was late.
    uint64_t coalesced_periods() const { return coalesced_; }
    // Whether channel 0 has a timer pending (for tests).
    bool timer_pending() const { return timer_.has_value(); }

    // Ticks of the 1193182 Hz clock in `d` (rounded down), and the duration of `ticks`
    // (rounded up, so a timer set for tick k fires at or after tick k).
    static uint64_t to_ticks(Clock::duration d);
    static Clock::duration to_duration(uint64_t ticks);

  private:
    struct Channel {
        uint8_t mode = 0;          // 0-5, after folding the aliases 6/7
        uint8_t written_mode = 0;  // as written, for the status byte
        uint8_t access = 3;        // 1 lobyte, 2 hibyte, 3 lobyte then hibyte
        bool bcd = false;
        bool counting = false;   // a count has been loaded since the last control word
        bool null_count = true;  // a count was written but not yet loaded
        uint32_t reload = 0x10000;
        Clock::time_point start;  // when `reload` was loaded
        // Modes 2/3: a count written while counting, loaded at the next period boundary.
        std::optional<uint32_t> next_reload;
        Clock::time_point next_start;
        uint16_t write_latch = 0;  // low byte held until the high byte arrives
        bool write_high = false;   // lobyte/hibyte: the next write is the high byte
        bool read_high = false;    // lobyte/hibyte: the next unlatched read is the high byte
        std::optional<uint16_t> count_latch;
        bool latch_read_high = false;
        std::optional<uint8_t> status_latch;
    };

    // Apply a deferred reload whose boundary has passed.
    void settle(unsigned ch, Clock::time_point now);
    static uint16_t current_count(const Channel& c, uint64_t elapsed_ticks);
    static bool out_level(const Channel& c, uint64_t elapsed_ticks);
    // Ticks since channel `ch` loaded its count (after settling).
    uint64_t elapsed(unsigned ch);
    uint8_t status_byte(unsigned ch);
    void write_control(uint8_t value);
    void latch_count(unsigned ch);
    void write_count(unsigned ch, uint8_t value);
    void load_count(unsigned ch, uint32_t count);
    uint8_t read_counter(unsigned ch);

    // Channel 0 timer management.
    void set_irq0(bool level);
    void arm_channel0();
    void cancel_timer();
    void on_timer();

    TimerService& timers_;
    std::function<void(bool)> irq0_;
    std::array<Channel, 3> channels_;
    std::optional<TimerId> timer_;
    // Modes 2/3: index of the next period boundary not yet pulsed, counted in periods from
    // channel 0's start (boundary 0 is the start itself, which is an edge only after a
    // deferred reload).
    uint64_t next_edge_ = 0;
    bool irq_level_ = false;
    uint64_t coalesced_ = 0;
};

}  // namespace potemkin::vm
