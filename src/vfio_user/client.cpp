// The vfio-user client as a HostDevice: what the front-end calls, on the engine thread, turned
// into requests (client_connection.cpp), and the interrupts the server signals turned into the
// front-end's intx()/msi() calls. INTx is held from the server's signal until the guest's EOI
// (ack_intx), then unmasked, as VFIO does with an auto-masked INTx (client.hpp).
#include "vfio_user/client.hpp"

#include <algorithm>
#include <cerrno>

#include "common/bytes.hpp"
#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "hostdev/bar_kind.hpp"
#include "pci/registers.hpp"
#include "vfio_user/client_impl.hpp"

namespace potemkin::vfio_user {

namespace {

// Region info replies with capabilities are re-requested at their full size, up to this.
constexpr uint32_t kMaxRegionInfoSize = 64 * 1024;

}  // namespace

VfioUserClient::Impl::Impl(VfioUserClientSettings s)
    : s_(std::move(s)),
      link_(hostdev::RemoteLinkSettings::of(s_, s_.reconnect, s_.reconnect_interval)) {}

Result<void> VfioUserClient::Impl::start() {
    POTEMKIN_TRY(link_.open(weak_from_this()));
    auto intx = make_eventfd();
    if (!intx) return fail(intx.error().context(s_.label));
    intx_fd_ = std::move(*intx);
    POTEMKIN_TRY(link_.watch_eventfd(intx_fd_.get(), [this] { deliver_intx(); }));
    auto sock = connect_unix(s_.socket_path, s_.timeout);
    if (!sock) return fail(sock.error().context(s_.label));
    POTEMKIN_TRY(setup(std::move(*sock), true));
    return link_.start(*this);
}

void VfioUserClient::Impl::close() {
    if (link_.closed()) return;
    link_.stop_polling();
    {
        std::lock_guard lk(io_mu_);
        if (link_.up()) {
            // Best effort: the server drops our mappings on disconnect anyway.
            if (auto r = unmap_dma_locked(); !r)
                log::debug("{}: closing: {}", s_.label, r.error().message);
        }
        watch_fd_ = -1;
        twin_watch_fd_ = -1;
        sock_.reset();
        twin_.reset();
    }
    link_.posted().log_summary(s_.label);
    link_.close();
    for (auto& fd : region_fds_) fd.reset();
}

// ---- Interrupts ------------------------------------------------------------------------------

void VfioUserClient::Impl::deliver_intx() {
    if (irq_kind_ == hostdev::IrqKind::intx) link_.assert_intx();
}

void VfioUserClient::Impl::deliver_msi(unsigned vector) {
    if (irq_kind_ == hostdev::IrqKind::intx) return;  // a stale eventfd from an earlier MSI setup
    s_.events->msi(vector);
}

// The guest EOId the interrupt (HostDevice::ack_intx): drop the line and let the server
// re-trigger it if the device still asserts (VFIO's unmask after an auto-masked INTx, what
// KVM's irqfd resampler does on EOI). Synchronous: a re-trigger the server sends before its
// reply is collected right after the reply, so the line is up again before the guest's next
// instruction.
Result<void> VfioUserClient::Impl::drop_intx_and_unmask() {
    link_.deassert_intx();
    {
        std::lock_guard lk(io_mu_);
        if (!armed_[kIrqIndexIntx]) return ok();
    }
    IrqSet s;
    s.flags = kIrqSetDataNone | kIrqSetActionUnmask;
    s.index = kIrqIndexIntx;
    s.count = 1;
    POTEMKIN_TRY(
        request(Command::device_set_irqs, encode_irq_set(s), {}, "SET_IRQS unmask of INTx"));
    return ok();
}

// ---- HostDevice calls
// ----------------------------------------------------------------------------

Result<hostdev::DeviceInfo> VfioUserClient::Impl::info() {
    link_.run_inbox();
    std::lock_guard lk(io_mu_);
    hostdev::DeviceInfo d;
    d.name = s_.label;
    d.num_regions = device_.num_regions;
    d.num_irqs = device_.num_irqs;
    d.reset_supported = (device_.flags & kDeviceFlagReset) != 0;
    return d;
}

Result<hostdev::RegionInfo> VfioUserClient::Impl::region_info(uint32_t index) {
    link_.run_inbox();
    if (index >= device_.num_regions)
        return failf("{}: region {} does not exist (the device has {})", s_.label, index,
                     device_.num_regions);
    const std::string what =
        fmt::format("DEVICE_GET_REGION_INFO for {}", hostdev::region_name(index));
    uint32_t argsz = kRegionInfoSize;
    Reply reply;
    RegionInfo ri;
    // The first reply says how big the capabilities are; ask again with room for them.
    for (int attempt = 0; attempt < 2; ++attempt) {
        POTEMKIN_TRY_ASSIGN(reply, request(Command::device_get_region_info,
                                           encode_region_info_request(index, argsz), {}, what));
        auto d = decode_region_info_reply(reply.payload);
        if (!d) return fail(d.error().context(fmt::format("{}: {}", s_.label, what)));
        ri = std::move(*d);
        if (ri.argsz <= argsz || ri.argsz > kMaxRegionInfoSize) break;
        argsz = ri.argsz;
    }
    hostdev::RegionInfo out;
    out.index = index;
    out.size = ri.size;
    out.readable = (ri.flags & kRegionFlagRead) != 0;
    out.writable = (ri.flags & kRegionFlagWrite) != 0;
    if (ri.size == 0) return out;                            // absent
    POTEMKIN_TRY(hostdev::describe_bar(*this, index, out));  // the size only says how big
    if (index < region_fds_.size()) region_fds_[index].reset();
    if ((ri.flags & kRegionFlagMmap) != 0 && !reply.fds.empty() && index < region_fds_.size()) {
        region_fds_[index] = std::move(reply.fds.front());
        out.fd = region_fds_[index].get();
        out.fd_offset = ri.offset;
        if (ri.sparse_mmap) {
            for (const auto& a : *ri.sparse_mmap) {
                if (a.size == 0 || a.offset > ri.size || a.size > ri.size - a.offset) {
                    log::warn("{}: {} sparse mmap area {:#x}+{:#x} is outside the region: ignored",
                              s_.label, hostdev::region_name(index), a.offset, a.size);
                    continue;
                }
                out.mmap_areas.push_back(hostdev::MmapArea{a.offset, a.size});
            }
        } else {
            out.mmap_areas.push_back(hostdev::MmapArea{0, ri.size});
        }
    }
    if (ri.type)
        log::debug("{}: {} has type {}/{}", s_.label, hostdev::region_name(index), ri.type->type,
                   ri.type->subtype);
    return out;
}

// The per-access path: one sendmsg and one recvmsg, nothing allocated, the request's name
// formatted only for an error. Reads do not look at the interrupt eventfds afterwards (writes
// do): a device that raises an interrupt because it was read is rare, and its interrupt still
// comes, through the poll thread, a moment later, as any interrupt the device raises by itself.
Result<void> VfioUserClient::Impl::region_read(uint32_t region, uint64_t offset,
                                               std::span<uint8_t> out) {
    link_.run_inbox();
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        if (fast_ && link_.up() && !out.empty() && out.size() <= fast_path::kMaxData)
            return fast_access_locked(
                {fast_path::Op::read, region, offset, static_cast<uint32_t>(out.size()), {}}, out,
                [&] {
                    return fmt::format("fast-path read of {} at {:#x} ({} bytes)",
                                       hostdev::region_name(region), offset, out.size());
                });
        const uint64_t chunk_max = caps_.max_data_xfer_size;
        for (size_t done = 0; done < out.size();) {
            const auto n = static_cast<uint32_t>(std::min<uint64_t>(out.size() - done, chunk_max));
            const uint64_t off = offset + done;
            auto what = [&] {
                return fmt::format("REGION_READ of {} at {:#x} ({} bytes)",
                                   hostdev::region_name(region), off, n);
            };
            const auto head = encode_region_access_head(off, region, n);
            std::span<const uint8_t> parts[1] = {head};
            POTEMKIN_TRY_ASSIGN(const Message* reply,
                                exchange_locked(Command::region_read, parts, {}, what));
            auto a = decode_region_access_view(Command::region_read, true, reply->payload,
                                               kOurMaxDataXfer);
            if (!a) return fail(a.error().context(fmt::format("{}: {} reply", s_.label, what())));
            if (a->offset != off || a->region != region || a->count != n || a->data.size() != n)
                return failf("{}: {}: the reply is for {} bytes of region {} at {:#x}", s_.label,
                             what(), a->count, a->region, a->offset);
            std::copy(a->data.begin(), a->data.end(), out.begin() + static_cast<ptrdiff_t>(done));
            done += n;
        }
        return ok();
    }();
    // What the exchange queued (a lost connection's report, the server's requests). After posted
    // writes, also what they raised: the server handled them before this read, so their
    // eventfd writes are there now, and "write to raise, read the status" sees the interrupt.
    if (look_after_reply_) {
        look_after_reply_ = false;
        link_.drain();
    } else {
        link_.run_inbox();
    }
    return result;
}

