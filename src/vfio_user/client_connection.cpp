// The vfio-user client's connection: connecting, one request/reply exchange, posting a write,
// serving the server's DMA requests (inline while it works on ours, or from the idle socket and
// the twin socket through the poll thread), losing the connection and reaching the server again.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "common/log.hpp"
#include "vfio_user/client_impl.hpp"

namespace potemkin::vfio_user {

namespace {

// While requests come and go, how often the poll thread looks whether they stopped.
constexpr int kQuietRecheckMs = 10;

Result<void> set_timeout(int fd, int option, const char* name, std::chrono::milliseconds timeout,
                         const std::string& path) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    if (::setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv) != 0)
        return failf(Errno{errno}, "setsockopt({}) on the socket to {}", name, path);
    return ok();
}

}  // namespace

// Non-blocking connect: a listener whose backlog is full must not stall the caller (the poll
// thread retries instead).
Result<UniqueFd> connect_unix(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return failf("socket path '{}' is longer than {} bytes", path, sizeof addr.sun_path - 1);
    std::memcpy(addr.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return failf(Errno{errno}, "socket for {}", path);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        return failf(Errno{errno}, "cannot connect to {}", path);
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
        return failf(Errno{errno}, "fcntl on the socket to {}", path);
    // A server that stops reading must not block a send forever.
    POTEMKIN_TRY(set_timeout(fd.get(), SO_SNDTIMEO, "SO_SNDTIMEO", timeout, path));
    // Nor a silent one a receive: the request path blocks in recvmsg for the reply (no poll
    // before it), bounded by this timeout alone.
    POTEMKIN_TRY(set_timeout(fd.get(), SO_RCVTIMEO, "SO_RCVTIMEO", timeout, path));
    return fd;
}

Error VfioUserClient::Impl::gone_error(What what) const {
    return Error{fmt::format("{}: {}: the server is gone{}", s_.label, what.str(),
                             s_.reconnect ? " (reconnecting)" : ""),
                 ENOTCONN};
}

Result<VfioUserClient::Impl::Reply> VfioUserClient::Impl::request(Command cmd,
                                                                  std::span<const uint8_t> payload,
                                                                  std::span<const int> fds,
                                                                  What what) {
    Result<Reply> r = [&] {
        std::lock_guard lk(io_mu_);
        return request_locked(cmd, payload, fds, what);
    }();
    link_.drain();
    return r;
}

Result<VfioUserClient::Impl::Reply> VfioUserClient::Impl::request_locked(
    Command cmd, std::span<const uint8_t> payload, std::span<const int> fds, What what) {
    std::span<const uint8_t> parts[1] = {payload};
    POTEMKIN_TRY(exchange_locked(cmd, parts, fds, what));
    Reply reply{rx_.header, std::move(rx_.payload), std::move(rx_.fds)};
    rx_.fds.clear();
    return reply;
}

RecvOptions VfioUserClient::Impl::recv_options() const {
    RecvOptions o;
    o.max_size = kHeaderSize + 2 * kRegionAccessSize + kOurMaxDataXfer;
    o.max_fds = kOurMaxMsgFds;
    o.timeout_ms = static_cast<int>(s_.timeout.count());
    return o;
}

Result<const Message*> VfioUserClient::Impl::exchange_locked(
    Command cmd, std::span<const std::span<const uint8_t>> payload, std::span<const int> fds,
    What what) {
    if (!link_.up() || !sock_) return fail(gone_error(what));
    // Accesses queued on the fast path come first, as on one stream.
    POTEMKIN_TRY(fast_drain_locked(what));
    // Requests of the server's that the poll thread took off the socket: the server waits for
    // their answers and will not look at ours before.
    if (!pending_.empty()) {
        serve_pending_locked();
        if (!link_.up()) return fail(gone_error(what));
    }
    in_flight_.store(true, std::memory_order_relaxed);
    requests_.fetch_add(1, std::memory_order_relaxed);
    struct InFlight {
        std::atomic<bool>& flag;
        ~InFlight() { flag.store(false, std::memory_order_relaxed); }
    } in_flight{in_flight_};
    Header h;
    h.msg_id = next_id_++;
    h.cmd = static_cast<uint16_t>(cmd);
    h.flags = kTypeCommand;
    if (auto r = send_message(sock_.get(), h, payload, fds); !r) {
        lose_locked(fmt::format("{}: sending: {}", what.str(), r.error().message), true);
        return fail(gone_error(what));
    }
    const auto deadline = Clock::now() + s_.timeout;
    RecvOptions o = recv_options();
    // One blocking recvmsg normally brings the whole reply; connect_unix set SO_RCVTIMEO to
    // s_.timeout, which bounds it. With a twin socket the wait covers both sockets instead.
    o.rcvtimeo = !twin_;
    for (bool first = true;; first = false) {
        // The deadline holds whatever arrives meanwhile: replies to other requests and the
        // server's own requests do not buy more time (a server sending either endlessly would
        // otherwise hold the guest's access, and the VM, forever).
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (!first && left.count() <= 0) {
            const std::string text =
                fmt::format("{}: no reply within {} ms", what.str(), s_.timeout.count());
            lose_locked(text, true);
            return fail(Error{fmt::format("{}: {}", s_.label, text), ETIMEDOUT});
        }
        if (!first && !twin_) {
            // SO_RCVTIMEO would allow a whole timeout again: wait for what is left only.
            o.rcvtimeo = false;
            o.timeout_ms = static_cast<int>(left.count()) + 1;
        }
        Result<void> r;
        if (twin_ && !reader_.has_message()) {
            auto ready = await_main_locked(deadline);
            if (!ready) {
                lose_locked(fmt::format("{}: {}", what.str(), ready.error().message), true);
                return fail(gone_error(what));
            }
            if (!link_.up()) return fail(gone_error(what));
            o.readable = *ready;
            o.timeout_ms = 0;
            r = *ready ? reader_.next(sock_.get(), rx_, o)
                       : Result<void>(fail(Error{"no reply", ETIMEDOUT}));
        } else {
            r = reader_.next(sock_.get(), rx_, o);
        }
        if (!r && r.error().sys_errno == ETIMEDOUT && Clock::now() < deadline) continue;
        if (!r && r.error().sys_errno == ETIMEDOUT) {
            const std::string text =
                fmt::format("{}: no reply within {} ms", what.str(), s_.timeout.count());
            lose_locked(text, true);
            return fail(Error{fmt::format("{}: {}", s_.label, text), ETIMEDOUT});
        }
        if (!r) {
            lose_locked(fmt::format("{}: {}", what.str(), r.error().message), true);
            return fail(gone_error(what));
        }
        if (rx_.header.is_command()) {
            // A DMA request from the server while it works on ours (the protocol shares one
            // socket for both directions): served inline, since the server waits for it.
            serve_locked(rx_, sock_.get());
            if (!link_.up()) return fail(gone_error(what));
            continue;
        }
        if (rx_.header.msg_id != h.msg_id || rx_.header.cmd != h.cmd) {
            log::debug("{}: dropping a stray reply (id {}, {})", s_.label, rx_.header.msg_id,
                       command_name(rx_.header.cmd));
            continue;
        }
        if (auto ok = check_reply(h, rx_.header); !ok) {
            const int e = ok.error().sys_errno != 0 ? ok.error().sys_errno : EINVAL;
            return fail(Error{fmt::format("{}: {} failed: the server replied {} ({})", s_.label,
                                          what.str(), std::strerror(e), e),
                              e});
        }
        // A request of the server's that came in the same read must not wait for our next
        // request (the server waits for its reply).
        if (reader_.pending()) serve_buffered_locked();
        if (!link_.up()) return fail(gone_error(what));
        return &rx_;
    }
}

Result<void> VfioUserClient::Impl::post_locked(Command cmd,
                                               std::span<const std::span<const uint8_t>> payload,
                                               What what) {
    if (!link_.up() || !sock_) {
        link_.posted().failed(hostdev::PostedWrites::Failure::dropped, s_.label,
                              "the server is gone");
        return fail(gone_error(what));
    }
    POTEMKIN_TRY(fast_drain_locked(what));
    if (!pending_.empty()) {
        serve_pending_locked();
        if (!link_.up()) return fail(gone_error(what));
    }
    Header h;
    h.msg_id = next_id_++;
    h.cmd = static_cast<uint16_t>(cmd);
    h.flags = kTypeCommand | kFlagNoReply;
    if (auto r = send_message(sock_.get(), h, payload); !r) {
        const std::string why = fmt::format("{}: sending: {}", what.str(), r.error().message);
        link_.posted().failed(hostdev::PostedWrites::Failure::send_failed, s_.label, why);
        lose_locked(why, true);
        return fail(gone_error(what));
    }
    link_.posted().sent();
    return ok();
}

Result<bool> VfioUserClient::Impl::await_main_locked(Clock::time_point deadline) {
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() < 0) return false;
        if (twin_reader_.has_message()) {
            if (!read_requests_locked(twin_.get(), twin_reader_, true, false)) return true;
            serve_pending_locked();
            if (!link_.up()) return true;
            continue;
        }
        pollfd p[2] = {{sock_.get(), POLLIN, 0}, {twin_.get(), POLLIN | POLLRDHUP, 0}};
        const int n = ::poll(p, 2, static_cast<int>(left.count()) + 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return failf(Errno{errno}, "poll");
        if (n == 0) continue;  // the deadline is checked at the top
        if (p[1].revents != 0) {
            if ((p[1].revents & POLLIN) == 0) return failf("the twin socket was closed");
            if (!read_requests_locked(twin_.get(), twin_reader_, true, true)) return true;
            serve_pending_locked();
            if (!link_.up()) return true;
        }
        if (p[0].revents != 0) return true;
    }
}

