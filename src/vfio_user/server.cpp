// VfioUserServer: setup, the serve loop, dispatch and VERSION. The other requests live by
// concern in server_dma.cpp, server_regions.cpp and server_irqs.cpp; the accept/stop loop and
// the wait set are sdk::ServeLoop's, shared with the mpqemu server.
#include "vfio_user/server.hpp"

#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "vfio_user/server_internal.hpp"

namespace potemkin::vfio_user {

using server_detail::bytes_of;
using server_detail::invalid;
using server_detail::kMaxDmaRegions;
using server_detail::no_fds;

// ---- DMA layout
// ----------------------------------------------------------------------------------

Result<DmaLayoutSetting> parse_dma_layout_setting(std::string_view text) {
    if (text == "auto") return DmaLayoutSetting::automatic;
    if (text == "spec") return DmaLayoutSetting::spec;
    if (text == "qemu") return DmaLayoutSetting::qemu;
    return invalid("DMA layout '{}': expected auto, spec or qemu", text);
}

std::string_view dma_layout_setting_name(DmaLayoutSetting setting) {
    switch (setting) {
        case DmaLayoutSetting::automatic:
            return "auto";
        case DmaLayoutSetting::spec:
            return "spec";
        case DmaLayoutSetting::qemu:
            return "qemu";
    }
    return "auto";
}

DmaLayoutChoice choose_dma_layout(DmaLayoutSetting setting, const Capabilities& client) {
    switch (setting) {
        case DmaLayoutSetting::spec:
            return {DmaLayout::spec, "set to spec"};
        case DmaLayoutSetting::qemu:
            return {DmaLayout::qemu, "set to qemu"};
        case DmaLayoutSetting::automatic:
            break;
    }
    // QEMU's client (10.x, hw/vfio-user/proxy.c) offers "write_multiple"; neither libvfio-user
    // nor potemkin's client does. Its presence, whatever its value, is the tell: the other keys
    // QEMU sends (max_msg_fds, max_data_xfer_size, pgsizes, max_dma_maps, migration) are the
    // spec's and any client may send them.
    if (client.write_multiple)
        return {DmaLayout::qemu,
                "auto: the client offered \"write_multiple\", which only QEMU's client sends"};
    return {DmaLayout::spec, "auto: no sign of QEMU's client"};
}

// ---- Setup -------------------------------------------------------------------------------------

VfioUserServer::VfioUserServer(const VfioUserServerSettings& settings)
    : settings_(settings),
      dma_(kMaxDmaRegions),
      intx_unmask_(settings.label),
      doorbells_(settings.label) {}

VfioUserServer::~VfioUserServer() {
    disconnect_cleanup();
}

Result<std::unique_ptr<VfioUserServer>> VfioUserServer::create(
    std::unique_ptr<sdk::DeviceModel> model, const VfioUserServerSettings& settings) {
    if (settings.socket_path.empty() == (settings.listen_fd < 0))
        return failf("{}: give exactly one of a socket path and a listening fd", settings.label);
    UniqueFd inherited(settings.listen_fd);  // ours from here on, whatever fails
    std::unique_ptr<VfioUserServer> s(new VfioUserServer(settings));
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
    // Listening last: a model that fails leaves no socket file behind.
    sdk::ServeLoop::Settings ls;
    ls.socket_path = settings.socket_path;
    ls.fd = inherited.release();
    ls.remove_stale_socket = settings.remove_stale_socket;
    ls.unlink_on_exit = settings.unlink_on_exit;
    ls.stop_fd = settings.stop_fd;
    ls.label = settings.label;
    POTEMKIN_TRY_ASSIGN(s->loop_, sdk::ServeLoop::create(ls));
    return s;
}

void VfioUserServer::stop() {
    loop_->stop();
}

// ---- Serving -----------------------------------------------------------------------------------

Result<void> VfioUserServer::run() {
    return loop_->run([this](UniqueFd conn) { return serve_connection(conn.release()); });
}

// How the next request is waited for. Busy (requests keep coming, no resample eventfd): a
// blocking recvmsg on the socket alone, bounded by SO_RCVTIMEO = kBusyWaitMs, so a request
// costs one recvmsg and one sendmsg, as between two bare processes. Otherwise, and at least
// every kBusyWaitMs while busy (so that a stop is seen even under a stream of requests):
// epoll_wait over the socket, the stop fds and the INTx resample eventfd, then recvmsg.
namespace {
constexpr int kBusyWaitMs = 50;
// While the fast path polls: how often the wait set is looked at (a system call, so not on
// every turn; it bounds how late a message on the socket or a stop is seen).
constexpr auto kFastLook = std::chrono::microseconds(4);
}  // namespace

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
    auto waits = loop_->connection_waits(conn.fd.get());
    if (!waits) {
        log::error("{}: {}", settings_.label, waits.error().message);
        conn.close = true;
    } else {
        intx_unmask_.attach(&*waits);
        // This client's own doorbell eventfds (one that left must not ring through its old ones).
        if (auto r = doorbells_.renew(server_->spec()); !r) {
            log::error("{}: {}", settings_.label, r.error().message);
            conn.close = true;
        }
        doorbells_.attach(&*waits);
    }
    timeval busy_tv{0, kBusyWaitMs * 1000};
    const bool busy_ok =
        ::setsockopt(conn.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &busy_tv, sizeof busy_tv) == 0;
    if (!busy_ok)  // served all the same, every request through epoll_wait (slower)
        log::warn("{}: SO_RCVTIMEO: {}; no busy wait", settings_.label, std::strerror(errno));
    auto last_epoll = Clock::now();

