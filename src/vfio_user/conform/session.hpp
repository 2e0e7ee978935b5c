// One client connection of the conformance checker: connect, send (well formed or raw bytes),
// receive with a deadline. Built on the project's framing (vfio_user/socket.hpp), so the checker
// speaks exactly the bytes the client transport speaks.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin::vfio_user::conform {

using Clock = std::chrono::steady_clock;

class Session {
  public:
    // Connects to `path`; connect, every send and every receive wait at most `timeout_ms` and
    // never past `deadline` (the check's). A server that does not accept in time is ETIMEDOUT.
    static Result<Session> open(const std::string& path, int timeout_ms,
                                Clock::time_point deadline);

    // The VERSION handshake with the capabilities a client offers (0.2, max_msg_fds 16); the
    // server's version and capabilities.
    Result<Version> negotiate();

    uint16_t next_id() { return ++last_id_; }
    // Sends a command (msg_id from next_id() unless `msg_id` is given) and returns its header.
    Result<Header> send(Command cmd, std::span<const uint8_t> payload,
                        std::span<const int> fds = {}, uint32_t extra_flags = 0);
    Result<Header> send(uint16_t cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                        uint32_t flags, uint16_t msg_id);
    // Raw bytes, nothing checked, in one sendmsg.
    Result<void> send_raw(std::span<const uint8_t> bytes, std::span<const int> fds = {});
    // The next message from the server. Errors: ETIMEDOUT (nothing in time), ECONNRESET (the
    // server closed), EPROTO (its framing is broken), or a system call's errno.
    Result<Message> receive();
    // send() then receive(): the reply is whatever came next (the caller judges it).
    Result<Message> call(Command cmd, std::span<const uint8_t> payload,
                         std::span<const int> fds = {}, uint32_t extra_flags = 0);
    // No more bytes from us: the server sees EOF after what it has.
    Result<void> shutdown_write();

    int fd() const { return fd_.get(); }
    const Version& server_version() const { return server_version_; }

  private:
    Session(UniqueFd fd, int timeout_ms, Clock::time_point deadline)
        : fd_(std::move(fd)), timeout_ms_(timeout_ms), deadline_(deadline) {}
    // Milliseconds to wait now: the timeout, cut to what is left of the deadline (0 if passed).
    int wait_ms() const;

    UniqueFd fd_;
    int timeout_ms_;
    Clock::time_point deadline_;
    uint16_t last_id_ = 0;
    Version server_version_;
};

// A connection error that means the server ended the connection (EOF or reset).
bool is_closed(const Error& e);
// A connect error that means no server is there to accept (refused, gone, or never accepting).
bool is_unreachable(const Error& e);

}  // namespace potemkin::vfio_user::conform
