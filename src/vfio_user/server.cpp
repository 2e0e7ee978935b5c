#include "vfio_user/server.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/log.hpp"
#include "sdk/server_events.hpp"

namespace potemkin::vfio_user {

namespace {

// The most DMA regions one client may map: generous for a VM's RAM layout, small enough that a
// hostile client cannot make the server allocate without bound.
constexpr size_t kMaxDmaRegions = 65536;

template <typename... Args>
Unexpected<Error> invalid(fmt::format_string<Args...> f, Args&&... args) {
    return fail(fmt::format(f, std::forward<Args>(args)...), EINVAL);
}

Result<void> no_fds(const Message& msg) {
    if (!msg.fds.empty())
        return invalid("{}: carries {} fds, takes none", command_name(msg.header.cmd),
                       msg.fds.size());
    return ok();
}

void signal_eventfd(int fd) {
    const uint64_t one = 1;
    // An eventfd write only fails when the counter would overflow: the interrupt is then
    // already pending, which is all a signal means.
    ssize_t n = ::write(fd, &one, sizeof one);
    (void)n;
}

std::span<const uint8_t> bytes_of(const std::vector<uint8_t>& v) {
    return std::span<const uint8_t>(v.data(), v.size());
}

}  // namespace

// ---- Pieces ------------------------------------------------------------------------------------

// One DMA_MAP'ed range of the client's (guest) memory.
struct VfioUserServer::DmaRegion {
    uint64_t iova = 0;
    uint64_t size = 0;
    uint32_t flags = 0;   // DMA_MAP flags (READ, WRITE, MMAP, FILE_IO)
    uint64_t offset = 0;  // in the fd
    UniqueFd fd;          // FILE_IO: kept for pread/pwrite; mmap: kept to compare identities
    dev_t dev = 0;
    ino_t ino = 0;
    void* map_base = nullptr;  // the mmap (page-aligned)
    size_t map_len = 0;
    uint8_t* host = nullptr;  // iova → host pointer: host + (iova - this->iova)

    DmaRegion() = default;
    DmaRegion(DmaRegion&& o) noexcept
        : iova(o.iova),
          size(o.size),
          flags(o.flags),
          offset(o.offset),
          fd(std::move(o.fd)),
          dev(o.dev),
          ino(o.ino),
          map_base(std::exchange(o.map_base, nullptr)),
          map_len(o.map_len),
          host(std::exchange(o.host, nullptr)) {}
    DmaRegion& operator=(DmaRegion&&) = delete;
    ~DmaRegion() {
        if (map_base != nullptr) ::munmap(map_base, map_len);
    }
    bool by_message() const { return !fd; }
};

struct VfioUserServer::Connection {
    UniqueFd fd;
    MessageReader reader;  // every read of fd goes through it
    Message rx;            // the request being handled (reused: no allocation per request)
    bool negotiated = false;
    bool close = false;  // drop the connection after this message
    Capabilities client;
};

// ---- Setup -------------------------------------------------------------------------------------

VfioUserServer::VfioUserServer(const VfioUserServerSettings& settings) : settings_(settings) {}

VfioUserServer::~VfioUserServer() {
    disconnect_cleanup();
    if (bound_path_ && settings_.unlink_on_exit) ::unlink(settings_.socket_path.c_str());
}

Result<std::unique_ptr<VfioUserServer>> VfioUserServer::create(
    std::unique_ptr<sdk::DeviceModel> model, const VfioUserServerSettings& settings) {
    if (settings.socket_path.empty() == (settings.listen_fd < 0))
        return failf("{}: give exactly one of a socket path and a listening fd", settings.label);
    std::unique_ptr<VfioUserServer> s(new VfioUserServer(settings));
    if (settings.listen_fd >= 0) s->listen_.reset(settings.listen_fd);
    s->events_ = std::make_unique<sdk::ServerEvents<VfioUserServer>>(*s);
    auto server = sdk::ModelServer::create(std::move(model), s->events_.get(), settings.model);
    if (!server) return fail(server.error().context(settings.label));
    s->server_ = std::move(server).value();
    for (uint32_t i = 0; i < kPciNumRegions; ++i) {
        if (i >= hostdev::kPciRegionCount) continue;  // VGA: absent
        auto info = s->server_->region_info(i);
        if (!info) return fail(info.error().context(settings.label));
        s->region_size_[i] = info->size;
    }
    for (uint32_t i = 0; i < kPciNumIrqs; ++i) {
        s->irq_fds_[i].resize(s->irq_count(i));
        s->irq_masked_[i].assign(s->irq_count(i), false);
        s->irq_pending_[i].assign(s->irq_count(i), false);
    }
    int ev = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ev < 0) return failf("{}: eventfd: {}", settings.label, std::strerror(errno));
    s->stop_event_.reset(ev);
    POTEMKIN_TRY(s->listen());
    return s;
}

