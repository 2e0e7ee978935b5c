// VfioUserServer, the device and its regions: DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with the
// fd of a mappable BAR), DEVICE_GET_REGION_IO_FDS (the model's doorbells as ioeventfds),
// REGION_READ/REGION_WRITE forwarded to the ModelServer, and DEVICE_RESET.
#include <vector>

#include "vfio_user/server_internal.hpp"

namespace potemkin::vfio_user {

using server_detail::bytes_of;
using server_detail::invalid;
using server_detail::no_fds;

Result<void> VfioUserServer::handle_get_info(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto d = decode_device_info(msg.payload);
    if (!d) return fail(d.error());
    DeviceInfo out;
    out.flags = kDeviceFlagPci | kDeviceFlagReset;
    out.num_regions = kPciNumRegions;
    out.num_irqs = kPciNumIrqs;
    auto payload = encode_device_info(out);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::handle_region_info(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto req = decode_region_info_request(msg.payload);
    if (!req) return fail(req.error());
    if (req->index >= kPciNumRegions)
        return invalid("DEVICE_GET_REGION_INFO: region {} does not exist ({} regions)", req->index,
                       kPciNumRegions);
    RegionInfo out;
    out.index = req->index;
    int fd = -1;
    if (req->index < hostdev::kPciRegionCount) {
        auto info = server_->region_info(req->index);
        if (!info) return fail(info.error().message, EINVAL);
        out.size = info->size;
        if (info->size != 0) {
            if (info->readable) out.flags |= kRegionFlagRead;
            if (info->writable) out.flags |= kRegionFlagWrite;
        }
        // A mappable region (BarSpec::mappable: a memfd): MMAP, the sparse cap and the fd.
        if (info->fd >= 0 && conn.client.max_msg_fds >= 1) {
            out.flags |= kRegionFlagMmap;
            out.offset = info->fd_offset;
            std::vector<SparseArea> areas;
            for (const auto& a : info->mmap_areas) areas.push_back({a.offset, a.size});
            if (areas.empty()) areas.push_back({0, info->size});
            out.sparse_mmap = std::move(areas);
            fd = info->fd;
        }
    }
    bool fits = false;
    auto payload = encode_region_info_reply(out, req->argsz, &fits);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    int fds[1] = {fd};
    return reply(conn, msg, parts,
                 fits && fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
}

// The model's doorbells in this region (DeviceSpec::doorbells) as ioeventfds: one entry and one
// fd each, DATAMATCH when the doorbell has a value, PIO for an I/O BAR (what a KVM-based client
// registers). The fds go only with a reply that holds every entry (spec §8) and only to a client
// that takes that many fds; otherwise the client gets the count alone and writes stay messages.
Result<void> VfioUserServer::handle_region_io_fds(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto req = decode_region_io_fds_request(msg.payload);
    if (!req) return fail(req.error());
    if (req->index >= kPciNumRegions)
        return invalid("DEVICE_GET_REGION_IO_FDS: region {} does not exist ({} regions)",
                       req->index, kPciNumRegions);
    std::vector<SubRegionIoFd> entries;
    std::vector<int> fds;
    const auto& spec = server_->spec();
    for (size_t i = 0; i < spec.doorbells.size() && i < doorbells_.size(); ++i) {
        const auto& d = spec.doorbells[i];
        if (static_cast<uint32_t>(d.bar) != req->index) continue;
        SubRegionIoFd e;
        e.offset = d.offset;
        e.size = d.size;
        e.fd_index = static_cast<uint32_t>(fds.size());
        e.type = kIoFdTypeIoeventfd;
        if (d.datamatch) {
            e.flags |= kIoeventfdFlagDatamatch;
            e.datamatch = *d.datamatch;
        }
        if (spec.bars[static_cast<size_t>(d.bar)]->kind == pci::BarKind::io)
            e.flags |= kIoeventfdFlagPio;
        entries.push_back(e);
        fds.push_back(doorbells_.fd(i));
    }
    if (fds.size() > conn.client.max_msg_fds) {
        entries.clear();
        fds.clear();
    }
    bool fits = false;
    auto payload = encode_region_io_fds_reply(req->index, entries, req->argsz, &fits);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    const bool send_fds = fits && !fds.empty();
    if (send_fds) doorbells_.mark_handed_out();
    return reply(conn, msg, parts, send_fds ? std::span<const int>(fds) : std::span<const int>());
}

Result<void> VfioUserServer::check_region_access(const char* name, uint32_t region, uint64_t offset,
                                                 uint64_t count) const {
    if (region >= kPciNumRegions)
        return invalid("{}: region {} does not exist ({} regions)", name, region, kPciNumRegions);
    const uint64_t size = region_size_[region];
    if (offset > size || count > size - offset)
        return invalid("{}: offset {:#x} count {} runs past the end of region {} ({:#x} bytes)",
                       name, offset, count, region, size);
    return ok();
}

Result<void> VfioUserServer::handle_region_access(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    const auto cmd = static_cast<Command>(msg.header.cmd);
    const bool write = cmd == Command::region_write;
    auto a = decode_region_access_view(cmd, false, msg.payload, kDefaultMaxDataXferSize);
    if (!a) return fail(a.error());
    POTEMKIN_TRY(check_region_access(write ? "REGION_WRITE" : "REGION_READ", a->region, a->offset,
                                     a->count));
    if (a->count == 0) return reply(conn, msg);
    const auto head = encode_region_access_head(a->offset, a->region, a->count);
    if (write) {
        auto r = server_->region_write(a->region, a->offset, a->data);
        if (!r) return fail(r.error().message, EINVAL);
        std::span<const uint8_t> parts[1] = {head};
        return reply(conn, msg, parts);
    }
    // Reused across requests: the per-access path allocates nothing once it has grown.
    if (scratch_.size() < a->count) scratch_.resize(a->count);
    auto data = std::span<uint8_t>(scratch_.data(), a->count);
    auto r = server_->region_read(a->region, a->offset, data);
    if (!r) return fail(r.error().message, EINVAL);
    std::span<const uint8_t> parts[2] = {head, data};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::handle_reset(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    if (!msg.payload.empty())
        return invalid("DEVICE_RESET: {} unexpected payload bytes", msg.payload.size());
    server_->reset();
    // The device is back in INTx mode with MSI/MSI-X off, so their eventfds go too (the client
    // installs them again when the guest re-enables MSI); INTx's stay.
    for (uint32_t i : {kIrqIndexMsi, kIrqIndexMsix}) {
        for (auto& fd : irq_fds_[i]) fd.reset();
        irq_masked_[i].assign(irq_masked_[i].size(), false);
        irq_pending_[i].assign(irq_pending_[i].size(), false);
    }
    if (!irq_masked_[kIrqIndexIntx].empty()) irq_masked_[kIrqIndexIntx][0] = false;
    return reply(conn, msg);
}

}  // namespace potemkin::vfio_user
