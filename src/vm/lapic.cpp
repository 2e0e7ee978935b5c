#include "vm/lapic.hpp"

#include <bit>

namespace potemkin::vm {

namespace {

constexpr uint32_t kVersion = 0x00050014;  // max LVT entry 5 (six entries), version 0x14
constexpr uint32_t kLvtMasked = 0x00010000;
constexpr uint32_t kSvrEnable = 0x100;
constexpr uint32_t kEsrSendIllegalVector = 1u << 5;
constexpr uint32_t kEsrReceiveIllegalVector = 1u << 6;

// Writable bits of each LVT entry (SDM figure "Local Vector Table"): vector 7:0, delivery
// mode 10:8 where the entry has one, polarity 13 and trigger 15 for the LINT pins, mask 16,
// timer mode 18:17. Delivery status (12) and remote IRR (14) are read-only and read 0 here.
constexpr std::array<uint32_t, 6> kLvtWritable = {
    0x000700ff,  // 0x320 timer
    0x000107ff,  // 0x330 thermal
    0x000107ff,  // 0x340 performance counters
    0x0001a7ff,  // 0x350 LINT0
    0x0001a7ff,  // 0x360 LINT1
    0x000100ff,  // 0x370 error
};

}  // namespace

LocalApic::LocalApic(uint8_t apic_id, std::function<void()> on_change)
    : id_(apic_id), on_change_(std::move(on_change)) {
    lvt_.fill(kLvtMasked);
}

std::optional<uint8_t> LocalApic::highest(const Bits256& b) {
    for (unsigned i = b.size(); i-- > 0;)
        if (b[i]) return static_cast<uint8_t>(i * 32 + 31 - std::countl_zero(b[i]));
    return std::nullopt;
}

uint8_t LocalApic::ppr() const {
    // SDM "Processor Priority Register": PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV[7:4]:0.
    const uint8_t isrv = highest(isr_).value_or(0);
    const uint8_t tpr = static_cast<uint8_t>(tpr_);
    return (tpr >> 4) >= (isrv >> 4) ? tpr : static_cast<uint8_t>(isrv & 0xf0);
}

bool LocalApic::has_interrupt() const {
    if (!software_enabled()) return false;
    const auto v = highest(irr_);
    return v && (*v >> 4) > (ppr() >> 4);
}

std::optional<uint8_t> LocalApic::acknowledge() {
    if (!has_interrupt()) return std::nullopt;
    const uint8_t v = *highest(irr_);
    clear_bit(irr_, v);
    set_bit(isr_, v);
    return v;
}

void LocalApic::accept(uint8_t vector, bool level_triggered) {
    if (vector < 16) {
        // Vectors 0-15 are reserved for exceptions; the APIC refuses them and reports it.
        esr_pending_ |= kEsrReceiveIllegalVector;
        ++illegal_vectors_;
        return;
    }
    if (!software_enabled()) {
        ++dropped_while_disabled_;
        return;
    }
    set_bit(irr_, vector);
    // TMR records the trigger mode so a level interrupt's EOI could be forwarded to an I/O
    // APIC (none here).
    if (level_triggered)
        set_bit(tmr_, vector);
    else
        clear_bit(tmr_, vector);
    notify();
}

uint32_t LocalApic::mmio_read(uint32_t offset) {
    if (offset & 0xf || offset >= kSize) return 0;  // not the first dword of a register slot
    switch (offset) {
        case 0x20:
            return uint32_t{id_} << 24;
        case 0x30:
            return kVersion;
        case 0x80:
            return tpr_;
        case 0x90:
            return 0;  // APR: only used for lowest-priority arbitration, which is not modelled
        case 0xa0:
            return ppr();
        case 0xd0:
            return ldr_;
        case 0xe0:
            return dfr_;
        case 0xf0:
            return svr_;
        case 0x280:
            return esr_;
        case 0x300:
            return icr_low_;  // delivery status (bit 12) always idle
        case 0x310:
            return icr_high_;
        case 0x380:
            return timer_initial_;
        case 0x390:
            return 0;  // no timer: the current count never moves off zero
        case 0x3e0:
            return timer_divide_;
        default:
            break;
    }
    if (offset >= 0x100 && offset < 0x180) return isr_[(offset - 0x100) / 16];
    if (offset >= 0x180 && offset < 0x200) return tmr_[(offset - 0x180) / 16];
    if (offset >= 0x200 && offset < 0x280) return irr_[(offset - 0x200) / 16];
    if (offset >= 0x320 && offset < 0x380) return lvt_[(offset - 0x320) / 16];
    return 0;
}

void LocalApic::mmio_write(uint32_t offset, uint32_t value) {
    if (offset & 0xf || offset >= kSize) return;
    switch (offset) {
        case 0x80:
            // Lowering TPR may unblock a pending vector.
            tpr_ = value & 0xff;
            notify();
            return;
        case 0xb0: {
            // EOI: the highest in-service vector is the one being serviced (ISR nests by
            // priority), whatever value is written.
            if (const auto v = highest(isr_)) clear_bit(isr_, *v);
            notify();
            return;
        }
        case 0xd0:
            ldr_ = value & 0xff000000;
            return;
        case 0xe0:
            dfr_ = value | 0x0fffffff;  // bits 27:0 are reserved and read as ones
            return;
        case 0xf0: {
            svr_ = value & 0x3ff;
            if (!software_enabled())
                for (uint32_t& e : lvt_) e |= kLvtMasked;
            notify();
            return;
        }
        case 0x280:
            // A write latches the errors seen since the previous write (SDM "Error Handling").
            esr_ = esr_pending_;
            esr_pending_ = 0;
            return;
        case 0x300:
            icr_low_ = value & 0x000ccfff;  // vector, mode, dest mode, level, trigger, shorthand
            send_ipi();
            return;
        case 0x310:
            icr_high_ = value & 0xff000000;
            return;
        case 0x380:
            timer_initial_ = value;
            return;
        case 0x3e0:
            timer_divide_ = value & 0xb;
            return;
        default:
            break;
    }
    if (offset >= 0x320 && offset < 0x380) {
        const unsigned i = (offset - 0x320) / 16;
        lvt_[i] = value & kLvtWritable[i];
        if (!software_enabled()) lvt_[i] |= kLvtMasked;  // masks stick while disabled
    }
    // Everything else is read-only or reserved: ignored.
}

void LocalApic::send_ipi() {
    const Ipi ipi{
        static_cast<uint8_t>(icr_low_),
        static_cast<uint8_t>((icr_low_ >> 8) & 7),
        static_cast<bool>(icr_low_ & (1u << 11)),
        static_cast<bool>(icr_low_ & (1u << 15)),
        static_cast<uint8_t>((icr_low_ >> 18) & 3),
        static_cast<uint8_t>(icr_high_ >> 24),
    };
    const bool fixed_like = ipi.delivery_mode == 0 || ipi.delivery_mode == 1;
    if (fixed_like && ipi.vector < 16) {
        esr_pending_ |= kEsrSendIllegalVector;
        return;
    }
    if (ipi.shorthand == 1 && ipi.delivery_mode == 0) {
        accept(ipi.vector, ipi.level_triggered);
        return;
    }
    if (ipi_handler_) ipi_handler_(ipi);
}

}  // namespace potemkin::vm
