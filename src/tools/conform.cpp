#include "tools/conform.hpp"

#include <cstdio>

#include "vfio_user/conform/conform.hpp"

namespace potemkin::tools {

namespace {

constexpr int kCouldNotRun = 126;

}  // namespace

int conform_command(const ConformOptions& o) {
    namespace vc = vfio_user::conform;
    if (o.list) {
        for (const auto& c : vc::list_checks())
            std::printf("%-45s %s\n", c.name.c_str(), c.section.c_str());
        return 0;
    }
    std::string path = o.target;
    constexpr std::string_view kScheme = "vfio-user:";
    if (path.starts_with(kScheme)) path = path.substr(kScheme.size());
    if (path.empty()) {
        std::fprintf(stderr, "potemkin conform: '%s' is not vfio-user:/path/to/socket\n",
                     o.target.c_str());
        return kCouldNotRun;
    }
    vc::ConformSettings s;
    s.socket_path = path;
    s.timeout_ms = o.timeout_ms;
    s.only = o.only;
    auto results = vc::run_checks(s);
    if (!results) {
        std::fprintf(stderr, "potemkin conform: %s\n", results.error().message.c_str());
        return kCouldNotRun;
    }
    const std::string out =
        o.json ? vc::format_json(*results) : vc::format_table(*results, o.verbose);
    if (std::fputs(out.c_str(), stdout) < 0 || std::fflush(stdout) != 0) return kCouldNotRun;
    return vc::exit_status(*results);
}

}  // namespace potemkin::tools
