#include "vfio_user/socket.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace potemkin::vfio_user {

using hostdev::recv_exact;
using hostdev::sys_error;

Result<void> send_message(int sock, Header header,
                          std::span<const std::span<const uint8_t>> payload,
                          std::span<const int> fds) {
    size_t size = kHeaderSize;
    for (const auto& part : payload) size += part.size();
    if (size > UINT32_MAX) return failf("{}: message of {} bytes", command_name(header.cmd), size);
    header.msg_size = static_cast<uint32_t>(size);
    auto bytes = encode_header(header);
    // The iovecs on the stack for the usual few parts: this is every request's path.
    constexpr size_t kSmall = 8;
    iovec small[kSmall];
    std::vector<iovec> large;
    iovec* iov = small;
    if (payload.size() + 1 > kSmall) {
        large.resize(payload.size() + 1);
        iov = large.data();
    }
    size_t n = 0;
    iov[n++] = {bytes.data(), bytes.size()};
    for (const auto& part : payload)
        if (!part.empty()) iov[n++] = {const_cast<uint8_t*>(part.data()), part.size()};
    return hostdev::send_with_fds(sock, iov, n, fds, kMaxMsgFdsLimit);
}

Result<void> send_raw(int sock, std::span<const uint8_t> bytes, std::span<const int> fds) {
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    return hostdev::send_with_fds(sock, &iov, 1, fds, kMaxMsgFdsLimit);
}

Result<Message> recv_message(int sock, const RecvOptions& options) {
    Message m;
    std::array<uint8_t, kHeaderSize> head{};
    // Reused per thread: the hot path (a REGION_READ round trip) should not allocate for it.
    thread_local std::vector<cmsghdr> control;
    if (options.max_fds > 0) {
        const size_t words = hostdev::cmsg_words(options.max_fds);
        if (control.size() < words) control.resize(words);
    }
    msghdr msg{};
    iovec iov{head.data(), head.size()};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (options.max_fds > 0) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * options.max_fds);
    }
    int flags = MSG_CMSG_CLOEXEC;
    if (options.readable) {
        flags |= MSG_DONTWAIT;
    } else if (!options.rcvtimeo) {
        auto ready = hostdev::wait_readable(sock, options.timeout_ms);
        if (!ready) return fail(ready.error());
        if (!*ready) return fail("timed out waiting for a message", ETIMEDOUT);
    }
    POTEMKIN_TRY_ASSIGN(const size_t n, hostdev::recv_with_fds(sock, msg, flags, m.fds));
    // CMSG_SPACE rounds up, so the kernel may fit an fd more than asked for: count too.
    if ((msg.msg_flags & MSG_CTRUNC) != 0 || m.fds.size() > options.max_fds)
        return fail(fmt::format("message carries more than {} fds (control data truncated)",
                                options.max_fds),
                    EPROTO);
    if (n < kHeaderSize) {
        // A stream may split the header; the rest must follow promptly.
        POTEMKIN_TRY(hostdev::recv_exact(sock, std::span<uint8_t>(head).subspan(n),
                                         options.timeout_ms < 0 ? -1 : options.timeout_ms,
                                         "header"));
    }
    m.header = decode_header(head);
    POTEMKIN_TRY(check_framing(m.header, options.max_size));
    m.payload.resize(m.header.payload_size());
    if (!m.payload.empty())
        POTEMKIN_TRY(hostdev::recv_exact(sock, m.payload, options.timeout_ms,
                                         command_name(m.header.cmd) + " body"));
    return m;
}

}  // namespace potemkin::vfio_user

