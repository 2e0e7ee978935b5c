// Test fakes for the VM services a DeviceContext needs: an interrupt sink that records line
// changes, MSIs and EOI listeners (so a test can play the guest's EOI), and timers that never
// fire. Shared by the device and bus unit tests.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "pci/capabilities.hpp"
#include "vm/device.hpp"

namespace potemkin::testing {

// Records every line change (irq_calls, in order; levels, the last per line), every MSI, and
// holds EOI listeners so a test can play the guest's EOI (eoi()).
struct RecordingSink final : vm::InterruptSink {
    std::map<unsigned, bool> levels;
    std::vector<std::pair<unsigned, bool>> irq_calls;
    std::vector<pci::MsiMessage> msis;
    std::map<uint64_t, EoiListener> listeners;
    uint64_t next = 0;

    void set_irq(unsigned line, bool level) override {
        levels[line] = level;
        irq_calls.emplace_back(line, level);
    }
    void send_msi(uint64_t address, uint32_t data) override { msis.push_back({address, data}); }
    uint64_t add_eoi_listener(EoiListener l) override {
        listeners[++next] = std::move(l);
        return next;
    }
    void remove_eoi_listener(uint64_t h) override { listeners.erase(h); }
    void eoi(unsigned line) {
        for (auto& [h, l] : listeners) l(line);
    }
};

struct NullTimers final : vm::TimerService {
    vm::Clock::time_point now() const override { return {}; }
    vm::TimerId schedule(vm::Clock::time_point, std::function<void()>) override { return 0; }
    void cancel(vm::TimerId) override {}
};

}  // namespace potemkin::testing
