#include "vfio_user/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "common/log.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::vfio_user {

namespace vu = vfio_user;
using Clock = std::chrono::steady_clock;

namespace {

// What this client can take in one message: fds it makes room for, and data per transfer.
constexpr uint32_t kOurMaxMsgFds = 16;
constexpr uint32_t kOurMaxDataXfer = kDefaultMaxDataXferSize;
// Region info replies with capabilities are re-requested at their full size, up to this.
constexpr uint32_t kMaxRegionInfoSize = 64 * 1024;
// MSI-X allows 2048 vectors: the most eventfds one interrupt kind can need.
constexpr uint32_t kMaxVectors = 2048;

std::string region_name(uint32_t index) {
    if (index < hostdev::kRomRegion) return fmt::format("BAR{}", index);
    if (index == hostdev::kRomRegion) return "ROM";
    if (index == hostdev::kConfigRegion) return "config";
    return fmt::format("region {}", index);
}

const char* irq_name(uint32_t index) {
    switch (index) {
        case kIrqIndexIntx:
            return "INTx";
        case kIrqIndexMsi:
            return "MSI";
        case kIrqIndexMsix:
            return "MSI-X";
        default:
            return "IRQ";
    }
}

std::span<const uint8_t> bytes_of(const std::vector<uint8_t>& v) {
    return {v.data(), v.size()};
}

uint32_t le32(std::span<const uint8_t> b, size_t off) {
    return uint32_t{b[off]} | (uint32_t{b[off + 1]} << 8) | (uint32_t{b[off + 2]} << 16) |
           (uint32_t{b[off + 3]} << 24);
}

Result<UniqueFd> make_eventfd() {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return fail(fmt::format("eventfd: {}", std::strerror(errno)), errno);
    return UniqueFd(fd);
}

// Reads and resets an eventfd counter; true if it had fired.
bool consume_eventfd(int fd) {
    uint64_t v = 0;
    return ::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v) && v != 0;
}

// Names a request in messages, formatted only when one is needed: the per-access path never
// builds the string. Only ever a parameter (it points at its argument); implicit, so that a
// literal, a string or a lambda returning one can be passed as they are.
class What {
  public:
    What(const char* text)
        : obj_(text), fn_([](const void* p) { return std::string(static_cast<const char*>(p)); }) {}
    What(const std::string& text)
        : obj_(&text), fn_([](const void* p) { return *static_cast<const std::string*>(p); }) {}
    template <typename F, typename = std::enable_if_t<std::is_invocable_r_v<std::string, const F&>>>
    What(const F& make)
        : obj_(&make), fn_([](const void* p) { return (*static_cast<const F*>(p))(); }) {}
    std::string str() const { return fn_(obj_); }

  private:
    const void* obj_;
    std::string (*fn_)(const void*);
};

// A blocking AF_UNIX stream connection to `path`. Non-blocking connect: a listener whose
// backlog is full must not stall the caller (the poll thread retries instead).
Result<UniqueFd> connect_unix(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return failf("socket path '{}' is longer than {} bytes", path, sizeof addr.sun_path - 1);
    std::memcpy(addr.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return fail(fmt::format("socket: {}", std::strerror(errno)), errno);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        const int e = errno;
        return fail(fmt::format("cannot connect to {}: {}", path, std::strerror(e)), e);
    }
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
        return fail(fmt::format("fcntl: {}", std::strerror(errno)), errno);
    // A server that stops reading must not block a send forever either.
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    // Nor a silent one a receive: the request path blocks in recvmsg for the reply (no poll
    // before it), bounded by this timeout.
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

}  // namespace

// ---- Shared state ---------------------------------------------------------------------------
//
// Three locks, always taken in this order when nested: io_mu (the socket: one message
// exchange at a time), in_mu (the inbox and the eventfd tables). Engine-thread-only state has
// no lock; the poll thread never touches it.
class VfioUserClient::Impl : public std::enable_shared_from_this<Impl> {
  public:
    explicit Impl(VfioUserClientSettings s) : s_(std::move(s)) {}
    ~Impl() { stop_poller(); }

    Result<void> start();
    void close();

