#include "hostdev/remote_link.hpp"

#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/eventfd.hpp"
#include "common/log.hpp"

namespace potemkin::hostdev {

using Clock = std::chrono::steady_clock;

RemoteLink::RemoteLink(RemoteLinkSettings settings) : s_(std::move(settings)) {}

RemoteLink::~RemoteLink() {
    stop_polling();
}

Result<void> RemoteLink::open(std::weak_ptr<const void> owner) {
    if (s_.events == nullptr) return failf("{}: no event sink given", s_.label);
    owner_ = std::move(owner);
    auto wake = make_eventfd();
    if (!wake) return fail(wake.error().context(s_.label));
    wake_fd_ = std::move(*wake);
    eventfds_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!eventfds_) return failf(Errno{errno}, "{}: epoll_create1", s_.label);
    return ok();
}

Result<void> RemoteLink::start(RemoteTransport& transport) {
    if (!wake_fd_) return failf("{}: the remote link was not opened", s_.label);
    transport_ = &transport;
    hold_external(true);
    poller_ = std::thread([this] { poll_loop(); });
    return ok();
}

void RemoteLink::stop_polling() {
    {
        std::lock_guard lk(in_mu_);
        stopping_ = true;
    }
    wake();
    if (poller_.joinable()) poller_.join();
}

void RemoteLink::close() {
    if (closed_) return;
    stop_polling();
    closed_ = true;
    up_ = false;
    hold_external(false);
    std::lock_guard lk(in_mu_);
    inbox_.clear();
    inbox_pending_.store(false, std::memory_order_release);
}

// ---- Posted writes ---------------------------------------------------------------------------

void PostedWrites::failed(Failure kind, const std::string& label, const std::string& why) {
    auto& count = kind == Failure::send_failed ? send_failed_ : dropped_;
    auto& logged = kind == Failure::send_failed ? logged_send_failed_ : logged_dropped_;
    const uint64_t n = count.fetch_add(1, std::memory_order_relaxed) + 1;
    if (logged.exchange(true)) return;
    log::warn("{}: a posted write was {} ({}; {} so far; further ones are counted, not logged)",
              label, kind == Failure::send_failed ? "lost sending" : "dropped", why, n);
}

PostedWriteStats PostedWrites::stats() const {
    return {sent_.load(std::memory_order_relaxed), send_failed_.load(std::memory_order_relaxed),
            dropped_.load(std::memory_order_relaxed)};
}

void PostedWrites::log_summary(const std::string& label) const {
    const PostedWriteStats s = stats();
    if (s.send_failed + s.dropped == 0) return;
    log::warn("{}: posted writes: {} sent, {} lost sending, {} dropped while the device was gone",
              label, s.sent, s.send_failed, s.dropped);
}

// ---- Loss and restore ------------------------------------------------------------------------

bool RemoteLink::lost(std::string text, bool report) {
    if (!up_.exchange(false)) return false;
    if (report) queue([this, text = std::move(text)] { report_lost(text); });
    wake();  // watch for a restore; stop watching the dead connection
    return true;
}

// Engine thread: tell the front-end, once per loss.
void RemoteLink::report_lost(const std::string& text) {
    if (loss_reported_) return;
    loss_reported_ = true;
    deassert_intx();  // a device that is gone cannot hold its line
    // Nor raise another interrupt, unless it comes back: a halted guest must not wait for one.
    if (!s_.restore) hold_external(false);
    s_.events->disconnected(text);
}

void RemoteLink::restored() {
    loss_reported_ = false;
    hold_external(true);
    s_.events->reconnected();
}

void RemoteLink::hold_external(bool hold) {
    if (hold == external_held_ || !s_.external_source) return;
    external_held_ = hold;
    s_.external_source(hold ? +1 : -1);
}

// ---- Eventfds and the inbox ------------------------------------------------------------------

Result<void> RemoteLink::watch_eventfd(int fd, std::function<void()> on_fire) {
    std::lock_guard lk(in_mu_);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u32 = static_cast<uint32_t>(watched_.size());
    if (::epoll_ctl(eventfds_.get(), EPOLL_CTL_ADD, fd, &e) != 0)
        return failf(Errno{errno}, "{}: epoll_ctl adding eventfd {}", s_.label, fd);
    watched_.push_back({fd, std::move(on_fire)});
    return ok();
}

void RemoteLink::wake() {
    if (!wake_fd_) return;
    if (auto r = signal_eventfd(wake_fd_.get()); !r)
        log::error("{}: waking the poll thread: {}", s_.label, r.error().message);
}