    // The next request into conn.rx: true; false when there is none yet (an event was handled,
    // or a stop: loop_->stopped()); an error drops the client.
    auto receive = [&]() -> Result<bool> {
        RecvOptions o = ropt;
        if (doorbells_.pending() && !conn.reader.has_message()) {
            // A doorbell rang: what the client posted before it is in the socket by now, and
            // reaches the model first.
            POTEMKIN_TRY_ASSIGN(const bool more, wait_readable(conn.fd.get(), 0));
            if (!more) {
                doorbells_.deliver(*server_);
                return false;
            }
            o.readable = true;
            POTEMKIN_TRY(conn.reader.next(conn.fd.get(), conn.rx, o));
            return true;
        }
        if (!conn.reader.has_message() && !conn.reader.pending()) {
            if (busy_ok && !intx_unmask_.installed() && !doorbells_.handed_out() &&
                Clock::now() - last_epoll < std::chrono::milliseconds(kBusyWaitMs)) {
                RecvOptions busy = ropt;
                busy.rcvtimeo = true;
                auto r = conn.reader.next(conn.fd.get(), conn.rx, busy);
                if (r) return true;
                if (r.error().sys_errno != ETIMEDOUT) return fail(r.error());
                // Quiet for a while, or a piece of a message: on to the full wait.
            }
            if (!conn.reader.pending()) {
                POTEMKIN_TRY_ASSIGN(const uint32_t ev, waits->wait());
                last_epoll = Clock::now();
                if ((ev & sdk::WaitSet::stop) != 0) {
                    loop_->mark_stopped();
                    return false;
                }
                if ((ev & sdk::WaitSet::resample) != 0 && intx_unmask_.fired()) unmask_intx();
                if ((ev & sdk::WaitSet::doorbell) != 0) doorbells_.collect();
                if ((ev & sdk::WaitSet::socket) == 0) return false;
                o.readable = true;  // epoll said so: no second wait
            }
        }
        POTEMKIN_TRY(conn.reader.next(conn.fd.get(), conn.rx, o));
        return true;
    };

    // With the fast path: the shared area is served first; the wait set (socket, stops, the
    // kick eventfd, resample, doorbells) is looked at without blocking every kFastLook while
    // polling, and blocked on once the poll window passed (docs/fast-path.md, "Server").
    const auto poll_window = std::chrono::microseconds(settings_.poll_us);
    auto fast_last = Clock::now();
    auto fast_looked = fast_last;
    int fast_cpu = -1;  // where this thread ran at the last look
    auto receive_fast = [&]() -> Result<bool> {
        auto& fp = *conn.fast;
        if (!fp.watched) {
            POTEMKIN_TRY(waits->watch(fp.kick.get(), sdk::WaitSet::fast_path));
            fp.watched = true;
        }
        for (;;) {
            if (conn.reader.has_message()) {
                POTEMKIN_TRY(conn.reader.next(conn.fd.get(), conn.rx, ropt));
                return true;
            }
            const bool served = serve_fast_path(conn);
            if (conn.close) return false;
            auto now = Clock::now();
            if (served) fast_last = now;
            uint32_t ev = 0;
            if (now - fast_last < poll_window) {
                if (now - fast_looked < kFastLook) {
                    // A client on this CPU cannot queue anything while we spin: let it run.
                    if (!served && fp.queue.client_on_cpu(fast_cpu)) {
                        if (::sched_yield() != 0)
                            log::debug("{}: sched_yield: {}", settings_.label,
                                       std::strerror(errno));
                    } else {
                        fast_path::cpu_relax();
                    }
                    continue;
                }
                fast_looked = now;
                fast_cpu = ::sched_getcpu();
                fp.queue.note_cpu(fast_cpu);
                POTEMKIN_TRY_ASSIGN(ev, waits->wait(0));
                // A client sharing this CPU gets it now rather than at the end of our slice.
                if (ev == 0 && ::sched_yield() != 0)
                    log::debug("{}: sched_yield: {}", settings_.label, std::strerror(errno));
            } else {
                if (!fp.queue.sleep_unless_work()) continue;
                ++stats_.fast_path_sleeps;
                auto woke = waits->wait(-1);
                fp.queue.wake();
                if (!woke) return fail(woke.error());
                ev = *woke;
                fast_last = Clock::now();  // poll again after a wake-up
            }
            if ((ev & sdk::WaitSet::fast_path) != 0) consume_eventfd(fp.kick.get());
            if ((ev & sdk::WaitSet::stop) != 0) {
                loop_->mark_stopped();
                return false;
            }
            if ((ev & sdk::WaitSet::resample) != 0 && intx_unmask_.fired()) unmask_intx();
            if ((ev & sdk::WaitSet::doorbell) != 0) doorbells_.collect();
            if ((ev & sdk::WaitSet::socket) != 0) {
                RecvOptions o = ropt;
                o.readable = true;
                POTEMKIN_TRY(conn.reader.next(conn.fd.get(), conn.rx, o));
                return true;
            }
            // Rung doorbells after what the client queued before them (the area, the socket).
            if (doorbells_.pending() && !conn.reader.has_message()) {
                POTEMKIN_TRY_ASSIGN(const bool more, wait_readable(conn.fd.get(), 0));
                if (!more && !fp.queue.has_work()) doorbells_.deliver(*server_);
            }
        }
    };