// The ioeventfd a guest write rings: same BAR and offset, the entry's size (or any), and its
// datamatch value when it has one. A handful of entries per device: a linear search.
int VfioUserClient::Impl::ioeventfd_for(uint32_t region, uint64_t offset,
                                        std::span<const uint8_t> in) const {
    for (const auto& e : ioeventfds_) {
        if (e.region != region || e.entry.offset != offset) continue;
        if (e.entry.size != 0 && e.entry.size != in.size()) continue;
        if ((e.entry.flags & kIoeventfdFlagDatamatch) != 0 &&
            (in.size() > 8 || load_le(in) != e.entry.datamatch))
            continue;
        return e.fd->get();
    }
    return -1;
}

// BAR writes are posted (one sendmsg with NO_REPLY, no wait) unless posting is off; one that
// matches an ioeventfd the server offered is an eventfd write, not a message at all. Config
// writes wait for their reply, as on PCI (non-posted), and are recorded for a reconnect.
Result<void> VfioUserClient::Impl::region_write(uint32_t region, uint64_t offset,
                                                std::span<const uint8_t> in) {
    link_.run_inbox();
    if (region == hostdev::kConfigRegion && offset + in.size() <= 4096)
        config_log_.record(static_cast<uint32_t>(offset), in);
    const bool bar = region < hostdev::kRomRegion;
    const bool posted = bar && s_.posted_writes && !mapped_region_;
    // A posted write gets no error back, so what can be checked here is: past the end of a
    // region the front-end asked about.
    if (bar && region_sizes_[region] != 0 &&
        (offset > region_sizes_[region] || in.size() > region_sizes_[region] - offset))
        return failf("{}: REGION_WRITE of {} at {:#x} ({} bytes) runs past its end ({:#x})",
                     s_.label, hostdev::region_name(region), offset, in.size(),
                     region_sizes_[region]);
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        if (fast_ && link_.up() && !in.empty() && in.size() <= fast_path::kMaxData) {
            fast_path::Access a{posted ? fast_path::Op::posted_write : fast_path::Op::write,
                                region,
                                offset,
                                static_cast<uint32_t>(in.size()),
                                {}};
            std::copy(in.begin(), in.end(), a.data.begin());
            return fast_access_locked(a, {}, [&] {
                return fmt::format("fast-path write of {} at {:#x} ({} bytes)",
                                   hostdev::region_name(region), offset, in.size());
            });
        }
        if (bar && !ioeventfds_.empty() && link_.up()) {
            if (const int fd = ioeventfd_for(region, offset, in); fd >= 0) {
                // The server reads its socket before it rings the doorbell, so writes posted
                // before this one still reach the device first.
                if (!pending_.empty()) serve_pending_locked();
                if (signal_eventfd(fd)) {
                    ioeventfd_writes_.fetch_add(1, std::memory_order_relaxed);
                    return ok();
                }
                // A full counter (the server stopped reading it): the message still works.
            }
        }
        const uint64_t chunk_max = caps_.max_data_xfer_size;
        for (size_t done = 0; done < in.size();) {
            const auto n = static_cast<uint32_t>(std::min<uint64_t>(in.size() - done, chunk_max));
            const uint64_t off = offset + done;
            auto what = [&] {
                return fmt::format("REGION_WRITE of {} at {:#x} ({} bytes)",
                                   hostdev::region_name(region), off, n);
            };
            const auto head = encode_region_access_head(off, region, n);
            std::span<const uint8_t> parts[2] = {head, in.subspan(done, n)};
            // With the fast path up, what still goes by message waits for its reply: a posted
            // message could be overtaken by a later access through the queue.
            if (posted && !fast_)
                POTEMKIN_TRY(post_locked(Command::region_write, parts, what));
            else
                POTEMKIN_TRY(exchange_locked(Command::region_write, parts, {}, what));
            done += n;
        }
        return ok();
    }();
    if (posted) {
        // Nothing came back to look at; the next access that waits looks for what this raised.
        look_after_reply_ = true;
        link_.run_inbox();
        return result;
    }
    // A write is how a guest makes a device raise an interrupt: it reaches the front-end before
    // the guest's next instruction (the server writes the eventfd before it replies).
    // The line stays up until the guest's EOI (ack_intx), however the handler acknowledged.
    link_.drain();
    return result;
}