void VfioUserClient::Impl::serve_buffered_locked() {
    const RecvOptions o = recv_options();
    while (link_.up() && reader_.has_message()) {
        Message m;
        if (auto r = reader_.next(sock_.get(), m, o); !r) {
            lose_locked(r.error().message, true);
            return;
        }
        if (m.header.is_command())
            serve_locked(m, sock_.get());
        else
            log::debug("{}: dropping a reply nobody waits for (id {})", s_.label, m.header.msg_id);
    }
}

// DMA_READ / DMA_WRITE from the server, for memory it could not map. Every access goes through
// the front-end's dma_read/dma_write, which checks it against guest RAM and bus mastering.
void VfioUserClient::Impl::serve_locked(const Message& m, int reply_fd) {
    served_.fetch_add(1, std::memory_order_relaxed);
    const auto cmd = static_cast<Command>(m.header.cmd);
    std::vector<uint8_t> reply;
    int error = 0;
    if (m.header.cmd != static_cast<uint16_t>(Command::dma_read) &&
        m.header.cmd != static_cast<uint16_t>(Command::dma_write)) {
        log::debug("{}: server sent {}: not a command a client serves", s_.label,
                   command_name(m.header.cmd));
        error = EINVAL;
    } else if (link_.closed()) {
        error = EFAULT;
    } else {
        auto a = decode_dma_access(cmd, false, m.payload, kOurMaxDataXfer);
        if (!a) {
            error = a.error().sys_errno != 0 ? a.error().sys_errno : EINVAL;
        } else if (cmd == Command::dma_read) {
            std::vector<uint8_t> data(a->count);
            if (auto r = s_.events->dma_read(a->addr, data); !r) {
                log::debug("{}: DMA_READ refused: {}", s_.label, r.error().message);
                error = EFAULT;
            } else {
                reply = encode_dma_access(a->addr, a->count, data);
            }
        } else {
            if (auto r = s_.events->dma_write(a->addr, a->data); !r) {
                log::debug("{}: DMA_WRITE refused: {}", s_.label, r.error().message);
                error = EFAULT;
            } else {
                reply = encode_dma_access(a->addr, a->count);
            }
        }
    }
    if (m.header.no_reply()) return;
    const Header h = error != 0 ? error_reply_header(m.header, error)
                                : reply_header(m.header, static_cast<uint32_t>(reply.size()));
    if (auto r = send_message(reply_fd, h, std::span<const uint8_t>(reply)); !r)
        lose_locked(
            fmt::format("replying to {}: {}", command_name(m.header.cmd), r.error().message), true);
}

