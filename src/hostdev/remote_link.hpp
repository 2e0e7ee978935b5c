// The remote link: the machinery every out-of-process transport's client shares (vfio-user and
// mpqemu today, kernel VFIO next; ARCHITECTURE.md §2). A client is a transport on the link: it
// speaks its protocol, the link does the rest.
//
// What the link does:
// - The event inbox. HostDeviceEvents is only ever called on the engine thread. What other
//   threads find (an interrupt eventfd fired, the connection died, a server DMA request, a new
//   connection to adopt) is queued here and runs on the engine thread: through
//   OpenContext::post when there is one, otherwise at the start of the next HostDevice call
//   (run_inbox(): a flag test, no system call) or of poll_events().
// - The eventfd set. The interrupt eventfds a client gives its device process are watched as one
//   epoll fd: a fired one queues its handler. drain() takes what fired right now (one epoll_wait)
//   on the engine thread, so an interrupt a request raised reaches the front-end before the
//   guest's next instruction.
// - The poll thread: sleeps in poll() on a wake eventfd, the eventfd set and whatever fds the
//   transport wants watched (its socket's hang-ups and the device's requests, and a second
//   channel that carries only the device's requests, such as vfio-user's twin socket);
//   stop/join on close.
// - Posted writes: what became of writes the guest did not wait for (PostedWrites: counted,
//   the first failure of each kind logged).
// - Loss and restore. lost() marks the connection down and reports it to the front-end once per
//   loss (HostDeviceEvents::disconnected, the INTx line dropped). While down, and if the
//   transport can restore (reconnect, respawn), the poll thread asks it to try every
//   restore_interval; what it returns runs on the engine thread, and restored() then tells the
//   front-end (HostDeviceEvents::reconnected).
// - external_source: +1 while the client is open and its device may raise interrupts (connected,
//   or being restored), so a halted guest waits for them; -1 at a loss that will not be
//   restored, and at close.
//
// Threading: the link's calls are engine-thread calls unless they say otherwise. The transport's
// RemoteTransport hooks run on the poll thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "hostdev/host_device.hpp"

namespace potemkin::hostdev {

// What every out-of-process client is opened with, whatever its protocol (the OpenContext
// parts a remote client needs); each client's settings add how to reach its device.
struct RemoteClientSettings {
    std::string label;                        // names the device in messages (the URL)
    std::chrono::milliseconds timeout{5000};  // per reply
    HostDeviceEvents* events = nullptr;       // required
    const vm::GuestMemory* memory = nullptr;  // guest RAM to share; null: none (no DMA map)
    // Runs a function on the engine thread (vm::DeviceContext::post). Null: what the poll
    // thread finds runs at the start of the next HostDevice call (tools, unit tests).
    std::function<void(std::function<void()>)> post;
    // +1 while the client may raise interrupts (every vCPU halted keeps waiting), -1 after.
    std::function<void(int)> external_source;
};

struct RemoteLinkSettings {
    std::string label;                   // names the device in messages
    HostDeviceEvents* events = nullptr;  // required
    // OpenContext::post and ::external_source (null outside a VM).
    std::function<void(std::function<void()>)> post;
    std::function<void(int)> external_source;
    // The transport can reach its device again after a loss (RemoteTransport::try_restore), and
    // how long to wait between attempts.
    bool restore = false;
    std::chrono::milliseconds restore_interval{200};

    // A client's settings as the link needs them.
    static RemoteLinkSettings of(const RemoteClientSettings& client, bool restore,
                                 std::chrono::milliseconds restore_interval) {
        return RemoteLinkSettings{client.label,           client.events, client.post,
                                  client.external_source, restore,       restore_interval};
    }
};

// What the poll thread asks of the transport. Every hook runs on the poll thread.
class RemoteTransport {
  public:
    // The transport's own fd to watch while the connection is up, and for what.
    struct Watch {
        int fd = -1;           // -1: none
        short events = 0;      // poll() events
        int max_wait_ms = -1;  // wake up after this long at the latest (-1: no limit)
        // A second channel on which only the device sends (its requests: vfio-user's twin
        // socket), watched for data and hang-ups whenever it is set; -1: none.
        int requests_fd = -1;
    };
    virtual Watch connection_watch() = 0;
    // What poll() said about `watched` (revents 0: it woke for something else, or timed out).
    virtual void connection_event(const Watch& watched, short revents) = 0;
    // What poll() said about `watched.requests_fd` (called only when it has events).
    virtual void requests_event(const Watch& watched, short revents) {
        (void)watched;
        (void)revents;
    }
    // While the connection is down and RemoteLinkSettings::restore: one attempt to reach the
    // device again (connect, spawn). Returns the engine-thread step that adopts it (set up the
    // connection, then RemoteLink::restored()), or nothing to try again later.
    virtual std::function<void()> try_restore() = 0;

