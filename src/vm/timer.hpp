// Timers for devices (PIT, device models). Callbacks run on the VM's engine thread, between
// guest instructions, never concurrently with a bus access.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace potemkin::vm {

using TimerId = uint64_t;
using Clock = std::chrono::steady_clock;

class TimerService {
  public:
    virtual ~TimerService() = default;
    virtual Clock::time_point now() const = 0;
    // Run `callback` once at or after `when`. Returns an id for cancel().
    virtual TimerId schedule(Clock::time_point when, std::function<void()> callback) = 0;
    // Cancel a timer that has not fired; unknown or already fired ids are ignored.
    virtual void cancel(TimerId id) = 0;
};

}  // namespace potemkin::vm
