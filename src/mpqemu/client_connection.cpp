// The mpqemu client's connection: one request and its RET (strictly synchronous, as QEMU's
// proxy), losing the remote, the poll thread's view of the socket (the remote never sends
// anything unasked, so its only news is dying), setting a fresh remote up and respawning one.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "mpqemu/client_impl.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::mpqemu {

Error MpqemuClient::Impl::gone_error(What what) const {
    return Error{fmt::format("{}: {}: the remote is gone ({})", s_.label, what.str(), lost_why_),
                 ENOTCONN};
}

Result<void> MpqemuClient::Impl::send_locked(Cmd cmd, std::span<const uint8_t> payload,
                                             std::span<const int> fds, What what) {
    if (!link_.up()) return fail(gone_error(what));
    if (auto r = send_message(s_.socket.get(), cmd, payload, fds); !r) {
        lose_locked(fmt::format("{}: sending: {}", what.str(), r.error().message));
        return fail(gone_error(what));
    }
    return ok();
}

// The per-access path: one sendmsg, one recvmsg (SO_RCVTIMEO bounds it, and the RET's payload
// comes with its header), into the reused rx_.
Result<uint64_t> MpqemuClient::Impl::request_locked(Cmd cmd, std::span<const uint8_t> payload,
                                                    What what) {
    POTEMKIN_TRY(send_locked(cmd, payload, {}, what));
    RecvOptions o;
    o.timeout_ms = static_cast<int>(s_.timeout.count());
    o.rcvtimeo = rcvtimeo_set_;
    o.read_ahead = kRetSize;  // only a RET can come, and nothing after it
    if (auto r = recv_message(s_.socket.get(), rx_, o); !r) {
        lose_locked(fmt::format("{}: {}", what.str(),
                                r.error().sys_errno == ECONNRESET
                                    ? std::string("the remote closed the connection")
                                    : r.error().message));
        return fail(gone_error(what));
    }
    auto v = decode_ret(rx_);
    if (!v) {
        // Anything but a RET breaks the strict request/reply pairing: the stream is lost.
        lose_locked(fmt::format("{}: {}", what.str(), v.error().message));
        return fail(gone_error(what));
    }
    return *v;
}

// The connection is unusable (either thread, io_mu_ held). The socket stays open until close()
// so its number cannot be reused under the poll thread's poll.
void MpqemuClient::Impl::lose_locked(const std::string& why) {
    if (!link_.up()) return;
    lost_why_ = why;
    // Wakes a peer still reading; a socket the peer already closed says ENOTCONN: that is fine.
    if (::shutdown(s_.socket.get(), SHUT_RDWR) != 0 && errno != ENOTCONN)
        log::debug("{}: shutdown of fd {}: {}", s_.label, s_.socket.get(), std::strerror(errno));
    link_.lost(fmt::format("{}: the remote went away: {}", s_.label, why), true);
}

Result<uint32_t> MpqemuClient::Impl::cfg_read_locked(uint32_t offset, int len) {
    auto what = [&] { return fmt::format("PCI_CFGREAD at {:#x} ({} bytes)", offset, len); };
    if (offset + 4 > kConfigSize)  // the remote exits on these
        return failf("{}: {}: beyond the reachable config space", s_.label, what());
    POTEMKIN_TRY_ASSIGN(const uint64_t v,
                        request_locked(Cmd::pci_cfgread, encode_conf({offset, 0, len}), what));
    return static_cast<uint32_t>(v);
}

Result<void> MpqemuClient::Impl::cfg_write_locked(uint32_t offset, uint32_t value, int len) {
    auto what = [&] { return fmt::format("PCI_CFGWRITE at {:#x} ({} bytes)", offset, len); };
    if (offset + 4 > kConfigSize)
        return failf("{}: {}: beyond the reachable config space", s_.label, what());
    POTEMKIN_TRY(request_locked(Cmd::pci_cfgwrite, encode_conf({offset, value, len}), what));
    return ok();
}

// ---- The poll thread's view of the socket ------------------------------------------------------

hostdev::RemoteTransport::Watch MpqemuClient::Impl::connection_watch() {
    return Watch{watch_fd_.load(), POLLRDHUP, -1};
}

void MpqemuClient::Impl::connection_event(const Watch& watched, short revents) {
    if (revents == 0) return;
    std::lock_guard lk(io_mu_);
    if (s_.socket.get() == watched.fd) lose_locked("the remote closed the connection");
}

// After a loss: start a new remote; the engine thread, which owns the state the setup rebuilds,
// adopts it.
std::function<void()> MpqemuClient::Impl::try_restore() {
    if (!s_.respawn) return {};
    log::info("{}: starting a new remote", s_.label);
    auto r = s_.respawn();
    if (!r) {
        log::warn("{}: respawn failed, retrying: {}", s_.label, r.error().message);
        return {};
    }
    auto fresh = std::make_shared<std::pair<UniqueFd, std::unique_ptr<QemuProcess>>>(std::move(*r));
    return [this, fresh] { adopt(std::move(fresh->first), std::move(fresh->second)); };
}