Result<void> VfioUserServer::listen() {
    if (listen_) {
        // An inherited fd: a listening socket, or one already-connected client.
        int accepting = 0;
        socklen_t len = sizeof accepting;
        if (::getsockopt(listen_.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0)
            return failf("{}: fd {} is not a socket: {}", settings_.label, listen_.get(),
                         std::strerror(errno));
        listening_ = accepting != 0;
        return ok();
    }
    const std::string& path = settings_.socket_path;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return failf("{}: socket path '{}' is longer than {} bytes", settings_.label, path,
                     sizeof addr.sun_path - 1);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return failf("{}: '{}' exists and is not a socket; not removing it", settings_.label,
                         path);
        if (!settings_.remove_stale_socket)
            return failf("{}: socket '{}' already exists", settings_.label, path);
        if (::unlink(path.c_str()) != 0)
            return failf("{}: removing stale socket '{}': {}", settings_.label, path,
                         std::strerror(errno));
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return failf("{}: socket: {}", settings_.label, std::strerror(errno));
    listen_.reset(fd);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        return failf("{}: bind '{}': {}", settings_.label, path, std::strerror(errno));
    bound_path_ = true;
    // One client at a time; a backlog of 1 lets the next one queue while the previous leaves.
    if (::listen(fd, 1) != 0)
        return failf("{}: listen '{}': {}", settings_.label, path, std::strerror(errno));
    return ok();
}

void VfioUserServer::stop() {
    if (stop_event_) signal_eventfd(stop_event_.get());
}

// ---- Serving -----------------------------------------------------------------------------------

Result<void> VfioUserServer::run() {
    if (!listening_) {
        // An inherited connected socket: serve it, then we are done.
        if (!listen_) return ok();
        return serve_connection(listen_.release());
    }
    while (!stopped_) {
        pollfd p[3] = {{listen_.get(), POLLIN, 0},
                       {stop_event_.get(), POLLIN, 0},
                       {settings_.stop_fd, POLLIN, 0}};
        const nfds_t n = settings_.stop_fd >= 0 ? 3 : 2;
        if (::poll(p, n, -1) < 0) {
            if (errno == EINTR) continue;
            return failf("{}: poll: {}", settings_.label, std::strerror(errno));
        }
        if ((p[1].revents | (n > 2 ? p[2].revents : 0)) != 0) {
            stopped_ = true;
            break;
        }
        if (p[0].revents == 0) continue;
        int conn = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
            return failf("{}: accept: {}", settings_.label, std::strerror(errno));
        }
        POTEMKIN_TRY(serve_connection(conn));
    }
    log::info("{}: stopped", settings_.label);
    return ok();
}

// How the next request is waited for. Busy (requests keep coming, no resample eventfd): a
// blocking recvmsg on the socket alone, bounded by SO_RCVTIMEO = kBusyWaitMs, so a request
// costs one recvmsg and one sendmsg, as between two bare processes. Otherwise, and at least
// every kBusyWaitMs while busy (so that a stop is seen even under a stream of requests):
// epoll_wait over the socket, the stop fds and the INTx resample eventfd, then recvmsg.
namespace {
constexpr int kBusyWaitMs = 50;
}

