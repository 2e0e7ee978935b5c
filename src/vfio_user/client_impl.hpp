// The vfio-user client's state, shared by the files it is split into (private to src/vfio_user):
//   client_connection.cpp  connecting, one request/reply exchange, serving the server's DMA
//                          requests, loss, the poll thread's view of the socket, reconnecting;
//   client_setup.cpp       what a fresh connection needs: VERSION, DMA maps, IRQ eventfds,
//                          the guest's config writes replayed;
//   client.cpp             the HostDevice adapter (what the front-end calls);
//   client_url.cpp         the "vfio-user:" URL and its registration.
// The inbox, the poll thread, the eventfd set, loss reporting, the config replay log and the
// external source are the remote link's (hostdev/remote_link.hpp).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "hostdev/config_log.hpp"
#include "hostdev/remote_link.hpp"
#include "hostdev/what.hpp"
#include "vfio_user/client.hpp"
#include "vfio_user/fast_path.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin::vfio_user {

using hostdev::What;
using Clock = std::chrono::steady_clock;

// What this client can take in one message: fds it makes room for, and data per transfer.
inline constexpr uint32_t kOurMaxMsgFds = 16;
inline constexpr uint32_t kOurMaxDataXfer = kDefaultMaxDataXferSize;

using hostdev::irq_name;

// A blocking AF_UNIX stream connection to `path` whose sends and receives time out after
// `timeout` (the reply wait depends on it). Errors name the path.
Result<UniqueFd> connect_unix(const std::string& path, std::chrono::milliseconds timeout);

