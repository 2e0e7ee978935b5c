// The --trace file: one line per device access (docs/trace.md). A write error stops the trace
// and is logged once, when it happens, and again at close, where the file is flushed.
#pragma once

#include <cstdio>
#include <functional>
#include <string>

#include "vm/bus.hpp"
#include "vm/device.hpp"
#include "vm/timer.hpp"

namespace potemkin::machine {

class TraceWriter final : public vm::TraceNotes {
  public:
    static Result<std::unique_ptr<TraceWriter>> open(const std::string& path,
                                                     std::function<unsigned()> current_vcpu);
    ~TraceWriter() override;

    void access(const vm::BusAccess& a);
    void note(std::string_view device, std::string_view text) override;

  private:
    TraceWriter(std::FILE* f, std::string path, std::function<unsigned()> vcpu)
        : file_(f), path_(std::move(path)), vcpu_(std::move(vcpu)) {}
    uint64_t now_ns() const;
    void put(std::string_view line);
    std::FILE* file_;
    std::string path_;
    bool failed_ = false;
    int errno_ = 0;
    std::function<unsigned()> vcpu_;
    vm::Clock::time_point start_ = vm::Clock::now();
};

}  // namespace potemkin::machine