Result<void> VfioUserServer::serve_connection(int conn_fd) {
    using Clock = std::chrono::steady_clock;
    Connection conn;
    conn.fd.reset(conn_fd);
    conn_ = &conn;
    ++stats_.connections;
    log::info("{}: client connected", settings_.label);
    RecvOptions ropt;
    ropt.max_size = kServerMaxMsgSize;
    ropt.timeout_ms = settings_.io_timeout_ms;
    // An epoll set built once per connection (tags: 0 the socket, 1 a stop request, 2 the INTx
    // resample eventfd): cheaper per wait than poll() registering four fds every time.
    UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    auto watch = [&](int fd, uint32_t tag) {
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.u32 = tag;
        return ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &e) == 0;
    };
    if (!ep || !watch(conn.fd.get(), 0) || !watch(stop_event_.get(), 1) ||
        (settings_.stop_fd >= 0 && !watch(settings_.stop_fd, 1))) {
        log::error("{}: epoll: {}", settings_.label, std::strerror(errno));
        conn.close = true;
    } else {
        epoll_fd_ = ep.get();
        if (intx_unmask_fd_) set_intx_unmask_fd(std::move(intx_unmask_fd_));
    }
    timeval busy_tv{0, kBusyWaitMs * 1000};
    const bool busy_ok =
        ::setsockopt(conn.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &busy_tv, sizeof busy_tv) == 0;
    auto last_epoll = Clock::now();

    // The next request into conn.rx: true; false when there is none yet (an event was handled,
    // or a stop: stopped_); an error drops the client.
    auto receive = [&]() -> Result<bool> {
        RecvOptions o = ropt;
        if (!conn.reader.has_message() && !conn.reader.pending()) {
            if (busy_ok && !intx_unmask_fd_ &&
                Clock::now() - last_epoll < std::chrono::milliseconds(kBusyWaitMs)) {
                RecvOptions busy = ropt;
                busy.rcvtimeo = true;
                auto r = conn.reader.next(conn.fd.get(), conn.rx, busy);
                if (r) return true;
                if (r.error().sys_errno != ETIMEDOUT) return fail(r.error());
                // Quiet for a while, or a piece of a message: on to the full wait.
            }
            if (!conn.reader.pending()) {
                epoll_event evs[4];
                const int nev = ::epoll_wait(ep.get(), evs, 4, -1);
                last_epoll = Clock::now();
                if (nev < 0) {
                    if (errno == EINTR) return false;
                    return failf("epoll_wait: {}", std::strerror(errno));
                }
                bool readable = false, stop = false, unmask = false;
                for (int i = 0; i < nev; ++i) {
                    readable = readable || evs[i].data.u32 == 0;
                    stop = stop || evs[i].data.u32 == 1;
                    unmask = unmask || evs[i].data.u32 == 2;
                }
                if (stop) {
                    stopped_ = true;
                    return false;
                }
                if (unmask && intx_unmask_fd_) {
                    uint64_t count;
                    if (::read(intx_unmask_fd_.get(), &count, sizeof count) == sizeof count)
                        unmask_intx();
                }
                if (!readable) return false;
                o.readable = true;  // epoll said so: no second wait
            }
        }
        POTEMKIN_TRY(conn.reader.next(conn.fd.get(), conn.rx, o));
        return true;
    };

    while (!conn.close && !stopped_) {
        auto got = receive();
        if (!got) {
            if (got.error().sys_errno == ECONNRESET)
                log::info("{}: client disconnected ({})", settings_.label, got.error().message);
            else
                log::warn("{}: dropping the client: {}", settings_.label, got.error().message);
            break;
        }
        if (!*got) continue;
        Message& msg = conn.rx;
        ++stats_.requests;
        auto r = handle(conn, msg);
        if (!r) {
            ++stats_.error_replies;
            const int e = r.error().sys_errno != 0 ? r.error().sys_errno : EINVAL;
            log::warn("{}: {} (msg_id {}): {} → error {}", settings_.label,
                      command_name(msg.header.cmd), msg.header.msg_id, r.error().message, e);
            if (!msg.header.no_reply() && !conn.close) {
                if (auto s = send_message(conn.fd.get(), error_reply_header(msg.header, e)); !s) {
                    log::warn("{}: sending an error reply: {}", settings_.label, s.error().message);
                    break;
                }
            }
        }
    }
    conn_ = nullptr;
    set_intx_unmask_fd(UniqueFd());  // out of the set before it goes
    epoll_fd_ = -1;
    ep.reset();
    disconnect_cleanup();
    return ok();
}

