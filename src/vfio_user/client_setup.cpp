// What a fresh vfio-user connection needs, in the order the protocol wants: VERSION first, then
// the device's shape, guest RAM (DMA maps), the interrupt eventfds, and (after a reconnect) the
// config writes the guest made, which a new server process would otherwise not know.
#include <algorithm>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "vfio_user/client_impl.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::vfio_user {

namespace {

// MSI-X allows 2048 vectors: the most eventfds one interrupt kind can need.
constexpr uint32_t kMaxVectors = 2048;

}  // namespace

Result<void> VfioUserClient::Impl::setup(UniqueFd sock, bool first) {
    std::lock_guard lk(io_mu_);
    sock_ = std::move(sock);
    reader_.reset();
    ++generation_;
    link_.set_up();
    in_setup_ = true;
    auto r = setup_locked(first);
    if (!r)
        lose_locked(r.error().message, false);  // the caller reports the failure, once
    else {
        watch_fd_ = sock_.get();
        twin_watch_fd_ = twin_ ? twin_.get() : -1;
    }
    in_setup_ = false;
    link_.wake();  // the poll thread watches the new sockets
    return r;
}

Result<void> VfioUserClient::Impl::setup_locked(bool first) {
    POTEMKIN_TRY(negotiate_locked());
    POTEMKIN_TRY_ASSIGN(const Reply di,
                        request_locked(Command::device_get_info, encode_device_info(DeviceInfo{}),
                                       {}, "DEVICE_GET_INFO"));
    auto d = decode_device_info(di.payload);
    if (!d) return fail(d.error().context(fmt::format("{}: DEVICE_GET_INFO", s_.label)));
    if ((d->flags & kDeviceFlagPci) == 0)
        return failf("{}: the server's device is not a PCI device (DEVICE_GET_INFO flags {:#x})",
                     s_.label, d->flags);
    if (d->num_regions <= hostdev::kConfigRegion)
        return failf("{}: the device has {} regions; a PCI device needs config space (region 7)",
                     s_.label, d->num_regions);
    if (!first && (d->num_regions != device_.num_regions || d->num_irqs != device_.num_irqs))
        log::warn("{}: the new server's device has {} regions and {} irqs (was {} and {})",
                  s_.label, d->num_regions, d->num_irqs, device_.num_regions, device_.num_irqs);
    device_ = *d;
    POTEMKIN_TRY(map_dma_locked());
    POTEMKIN_TRY(query_irqs_locked());
    POTEMKIN_TRY(query_bars_locked());
    // With the fast path, writes go through its queue (cheaper than an eventfd write, and in
    // order with everything else): no ioeventfds.
    if (s_.ioeventfds && !fast_) POTEMKIN_TRY(query_ioeventfds_locked());
    POTEMKIN_TRY(apply_irqs_locked());
    if (!first) POTEMKIN_TRY(replay_config_locked());
    return ok();
}

Result<void> VfioUserClient::Impl::negotiate_locked() {
    Version v;
    v.caps.max_msg_fds = kOurMaxMsgFds;
    v.caps.max_data_xfer_size = kOurMaxDataXfer;
    v.caps.twin_socket_supported = s_.twin_socket;
    if (s_.fast_path) v.caps.fast_path_version = fast_path::kVersion;
    fast_.reset();
    POTEMKIN_TRY_ASSIGN(Reply r,
                        request_locked(Command::version, encode_version(v), {}, "VERSION"));
    auto peer = decode_version(r.payload);
    if (!peer) return fail(peer.error().context(fmt::format("{}: VERSION reply", s_.label)));
    if (auto c = check_version_compatible(*peer); !c)
        return fail(Error{fmt::format("{}: {}", s_.label, c.error().message), EPROTONOSUPPORT});
    VfioUserCaps caps;
    caps.major = peer->major;
    caps.minor = std::min(peer->minor, kMinor);
    caps.max_msg_fds = peer->caps.max_msg_fds;
    caps.max_data_xfer_size = std::min<uint64_t>(peer->caps.max_data_xfer_size, kOurMaxDataXfer);
    if (peer->caps.pgsizes) caps.pgsizes = *peer->caps.pgsizes;
    if (peer->caps.max_dma_maps) caps.max_dma_maps = *peer->caps.max_dma_maps;
    if (caps.max_data_xfer_size == 0)
        return failf("{}: the server's max_data_xfer_size is 0", s_.label);
    caps_ = caps;
    // A server that takes the twin socket sends one end with its reply and its own requests on
    // it from now on (libvfio-user does; spec §4, ../shared/protocols/vfio-user.md).
    if (s_.twin_socket && peer->caps.twin_socket_supported) {
        const auto index = peer->caps.twin_socket_fd_index;
        if (!index || *index >= r.fds.size())
            return failf("{}: the server agreed to a twin socket but sent no fd {} ({} fds came)",
                         s_.label, index ? *index : 0, r.fds.size());
        adopt_twin_locked(std::move(r.fds[*index]));
        log::debug("{}: the server's requests come on a twin socket", s_.label);
    }
    // Only what we offered: a server's fast-path answer to a client that did not ask is
    // ignored, as any unknown capability.
    if (s_.fast_path && peer->caps.fast_path_version == fast_path::kVersion &&
        peer->caps.fast_path_fd_index)
        adopt_fast_path_locked(r.fds, *peer->caps.fast_path_fd_index);
    return ok();
}

