// The transport-independent loop of a device server process (vfio_user::VfioUserServer,
// mpqemu::MpqemuServer): where clients come from, how a server is stopped, and what one
// connection waits on. The protocols (framing, requests) stay in their folders.
//
// - ServeLoop: a stop eventfd (stop() from any thread or a signal handler) plus an optional
//   extra stop fd (a signalfd from stop_signal_fd()), and the client endpoint: a socket bound
//   at a path (a stale socket removed first, unlinked again at the end) or an inherited fd,
//   either a listening socket (clients accepted one at a time) or one connected client.
// - WaitSet: one connection's epoll set over its socket, the stop fds and whatever else the
//   server watches; built once per connection, which is cheaper per wait than poll()
//   registering every fd each time.
// - ResampleFd: the INTx resample eventfd a client hands over (vfio-user's UNMASK with
//   DATA_EVENTFD, mpqemu's SET_IRQFD), written by the VMM when the guest EOIs.
// - signal_client_eventfd: an interrupt to the client, with failures logged once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sdk/model_server.hpp"

namespace potemkin::sdk {

// What every device server is configured with, whatever its protocol; each server's settings
// add where its clients come from.
struct DeviceServerSettings {
    // The rest of a message once its first bytes arrived (and, for vfio-user, a client's reply
    // to the server's own requests) must come within this many milliseconds; otherwise the
    // connection is dropped.
    int io_timeout_ms = 5000;
    // An extra fd that stops run() when readable (e.g. the signalfd from stop_signal_fd());
    // not owned, not read.
    int stop_fd = -1;
    // Names the server in logs ("edu").
    std::string label = "device";
    ModelServerSettings model;
};

// A device server, whatever its protocol (vfio_user::VfioUserServer, mpqemu::MpqemuServer):
// what `potemkin serve` and a program embedding a server drive.
class DeviceServer {
  public:
    virtual ~DeviceServer() = default;
    DeviceServer(const DeviceServer&) = delete;
    DeviceServer& operator=(const DeviceServer&) = delete;
    // Serves until stopped or until its clients are done (ok), or until the transport itself
    // fails (an error naming what happened).
    virtual Result<void> run() = 0;
    // Thread- and async-signal-safe.
    virtual void stop() = 0;
    // The device; touch it only while run() is not running (it is single-threaded).
    virtual ModelServer& model_server() = 0;

  protected:
    DeviceServer() = default;
};

// Blocks SIGTERM and SIGINT in the calling thread (and the threads it starts later) and returns
// a signalfd that becomes readable when one arrives: give it to a server as its stop_fd, so a
// signal ends run() cleanly (the socket file removed) instead of killing the process mid-way.
Result<UniqueFd> stop_signal_fd();

// Signals an eventfd the client gave us (an interrupt). A failure (the fd is not an eventfd, or
// is closed) loses that interrupt, like a dead line, and never stops serving; it is counted in
// `failures` and logged the first time only.
void signal_client_eventfd(int fd, std::string_view label, std::string_view what,
                           uint64_t& failures);

class WaitSet {
  public:
    // What woke a wait (a bit mask).
    enum Event : uint32_t { socket = 1, stop = 2, resample = 4, doorbell = 16, fast_path = 32 };

    static Result<WaitSet> create();
    Result<void> watch(int fd, Event tag);
    // Before the fd closes: the client may hold the same file, so closing our fd alone would
    // leave it in the set.
    Result<void> unwatch(int fd);
    // Blocks until something is readable, at most timeout_ms (-1: no limit; 0: only looks);
    // returns the mask (0 when the time ran out or a signal interrupted).
    Result<uint32_t> wait(int timeout_ms = -1);

  private:
    UniqueFd ep_;
};

class ResampleFd {
  public:
    explicit ResampleFd(std::string label) : label_(std::move(label)) {}
    // Replaces the fd (an empty one removes it), moving the watch in the attached set.
    void set(UniqueFd fd);
    // Watch in `waits` from now on (null: in none). The set must outlive the attachment.
    void attach(WaitSet* waits);
    bool installed() const { return static_cast<bool>(fd_); }
    int get() const { return fd_.get(); }
    // After a wait reported Event::resample: reads the counter; true when the VMM saw an EOI.
    // An fd that cannot be read (EOF, or an error other than EAGAIN/EINTR: the peer passed
    // something that is no eventfd) would wake the loop forever: it is logged and dropped.
    bool fired();

  private:
    void watch(bool on);
    std::string label_;
    UniqueFd fd_;
    WaitSet* waits_ = nullptr;
};

class ServeLoop {
  public:
    struct Settings {
        // A socket to bind at this path, or an inherited fd (taken over): exactly one.
        std::string socket_path;
        int fd = -1;
        bool remove_stale_socket = true;  // only a socket is ever removed
        bool unlink_on_exit = true;       // the path, if this loop bound it
        int stop_fd = -1;                 // not owned, not read
        std::string label = "device";
    };
    // Binds the path (or checks that the inherited fd is a stream socket) and makes the stop
    // eventfd. A client may connect as soon as this returns.
    static Result<std::unique_ptr<ServeLoop>> create(const Settings& settings);
    ~ServeLoop();
    ServeLoop(const ServeLoop&) = delete;
    ServeLoop& operator=(const ServeLoop&) = delete;

    // True when the inherited fd is a listening socket or the loop bound one; false when it is
    // one connected client.
    bool listening() const { return listening_; }
    // Serves clients one at a time until a stop: accepted ones, or the one inherited connected
    // socket once (later calls: ok, nothing to do). `serve` returns when its client leaves or
    // the loop is stopped; an error from it, or from the listening socket, ends the loop.
    Result<void> run(const std::function<Result<void>(UniqueFd)>& serve);
    // A wait set for one connection: its socket (Event::socket) and the stop fds (Event::stop).
    Result<WaitSet> connection_waits(int sock) const;

    // Thread- and async-signal-safe.
    void stop();
    // A stop was seen by a wait (the loop's own, or the server's through Event::stop).
    void mark_stopped() { stopped_ = true; }
    bool stopped() const { return stopped_; }

  private:
    explicit ServeLoop(const Settings& settings) : settings_(settings) {}
    Result<void> bind_path();
    Result<void> adopt();
    Result<void> watch_stops(WaitSet& waits) const;

    Settings settings_;
    UniqueFd sock_;  // listening, or the one connected client
    UniqueFd stop_event_;
    std::atomic<int> stop_errno_{0};  // a failed stop() (async-signal-safe: logged later)
    bool bound_path_ = false;
    bool listening_ = true;
    bool stopped_ = false;
};

}  // namespace potemkin::sdk