Result<void> VfioUserServer::reply(Connection& conn, const Message& request,
                                   std::span<const std::span<const uint8_t>> payload,
                                   std::span<const int> fds) {
    if (request.header.no_reply()) return ok();
    auto r = send_message(conn.fd.get(), reply_header(request.header), payload, fds);
    if (!r) {
        log::warn("{}: sending the {} reply: {}", settings_.label, command_name(request.header.cmd),
                  r.error().message);
        conn.close = true;  // the stream is in an unknown state
    }
    return ok();
}

Result<void> VfioUserServer::handle(Connection& conn, Message& msg) {
    POTEMKIN_TRY(check_request(msg.header));
    if (msg.fds.size() > kServerMaxMsgFds)
        return invalid("{}: carries {} fds, more than max_msg_fds {}", command_name(msg.header.cmd),
                       msg.fds.size(), kServerMaxMsgFds);
    const auto cmd = static_cast<Command>(msg.header.cmd);
    if (!conn.negotiated && cmd != Command::version)
        return invalid("{}: VERSION must be the first message", command_name(msg.header.cmd));
    switch (cmd) {
        case Command::version:
            return handle_version(conn, msg);
        case Command::dma_map:
            return handle_dma_map(conn, msg);
        case Command::dma_unmap:
            return handle_dma_unmap(conn, msg);
        case Command::device_get_info:
            return handle_get_info(conn, msg);
        case Command::device_get_region_info:
            return handle_region_info(conn, msg);
        case Command::device_get_region_io_fds:
            return handle_region_io_fds(conn, msg);
        case Command::device_get_irq_info:
            return handle_irq_info(conn, msg);
        case Command::device_set_irqs:
            return handle_set_irqs(conn, msg);
        case Command::region_read:
        case Command::region_write:
            return handle_region_access(conn, msg);
        case Command::device_reset:
            return handle_reset(conn, msg);
        case Command::dma_read:
        case Command::dma_write:
            return invalid("{}: a server-to-client command", command_name(msg.header.cmd));
        case Command::region_write_multi:
        case Command::device_feature:
        case Command::mig_data_read:
        case Command::mig_data_write:
            break;
    }
    return invalid("bad command {}", msg.header.cmd);
}

