// Reading a whole file the user named (a guest image, a configuration file) without trusting
// it: only a regular file is read (a directory, /dev/zero or a FIFO is refused before any read,
// and opening never blocks on a FIFO), at most `max_bytes` of it, and every failure is an error
// value naming the file — never an exception, never an unbounded read.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace potemkin {

struct ReadFileLimits {
    uint64_t max_bytes = 0;          // a larger file is refused
    std::string_view what = "file";  // for messages: "guest image", "configuration file"
};

Result<std::vector<uint8_t>> read_regular_file(const std::string& path,
                                               const ReadFileLimits& limits);

}  // namespace potemkin
