#include "common/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/unique_fd.hpp"

namespace potemkin {

namespace {

const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

}  // namespace

Result<std::vector<uint8_t>> read_regular_file(const std::string& path,
                                               const ReadFileLimits& limits) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return failf(Errno{errno}, "{}: cannot open {}", path, limits.what);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return failf(Errno{errno}, "{}: cannot stat {}", path, limits.what);
    if (!S_ISREG(st.st_mode))
        return failf("{}: {} is {}, not a regular file", path, limits.what, file_kind(st.st_mode));
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size > limits.max_bytes)
        return failf("{}: {} is {} bytes, more than the {} bytes allowed", path, limits.what, size,
                     limits.max_bytes);
    std::vector<uint8_t> data(size);
    size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return failf(Errno{errno}, "{}: reading {}", path, limits.what);
        if (n == 0) break;  // shrunk while we read: take what is there
        done += static_cast<size_t>(n);
    }
    data.resize(done);
    return data;
}

}  // namespace potemkin