Result<void> VfioUserClient::Impl::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    link_.run_inbox();
    const auto index = static_cast<uint32_t>(kind);
    if (index >= 3) return failf("{}: unknown interrupt kind {}", s_.label, index);
    {
        std::lock_guard lk(io_mu_);
        if (link_.up() && count > irq_counts_[index])
            return failf("{}: {} vectors of {} asked for; the device has {}", s_.label, count,
                         irq_name(index), irq_counts_[index]);
    }
    irq_kind_ = kind;
    irq_count_ = count;
    if (kind != hostdev::IrqKind::intx) link_.deassert_intx();
    // While the server is gone the choice is kept and applied when it comes back.
    Result<void> r = [&] {
        std::lock_guard lk(io_mu_);
        if (!link_.up()) return ok();
        return apply_irqs_locked();
    }();
    link_.drain();
    return r;
}

Result<void> VfioUserClient::Impl::ack_intx() {
    link_.run_inbox();
    if (irq_kind_ != hostdev::IrqKind::intx) return ok();
    return drop_intx_and_unmask();
}

// A non-posted access orders itself behind the posted writes; a config read of the vendor ID
// is one every device answers without side effects. region_read then looks at the eventfds.
Result<void> VfioUserClient::Impl::complete_posted() {
    if (!look_after_reply_) return ok();
    std::array<uint8_t, 4> id{};
    return region_read(hostdev::kConfigRegion, 0, id);
}

