#include "sdk/serve_loop.hpp"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/eventfd.hpp"
#include "common/log.hpp"

namespace potemkin::sdk {

Result<UniqueFd> stop_signal_fd() {
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    if (const int e = ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr); e != 0)
        return failf(Errno{e}, "blocking SIGTERM and SIGINT");
    const int fd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC);
    if (fd < 0) return failf(Errno{errno}, "signalfd");
    return UniqueFd(fd);
}

void signal_client_eventfd(int fd, std::string_view label, std::string_view what,
                           uint64_t& failures) {
    auto r = signal_eventfd(fd);
    if (r) return;
    if (failures++ == 0)
        log::warn("{}: signalling the {}: {} (interrupt lost; logged once)", label, what,
                  r.error().message);
}

// ---- WaitSet -----------------------------------------------------------------------------------

Result<WaitSet> WaitSet::create() {
    WaitSet w;
    w.ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!w.ep_) return failf(Errno{errno}, "epoll_create1");
    return w;
}

Result<void> WaitSet::watch(int fd, Event tag) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u32 = tag;
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &e) != 0)
        return failf(Errno{errno}, "epoll_ctl ADD fd {}", fd);
    return ok();
}

Result<void> WaitSet::unwatch(int fd) {
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0)
        return failf(Errno{errno}, "epoll_ctl DEL fd {}", fd);
    return ok();
}

Result<uint32_t> WaitSet::wait(int timeout_ms) {
    epoll_event evs[8];
    const int n = ::epoll_wait(ep_.get(), evs, 8, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0u;
        return failf(Errno{errno}, "epoll_wait");
    }
    uint32_t mask = 0;
    for (int i = 0; i < n; ++i) mask |= evs[i].data.u32;
    return mask;
}

// ---- ResampleFd --------------------------------------------------------------------------------

void ResampleFd::watch(bool on) {
    if (waits_ == nullptr || !fd_) return;
    auto r = on ? waits_->watch(fd_.get(), WaitSet::resample) : waits_->unwatch(fd_.get());
    if (!r) log::warn("{}: the INTx resamplefd: {}", label_, r.error().message);
}

void ResampleFd::set(UniqueFd fd) {
    watch(false);
    fd_ = std::move(fd);
    watch(true);
}

void ResampleFd::attach(WaitSet* waits) {
    watch(false);
    waits_ = waits;
    watch(true);
}

bool ResampleFd::fired() {
    if (!fd_) return false;
    uint64_t count = 0;
    // The eventfd is readable (epoll said so), so this does not block. EAGAIN means another
    // reader drained it: nothing to resample. Not consume_eventfd(): its poll would be a second
    // system call per EOI, and its bool cannot tell a quiet fd from a broken one.
    const ssize_t n = ::read(fd_.get(), &count, sizeof count);
    if (n == static_cast<ssize_t>(sizeof count)) return true;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
    log::warn("{}: the INTx resamplefd is unreadable ({}); no more resampling", label_,
              n < 0 ? std::strerror(errno) : "end of file");
    set(UniqueFd());
    return false;
}

// ---- ServeLoop ---------------------------------------------------------------------------------

Result<std::unique_ptr<ServeLoop>> ServeLoop::create(const Settings& settings) {
    if (settings.socket_path.empty() == (settings.fd < 0))
        return failf("{}: give exactly one of a socket path and a listening fd", settings.label);
    std::unique_ptr<ServeLoop> loop(new ServeLoop(settings));
    if (settings.fd >= 0) loop->sock_.reset(settings.fd);
    POTEMKIN_TRY_ASSIGN(loop->stop_event_, make_eventfd());
    if (settings.fd >= 0)
        POTEMKIN_TRY(loop->adopt());
    else
        POTEMKIN_TRY(loop->bind_path());
    return loop;
}