    // HostDevice calls (engine thread).
    Result<hostdev::DeviceInfo> info();
    Result<hostdev::RegionInfo> region_info(uint32_t index);
    Result<void> read(uint32_t region, uint64_t offset, std::span<uint8_t> out);
    Result<void> write(uint32_t region, uint64_t offset, std::span<const uint8_t> in);
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count);
    Result<void> ack_intx();
    Result<void> reset();
    // Runs what the poll thread queued, and takes the interrupts the eventfds hold right now.
    void drain();
    // Runs what the poll thread queued, if anything: a flag test when nothing was (no system
    // call), so every HostDevice call can start with it.
    void run_inbox() {
        if (inbox_pending_.load(std::memory_order_acquire)) drain();
    }

    VfioUserCaps caps() const {
        std::lock_guard lk(io_mu_);
        return caps_;
    }
    bool connected() const { return up_.load(); }
    uint64_t reconnects() const { return reconnects_.load(); }

  private:
    struct Reply {
        Header header;
        std::vector<uint8_t> payload;
        std::vector<UniqueFd> fds;
    };
    // Config bytes the guest wrote through the front-end, per dword, for replay after a
    // reconnect: the last value of each byte, and when it was written.
    struct ConfigDword {
        std::array<uint8_t, 4> bytes{};
        uint8_t written = 0;  // bit k: byte k holds a value
        uint64_t seq = 0;
    };

    // ---- Messages ----
    Result<Reply> request(Command cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                          What what);
    Result<Reply> request_locked(Command cmd, std::span<const uint8_t> payload,
                                 std::span<const int> fds, What what);
    // One request and its reply: the reply stays in rx_ (valid until the next exchange), so
    // the per-access path allocates nothing.
    Result<const Message*> exchange_locked(Command cmd,
                                           std::span<const std::span<const uint8_t>> payload,
                                           std::span<const int> fds, What what);
    // Serves the server's requests that arrived with a reply and wait in the reader.
    void serve_buffered_locked();
    RecvOptions recv_options() const;
    void serve_locked(const Message& m);
    void serve_later(std::shared_ptr<Message> m, uint64_t generation);
    Error gone_error(What what) const;
    void lose_locked(const std::string& why, bool report);

    // ---- Setup ----
    Result<void> setup(UniqueFd sock, bool first);
    Result<void> negotiate_locked();
    Result<void> map_dma_locked();
    Result<void> unmap_dma_locked();
    Result<void> query_irqs_locked();
    Result<void> apply_irqs_locked();
    Result<void> irq_trigger_locked(uint32_t index, uint32_t count);
    Result<void> replay_config_locked();
    void adopt(UniqueFd sock);
    void on_lost(const std::string& why);

    // ---- Interrupts ----
    void collect_locked();
    void queue(std::function<void()> fn);
    void schedule_locked(bool& post_now);
    void deliver_intx();
    void deliver_msi(unsigned vector);
    Result<void> drop_intx_and_unmask();
    void wake_poller();
    void poll_loop();
    void stop_poller();
    void try_reconnect();

    void record_config(uint32_t offset, std::span<const uint8_t> in);

    VfioUserClientSettings s_;

    // Socket and what was negotiated on it (io_mu_).
    mutable std::mutex io_mu_;
    UniqueFd sock_;
    MessageReader reader_;  // sock_'s incoming bytes
    Message rx_;            // the last reply exchange_locked received
    uint16_t next_id_ = 0;
    VfioUserCaps caps_;
    DeviceInfo device_;
    std::array<uint32_t, 3> irq_counts_{};  // INTx, MSI, MSI-X vectors the device has
    std::array<bool, 3> armed_{};           // which kinds have eventfds on the server now
    std::vector<std::pair<uint64_t, uint64_t>> dma_maps_;  // (iova, size) mapped
    // Some RAM is not mapped with an fd, so the server may send DMA_READ/DMA_WRITE.
    std::atomic<bool> dma_by_message_{true};
    std::atomic<bool> up_{false};
    bool in_setup_ = false;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> watch_fd_{-1};
    // A request is waiting for its reply (set by request_locked), and how many were made: the
    // poll thread stops watching the socket for data while requests come and go, so that their
    // replies do not wake it (the requesting thread reads them itself).
    std::atomic<bool> in_flight_{false};
    std::atomic<uint64_t> requests_{0};
    std::atomic<uint64_t> reconnects_{0};

    // Inbox and eventfds (in_mu_). The eventfds are never closed before close(): the poll thread
    // may be polling them, and a closed number could be reused by anything.
    std::mutex in_mu_;
    std::vector<std::function<void()>> inbox_;
    std::atomic<bool> inbox_pending_{false};  // inbox_ is not empty (read without in_mu_)
    bool drain_posted_ = false;
    UniqueFd wake_fd_;
    UniqueFd intx_fd_;
    std::vector<UniqueFd> vector_fds_;
    // Every interrupt eventfd (tag 0: INTx, v + 1: vector v), so that one epoll_wait tells
    // which fired however many vectors there are; the poll thread polls this one fd.
    UniqueFd irq_ep_;
    Result<void> watch_eventfd(int fd, uint32_t tag);
    bool stopping_ = false;
    bool adopt_pending_ = false;
    std::thread poller_;

    // Engine thread only.
    hostdev::IrqKind irq_kind_ = hostdev::IrqKind::intx;
    uint32_t irq_count_ = 1;
    bool intx_asserted_ = false;
    bool draining_ = false;
    bool closed_ = false;
    bool external_held_ = false;
    std::map<uint32_t, ConfigDword> config_log_;
    uint64_t config_seq_ = 0;
    std::array<UniqueFd, hostdev::kPciRegionCount> region_fds_;
};

// ---- Messages ---------------------------------------------------------------------------------

Error VfioUserClient::Impl::gone_error(What what) const {
    return Error{fmt::format("{}: {}: the server is gone{}", s_.label, what.str(),
                             s_.reconnect ? " (reconnecting)" : ""),
                 ENOTCONN};
}

Result<VfioUserClient::Impl::Reply> VfioUserClient::Impl::request(Command cmd,
                                                                  std::span<const uint8_t> payload,
                                                                  std::span<const int> fds,
                                                                  What what) {
    Result<Reply> r = [&] {
        std::lock_guard lk(io_mu_);
        return request_locked(cmd, payload, fds, what);
    }();
    // Interrupts the request raised (the server writes the eventfd before it replies) reach the
    // front-end now, before the guest's next instruction.
    drain();
    return r;
}

Result<VfioUserClient::Impl::Reply> VfioUserClient::Impl::request_locked(
    Command cmd, std::span<const uint8_t> payload, std::span<const int> fds, What what) {
    std::span<const uint8_t> parts[1] = {payload};
    auto m = exchange_locked(cmd, parts, fds, what);
    if (!m) return fail(m.error());
    Reply reply{rx_.header, std::move(rx_.payload), std::move(rx_.fds)};
    rx_.fds.clear();
    return reply;
}

RecvOptions VfioUserClient::Impl::recv_options() const {
    RecvOptions o;
    o.max_size = kHeaderSize + 2 * kRegionAccessSize + kOurMaxDataXfer;
    o.max_fds = kOurMaxMsgFds;
    o.timeout_ms = static_cast<int>(s_.timeout.count());
    return o;
}