// Every BAR's size (a posted write gets no error reply, so the client checks the bounds itself)
// and whether it can be mapped into the guest (then writes are not posted: see mapped_region_).
Result<void> VfioUserClient::Impl::query_bars_locked() {
    region_sizes_ = {};
    bool mapped = false;
    for (uint32_t bar = 0; bar < hostdev::kRomRegion && bar < device_.num_regions; ++bar) {
        POTEMKIN_TRY_ASSIGN(const Reply r,
                            request_locked(Command::device_get_region_info,
                                           encode_region_info_request(bar, kRegionInfoSize), {},
                                           fmt::format("DEVICE_GET_REGION_INFO for BAR{}", bar)));
        auto d = decode_region_info_reply(r.payload);
        if (!d) return fail(d.error().context(fmt::format("{}: BAR{}", s_.label, bar)));
        region_sizes_[bar] = d->size;
        if (d->size != 0 && (d->flags & kRegionFlagMmap) != 0) {
            if (!mapped && s_.posted_writes)
                log::info("{}: BAR{} can be mapped into the guest: writes are not posted", s_.label,
                          bar);
            mapped = true;
        }
    }
    mapped_region_ = mapped;
    return ok();
}

// Every BAR's ioeventfds. A BAR whose request gets an error reply has none;
// entries of a kind this client cannot use (ioregionfd, unknown flags, sizes other than 0, 1,
// 2, 4, 8) are skipped: those writes stay messages. PIO only says the BAR is I/O space, which
// the region index says already.
Result<void> VfioUserClient::Impl::query_ioeventfds_locked() {
    ioeventfds_.clear();
    constexpr uint32_t kMaxEntries = 1024;  // more would be a server gone wrong
    for (uint32_t bar = 0; bar < hostdev::kRomRegion && bar < device_.num_regions; ++bar) {
        RegionIoFds q;
        q.argsz = kRegionIoFdsSize + 16 * kSubRegionIoFdSize;
        q.index = bar;
        RegionIoFdsReply got;
        std::vector<UniqueFd> fds;
        for (int attempt = 0; attempt < 2; ++attempt) {
            auto r = request_locked(Command::device_get_region_io_fds, encode_region_io_fds(q), {},
                                    fmt::format("DEVICE_GET_REGION_IO_FDS for BAR{}", bar));
            if (!r) {
                if (!link_.up()) return fail(r.error());
                // None for this BAR (libvfio-user refuses BARs it has not set up): its writes
                // are messages.
                log::debug("{}: no ioeventfds: {}", s_.label, r.error().message);
                got = {};
                fds.clear();
                break;
            }
            auto d = decode_region_io_fds_reply(r->payload);
            if (!d) {
                // Ioeventfds are an optimisation: a reply we cannot read costs only that.
                log::warn("{}: BAR{}: {}; no ioeventfds", s_.label, bar, d.error().message);
                ioeventfds_.clear();
                return ok();
            }
            got = std::move(*d);
            fds = std::move(r->fds);
            if (got.head.count == got.entries.size() || got.head.count > kMaxEntries) break;
            q.argsz = got.head.argsz;  // did not fit: ask again with room for all
        }
        std::vector<std::shared_ptr<UniqueFd>> shared(fds.size());
        for (size_t i = 0; i < fds.size(); ++i)
            shared[i] = std::make_shared<UniqueFd>(std::move(fds[i]));
        for (const auto& e : got.entries) {
            const bool usable =
                e.type == kIoFdTypeIoeventfd &&
                (e.flags & ~(kIoeventfdFlagDatamatch | kIoeventfdFlagPio)) == 0 &&
                (e.size == 0 || e.size == 1 || e.size == 2 || e.size == 4 || e.size == 8) &&
                e.fd_index < shared.size();
            if (!usable) {
                log::info("{}: BAR{} io fd at {:#x} (type {}, flags {:#x}, size {}) not used",
                          s_.label, bar, e.offset, e.type, e.flags, e.size);
                continue;
            }
            ioeventfds_.push_back(Ioeventfd{bar, e, shared[e.fd_index]});
        }
    }
    if (!ioeventfds_.empty())
        log::debug("{}: {} ioeventfds: matching guest writes skip the socket", s_.label,
                   ioeventfds_.size());
    return ok();
}