void VfioUserClient::Impl::serve_pending_locked() {
    while (!pending_.empty() && link_.up()) {
        const Pending p = std::move(pending_.front());
        pending_.pop_front();
        serve_locked(p.msg, p.twin ? twin_.get() : sock_.get());
    }
}

void VfioUserClient::Impl::queue_pending_locked() {
    link_.queue([this, generation = generation_.load()] {
        std::lock_guard lk(io_mu_);
        if (generation_ != generation || !link_.up()) return;  // that connection is gone
        serve_pending_locked();
    });
}

bool VfioUserClient::Impl::read_requests_locked(int fd, MessageReader& r, bool twin,
                                                bool readable) {
    RecvOptions o = recv_options();
    o.readable = readable;
    o.timeout_ms = 0;
    do {
        Pending p;
        p.twin = twin;
        auto got = r.next(fd, p.msg, o);
        if (!got && got.error().sys_errno == ETIMEDOUT) break;  // gone after all (or a piece)
        if (!got) {
            lose_locked(
                got.error().sys_errno == ECONNRESET
                    ? std::string(twin ? "the twin socket was closed" : "the socket was closed")
                    : got.error().message,
                true);
            return false;
        }
        o.readable = false;
        if (p.msg.header.is_command()) {
            pending_.push_back(std::move(p));
        } else {
            log::debug("{}: dropping a reply nobody waits for (id {})", s_.label,
                       p.msg.header.msg_id);
        }
    } while (link_.up() && r.has_message());
    return link_.up();
}

// The connection is unusable. Called with io_mu_ held, from either thread.
void VfioUserClient::Impl::lose_locked(const std::string& why, bool report) {
    if (!link_.up()) return;
    if (in_setup_) report = false;  // setup reports its own failure, once
    watch_fd_ = -1;
    twin_watch_fd_ = -1;
    sock_.reset();
    reader_.reset();
    twin_.reset();
    twin_reader_.reset();
    pending_.clear();
    ioeventfds_.clear();
    fast_.reset();  // a new connection negotiates it again
    armed_ = {};
    dma_maps_.clear();
    std::string text = fmt::format("{}: server went away: {}", s_.label, why);
    if (s_.reconnect)
        text += fmt::format("; reconnecting when a server listens at {} again", s_.socket_path);
    link_.lost(std::move(text), report);
}