Result<const Message*> VfioUserClient::Impl::exchange_locked(
    Command cmd, std::span<const std::span<const uint8_t>> payload, std::span<const int> fds,
    What what) {
    if (!up_ || !sock_) return fail(gone_error(what));
    in_flight_.store(true, std::memory_order_relaxed);
    requests_.fetch_add(1, std::memory_order_relaxed);
    struct InFlight {
        std::atomic<bool>& flag;
        ~InFlight() { flag.store(false, std::memory_order_relaxed); }
    } in_flight{in_flight_};
    Header h;
    h.msg_id = next_id_++;
    h.cmd = static_cast<uint16_t>(cmd);
    h.flags = kTypeCommand;
    if (auto r = send_message(sock_.get(), h, payload, fds); !r) {
        lose_locked(fmt::format("{}: sending: {}", what.str(), r.error().message), true);
        return fail(gone_error(what));
    }
    h.msg_size = kHeaderSize;
    for (const auto& part : payload) h.msg_size += static_cast<uint32_t>(part.size());
    const auto deadline = Clock::now() + s_.timeout;
    RecvOptions o = recv_options();
    // One blocking recvmsg normally brings the whole reply; connect_unix set SO_RCVTIMEO to
    // s_.timeout, which bounds it.
    o.rcvtimeo = true;
    for (;;) {
        auto r = reader_.next(sock_.get(), rx_, o);
        if (!r && r.error().sys_errno == ETIMEDOUT && Clock::now() < deadline) continue;
        if (!r && r.error().sys_errno == ETIMEDOUT) {
            const std::string text =
                fmt::format("{}: no reply within {} ms", what.str(), s_.timeout.count());
            lose_locked(text, true);
            return fail(Error{fmt::format("{}: {}", s_.label, text), ETIMEDOUT});
        }
        if (!r) {
            lose_locked(fmt::format("{}: {}", what.str(), r.error().message), true);
            return fail(gone_error(what));
        }
        if (rx_.header.is_command()) {
            // A DMA request from the server while it works on ours (the protocol shares one
            // socket for both directions): served inline, since the server waits for it.
            serve_locked(rx_);
            if (!up_) return fail(gone_error(what));
            continue;
        }
        if (rx_.header.msg_id != h.msg_id || rx_.header.cmd != h.cmd) {
            log::debug("{}: dropping a stray reply (id {}, {})", s_.label, rx_.header.msg_id,
                       command_name(rx_.header.cmd));
            continue;
        }
        if (auto ok = check_reply(h, rx_.header); !ok) {
            const int e = ok.error().sys_errno != 0 ? ok.error().sys_errno : EINVAL;
            return fail(Error{fmt::format("{}: {} failed: the server replied {} ({})", s_.label,
                                          what.str(), std::strerror(e), e),
                              e});
        }
        // A request of the server's that came in the same read must not wait for our next
        // request (the server waits for its reply).
        if (reader_.pending()) serve_buffered_locked();
        if (!up_) return fail(gone_error(what));
        return &rx_;
    }
}

void VfioUserClient::Impl::serve_buffered_locked() {
    const RecvOptions o = recv_options();
    while (up_ && reader_.has_message()) {
        Message m;
        if (auto r = reader_.next(sock_.get(), m, o); !r) {
            lose_locked(r.error().message, true);
            return;
        }
        if (m.header.is_command())
            serve_locked(m);
        else
            log::debug("{}: dropping a reply nobody waits for (id {})", s_.label, m.header.msg_id);
    }
}

// DMA_READ / DMA_WRITE from the server, for memory it could not map. Every access goes through
// the front-end's dma_read/dma_write, which checks it against guest RAM and bus mastering.
void VfioUserClient::Impl::serve_locked(const Message& m) {
    const auto cmd = static_cast<Command>(m.header.cmd);
    std::vector<uint8_t> reply;
    int error = 0;
    if (m.header.cmd != static_cast<uint16_t>(Command::dma_read) &&
        m.header.cmd != static_cast<uint16_t>(Command::dma_write)) {
        log::debug("{}: server sent {}: not a command a client serves", s_.label,
                   command_name(m.header.cmd));
        error = EINVAL;
    } else if (closed_ || s_.events == nullptr) {
        error = EFAULT;
    } else {
        auto a = decode_dma_access(cmd, false, m.payload, kOurMaxDataXfer);
        if (!a) {
            error = a.error().sys_errno != 0 ? a.error().sys_errno : EINVAL;
        } else if (cmd == Command::dma_read) {
            std::vector<uint8_t> data(a->count);
            if (auto r = s_.events->dma_read(a->addr, data); !r) {
                log::debug("{}: DMA_READ refused: {}", s_.label, r.error().message);
                error = EFAULT;
            } else {
                reply = encode_dma_access(a->addr, a->count, data);
            }
        } else {
            if (auto r = s_.events->dma_write(a->addr, a->data); !r) {
                log::debug("{}: DMA_WRITE refused: {}", s_.label, r.error().message);
                error = EFAULT;
            } else {
                reply = encode_dma_access(a->addr, a->count);
            }
        }
    }
    if (m.header.no_reply()) return;
    const Header h = error != 0 ? error_reply_header(m.header, error)
                                : reply_header(m.header, static_cast<uint32_t>(reply.size()));
    if (auto r = send_message(sock_.get(), h, bytes_of(reply)); !r)
        lose_locked(
            fmt::format("replying to {}: {}", command_name(m.header.cmd), r.error().message), true);
}

void VfioUserClient::Impl::serve_later(std::shared_ptr<Message> m, uint64_t generation) {
    queue([this, m = std::move(m), generation] {
        std::lock_guard lk(io_mu_);
        if (generation_ != generation || !up_) return;  // that connection is gone
        serve_locked(*m);
    });
}

// The connection is unusable. Called with io_mu_ held, from either thread.
void VfioUserClient::Impl::lose_locked(const std::string& why, bool report) {
    if (!up_) return;
    if (in_setup_) report = false;  // setup reports its own failure, once
    up_ = false;
    watch_fd_ = -1;
    sock_.reset();
    reader_.reset();
    armed_ = {};
    dma_maps_.clear();
    if (report) queue([this, why] { on_lost(why); });
    wake_poller();
}

