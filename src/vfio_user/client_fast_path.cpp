// The vfio-user client's side of potemkin's fast path (vfio_user/fast_path.hpp,
// docs/fast-path.md): adopting the area a server passed with its VERSION reply, queueing region
// accesses, and waiting for their answers without ever waiting past the reply deadline or on a
// server that died.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>

#include <cerrno>
#include <cstring>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "vfio_user/client_impl.hpp"

namespace potemkin::vfio_user {

namespace {

// How a wait for an answer goes on: pure spinning first (a polling server answers in well
// under a microsecond), then spinning with sched_yield (a server on this CPU, or one waking
// from its sleep, which takes tens of microseconds across CPUs here, gets to run), then
// blocking on the answer eventfd, so a slow device does not burn this CPU for long.
constexpr auto kSpinPure = std::chrono::microseconds(2);
constexpr auto kSpinYield = std::chrono::microseconds(100);
// A blocked wait looks at the clock at least this often (the deadline).
constexpr int kBlockSliceMs = 100;

Result<void> set_nonblocking(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return failf(Errno{errno}, "fcntl(O_NONBLOCK) on fd {}", fd);
    return ok();
}

}  // namespace

void VfioUserClient::Impl::adopt_fast_path_locked(std::vector<UniqueFd>& fds, uint32_t first) {
    fast_.reset();
    auto refuse = [&](const std::string& why) {
        log::warn("{}: the server offered the fast path, but {}: plain vfio-user", s_.label, why);
    };
    if (first > fds.size() || fds.size() - first < 3) {
        refuse(fmt::format("its fds {}..{} are missing ({} came)", first, first + 2, fds.size()));
        return;
    }
    for (uint32_t i = 1; i < 3; ++i) {
        if (auto r = set_nonblocking(fds[first + i].get()); !r) {
            refuse(r.error().message);
            return;
        }
    }
    auto area = fast_path::Area::adopt(std::move(fds[first]));
    if (!area) {
        refuse(area.error().message);
        return;
    }
    uint8_t* base = area->base();
    fast_.reset(new FastPath{std::move(*area), fast_path::ClientQueue(base),
                             std::move(fds[first + 1]), std::move(fds[first + 2])});
    log::debug("{}: fast path agreed: region accesses go through shared memory", s_.label);
}

Result<void> VfioUserClient::Impl::fast_access_locked(const fast_path::Access& a,
                                                      std::span<uint8_t> out, What what) {
    // The server's requests the poll thread took off a socket: it waits for their answers.
    if (!pending_.empty()) {
        serve_pending_locked();
        if (!link_.up() || !fast_) return fail(gone_error(what));
    }
    if (fast_->queue.full()) POTEMKIN_TRY(fast_wait_locked(fast_->queue.tail() + 1, what));
    uint64_t ticket = 0;
    fast_->queue.note_cpu(::sched_getcpu());
    if (fast_->queue.publish(a, ticket)) {
        fast_kicks_.fetch_add(1, std::memory_order_relaxed);
        if (auto r = signal_eventfd(fast_->kick.get()); !r) {
            lose_locked(fmt::format("{}: waking the server: {}", what.str(), r.error().message),
                        true);
            return fail(gone_error(what));
        }
    }
    fast_accesses_.fetch_add(1, std::memory_order_relaxed);
    if (a.op == fast_path::Op::posted_write) {
        link_.posted().sent();
        return ok();
    }
    POTEMKIN_TRY(fast_wait_locked(ticket + 1, what));
    auto answer = fast_->queue.answer(ticket, a.size);
    if (!answer) {
        lose_locked(fmt::format("{}: {}", what.str(), answer.error().message), true);
        return fail(gone_error(what));
    }
    if (answer->status != 0)
        return fail(Error{fmt::format("{}: {} failed: the server answered {} ({})", s_.label,
                                      what.str(), std::strerror(answer->status), answer->status),
                          answer->status});
    if (a.op == fast_path::Op::read)
        std::copy_n(answer->data.begin(), std::min<size_t>(a.size, out.size()), out.begin());
    return ok();
}

Result<void> VfioUserClient::Impl::fast_wait_locked(uint64_t count, What what) {
    const auto start = Clock::now();
    const auto deadline = start + s_.timeout;
    // A server on this CPU cannot answer while we spin: yield from the start.
    const auto pure_spin =
        fast_ && fast_->queue.server_on_cpu(::sched_getcpu()) ? Clock::duration{} : kSpinPure;
    // Whatever the server does with the queue, this loop ends: by an answer, a protocol error,
    // the deadline, or the connection lost.
    for (;;) {
        if (!fast_) return fail(gone_error(what));
        auto done = fast_->queue.poll_completed();
        if (!done) {
            lose_locked(fmt::format("{}: {}", what.str(), done.error().message), true);
            return fail(gone_error(what));
        }
        if (*done >= count) return ok();
        const auto now = Clock::now();
        if (now >= deadline) {
            const std::string text =
                fmt::format("{}: no fast-path answer within {} ms", what.str(), s_.timeout.count());
            lose_locked(text, true);
            return fail(Error{fmt::format("{}: {}", s_.label, text), ETIMEDOUT});
        }
        if (now - start < pure_spin) {
            fast_path::cpu_relax();
            continue;
        }
        if (now - start < kSpinYield) {
            if (::sched_yield() != 0)
                log::debug("{}: sched_yield: {}", s_.label, std::strerror(errno));
            continue;
        }
        // Block: the waiting flag first, then one more look (the server sets tail, then reads
        // the flag; fast_path.hpp, "Sleep and wake").
        fast_blocks_.fetch_add(1, std::memory_order_relaxed);
        fast_->queue.set_waiting(true);
        auto again = fast_->queue.poll_completed();
        if (!again || *again >= count) {
            fast_->queue.set_waiting(false);
            continue;  // the top of the loop reports or returns
        }
        pollfd p[3] = {{fast_->answer.get(), POLLIN, 0},
                       {sock_.get(), POLLIN | POLLRDHUP, 0},
                       {twin_ ? twin_.get() : -1, POLLIN | POLLRDHUP, 0}};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
        const int n =
            ::poll(p, 3, static_cast<int>(std::min<int64_t>(left.count() + 1, kBlockSliceMs)));
        const int saved = errno;
        fast_->queue.set_waiting(false);
        if (n < 0 && saved == EINTR) continue;
        if (n < 0) {
            lose_locked(fmt::format("{}: poll: {}", what.str(), std::strerror(saved)), true);
            return fail(gone_error(what));
        }
        if ((p[0].revents & POLLIN) != 0) consume_eventfd(fast_->answer.get());
        // A dead server: its socket hangs up (it never answers now).
        if ((p[1].revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0 ||
            (p[2].revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) {
            lose_locked(fmt::format("{}: the socket was closed", what.str()), true);
            return fail(gone_error(what));
        }
        // The server's DMA requests (it may need them answered to finish the access).
        if ((p[1].revents & POLLIN) != 0 && read_requests_locked(sock_.get(), reader_, false, true))
            serve_pending_locked();
        if (link_.up() && twin_ && (p[2].revents & POLLIN) != 0 &&
            read_requests_locked(twin_.get(), twin_reader_, true, true))
            serve_pending_locked();
        if (!link_.up()) return fail(gone_error(what));
    }
}

}  // namespace potemkin::vfio_user
