#include "mpqemu/protocol.hpp"

#include "hostdev/socket_io.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace potemkin::mpqemu {

using hostdev::recv_exact;
using hostdev::sys_error;
using hostdev::wait_readable;

namespace {

template <typename T>
void put(uint8_t* at, T v) {
    std::memcpy(at, &v, sizeof v);
}
template <typename T>
T get(const uint8_t* at) {
    T v;
    std::memcpy(&v, at, sizeof v);
    return v;
}

Unexpected<Error> proto_error(std::string message) {
    return fail(std::move(message), EPROTO);
}

bool power_of_two_up_to_8(uint64_t v) {
    return v == 1 || v == 2 || v == 4 || v == 8;
}

}  // namespace

std::string command_name(Cmd cmd) {
    switch (cmd) {
        case Cmd::sync_sysmem:
            return "SYNC_SYSMEM";
        case Cmd::ret:
            return "RET";
        case Cmd::pci_cfgwrite:
            return "PCI_CFGWRITE";
        case Cmd::pci_cfgread:
            return "PCI_CFGREAD";
        case Cmd::bar_write:
            return "BAR_WRITE";
        case Cmd::bar_read:
            return "BAR_READ";
        case Cmd::set_irqfd:
            return "SET_IRQFD";
        case Cmd::device_reset:
            return "DEVICE_RESET";
    }
    return fmt::format("command {}", static_cast<int32_t>(cmd));
}

std::array<uint8_t, kConfDataSize> encode_conf(const ConfData& c) {
    std::array<uint8_t, kConfDataSize> b{};
    put(&b[0], c.addr);
    put(&b[4], c.val);
    put(&b[8], c.len);
    return b;
}

std::array<uint8_t, kBarAccessSize> encode_bar(const BarAccess& a) {
    std::array<uint8_t, kBarAccessSize> b{};
    put(&b[0], a.addr);
    put(&b[8], a.val);
    put(&b[16], a.size);
    b[20] = a.memory ? 1 : 0;
    return b;
}

std::array<uint8_t, kSyncSysmemSize> encode_sysmem(const SyncSysmem& s) {
    std::array<uint8_t, kSyncSysmemSize> b{};
    for (size_t i = 0; i < s.entries.size() && i < kSysmemEntries; ++i) {
        put(&b[i * 8], s.entries[i].gpa);
        put(&b[64 + i * 8], s.entries[i].size);
        put(&b[128 + i * 8], s.entries[i].offset);
    }
    return b;
}

std::array<uint8_t, kRetSize> encode_ret(uint64_t value) {
    std::array<uint8_t, kRetSize> b{};
    put(&b[0], value);
    return b;
}

Result<void> validate(const Message& m) {
    const auto name = command_name(m.cmd);
    const auto raw = static_cast<int32_t>(m.cmd);
    if (raw < 0 || raw >= kCmdMax) return proto_error(fmt::format("cmd {} is not a command", raw));
    if (m.fds.size() > kMaxFds)
        return proto_error(
            fmt::format("{}: {} fds, at most {} allowed", name, m.fds.size(), kMaxFds));
    for (const auto& fd : m.fds)
        if (::fcntl(fd.get(), F_GETFL) < 0)
            return proto_error(fmt::format("{}: fd {} is not open", name, fd.get()));
    const size_t size = m.payload.size();
    switch (m.cmd) {
        case Cmd::sync_sysmem:
            if (m.fds.empty()) return proto_error(name + ": no fds");
            if (size != kSyncSysmemSize)
                return proto_error(
                    fmt::format("{}: size {} (must be {})", name, size, kSyncSysmemSize));
            break;
        case Cmd::pci_cfgread:
        case Cmd::pci_cfgwrite:
            if (size != kConfDataSize)
                return proto_error(
                    fmt::format("{}: size {} (must be {})", name, size, kConfDataSize));
            break;
        case Cmd::bar_read:
        case Cmd::bar_write:
            if (size != kBarAccessSize)
                return proto_error(
                    fmt::format("{}: size {} (must be {})", name, size, kBarAccessSize));
            if (!m.fds.empty()) return proto_error(fmt::format("{}: carries fds", name));
            break;
        case Cmd::set_irqfd:
            if (size != 0) return proto_error(fmt::format("{}: size {} (must be 0)", name, size));
            if (m.fds.size() != 2)
                return proto_error(fmt::format("{}: {} fds (must be 2)", name, m.fds.size()));
            break;
        case Cmd::ret:
            if (size != 0 && size != kRetSize)
                return proto_error(
                    fmt::format("{}: size {} (must be 0 or {})", name, size, kRetSize));
            break;
        case Cmd::device_reset:
            break;
    }
    return ok();
}

Result<ConfData> decode_conf(const Message& m) {
    if (m.payload.size() != kConfDataSize)
        return failf("{}: size {} (must be {})", command_name(m.cmd), m.payload.size(),
                     kConfDataSize);
    ConfData c{get<uint32_t>(&m.payload[0]), get<uint32_t>(&m.payload[4]),
               get<int32_t>(&m.payload[8])};
    if (c.len != 1 && c.len != 2 && c.len != 4)
        return failf("{}: len {} (must be 1, 2 or 4)", command_name(m.cmd), c.len);
    return c;
}

