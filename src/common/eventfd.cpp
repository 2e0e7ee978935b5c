#include "common/eventfd.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace potemkin {

Result<UniqueFd> make_eventfd() {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return failf(Errno{errno}, "eventfd");
    return UniqueFd(fd);
}

Result<void> signal_eventfd(int fd) {
    const uint64_t one = 1;
    if (::write(fd, &one, sizeof one) == static_cast<ssize_t>(sizeof one)) return ok();
    if (errno == EAGAIN) return ok();  // counter at its maximum: already pending
    return failf(Errno{errno}, "eventfd {} write", fd);
}

bool consume_eventfd(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1 || (p.revents & POLLIN) == 0) return false;
    uint64_t v = 0;
    return ::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v) && v != 0;
}

}  // namespace potemkin