// Engine thread: tell the front-end, once per loss.
void VfioUserClient::Impl::on_lost(const std::string& why) {
    if (intx_asserted_) {
        intx_asserted_ = false;
        s_.events->intx(false);  // a device that is gone cannot hold its line
    }
    const std::string text = fmt::format("{}: server went away: {}", s_.label, why);
    s_.events->disconnected(s_.reconnect
                                ? fmt::format("{}; reconnecting when a server listens at {} again",
                                              text, s_.socket_path)
                                : text);
}

// ---- Setup --------------------------------------------------------------------------------------

Result<void> VfioUserClient::Impl::start() {
    if (s_.events == nullptr) return failf("{}: no event sink given", s_.label);
    {
        auto w = make_eventfd();
        if (!w) return fail(w.error().context(s_.label));
        wake_fd_ = std::move(*w);
        auto i = make_eventfd();
        if (!i) return fail(i.error().context(s_.label));
        intx_fd_ = std::move(*i);
        irq_ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
        if (!irq_ep_) return failf("{}: epoll_create1: {}", s_.label, std::strerror(errno));
        POTEMKIN_TRY(watch_eventfd(intx_fd_.get(), 0));
    }
    auto sock = connect_unix(s_.socket_path, s_.timeout);
    if (!sock) return fail(sock.error().context(s_.label));
    POTEMKIN_TRY(setup(std::move(*sock), true));
    if (s_.external_source) {
        s_.external_source(+1);
        external_held_ = true;
    }
    poller_ = std::thread([this] { poll_loop(); });
    return ok();
}

// Everything a fresh connection needs, in the order the protocol wants: VERSION first, then
// the device's shape, guest RAM, interrupts, and (on a reconnect) the guest's config writes.
Result<void> VfioUserClient::Impl::setup(UniqueFd sock, bool first) {
    std::lock_guard lk(io_mu_);
    sock_ = std::move(sock);
    reader_.reset();
    ++generation_;
    up_ = true;
    in_setup_ = true;
    auto fail_setup = [&](const Error& e) {
        lose_locked(e.message, false);
        in_setup_ = false;
        return Result<void>(fail(e));
    };
    if (auto r = negotiate_locked(); !r) return fail_setup(r.error());
    auto di = request_locked(Command::device_get_info, encode_device_info(DeviceInfo{}), {},
                             "DEVICE_GET_INFO");
    if (!di) return fail_setup(di.error());
    auto d = decode_device_info(di->payload);
    if (!d) return fail_setup(d.error().context(fmt::format("{}: DEVICE_GET_INFO", s_.label)));
    if ((d->flags & kDeviceFlagPci) == 0)
        return fail_setup(
            Error{fmt::format("{}: the server's device is not a PCI device "
                              "(DEVICE_GET_INFO flags {:#x})",
                              s_.label, d->flags)});
    if (d->num_regions <= hostdev::kConfigRegion)
        return fail_setup(
            Error{fmt::format("{}: the device has {} regions; a PCI device needs "
                              "config space (region 7)",
                              s_.label, d->num_regions)});
    if (!first && (d->num_regions != device_.num_regions || d->num_irqs != device_.num_irqs))
        log::warn("{}: the new server's device has {} regions and {} irqs (was {} and {})",
                  s_.label, d->num_regions, d->num_irqs, device_.num_regions, device_.num_irqs);
    device_ = *d;
    if (auto r = map_dma_locked(); !r) return fail_setup(r.error());
    if (auto r = query_irqs_locked(); !r) return fail_setup(r.error());
    if (auto r = apply_irqs_locked(); !r) return fail_setup(r.error());
    if (!first) {
        if (auto r = replay_config_locked(); !r) return fail_setup(r.error());
    }
    watch_fd_ = sock_.get();
    in_setup_ = false;
    return ok();
}

Result<void> VfioUserClient::Impl::negotiate_locked() {
    Version v;
    v.caps.max_msg_fds = kOurMaxMsgFds;
    v.caps.max_data_xfer_size = kOurMaxDataXfer;
    auto r = request_locked(Command::version, encode_version(v), {}, "VERSION");
    if (!r) return fail(r.error());
    auto peer = decode_version(r->payload);
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
    return ok();
}

// Guest RAM goes to the server as the memfd itself (DMA_MAP with one fd per region): the server
// maps it and DMA never crosses the socket. Regions that cannot be passed that way (a server
// that takes no fds, page sizes that do not fit) are left to DMA_READ/DMA_WRITE messages.
Result<void> VfioUserClient::Impl::map_dma_locked() {
    dma_maps_.clear();
    dma_by_message_ = true;
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
        auto r = request_locked(Command::dma_map, encode_dma_map(m), std::span(&fd, 1),
                                fmt::format("DMA_MAP of RAM {:#x}+{:#x}", m.addr, m.size));
        if (!r) return fail(r.error());
        dma_maps_.emplace_back(m.addr, m.size);
    }
    dma_by_message_ = !all;
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
        auto r = request_locked(Command::device_get_irq_info, encode_irq_info(q), {},
                                fmt::format("DEVICE_GET_IRQ_INFO for {}", irq_name(i)));
        if (!r) return fail(r.error());
        auto info = decode_irq_info(r->payload);
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
    auto r =
        request_locked(Command::device_set_irqs, encode_irq_set(s), {}, "SET_IRQS unmask of INTx");
    if (!r) return fail(r.error());
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
        auto r = request_locked(Command::device_set_irqs, encode_irq_set(s), {}, what);
        if (!r) return fail(r.error());
        armed_[index] = false;
        return ok();
    }
    if (caps_.max_msg_fds == 0)
        return failf("{}: {}: the server takes no fds, so it cannot be given eventfds", s_.label,
                     what);
    std::vector<int> fds;
    {
        std::lock_guard lk(in_mu_);
        if (index == kIrqIndexIntx) {
            fds.push_back(intx_fd_.get());
        } else {
            while (vector_fds_.size() < count) {
                auto e = make_eventfd();
                if (!e) return fail(e.error().context(s_.label));
                POTEMKIN_TRY(
                    watch_eventfd(e->get(), static_cast<uint32_t>(vector_fds_.size()) + 1));
                vector_fds_.push_back(std::move(*e));
            }
            for (uint32_t v = 0; v < count; ++v) fds.push_back(vector_fds_[v].get());
        }
    }
    wake_poller();  // new eventfds to watch
    for (uint32_t start = 0; start < count;) {
        const uint32_t n = std::min(count - start, caps_.max_msg_fds);
        IrqSet s;
        s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger;
        s.index = index;
        s.start = start;
        s.count = n;
        auto r = request_locked(Command::device_set_irqs, encode_irq_set(s),
                                std::span(fds.data() + start, n), what);
        if (!r) return fail(r.error());
        start += n;
    }
    armed_[index] = true;
    return ok();
}