// Locks, taken in this order when nested: io_mu_ (the socket: one exchange at a time), then the
// link's inbox lock. Engine-thread-only state has no lock; the poll thread never touches it.
class VfioUserClient::Impl final : public hostdev::HostDevice,
                                   public std::enable_shared_from_this<Impl>,
                                   private hostdev::RemoteTransport {
  public:
    explicit Impl(VfioUserClientSettings s);
    ~Impl() override { link_.stop_polling(); }

    Result<void> start();

    // ---- HostDevice calls (engine thread; client.cpp) ----
    Result<hostdev::DeviceInfo> info() override;
    Result<hostdev::RegionInfo> region_info(uint32_t index) override;
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) override {
        return region_read(hostdev::kConfigRegion, offset, out);
    }
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) override {
        return region_write(hostdev::kConfigRegion, offset, in);
    }
    Result<void> region_read(uint32_t region, uint64_t offset, std::span<uint8_t> out) override;
    Result<void> region_write(uint32_t region, uint64_t offset,
                              std::span<const uint8_t> in) override;
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count) override;
    Result<void> ack_intx() override;
    Result<void> complete_posted() override;
    Result<void> reset() override;
    void close() override;
    hostdev::RemoteLink& link() { return link_; }

    VfioUserCaps caps() const {
        std::lock_guard lk(io_mu_);
        return caps_;
    }
    uint64_t reconnects() const { return reconnects_.load(); }
    VfioUserStats stats() const;

  private:
    struct Reply {
        Header header;
        std::vector<uint8_t> payload;
        std::vector<UniqueFd> fds;
    };

    // ---- Messages (client_connection.cpp) ----
    // A request and its reply, then the interrupts it raised (the server writes the eventfd
    // before it replies) delivered before the guest's next instruction.
    Result<Reply> request(Command cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                          What what);
    Result<Reply> request_locked(Command cmd, std::span<const uint8_t> payload,
                                 std::span<const int> fds, What what);
    // One request and its reply: the reply stays in rx_ (valid until the next exchange), so
    // the per-access path allocates nothing.
    Result<const Message*> exchange_locked(Command cmd,
                                           std::span<const std::span<const uint8_t>> payload,
                                           std::span<const int> fds, What what);
    // A request with NO_REPLY: sent, not waited for (posted writes).
    Result<void> post_locked(Command cmd, std::span<const std::span<const uint8_t>> payload,
                             What what);
    // While a reply is awaited on a connection with a twin socket: waits until the main socket
    // is readable, serving the server's requests that come on the twin meanwhile (the server
    // may need them answered before it replies). False: the deadline passed.
    Result<bool> await_main_locked(Clock::time_point deadline);
    void serve_buffered_locked();
    RecvOptions recv_options() const;
    // A server request, answered on `reply_fd` (the socket it came on).
    void serve_locked(const Message& m, int reply_fd);
    // The requests the poll thread read and queued: served before any request of ours goes
    // out (the server waits for their answers first) or when the inbox runs.
    void serve_pending_locked();
    // The poll thread read server requests into pending_: the engine thread serves them.
    void queue_pending_locked();
    // Reads every whole message available on `fd` now (its reader `r`) into pending_, replies
    // dropped. False: the connection was lost.
    bool read_requests_locked(int fd, MessageReader& r, bool twin, bool readable);
    Error gone_error(What what) const;
    void lose_locked(const std::string& why, bool report);
    // The poll thread's side (hostdev::RemoteTransport).
    Watch connection_watch() override;
    void connection_event(const Watch& watched, short revents) override;
    void requests_event(const Watch& watched, short revents) override;
    std::function<void()> try_restore() override;

    // ---- The fast path (client_fast_path.cpp) ----
    // Adopts the area and eventfds the VERSION reply carried (fds from `first`); a failure
    // leaves the connection on plain vfio-user.
    void adopt_fast_path_locked(std::vector<UniqueFd>& fds, uint32_t first);
    // One access through the shared queue (`a` carries a write's data); a read's answer goes
    // to `out` (a.size bytes). A posted write returns once queued.
    Result<void> fast_access_locked(const fast_path::Access& a, std::span<uint8_t> out, What what);
    // Waits until the server completed `count` accesses: spins, then yields, then blocks on the
    // answer eventfd while watching the sockets (a hang-up, the server's DMA requests); the
    // reply deadline holds. A lost connection or a queue that breaks the protocol: the
    // connection is lost and the error says so.
    Result<void> fast_wait_locked(uint64_t count, What what);
    // Before anything goes over the socket: every queued access completed (posted writes
    // first, as on one stream).
    Result<void> fast_drain_locked(What what) {
        return fast_ ? fast_wait_locked(fast_->queue.head(), what) : Result<void>();
    }

    // ---- Setup (client_setup.cpp) ----
    Result<void> setup(UniqueFd sock, bool first);
    Result<void> setup_locked(bool first);
    Result<void> negotiate_locked();
    Result<void> map_dma_locked();
    Result<void> unmap_dma_locked();
    Result<void> query_irqs_locked();
    Result<void> query_bars_locked();
    Result<void> query_ioeventfds_locked();
    // The ioeventfd a guest write of `in` at `offset` of BAR `region` rings, or -1.
    int ioeventfd_for(uint32_t region, uint64_t offset, std::span<const uint8_t> in) const;
    void adopt_twin_locked(UniqueFd fd);
    Result<void> apply_irqs_locked();
    Result<void> irq_trigger_locked(uint32_t index, uint32_t count);
    Result<void> replay_config_locked();
    void adopt(UniqueFd sock);

    // ---- Interrupts (client.cpp) ----
    void deliver_intx();
    void deliver_msi(unsigned vector);
    Result<void> drop_intx_and_unmask();

    VfioUserClientSettings s_;
    hostdev::RemoteLink link_;

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
    bool in_setup_ = false;
    // The twin socket (when agreed in VERSION): the server's requests come on it and are
    // answered on it; ours and their replies stay on sock_.
    UniqueFd twin_;
    MessageReader twin_reader_;
    std::atomic<int> twin_watch_fd_{-1};
    struct Pending {
        Message msg;
        bool twin = false;  // came on (and is answered on) the twin socket
    };
    std::deque<Pending> pending_;  // server requests read by the poll thread, not yet served
    // The ioeventfds the server offered, by BAR (DEVICE_GET_REGION_IO_FDS).
    struct Ioeventfd {
        uint32_t region = 0;
        SubRegionIoFd entry;
        std::shared_ptr<UniqueFd> fd;  // entries may share one
    };
    std::vector<Ioeventfd> ioeventfds_;
    // The fast path, when this connection agreed to it (dropped with the connection).
    struct FastPath {
        fast_path::Area area;
        fast_path::ClientQueue queue;
        UniqueFd kick;    // written when publish() finds the server asleep
        UniqueFd answer;  // the server writes it when we block waiting
    };
    std::unique_ptr<FastPath> fast_;
    std::atomic<uint64_t> fast_accesses_{0};
    std::atomic<uint64_t> fast_kicks_{0};
    std::atomic<uint64_t> fast_blocks_{0};
    std::atomic<uint64_t> ioeventfd_writes_{0};
    std::atomic<uint64_t> served_{0};
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> watch_fd_{-1};
    // A request is waiting for its reply (set by exchange_locked), and how many were made: the
    // poll thread stops watching the socket for data while requests come and go, so that their
    // replies do not wake it (the requesting thread reads them itself).
    std::atomic<bool> in_flight_{false};
    std::atomic<uint64_t> requests_{0};
    std::atomic<uint64_t> reconnects_{0};

    // The interrupt eventfds (io_mu_ to add; the link watches them). Never closed before
    // close(): the poll thread may be polling them, and a closed number could be reused.
    UniqueFd intx_fd_;
    std::vector<UniqueFd> vector_fds_;

    // Poll thread only: requests are under way, so the socket's data is their replies, not
    // for the poll thread; it watches hang-ups only and looks again every 10 ms.
    bool quiet_ = false;
    uint64_t seen_requests_ = 0;
    uint64_t watched_generation_ = 0;

    // Engine thread only (setup runs there too).
    // A posted write went out since the eventfds were last looked at: the next non-posted
    // access looks after its reply (the server raised what the write raised before that reply).
    bool look_after_reply_ = false;
    // A region came with an fd to map (QEMU's rule, hw/vfio-user/device.c): a guest read
    // through such a mapping would not wait behind writes posted on the socket, so posting
    // stops for this device.
    bool mapped_region_ = false;
    std::array<uint64_t, hostdev::kPciRegionCount> region_sizes_{};  // 0: not asked for yet
    hostdev::IrqKind irq_kind_ = hostdev::IrqKind::intx;
    uint32_t irq_count_ = 1;
    hostdev::ConfigLog config_log_;
    std::array<UniqueFd, hostdev::kPciRegionCount> region_fds_;
};

}  // namespace potemkin::vfio_user