ServeLoop::~ServeLoop() {
    if (const int e = stop_errno_.load(); e != 0)
        log::warn("{}: stop() could not signal the stop eventfd: {}", settings_.label,
                  std::strerror(e));
    if (bound_path_ && settings_.unlink_on_exit && ::unlink(settings_.socket_path.c_str()) != 0 &&
        errno != ENOENT)
        log::warn("{}: removing socket '{}': {}", settings_.label, settings_.socket_path,
                  std::strerror(errno));
}

Result<void> ServeLoop::adopt() {
    // An inherited fd: a listening socket, or one already-connected client.
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (::getsockopt(sock_.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0)
        return failf(Errno{errno}, "{}: fd {} is not a socket", settings_.label, sock_.get());
    int type = 0;
    len = sizeof type;
    if (::getsockopt(sock_.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return failf(Errno{errno}, "{}: fd {} is not a socket", settings_.label, sock_.get());
    if (type != SOCK_STREAM)
        return failf("{}: fd {} is not a stream socket (AF_UNIX SOCK_STREAM)", settings_.label,
                     sock_.get());
    listening_ = accepting != 0;
    return ok();
}

Result<void> ServeLoop::bind_path() {
    const std::string& path = settings_.socket_path;
    const std::string& label = settings_.label;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return failf("{}: socket path '{}' is longer than {} bytes", label, path,
                     sizeof addr.sun_path - 1);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return failf("{}: '{}' exists and is not a socket; not removing it", label, path);
        if (!settings_.remove_stale_socket)
            return failf("{}: socket '{}' already exists", label, path);
        if (::unlink(path.c_str()) != 0)
            return failf(Errno{errno}, "{}: removing stale socket '{}'", label, path);
    }
    sock_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock_) return failf(Errno{errno}, "{}: socket", label);
    if (::bind(sock_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        return failf(Errno{errno}, "{}: bind '{}'", label, path);
    bound_path_ = true;
    // One client at a time; a backlog of 1 lets the next one queue while the previous leaves.
    if (::listen(sock_.get(), 1) != 0) return failf(Errno{errno}, "{}: listen '{}'", label, path);
    return ok();
}

void ServeLoop::stop() {
    // Not signal_eventfd(): its error path formats a message, which allocates, and this must
    // stay async-signal-safe. A failure (only a closed stop eventfd) is kept and logged later.
    const int saved = errno;
    const uint64_t one = 1;
    if (stop_event_ && ::write(stop_event_.get(), &one, sizeof one) < 0 && errno != EAGAIN)
        stop_errno_.store(errno);
    errno = saved;
}

Result<void> ServeLoop::watch_stops(WaitSet& waits) const {
    POTEMKIN_TRY(waits.watch(stop_event_.get(), WaitSet::stop));
    if (settings_.stop_fd >= 0) POTEMKIN_TRY(waits.watch(settings_.stop_fd, WaitSet::stop));
    return ok();
}

Result<WaitSet> ServeLoop::connection_waits(int sock) const {
    POTEMKIN_TRY_ASSIGN(WaitSet waits, WaitSet::create());
    POTEMKIN_TRY(waits.watch(sock, WaitSet::socket));
    POTEMKIN_TRY(watch_stops(waits));
    return waits;
}

Result<void> ServeLoop::run(const std::function<Result<void>(UniqueFd)>& serve) {
    if (!listening_) {
        // An inherited connected socket: serve it, then we are done.
        if (!sock_) return ok();
        return serve(std::move(sock_));
    }
    auto waits = connection_waits(sock_.get());
    if (!waits) return fail(waits.error().context(settings_.label));
    while (!stopped_) {
        auto ev = waits->wait();
        if (!ev) return fail(ev.error().context(settings_.label));
        if ((*ev & WaitSet::stop) != 0) {
            stopped_ = true;
            break;
        }
        if ((*ev & WaitSet::socket) == 0) continue;
        const int conn = ::accept4(sock_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
            return failf(Errno{errno}, "{}: accept", settings_.label);
        }
        POTEMKIN_TRY(serve(UniqueFd(conn)));
    }
    log::info("{}: stopped", settings_.label);
    return ok();
}

}  // namespace potemkin::sdk
