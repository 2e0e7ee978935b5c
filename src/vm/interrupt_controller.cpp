#include "vm/interrupt_controller.hpp"

#include <algorithm>
#include <utility>

namespace potemkin::vm {

namespace {

constexpr uint8_t kFixed = 0;
constexpr uint8_t kLowestPriority = 1;
constexpr uint8_t kBroadcastId = 0xff;

}  // namespace

InterruptController::InterruptController(unsigned vcpu_count, std::function<void()> kick)
    : kick_(std::move(kick)), pic_([this] {
          if (kick_) kick_();
      }) {
    make_lapics(vcpu_count);
    pic_.set_eoi_listener([this](unsigned line) {
        // By handle, looked up again before each call: a listener may add or remove listeners
        // (a device that goes away in its EOI path), and a removed one must not be called.
        std::vector<uint64_t> handles;
        for (const auto& l : eoi_listeners_) handles.push_back(l.first);
        for (const uint64_t h : handles) {
            auto it = std::find_if(eoi_listeners_.begin(), eoi_listeners_.end(),
                                   [h](const auto& l) { return l.first == h; });
            if (it == eoi_listeners_.end()) continue;
            const EoiListener fn = it->second;  // the entry may go away while it runs
            fn(line);
        }
    });
}

void InterruptController::make_lapics(unsigned vcpu_count) {
    lapics_.clear();
    for (unsigned i = 0; i < vcpu_count; ++i) {
        lapics_.push_back(std::make_unique<LocalApic>(static_cast<uint8_t>(i), [this] {
            if (kick_) kick_();
        }));
        lapics_.back()->set_ipi_handler(
            [this, i](const LocalApic::Ipi& ipi) { route_ipi(i, ipi); });
    }
}

void InterruptController::reset() {
    make_lapics(static_cast<unsigned>(lapics_.size()));
    pic_.reset();
}

uint64_t InterruptController::add_eoi_listener(EoiListener listener) {
    const uint64_t handle = next_listener_++;
    eoi_listeners_.emplace_back(handle, std::move(listener));
    return handle;
}

void InterruptController::remove_eoi_listener(uint64_t handle) {
    std::erase_if(eoi_listeners_, [handle](const auto& l) { return l.first == handle; });
}

void InterruptController::set_irq(unsigned line, bool level) {
    pic_.set_irq(line, level);
}

bool InterruptController::matches(const LocalApic& a, const Message& m) const {
    if (!m.logical) return m.destination == kBroadcastId || a.id() == m.destination;
    // Flat logical model: the destination is a bitmask against each LDR's 8-bit logical ID.
    return a.flat_model() && (a.logical_id() & m.destination) != 0;
}

bool InterruptController::deliver(const Message& m, bool broadcast,
                                  std::optional<unsigned> exclude) {
    std::vector<LocalApic*> targets;
    for (unsigned i = 0; i < lapics_.size(); ++i) {
        if (exclude && *exclude == i) continue;
        if (broadcast || matches(*lapics_[i], m)) targets.push_back(lapics_[i].get());
    }
    if (targets.empty()) return false;
    if (m.delivery_mode == kLowestPriority) {
        LocalApic* best = targets.front();
        for (LocalApic* a : targets)
            if (a->tpr() < best->tpr()) best = a;  // ties keep the lowest ID (first found)
        best->accept(m.vector, m.level_triggered);
        return true;
    }
    for (LocalApic* a : targets) a->accept(m.vector, m.level_triggered);
    return true;
}

void InterruptController::send_msi(uint64_t address, uint32_t data) {
    if ((address >> 20) != 0xfee) {
        ++msi_bad_address_;
        return;
    }
    const Message m{
        static_cast<uint8_t>(data & 0xff),
        static_cast<uint8_t>((data >> 8) & 7),
        static_cast<bool>(address & 0x4),
        static_cast<bool>(data & 0x8000),
        static_cast<uint8_t>((address >> 12) & 0xff),
    };
    if (m.delivery_mode != kFixed && m.delivery_mode != kLowestPriority) {
        ++msi_bad_delivery_mode_;
        return;
    }
    if (!deliver(m, false, std::nullopt)) ++msi_no_destination_;
}

void InterruptController::route_ipi(unsigned from, const LocalApic::Ipi& ipi) {
    if (ipi.delivery_mode != kFixed && ipi.delivery_mode != kLowestPriority) {
        ++ipi_dropped_;
        return;
    }
    const Message m{ipi.vector, ipi.delivery_mode, ipi.logical, ipi.level_triggered,
                    ipi.destination};
    bool delivered = false;
    switch (ipi.shorthand) {
        case 0:
            delivered = deliver(m, false, std::nullopt);
            break;
        case 1:  // self (the LocalApic keeps fixed ones; lowest priority to self is still self)
            lapics_[from]->accept(m.vector, m.level_triggered);
            delivered = true;
            break;
        case 2:
            delivered = deliver(m, true, std::nullopt);
            break;
        default:
            delivered = deliver(m, true, from);
            break;
    }
    if (!delivered) ++ipi_dropped_;
}

bool InterruptController::has_interrupt(unsigned vcpu) {
    if (vcpu >= lapics_.size()) return false;
    if (lapics_[vcpu]->has_interrupt()) return true;
    return vcpu == 0 && pic_.output();
}

std::optional<uint8_t> InterruptController::acknowledge(unsigned vcpu) {
    if (vcpu >= lapics_.size()) return std::nullopt;
    if (auto v = lapics_[vcpu]->acknowledge()) return v;
    if (vcpu == 0 && pic_.output()) return pic_.acknowledge();
    return std::nullopt;
}

Result<void> InterruptController::attach(PortBus& ports, MmioBus& mmio,
                                         std::function<unsigned()> current_vcpu) {
    BusHandler h{[this, current_vcpu](uint64_t offset, unsigned size) -> uint64_t {
                     const unsigned v = current_vcpu();
                     if (size != 4 || v >= lapics_.size()) return 0;
                     return lapics_[v]->mmio_read(static_cast<uint32_t>(offset));
                 },
                 [this, current_vcpu](uint64_t offset, unsigned size, uint64_t value) {
                     const unsigned v = current_vcpu();
                     if (size != 4 || v >= lapics_.size()) return;
                     lapics_[v]->mmio_write(static_cast<uint32_t>(offset),
                                            static_cast<uint32_t>(value));
                 }};
    auto id = mmio.add(Gpa(LocalApic::kBase), LocalApic::kSize, "lapic", std::move(h));
    if (!id) return fail(id.error());
    if (auto r = pic_.attach(ports, "pic"); !r) {
        mmio.remove(*id);
        return fail(r.error());
    }
    return ok();
}

}  // namespace potemkin::vm