// After a reconnect the device may be a fresh process: give it back every config byte the
// guest wrote through the front-end, in the order they were last written (command register
// after the registers it enables, as the guest did it).
Result<void> VfioUserClient::Impl::replay_config_locked() {
    std::vector<std::pair<uint64_t, uint32_t>> order;
    for (const auto& [dword, d] : config_log_) order.emplace_back(d.seq, dword);
    std::sort(order.begin(), order.end());
    for (const auto& [seq, dword] : order) {
        const ConfigDword& d = config_log_[dword];
        for (unsigned k = 0; k < 4;) {
            if ((d.written & (1u << k)) == 0) {
                ++k;
                continue;
            }
            unsigned j = k;
            while (j < 4 && (d.written & (1u << j)) != 0) ++j;
            const uint32_t off = dword + k;
            auto r = request_locked(Command::region_write,
                                    encode_region_access(off, hostdev::kConfigRegion, j - k,
                                                         std::span(d.bytes.data() + k, j - k)),
                                    {}, fmt::format("replaying config write at {:#x}", off));
            if (!r) return fail(r.error());
            k = j;
        }
    }
    return ok();
}

// Engine thread: a connection the poll thread opened to a server that listens again.
void VfioUserClient::Impl::adopt(UniqueFd sock) {
    {
        std::lock_guard lk(in_mu_);
        adopt_pending_ = false;
    }
    if (closed_) return;
    auto r = setup(std::move(sock), false);
    if (!r) {
        log::info("{}: reconnecting failed, retrying: {}", s_.label, r.error().message);
        wake_poller();
        return;
    }
    ++reconnects_;
    log::warn("{}: reconnected to {}: DMA maps, interrupts and {} config dwords restored", s_.label,
              s_.socket_path, config_log_.size());
    s_.events->reconnected();
}

void VfioUserClient::Impl::record_config(uint32_t offset, std::span<const uint8_t> in) {
    for (size_t i = 0; i < in.size(); ++i) {
        const uint32_t off = offset + static_cast<uint32_t>(i);
        ConfigDword& d = config_log_[off & ~3u];
        d.bytes[off & 3u] = in[i];
        d.written |= static_cast<uint8_t>(1u << (off & 3u));
        d.seq = ++config_seq_;
    }
}

// ---- Interrupts and the inbox ----------------------------------------------------------------

Result<void> VfioUserClient::Impl::watch_eventfd(int fd, uint32_t tag) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u32 = tag;
    if (::epoll_ctl(irq_ep_.get(), EPOLL_CTL_ADD, fd, &e) != 0)
        return failf("{}: epoll_ctl: {}", s_.label, std::strerror(errno));
    return ok();
}

// Moves fired eventfds into the inbox (in_mu_ held): one epoll_wait says which, and only those
// are read.
void VfioUserClient::Impl::collect_locked() {
    if (!irq_ep_) return;
    epoll_event evs[64];
    for (;;) {
        const int n = ::epoll_wait(irq_ep_.get(), evs, 64, 0);
        for (int i = 0; i < n; ++i) {
            const uint32_t tag = evs[i].data.u32;
            if (tag == 0) {
                if (consume_eventfd(intx_fd_.get())) inbox_.push_back([this] { deliver_intx(); });
            } else if (tag - 1 < vector_fds_.size() &&
                       consume_eventfd(vector_fds_[tag - 1].get())) {
                inbox_.push_back([this, v = tag - 1] { deliver_msi(v); });
            }
        }
        if (n < 64) break;
    }
    if (!inbox_.empty()) inbox_pending_.store(true, std::memory_order_release);
}

// Arranges for the inbox to run on the engine thread (in_mu_ held); the post itself happens
// after the lock is released.
void VfioUserClient::Impl::schedule_locked(bool& post_now) {
    post_now = false;
    if (inbox_.empty() || !s_.post || drain_posted_) return;
    drain_posted_ = true;
    post_now = true;
}

void VfioUserClient::Impl::queue(std::function<void()> fn) {
    bool post_now = false;
    {
        std::lock_guard lk(in_mu_);
        inbox_.push_back(std::move(fn));
        inbox_pending_.store(true, std::memory_order_release);
        schedule_locked(post_now);
    }
    if (post_now) {
        s_.post([weak = weak_from_this()] {
            if (auto self = weak.lock()) self->drain();
        });
    }
}

// Engine thread: runs what the poll thread found, and what the eventfds hold right now.
void VfioUserClient::Impl::drain() {
    if (draining_ || closed_) return;
    draining_ = true;
    for (;;) {
        std::vector<std::function<void()>> work;
        {
            std::lock_guard lk(in_mu_);
            collect_locked();
            work.swap(inbox_);
            inbox_pending_.store(false, std::memory_order_release);
            drain_posted_ = false;
        }
        if (work.empty()) break;
        for (auto& fn : work) {
            if (closed_) break;
            fn();
        }
    }
    draining_ = false;
}

