#include "hostdev/socket_io.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace potemkin::hostdev {

size_t cmsg_words(size_t nfds) {
    const size_t bytes = CMSG_SPACE(sizeof(int) * nfds);
    return (bytes + sizeof(cmsghdr) - 1) / sizeof(cmsghdr) + 1;
}

Unexpected<Error> sys_error(std::string_view what, int e) {
    return fail(fmt::format("{}: {}", what, std::strerror(e)), e);
}

Result<void> send_with_fds(int sock, iovec* iov, size_t iovlen, std::span<const int> fds,
                           size_t max_fds) {
    // Room for a few fds without allocating (the common case: none, or one).
    alignas(cmsghdr) char small[CMSG_SPACE(sizeof(int) * 16)];
    std::vector<cmsghdr> large;
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = iovlen;
    if (!fds.empty()) {
        if (fds.size() > max_fds)
            return failf("sendmsg: {} fds exceed the limit {}", fds.size(), max_fds);
        if (CMSG_SPACE(sizeof(int) * fds.size()) <= sizeof small) {
            std::memset(small, 0, sizeof small);
            msg.msg_control = small;
        } else {
            large.resize(cmsg_words(fds.size()));
            msg.msg_control = large.data();
        }
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    size_t total = 0;
    for (size_t i = 0; i < iovlen; ++i) total += iov[i].iov_len;
    size_t sent = 0;
    while (true) {
        ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("sendmsg", errno);
        }
        sent += static_cast<size_t>(n);
        if (sent >= total) return ok();
        // A short send: the fds went with the first bytes; skip what was sent and go on.
        msg.msg_control = nullptr;
        msg.msg_controllen = 0;
        size_t skip = static_cast<size_t>(n);
        while (skip > 0 && msg.msg_iovlen > 0) {
            if (skip >= msg.msg_iov->iov_len) {
                skip -= msg.msg_iov->iov_len;
                ++msg.msg_iov;
                --msg.msg_iovlen;
            } else {
                msg.msg_iov->iov_base = static_cast<uint8_t*>(msg.msg_iov->iov_base) + skip;
                msg.msg_iov->iov_len -= skip;
                skip = 0;
            }
        }
    }
}

Result<void> recv_exact(int sock, std::span<uint8_t> out, int timeout_ms, std::string_view what) {
    size_t got = 0;
    while (got < out.size()) {
        ssize_t n = ::recv(sock, out.data() + got, out.size() - got, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return sys_error(what, errno);
            auto ready = wait_readable(sock, timeout_ms);
            if (!ready) return fail(ready.error());
            if (!*ready)
                return fail(
                    fmt::format("{}: timed out after {} of {} bytes", what, got, out.size()),
                    ETIMEDOUT);
            continue;
        }
        if (n == 0)
            return fail(fmt::format("{}: peer closed after {} of {} bytes", what, got, out.size()),
                        ECONNRESET);
        got += static_cast<size_t>(n);
    }
    return ok();
}

Result<bool> wait_readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    while (true) {
        int n = ::poll(&p, 1, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("poll", errno);
        }
        return n > 0;
    }
}

Result<size_t> recv_with_fds(int sock, msghdr& msg, int flags, std::vector<UniqueFd>& fds) {
    ssize_t n;
    do {
        n = ::recvmsg(sock, &msg, flags);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return fail("timed out waiting for a message", ETIMEDOUT);
        return sys_error("recvmsg", errno);
    }
    if (msg.msg_controllen > 0) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                fds.emplace_back(fd);
            }
        }
    }
    if (n == 0) return fail("peer closed the connection", ECONNRESET);
    return static_cast<size_t>(n);
}

}  // namespace potemkin::hostdev
