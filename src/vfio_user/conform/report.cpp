// The checker's output: the table for people, JSON for programs, the exit status.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "vfio_user/conform/conform.hpp"

namespace potemkin::vfio_user::conform {

namespace {

struct Counts {
    int pass = 0, fail = 0, skip = 0;
};
Counts count(const std::vector<CheckResult>& results) {
    Counts c;
    for (const auto& r : results) {
        if (r.status == Status::pass) ++c.pass;
        if (r.status == Status::fail) ++c.fail;
        if (r.status == Status::skip) ++c.skip;
    }
    return c;
}

}  // namespace

std::string format_table(const std::vector<CheckResult>& results, bool verbose) {
    size_t name_w = 5, section_w = 12;
    for (const auto& r : results) {
        name_w = std::max(name_w, r.name.size());
        section_w = std::max(section_w, r.section.size());
    }
    std::string out = fmt::format("{:<{}}  {:<8}{:<{}}  {}\n", "CHECK", name_w, "RESULT",
                                  "SPEC SECTION", section_w, "DETAIL");
    for (const auto& r : results) {
        const bool show = r.status != Status::pass || verbose;
        out += fmt::format("{:<{}}  {:<8}{:<{}}  {}", r.name, name_w, status_name(r.status),
                           r.section, section_w, show ? r.detail : "");
        while (!out.empty() && out.back() == ' ') out.pop_back();
        out += '\n';
    }
    const Counts c = count(results);
    out += fmt::format("{} checks: {} pass, {} fail, {} skip\n", results.size(), c.pass, c.fail,
                       c.skip);
    return out;
}

std::string format_json(const std::vector<CheckResult>& results) {
    nlohmann::ordered_json checks = nlohmann::ordered_json::array();
    for (const auto& r : results)
        checks.push_back({{"name", r.name},
                          {"section", r.section},
                          {"result", status_name(r.status)},
                          {"detail", r.detail}});
    const Counts c = count(results);
    nlohmann::ordered_json j = {
        {"checks", checks}, {"pass", c.pass}, {"fail", c.fail}, {"skip", c.skip}};
    // Replace: a server's bytes may land in a detail, and they need not be UTF-8.
    return j.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

int exit_status(const std::vector<CheckResult>& results) {
    return std::min(count(results).fail, 125);
}

}  // namespace potemkin::vfio_user::conform
