// The --trace file (docs/trace.md, format v2): one line per device access with its duration,
// and one per interrupt, DMA transfer, link event and note the devices report. A write error
// stops the trace and is logged once, when it happens, and again at close, where the file is
// flushed.
//
// Records are written when they complete: an access's line follows the lines of what happened
// during it (an interrupt its write raised), while its time_ns is its start.
#pragma once

#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "vm/bus.hpp"
#include "vm/device.hpp"
#include "vm/interrupts.hpp"
#include "vm/timer.hpp"

namespace potemkin::machine {

class TraceWriter final : public vm::TraceNotes {
  public:
    // `interrupts` is where devices' interrupts really go; interrupts() wraps it.
    static Result<std::unique_ptr<TraceWriter>> open(const std::string& path,
                                                     std::function<unsigned()> current_vcpu,
                                                     vm::InterruptSink& interrupts);
    ~TraceWriter() override;

    void access(const vm::BusAccess& a);
    void note(std::string_view device, std::string_view text) override;
    void interrupt_begin(std::string_view device, vm::TracedInterrupt what) override;
    void interrupt_end() override;
    void dma(std::string_view device, bool to_guest, uint64_t guest_address, uint64_t length,
             std::string_view refused) override;
    void link(std::string_view device, bool up, std::string_view why) override;

    // The sink to give devices instead of the real one: it forwards everything and shows the
    // trace what a front-end delivered for the interrupt being recorded (PIC line, MSI message).
    vm::InterruptSink& interrupts() { return sink_; }

  private:
    class Sink final : public vm::InterruptSink {
      public:
        Sink(TraceWriter& w, vm::InterruptSink& real) : w_(w), real_(real) {}
        void set_irq(unsigned line, bool level) override;
        void send_msi(uint64_t address, uint32_t data) override;
        uint64_t add_eoi_listener(EoiListener listener) override {
            return real_.add_eoi_listener(std::move(listener));
        }
        void remove_eoi_listener(uint64_t handle) override { real_.remove_eoi_listener(handle); }

      private:
        TraceWriter& w_;
        vm::InterruptSink& real_;
    };
    // The interrupt between interrupt_begin() and interrupt_end().
    struct Pending {
        std::string device;
        vm::TracedInterrupt what;
        uint64_t time_ns;
        std::optional<unsigned> line;
        bool sent = false;
        uint64_t address = 0;
        uint32_t data = 0;
    };

    TraceWriter(std::FILE* f, std::string path, std::function<unsigned()> vcpu,
                vm::InterruptSink& interrupts)
        : file_(f), path_(std::move(path)), vcpu_(std::move(vcpu)), sink_(*this, interrupts) {}
    uint64_t ns_since_open(vm::Clock::time_point t) const;
    uint64_t now_ns() const { return ns_since_open(vm::Clock::now()); }
    void write_interrupt(const Pending& p);
    void put(std::string_view line);
    std::FILE* file_;
    std::string path_;
    bool failed_ = false;
    int errno_ = 0;
    std::function<unsigned()> vcpu_;
    Sink sink_;
    std::optional<Pending> pending_;
    vm::Clock::time_point start_ = vm::Clock::now();
};

}  // namespace potemkin::machine
