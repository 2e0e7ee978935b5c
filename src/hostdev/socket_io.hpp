// System-call helpers for the AF_UNIX stream sockets every out-of-process transport speaks
// over (vfio-user, mpqemu), on both the VMM and the device side.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace potemkin::hostdev {

// "what: strerror(e)" with sys_errno = e.
Unexpected<Error> sys_error(std::string_view what, int e);

// Sends the iovecs in one sendmsg with `fds` as SCM_RIGHTS (at most max_fds), continuing a
// short send without them; MSG_NOSIGNAL, so a vanished peer is an error and never SIGPIPE.
// The iovecs are the caller's and may be modified.
Result<void> send_with_fds(int sock, iovec* iov, size_t iovlen, std::span<const int> fds,
                           size_t max_fds);

// Reads exactly out.size() bytes. Each piece is first tried without waiting (a sender writes a
// whole message at once, so it is normally queued already); only when nothing is there does it
// wait, up to timeout_ms (-1 forever). Errors: ECONNRESET when the peer closed, ETIMEDOUT.
Result<void> recv_exact(int sock, std::span<uint8_t> out, int timeout_ms, std::string_view what);

// One recvmsg into `msg` (retried on EINTR) that first takes every SCM_RIGHTS fd it carried into
// `fds`, so each error path of the caller closes them. Returns the bytes received. Errors:
// ETIMEDOUT when nothing came (SO_RCVTIMEO expired, or the data a poll saw is gone), ECONNRESET
// when the peer closed; the caller checks MSG_CTRUNC in msg.msg_flags.
Result<size_t> recv_with_fds(int sock, msghdr& msg, int flags, std::vector<UniqueFd>& fds);

// How many cmsghdr-sized words a control buffer for `nfds` SCM_RIGHTS fds needs (a
// std::vector<cmsghdr> of that size is suitably aligned).
size_t cmsg_words(size_t nfds);

// Waits until `fd` is readable (or hung up): true, or the timeout passed: false.
Result<bool> wait_readable(int fd, int timeout_ms);

}  // namespace potemkin::hostdev
