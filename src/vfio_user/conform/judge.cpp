// The judging helpers, the Context's connections and the DeviceFacts helpers (check.hpp).
#include <cerrno>
#include <cstring>

#include "common/bytes.hpp"
#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

std::optional<IrqInfo> DeviceFacts::irq_with(uint32_t min_count) const {
    for (uint32_t index : {kIrqIndexMsix, kIrqIndexMsi, kIrqIndexIntx}) {
        if (index >= irqs.size()) continue;
        const IrqInfo& i = irqs[index];
        if (i.count >= min_count && (i.flags & kIrqInfoFlagEventfd) != 0) return i;
    }
    return std::nullopt;
}

Result<Session*> Context::session() {
    if (shared_ != nullptr) return shared_;
    POTEMKIN_TRY_ASSIGN(own_, fresh());
    return &*own_;
}

Result<Session> Context::raw() {
    auto s = Session::open(settings_.socket_path, settings_.timeout_ms, deadline_);
    if (!s && is_unreachable(s.error())) reach_.lost = s.error().message;
    return s;
}

Result<Session> Context::fresh() {
    POTEMKIN_TRY_ASSIGN(Session s, raw());
    if (auto v = s.negotiate(); !v) return fail(v.error().context("VERSION"));
    return s;
}

std::string errno_name(uint32_t e) {
    if (e > 0 && e < 4096) {
        if (const char* n = ::strerrorname_np(static_cast<int>(e)); n != nullptr) return n;
    }
    return fmt::format("errno {}", e);
}

std::string describe(const Message& m) {
    if (!m.header.is_reply())
        return fmt::format("a message of type {} (flags {:#x}, cmd {})", m.header.type(),
                           m.header.flags, m.header.cmd);
    if (m.header.is_error()) return fmt::format("error {}", errno_name(m.header.error_no));
    return fmt::format("success ({} payload bytes)", m.payload.size());
}

namespace {

// The reply belongs to `req`: type reply, same msg_id and command.
Result<void> matches(const Header& req, const Message& m) {
    if (!m.header.is_reply() || m.header.msg_id != req.msg_id || m.header.cmd != req.cmd)
        return failf(
            "{} (msg_id {}): the next message was {} with msg_id {} for {} (spec, Header: "
            "the reply echoes the message ID and command)",
            command_name(req.cmd), req.msg_id, describe(m), m.header.msg_id,
            command_name(m.header.cmd));
    return ok();
}

}  // namespace

Result<Message> judge_ok(const Header& req, Result<Message> got) {
    if (!got) return fail(got.error().context(command_name(req.cmd)));
    POTEMKIN_TRY(matches(req, *got));
    if (got->header.is_error())
        return failf("{}: expected success, got {}", command_name(req.cmd), describe(*got));
    return std::move(got).value();
}

Result<std::string> judge_error(const Header& req, Result<Message> got, ErrorWanted want) {
    if (!got) {
        if (want.close_ok && is_closed(got.error())) return std::string("connection closed");
        return failf("{}: expected an error reply: {}", command_name(req.cmd), got.error().message);
    }
    POTEMKIN_TRY(matches(req, *got));
    if (!got->header.is_error())
        return failf("{}: expected an error reply, got {}", command_name(req.cmd), describe(*got));
    if (!got->payload.empty())
        return failf(
            "{}: the error reply carries {} payload bytes (spec, Header: an error reply "
            "only includes the header)",
            command_name(req.cmd), got->payload.size());
    if (want.errno_value != 0 && got->header.error_no != static_cast<uint32_t>(want.errno_value))
        return failf("{}: expected error {}, got {}", command_name(req.cmd),
                     errno_name(static_cast<uint32_t>(want.errno_value)),
                     errno_name(got->header.error_no));
    return "error " + errno_name(got->header.error_no);
}

Result<Message> request_ok(Session& s, Command cmd, std::span<const uint8_t> payload,
                           std::span<const int> fds) {
    POTEMKIN_TRY_ASSIGN(const Header req, s.send(cmd, payload, fds));
    return judge_ok(req, s.receive());
}

Result<std::string> request_error(Session& s, Command cmd, std::span<const uint8_t> payload,
                                  std::span<const int> fds, ErrorWanted want) {
    auto req = s.send(cmd, payload, fds);
    if (!req) {
        if (want.close_ok && is_closed(req.error())) return std::string("connection closed");
        return fail(req.error());
    }
    return judge_error(*req, s.receive(), want);
}

Result<void> check_within_argsz(const Message& reply, uint32_t request_argsz) {
    if (reply.payload.size() > request_argsz)
        return failf(
            "{}: reply payload of {} bytes exceeds the request's argsz {} (spec, Message "
            "sizes: argsz is the maximum reply payload size)",
            command_name(reply.header.cmd), reply.payload.size(), request_argsz);
    return ok();
}

void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
    if (b.size() < at + 4) b.resize(at + 4);
    store_le(std::span<uint8_t>(b).subspan(at, 4), v);
}
void put_u64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
    if (b.size() < at + 8) b.resize(at + 8);
    store_le(std::span<uint8_t>(b).subspan(at, 8), v);
}
uint32_t get_u32(std::span<const uint8_t> b, size_t at) {
    if (b.size() < at + 4) return 0;
    return static_cast<uint32_t>(load_le(b.subspan(at, 4)));
}

}  // namespace potemkin::vfio_user::conform