  protected:
    ~RemoteTransport() = default;
};

// Writes the guest does not wait for (posted, as PCI memory writes are): what became of them.
// A posted write that fails cannot fail the guest's access, which completed already; it is
// counted here and logged once per kind, with the count so far, so a flood of them does not
// flood the log. Any thread.
struct PostedWriteStats {
    uint64_t sent = 0;         // handed to the transport
    uint64_t send_failed = 0;  // the transport could not send it (the connection then died)
    uint64_t dropped = 0;      // the device was gone (lost, not yet restored): never sent
};
class PostedWrites {
  public:
    enum class Failure { send_failed, dropped };
    void sent() { sent_.fetch_add(1, std::memory_order_relaxed); }
    // Counts one, and logs the first of its kind (`label`: the device; `why`: what happened).
    void failed(Failure kind, const std::string& label, const std::string& why);
    PostedWriteStats stats() const;
    // One line with the counts, if any write was lost (at close).
    void log_summary(const std::string& label) const;

  private:
    std::atomic<uint64_t> sent_{0}, send_failed_{0}, dropped_{0};
    std::atomic<bool> logged_send_failed_{false}, logged_dropped_{false};
};

class RemoteLink {
  public:
    explicit RemoteLink(RemoteLinkSettings settings);
    ~RemoteLink();  // stops the poll thread
    RemoteLink(const RemoteLink&) = delete;
    RemoteLink& operator=(const RemoteLink&) = delete;

    const std::string& label() const { return s_.label; }
    HostDeviceEvents& events() const { return *s_.events; }

    // ---- Lifetime ----
    // Creates the wake eventfd and the eventfd set; before anything else. `owner` keeps the link
    // alive (the client's shared state): a drain posted to the engine thread runs only while it
    // does, so a post that outlives the client is harmless.
    Result<void> open(std::weak_ptr<const void> owner);
    // The first connection is set up: takes the external source and starts the poll thread.
    Result<void> start(RemoteTransport& transport);
    // Stops and joins the poll thread (idempotent); the transport's hooks are not called after.
    void stop_polling();
    // stop_polling(), the external source given back, the inbox dropped; idempotent. Nothing is
    // delivered after it.
    void close();
    bool closed() const { return closed_; }

    // ---- Connection state (any thread, under the transport's connection lock) ----
    bool up() const { return up_.load(); }
    // A connection is being set up: requests may go out.
    void set_up() { up_ = true; }
    // The connection is unusable: down, the poll thread woken (to watch for a restore), and,
    // with `report`, the front-end told once per loss (the INTx line dropped, then
    // disconnected(text)). False if it was down already.
    bool lost(std::string text, bool report);
    // Engine thread: the transport set up a restored connection. The next loss is reported
    // again; the front-end is told (reconnected()).
    void restored();

    // ---- Eventfds ----
    // Watches `fd` (a non-blocking eventfd the link does not own; it must stay open until
    // close()): each time it fires, `on_fire` runs on the engine thread. Any thread.
    Result<void> watch_eventfd(int fd, std::function<void()> on_fire);
    // Any thread: wakes the poll thread (new eventfds to watch, a state change).
    void wake();

    // ---- The inbox ----
    // Any thread: runs `fn` on the engine thread (posted, or at the next HostDevice call).
    void queue(std::function<void()> fn);
    // Runs what other threads queued, if anything: a flag test when nothing was (no system call),
    // so every HostDevice call can start with it.
    void run_inbox() {
        if (inbox_pending_.load(std::memory_order_acquire)) drain();
    }
    // Runs what was queued and what the eventfds hold right now (one epoll_wait).
    void drain();

    // ---- Posted writes (any thread) ----
    PostedWrites& posted() { return posted_; }
    const PostedWrites& posted() const { return posted_; }

    // ---- The INTx line as the front-end sees it (held until the guest's EOI) ----
    bool intx_asserted() const { return intx_asserted_; }
    void assert_intx();    // intx(true), unless already asserted
    void deassert_intx();  // intx(false), if asserted

  private:
    struct Watched {
        int fd;
        std::function<void()> on_fire;
    };
    void collect_locked();
    bool schedule_locked();
    void post_drain();
    void report_lost(const std::string& text);
    void hold_external(bool hold);
    void poll_loop();

    RemoteLinkSettings s_;
    std::weak_ptr<const void> owner_;
    RemoteTransport* transport_ = nullptr;

    std::atomic<bool> up_{false};
    PostedWrites posted_;

    // The inbox and the eventfd set (in_mu_).
    std::mutex in_mu_;
    std::vector<std::function<void()>> inbox_;
    std::vector<std::function<void()>> running_;  // drain()'s batch, kept for its capacity
    std::atomic<bool> inbox_pending_{false};      // inbox_ is not empty (read without in_mu_)
    bool drain_posted_ = false;
    std::vector<Watched> watched_;
    bool stopping_ = false;
    bool restore_pending_ = false;  // an adoption is queued: do not start another
    // Never closed before the link: the poll thread may be polling them.
    UniqueFd wake_fd_;
    UniqueFd eventfds_;  // epoll over every watched eventfd
    std::thread poller_;

    // Engine thread only.
    bool draining_ = false;
    bool closed_ = false;
    bool loss_reported_ = false;
    bool external_held_ = false;
    bool intx_asserted_ = false;
};

}  // namespace potemkin::hostdev
