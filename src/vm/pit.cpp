#include "vm/pit.hpp"

#include <utility>

namespace potemkin::vm {

namespace {

constexpr uint64_t kNsPerSec = 1'000'000'000;
constexpr uint16_t kBase = 0x40;
constexpr uint16_t kControl = 0x43;

bool periodic(uint8_t mode) {
    return mode == 2 || mode == 3;
}

}  // namespace

uint64_t Pit8254::to_ticks(Clock::duration d) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    if (ns <= 0) return 0;
    // Split at whole seconds so ns * 1193182 cannot overflow 64 bits.
    const auto u = static_cast<uint64_t>(ns);
    return (u / kNsPerSec) * kInputHz + (u % kNsPerSec) * kInputHz / kNsPerSec;
}

Clock::duration Pit8254::to_duration(uint64_t ticks) {
    const uint64_t ns =
        (ticks / kInputHz) * kNsPerSec + ((ticks % kInputHz) * kNsPerSec + kInputHz - 1) / kInputHz;
    return std::chrono::ceil<Clock::duration>(
        std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(ns)));
}

Pit8254::Pit8254(TimerService& timers, std::function<void(bool)> irq0)
    : timers_(timers), irq0_(std::move(irq0)) {}

Pit8254::~Pit8254() {
    cancel_timer();
}

void Pit8254::reset() {
    cancel_timer();
    channels_ = {};
    next_edge_ = 0;
    coalesced_ = 0;
    set_irq0(false);
}

void Pit8254::settle(unsigned ch, Clock::time_point now) {
    Channel& c = channels_[ch];
    if (!c.next_reload || now < c.next_start) return;
    c.reload = *c.next_reload;
    c.start = c.next_start;
    c.next_reload.reset();
    if (ch == 0) next_edge_ = 0;  // the boundary where the new count was loaded is an edge
}

uint64_t Pit8254::elapsed(unsigned ch) {
    const auto now = timers_.now();
    settle(ch, now);
    return to_ticks(now - channels_[ch].start);
}

uint16_t Pit8254::current_count(const Channel& c, uint64_t e) {
    const uint64_t n = c.reload;
    switch (c.mode) {
        case 2:  // n, n-1, ..., 1, reload
            return static_cast<uint16_t>(n - e % n);
        case 3:  // decrements by 2, twice per period (QEMU's approximation for odd n)
            return static_cast<uint16_t>(n - (2 * e) % n);
        default:  // mode 0: after terminal count the counter wraps to 0xFFFF and goes on
            return static_cast<uint16_t>(n - e);
    }
}

bool Pit8254::out_level(const Channel& c, uint64_t e) {
    const uint64_t n = c.reload;
    switch (c.mode) {
        case 2:  // low for the one clock while the count is 1
            return e % n != n - 1;
        case 3:  // high for the first half (rounded up), low for the second
            return e % n < (n + 1) / 2;
        default:
            return e >= n;
    }
}

uint8_t Pit8254::status_byte(unsigned ch) {
    Channel& c = channels_[ch];
    // Before a count is loaded OUT is at its post-control-word level: low in mode 0, high
    // in every other mode.
    const bool out = c.counting ? out_level(c, elapsed(ch)) : c.written_mode != 0;
    return static_cast<uint8_t>((out ? 0x80 : 0) | (c.null_count ? 0x40 : 0) | (c.access << 4) |
                                (c.written_mode << 1) | (c.bcd ? 1 : 0));
}

void Pit8254::latch_count(unsigned ch) {
    Channel& c = channels_[ch];
    if (c.count_latch) return;  // a second latch before the first is read is ignored
    c.count_latch = c.counting ? current_count(c, elapsed(ch)) : static_cast<uint16_t>(c.reload);
    c.latch_read_high = false;
}

void Pit8254::write_control(uint8_t value) {
    const unsigned sel = value >> 6;
    if (sel == 3) {
        // Read-back: bit 5 clear latches counts, bit 4 clear latches status, bits 3:1 pick
        // channels 2:0. A status already latched and not read is kept.
        for (unsigned ch = 0; ch < 3; ++ch) {
            if (!(value & (2u << ch))) continue;
            if (!(value & 0x20)) latch_count(ch);
            if (!(value & 0x10) && !channels_[ch].status_latch)
                channels_[ch].status_latch = status_byte(ch);
        }
        return;
    }
    const unsigned access = (value >> 4) & 3;
    if (access == 0) return latch_count(sel);
    Channel& c = channels_[sel];
    c.access = static_cast<uint8_t>(access);
    c.written_mode = (value >> 1) & 7;
    c.mode = c.written_mode > 5 ? static_cast<uint8_t>(c.written_mode - 4) : c.written_mode;
    if (!periodic(c.mode)) c.mode = 0;  // 1, 4, 5: run as mode 0 (see the header)
    c.bcd = value & 1;
    // A control word resets the channel's control logic: counting stops until a new count.
    c.counting = false;
    c.null_count = true;
    c.next_reload.reset();
    c.write_high = false;
    c.read_high = false;
    c.count_latch.reset();
    c.status_latch.reset();
    if (sel == 0) {
        cancel_timer();
        set_irq0(false);
    }
}