// Moves fired eventfds' handlers into the inbox (in_mu_ held): one epoll_wait says which fired,
// and only those are read.
void RemoteLink::collect_locked() {
    if (!eventfds_ || watched_.empty()) return;
    epoll_event evs[64];
    for (;;) {
        const int n = ::epoll_wait(eventfds_.get(), evs, 64, 0);
        for (int i = 0; i < n; ++i) {
            const uint32_t index = evs[i].data.u32;
            if (index < watched_.size() && consume_eventfd(watched_[index].fd))
                inbox_.push_back(watched_[index].on_fire);
        }
        if (n < 64) break;
    }
    if (!inbox_.empty()) inbox_pending_.store(true, std::memory_order_release);
}

// True when the caller must post a drain (after releasing in_mu_): one posted drain at a time.
bool RemoteLink::schedule_locked() {
    if (inbox_.empty() || !s_.post || drain_posted_) return false;
    drain_posted_ = true;
    return true;
}

void RemoteLink::post_drain() {
    s_.post([owner = owner_, this] {
        if (auto alive = owner.lock()) drain();
    });
}

void RemoteLink::queue(std::function<void()> fn) {
    bool post_now = false;
    {
        std::lock_guard lk(in_mu_);
        inbox_.push_back(std::move(fn));
        inbox_pending_.store(true, std::memory_order_release);
        post_now = schedule_locked();
    }
    if (post_now) post_drain();
}

void RemoteLink::drain() {
    if (draining_ || closed_) return;  // a handler's own HostDevice call: the loop below goes on
    draining_ = true;
    for (;;) {
        running_.clear();
        {
            std::lock_guard lk(in_mu_);
            collect_locked();
            running_.swap(inbox_);
            inbox_pending_.store(false, std::memory_order_release);
            drain_posted_ = false;
        }
        if (running_.empty()) break;
        for (auto& fn : running_) {
            if (closed_) break;
            fn();
        }
    }
    running_.clear();
    draining_ = false;
}

void RemoteLink::assert_intx() {
    if (intx_asserted_) return;
    intx_asserted_ = true;
    s_.events->intx(true);
}

void RemoteLink::deassert_intx() {
    if (!intx_asserted_) return;
    intx_asserted_ = false;
    s_.events->intx(false);
}

// ---- The poll thread ---------------------------------------------------------------------------

void RemoteLink::poll_loop() {
    auto next_try = Clock::now();
    for (;;) {
        bool restoring = false;
        {
            std::lock_guard lk(in_mu_);
            if (stopping_) return;
            restoring = !up_ && s_.restore && !restore_pending_;
        }
        if (restoring && Clock::now() >= next_try) {
            next_try = Clock::now() + s_.restore_interval;
            if (auto adopt = transport_->try_restore()) {
                {
                    std::lock_guard lk(in_mu_);
                    restore_pending_ = true;
                }
                queue([this, adopt = std::move(adopt)] {
                    {
                        std::lock_guard lk(in_mu_);
                        restore_pending_ = false;
                    }
                    adopt();
                    if (!up_) wake();  // it failed: the poll thread tries again
                });
            }
            continue;
        }
        const RemoteTransport::Watch watch =
            up_ ? transport_->connection_watch() : RemoteTransport::Watch{};
        // The transport's slots are fixed (2 and 3; -1 is skipped by poll), so their revents are
        // found where they were put.
        pollfd p[4] = {{wake_fd_.get(), POLLIN, 0},
                       {eventfds_.get(), POLLIN, 0},
                       {watch.fd, watch.events, 0},
                       {watch.requests_fd, POLLIN | POLLRDHUP, 0}};
        const nfds_t n = 4;
        int timeout = -1;
        if (restoring) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(next_try - Clock::now());
            timeout = static_cast<int>(std::max<int64_t>(0, left.count()));
        }
        if (watch.max_wait_ms >= 0)
            timeout = timeout < 0 ? watch.max_wait_ms : std::min(timeout, watch.max_wait_ms);
        const int r = ::poll(p, n, timeout);
        if (r < 0) {
            if (errno == EINTR) continue;
            log::error("{}: poll: {}; interrupts are no longer delivered", s_.label,
                       std::strerror(errno));
            return;
        }
        // Woken: the count only had to wake this thread, what changed is looked at below.
        if ((p[0].revents & POLLIN) != 0 && !consume_eventfd(wake_fd_.get()))
            log::debug("{}: the wake eventfd was emptied by someone else", s_.label);
        if (p[1].revents != 0) {
            bool post_now = false;
            {
                std::lock_guard lk(in_mu_);
                collect_locked();
                post_now = schedule_locked();
            }
            if (post_now) post_drain();
        }
        if (watch.requests_fd >= 0 && p[3].revents != 0)
            transport_->requests_event(watch, p[3].revents);
        if (watch.fd >= 0) transport_->connection_event(watch, p[2].revents);
    }
}

}  // namespace potemkin::hostdev
