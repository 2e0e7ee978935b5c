// Checks of the message header and framing (spec: "Header", "Commands", "Command Concurrency").
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/eventfd.hpp"
#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

std::vector<uint8_t> get_info_payload() {
    return encode_device_info(DeviceInfo{});
}

// Raw bytes of a message whose header says whatever the test wants.
std::vector<uint8_t> raw_message(uint16_t msg_id, uint16_t cmd, uint32_t msg_size, uint32_t flags,
                                 std::span<const uint8_t> payload) {
    Header h;
    h.msg_id = msg_id;
    h.cmd = cmd;
    h.msg_size = msg_size;
    h.flags = flags;
    const auto head = encode_header(h);
    std::vector<uint8_t> out(kHeaderSize + payload.size());
    std::copy(head.begin(), head.end(), out.begin());
    if (!payload.empty()) std::copy(payload.begin(), payload.end(), out.begin() + kHeaderSize);
    return out;
}

Header header_of(uint16_t msg_id, Command cmd) {
    Header h;
    h.msg_id = msg_id;
    h.cmd = static_cast<uint16_t>(cmd);
    return h;
}

Result<Verdict> reply_echoes_id(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const auto p = get_info_payload();
    // An ID far from the ones the checker counts up, so an echo cannot match by chance.
    POTEMKIN_TRY_ASSIGN(const Header req, s->send(static_cast<uint16_t>(Command::device_get_info),
                                                  p, {}, kTypeCommand, 0xbeef));
    POTEMKIN_TRY_ASSIGN(const Message m, judge_ok(req, s->receive()));
    if ((m.header.flags & kFlagNoReply) != 0)
        return failv("the reply has NO_REPLY set (flags {:#x})", m.header.flags);
    return Verdict::pass();
}

Result<Verdict> command_before_version(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.raw());
    const auto p = get_info_payload();
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(s, Command::device_get_info, p, {}, {0, true}));
    return Verdict::pass(seen);
}

Result<Verdict> payload_missing(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const std::string seen, request_error(*s, Command::device_get_info, {}));
    return Verdict::pass(seen);
}

// A header whose msg_size cannot be right: the server must not act on it, and must not crash.
// The session is taken by value: it is closed before the caller checks the server is alive.
Result<std::string> send_bad_size(Session s, uint32_t msg_size) {
    const uint16_t id = s.next_id();
    const auto bytes = raw_message(id, static_cast<uint16_t>(Command::device_get_info), msg_size,
                                   kTypeCommand, {});
    POTEMKIN_TRY(s.send_raw(bytes));
    return judge_error(header_of(id, Command::device_get_info), s.receive(), {0, true});
}

// The server still accepts and answers a new client.
Result<Verdict> alive_then_pass(Context& ctx, std::string seen) {
    if (auto again = ctx.fresh(); !again)
        return failv("{}; then a new connection failed: {}", seen, again.error().message);
    return Verdict::pass(std::move(seen));
}

Result<Verdict> bad_msg_size(Context& ctx, uint32_t msg_size) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.fresh());
    POTEMKIN_TRY_ASSIGN(std::string seen, send_bad_size(std::move(s), msg_size));
    return alive_then_pass(ctx, std::move(seen));
}
Result<Verdict> msg_size_below_16(Context& ctx) {
    return bad_msg_size(ctx, 8);
}
Result<Verdict> msg_size_huge(Context& ctx) {
    return bad_msg_size(ctx, 0xfffffff0);
}

Result<std::string> send_truncated(Session s) {
    const uint16_t id = s.next_id();
    const auto p = get_info_payload();
    // The header promises 16 payload bytes; 8 come, then EOF.
    const auto bytes = raw_message(id, static_cast<uint16_t>(Command::device_get_info),
                                   kHeaderSize + 16, kTypeCommand, std::span(p).first(8));
    POTEMKIN_TRY(s.send_raw(bytes));
    POTEMKIN_TRY(s.shutdown_write());
    return judge_error(header_of(id, Command::device_get_info), s.receive(), {0, true});
}

Result<Verdict> truncated_body(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.fresh());
    POTEMKIN_TRY_ASSIGN(std::string seen, send_truncated(std::move(s)));
    return alive_then_pass(ctx, std::move(seen));
}

