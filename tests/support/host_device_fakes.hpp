// Test doubles for the VMM side of a HostDevice (hostdev/host_device.hpp), shared by tests that
// open a HostDevice without a VM:
// - EngineQueue: a stand-in for the VM's engine thread. Its poster() goes into
//   OpenContext::post; the test thread runs what transports posted (run_pending), and
//   wait_until() waits, bounded, for an expected event instead of sleeping a guessed time.
// - RecordingEvents: a HostDeviceEvents that records every interrupt and connection event in
//   order, tracks the INTx level, serves DMA from a vm::GuestMemory (for transports without
//   shared RAM, like inproc:) and counts calls that arrived off the engine thread.
// - make_guest_ram(): guest RAM for OpenContext::memory (transports DMA into its memfd).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hostdev/host_device.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::testing {

class EngineQueue {
  public:
    // For OpenContext::post: thread-safe; the function runs on the test thread later.
    std::function<void(std::function<void()>)> poster() {
        return [this](std::function<void()> fn) {
            std::lock_guard lk(mu_);
            queue_.push_back(std::move(fn));
        };
    }
    // Runs everything posted so far (and what that posts in turn); returns how many ran.
    size_t run_pending() {
        size_t n = 0;
        for (;;) {
            std::deque<std::function<void()>> work;
            {
                std::lock_guard lk(mu_);
                work.swap(queue_);
            }
            if (work.empty()) return n;
            for (auto& fn : work) fn();
            n += work.size();
        }
    }
    // Runs posted work until `done()` holds or `timeout` passes; returns done(). The timeout
    // only bounds a failing test: a passing one returns as soon as the event is in.
    // Without OpenContext::post a transport delivers its events at the next HostDevice call:
    // `poke` (e.g. a call to HostDevice::info()) runs on every turn of wait_until() and settle().
    void set_poke(std::function<void()> poke) { poke_ = std::move(poke); }

    template <typename Pred>
    bool wait_until(Pred done, std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
        const auto end = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (poke_) poke_();
            run_pending();
            if (done()) return true;
            if (std::chrono::steady_clock::now() >= end) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    // Runs posted work for `period`: for checking that something does NOT happen (an event
    // that would arrive asynchronously has had that long to show up).
    void settle(std::chrono::milliseconds period) {
        (void)wait_until([] { return false; }, period);
    }

  private:
    std::mutex mu_;
    std::deque<std::function<void()>> queue_;
    std::function<void()> poke_;
};

class RecordingEvents final : public hostdev::HostDeviceEvents {
  public:
    enum class Kind { intx, msi, disconnected, reconnected };
    struct Event {
        Kind kind = Kind::intx;
        bool asserted = false;  // intx
        unsigned vector = 0;    // msi
        std::string why;        // disconnected
    };

    // `memory` (may be null: DMA fails) serves dma_read/dma_write.
    explicit RecordingEvents(vm::GuestMemory* memory = nullptr)
        : memory_(memory), engine_(std::this_thread::get_id()) {}

    void intx(bool asserted) override {
        record({.kind = Kind::intx, .asserted = asserted});
        level_ = asserted;
    }
    void msi(unsigned vector) override { record({.kind = Kind::msi, .vector = vector}); }
    Result<void> dma_read(uint64_t guest_address, std::span<uint8_t> out) override {
        check_thread();
        ++dma_reads_;
        if (memory_ == nullptr) return failf("no guest memory");
        return memory_->read(Gpa{guest_address}, out);
    }
    Result<void> dma_write(uint64_t guest_address, std::span<const uint8_t> in) override {
        check_thread();
        ++dma_writes_;
        if (memory_ == nullptr) return failf("no guest memory");
        return memory_->write(Gpa{guest_address}, in);
    }
    void disconnected(std::string_view why) override {
        record({.kind = Kind::disconnected, .why = std::string(why)});
    }
    void reconnected() override { record({.kind = Kind::reconnected}); }

    // ---- What happened ---------------------------------------------------------------------
    const std::vector<Event>& events() const { return events_; }
    size_t size() const { return events_.size(); }
    // The INTx level as last reported.
    bool intx_level() const { return level_; }
    // Events of `kind` from index `from` on (to look only at what followed a step).
    size_t count(Kind kind, size_t from = 0) const {
        size_t n = 0;
        for (size_t i = from; i < events_.size(); ++i) n += events_[i].kind == kind ? 1 : 0;
        return n;
    }
    size_t count_intx(bool asserted, size_t from = 0) const {
        size_t n = 0;
        for (size_t i = from; i < events_.size(); ++i)
            n += events_[i].kind == Kind::intx && events_[i].asserted == asserted ? 1 : 0;
        return n;
    }
    bool has_msi(unsigned vector, size_t from = 0) const {
        for (size_t i = from; i < events_.size(); ++i)
            if (events_[i].kind == Kind::msi && events_[i].vector == vector) return true;
        return false;
    }
    bool has_disconnected() const { return count(Kind::disconnected) != 0; }
    uint64_t dma_reads() const { return dma_reads_; }
    uint64_t dma_writes() const { return dma_writes_; }
    // Calls that did not come on the thread that built this object (the engine thread): a
    // transport must marshal its events onto the engine thread.
    uint64_t off_thread_calls() const { return off_thread_; }

  private:
    void check_thread() {
        if (std::this_thread::get_id() != engine_) ++off_thread_;
    }
    void record(Event e) {
        check_thread();
        events_.push_back(std::move(e));
    }

    vm::GuestMemory* memory_;
    std::thread::id engine_;
    std::vector<Event> events_;
    bool level_ = false;
    uint64_t dma_reads_ = 0;
    uint64_t dma_writes_ = 0;
    uint64_t off_thread_ = 0;
};

// One RAM region of `size` bytes (a multiple of 4 KiB) at guest-physical `base`.
inline Result<std::unique_ptr<vm::GuestMemory>> make_guest_ram(uint64_t size, uint64_t base = 0) {
    return vm::GuestMemory::create({vm::RamRegionSpec{Gpa{base}, size}});
}

// `n` bytes that differ from each other and from zero-filled memory, varied by `seed`.
inline std::vector<uint8_t> test_pattern(size_t n, uint8_t seed = 0x5A) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 31 + seed) | 1);
    return v;
}

}  // namespace potemkin::testing