    while (!conn.close && !loop_->stopped()) {
        auto got = conn.fast ? receive_fast() : receive();
        if (!got) {
            if (got.error().sys_errno == ECONNRESET)
                log::info("{}: client disconnected ({})", settings_.label, got.error().message);
            else
                log::warn("{}: dropping the client: {}", settings_.label, got.error().message);
            break;
        }
        if (*got) serve_request(conn, conn.rx);
        // The request is answered: now the model's deferred work (its DMA), at top level, so
        // a DMA reply we wait for never waits behind a reply the client waits for.
        if (!conn.close) server_->run_deferred();
    }
    conn_ = nullptr;
    if (conn.fast && conn.fast->watched) {
        if (auto r = waits->unwatch(conn.fast->kick.get()); !r)
            log::warn("{}: fast path: {}", settings_.label, r.error().message);
    }
    intx_unmask_.attach(nullptr);  // out of the set before it goes
    doorbells_.attach(nullptr);
    disconnect_cleanup();
    return ok();
}

void VfioUserServer::serve_request(Connection& conn, Message& msg) {
    ++stats_.requests;
    auto r = handle(conn, msg);
    // Fds the handler did not take (a refused message's, or extra ones) close now, not when
    // the next message reuses `msg`: a client passing a copy of its own socket would otherwise
    // keep the connection open after it hung up.
    msg.fds.clear();
    if (r) return;
    ++stats_.error_replies;
    const int e = r.error().sys_errno != 0 ? r.error().sys_errno : EINVAL;
    // The message says which command and field; the request's own prefix only when it does
    // not start with one already (the protocol checks name command and msg_id themselves).
    const std::string prefix =
        fmt::format("{} (msg_id {}): ", command_name(msg.header.cmd), msg.header.msg_id);
    if (r.error().message.starts_with(prefix))
        log::warn("{}: {} → error {}", settings_.label, r.error().message, e);
    else
        log::warn("{}: {}{} → error {}", settings_.label, prefix, r.error().message, e);
    if (msg.header.no_reply() || conn.close) return;
    if (auto s = send_message(conn.fd.get(), error_reply_header(msg.header, e)); !s) {
        log::warn("{}: sending an error reply: {}", settings_.label, s.error().message);
        conn.close = true;
    }
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
    const DmaLayoutChoice layout = choose_dma_layout(settings_.dma_layout, conn.client);
    conn.dma_layout = layout.layout;
    Version mine;
    mine.minor = std::min(v->minor, kMinor);
    mine.caps.max_msg_fds = kServerMaxMsgFds;
    mine.caps.max_data_xfer_size = kDefaultMaxDataXferSize;
    mine.caps.pgsizes = 4096;
    mine.caps.max_dma_maps = kMaxDmaRegions;
    // Twin socket (spec, VERSION reply): our own requests get a socket of their own, so they
    // never sit between the client's requests and our replies. Only when the client can take
    // the fd and will hear of it (a reply is sent).
    UniqueFd client_end;
    if (conn.client.twin_socket_supported && conn.client.max_msg_fds > 0 &&
        !msg.header.no_reply()) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0) {
            conn.twin.reset(pair[0]);
            client_end.reset(pair[1]);
            mine.caps.twin_socket_supported = true;
            mine.caps.twin_socket_fd_index = 0;
        } else {  // served without it: DMA requests go on the main socket
            log::warn("{}: VERSION: socketpair for the twin socket: {}; going on without it",
                      settings_.label, std::strerror(errno));
        }
    }
    log::info("{}: client speaks vfio-user {}.{}, max_msg_fds {}, max_data_xfer_size {}{}",
              settings_.label, v->major, v->minor, conn.client.max_msg_fds,
              conn.client.max_data_xfer_size, conn.twin ? ", twin socket" : "");
    log::info("{}: DMA_READ/DMA_WRITE in the {} layout ({})", settings_.label,
              dma_layout_name(layout.layout), layout.reason);
    std::vector<int> fds;
    if (client_end) fds.push_back(client_end.get());
    if (!msg.header.no_reply()) offer_fast_path(conn, mine.caps, fds);
    auto payload = encode_version(mine);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    // client_end closes here: the client has its copy.
    return reply(conn, msg, parts, fds);
}

}  // namespace potemkin::vfio_user
