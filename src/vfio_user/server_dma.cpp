// VfioUserServer, DMA: the client's DMA_MAP/DMA_UNMAP build a sdk::GuestRam, and the model's DMA
// goes through it: memcpy for a range shared with an fd (mmap), pread/pwrite for FILE_IO, and
// DMA_READ/DMA_WRITE requests to the client for one shared without an fd: on the twin socket
// when negotiated, else on the request socket; while waiting for a reply the client's requests
// are served (docs/vfio-user.md, "DMA"); those messages in the layout chosen at VERSION (spec
// or QEMU's, "DMA message layouts").
#include <fmt/format.h>

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "common/log.hpp"
#include "vfio_user/server_internal.hpp"

namespace potemkin::vfio_user {

using server_detail::bytes_of;
using server_detail::invalid;
using server_detail::no_fds;

Result<void> VfioUserServer::handle_dma_map(Connection& conn, Message& msg) {
    auto m = decode_dma_map(msg.payload);
    if (!m) return fail(m.error());
    if (msg.fds.size() > 1) return invalid("DMA_MAP: carries {} fds, takes 0 or 1", msg.fds.size());
    const bool has_fd = msg.fds.size() == 1;
    if (!has_fd && (m->flags & (kDmaMapFlagMmap | kDmaMapFlagFileIo)) != 0)
        return invalid("DMA_MAP: flags {:#x} ask for MMAP or FILE_IO but no fd came", m->flags);
    if ((m->flags & kDmaMapFlagMmap) != 0 && (m->flags & kDmaMapFlagFileIo) != 0)
        return invalid("DMA_MAP: flags {:#x} ask for both MMAP and FILE_IO", m->flags);

    sdk::GuestRam::Share share;
    share.base = Gpa(m->addr);
    share.size = m->size;
    share.fd_offset = m->offset;
    share.readable = (m->flags & kDmaMapFlagRead) != 0;
    share.writable = (m->flags & kDmaMapFlagWrite) != 0;
    share.backing = !has_fd                               ? sdk::GuestRam::Backing::message
                    : (m->flags & kDmaMapFlagFileIo) != 0 ? sdk::GuestRam::Backing::file_io
                                                          : sdk::GuestRam::Backing::mmap;
    // An identical mapping again (same range, offset, file, rights) is ok and changes nothing.
    // Over an existing mapping: EEXIST, as the spec says (libvfio-user answers EINVAL).
    if (auto r = dma_.add(share, has_fd ? std::move(msg.fds[0]) : UniqueFd()); !r)
        return fail(r.error().context("DMA_MAP").message,
                    r.error().sys_errno == EEXIST ? EEXIST : EINVAL);
    log::debug("{}: DMA_MAP [{:#x}, +{:#x}) flags {:#x} {}", settings_.label, m->addr, m->size,
               m->flags,
               !has_fd                               ? "by message"
               : (m->flags & kDmaMapFlagFileIo) != 0 ? "file io"
                                                     : "mmap");
    return reply(conn, msg);
}

Result<void> VfioUserServer::handle_dma_unmap(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto u = decode_dma_unmap(msg.payload);
    if (!u) return fail(u.error());
    if ((u->flags & kDmaUnmapFlagGetDirtyBitmap) != 0)
        return invalid("DMA_UNMAP: GET_DIRTY_BITMAP is not supported (no dirty logging)");
    if ((u->flags & kDmaUnmapFlagAll) != 0) {
        dma_.clear();
    } else if (!dma_.remove(Gpa(u->addr), u->size)) {
        // The spec: the range must match a mapping exactly; ENOENT as libvfio-user answers.
        return fail(
            fmt::format("DMA_UNMAP: no mapping is exactly [{:#x}, +{:#x})", u->addr, u->size),
            ENOENT);
    }
    DmaUnmap echo = *u;
    echo.argsz = kDmaUnmapSize;
    auto payload = encode_dma_unmap(echo);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::dma(uint64_t iova, std::span<uint8_t> buf, bool write) {
    // Pieces reached by message are collected and sent after the table walk: while we wait
    // for their replies the client's requests are served, and a DMA_MAP/DMA_UNMAP among them
    // changes the table the walk runs over.
    struct Piece {
        uint64_t at;
        std::span<uint8_t> data;
    };
    std::vector<Piece> by_message;
    POTEMKIN_TRY(dma_.access(Gpa(iova), buf, write, [&](Gpa at, std::span<uint8_t> piece, bool) {
        by_message.push_back({at.value, piece});
        return ok();
    }));
    for (const Piece& p : by_message) POTEMKIN_TRY(dma_message(p.at, p.data, write));
    return ok();
}

Result<void> VfioUserServer::dma_message(uint64_t iova, std::span<uint8_t> buf, bool write) {
    const auto cmd = write ? Command::dma_write : Command::dma_read;
    if (conn_ == nullptr || conn_->close)
        return failf("{} at {:#x}: by message, but no client is connected", command_name(cmd),
                     iova);
    Connection& conn = *conn_;
    if (awaiting_dma_reply_) {
        // A request served while a DMA waits did DMA itself: a second wait inside the first.
        // Deferred work never gets here (it runs at top level).
        return fail(fmt::format("{} at {:#x}: by message while another DMA waits for its reply "
                                "(start DMA from deferred work: DeviceServices::defer)",
                                command_name(cmd), iova),
                    EBUSY);
    }
    if (!server_->running_deferred() && !conn.warned_dma_in_request) {
        conn.warned_dma_in_request = true;
        log::warn(
            "{}: the model sends {} inside the client's request (not from deferred work); "
            "QEMU answers DMA only after that request's reply and deadlocks. Models "
            "should start DMA with DeviceServices::defer (logged once per connection)",
            settings_.label, command_name(cmd));
    }
    // At most 1 MiB a message, so that a reply fits what the request socket accepts.
    const uint32_t max =
        std::clamp<uint32_t>(conn.client.max_data_xfer_size, 1, kDefaultMaxDataXferSize);
    const int fd = conn.twin ? conn.twin.get() : conn.fd.get();
    Message r;
    for (size_t done = 0; done < buf.size();) {
        const size_t n = std::min<size_t>(buf.size() - done, max);
        auto piece = buf.subspan(done, n);
        const uint64_t addr = iova + done;
        Header h;
        h.msg_id = next_msg_id_++;
        h.cmd = static_cast<uint16_t>(cmd);
        const DmaFrame frame = encode_dma_frame(conn.dma_layout, addr, static_cast<uint32_t>(n));
        std::span<const uint8_t> parts[3] = {frame.head(), write ? piece : std::span<uint8_t>(),
                                             frame.tail()};
        if (auto s = send_message(fd, h, parts); !s) {
            conn.close = true;
            return fail(s.error().context(command_name(cmd)));
        }
        h.msg_size = kHeaderSize + kDmaAccessSize;
        POTEMKIN_TRY(await_dma_reply(conn, h, r));
        POTEMKIN_TRY(check_reply(h, r.header));
        done += n;
        // QEMU (10.2, hw/vfio-user/pci.c) answers DMA_WRITE with the bare header; the spec
        // echoes addr and count. Both mean done.
        if (write && r.payload.empty()) continue;
        auto a = decode_dma_access(conn.dma_layout, cmd, true, r.payload, max);
        if (!a) return fail(a.error());
        if (a->addr != addr || a->count != n)
            return failf("{} reply: addr {:#x} count {} do not match the request ({:#x}, {})",
                         command_name(cmd), a->addr, a->count, addr, n);
        if (!write) std::memcpy(piece.data(), a->data.data(), n);
    }
    return ok();
}

Result<void> VfioUserServer::await_dma_reply(Connection& conn, const Header& request,
                                             Message& out) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(settings_.io_timeout_ms);
    const char* what = conn.twin ? "on the twin socket" : "on the request socket";
    awaiting_dma_reply_ = true;
    // A REGION_READ served now must not reuse the buffer of a REGION_READ whose model call
    // is the one waiting (a model doing DMA inside a read): it gets a buffer of its own.
    std::vector<uint8_t> outer_scratch;
    std::swap(outer_scratch, scratch_);
    auto result = [&]() -> Result<void> {
        while (true) {
            if (conn.close) return failf("{}: the connection closed", command_name(request.cmd));
            // What is buffered first, then whichever socket has data.
            bool twin_ready = conn.twin && conn.twin_reader.has_message();
            bool main_ready = conn.reader.has_message();
            if (!twin_ready && !main_ready) {
                const auto left =
                    std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
                if (left.count() <= 0) {
                    conn.close = true;
                    return fail(fmt::format("{} (msg_id {}): no reply {} within {} ms",
                                            command_name(request.cmd), request.msg_id, what,
                                            settings_.io_timeout_ms),
                                ETIMEDOUT);
                }
                pollfd p[2] = {{conn.fd.get(), POLLIN, 0}, {conn.twin.get(), POLLIN, 0}};
                const int n = ::poll(p, conn.twin ? 2 : 1, static_cast<int>(left.count()));
                if (n < 0) {
                    if (errno == EINTR) continue;
                    conn.close = true;
                    return failf(Errno{errno}, "{}: poll", command_name(request.cmd));
                }
                main_ready = p[0].revents != 0;
                twin_ready = conn.twin && p[1].revents != 0;
            }
            // Our replies come on the twin socket when there is one, else among the requests.
            const bool from_twin = twin_ready;
            if (!from_twin && !main_ready) continue;
            RecvOptions o;
            o.timeout_ms = settings_.io_timeout_ms;
            o.readable = true;
            o.max_fds = from_twin ? 0 : kMaxMsgFdsLimit;
            MessageReader& reader = from_twin ? conn.twin_reader : conn.reader;
            const int fd = from_twin ? conn.twin.get() : conn.fd.get();
            if (auto got = reader.next(fd, out, o); !got) {
                conn.close = true;
                return fail(got.error().context(
                    fmt::format("{} (msg_id {}): waiting for the reply "
                                "{}",
                                command_name(request.cmd), request.msg_id, what)));
            }
            if (out.header.is_reply()) return ok();  // check_reply judges it
            if (from_twin) {
                conn.close = true;
                return failf(
                    "{} (msg_id {}): the client sent {} on the twin socket, which "
                    "carries only our requests and their replies",
                    command_name(request.cmd), request.msg_id, command_name(out.header.cmd));
            }
            // A request while the device does DMA: answered, as hardware answers a register
            // read during DMA. Its deferred work runs later, at top level.
            serve_request(conn, out);
        }
    }();
    std::swap(outer_scratch, scratch_);
    awaiting_dma_reply_ = false;
    return result;
}

}  // namespace potemkin::vfio_user
