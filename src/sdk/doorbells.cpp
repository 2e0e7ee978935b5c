#include "sdk/doorbells.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/eventfd.hpp"
#include "common/log.hpp"

namespace potemkin::sdk {

Result<void> DoorbellFds::renew(const DeviceSpec& spec) {
    WaitSet* waits = waits_;
    attach(nullptr);
    fds_.clear();
    pending_.assign(spec.doorbells.size(), 0);
    pending_any_ = false;
    handed_out_ = false;
    for (size_t i = 0; i < spec.doorbells.size(); ++i) {
        auto e = make_eventfd();
        if (!e) return fail(e.error().context(fmt::format("{}: doorbell {}", label_, i)));
        fds_.push_back(std::move(*e));
    }
    attach(waits);
    return ok();
}

void DoorbellFds::attach(WaitSet* waits) {
    for (const auto& fd : fds_) {
        if (waits_ != nullptr)
            if (auto r = waits_->unwatch(fd.get()); !r)
                log::warn("{}: doorbell: {}", label_, r.error().message);
        if (waits != nullptr)
            if (auto r = waits->watch(fd.get(), WaitSet::doorbell); !r)
                log::warn("{}: doorbell: {}", label_, r.error().message);
    }
    waits_ = waits;
}

void DoorbellFds::collect() {
    for (size_t i = 0; i < fds_.size(); ++i) {
        uint64_t n = 0;
        const ssize_t r = ::read(fds_[i].get(), &n, sizeof n);  // non-blocking (make_eventfd)
        if (r == static_cast<ssize_t>(sizeof n)) {
            pending_[i] += n;
            pending_any_ = true;
        } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
            log::warn("{}: doorbell {}: read: {}", label_, i, std::strerror(errno));
        }
    }
}

void DoorbellFds::deliver(ModelServer& server) {
    if (!pending_any_) return;
    pending_any_ = false;
    for (size_t i = 0; i < pending_.size(); ++i) {
        uint64_t n = pending_[i];
        pending_[i] = 0;
        if (n == 0) continue;
        if (n > kMaxRingsPerDelivery) {
            log::warn("{}: doorbell {} rang {} times at once; delivering {}", label_, i, n,
                      kMaxRingsPerDelivery);
            n = kMaxRingsPerDelivery;
        }
        rings_ += n;
        if (auto r = server.ring_doorbell(i, n); !r) log::warn("{}: {}", label_, r.error().message);
    }
}

}  // namespace potemkin::sdk
