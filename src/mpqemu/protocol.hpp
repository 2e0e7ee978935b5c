// QEMU's multi-process protocol ("mpqemu", QEMU 7.2 hw/remote/mpqemu-link.h), as measured
// against Debian 12's QEMU (../shared/protocols/mpqemu.md). Used by the client transport
// (potemkin is the front-end, QEMU's `-machine x-remote` hosts the device) and by the device
// server (QEMU's `x-pci-proxy-dev` is the front-end, potemkin hosts the device).
//
// Wire format: host byte order, native x86-64 layout, no magic, version or message id.
//   offset 0  int32  cmd
//   offset 4  4 bytes padding (zeros sent, ignored)
//   offset 8  uint64 size of the payload that follows (0..192)
//   offset 16 payload: the first `size` bytes of the 192-byte data union
// File descriptors ride as one SCM_RIGHTS message on the sendmsg that carries the header.
// Strictly synchronous: the proxy has at most one request outstanding; SYNC_SYSMEM and
// SET_IRQFD get no reply, every other request gets a RET.
//
// The decoders validate exactly what QEMU's mpqemu_msg_valid() does (a peer that passes
// them is accepted by QEMU and vice versa) and name the offending field.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace potemkin::mpqemu {

enum class Cmd : int32_t {
    sync_sysmem = 0,
    ret = 1,
    pci_cfgwrite = 2,
    pci_cfgread = 3,
    bar_write = 4,
    bar_read = 5,
    set_irqfd = 6,
    device_reset = 7,
};
inline constexpr int32_t kCmdMax = 8;
std::string command_name(Cmd cmd);

inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kMaxPayload = 192;  // sizeof the data union
// The sender allows 8, the receiver rejects num_fds >= 8: 7 at most on the wire.
inline constexpr size_t kMaxFds = 7;
// How many SCM_RIGHTS fds a receiver makes room for (QEMU's SOCKET_MAX_FDS); more is framing
// garbage.
inline constexpr size_t kRecvFdRoom = 16;
inline constexpr size_t kSysmemEntries = 8;
inline constexpr uint32_t kConventionalConfigSize = 256;

inline constexpr size_t kConfDataSize = 12;   // PciConfDataMsg
inline constexpr size_t kBarAccessSize = 24;  // BarAccessMsg
inline constexpr size_t kSyncSysmemSize = 192;
inline constexpr size_t kRetSize = 8;

struct ConfData {  // PCI_CFGREAD / PCI_CFGWRITE
    uint32_t addr = 0;
    uint32_t val = 0;
    int32_t len = 0;  // 1, 2 or 4
};
struct BarAccess {      // BAR_READ / BAR_WRITE
    uint64_t addr = 0;  // absolute: guest-physical address or I/O port, not a BAR offset
    uint64_t val = 0;
    uint32_t size = 0;  // 1, 2, 4 or 8
    bool memory = true;
};
struct SysmemEntry {
    uint64_t gpa = 0;
    uint64_t size = 0;
    int64_t offset = 0;  // into the fd
};
struct SyncSysmem {
    std::vector<SysmemEntry> entries;  // entry i describes fds[i]
};

std::array<uint8_t, kConfDataSize> encode_conf(const ConfData& c);
std::array<uint8_t, kBarAccessSize> encode_bar(const BarAccess& b);
std::array<uint8_t, kSyncSysmemSize> encode_sysmem(const SyncSysmem& s);
std::array<uint8_t, kRetSize> encode_ret(uint64_t value);

struct Message {
    Cmd cmd = Cmd::ret;
    std::vector<uint8_t> payload;  // `size` bytes
    std::vector<UniqueFd> fds;
};

// Field checks of mpqemu_msg_valid(): cmd range, fd count, and per command the payload size
// and fd count. Errors name the command and the field.
Result<void> validate(const Message& m);

// Decoders of a validated message's payload; they check the values a device must not trust
// (len 1/2/4, size a power of two up to 8).
Result<ConfData> decode_conf(const Message& m);
Result<BarAccess> decode_bar(const Message& m);
Result<SyncSysmem> decode_sysmem(const Message& m);
// RET's value; an empty RET (QEMU's DEVICE_RESET reply) reads as 0.
Result<uint64_t> decode_ret(const Message& m);

// One sendmsg with the header, payload and fds; MSG_NOSIGNAL (a dead peer is ECONNRESET/EPIPE
// as an error, never SIGPIPE).
Result<void> send_message(int sock, Cmd cmd, std::span<const uint8_t> payload = {},
                          std::span<const int> fds = {});
// Raw bytes (nothing checked) with fds: for tests that send malformed frames.
Result<void> send_raw(int sock, std::span<const uint8_t> bytes, std::span<const int> fds = {});

struct RecvOptions {
    int timeout_ms = -1;  // for the header and then for each piece of the payload; -1 forever
    // The caller just saw the socket readable (poll/epoll): no poll before the header.
    bool readable = false;
    // The socket has SO_RCVTIMEO set to about timeout_ms: block in recvmsg instead of polling
    // first (one system call instead of two); its expiry is ETIMEDOUT.
    bool rcvtimeo = false;
    // Payload bytes that may be read together with the header. Only safe when nothing can
    // follow this frame before the caller's next request: a RET (the remote sends nothing
    // unasked and the proxy has one request outstanding). Then a reply costs one recvmsg.
    size_t read_ahead = 0;
};
// Receives one frame and validates it. Errors carry sys_errno: ECONNRESET when the peer closed,
// ETIMEDOUT on timeout, EPROTO for a frame that breaks the rules (size > 192, too many fds,
// a field mpqemu_msg_valid rejects); after any of them the stream cannot be trusted.
Result<Message> recv_message(int sock, const RecvOptions& options = {});
// The same into `out`, whose vectors keep their capacity: a reused Message costs no allocation
// (the client's per-access reply).
Result<void> recv_message(int sock, Message& out, const RecvOptions& options = {});

}  // namespace potemkin::mpqemu
