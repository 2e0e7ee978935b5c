// `potemkin conform vfio-user:SOCK`: check a vfio-user server against the specification
// (vfio_user/conform/conform.hpp) and print the table (or JSON).
#pragma once

#include <string>

namespace potemkin::tools {

struct ConformOptions {
    std::string target;  // vfio-user:/path/to/socket (or the bare path)
    int timeout_ms = 2000;
    std::string only;
    bool json = false;
    bool list = false;
    bool verbose = false;
};

// Returns the process status: the number of failed checks (at most 125); 126 when no check
// could run (a bad target or setting).
int conform_command(const ConformOptions& o);

}  // namespace potemkin::tools