Result<BarAccess> decode_bar(const Message& m) {
    if (m.payload.size() != kBarAccessSize)
        return failf("{}: size {} (must be {})", command_name(m.cmd), m.payload.size(),
                     kBarAccessSize);
    BarAccess a{get<uint64_t>(&m.payload[0]), get<uint64_t>(&m.payload[8]),
                get<uint32_t>(&m.payload[16]), m.payload[20] != 0};
    if (!power_of_two_up_to_8(a.size))
        return failf("{}: access size {} (must be 1, 2, 4 or 8)", command_name(m.cmd), a.size);
    return a;
}

Result<SyncSysmem> decode_sysmem(const Message& m) {
    if (m.payload.size() != kSyncSysmemSize)
        return failf("SYNC_SYSMEM: size {} (must be {})", m.payload.size(), kSyncSysmemSize);
    if (m.fds.empty() || m.fds.size() > kSysmemEntries)
        return failf("SYNC_SYSMEM: {} fds (must be 1 to {})", m.fds.size(), kSysmemEntries);
    SyncSysmem s;
    for (size_t i = 0; i < m.fds.size(); ++i) {
        SysmemEntry e{get<uint64_t>(&m.payload[i * 8]), get<uint64_t>(&m.payload[64 + i * 8]),
                      get<int64_t>(&m.payload[128 + i * 8])};
        if (e.offset < 0) return failf("SYNC_SYSMEM: entry {}: negative offset {}", i, e.offset);
        if (e.size == 0) return failf("SYNC_SYSMEM: entry {}: size 0", i);
        if (e.gpa + e.size < e.gpa)
            return failf("SYNC_SYSMEM: entry {}: gpa {:#x} + size {:#x} wraps", i, e.gpa, e.size);
        s.entries.push_back(e);
    }
    return s;
}

Result<uint64_t> decode_ret(const Message& m) {
    if (m.cmd != Cmd::ret) return failf("expected RET, got {}", command_name(m.cmd));
    if (m.payload.empty()) return uint64_t{0};
    if (m.payload.size() != kRetSize) return failf("RET: size {} (must be 8)", m.payload.size());
    return get<uint64_t>(m.payload.data());
}

Result<void> send_message(int sock, Cmd cmd, std::span<const uint8_t> payload,
                          std::span<const int> fds) {
    if (payload.size() > kMaxPayload)
        return failf("{}: payload of {} bytes exceeds {}", command_name(cmd), payload.size(),
                     kMaxPayload);
    uint8_t head[kHeaderSize]{};
    put(&head[0], static_cast<int32_t>(cmd));
    put(&head[8], static_cast<uint64_t>(payload.size()));
    iovec iov[2] = {{head, kHeaderSize}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
    return hostdev::send_with_fds(sock, iov, payload.empty() ? 1 : 2, fds, kRecvFdRoom);
}

Result<void> send_raw(int sock, std::span<const uint8_t> bytes, std::span<const int> fds) {
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    return hostdev::send_with_fds(sock, &iov, 1, fds, kRecvFdRoom);
}

Result<Message> recv_message(int sock, const RecvOptions& options) {
    Message m;
    POTEMKIN_TRY(recv_message(sock, m, options));
    return m;
}

Result<void> recv_message(int sock, Message& m, const RecvOptions& options) {
    m.payload.clear();
    m.fds.clear();
    // The header, and room for read_ahead payload bytes received in the same recvmsg.
    uint8_t buf[kHeaderSize + kMaxPayload]{};
    const size_t want = kHeaderSize + std::min(options.read_ahead, kMaxPayload);
    alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * kRecvFdRoom)]{};
    msghdr msg{};
    iovec iov{buf, want};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    int flags = MSG_CMSG_CLOEXEC;
    if (options.readable) {
        flags |= MSG_DONTWAIT;
    } else if (!options.rcvtimeo && options.timeout_ms >= 0) {
        auto ready = hostdev::wait_readable(sock, options.timeout_ms);
        if (!ready) return fail(ready.error());
        if (!*ready) return fail("timed out waiting for a message", ETIMEDOUT);
        flags |= MSG_DONTWAIT;
    }
    POTEMKIN_TRY_ASSIGN(const size_t n, hostdev::recv_with_fds(sock, msg, flags, m.fds));
    if ((msg.msg_flags & MSG_CTRUNC) != 0)
        return proto_error(fmt::format("frame carries more than {} fds", kRecvFdRoom));
    size_t got = n;
    if (got < kHeaderSize) {
        POTEMKIN_TRY(hostdev::recv_exact(sock, std::span<uint8_t>(buf + got, kHeaderSize - got),
                                         options.timeout_ms, "header"));
        got = kHeaderSize;
    }
    m.cmd = static_cast<Cmd>(get<int32_t>(&buf[0]));
    const auto size = get<uint64_t>(&buf[8]);
    if (size > kMaxPayload)
        return proto_error(
            fmt::format("{}: size {} exceeds {}", command_name(m.cmd), size, kMaxPayload));
    // Read ahead past this frame's end: the caller broke read_ahead's promise.
    if (got > kHeaderSize + size)
        return proto_error(fmt::format("{}: {} bytes follow a frame of {}", command_name(m.cmd),
                                       got - kHeaderSize - size, kHeaderSize + size));
    m.payload.assign(buf + kHeaderSize, buf + got);
    m.payload.resize(size);
    const size_t have = got - kHeaderSize;
    if (size > have)
        POTEMKIN_TRY(hostdev::recv_exact(sock, std::span<uint8_t>(m.payload).subspan(have),
                                         options.timeout_ms, command_name(m.cmd) + " payload"));
    POTEMKIN_TRY(validate(m));
    return ok();
}

}  // namespace potemkin::mpqemu