namespace potemkin::vfio_user {

// ---- MessageReader -----------------------------------------------------------------------------

namespace {

// Room for a typical message and then some: a REGION_READ reply, a batch of DMA requests.
constexpr size_t kReaderBuffer = 64 * 1024;

uint32_t buffered_size(const uint8_t* header) {
    uint32_t size;
    std::memcpy(&size, header + 4, 4);
    return size;
}

}  // namespace

void MessageReader::reset() {
    head_ = tail_ = 0;
    pos_ = 0;
    fds_.clear();
}

bool MessageReader::has_message() const {
    if (tail_ - head_ < kHeaderSize) return false;
    const uint32_t size = buffered_size(buf_.data() + head_);
    return size < kHeaderSize || tail_ - head_ >= size;
}

Result<bool> MessageReader::take(Message& out, const RecvOptions& options) {
    if (tail_ - head_ < kHeaderSize) return false;
    const Header h =
        decode_header(std::span<const uint8_t, kHeaderSize>(buf_.data() + head_, kHeaderSize));
    POTEMKIN_TRY(check_framing(h, options.max_size));
    if (tail_ - head_ < h.msg_size) return false;
    out.header = h;
    out.payload.assign(buf_.begin() + static_cast<ptrdiff_t>(head_ + kHeaderSize),
                       buf_.begin() + static_cast<ptrdiff_t>(head_ + h.msg_size));
    out.fds.clear();
    const uint64_t end = pos_ + h.msg_size;
    size_t batches = 0;
    for (; batches < fds_.size() && fds_[batches].end <= end; ++batches)
        for (auto& fd : fds_[batches].fds) out.fds.push_back(std::move(fd));
    fds_.erase(fds_.begin(), fds_.begin() + static_cast<ptrdiff_t>(batches));
    head_ += h.msg_size;
    pos_ += h.msg_size;
    if (head_ == tail_) head_ = tail_ = 0;
    if (out.fds.size() > options.max_fds)
        return fail(fmt::format("{} carries {} fds, more than {}", command_name(h.cmd),
                                out.fds.size(), options.max_fds),
                    EPROTO);
    return true;
}

Result<void> MessageReader::fill(int sock, int flags, size_t want, uint32_t max_fds) {
    // The message being assembled must fit from head_ on, and a read should have room.
    const size_t free_wanted = std::max<size_t>(want - (tail_ - head_), 4096);
    if (head_ > 0 && buf_.size() - tail_ < free_wanted) {
        std::memmove(buf_.data(), buf_.data() + head_, tail_ - head_);
        tail_ -= head_;
        head_ = 0;
    }
    if (buf_.size() < std::max(want, kReaderBuffer)) buf_.resize(std::max(want, kReaderBuffer));

    // Reused per thread: the hot path should not allocate for it.
    thread_local std::vector<cmsghdr> control;
    if (max_fds > 0) {
        const size_t words = hostdev::cmsg_words(max_fds);
        if (control.size() < words) control.resize(words);
    }
    msghdr msg{};
    iovec iov{buf_.data() + tail_, buf_.size() - tail_};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (max_fds > 0) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
    }
    std::vector<UniqueFd> fds;
    auto received = hostdev::recv_with_fds(sock, msg, flags | MSG_CMSG_CLOEXEC, fds);
    if (!received) {
        const int e = received.error().sys_errno;
        if (e == ETIMEDOUT) return fail("nothing to read", ETIMEDOUT);
        if (e == ECONNRESET && tail_ != head_)
            return fail(fmt::format("peer closed after {} of {} bytes", tail_ - head_, want),
                        ECONNRESET);
        return fail(received.error());
    }
    const size_t n = *received;
    // CMSG_SPACE rounds up, so the kernel may fit an fd more than asked for: count too.
    if ((msg.msg_flags & MSG_CTRUNC) != 0 || fds.size() > max_fds)
        return fail(
            fmt::format("message carries more than {} fds (control data truncated)", max_fds),
            EPROTO);
    tail_ += n;
    if (!fds.empty()) fds_.push_back({pos_ + (tail_ - head_), std::move(fds)});
    return ok();
}

Result<void> MessageReader::next(int sock, Message& out, const RecvOptions& options) {
    for (;;) {
        auto taken = take(out, options);
        if (!taken) return fail(taken.error());
        if (*taken) return ok();
        const size_t have = tail_ - head_;
        const size_t want = have >= kHeaderSize ? buffered_size(buf_.data() + head_) : kHeaderSize;
        if (have == 0) {
            // Nothing of the next message yet.
            int flags = MSG_DONTWAIT;
            if (options.rcvtimeo) {
                flags = 0;
            } else if (!options.readable) {
                auto ready = hostdev::wait_readable(sock, options.timeout_ms);
                if (!ready) return fail(ready.error());
                if (!*ready) return fail("timed out waiting for a message", ETIMEDOUT);
            }
            if (auto r = fill(sock, flags, want, options.max_fds); !r) {
                if (r.error().sys_errno == ETIMEDOUT)
                    return fail("timed out waiting for a message", ETIMEDOUT);
                return fail(r.error());
            }
            continue;
        }
        // The rest of a message whose first bytes are here: the sender wrote it at once, so
        // it normally is queued already.
        const std::string_view what = have >= kHeaderSize ? "message" : "header";
        auto r = fill(sock, options.rcvtimeo ? 0 : MSG_DONTWAIT, want, options.max_fds);
        if (r) continue;
        if (r.error().sys_errno != ETIMEDOUT) return fail(r.error().context(what));
        if (!options.rcvtimeo) {
            auto ready = hostdev::wait_readable(sock, options.timeout_ms);
            if (!ready) return fail(ready.error());
            if (*ready) continue;
        }
        return fail(fmt::format("{}: timed out after {} of {} bytes", what, have, want), ETIMEDOUT);
    }
}

}  // namespace potemkin::vfio_user
