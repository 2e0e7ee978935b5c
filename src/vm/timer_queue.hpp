// The TimerService behind the machine: a deadline-ordered queue run on the engine thread.
// Another thread (the machine's kicker) only reads next_deadline() through the machine's lock.
#pragma once

#include <map>
#include <optional>

#include "vm/timer.hpp"

namespace potemkin::vm {

class TimerQueue final : public TimerService {
  public:
    // Called whenever the earliest deadline may have moved earlier.
    explicit TimerQueue(std::function<void()> on_earlier = {})
        : on_earlier_(std::move(on_earlier)) {}

    Clock::time_point now() const override { return Clock::now(); }
    TimerId schedule(Clock::time_point when, std::function<void()> callback) override;
    void cancel(TimerId id) override;

    std::optional<Clock::time_point> next_deadline() const;
    // Run every timer due at `now` (callbacks may schedule more); returns how many ran.
    unsigned run_due(Clock::time_point now);
    bool empty() const { return by_time_.empty(); }

  private:
    std::multimap<Clock::time_point, std::pair<TimerId, std::function<void()>>> by_time_;
    TimerId next_id_ = 1;
    std::function<void()> on_earlier_;
};

}  // namespace potemkin::vm
