#include "mpqemu/server.hpp"

#include "common/bytes.hpp"
#include "sdk/server_events.hpp"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.hpp"
#include "pci/bar.hpp"

namespace potemkin::mpqemu {

namespace {

constexpr uint64_t kAllOnes = ~uint64_t{0};

}  // namespace

// ---- Setup -------------------------------------------------------------------------------------

MpqemuServer::MpqemuServer(const MpqemuServerSettings& settings)
    : settings_(settings), resamplefd_(settings.label) {}

MpqemuServer::~MpqemuServer() = default;

Result<std::unique_ptr<MpqemuServer>> MpqemuServer::create(std::unique_ptr<sdk::DeviceModel> model,
                                                           const MpqemuServerSettings& settings) {
    if (settings.fd < 0) return failf("{}: no mpqemu socket fd given", settings.label);
    std::unique_ptr<MpqemuServer> s(new MpqemuServer(settings));
    sdk::ServeLoop::Settings ls;
    ls.fd = settings.fd;  // taken over, even when create() fails
    ls.stop_fd = settings.stop_fd;
    ls.label = settings.label;
    POTEMKIN_TRY_ASSIGN(s->loop_, sdk::ServeLoop::create(ls));
    if (s->loop_->listening())
        return failf("{}: fd {} is a listening socket; mpqemu runs over one connected socket",
                     settings.label, settings.fd);
    s->events_ = std::make_unique<sdk::ServerEvents<MpqemuServer>>(*s);
    auto server = sdk::ModelServer::create(std::move(model), s->events_.get(), settings.model);
    if (!server) return fail(server.error().context(settings.label));
    s->server_ = std::move(server).value();
    s->update_windows();
    return s;
}

void MpqemuServer::stop() {
    loop_->stop();
}

// ---- Serving -----------------------------------------------------------------------------------

Result<void> MpqemuServer::run() {
    if (ran_) return failf("{}: the proxy connection was already served", settings_.label);
    ran_ = true;
    return loop_->run([this](UniqueFd sock) { return serve(std::move(sock)); });
}

Result<void> MpqemuServer::serve(UniqueFd sock) {
    sock_ = std::move(sock);
    auto waits = loop_->connection_waits(sock_.get());
    if (!waits) return fail(waits.error().context(settings_.label));
    resamplefd_.attach(&*waits);
    log::info("{}: serving the mpqemu proxy on fd {}", settings_.label, sock_.get());

    RecvOptions ropt;
    ropt.timeout_ms = settings_.io_timeout_ms;
    Result<void> outcome = ok();
    while (true) {
        auto ev = waits->wait();
        if (!ev) {
            outcome = fail(ev.error().context(settings_.label));
            break;
        }
        if ((*ev & sdk::WaitSet::stop) != 0) {
            loop_->mark_stopped();
            log::info("{}: stopped", settings_.label);
            break;
        }
        // Re-signals the irqfd when the model's line is still asserted.
        if ((*ev & sdk::WaitSet::resample) != 0 && resamplefd_.fired()) server_->ack_intx();
        // The model's deferred work (its DMA), now that the request that queued it is answered.
        server_->run_deferred();
        if ((*ev & sdk::WaitSet::socket) == 0) continue;
        ropt.readable = true;  // epoll said so: no poll before the header
        auto msg = recv_message(sock_.get(), ropt);
        if (!msg) {
            if (msg.error().sys_errno == ECONNRESET) {
                log::info("{}: the proxy closed the connection ({})", settings_.label,
                          msg.error().message);
                break;
            }
            outcome = failf("{}: dropping the proxy: {}", settings_.label, msg.error().message);
            break;
        }
        ++stats_.requests;
        if (auto r = handle(*msg); !r) {
            outcome = failf("{}: dropping the proxy: {}", settings_.label, r.error().message);
            break;
        }
        if (!sock_) break;  // the reply could not be sent: the proxy is gone
        server_->run_deferred();
    }
    resamplefd_.attach(nullptr);  // out of the set before it goes
    resamplefd_.set(UniqueFd());
    sock_.reset();
    sysmem_.clear();
    irqfd_.reset();
    if (stats_.unmapped_accesses > 1)
        log::warn("{}: {} BAR accesses decoded to no BAR", settings_.label,
                  stats_.unmapped_accesses);
    log::info("{}: {} requests, {} SYNC_SYSMEM, {} DMA failures, {} irqfd writes", settings_.label,
              stats_.requests, stats_.sysmem_syncs, stats_.dma_failures, stats_.irqfd_writes);
    return outcome;
}

Result<void> MpqemuServer::reply(uint64_t value) {
    auto r = send_message(sock_.get(), Cmd::ret, encode_ret(value));
    if (!r) {
        // The proxy went away between its request and our answer: the same as EOF.
        log::info("{}: sending RET: {}; the proxy is gone", settings_.label, r.error().message);
        sock_.reset();
    }
    return ok();
}

Result<void> MpqemuServer::handle(Message& msg) {
    switch (msg.cmd) {
        case Cmd::pci_cfgread:
        case Cmd::pci_cfgwrite:
            return handle_config(msg);
        case Cmd::bar_read:
        case Cmd::bar_write:
            return handle_bar(msg);
        case Cmd::sync_sysmem:
            handle_sysmem(msg);
            return ok();
        case Cmd::set_irqfd:
            handle_irqfd(msg);
            return ok();
        case Cmd::device_reset:
            if (!msg.fds.empty())
                log::warn("{}: DEVICE_RESET carries {} fds; closing them", settings_.label,
                          msg.fds.size());
            log::info("{}: DEVICE_RESET", settings_.label);
            server_->reset();
            update_windows();
            return reply(0);
        case Cmd::ret:
            return failf("RET: a reply, the proxy never sends one");
    }
    // recv_message validated the command range.
    return failf("cmd {} is not a command", static_cast<int32_t>(msg.cmd));
}

Result<void> MpqemuServer::handle_config(const Message& msg) {
    auto c = decode_conf(msg);
    if (!c) return fail(c.error());
    const bool write = msg.cmd == Cmd::pci_cfgwrite;
    // The protocol's configuration space is 256 bytes (QEMU's proxy is a conventional PCI
    // device and its remote refuses more): a PCI Express model's extended space is not served
    // here, so both ends agree on what exists (docs/sdk.md, "PCI Express").
    const uint32_t size = std::min(server_->config_space().size(), kConventionalConfigSize);
    const auto len = static_cast<uint32_t>(c->len);
    if (c->addr > size || len > size - c->addr) {
        ++stats_.bad_config_accesses;
        log::warn("{}: {} at offset {:#x} len {} runs past the {}-byte configuration space",
                  settings_.label, command_name(msg.cmd), c->addr, len, size);
        return reply(kAllOnes);
    }
    uint8_t bytes[4]{};
    std::span<uint8_t> data(bytes, len);
    if (write) {
        store_le(data, c->val);
        if (auto r = server_->config_write(c->addr, data); !r) {
            log::warn("{}: PCI_CFGWRITE: {}", settings_.label, r.error().message);
            return reply(kAllOnes);
        }
        update_windows();
        return reply(0);
    }
    if (auto r = server_->config_read(c->addr, data); !r) {
        log::warn("{}: PCI_CFGREAD: {}", settings_.label, r.error().message);
        return reply(kAllOnes);
    }
    return reply(load_le(data));
}

void MpqemuServer::update_windows() {
    windows_.clear();
    const auto& cs = server_->config_space();
    for (int i = 0; i <= pci::kRomBarIndex; ++i) {
        auto bar = pci::decode_bar(cs, i);
        if (!bar) continue;
        windows_.push_back(
            {static_cast<uint32_t>(i), bar->kind == pci::BarKind::io, bar->address, bar->size});
    }
}

std::optional<std::pair<uint32_t, uint64_t>> MpqemuServer::resolve(uint64_t addr, uint64_t size,
                                                                   bool memory) const {
    for (const Window& w : windows_) {
        if (w.io == memory) continue;
        if (addr < w.base) continue;
        const uint64_t offset = addr - w.base;
        if (offset >= w.size || size > w.size - offset) continue;
        return std::pair{w.region, offset};
    }
    return std::nullopt;
}

Result<void> MpqemuServer::handle_bar(const Message& msg) {
    auto a = decode_bar(msg);
    if (!a) return fail(a.error());
    const bool write = msg.cmd == Cmd::bar_write;
    auto target = resolve(a->addr, a->size, a->memory);
    if (!target) {
        if (stats_.unmapped_accesses++ == 0)
            log::warn(
                "{}: {} of {} bytes at {} {:#x} decodes to no BAR (reads all-ones; logged once)",
                settings_.label, command_name(msg.cmd), a->size,
                a->memory ? "memory address" : "I/O port", a->addr);
        return reply(kAllOnes);
    }
    const auto [region, offset] = *target;
    uint8_t bytes[8]{};
    std::span<uint8_t> data(bytes, a->size);
    if (write) {
        store_le(data, a->val);
        if (auto r = server_->region_write(region, offset, data); !r) {
            log::warn("{}: BAR_WRITE: {}", settings_.label, r.error().message);
            return reply(kAllOnes);
        }
        return reply(0);
    }
    if (auto r = server_->region_read(region, offset, data); !r) {
        log::warn("{}: BAR_READ: {}", settings_.label, r.error().message);
        return reply(kAllOnes);
    }
    return reply(load_le(data));
}

// ---- Guest memory ------------------------------------------------------------------------------

void MpqemuServer::handle_sysmem(Message& msg) {
    ++stats_.sysmem_syncs;
    // The previous set goes first, whatever happens to this one: its fds are QEMU's old view.
    sysmem_.clear();
    auto s = decode_sysmem(msg);
    if (!s) {
        log::error("{}: {}; guest memory is unmapped (DMA fails)", settings_.label,
                   s.error().message);
        return;
    }
    std::vector<sdk::GuestRam::Share> shares;
    shares.reserve(s->entries.size());
    for (const SysmemEntry& e : s->entries) {
        sdk::GuestRam::Share share;
        share.base = Gpa(e.gpa);
        share.size = e.size;
        share.fd_offset = static_cast<uint64_t>(e.offset);
        shares.push_back(share);
        log::debug("{}: guest memory gpa {:#x} size {:#x} (fd offset {:#x})", settings_.label,
                   e.gpa, e.size, share.fd_offset);
    }
    // The fds close as they are mapped: the mappings keep the memory.
    if (auto r = sysmem_.replace(shares, std::move(msg.fds)); !r)
        log::error("{}: SYNC_SYSMEM: {}; guest memory is unmapped (DMA fails)", settings_.label,
                   r.error().message);
}

Result<void> MpqemuServer::dma(uint64_t gpa, std::span<uint8_t> buf, bool write) {
    auto r = sysmem_.access(Gpa(gpa), buf, write);
    if (r) return r;
    ++stats_.dma_failures;
    return failf("{}: {}: outside the guest memory QEMU shared (SYNC_SYSMEM: {} ranges)",
                 settings_.label, r.error().message, sysmem_.size());
}

// ---- Interrupts --------------------------------------------------------------------------------

void MpqemuServer::handle_irqfd(Message& msg) {
    // validate(): exactly two fds.
    irqfd_ = std::move(msg.fds[0]);
    resamplefd_.set(std::move(msg.fds[1]));
    log::info("{}: SET_IRQFD: INTx irqfd {}, resamplefd {}", settings_.label, irqfd_.get(),
              resamplefd_.get());
    // A line already high (the model raised it before the proxy gave us the fd) is signalled.
    if (server_->intx_line()) signal_intx(true);
}

void MpqemuServer::signal_intx(bool asserted) {
    // No deassert message exists: a lowered line just is not re-signalled on resample.
    if (!asserted || !irqfd_) return;
    // QEMU's irqfd is a non-blocking eventfd; whatever else a peer passed must not block us.
    pollfd p{irqfd_.get(), POLLOUT, 0};
    if (::poll(&p, 1, 0) != 1 || (p.revents & POLLOUT) == 0) {
        log::warn("{}: the INTx irqfd is not writable; interrupt dropped", settings_.label);
        return;
    }
    ++stats_.irqfd_writes;
    sdk::signal_client_eventfd(irqfd_.get(), settings_.label, "INTx irqfd", signal_failures_);
}

}  // namespace potemkin::mpqemu