Result<void> VfioUserClient::Impl::reset() {
    link_.run_inbox();
    auto r = request(Command::device_reset, {}, {}, "DEVICE_RESET");
    // What the guest programmed before the reset is not what a reconnect should restore.
    config_log_.clear();
    link_.deassert_intx();
    if (!r) return fail(r.error());
    // A reset device is in INTx mode (HostDevice contract), whatever the guest had enabled:
    // arm INTx again as at open, or its line would reach nobody until the front-end chose.
    irq_kind_ = hostdev::IrqKind::intx;
    irq_count_ = 1;
    Result<void> armed = [&] {
        std::lock_guard lk(io_mu_);
        if (!link_.up()) return ok();
        return apply_irqs_locked();
    }();
    link_.drain();
    return armed;
}

// ---- VfioUserClient: the public shell over the shared state ----------------------------------

VfioUserClient::VfioUserClient(std::shared_ptr<Impl> impl)
    : RemoteClient(impl, impl->link()), impl_(impl.get()) {}

Result<std::unique_ptr<VfioUserClient>> VfioUserClient::open(VfioUserClientSettings settings) {
    if (settings.label.empty()) settings.label = "vfio-user:" + settings.socket_path;
    if (settings.timeout.count() <= 0)
        return failf("{}: the timeout must be positive", settings.label);
    POTEMKIN_TRY_ASSIGN(auto impl, hostdev::start_remote_state<Impl>(std::move(settings)));
    return std::unique_ptr<VfioUserClient>(new VfioUserClient(std::move(impl)));
}

VfioUserCaps VfioUserClient::caps() const {
    return impl_->caps();
}
uint64_t VfioUserClient::reconnects() const {
    return impl_->reconnects();
}
VfioUserStats VfioUserClient::stats() const {
    return impl_->stats();
}

VfioUserStats VfioUserClient::Impl::stats() const {
    VfioUserStats st;
    st.posted = link_.posted().stats();
    st.ioeventfd_writes = ioeventfd_writes_.load(std::memory_order_relaxed);
    st.server_requests = served_.load(std::memory_order_relaxed);
    std::lock_guard lk(io_mu_);
    st.ioeventfds = ioeventfds_.size();
    st.twin_socket = static_cast<bool>(twin_);
    st.fast_path = static_cast<bool>(fast_);
    st.fast_path_accesses = fast_accesses_.load(std::memory_order_relaxed);
    st.fast_path_kicks = fast_kicks_.load(std::memory_order_relaxed);
    st.fast_path_blocks = fast_blocks_.load(std::memory_order_relaxed);
    return st;
}

}  // namespace potemkin::vfio_user