// ---- Setup ------------------------------------------------------------------------------------

Result<void> MpqemuClient::Impl::start() {
    if (!s_.socket) return failf("{}: no socket", s_.label);
    {
        struct stat st {};
        if (::fstat(s_.socket.get(), &st) != 0)
            return failf(Errno{errno}, "{}: fstat of fd {}", s_.label, s_.socket.get());
        if (!S_ISSOCK(st.st_mode))
            return failf("{}: fd {} is not a socket", s_.label, s_.socket.get());
    }
    POTEMKIN_TRY(link_.open(weak_from_this()));
    for (auto* fd : {&irq_fd_, &resample_fd_}) {
        auto e = make_eventfd();
        if (!e) return fail(e.error().context(s_.label));
        *fd = std::move(*e);
    }
    POTEMKIN_TRY(link_.watch_eventfd(irq_fd_.get(), [this] { deliver_intx(); }));
    {
        std::lock_guard lk(io_mu_);
        link_.set_up();
        POTEMKIN_TRY(setup_locked());
        watch_fd_ = s_.socket.get();
    }
    return link_.start(*this);
}

// A fresh remote, in the order QEMU's own proxy uses: guest RAM, interrupts, then config space;
// then the private BAR layout, and (after a respawn) the config bytes the guest wrote.
Result<void> MpqemuClient::Impl::setup_locked() {
    // Replies are awaited in a blocking recvmsg that the socket's receive timeout bounds: one
    // system call per reply instead of a poll and a read. Where it cannot be set, poll first.
    const auto ms = s_.timeout.count();
    const timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    rcvtimeo_set_ = ::setsockopt(s_.socket.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0;
    if (!rcvtimeo_set_)
        log::debug("{}: setsockopt(SO_RCVTIMEO) on fd {}: {}; polling for replies", s_.label,
                   s_.socket.get(), std::strerror(errno));
    POTEMKIN_TRY(sync_sysmem_locked());
    POTEMKIN_TRY(set_irqfd_locked());
    // Decode off while the BARs are sized (the remote may come from someone else's use).
    POTEMKIN_TRY(cfg_write_locked(pci::reg::kCommand, 0, 2));
    POTEMKIN_TRY(probe_bars_locked());
    POTEMKIN_TRY(place_bars());
    POTEMKIN_TRY(program_bars_locked());
    return config_log_.replay([&](uint32_t offset, std::span<const uint8_t> bytes) {
        return cfg_write_bytes_locked(offset, bytes);
    });
}

// Guest RAM as the memfd, one entry per region (the remote maps entry i of fds[i] at its gpa).
Result<void> MpqemuClient::Impl::sync_sysmem_locked() {
    if (s_.memory == nullptr) return ok();
    const auto& regions = s_.memory->regions();
    if (regions.empty()) return ok();
    if (regions.size() > kMaxFds)
        return failf("{}: guest RAM has {} regions; SYNC_SYSMEM carries at most {}", s_.label,
                     regions.size(), kMaxFds);
    SyncSysmem m;
    std::vector<int> fds;
    for (const auto& r : regions) {
        m.entries.push_back({r.base.value, r.size, static_cast<int64_t>(r.fd_offset)});
        fds.push_back(s_.memory->fd());
    }
    return send_locked(Cmd::sync_sysmem, encode_sysmem(m), fds, "SYNC_SYSMEM");
}

Result<void> MpqemuClient::Impl::set_irqfd_locked() {
    const std::array<int, 2> fds{irq_fd_.get(), resample_fd_.get()};
    return send_locked(Cmd::set_irqfd, {}, fds, "SET_IRQFD");
}

// Engine thread: set up the new remote like the first one, then restore the guest's config.
void MpqemuClient::Impl::adopt(UniqueFd sock, std::unique_ptr<QemuProcess> process) {
    if (link_.closed()) return;
    std::unique_ptr<QemuProcess> old;
    Result<void> r;
    {
        std::lock_guard lk(io_mu_);
        old = std::move(s_.process);
        s_.process = std::move(process);
        s_.socket = std::move(sock);
        link_.set_up();
        r = setup_locked();
        if (r)
            watch_fd_ = s_.socket.get();
        else
            lose_locked(r.error().message);  // reported once: the loss before was
    }
    if (old) {
        const int st = old->terminate();  // reaps the dead one
        log::debug("{}: the old qemu ended (wait status {:#x})", s_.label, st);
    }
    link_.wake();  // a new socket to watch
    if (!r) {
        log::warn("{}: the new remote could not be set up, retrying: {}", s_.label,
                  r.error().message);
        return;
    }
    ++respawns_;
    log::warn(
        "{}: new remote (qemu[{}]) set up: guest RAM, interrupts, BARs and {} config bytes "
        "restored",
        s_.label, s_.process ? s_.process->pid() : -1, config_log_.size());
    link_.restored();
}

}  // namespace potemkin::mpqemu
