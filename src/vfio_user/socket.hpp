// vfio-user message framing over an AF_UNIX stream socket (§1 of the protocol notes), shared by
// the client transport and the device server.
//
// - send: the header, the payload and the SCM_RIGHTS fds go out in ONE sendmsg (the interop
//   rule: libvfio-user only collects fds with the header read, and a peer may read the header
//   with exactly one recvmsg). MSG_NOSIGNAL: a vanished peer is an error, never SIGPIPE.
// - receive, MessageReader (the client's and the server's connections): one recvmsg into a
//   buffer with room for a whole message normally brings header and body together, so a
//   request or reply costs one system call on each side. Bytes of a next message that came
//   along stay buffered for the next call; a message that arrives in pieces is assembled. The
//   fds a recvmsg brings belong to the message holding the last byte it received: Linux ends a
//   stream read right after the data the fds came with, and a sendmsg starts a message.
// - receive, recv_message (raw test clients): the 16-byte header with recvmsg (room for
//   `max_fds` fds), then the body with a loop of recv; it never reads past the message, so it
//   needs no buffer across calls.
// Every received fd is owned by the returned Message (UniqueFd) and closed on every error path.
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
#include "hostdev/socket_io.hpp"
#include "vfio_user/protocol.hpp"

namespace potemkin::vfio_user {

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

// Buffered receiving for one connection (see the top of this file). One reader per socket, used
// by whoever reads that socket (under the caller's lock); reset() for a new connection.
class MessageReader {
  public:
    MessageReader() = default;
    MessageReader(const MessageReader&) = delete;
    MessageReader& operator=(const MessageReader&) = delete;

    // Forgets buffered bytes and fds.
    void reset();
    // Some bytes of a next message are buffered (a whole message or a piece of one).
    bool pending() const { return tail_ > head_; }
    // A whole message is buffered: next() returns it without a system call. A buffered header
    // that fails the framing check counts too (next() reports it).
    bool has_message() const;

    // One message into `out`; its vectors keep their capacity, so a reused Message does not
    // allocate. Waiting, as `options` says:
    // - a whole buffered message: none;
    // - nothing buffered: `readable` → recvmsg without waiting (nothing there: ETIMEDOUT);
    //   `rcvtimeo` → recvmsg blocks (bounded by the socket's SO_RCVTIMEO: ETIMEDOUT); otherwise
    //   poll up to timeout_ms, then recvmsg;
    // - a piece buffered: `rcvtimeo` → recvmsg blocks; otherwise recvmsg without waiting and,
    //   when nothing is there, poll up to timeout_ms for more.
    // After ETIMEDOUT what arrived stays buffered: calling again continues the same message.
    // Errors: ECONNRESET (EOF), EPROTO (framing, fds), the errno of a failing call.
    Result<void> next(int sock, Message& out, const RecvOptions& options);

  private:
    // Takes a whole buffered message; false when there is none.
    Result<bool> take(Message& out, const RecvOptions& options);
    // One recvmsg into the free space (grown to `want` bytes in all); EAGAIN → ETIMEDOUT.
    Result<void> fill(int sock, int flags, size_t want, uint32_t max_fds);

    struct FdBatch {
        uint64_t end;  // stream position just past the bytes the fds came with
        std::vector<UniqueFd> fds;
    };
    std::vector<uint8_t> buf_;
    size_t head_ = 0;   // the next message starts here
    size_t tail_ = 0;   // received bytes end here
    uint64_t pos_ = 0;  // stream position of buf_[head_]
    std::vector<FdBatch> fds_;
};

using hostdev::wait_readable;

}  // namespace potemkin::vfio_user