// Guest RAM goes to the server as the memfd itself (DMA_MAP with one fd per region): the server
// maps it and DMA never crosses the socket. Regions that cannot be passed that way (a server
// that takes no fds, page sizes that do not fit) are left to DMA_READ/DMA_WRITE messages.
Result<void> VfioUserClient::Impl::map_dma_locked() {
    dma_maps_.clear();
    if (s_.memory == nullptr) return ok();
    const auto& regions = s_.memory->regions();
    if (caps_.max_msg_fds == 0) {
        log::warn("{}: the server takes no fds: guest RAM is not shared, DMA goes by message",
                  s_.label);
        return ok();
    }
    if (regions.size() > caps_.max_dma_maps)
        return failf("{}: guest RAM has {} regions, the server maps at most {}", s_.label,
                     regions.size(), caps_.max_dma_maps);
    // The smallest page size the server accepts must divide every region's base and size.
    const uint64_t page = caps_.pgsizes == 0 ? 4096 : (caps_.pgsizes & (~caps_.pgsizes + 1));
    bool all = true;
    for (const auto& reg : regions) {
        if ((reg.base.value | reg.size | reg.fd_offset) % page != 0) {
            log::warn(
                "{}: RAM at {:#x}+{:#x} is not aligned to the server's {} byte pages: "
                "not mapped",
                s_.label, reg.base.value, reg.size, page);
            all = false;
            continue;
        }
        DmaMap m;
        m.flags = kDmaMapFlagRead | kDmaMapFlagWrite;
        m.offset = reg.fd_offset;
        m.addr = reg.base.value;
        m.size = reg.size;
        const int fd = s_.memory->fd();
        POTEMKIN_TRY(request_locked(Command::dma_map, encode_dma_map(m), std::span(&fd, 1),
                                    fmt::format("DMA_MAP of RAM {:#x}+{:#x}", m.addr, m.size)));
        dma_maps_.emplace_back(m.addr, m.size);
    }
    if (!all) log::info("{}: DMA to the unmapped RAM goes by message", s_.label);
    return ok();
}

Result<void> VfioUserClient::Impl::unmap_dma_locked() {
    Result<void> result;
    for (const auto& [addr, size] : dma_maps_) {
        DmaUnmap u;
        u.addr = addr;
        u.size = size;
        auto r = request_locked(Command::dma_unmap, encode_dma_unmap(u), {},
                                fmt::format("DMA_UNMAP of RAM {:#x}+{:#x}", addr, size));
        if (!r && result) result = fail(r.error());
    }
    dma_maps_.clear();
    return result;
}

Result<void> VfioUserClient::Impl::query_irqs_locked() {
    irq_counts_ = {};
    for (uint32_t i = 0; i < 3 && i < device_.num_irqs; ++i) {
        IrqInfo q;
        q.index = i;
        POTEMKIN_TRY_ASSIGN(const Reply r,
                            request_locked(Command::device_get_irq_info, encode_irq_info(q), {},
                                           fmt::format("DEVICE_GET_IRQ_INFO for {}", irq_name(i))));
        auto info = decode_irq_info(r.payload);
        if (!info)
            return fail(info.error().context(fmt::format("{}: DEVICE_GET_IRQ_INFO", s_.label)));
        if (info->count > 0 && (info->flags & kIrqInfoFlagEventfd) == 0)
            log::warn("{}: {} does not signal through eventfds; ignored", s_.label, irq_name(i));
        else
            irq_counts_[i] = std::min(info->count, kMaxVectors);
    }
    return ok();
}