void Pit8254::load_count(unsigned ch, uint32_t count) {
    Channel& c = channels_[ch];
    const uint32_t n = count == 0 ? 0x10000 : count;
    const auto now = timers_.now();
    c.null_count = false;
    if (c.counting && periodic(c.mode)) {
        // Modes 2/3: the new count is loaded at the end of the current period.
        settle(ch, now);
        const uint64_t k = to_ticks(now - c.start) / c.reload + 1;
        c.next_start = c.start + to_duration(k * c.reload);
        c.next_reload = n;
        return;
    }
    c.reload = n;
    c.start = now;
    c.counting = true;
    c.next_reload.reset();
    if (ch == 0) arm_channel0();
}

void Pit8254::write_count(unsigned ch, uint8_t value) {
    Channel& c = channels_[ch];
    switch (c.access) {
        case 1:
            return load_count(ch, value);
        case 2:
            return load_count(ch, uint32_t{value} << 8);
        default:
            if (!c.write_high) {
                c.write_latch = value;
                c.write_high = true;
                // Mode 0: the first byte stops the count and drops OUT (8254, mode 0).
                if (c.mode == 0) {
                    c.counting = false;
                    if (ch == 0) {
                        cancel_timer();
                        set_irq0(false);
                    }
                }
                return;
            }
            c.write_high = false;
            return load_count(ch, c.write_latch | (uint32_t{value} << 8));
    }
}

uint8_t Pit8254::read_counter(unsigned ch) {
    Channel& c = channels_[ch];
    if (c.status_latch) {
        const uint8_t s = *c.status_latch;
        c.status_latch.reset();
        return s;
    }
    if (c.count_latch) {
        const uint16_t v = *c.count_latch;
        bool high = c.access == 2;
        bool done = true;
        if (c.access == 3) {
            high = c.latch_read_high;
            done = high;
            c.latch_read_high = !high;
        }
        if (done) c.count_latch.reset();
        return static_cast<uint8_t>(high ? v >> 8 : v);
    }
    const uint16_t v = c.counting ? current_count(c, elapsed(ch)) : static_cast<uint16_t>(c.reload);
    bool high = c.access == 2;
    if (c.access == 3) {
        high = c.read_high;
        c.read_high = !high;
    }
    return static_cast<uint8_t>(high ? v >> 8 : v);
}

uint8_t Pit8254::io_read(uint16_t port) {
    if (port < kBase || port >= kControl) return 0xff;  // 0x43 is write-only
    return read_counter(port - kBase);
}

void Pit8254::io_write(uint16_t port, uint8_t value) {
    if (port == kControl) return write_control(value);
    if (port >= kBase && port < kControl) write_count(port - kBase, value);
}

void Pit8254::set_irq0(bool level) {
    if (level == irq_level_) return;
    irq_level_ = level;
    if (irq0_) irq0_(level);
}

void Pit8254::cancel_timer() {
    if (timer_) timers_.cancel(*timer_);
    timer_.reset();
}

void Pit8254::arm_channel0() {
    cancel_timer();
    const Channel& c = channels_[0];
    set_irq0(false);
    // Mode 0: OUT rises at terminal count. Modes 2/3: the first rising edge ends the first
    // period.
    next_edge_ = 1;
    timer_ = timers_.schedule(c.start + to_duration(c.reload), [this] { on_timer(); });
}

void Pit8254::on_timer() {
    timer_.reset();
    Channel& c = channels_[0];
    if (!c.counting) return;
    const auto now = timers_.now();
    settle(0, now);
    const uint64_t e = to_ticks(now - c.start);
    if (!periodic(c.mode)) {
        if (e >= c.reload) {
            set_irq0(true);  // stays high until reprogrammed
            return;
        }
        // Woken early (the service promises "at or after", but be safe): wait again.
        timer_ = timers_.schedule(c.start + to_duration(c.reload), [this] { on_timer(); });
        return;
    }
    const uint64_t k = e / c.reload;  // the last boundary that has passed
    if (k + 1 > next_edge_) {
        // One pulse however many periods passed: the PIC would have merged them too, as an
        // edge latch holds a single request.
        coalesced_ += k - next_edge_;
        set_irq0(true);
        set_irq0(false);
        next_edge_ = k + 1;
    }
    timer_ = timers_.schedule(c.start + to_duration(next_edge_ * c.reload), [this] { on_timer(); });
}

Result<void> Pit8254::attach(PortBus& bus, const std::string& owner) {
    BusHandler h{[this](uint64_t offset, unsigned size) {
                     uint64_t v = 0;
                     for (unsigned i = 0; i < size; ++i)
                         v |= uint64_t{io_read(static_cast<uint16_t>(kBase + offset + i))}
                              << (8 * i);
                     return v;
                 },
                 [this](uint64_t offset, unsigned size, uint64_t value) {
                     for (unsigned i = 0; i < size; ++i)
                         io_write(static_cast<uint16_t>(kBase + offset + i),
                                  static_cast<uint8_t>(value >> (8 * i)));
                 }};
    auto id = bus.add(Port(kBase), 4, owner, std::move(h));
    if (!id) return fail(id.error());
    return ok();
}

}  // namespace potemkin::vm
