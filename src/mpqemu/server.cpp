#include "mpqemu/server.hpp"

#include "common/bytes.hpp"
#include "sdk/server_events.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.hpp"
#include "pci/bar.hpp"

namespace potemkin::mpqemu {

namespace {

constexpr uint64_t kAllOnes = ~uint64_t{0};

// epoll tags.
constexpr uint32_t kTagSocket = 0;
constexpr uint32_t kTagStop = 1;
constexpr uint32_t kTagResample = 2;

void signal_eventfd(int fd) {
    const uint64_t one = 1;
    // An eventfd write only fails when the counter would overflow: the interrupt is then
    // already pending, which is all a signal means.
    ssize_t n = ::write(fd, &one, sizeof one);
    (void)n;
}

}  // namespace

// One SYNC_SYSMEM entry, mapped.
struct MpqemuServer::Mapping {
    uint64_t gpa = 0;
    uint64_t size = 0;
    void* map_base = nullptr;  // page-aligned
    size_t map_len = 0;
    uint8_t* host = nullptr;  // gpa → host + (gpa - this->gpa)

    Mapping() = default;
    Mapping(Mapping&& o) noexcept
        : gpa(o.gpa),
          size(o.size),
          map_base(std::exchange(o.map_base, nullptr)),
          map_len(o.map_len),
          host(std::exchange(o.host, nullptr)) {}
    Mapping& operator=(Mapping&& o) noexcept {
        if (this != &o) {
            release();
            gpa = o.gpa;
            size = o.size;
            map_base = std::exchange(o.map_base, nullptr);
            map_len = o.map_len;
            host = std::exchange(o.host, nullptr);
        }
        return *this;
    }
    ~Mapping() { release(); }
    void release() {
        if (map_base != nullptr) ::munmap(map_base, map_len);
        map_base = nullptr;
    }
};

// ---- Setup -------------------------------------------------------------------------------------

MpqemuServer::MpqemuServer(const MpqemuServerSettings& settings) : settings_(settings) {}

MpqemuServer::~MpqemuServer() = default;

Result<std::unique_ptr<MpqemuServer>> MpqemuServer::create(std::unique_ptr<sdk::DeviceModel> model,
                                                           const MpqemuServerSettings& settings) {
    if (settings.fd < 0) return failf("{}: no mpqemu socket fd given", settings.label);
    std::unique_ptr<MpqemuServer> s(new MpqemuServer(settings));
    s->sock_.reset(settings.fd);
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(s->sock_.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return failf("{}: fd {} is not a socket: {}", settings.label, settings.fd,
                     std::strerror(errno));
    if (type != SOCK_STREAM)
        return failf("{}: fd {} is not a stream socket (mpqemu runs over AF_UNIX SOCK_STREAM)",
                     settings.label, settings.fd);
    s->events_ = std::make_unique<sdk::ServerEvents<MpqemuServer>>(*s);
    auto server = sdk::ModelServer::create(std::move(model), s->events_.get(), settings.model);
    if (!server) return fail(server.error().context(settings.label));
    s->server_ = std::move(server).value();
    int ev = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ev < 0) return failf("{}: eventfd: {}", settings.label, std::strerror(errno));
    s->stop_event_.reset(ev);
    s->update_windows();
    return s;
}

void MpqemuServer::stop() {
    if (stop_event_) signal_eventfd(stop_event_.get());
}

// ---- Serving -----------------------------------------------------------------------------------

Result<void> MpqemuServer::run() {
    if (ran_) return failf("{}: the proxy connection was already served", settings_.label);
    ran_ = true;
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) return failf("{}: epoll_create1: {}", settings_.label, std::strerror(errno));
    auto watch = [&](int fd, uint32_t tag) {
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.u32 = tag;
        return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) == 0;
    };
    if (!watch(sock_.get(), kTagSocket) || !watch(stop_event_.get(), kTagStop) ||
        (settings_.stop_fd >= 0 && !watch(settings_.stop_fd, kTagStop)))
        return failf("{}: epoll_ctl: {}", settings_.label, std::strerror(errno));
    log::info("{}: serving the mpqemu proxy on fd {}", settings_.label, sock_.get());

    RecvOptions ropt;
    ropt.timeout_ms = settings_.io_timeout_ms;
    Result<void> outcome = ok();
    while (true) {
        epoll_event evs[4];
        const int nev = ::epoll_wait(epoll_.get(), evs, 4, -1);
        if (nev < 0) {
            if (errno == EINTR) continue;
            outcome = failf("{}: epoll_wait: {}", settings_.label, std::strerror(errno));
            break;
        }
        bool readable = false, stop = false, resampled = false;
        for (int i = 0; i < nev; ++i) {
            readable = readable || evs[i].data.u32 == kTagSocket;
            stop = stop || evs[i].data.u32 == kTagStop;
            resampled = resampled || evs[i].data.u32 == kTagResample;
        }
        if (stop) {
            log::info("{}: stopped", settings_.label);
            break;
        }
        if (resampled) resample();
        if (!readable) continue;
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
    }
    watch_resample(false);
    epoll_.reset();
    sock_.reset();
    sysmem_.clear();
    irqfd_.reset();
    resamplefd_.reset();
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
            return handle_sysmem(msg);
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
    const uint32_t size = server_->config_space().size();
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

