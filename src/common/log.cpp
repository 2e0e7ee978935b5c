#include "common/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace potemkin::log {
namespace {

Level initial_level() {
    const char* env = std::getenv("POTEMKIN_LOG");
    if (!env) return Level::warn;
    if (std::strcmp(env, "error") == 0) return Level::error;
    if (std::strcmp(env, "info") == 0) return Level::info;
    if (std::strcmp(env, "debug") == 0) return Level::debug;
    return Level::warn;
}

std::atomic<Level>& current() {
    static std::atomic<Level> l{initial_level()};
    return l;
}

}  // namespace

Level level() {
    return current().load(std::memory_order_relaxed);
}
void set_level(Level l) {
    current().store(l, std::memory_order_relaxed);
}

void write(Level l, std::string_view message) {
    static constexpr const char* names[] = {"error", "warn", "info", "debug"};
    std::string line = fmt::format("potemkin: {}: {}\n", names[static_cast<int>(l)], message);
    // Standard error is where failures are reported; a failure to write there has nowhere to go.
    (void)std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace potemkin::log
