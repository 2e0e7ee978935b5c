// A test client's connection to a Unix stream socket: the raw peers in the vfio-user server,
// fast-path and doorbell tests, and the serve loop tests, speak to servers through it.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "common/unique_fd.hpp"

namespace potemkin::test_support {

// Connects to `path`; a failure is a test failure (the fd returned is then not connected).
inline UniqueFd connect_unix(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(static_cast<bool>(fd)) << "socket: " << std::strerror(errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    EXPECT_LT(path.size(), sizeof addr.sun_path) << path;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(0, ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr))
        << path << ": " << std::strerror(errno);
    return fd;
}

}  // namespace potemkin::test_support