// Installs the eventfds of the kind the front-end enabled last and disables the others, so the
// server signals through exactly one mechanism (VFIO_DEVICE_SET_IRQS semantics).
Result<void> VfioUserClient::Impl::apply_irqs_locked() {
    const auto want = static_cast<uint32_t>(irq_kind_);
    for (uint32_t i = 0; i < 3; ++i) {
        if (i == want || !armed_[i]) continue;
        POTEMKIN_TRY(irq_trigger_locked(i, 0));
    }
    const uint32_t count = std::min(irq_count_, irq_counts_[want]);
    if (count == 0 && !armed_[want]) return ok();
    const bool was_armed = armed_[want];
    POTEMKIN_TRY(irq_trigger_locked(want, count));
    if (want != kIrqIndexIntx || count == 0 || was_armed) return ok();
    // A server auto-masks INTx when it signals it; one signalled while another kind was on
    // was never answered. Unmask, so a line that is still up is signalled again.
    IrqSet s;
    s.flags = kIrqSetDataNone | kIrqSetActionUnmask;
    s.index = kIrqIndexIntx;
    s.count = 1;
    POTEMKIN_TRY(
        request_locked(Command::device_set_irqs, encode_irq_set(s), {}, "SET_IRQS unmask of INTx"));
    return ok();
}

// SET_IRQS(index, ACTION_TRIGGER): count 0 disables; otherwise eventfds for vectors
// [0, count), sent in as many messages as the server's max_msg_fds demands.
Result<void> VfioUserClient::Impl::irq_trigger_locked(uint32_t index, uint32_t count) {
    const std::string what = fmt::format("SET_IRQS for {} ({} vectors)", irq_name(index), count);
    if (count == 0) {
        IrqSet s;
        s.flags = kIrqSetDataNone | kIrqSetActionTrigger;
        s.index = index;
        POTEMKIN_TRY(request_locked(Command::device_set_irqs, encode_irq_set(s), {}, what));
        armed_[index] = false;
        return ok();
    }
    if (caps_.max_msg_fds == 0)
        return failf("{}: {}: the server takes no fds, so it cannot be given eventfds", s_.label,
                     what);
    std::vector<int> fds;
    if (index == kIrqIndexIntx) {
        fds.push_back(intx_fd_.get());
    } else {
        // Vector eventfds are made on first use and kept (the link may be polling them).
        while (vector_fds_.size() < count) {
            auto e = make_eventfd();
            if (!e) return fail(e.error().context(s_.label));
            const auto vector = static_cast<unsigned>(vector_fds_.size());
            POTEMKIN_TRY(link_.watch_eventfd(e->get(), [this, vector] { deliver_msi(vector); }));
            vector_fds_.push_back(std::move(*e));
        }
        for (uint32_t v = 0; v < count; ++v) fds.push_back(vector_fds_[v].get());
    }
    link_.wake();  // new eventfds to watch
    for (uint32_t start = 0; start < count;) {
        const uint32_t n = std::min(count - start, caps_.max_msg_fds);
        IrqSet s;
        s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger;
        s.index = index;
        s.start = start;
        s.count = n;
        POTEMKIN_TRY(request_locked(Command::device_set_irqs, encode_irq_set(s),
                                    std::span(fds.data() + start, n), what));
        start += n;
    }
    armed_[index] = true;
    return ok();
}

// After a reconnect the device may be a fresh process: give it back every config byte the guest
// wrote through the front-end, in the order they were last written.
Result<void> VfioUserClient::Impl::replay_config_locked() {
    return config_log_.replay([&](uint32_t off, std::span<const uint8_t> bytes) -> Result<void> {
        POTEMKIN_TRY(
            request_locked(Command::region_write,
                           encode_region_access(off, hostdev::kConfigRegion,
                                                static_cast<uint32_t>(bytes.size()), bytes),
                           {}, fmt::format("replaying config write at {:#x}", off)));
        return ok();
    });
}

// Engine thread: a connection the poll thread opened to a server that listens again.
void VfioUserClient::Impl::adopt(UniqueFd sock) {
    if (link_.closed()) return;
    if (auto r = setup(std::move(sock), false); !r) {
        log::info("{}: reconnecting failed, retrying: {}", s_.label, r.error().message);
        return;
    }
    ++reconnects_;
    log::warn("{}: reconnected to {}: DMA maps, interrupts and {} config bytes restored", s_.label,
              s_.socket_path, config_log_.size());
    link_.restored();
}

}  // namespace potemkin::vfio_user