Result<Verdict> reply_as_command(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.fresh());
    const auto p = get_info_payload();
    const uint16_t cmd = static_cast<uint16_t>(Command::device_get_info);
    POTEMKIN_TRY_ASSIGN(const Header bogus, s.send(cmd, p, {}, kTypeReply, s.next_id()));
    POTEMKIN_TRY_ASSIGN(const Header real, s.send(Command::device_get_info, p));
    POTEMKIN_TRY_ASSIGN(Message first, s.receive());
    if (first.header.msg_id == bogus.msg_id && first.header.is_reply()) {
        if (!first.header.is_error())
            return failv("a message of type reply was executed as a command ({})", describe(first));
        POTEMKIN_TRY(judge_ok(real, s.receive()));
        return Verdict::pass("error " + errno_name(first.header.error_no));
    }
    Result<Message> as_result = std::move(first);
    POTEMKIN_TRY(judge_ok(real, std::move(as_result)));
    return Verdict::pass("ignored");
}

Result<Verdict> no_reply_honoured(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const auto p = get_info_payload();
    POTEMKIN_TRY(s->send(Command::device_get_info, p, {}, kFlagNoReply));
    POTEMKIN_TRY_ASSIGN(const Header real, s->send(Command::device_get_info, p));
    POTEMKIN_TRY(judge_ok(real, s->receive()));
    return Verdict::pass();
}

Result<Verdict> no_reply_on_error(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const auto p = get_info_payload();
    POTEMKIN_TRY(s->send(99, p, {}, kTypeCommand | kFlagNoReply, s->next_id()));
    POTEMKIN_TRY_ASSIGN(const Header real, s->send(Command::device_get_info, p));
    POTEMKIN_TRY(judge_ok(real, s->receive()));
    return Verdict::pass();
}

Result<Verdict> unknown_commands(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const auto p = get_info_payload();
    std::string seen;
    // 0 and 14 are unassigned, 99 and 0xffff beyond the table.
    for (uint16_t cmd : {0, 14, 99, 0xffff}) {
        POTEMKIN_TRY_ASSIGN(const Header req, s->send(cmd, p, {}, kTypeCommand, s->next_id()));
        POTEMKIN_TRY_ASSIGN(const std::string e, judge_error(req, s->receive()));
        seen += fmt::format("{}cmd {}: {}", seen.empty() ? "" : ", ", cmd, e);
    }
    return Verdict::pass(seen);
}

Result<Verdict> server_to_client_commands(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen;
    const auto read = encode_dma_access(0, 8);
    POTEMKIN_TRY_ASSIGN(const std::string r, request_error(*s, Command::dma_read, read));
    const uint8_t data[8] = {};
    const auto write = encode_dma_access(0, 8, data);
    POTEMKIN_TRY_ASSIGN(const std::string w, request_error(*s, Command::dma_write, write));
    return Verdict::pass("DMA_READ: " + r + ", DMA_WRITE: " + w);
}

Result<std::string> send_many_fds(Session s, uint32_t n) {
    std::vector<UniqueFd> fds;
    std::vector<int> raw;
    for (uint32_t i = 0; i < n; ++i) {
        // Eventfds, not dups of the socket: a server holding on to those would keep its own
        // connection from ever seeing EOF.
        POTEMKIN_TRY_ASSIGN(UniqueFd fd, make_eventfd());
        raw.push_back(fd.get());
        fds.push_back(std::move(fd));
    }
    const auto p = get_info_payload();
    return request_error(s, Command::device_get_info, p, raw, {0, true});
}

Result<Verdict> too_many_fds(Context& ctx) {
    const uint32_t max = ctx.facts().version.caps.max_msg_fds;
    // SCM_RIGHTS carries at most 253 fds (SCM_MAX_FD): beyond that nothing can exceed the limit.
    if (max >= 253) return Verdict::skip(fmt::format("the server takes {} fds per message", max));
    POTEMKIN_TRY_ASSIGN(Session s, ctx.fresh());
    auto seen = send_many_fds(std::move(s), max + 1);
    if (!seen)
        return failv("{} fds where the server advertises max_msg_fds {}: {}", max + 1, max,
                     seen.error().message);
    return alive_then_pass(ctx, fmt::format("{} fds (max_msg_fds {}): {}", max + 1, max, *seen));
}

