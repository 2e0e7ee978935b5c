// Shared by the fuzz targets that feed a byte stream to a real server over a socketpair.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "common/unique_fd.hpp"

namespace potemkin::fuzz {

// A connected pair: `peer` plays the fuzzed side, `server` goes to the server under test.
struct StreamPair {
    UniqueFd peer;
    UniqueFd server;
};

inline StreamPair stream_pair() {
    int sv[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) __builtin_trap();
    return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// Writes `data` to the peer end, then shuts down its write side (the server sees EOF after
// the input), and keeps reading what the server answers so that it never blocks on a full
// socket. Join the returned thread after the server returned.
inline std::thread feed(int fd, const uint8_t* data, size_t size) {
    for (size_t done = 0; done < size;) {
        const ssize_t n = ::send(fd, data + done, size - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // the server closed: the rest is not read
        done += static_cast<size_t>(n);
    }
    if (::shutdown(fd, SHUT_WR) != 0 && errno != ENOTCONN) __builtin_trap();
    return std::thread([fd] {
        uint8_t sink[65536];
        while (true) {
            const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;
        }
    });
}

}  // namespace potemkin::fuzz
