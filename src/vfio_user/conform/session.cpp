#include "vfio_user/conform/session.hpp"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace potemkin::vfio_user::conform {

namespace {

// Replies the checker accepts: a read of max_data_xfer_size plus its headers, and a little more,
// so an oversized reply is reported as what it is rather than as a framing error.
constexpr uint32_t kMaxReply = kServerMaxMsgSize + 4096;
// Room for fds a broken server may attach to a reply (all closed with the Message).
constexpr uint32_t kMaxReplyFds = 253;

Result<void> set_timeout(int fd, int opt, int ms) {
    timeval tv{};
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (::setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv) != 0)
        return failf(Errno{errno}, "setsockopt(timeout)");
    return ok();
}

}  // namespace

bool is_closed(const Error& e) {
    return e.sys_errno == ECONNRESET || e.sys_errno == EPIPE;
}

bool is_unreachable(const Error& e) {
    return e.sys_errno == ECONNREFUSED || e.sys_errno == ENOENT || e.sys_errno == ETIMEDOUT;
}

Result<Session> Session::open(const std::string& path, int timeout_ms, Clock::time_point deadline) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) return failf("socket path '{}' is too long", path);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return failf(Errno{errno}, "socket");
    Session s(std::move(fd), timeout_ms, deadline);
    // AF_UNIX connect waits for room in the listen queue (a one-client server with backlog 0
    // is busy until it accepts) bounded by the send timeout; sends are bounded the same way.
    POTEMKIN_TRY(set_timeout(s.fd(), SO_SNDTIMEO, std::max(1, s.wait_ms())));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    while (::connect(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        if (errno == EINTR) continue;
        const int e = (errno == EAGAIN || errno == EINPROGRESS) ? ETIMEDOUT : errno;
        // Named apart from a reply timeout: this one means the server is not accepting.
        return fail(fmt::format("connect {}: {}", path,
                                e == ETIMEDOUT ? "not accepted in time" : std::strerror(e)),
                    e);
    }
    return s;
}

int Session::wait_ms() const {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
    return static_cast<int>(std::clamp<int64_t>(left, 0, timeout_ms_));
}

Result<Version> Session::negotiate() {
    Version v;
    v.caps.max_msg_fds = 16;
    const auto payload = encode_version(v);
    POTEMKIN_TRY_ASSIGN(Message reply, call(Command::version, payload));
    POTEMKIN_TRY(
        check_reply(Header{last_id_, static_cast<uint16_t>(Command::version)}, reply.header));
    POTEMKIN_TRY_ASSIGN(server_version_, decode_version(reply.payload));
    return server_version_;
}

Result<Header> Session::send(Command cmd, std::span<const uint8_t> payload,
                             std::span<const int> fds, uint32_t extra_flags) {
    return send(static_cast<uint16_t>(cmd), payload, fds, kTypeCommand | extra_flags, next_id());
}

Result<Header> Session::send(uint16_t cmd, std::span<const uint8_t> payload,
                             std::span<const int> fds, uint32_t flags, uint16_t msg_id) {
    Header h;
    h.msg_id = msg_id;
    h.cmd = cmd;
    h.flags = flags;
    POTEMKIN_TRY(set_timeout(fd(), SO_SNDTIMEO, std::max(1, wait_ms())));
    POTEMKIN_TRY(send_message(fd(), h, payload, fds));
    h.msg_size = kHeaderSize + static_cast<uint32_t>(payload.size());
    return h;
}

Result<void> Session::send_raw(std::span<const uint8_t> bytes, std::span<const int> fds) {
    POTEMKIN_TRY(set_timeout(fd(), SO_SNDTIMEO, std::max(1, wait_ms())));
    return vfio_user::send_raw(fd(), bytes, fds);
}

Result<Message> Session::receive() {
    RecvOptions o;
    o.max_size = kMaxReply;
    o.max_fds = kMaxReplyFds;
    o.timeout_ms = wait_ms();
    auto m = recv_message(fd(), o);
    if (!m && m.error().sys_errno == ETIMEDOUT)
        return fail(fmt::format("no reply within {} ms", timeout_ms_), ETIMEDOUT);
    if (!m && is_closed(m.error())) return fail("the server closed the connection", ECONNRESET);
    return m;
}

Result<Message> Session::call(Command cmd, std::span<const uint8_t> payload,
                              std::span<const int> fds, uint32_t extra_flags) {
    POTEMKIN_TRY(send(cmd, payload, fds, extra_flags));
    return receive();
}

Result<void> Session::shutdown_write() {
    if (::shutdown(fd(), SHUT_WR) != 0) return failf(Errno{errno}, "shutdown");
    return ok();
}

}  // namespace potemkin::vfio_user::conform
