// `potemkin probe URL`: open any host device by URL and print an `lspci -vv`-like view.
#pragma once

#include <string>

namespace potemkin::tools {

// Prints to stdout; errors to stderr. Returns the process status (0 ok, 1 device error).
int probe_command(const std::string& url);

}  // namespace potemkin::tools