Result<void> MpqemuServer::handle_sysmem(Message& msg) {
    ++stats_.sysmem_syncs;
    // The previous set goes first, whatever happens to this one: its fds are QEMU's old view.
    sysmem_.clear();
    auto s = decode_sysmem(msg);
    if (!s) {
        log::error("{}: {}; guest memory is unmapped (DMA fails)", settings_.label,
                   s.error().message);
        return ok();
    }
    if (auto r = map_sysmem(std::move(s->entries), std::move(msg.fds)); !r) {
        sysmem_.clear();
        log::error("{}: SYNC_SYSMEM: {}; guest memory is unmapped (DMA fails)", settings_.label,
                   r.error().message);
    }
    return ok();
}

Result<void> MpqemuServer::map_sysmem(std::vector<SysmemEntry> entries, std::vector<UniqueFd> fds) {
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    for (size_t i = 0; i < entries.size(); ++i) {
        const SysmemEntry& e = entries[i];
        const int fd = fds[i].get();
        struct stat st {};
        if (::fstat(fd, &st) != 0)
            return failf("entry {}: fstat of fd {}: {}", i, fd, std::strerror(errno));
        const auto offset = static_cast<uint64_t>(e.offset);
        // Mapping past the end of a file would turn a DMA there into SIGBUS.
        if (S_ISREG(st.st_mode) && (offset > static_cast<uint64_t>(st.st_size) ||
                                    e.size > static_cast<uint64_t>(st.st_size) - offset))
            return failf(
                "entry {}: offset {:#x} + size {:#x} runs past the end of its file "
                "({:#x} bytes)",
                i, offset, e.size, st.st_size);
        const uint64_t skew = offset % page;
        if (e.size > SIZE_MAX - skew) return failf("entry {}: size {:#x} too large", i, e.size);
        Mapping m;
        m.gpa = e.gpa;
        m.size = e.size;
        m.map_len = static_cast<size_t>(e.size + skew);
        void* p = ::mmap(nullptr, m.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                         static_cast<off_t>(offset - skew));
        if (p == MAP_FAILED)
            return failf("entry {}: mmap of fd {} ({:#x} bytes at offset {:#x}): {}", i, fd,
                         m.map_len, offset - skew, std::strerror(errno));
        m.map_base = p;
        m.host = static_cast<uint8_t*>(p) + skew;
        log::debug("{}: guest memory gpa {:#x} size {:#x} (fd offset {:#x})", settings_.label,
                   e.gpa, e.size, offset);
        sysmem_.push_back(std::move(m));
    }
    // The fds close here: the mappings keep the memory.
    std::sort(sysmem_.begin(), sysmem_.end(),
              [](const Mapping& a, const Mapping& b) { return a.gpa < b.gpa; });
    return ok();
}

Result<void> MpqemuServer::dma(uint64_t gpa, std::span<uint8_t> buf, bool write) {
    size_t done = 0;
    while (done < buf.size()) {
        const uint64_t at = gpa + done;
        if (at < gpa) break;  // wrapped
        const Mapping* hit = nullptr;
        for (const Mapping& m : sysmem_) {
            if (at >= m.gpa && at - m.gpa < m.size) {
                hit = &m;
                break;
            }
        }
        if (hit == nullptr) break;
        const uint64_t off = at - hit->gpa;
        const size_t n =
            static_cast<size_t>(std::min<uint64_t>(buf.size() - done, hit->size - off));
        if (write)
            std::memcpy(hit->host + off, buf.data() + done, n);
        else
            std::memcpy(buf.data() + done, hit->host + off, n);
        done += n;
    }
    if (done == buf.size()) return ok();
    ++stats_.dma_failures;
    return failf(
        "{}: DMA {} of {} bytes at {:#x}: {:#x} is outside the guest memory QEMU shared "
        "(SYNC_SYSMEM: {} ranges)",
        settings_.label, write ? "write" : "read", buf.size(), gpa, gpa + done, sysmem_.size());
}

// ---- Interrupts --------------------------------------------------------------------------------

void MpqemuServer::handle_irqfd(Message& msg) {
    // validate(): exactly two fds.
    watch_resample(false);
    irqfd_ = std::move(msg.fds[0]);
    resamplefd_ = std::move(msg.fds[1]);
    watch_resample(true);
    log::info("{}: SET_IRQFD: INTx irqfd {}, resamplefd {}", settings_.label, irqfd_.get(),
              resamplefd_.get());
    // A line already high (the model raised it before the proxy gave us the fd) is signalled.
    if (server_->intx_line()) signal_intx(true);
}

void MpqemuServer::watch_resample(bool on) {
    if (!epoll_ || !resamplefd_) return;
    if (!on) {
        (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, resamplefd_.get(), nullptr);
        return;
    }
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u32 = kTagResample;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, resamplefd_.get(), &e) != 0)
        log::warn("{}: watching the resamplefd: {}", settings_.label, std::strerror(errno));
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
    signal_eventfd(irqfd_.get());
}

void MpqemuServer::resample() {
    if (!resamplefd_) return;
    uint64_t count = 0;
    // The eventfd is readable (epoll said so), so this does not block. EAGAIN means another
    // reader drained it: nothing to resample. Anything else (EOF or an error: the peer passed
    // something that is no eventfd) would wake us forever, so the fd stops being watched.
    const ssize_t n = ::read(resamplefd_.get(), &count, sizeof count);
    if (n != sizeof count) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        log::warn("{}: the INTx resamplefd is unreadable ({}); no more resampling", settings_.label,
                  n < 0 ? std::strerror(errno) : "end of file");
        watch_resample(false);
        resamplefd_.reset();
        return;
    }
    // Re-signals the irqfd when the model's line is still asserted.
    server_->ack_intx();
}

}  // namespace potemkin::mpqemu
