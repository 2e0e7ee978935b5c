// vfio-user message framing over an AF_UNIX stream socket (§1 of the protocol notes), shared by
// the client transport and the device server.
//
// - send: the header, the payload and the SCM_RIGHTS fds go out in ONE sendmsg (the interop
//   rule: libvfio-user only collects fds with the header read, and a peer may read the header
//   with exactly one recvmsg). MSG_NOSIGNAL: a vanished peer is an error, never SIGPIPE.
// - receive: the 16-byte header with recvmsg (room for `max_fds` fds), then the body with a
//   loop of recv; the body normally is already queued (one sendmsg per message), so each piece
//   is tried without waiting first and only polled for when it is not there yet. Every received fd
//   is owned by the returned Message (UniqueFd) and closed on every error path.
//
// Errors carry a sys_errno so callers can tell the cases apart:
//   ECONNRESET  the peer closed (EOF before or inside a message);
//   EPROTO      framing: msg_size < 16 or > max_size, or a truncated fd array (MSG_CTRUNC);
//               the stream can no longer be trusted, close it;
//   ETIMEDOUT   the timeout expired (the stream may be mid-message: close it);
//   other       the errno of the failing system call.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "hostdev/vfio_user/protocol.hpp"

namespace potemkin::hostdev::vfio_user {

using potemkin::UniqueFd;

struct Message {
    Header header;
    std::vector<uint8_t> payload;  // header.msg_size - 16 bytes
    std::vector<UniqueFd> fds;     // received with the header
};

struct RecvOptions {
    uint32_t max_size = kServerMaxMsgSize;  // largest msg_size accepted, header included
    uint32_t max_fds = kMaxMsgFdsLimit;     // room for this many fds; more → EPROTO
    // Milliseconds to wait for the header, and then for each further piece of the body;
    // -1 waits forever. 0 polls once (the caller already knows the socket is readable).
    int timeout_ms = -1;
    // The caller just saw the socket readable (poll): read the header without waiting first.
    // If the data is gone after all, that is ETIMEDOUT.
    bool readable = false;
    // The socket's SO_RCVTIMEO is set to (about) timeout_ms: block in recvmsg for the header
    // instead of polling before it (one system call instead of two); its expiry is ETIMEDOUT.
    bool rcvtimeo = false;
};

// Sends `header` (msg_size is set to 16 + the payload's size) followed by every part of
// `payload`, with `fds` attached, in one sendmsg. Retries EINTR; a short send (a full socket
// buffer with a huge message) continues with plain send for the rest.
Result<void> send_message(int sock, Header header,
                          std::span<const std::span<const uint8_t>> payload,
                          std::span<const int> fds = {});
inline Result<void> send_message(int sock, Header header, std::span<const uint8_t> payload = {},
                                 std::span<const int> fds = {}) {
    std::span<const uint8_t> parts[1] = {payload};
    return send_message(sock, header, std::span<const std::span<const uint8_t>>(parts), fds);
}
// Raw bytes (header included, nothing checked) with fds in one sendmsg: for tests that send
// malformed messages.
Result<void> send_raw(int sock, std::span<const uint8_t> bytes, std::span<const int> fds = {});

// Receives one whole message. A framing error (EPROTO) is reported after the header; nothing
// more is read.
Result<Message> recv_message(int sock, const RecvOptions& options = {});

// Waits until `fd` is readable (or hung up): true, or the timeout passed: false.
Result<bool> wait_readable(int fd, int timeout_ms);

}  // namespace potemkin::hostdev::vfio_user