void VfioUserClient::Impl::deliver_intx() {
    if (irq_kind_ != hostdev::IrqKind::intx || intx_asserted_) return;
    intx_asserted_ = true;
    s_.events->intx(true);
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
    if (intx_asserted_) {
        intx_asserted_ = false;
        s_.events->intx(false);
    }
    {
        std::lock_guard lk(io_mu_);
        if (!armed_[kIrqIndexIntx]) return ok();
    }
    IrqSet s;
    s.flags = kIrqSetDataNone | kIrqSetActionUnmask;
    s.index = kIrqIndexIntx;
    s.count = 1;
    auto r = request(Command::device_set_irqs, encode_irq_set(s), {}, "SET_IRQS unmask of INTx");
    if (!r) return fail(r.error());
    return ok();
}

void VfioUserClient::Impl::wake_poller() {
    if (!wake_fd_) return;
    const uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
}

// ---- The poll thread ---------------------------------------------------------------------------

void VfioUserClient::Impl::poll_loop() {
    auto next_try = Clock::now();
    std::vector<pollfd> pfds;
    // Requests are under way: the socket's data is their replies, not for this thread. Watch
    // hang-ups only, and look again every millisecond whether the requests have stopped.
    bool quiet = false;
    uint64_t seen_requests = 0;
    for (;;) {
        pfds.clear();
        bool reconnecting = false;
        {
            std::lock_guard lk(in_mu_);
            if (stopping_) return;
            pfds.push_back({wake_fd_.get(), POLLIN, 0});
            pfds.push_back({irq_ep_.get(), POLLIN, 0});  // every interrupt eventfd
            reconnecting = !up_ && s_.reconnect && !adopt_pending_;
        }
        // The idle socket: hang-ups always; data only when the server may send DMA requests
        // (watching every reply would wake this thread on each request for nothing).
        const int sock = up_ ? watch_fd_.load() : -1;
        const uint64_t generation = generation_;
        const size_t sock_index = pfds.size();
        if (sock >= 0) {
            const short ev =
                static_cast<short>(POLLRDHUP | (dma_by_message_ && !quiet ? POLLIN : 0));
            pfds.push_back({sock, ev, 0});
        }
        int timeout = -1;
        if (reconnecting) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(next_try - Clock::now());
            timeout = static_cast<int>(std::max<int64_t>(0, left.count()));
        }
        if (quiet) timeout = timeout < 0 ? 1 : std::min(timeout, 1);
        const int n = ::poll(pfds.data(), pfds.size(), timeout);
        if (quiet) {
            const uint64_t now = requests_.load(std::memory_order_relaxed);
            if (now == seen_requests && !in_flight_.load(std::memory_order_relaxed)) quiet = false;
            seen_requests = now;
        }
        if (n < 0 && errno != EINTR) {
            log::error("{}: poll: {}; interrupts are no longer delivered", s_.label,
                       std::strerror(errno));
            return;
        }
        if (n > 0 && (pfds[0].revents & POLLIN) != 0) (void)consume_eventfd(wake_fd_.get());

        bool fired = false;
        for (size_t i = 1; i < sock_index; ++i) fired = fired || pfds[i].revents != 0;
        if (fired) {
            bool post_now = false;
            {
                std::lock_guard lk(in_mu_);
                collect_locked();
                schedule_locked(post_now);
            }
            if (post_now) {
                s_.post([weak = weak_from_this()] {
                    if (auto self = weak.lock()) self->drain();
                });
            }
        }

        if (sock >= 0 && pfds[sock_index].revents == POLLIN &&
            in_flight_.load(std::memory_order_relaxed)) {
            // Most likely the reply to the request under way, which its thread reads.
            quiet = true;
            seen_requests = requests_.load(std::memory_order_relaxed);
        } else if (sock >= 0 && pfds[sock_index].revents != 0) {
            std::unique_lock lk(io_mu_);
            // The engine thread may have used the socket meanwhile: look again.
            if (up_ && generation_ == generation && sock_) {
                auto readable =
                    reader_.has_message() ? Result<bool>(true) : wait_readable(sock_.get(), 0);
                if (readable && *readable) {
                    RecvOptions o = recv_options();
                    o.readable = true;  // just seen
                    // This message and any more that came in the same read; the engine thread
                    // serves them.
                    std::vector<std::shared_ptr<Message>> commands;
                    do {
                        auto m = std::make_shared<Message>();
                        if (auto r = reader_.next(sock_.get(), *m, o); !r) {
                            lose_locked(r.error().sys_errno == ECONNRESET
                                            ? std::string("the socket was closed")
                                            : r.error().message,
                                        true);
                        } else if (m->header.is_command()) {
                            commands.push_back(std::move(m));
                        } else {
                            log::debug("{}: dropping a reply nobody waits for (id {})", s_.label,
                                       m->header.msg_id);
                        }
                    } while (up_ && reader_.has_message());
                    lk.unlock();
                    for (auto& m : commands) serve_later(std::move(m), generation);
                } else if (!readable) {
                    lose_locked(readable.error().message, true);
                } else if ((pfds[sock_index].revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) {
                    lose_locked("the socket was closed", true);
                }
            }
        }

        if (reconnecting && Clock::now() >= next_try) {
            next_try = Clock::now() + s_.reconnect_interval;
            try_reconnect();
        }
    }
}

// A server listens again: hand the new connection to the engine thread, which owns the
// protocol state the handshake rebuilds.
void VfioUserClient::Impl::try_reconnect() {
    auto sock = connect_unix(s_.socket_path, s_.timeout);
    if (!sock) return;
    {
        std::lock_guard lk(in_mu_);
        adopt_pending_ = true;
    }
    auto shared = std::make_shared<UniqueFd>(std::move(*sock));
    queue([this, shared] { adopt(std::move(*shared)); });
}

void VfioUserClient::Impl::stop_poller() {
    {
        std::lock_guard lk(in_mu_);
        stopping_ = true;
    }
    wake_poller();
    if (poller_.joinable()) poller_.join();
}

