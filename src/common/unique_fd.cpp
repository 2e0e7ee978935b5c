#include "common/unique_fd.hpp"

#include <unistd.h>

#include <cerrno>

#include "common/log.hpp"

namespace potemkin {

void UniqueFd::reset(int fd) {
    if (auto r = close(); !r) log::error("{}", r.error().message);
    fd_ = fd;
}

Result<void> UniqueFd::close() {
    const int fd = std::exchange(fd_, -1);
    if (fd < 0 || ::close(fd) == 0) return ok();
    return failf(Errno{errno}, "close fd {}", fd);
}

}  // namespace potemkin
