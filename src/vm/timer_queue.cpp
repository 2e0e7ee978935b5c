#include "vm/timer_queue.hpp"

namespace potemkin::vm {

TimerId TimerQueue::schedule(Clock::time_point when, std::function<void()> callback) {
    TimerId id = next_id_++;
    bool earlier = by_time_.empty() || when < by_time_.begin()->first;
    by_time_.emplace(when, std::make_pair(id, std::move(callback)));
    if (earlier && on_earlier_) on_earlier_();
    return id;
}

void TimerQueue::cancel(TimerId id) {
    for (auto it = by_time_.begin(); it != by_time_.end(); ++it) {
        if (it->second.first == id) {
            by_time_.erase(it);
            return;
        }
    }
}

std::optional<Clock::time_point> TimerQueue::next_deadline() const {
    if (by_time_.empty()) return std::nullopt;
    return by_time_.begin()->first;
}

unsigned TimerQueue::run_due(Clock::time_point now) {
    unsigned n = 0;
    while (!by_time_.empty() && by_time_.begin()->first <= now) {
        auto cb = std::move(by_time_.begin()->second.second);
        by_time_.erase(by_time_.begin());
        cb();
        ++n;
    }
    return n;
}

}  // namespace potemkin::vm