void VfioUserClient::Impl::close() {
    if (closed_) return;
    stop_poller();
    {
        std::lock_guard lk(io_mu_);
        if (up_) {
            // Best effort: the server drops our mappings on disconnect anyway.
            if (auto r = unmap_dma_locked(); !r)
                log::debug("{}: closing: {}", s_.label, r.error().message);
        }
        up_ = false;
        watch_fd_ = -1;
        sock_.reset();
    }
    closed_ = true;
    if (external_held_ && s_.external_source) s_.external_source(-1);
    external_held_ = false;
    {
        std::lock_guard lk(in_mu_);
        inbox_.clear();
    }
    for (auto& fd : region_fds_) fd.reset();
}

// ---- HostDevice calls
// ----------------------------------------------------------------------------

Result<hostdev::DeviceInfo> VfioUserClient::Impl::info() {
    run_inbox();
    std::lock_guard lk(io_mu_);
    hostdev::DeviceInfo d;
    d.name = s_.label;
    d.num_regions = device_.num_regions;
    d.num_irqs = device_.num_irqs;
    d.reset_supported = (device_.flags & kDeviceFlagReset) != 0;
    return d;
}

Result<hostdev::RegionInfo> VfioUserClient::Impl::region_info(uint32_t index) {
    run_inbox();
    if (index >= device_.num_regions)
        return failf("{}: region {} does not exist (the device has {})", s_.label, index,
                     device_.num_regions);
    const std::string what = fmt::format("DEVICE_GET_REGION_INFO for {}", region_name(index));
    uint32_t argsz = kRegionInfoSize;
    Reply reply;
    RegionInfo ri;
    // The first reply says how big the capabilities are; ask again with room for them.
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto r = request(Command::device_get_region_info, encode_region_info_request(index, argsz),
                         {}, what);
        if (!r) return fail(r.error());
        auto d = decode_region_info_reply(r->payload);
        if (!d) return fail(d.error().context(fmt::format("{}: {}", s_.label, what)));
        reply = std::move(*r);
        ri = std::move(*d);
        if (ri.argsz <= argsz || ri.argsz > kMaxRegionInfoSize) break;
        argsz = ri.argsz;
    }
    hostdev::RegionInfo out;
    out.index = index;
    out.size = ri.size;
    out.readable = (ri.flags & kRegionFlagRead) != 0;
    out.writable = (ri.flags & kRegionFlagWrite) != 0;
    if (ri.size == 0) return out;  // absent
    if (index < hostdev::kRomRegion) {
        // vfio-user describes a BAR's size, not its kind: that is in the BAR register itself,
        // which VFIO clients read from config space too.
        std::array<uint8_t, 4> bar{};
        POTEMKIN_TRY(read(hostdev::kConfigRegion, 0x10 + 4 * index, bar));
        if (const auto decoded = pci::decode_bar_register(le32(bar, 0))) {
            out.bar_kind = decoded->kind;
            out.prefetchable = decoded->prefetchable;
        }
    } else if (index == hostdev::kRomRegion) {
        out.bar_kind = pci::BarKind::rom;
    }
    if (index < region_fds_.size()) region_fds_[index].reset();
    if ((ri.flags & kRegionFlagMmap) != 0 && !reply.fds.empty() && index < region_fds_.size()) {
        region_fds_[index] = std::move(reply.fds.front());
        out.fd = region_fds_[index].get();
        out.fd_offset = ri.offset;
        if (ri.sparse_mmap) {
            for (const auto& a : *ri.sparse_mmap) {
                if (a.size == 0 || a.offset > ri.size || a.size > ri.size - a.offset) {
                    log::warn(
                        "{}: {} sparse mmap area {:#x}+{:#x} is outside the region: "
                        "ignored",
                        s_.label, region_name(index), a.offset, a.size);
                    continue;
                }
                out.mmap_areas.push_back(hostdev::MmapArea{a.offset, a.size});
            }
        } else {
            out.mmap_areas.push_back(hostdev::MmapArea{0, ri.size});
        }
    }
    if (ri.type)
        log::debug("{}: {} has type {}/{}", s_.label, region_name(index), ri.type->type,
                   ri.type->subtype);
    return out;
}

// The per-access path: one sendmsg and one recvmsg, nothing allocated, the request's name
// formatted only for an error. Reads do not look at the interrupt eventfds afterwards (writes
// do): a device that raises an interrupt because it was read is rare, and its interrupt still
// comes, through the poll thread, a moment later, as any interrupt the device raises by itself.
Result<void> VfioUserClient::Impl::read(uint32_t region, uint64_t offset, std::span<uint8_t> out) {
    run_inbox();
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        const uint64_t chunk_max = caps_.max_data_xfer_size;
        for (size_t done = 0; done < out.size();) {
            const auto n = static_cast<uint32_t>(std::min<uint64_t>(out.size() - done, chunk_max));
            const uint64_t off = offset + done;
            auto what = [&] {
                return fmt::format("REGION_READ of {} at {:#x} ({} bytes)", region_name(region),
                                   off, n);
            };
            const auto head = encode_region_access_head(off, region, n);
            std::span<const uint8_t> parts[1] = {head};
            auto r = exchange_locked(Command::region_read, parts, {}, what);
            if (!r) return fail(r.error());
            auto a = decode_region_access_view(Command::region_read, true, (*r)->payload,
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
    // What the exchange queued (a lost connection's report, the server's requests).
    run_inbox();
    return result;
}

Result<void> VfioUserClient::Impl::write(uint32_t region, uint64_t offset,
                                         std::span<const uint8_t> in) {
    run_inbox();
    if (region == hostdev::kConfigRegion && offset + in.size() <= 4096)
        record_config(static_cast<uint32_t>(offset), in);
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        const uint64_t chunk_max = caps_.max_data_xfer_size;
        for (size_t done = 0; done < in.size();) {
            const auto n = static_cast<uint32_t>(std::min<uint64_t>(in.size() - done, chunk_max));
            const uint64_t off = offset + done;
            auto what = [&] {
                return fmt::format("REGION_WRITE of {} at {:#x} ({} bytes)", region_name(region),
                                   off, n);
            };
            const auto head = encode_region_access_head(off, region, n);
            std::span<const uint8_t> parts[2] = {head, in.subspan(done, n)};
            auto r = exchange_locked(Command::region_write, parts, {}, what);
            if (!r) return fail(r.error());
            done += n;
        }
        return ok();
    }();
    // A write is how a guest makes a device raise an interrupt: it reaches the front-end before
    // the guest's next instruction (the server writes the eventfd before it replies).
    // The line stays up until the guest's EOI (ack_intx), however the handler acknowledged.
    drain();
    return result;
}

Result<void> VfioUserClient::Impl::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    run_inbox();
    const auto index = static_cast<uint32_t>(kind);
    if (index >= 3) return failf("{}: unknown interrupt kind {}", s_.label, index);
    {
        std::lock_guard lk(io_mu_);
        if (up_ && count > irq_counts_[index])
            return failf("{}: {} vectors of {} asked for; the device has {}", s_.label, count,
                         irq_name(index), irq_counts_[index]);
    }
    irq_kind_ = kind;
    irq_count_ = count;
    if (kind != hostdev::IrqKind::intx && intx_asserted_) {
        intx_asserted_ = false;
        s_.events->intx(false);
    }
    // While the server is gone the choice is kept and applied when it comes back.
    Result<void> r = [&] {
        std::lock_guard lk(io_mu_);
        if (!up_) return ok();
        return apply_irqs_locked();
    }();
    drain();
    return r;
}

