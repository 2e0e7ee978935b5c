// An owned file descriptor, closed on destruction. Shared by every transport that passes fds
// over sockets (vfio-user, mpqemu) and by the processes that serve them.
#pragma once

#include <unistd.h>  // kept for includers that use read/write/close through this header

#include <utility>

#include "common/result.hpp"

namespace potemkin {

class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(o.release());
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release() { return std::exchange(fd_, -1); }
    // Closes the fd held (a failure is logged: nobody is left to tell) and takes `fd`.
    void reset(int fd = -1);
    // Closes the fd held and says whether that worked (the fd is gone either way, as close(2)
    // leaves it on Linux even when it reports an error).
    Result<void> close();

  private:
    int fd_ = -1;
};

}  // namespace potemkin