Result<void> VfioUserServer::handle_version(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    if (conn.negotiated) return invalid("VERSION: already negotiated");
    auto v = decode_version(msg.payload);
    if (!v) return fail(v.error());
    POTEMKIN_TRY(check_version_compatible(*v));
    conn.client = v->caps;
    conn.negotiated = true;
    Version mine;
    mine.minor = std::min(v->minor, kMinor);
    mine.caps.max_msg_fds = kServerMaxMsgFds;
    mine.caps.max_data_xfer_size = kDefaultMaxDataXferSize;
    mine.caps.pgsizes = 4096;
    mine.caps.max_dma_maps = kMaxDmaRegions;
    log::info("{}: client speaks vfio-user {}.{}, max_msg_fds {}, max_data_xfer_size {}",
              settings_.label, v->major, v->minor, conn.client.max_msg_fds,
              conn.client.max_data_xfer_size);
    auto payload = encode_version(mine);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

// ---- DMA ---------------------------------------------------------------------------------------

Result<void> VfioUserServer::handle_dma_map(Connection& conn, Message& msg) {
    auto m = decode_dma_map(msg.payload);
    if (!m) return fail(m.error());
    if (msg.fds.size() > 1) return invalid("DMA_MAP: carries {} fds, takes 0 or 1", msg.fds.size());
    const bool has_fd = msg.fds.size() == 1;
    if (!has_fd && (m->flags & (kDmaMapFlagMmap | kDmaMapFlagFileIo)) != 0)
        return invalid("DMA_MAP: flags {:#x} ask for MMAP or FILE_IO but no fd came", m->flags);
    if ((m->flags & kDmaMapFlagMmap) != 0 && (m->flags & kDmaMapFlagFileIo) != 0)
        return invalid("DMA_MAP: flags {:#x} ask for both MMAP and FILE_IO", m->flags);

    DmaRegion r;
    r.iova = m->addr;
    r.size = m->size;
    r.flags = m->flags;
    r.offset = m->offset;
    if (has_fd) {
        struct stat st {};
        if (::fstat(msg.fds[0].get(), &st) != 0)
            return fail(fmt::format("DMA_MAP: fstat of the fd: {}", std::strerror(errno)), EINVAL);
        // Touching a MAP_SHARED page past the end of a file is SIGBUS: refuse up front.
        if (S_ISREG(st.st_mode) && (m->offset > static_cast<uint64_t>(st.st_size) ||
                                    m->size > static_cast<uint64_t>(st.st_size) - m->offset))
            return invalid(
                "DMA_MAP: offset {:#x} + size {:#x} runs past the end of the "
                "{:#x}-byte file",
                m->offset, m->size, st.st_size);
        r.dev = st.st_dev;
        r.ino = st.st_ino;
        r.fd = std::move(msg.fds[0]);
    }

    // Overlaps: an identical mapping (same range, offset, file, flags) is idempotent.
    auto next = dma_.lower_bound(r.iova);
    if (next != dma_.end() && next->first == r.iova && next->second.size == r.size) {
        const DmaRegion& o = next->second;
        if (o.offset == r.offset && o.flags == r.flags && o.by_message() == r.by_message() &&
            o.dev == r.dev && o.ino == r.ino)
            return reply(conn, msg);
    }
    if (next != dma_.end() && next->first < r.iova + r.size)
        return invalid("DMA_MAP: [{:#x}, +{:#x}) overlaps the mapping at {:#x}", r.iova, r.size,
                       next->first);
    if (next != dma_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second.size > r.iova)
            return invalid("DMA_MAP: [{:#x}, +{:#x}) overlaps the mapping at {:#x}", r.iova, r.size,
                           prev->first);
    }
    if (dma_.size() >= kMaxDmaRegions)
        return invalid("DMA_MAP: more than {} mappings", kMaxDmaRegions);

    if (r.fd && (r.flags & kDmaMapFlagFileIo) == 0) {
        const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        const uint64_t base = r.offset & ~(page - 1);
        const uint64_t delta = r.offset - base;
        int prot = 0;
        if ((r.flags & kDmaMapFlagRead) != 0) prot |= PROT_READ;
        if ((r.flags & kDmaMapFlagWrite) != 0) prot |= PROT_WRITE;
        if (r.size + delta > SIZE_MAX) return invalid("DMA_MAP: size {:#x} too large", r.size);
        void* p = ::mmap(nullptr, r.size + delta, prot == 0 ? PROT_NONE : prot, MAP_SHARED,
                         r.fd.get(), static_cast<off_t>(base));
        if (p == MAP_FAILED)
            return fail(fmt::format("DMA_MAP: mmap of [{:#x}, +{:#x}) at offset {:#x}: {}", r.iova,
                                    r.size, r.offset, std::strerror(errno)),
                        EINVAL);
        r.map_base = p;
        r.map_len = r.size + delta;
        r.host = static_cast<uint8_t*>(p) + delta;
    }
    log::debug("{}: DMA_MAP [{:#x}, +{:#x}) flags {:#x} {}", settings_.label, r.iova, r.size,
               r.flags, r.fd ? (r.host ? "mmap" : "file io") : "by message");
    dma_.emplace(r.iova, std::move(r));
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
    } else {
        auto it = dma_.find(u->addr);
        if (it == dma_.end() || it->second.size != u->size)
            return invalid("DMA_UNMAP: no mapping [{:#x}, +{:#x})", u->addr, u->size);
        dma_.erase(it);
    }
    DmaUnmap echo = *u;
    echo.argsz = kDmaUnmapSize;
    auto payload = encode_dma_unmap(echo);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::dma(uint64_t iova, std::span<uint8_t> buf, bool write) {
    const char* dir = write ? "write" : "read";
    size_t done = 0;
    while (done < buf.size()) {
        const uint64_t at = iova + done;
        if (at < iova) return failf("DMA {} at {:#x}: address overflow", dir, iova);
        auto it = dma_.upper_bound(at);
        if (it == dma_.begin())
            return failf("DMA {} at {:#x} (+{}): not mapped by the client", dir, at,
                         buf.size() - done);
        --it;
        const DmaRegion& r = it->second;
        if (at - r.iova >= r.size)
            return failf("DMA {} at {:#x} (+{}): not mapped by the client", dir, at,
                         buf.size() - done);
        const uint32_t need = write ? kDmaMapFlagWrite : kDmaMapFlagRead;
        if ((r.flags & need) == 0)
            return failf("DMA {} at {:#x}: the mapping at {:#x} is not {}able", dir, at, r.iova,
                         dir);
        const uint64_t chunk = std::min<uint64_t>(buf.size() - done, r.size - (at - r.iova));
        auto piece = buf.subspan(done, static_cast<size_t>(chunk));
        if (r.host != nullptr) {
            uint8_t* host = r.host + (at - r.iova);
            if (write)
                std::memcpy(host, piece.data(), piece.size());
            else
                std::memcpy(piece.data(), host, piece.size());
        } else if (r.fd) {
            const off_t off = static_cast<off_t>(r.offset + (at - r.iova));
            ssize_t n = write ? ::pwrite(r.fd.get(), piece.data(), piece.size(), off)
                              : ::pread(r.fd.get(), piece.data(), piece.size(), off);
            if (n != static_cast<ssize_t>(piece.size()))
                return failf("DMA {} at {:#x}: file I/O: {}", dir, at,
                             n < 0 ? std::strerror(errno) : "short transfer");
        } else {
            POTEMKIN_TRY(dma_message(r, at, piece, write));
        }
        done += piece.size();
    }
    return ok();
}