// ---- The poll thread's view of the socket
// --------------------------------------------------------

// The idle socket: hang-ups always, and data (the server's requests, which a server may send at
// any time, the guest idle or not) unless a twin socket carries them. While requests come and go
// the replies would wake the poll thread for nothing: it then watches hang-ups only and looks
// again every kQuietRecheckMs ("quiet"): each look preempts the engine thread when both share a
// CPU, so it is rare enough to stay out of the p99 of a busy stretch, and bounds how long a
// request the server sends right after one waits to be seen.
hostdev::RemoteTransport::Watch VfioUserClient::Impl::connection_watch() {
    Watch w;
    w.fd = watch_fd_.load();
    w.requests_fd = twin_watch_fd_.load();
    watched_generation_ = generation_;
    w.events = static_cast<short>(POLLRDHUP | (w.requests_fd < 0 && !quiet_ ? POLLIN : 0));
    if (quiet_) w.max_wait_ms = kQuietRecheckMs;
    return w;
}

void VfioUserClient::Impl::connection_event(const Watch& watched, short revents) {
    if (quiet_) {
        const uint64_t now = requests_.load(std::memory_order_relaxed);
        if (now == seen_requests_ && !in_flight_.load(std::memory_order_relaxed)) quiet_ = false;
        seen_requests_ = now;
    }
    if (revents == 0) return;
    if (revents == POLLIN && in_flight_.load(std::memory_order_relaxed)) {
        // Most likely the reply to the request under way, which its thread reads.
        quiet_ = true;
        seen_requests_ = requests_.load(std::memory_order_relaxed);
        return;
    }
    // The engine thread holds the socket: it is exchanging, and reads (and serves) whatever
    // came itself. Never make it wait for this thread.
    std::unique_lock lk(io_mu_, std::try_to_lock);
    if (!lk.owns_lock()) {
        quiet_ = true;
        seen_requests_ = requests_.load(std::memory_order_relaxed);
        return;
    }
    // The engine thread may have used the socket meanwhile: look again.
    if (!link_.up() || generation_ != watched_generation_ || !sock_ || sock_.get() != watched.fd)
        return;
    auto readable = reader_.has_message() ? Result<bool>(true) : wait_readable(sock_.get(), 0);
    if (!readable) {
        lose_locked(readable.error().message, true);
    } else if (*readable) {
        // This message and any more that came in the same read; the engine thread serves them,
        // before its next request at the latest.
        const size_t before = pending_.size();
        if (read_requests_locked(sock_.get(), reader_, false, true) && pending_.size() > before)
            queue_pending_locked();
    } else if ((revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) {
        lose_locked("the socket was closed", true);
    }
}

// The twin socket carries only the server's requests: whatever is there is for us.
void VfioUserClient::Impl::requests_event(const Watch& watched, short revents) {
    std::lock_guard lk(io_mu_);
    if (!link_.up() || generation_ != watched_generation_ || !twin_ ||
        twin_.get() != watched.requests_fd)
        return;
    // The engine thread may have served it meanwhile (it waits on both while a reply is due).
    auto readable = twin_reader_.has_message() ? Result<bool>(true) : wait_readable(twin_.get(), 0);
    if (!readable) {
        lose_locked(readable.error().message, true);
    } else if (*readable) {
        const size_t before = pending_.size();
        if (read_requests_locked(twin_.get(), twin_reader_, true, true) && pending_.size() > before)
            queue_pending_locked();
    } else if ((revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) {
        lose_locked("the twin socket was closed", true);
    }
}

// The twin socket from the VERSION reply: answers to the server's requests go back on it, so a
// silent server must not block them forever.
void VfioUserClient::Impl::adopt_twin_locked(UniqueFd fd) {
    if (auto r = set_timeout(fd.get(), SO_SNDTIMEO, "SO_SNDTIMEO", s_.timeout, s_.socket_path); !r)
        log::warn("{}: twin socket: {}", s_.label, r.error().message);
    twin_ = std::move(fd);
    twin_reader_.reset();
}

// A server listens again: the new connection goes to the engine thread, which owns the protocol
// state the handshake rebuilds.
std::function<void()> VfioUserClient::Impl::try_restore() {
    auto sock = connect_unix(s_.socket_path, s_.timeout);
    if (!sock) return {};
    auto shared = std::make_shared<UniqueFd>(std::move(*sock));
    return [this, shared] { adopt(std::move(*shared)); };
}

}  // namespace potemkin::vfio_user
