// The vfio-user client's connection: connecting, one request/reply exchange, serving the
// server's DMA requests (inline while it works on ours, or from the idle socket through the poll
// thread), losing the connection and reaching the server again.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "common/log.hpp"
#include "vfio_user/client_impl.hpp"

namespace potemkin::vfio_user {

using Clock = std::chrono::steady_clock;

namespace {

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
    // s_.timeout, which bounds it.
    o.rcvtimeo = true;
    for (;;) {
        auto r = reader_.next(sock_.get(), rx_, o);
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
            serve_locked(rx_);
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

void VfioUserClient::Impl::serve_buffered_locked() {
    const RecvOptions o = recv_options();
    while (link_.up() && reader_.has_message()) {
        Message m;
        if (auto r = reader_.next(sock_.get(), m, o); !r) {
            lose_locked(r.error().message, true);
            return;
        }
        if (m.header.is_command())
            serve_locked(m);
        else
            log::debug("{}: dropping a reply nobody waits for (id {})", s_.label, m.header.msg_id);
    }
}

// DMA_READ / DMA_WRITE from the server, for memory it could not map. Every access goes through
// the front-end's dma_read/dma_write, which checks it against guest RAM and bus mastering.
void VfioUserClient::Impl::serve_locked(const Message& m) {
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
    if (auto r = send_message(sock_.get(), h, std::span<const uint8_t>(reply)); !r)
        lose_locked(
            fmt::format("replying to {}: {}", command_name(m.header.cmd), r.error().message), true);
}

void VfioUserClient::Impl::serve_later(std::shared_ptr<Message> m, uint64_t generation) {
    link_.queue([this, m = std::move(m), generation] {
        std::lock_guard lk(io_mu_);
        if (generation_ != generation || !link_.up()) return;  // that connection is gone
        serve_locked(*m);
    });
}

// The connection is unusable. Called with io_mu_ held, from either thread.
void VfioUserClient::Impl::lose_locked(const std::string& why, bool report) {
    if (!link_.up()) return;
    if (in_setup_) report = false;  // setup reports its own failure, once
    watch_fd_ = -1;
    sock_.reset();
    reader_.reset();
    armed_ = {};
    dma_maps_.clear();
    std::string text = fmt::format("{}: server went away: {}", s_.label, why);
    if (s_.reconnect)
        text += fmt::format("; reconnecting when a server listens at {} again", s_.socket_path);
    link_.lost(std::move(text), report);
}

// ---- The poll thread's view of the socket
// --------------------------------------------------------

// The idle socket: hang-ups always; data only when the server may send DMA requests (watching
// every reply would wake the poll thread on each request for nothing).
hostdev::RemoteTransport::Watch VfioUserClient::Impl::connection_watch() {
    Watch w;
    w.fd = watch_fd_.load();
    watched_generation_ = generation_;
    w.events = static_cast<short>(POLLRDHUP | (dma_by_message_ && !quiet_ ? POLLIN : 0));
    if (quiet_) w.max_wait_ms = 1;
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
    std::unique_lock lk(io_mu_);
    // The engine thread may have used the socket meanwhile: look again.
    const uint64_t generation = watched_generation_;
    if (!link_.up() || generation_ != generation || !sock_ || sock_.get() != watched.fd) return;
    auto readable = reader_.has_message() ? Result<bool>(true) : wait_readable(sock_.get(), 0);
    if (!readable) {
        lose_locked(readable.error().message, true);
    } else if (*readable) {
        RecvOptions o = recv_options();
        o.readable = true;  // just seen
        // This message and any more that came in the same read; the engine thread serves them.
        std::vector<std::shared_ptr<Message>> commands;
        do {
            auto m = std::make_shared<Message>();
            if (auto r = reader_.next(sock_.get(), *m, o); !r) {
                lose_locked(r.error().sys_errno == ECONNRESET ? std::string("the socket was closed")
                                                              : r.error().message,
                            true);
            } else if (m->header.is_command()) {
                commands.push_back(std::move(m));
            } else {
                log::debug("{}: dropping a reply nobody waits for (id {})", s_.label,
                           m->header.msg_id);
            }
        } while (link_.up() && reader_.has_message());
        lk.unlock();
        for (auto& m : commands) serve_later(std::move(m), generation);
    } else if ((revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) {
        lose_locked("the socket was closed", true);
    }
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