Result<void> VfioUserServer::dma_message(const DmaRegion&, uint64_t iova, std::span<uint8_t> buf,
                                         bool write) {
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

// ---- Device info and regions -------------------------------------------------------------------

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

Result<void> VfioUserServer::handle_region_io_fds(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto req = decode_region_io_fds_request(msg.payload);
    if (!req) return fail(req.error());
    if (req->index >= kPciNumRegions)
        return invalid("DEVICE_GET_REGION_IO_FDS: region {} does not exist ({} regions)",
                       req->index, kPciNumRegions);
    RegionIoFds out;  // no ioeventfds: every access comes as a message
    out.index = req->index;
    auto payload = encode_region_io_fds(out);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::handle_region_access(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    const auto cmd = static_cast<Command>(msg.header.cmd);
    const bool write = cmd == Command::region_write;
    auto a = decode_region_access_view(cmd, false, msg.payload, kDefaultMaxDataXferSize);
    if (!a) return fail(a.error());
    const char* name = write ? "REGION_WRITE" : "REGION_READ";
    if (a->region >= kPciNumRegions)
        return invalid("{}: region {} does not exist ({} regions)", name, a->region,
                       kPciNumRegions);
    const uint64_t size = region_size_[a->region];
    if (a->offset > size || a->count > size - a->offset)
        return invalid("{}: offset {:#x} count {} runs past the end of region {} ({:#x} bytes)",
                       name, a->offset, a->count, a->region, size);
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

// ---- Interrupts --------------------------------------------------------------------------------

uint32_t VfioUserServer::irq_count(uint32_t index) const {
    const sdk::DeviceSpec& spec = server_->spec();
    switch (index) {
        case kIrqIndexIntx:
            return spec.header.interrupt_pin != pci::InterruptPin::none ? 1 : 0;
        case kIrqIndexMsi:
            return spec.msi ? spec.msi->vectors : 0;
        case kIrqIndexMsix:
            return spec.msix ? spec.msix->vectors : 0;
        default:
            return 0;  // ERR, REQ: this server never signals them
    }
}

Result<void> VfioUserServer::handle_irq_info(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto req = decode_irq_info(msg.payload);
    if (!req) return fail(req.error());
    IrqInfo out;
    out.index = req->index;
    out.count = irq_count(req->index);
    out.flags = kIrqInfoFlagEventfd;
    if (req->index == kIrqIndexIntx)
        out.flags |= kIrqInfoFlagMaskable | kIrqInfoFlagAutomasked;
    else if (req->index == kIrqIndexMsi || req->index == kIrqIndexMsix)
        out.flags |= kIrqInfoFlagMaskable;
    auto payload = encode_irq_info(out);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::handle_set_irqs(Connection& conn, Message& msg) {
    auto s = decode_irq_set(msg.payload);
    if (!s) return fail(s.error());
    const uint32_t index = s->index;
    POTEMKIN_TRY(check_irq_set(*s, irq_count(index), msg.fds.size()));
    auto& fds = irq_fds_[index];
    auto& masked = irq_masked_[index];
    auto& pending = irq_pending_[index];
    // Which vectors of [start, start + count) a DATA_BOOL/DATA_NONE action applies to.
    auto selected = [&](uint32_t i) {
        return s->data() != kIrqSetDataBool || s->bools[i - s->start] != 0;
    };
    const uint32_t end = s->start + s->count;
    switch (s->action()) {
        case kIrqSetActionTrigger:
            if (s->data() == kIrqSetDataEventfd) {
                if (msg.fds.empty()) {
                    for (auto& fd : fds) fd.reset();  // disable the index
                } else {
                    for (uint32_t i = s->start; i < end; ++i) {
                        // VFIO: fd -1 clears one vector; a received fd is never -1, so each
                        // one installs.
                        fds[i] = std::move(msg.fds[i - s->start]);
                    }
                }
                if (index == kIrqIndexMsi || index == kIrqIndexMsix) tell_irq_mode();
            } else if (s->count == 0) {
                for (auto& fd : fds) fd.reset();
                if (index == kIrqIndexMsi || index == kIrqIndexMsix) tell_irq_mode();
            } else {
                // Loopback: signal the selected vectors as if the device had.
                for (uint32_t i = s->start; i < end; ++i)
                    if (selected(i) && fds[i]) signal_eventfd(fds[i].get());
            }
            break;
        case kIrqSetActionMask:
            if (s->data() == kIrqSetDataEventfd)
                return invalid("DEVICE_SET_IRQS: MASK with DATA_EVENTFD is not supported");
            for (uint32_t i = s->start; i < end; ++i)
                if (selected(i)) masked[i] = true;
            break;
        case kIrqSetActionUnmask:
            if (s->data() == kIrqSetDataEventfd) {
                if (index != kIrqIndexIntx)
                    return invalid("DEVICE_SET_IRQS: UNMASK with DATA_EVENTFD is for INTx only");
                // The resample eventfd: written by the client when the guest EOIs.
                set_intx_unmask_fd(msg.fds.empty() ? UniqueFd() : std::move(msg.fds[0]));
                break;
            }
            for (uint32_t i = s->start; i < end; ++i) {
                if (!selected(i)) continue;
                if (index == kIrqIndexIntx) {
                    unmask_intx();
                    continue;
                }
                masked[i] = false;
                if (pending[i]) {
                    pending[i] = false;
                    if (fds[i]) signal_eventfd(fds[i].get());
                }
            }
            break;
        default:
            break;
    }
    return reply(conn, msg);
}

void VfioUserServer::tell_irq_mode() {
    auto installed = [&](uint32_t index) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < irq_fds_[index].size(); ++i)
            if (irq_fds_[index][i]) n = i + 1;
        return n;
    };
    const uint32_t msix = installed(kIrqIndexMsix);
    const uint32_t msi = installed(kIrqIndexMsi);
    Result<void> r;
    if (msix > 0) {
        r = server_->set_irqs(hostdev::IrqKind::msix, msix);
    } else if (msi > 0) {
        r = server_->set_irqs(hostdev::IrqKind::msi, msi);
    } else {
        // Back to INTx from whichever mode was on.
        r = server_->set_irqs(server_->irq_mode() == sdk::IrqMode::msix ? hostdev::IrqKind::msix
                                                                        : hostdev::IrqKind::msi,
                              0);
    }
    if (!r) log::warn("{}: set_irqs: {}", settings_.label, r.error().message);
}

void VfioUserServer::signal_intx(bool asserted) {
    if (!asserted || irq_fds_[kIrqIndexIntx].empty()) return;
    auto& masked = irq_masked_[kIrqIndexIntx];
    const auto& fd = irq_fds_[kIrqIndexIntx][0];
    if (masked[0] || !fd) {
        // Masked: ModelServer re-sends the asserted line on ack_intx() after the unmask.
        ++stats_.dropped_interrupts;
        return;
    }
    masked[0] = true;  // auto-masked, as VFIO INTx
    signal_eventfd(fd.get());
}

void VfioUserServer::unmask_intx() {
    if (irq_masked_[kIrqIndexIntx].empty()) return;
    irq_masked_[kIrqIndexIntx][0] = false;
    // Resample: a line that is still asserted is signalled again.
    server_->ack_intx();
}

void VfioUserServer::signal_msi(unsigned vector) {
    const uint32_t index = server_->irq_mode() == sdk::IrqMode::msix ? kIrqIndexMsix : kIrqIndexMsi;
    auto& fds = irq_fds_[index];
    if (vector >= fds.size() || !fds[vector]) {
        ++stats_.dropped_interrupts;
        return;
    }
    if (irq_masked_[index][vector]) {
        irq_pending_[index][vector] = true;
        return;
    }
    signal_eventfd(fds[vector].get());
}

// The INTx resample eventfd, in the connection's wait set. The client holds the same file, so
// closing our fd alone would leave it in the epoll set: remove it first.
void VfioUserServer::set_intx_unmask_fd(UniqueFd fd) {
    if (epoll_fd_ >= 0 && intx_unmask_fd_)
        (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, intx_unmask_fd_.get(), nullptr);
    intx_unmask_fd_ = std::move(fd);
    if (epoll_fd_ >= 0 && intx_unmask_fd_) {
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.u32 = 2;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, intx_unmask_fd_.get(), &e) != 0)
            log::warn("{}: epoll_ctl: {}", settings_.label, std::strerror(errno));
    }
}

void VfioUserServer::disconnect_cleanup() {
    dma_.clear();
    set_intx_unmask_fd(UniqueFd());
    bool had_msi = false;
    for (uint32_t i = 0; i < kPciNumIrqs; ++i) {
        for (auto& fd : irq_fds_[i]) {
            if (fd && (i == kIrqIndexMsi || i == kIrqIndexMsix)) had_msi = true;
            fd.reset();
        }
        irq_masked_[i].assign(irq_masked_[i].size(), false);
        irq_pending_[i].assign(irq_pending_[i].size(), false);
    }
    if (had_msi && server_) tell_irq_mode();
}

}  // namespace potemkin::vfio_user