Result<Verdict> pipelined(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const auto p = get_info_payload();
    std::vector<uint8_t> bytes;
    std::vector<Header> reqs;
    for (int i = 0; i < 3; ++i) {
        const uint16_t id = s->next_id();
        const auto m = raw_message(id, static_cast<uint16_t>(Command::device_get_info),
                                   kHeaderSize + static_cast<uint32_t>(p.size()), kTypeCommand, p);
        bytes.insert(bytes.end(), m.begin(), m.end());
        reqs.push_back(header_of(id, Command::device_get_info));
    }
    POTEMKIN_TRY(s->send_raw(bytes));
    for (const Header& req : reqs) POTEMKIN_TRY(judge_ok(req, s->receive()));
    return Verdict::pass();
}

Result<Verdict> alive_after_checks(Context& ctx) {
    POTEMKIN_TRY(ctx.fresh());
    return Verdict::pass();
}

// The fds of a message the server refused must be closed, not kept for the connection's life: a
// client that sent a copy of its own socket would otherwise keep the connection open from the
// server's side forever, and a one-client server would serve nobody else.
Result<std::string> send_own_socket(Session s) {
    UniqueFd copy(::dup(s.fd()));
    if (!copy) return failf(Errno{errno}, "dup");
    const int fds[1] = {copy.get()};
    const auto p = get_info_payload();
    POTEMKIN_TRY_ASSIGN(const Header req, s.send(Command::device_get_info, p, fds));
    POTEMKIN_TRY_ASSIGN(Message m, s.receive());
    // A server may also ignore the fd and answer: then it must close it all the same.
    if (!m.header.is_error()) {
        Result<Message> got = std::move(m);
        POTEMKIN_TRY(judge_ok(req, std::move(got)));
        return std::string("accepted");
    }
    Result<Message> got = std::move(m);
    return judge_error(req, std::move(got), {0, true});
}

Result<Verdict> rejected_fds_closed(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session s, ctx.fresh());
    POTEMKIN_TRY_ASSIGN(std::string seen, send_own_socket(std::move(s)));
    if (auto again = ctx.fresh(); !again)
        return failv(
            "{}; then, with the client gone, a new connection failed: {} (the server "
            "still holds the refused message's fd, a copy of the client's socket)",
            seen, again.error().message);
    return Verdict::pass(std::move(seen));
}

}  // namespace

void add_final_checks(std::vector<Check>& out) {
    out.push_back(
        {"connect.alive_after_checks", "Security Considerations", true, alive_after_checks});
    // Last: a server that fails it may accept no client after it.
    out.push_back(
        {"header.rejected_fds_closed", "Security Considerations", true, rejected_fds_closed});
}

void add_header_checks(std::vector<Check>& out) {
    const char* header = "Header";
    out.push_back({"header.reply_echoes_id_and_command", header, false, reply_echoes_id});
    out.push_back(
        {"header.command_before_version", "Connection Initiation", true, command_before_version});
    out.push_back({"header.msg_size_16_payload_missing", header, false, payload_missing});
    out.push_back({"header.msg_size_below_16", header, true, msg_size_below_16});
    out.push_back({"header.msg_size_huge", header, true, msg_size_huge});
    out.push_back({"header.truncated_body", header, true, truncated_body});
    out.push_back({"header.reply_type_as_command", header, true, reply_as_command});
    out.push_back({"header.no_reply_honoured", header, false, no_reply_honoured});
    out.push_back({"header.no_reply_on_error", header, false, no_reply_on_error});
    out.push_back({"header.unknown_commands", "Commands", false, unknown_commands});
    out.push_back(
        {"header.server_to_client_commands", "Commands", false, server_to_client_commands});
    out.push_back({"header.too_many_fds", "VFIO_USER_VERSION", true, too_many_fds});
    out.push_back({"header.pipelined_commands", "Command Concurrency", false, pipelined});
}

}  // namespace potemkin::vfio_user::conform