Result<void> VfioUserClient::Impl::ack_intx() {
    run_inbox();
    if (irq_kind_ != hostdev::IrqKind::intx) return ok();
    return drop_intx_and_unmask();
}

Result<void> VfioUserClient::Impl::reset() {
    run_inbox();
    auto r = request(Command::device_reset, {}, {}, "DEVICE_RESET");
    // What the guest programmed before the reset is not what a reconnect should restore.
    config_log_.clear();
    if (intx_asserted_) {
        intx_asserted_ = false;
        s_.events->intx(false);
    }
    if (!r) return fail(r.error());
    return ok();
}

// ---- VfioUserClient
// ------------------------------------------------------------------------------

VfioUserClient::VfioUserClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

VfioUserClient::~VfioUserClient() {
    close();
}

Result<std::unique_ptr<VfioUserClient>> VfioUserClient::open(VfioUserClientSettings settings) {
    if (settings.label.empty()) settings.label = "vfio-user:" + settings.socket_path;
    if (settings.timeout.count() <= 0)
        return failf("{}: the timeout must be positive", settings.label);
    auto impl = std::make_shared<Impl>(std::move(settings));
    if (auto r = impl->start(); !r) {
        impl->close();
        return fail(r.error());
    }
    return std::unique_ptr<VfioUserClient>(new VfioUserClient(std::move(impl)));
}

Result<hostdev::DeviceInfo> VfioUserClient::info() {
    return impl_->info();
}
Result<hostdev::RegionInfo> VfioUserClient::region_info(uint32_t index) {
    return impl_->region_info(index);
}
Result<void> VfioUserClient::config_read(uint32_t offset, std::span<uint8_t> out) {
    return impl_->read(hostdev::kConfigRegion, offset, out);
}
Result<void> VfioUserClient::config_write(uint32_t offset, std::span<const uint8_t> in) {
    return impl_->write(hostdev::kConfigRegion, offset, in);
}
Result<void> VfioUserClient::region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) {
    return impl_->read(index, offset, out);
}
Result<void> VfioUserClient::region_write(uint32_t index, uint64_t offset,
                                          std::span<const uint8_t> in) {
    return impl_->write(index, offset, in);
}
Result<void> VfioUserClient::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    return impl_->set_irqs(kind, count);
}
Result<void> VfioUserClient::ack_intx() {
    return impl_->ack_intx();
}
Result<void> VfioUserClient::reset() {
    return impl_->reset();
}
void VfioUserClient::close() {
    if (impl_) impl_->close();
}
VfioUserCaps VfioUserClient::caps() const {
    return impl_->caps();
}
bool VfioUserClient::connected() const {
    return impl_->connected();
}
uint64_t VfioUserClient::reconnects() const {
    return impl_->reconnects();
}
void VfioUserClient::poll_events() {
    impl_->drain();
}

// ---- Registration ------------------------------------------------------------------------------

Result<void> register_vfio_user_transport(hostdev::TransportRegistry& transports) {
    return transports.add(
        "vfio-user",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            VfioUserClientSettings s;
            s.socket_path = url.path;
            s.label = "vfio-user:" + url.path;  // parameters would only clutter messages
            for (const auto& [key, value] : url.params) {
                uint64_t n = 0;
                const auto [end, ec] =
                    std::from_chars(value.data(), value.data() + value.size(), n);
                const bool numeric = ec == std::errc() && end == value.data() + value.size();
                if (key == "timeout_ms") {
                    if (!numeric || n == 0 || n > 3'600'000)
                        return failf(
                            "parameter timeout_ms='{}' is not a number of milliseconds "
                            "from 1 to 3600000",
                            value);
                    s.timeout = std::chrono::milliseconds(n);
                } else if (key == "reconnect") {
                    if (!numeric || n > 1)
                        return failf("parameter reconnect='{}' is not 0 or 1", value);
                    s.reconnect = n == 1;
                } else {
                    return failf("unknown parameter '{}' (known: timeout_ms, reconnect)", key);
                }
            }
            s.events = ctx.events;
            s.memory = ctx.memory;
            s.post = ctx.post;
            s.external_source = ctx.external_source;
            auto c = VfioUserClient::open(std::move(s));
            if (!c) return fail(c.error());
            return std::unique_ptr<hostdev::HostDevice>(std::move(*c));
        });
}

}  // namespace potemkin::vfio_user
