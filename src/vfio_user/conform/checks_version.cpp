// Checks of the VERSION handshake (spec: "VFIO_USER_VERSION", "Connection Initiation").
#include <unistd.h>

#include "common/eventfd.hpp"
#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

std::vector<uint8_t> version_payload(uint16_t major, uint16_t minor, std::string_view json,
                                     bool nul) {
    std::vector<uint8_t> p;
    put_u32(p, 0, uint32_t{major} | (uint32_t{minor} << 16));
    p.insert(p.end(), json.begin(), json.end());
    if (nul) p.push_back(0);
    return p;
}

// The reply to a VERSION the server accepted: same major, minor not above ours, capabilities
// that parse and, when given, JSON with its terminating NUL.
Result<Version> judge_version(const Message& m, uint16_t major, uint16_t minor) {
    POTEMKIN_TRY_ASSIGN(Version v, decode_version(m.payload));
    if (v.major != major)
        return failf(
            "the reply's major {} differs from the proposed {} (spec: it must be the same)",
            v.major, major);
    if (v.minor > minor)
        return failf("the reply's minor {} exceeds the proposed {} (spec: equal or less)", v.minor,
                     minor);
    if (!m.fds.empty() && !v.caps.twin_socket_fd_index)
        return failf("the reply carries {} fds but no twin_socket", m.fds.size());
    return v;
}

Result<Verdict> offer(Context& ctx, uint16_t minor, std::string_view json) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.raw());
    const auto p = version_payload(0, minor, json, !json.empty());
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(s, Command::version, p));
    POTEMKIN_TRY_ASSIGN(const Version v, judge_version(m, 0, minor));
    std::string caps(m.payload.size() > 4 ? m.payload.size() - 5 : 0, '\0');
    if (!caps.empty()) std::copy(m.payload.begin() + 4, m.payload.end() - 1, caps.begin());
    return Verdict::pass(fmt::format("{}.{} {}", v.major, v.minor, caps));
}

Result<Verdict> reply(Context& ctx) {
    return offer(ctx, kMinor,
                 R"({"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}})");
}
Result<Verdict> lower_minor(Context& ctx) {
    return offer(ctx, 1, R"({"capabilities":{"max_msg_fds":16}})");
}
Result<Verdict> no_json(Context& ctx) {
    return offer(ctx, kMinor, "");
}
Result<Verdict> unknown_capability(Context& ctx) {
    // A later minor version may add capabilities; an older server must ignore them.
    return offer(ctx, kMinor,
                 R"({"capabilities":{"max_msg_fds":16,"x_conform_unknown":{"a":[1,2]}},)"
                 R"("x_conform_top":true})");
}

// A VERSION the server must refuse: an error reply or a closed connection.
Result<Verdict> refuse(Context& ctx, std::span<const uint8_t> payload, std::span<const int> fds) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.raw());
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(s, Command::version, payload, fds, {0, true}));
    return Verdict::pass(seen);
}
Result<Verdict> bad_json(Context& ctx) {
    return refuse(ctx, version_payload(0, kMinor, R"({"capabilities":{"max_msg_fds":)", true), {});
}
Result<Verdict> json_without_nul(Context& ctx) {
    return refuse(ctx, version_payload(0, kMinor, R"({"capabilities":{"max_msg_fds":16}})", false),
                  {});
}
Result<Verdict> wrong_type(Context& ctx) {
    return refuse(
        ctx, version_payload(0, kMinor, R"({"capabilities":{"max_msg_fds":"many"}})", true), {});
}
Result<Verdict> with_fds(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(UniqueFd efd, make_eventfd());
    const int fds[1] = {efd.get()};
    return refuse(ctx, version_payload(0, kMinor, "", false), fds);
}
Result<Verdict> payload_too_short(Context& ctx) {
    const uint8_t two[2] = {0, 0};
    return refuse(ctx, two, {});
}

Result<Verdict> major_mismatch(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.raw());
    const auto p = version_payload(kMajor + 1, 0, "", false);
    POTEMKIN_TRY_ASSIGN(const Header req, s.send(Command::version, p));
    Result<Message> got = s.receive();
    if (got && got->header.is_reply() && !got->header.is_error()) {
        // Accepting is fine only for a server that speaks that major.
        POTEMKIN_TRY(judge_version(*got, kMajor + 1, 0));
        return Verdict::pass("accepted major 1");
    }
    POTEMKIN_TRY_ASSIGN(const std::string seen, judge_error(req, std::move(got), {0, true}));
    return Verdict::pass(seen);
}

}  // namespace

void add_version_checks(std::vector<Check>& out) {
    const char* v = "VFIO_USER_VERSION";
    out.push_back({"version.reply", v, true, reply});
    out.push_back({"version.lower_minor", v, true, lower_minor});
    out.push_back({"version.without_json", v, true, no_json});
    out.push_back({"version.unknown_capability_ignored", v, true, unknown_capability});
    out.push_back({"version.major_mismatch", v, true, major_mismatch});
    out.push_back({"version.bad_json", v, true, bad_json});
    out.push_back({"version.json_without_nul", v, true, json_without_nul});
    out.push_back({"version.capability_wrong_type", v, true, wrong_type});
    out.push_back({"version.with_fds", v, true, with_fds});
    out.push_back({"version.payload_too_short", v, true, payload_too_short});
}

}  // namespace potemkin::vfio_user::conform
