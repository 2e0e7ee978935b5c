// Runs the checks: discovery on the first connection, then each check with its deadline, on
// the shared connection or a fresh one (check.hpp).
#include <fnmatch.h>

#include <algorithm>
#include <optional>

#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

// Requests in a check never exceed this many round trips' worth of waiting.
constexpr int kCheckTimeouts = 4;

bool selected(const std::string& only, const char* name) {
    if (only.empty()) return true;
    if (only.find_first_of("*?[") != std::string::npos)
        return ::fnmatch(only.c_str(), name, 0) == 0;
    return std::string_view(name).find(only) != std::string_view::npos;
}

Result<void> discover(Session& s, DeviceFacts& f) {
    f.version = s.server_version();
    POTEMKIN_TRY_ASSIGN(Message m,
                        request_ok(s, Command::device_get_info, encode_device_info(DeviceInfo{})));
    POTEMKIN_TRY_ASSIGN(f.info, decode_device_info(m.payload));
    // A bound on what a broken server can make us ask: 9 PCI regions, and a few device ones.
    const uint32_t regions = std::min<uint32_t>(f.info.num_regions, 64);
    for (uint32_t i = 0; i < regions; ++i) {
        auto r =
            request_ok(s, Command::device_get_region_info, encode_region_info_request(i, 4096));
        RegionInfo info;
        info.index = i;
        if (r) {
            if (auto d = decode_region_info_reply(r->payload); d) info = *d;
        }
        // A transport error ends discovery; an error reply leaves the region unknown (size 0).
        if (!r && r.error().sys_errno != 0) return fail(r.error());
        f.regions.push_back(info);
    }
    const uint32_t irqs = std::min<uint32_t>(f.info.num_irqs, 64);
    for (uint32_t i = 0; i < irqs; ++i) {
        IrqInfo q;
        q.index = i;
        auto r = request_ok(s, Command::device_get_irq_info, encode_irq_info(q));
        IrqInfo info;
        info.index = i;
        if (r) {
            if (auto d = decode_irq_info(r->payload); d) info = *d;
        }
        f.irqs.push_back(info);
    }
    f.known = true;
    return ok();
}

}  // namespace

const char* status_name(Status s) {
    switch (s) {
        case Status::pass:
            return "pass";
        case Status::fail:
            return "fail";
        case Status::skip:
            return "skip";
    }
    return "?";
}

std::vector<Check> all_checks() {
    std::vector<Check> out;
    add_header_checks(out);
    add_version_checks(out);
    add_device_checks(out);
    add_dma_checks(out);
    add_irq_checks(out);
    add_access_checks(out);
    add_final_checks(out);
    return out;
}

std::vector<CheckResult> list_checks() {
    std::vector<CheckResult> out;
    for (const Check& c : all_checks()) out.push_back({c.name, c.section, Status::skip, {}});
    return out;
}

Result<std::vector<CheckResult>> run_checks(const ConformSettings& settings) {
    if (settings.socket_path.empty()) return failf("no socket path");
    if (settings.timeout_ms < 1)
        return failf("timeout {} ms: must be at least 1", settings.timeout_ms);
    std::vector<CheckResult> results;
    const auto check_deadline = [&] {
        return Clock::now() +
               std::chrono::milliseconds(int64_t{settings.timeout_ms} * kCheckTimeouts);
    };

    // Discovery: VERSION and the device's layout, on the connection the shared checks use.
    DeviceFacts facts;
    std::optional<Session> shared;
    {
        CheckResult r{"connect.discovery", "Connection Initiation", Status::pass, {}};
        const auto deadline =
            Clock::now() + std::chrono::milliseconds(int64_t{settings.timeout_ms} * 16);
        auto s = Session::open(settings.socket_path, settings.timeout_ms, deadline);
        Result<void> done = s ? ok() : fail(s.error());
        if (done) {
            if (auto v = s->negotiate(); !v) done = fail(v.error().context("VERSION"));
        }
        if (done) done = discover(*s, facts);
        if (!done) {
            facts.why_unknown = done.error().message;
            r.status = Status::fail;
            r.detail = done.error().message;
        } else {
            r.detail = fmt::format("{} regions, {} irq types", facts.info.num_regions,
                                   facts.info.num_irqs);
            shared.emplace(std::move(s).value());
        }
        results.push_back(std::move(r));
    }

    Reachability reach;
    const std::vector<Check> checks = all_checks();
    // A check's full name selects that check alone (some names are part of others).
    const bool exact = std::any_of(checks.begin(), checks.end(),
                                   [&](const Check& c) { return settings.only == c.name; });
    for (const Check& c : checks) {
        if (exact ? settings.only != c.name : !selected(settings.only, c.name)) continue;
        CheckResult r{c.name, c.section, Status::pass, {}};
        if (!reach.lost.empty()) {
            r.status = Status::fail;
            r.detail = "not run: the server stopped accepting connections (" + reach.lost + ")";
            results.push_back(std::move(r));
            continue;
        }
        if (!facts.known) {
            r.status = Status::skip;
            r.detail = "discovery failed: " + facts.why_unknown;
            // Some checks need no facts: the ones on a fresh connection still run.
            if (!c.fresh) {
                results.push_back(std::move(r));
                continue;
            }
        }
        const auto deadline = check_deadline();
        Session* use = nullptr;
        // A server may serve one client at a time: the shared connection must not wait behind.
        if (c.fresh) shared.reset();
        if (!c.fresh) {
            if (!shared) {
                // A former check dropped it: the next shared check gets a new one.
                auto s = Session::open(settings.socket_path, settings.timeout_ms, deadline);
                if (!s && is_unreachable(s.error())) reach.lost = s.error().message;
                Result<Version> v = s ? s->negotiate() : Result<Version>(fail(s.error()));
                if (v) shared.emplace(std::move(s).value());
            }
            if (shared) use = &*shared;
        }
        Context ctx(settings, facts, use, deadline, reach);
        Result<Verdict> v = c.fn(ctx);
        if (v) {
            r.status = v->status;
            r.detail = std::move(v->detail);
        } else {
            r.status = Status::fail;
            r.detail = v.error().message;
        }
        // A check on its own connection may have ended the server: the check is to blame, not
        // the next one to connect.
        if (c.fresh && r.status == Status::pass) {
            auto s = Session::open(settings.socket_path, settings.timeout_ms, check_deadline());
            Result<Version> after = s ? s->negotiate() : Result<Version>(fail(s.error()));
            if (!after) {
                if (!s && is_unreachable(s.error())) reach.lost = s.error().message;
                r.status = Status::fail;
                r.detail =
                    fmt::format("{}{}then the server no longer serves a new client: {}", r.detail,
                                r.detail.empty() ? "" : "; ", after.error().message);
            }
        }
        // A failure may have left replies in flight or the server in an unknown state.
        if (r.status == Status::fail) shared.reset();
        results.push_back(std::move(r));
    }

    return results;
}

}  // namespace potemkin::vfio_user::conform
