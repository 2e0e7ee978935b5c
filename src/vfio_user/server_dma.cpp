// VfioUserServer, DMA: the client's DMA_MAP/DMA_UNMAP build a sdk::GuestRam, and the model's DMA
// goes through it: memcpy for a range shared with an fd (mmap), pread/pwrite for FILE_IO, and
// DMA_READ/DMA_WRITE requests to the client, waited for on the same socket, for one shared
// without an fd.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>

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
    if (auto r = dma_.add(share, has_fd ? std::move(msg.fds[0]) : UniqueFd()); !r)
        return fail(r.error().context("DMA_MAP").message, EINVAL);
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
        return invalid("DMA_UNMAP: no mapping [{:#x}, +{:#x})", u->addr, u->size);
    }
    DmaUnmap echo = *u;
    echo.argsz = kDmaUnmapSize;
    auto payload = encode_dma_unmap(echo);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::dma(uint64_t iova, std::span<uint8_t> buf, bool write) {
    return dma_.access(Gpa(iova), buf, write, [this](Gpa at, std::span<uint8_t> piece, bool w) {
        return dma_message(at.value, piece, w);
    });
}

Result<void> VfioUserServer::dma_message(uint64_t iova, std::span<uint8_t> buf, bool write) {
    if (conn_ == nullptr || conn_->close)
        return failf("DMA at {:#x}: by message, but no client is connected", iova);
    Connection& conn = *conn_;
    const uint32_t max = std::max<uint32_t>(conn.client.max_data_xfer_size, 1);
    const auto cmd = write ? Command::dma_write : Command::dma_read;
    RecvOptions ropt;
    ropt.max_size = kHeaderSize + kDmaAccessSize + max;
    ropt.max_fds = 0;
    ropt.timeout_ms = settings_.io_timeout_ms;
    for (size_t done = 0; done < buf.size();) {
        const size_t n = std::min<size_t>(buf.size() - done, max);
        auto piece = buf.subspan(done, n);
        const uint64_t addr = iova + done;
        Header h;
        h.msg_id = next_msg_id_++;
        h.cmd = static_cast<uint16_t>(cmd);
        auto head = encode_dma_access(addr, n);
        std::span<const uint8_t> parts[2] = {bytes_of(head), write ? piece : std::span<uint8_t>()};
        if (auto s = send_message(conn.fd.get(), h, parts); !s) {
            conn.close = true;
            return fail(s.error().context(command_name(cmd)));
        }
        // The handler's request is conn.rx: the reply goes elsewhere.
        auto r = std::make_unique<Message>();
        if (auto got = conn.reader.next(conn.fd.get(), *r, ropt); !got) {
            conn.close = true;
            return fail(got.error().context(fmt::format("{} reply", command_name(cmd))));
        }
        if (!r->header.is_reply()) {
            // The client sent a command while it owed us a reply: we cannot interleave.
            conn.close = true;
            return failf("{}: the client sent {} instead of the reply", command_name(cmd),
                         command_name(r->header.cmd));
        }
        h.msg_size = kHeaderSize + static_cast<uint32_t>(head.size());
        POTEMKIN_TRY(check_reply(h, r->header));
        auto a = decode_dma_access(cmd, true, r->payload, max);
        if (!a) return fail(a.error());
        if (a->addr != addr || a->count != n)
            return failf("{} reply: addr {:#x} count {} do not match the request ({:#x}, {})",
                         command_name(cmd), a->addr, a->count, addr, n);
        if (!write) std::memcpy(piece.data(), a->data.data(), n);
        done += n;
    }
    return ok();
}

}  // namespace potemkin::vfio_user
