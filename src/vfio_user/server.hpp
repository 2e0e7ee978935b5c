// VfioUserServer: serves one DeviceModel (through a ModelServer) to vfio-user clients over an
// AF_UNIX stream socket, one client at a time. The device side of `potemkin serve` and of
// out-of-tree device programs (examples/device/). Protocol: vfio_user/protocol.hpp and
// docs/vfio-user.md.
//
// What it does:
// - VERSION first (major 0, minor min(client, 2)); advertises max_msg_fds 8 and
//   max_data_xfer_size 1 MiB; honours the client's max_data_xfer_size for DMA messages.
// - DMA_MAP with an fd: the range is mmap'ed MAP_SHARED (or, with FILE_IO, accessed with
//   pread/pwrite) and the model's DMA is a bounds-checked memcpy; without an fd the model's DMA
//   becomes DMA_READ/DMA_WRITE requests to the client, on the twin socket when the client
//   offered one (VERSION "twin_socket"), else on the request socket. While it waits for their
//   replies the server keeps serving the client's requests. Their layout is the spec's or
//   QEMU 10's (DmaLayout; VfioUserServerSettings::dma_layout, by default chosen per client
//   from its VERSION capabilities).
// - DMA ordering: the model's deferred work (DeviceServices::defer, where its DMA belongs) runs
//   after the reply to the request that queued it, so a client that answers DMA only when no
//   request of its own is outstanding (QEMU) never waits on us while we wait on it. A model
//   that does message DMA inside a request still works with a client that serves DMA while
//   it waits (potemkin's); the server logs once per connection that QEMU would deadlock.
// - Regions 0-8 in VFIO numbering from ModelServer::region_info (VGA 8 is always absent);
//   REGION_READ/WRITE forward to the ModelServer (config space any offset and length).
// - Interrupts through eventfds from SET_IRQS: INTx (auto-masked when signalled; unmasked by
//   SET_IRQS ACTION_UNMASK or by a resample eventfd installed with UNMASK|DATA_EVENTFD, which
//   also resamples the line: ModelServer::ack_intx), MSI and MSI-X (installing or removing
//   their eventfds tells the ModelServer set_irqs(kind, count)). ERR and REQ have 0 irqs.
// - Disconnect: DMA unmapped, irq fds closed, MSI/MSI-X back to INTx mode; the model and its
//   register state survive and the next client is accepted.
// - Every request is validated; a malformed one gets an error reply (EINVAL unless stated), a
//   framing error (msg_size < 16 or > 1048608, fds truncated, EOF mid-message) closes the
//   connection. Nothing a client sends can crash the server or make it touch memory out of
//   bounds (beyond a client shrinking a file it mapped: see docs/vfio-user.md).
//
// Files, one per concern: server.cpp (setup, serve loop, dispatch), server_dma.cpp,
// server_regions.cpp, server_irqs.cpp; sdk::ServeLoop and sdk::GuestRam are shared with the
// mpqemu server.
//
// Threading: run() serves on the calling thread; every model call happens there. stop() is the
// only call allowed from other threads (and from signal handlers: it writes an eventfd).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "hostdev/host_device.hpp"
#include "sdk/device_model.hpp"
#include "sdk/doorbells.hpp"
#include "sdk/guest_ram.hpp"
#include "sdk/model_server.hpp"
#include "sdk/serve_loop.hpp"
#include "sdk/server_events.hpp"
#include "vfio_user/fast_path.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin::vfio_user {

// Which layout our DMA_READ/DMA_WRITE requests and the client's replies use (DmaLayout).
// automatic: QEMU's layout for a client whose VERSION capabilities say it is QEMU's (it alone
// sends "write_multiple"), the spec's for every other; spec, qemu: that one for every client.
enum class DmaLayoutSetting : uint8_t { automatic, spec, qemu };
// "auto", "spec", "qemu" (what `potemkin serve --dma-layout` takes); anything else is EINVAL.
Result<DmaLayoutSetting> parse_dma_layout_setting(std::string_view text);
std::string_view dma_layout_setting_name(DmaLayoutSetting setting);
// The layout for a client that offered `client` in VERSION, and why (for the log).
struct DmaLayoutChoice {
    DmaLayout layout = DmaLayout::spec;
    std::string reason;
};
DmaLayoutChoice choose_dma_layout(DmaLayoutSetting setting, const Capabilities& client);

struct VfioUserServerSettings : sdk::DeviceServerSettings {
    // DMA_READ/DMA_WRITE layout (only DMA by message uses them: RAM mapped without an fd).
    DmaLayoutSetting dma_layout = DmaLayoutSetting::automatic;
    // Where to listen: bind a new socket at `socket_path`, or use the listening socket
    // `listen_fd` (inherited; ownership is taken). Exactly one must be given.
    std::string socket_path;
    int listen_fd = -1;
    // Remove a stale socket at socket_path before binding. Only a socket is ever removed: any
    // other kind of file makes create() fail.
    bool remove_stale_socket = true;
    // Unlink socket_path when the server is destroyed (only if it bound it).
    bool unlink_on_exit = true;
    // Offer potemkin's shared-memory fast path to a client that asks for it in VERSION
    // (docs/fast-path.md). Clients that do not ask (QEMU, libvfio-user's) get plain vfio-user.
    bool fast_path = true;
    // While a fast-path client is connected, how long the serving thread keeps polling the
    // shared area after the last access before it sleeps on the kick eventfd: a busy core for
    // that long against a wake-up (tens of microseconds across CPUs) for the next access.
    // 0: never poll; every access after a pause pays the wake-up.
    uint32_t poll_us = 50;
};

class VfioUserServer final : public sdk::DeviceServer {
  public:
    // Builds the ModelServer around `model` and starts listening (so a client may connect as
    // soon as this returns; run() accepts it).
    static Result<std::unique_ptr<VfioUserServer>> create(std::unique_ptr<sdk::DeviceModel> model,
                                                          const VfioUserServerSettings& settings);
    ~VfioUserServer() override;

    // Accepts clients one at a time and serves them until stop() or stop_fd. Returns ok when
    // stopped; an error only when the listening socket itself fails.
    Result<void> run() override;
    // Serves one already-connected client until it disconnects or the server is stopped
    // (used by run(); also for a socketpair end handed over by a parent). Ownership is taken.
    Result<void> serve_connection(int conn_fd);
    void stop() override;
    sdk::ModelServer& model_server() override { return *server_; }

    const std::string& socket_path() const { return settings_.socket_path; }
    // Counters for tests and logs.
    struct Stats {
        uint64_t connections = 0;
        uint64_t requests = 0;
        uint64_t error_replies = 0;
        uint64_t dropped_interrupts = 0;     // no eventfd installed, or the vector was masked
        uint64_t fast_path_connections = 0;  // clients that took the fast path
        uint64_t fast_path_accesses = 0;     // region accesses served from the shared area
        uint64_t fast_path_errors = 0;       // of those, answered with an error
        uint64_t fast_path_sleeps = 0;       // times the server slept on the kick eventfd
    };
    Stats stats() const { return stats_; }
    // Doorbell rings that came through ioeventfds (not as REGION_WRITE messages).
    uint64_t doorbell_rings() const { return doorbells_.rings(); }

  private:
    friend class sdk::ServerEvents<VfioUserServer>;
    struct Connection;

    explicit VfioUserServer(const VfioUserServerSettings& settings);

    // One request: replies (or returns an error, sent as an error reply); fatal connection
    // errors are signalled through `conn.close`. server.cpp.
    Result<void> handle(Connection& conn, Message& msg);
    // handle() plus the error reply when it fails; a failure to send marks conn.close.
    void serve_request(Connection& conn, Message& msg);
    Result<void> handle_version(Connection& conn, Message& msg);
    Result<void> reply(Connection& conn, const Message& request,
                       std::span<const std::span<const uint8_t>> payload = {},
                       std::span<const int> fds = {});
    // server_dma.cpp
    Result<void> handle_dma_map(Connection& conn, Message& msg);
    Result<void> handle_dma_unmap(Connection& conn, Message& msg);
    // The model's DMA, from ServerEvents.
    Result<void> dma(uint64_t iova, std::span<uint8_t> buf, bool write);
    Result<void> dma_message(uint64_t iova, std::span<uint8_t> buf, bool write);
    // Waits for the reply to our DMA request `request` (into `out`), serving the client's
    // requests that arrive meanwhile.
    Result<void> await_dma_reply(Connection& conn, const Header& request, Message& out);
    // server_regions.cpp
    Result<void> handle_get_info(Connection& conn, Message& msg);
    Result<void> handle_region_info(Connection& conn, Message& msg);
    Result<void> handle_region_io_fds(Connection& conn, Message& msg);
    Result<void> handle_region_access(Connection& conn, Message& msg);
    Result<void> handle_reset(Connection& conn, Message& msg);
    // Bounds of a region access (both paths): EINVAL naming region, offset and count.
    Result<void> check_region_access(const char* name, uint32_t region, uint64_t offset,
                                     uint64_t count) const;
    // server_fast_path.cpp
    // VERSION: the fast path for this connection when the client asked and can take the fds;
    // the fds to send (appended to `fds`) and the reply capabilities.
    void offer_fast_path(Connection& conn, Capabilities& mine, std::vector<int>& fds);
    // Serves every access queued in the shared area now; true if there was one. A client that
    // breaks the queue's protocol marks conn.close.
    bool serve_fast_path(Connection& conn);
    // One validated access: 0 or an errno, `out` filled for a read.
    int fast_access(const fast_path::Access& a, std::span<uint8_t> out);
    // server_irqs.cpp
    Result<void> handle_irq_info(Connection& conn, Message& msg);
    Result<void> handle_set_irqs(Connection& conn, Message& msg);
    uint32_t irq_count(uint32_t index) const;
    void signal_intx(bool asserted);
    void signal_msi(unsigned vector);
    void signal(int fd);
    void unmask_intx();
    void tell_irq_mode();
    void disconnect_cleanup();

    VfioUserServerSettings settings_;
    std::unique_ptr<sdk::ServerEvents<VfioUserServer>> events_;
    std::unique_ptr<sdk::ModelServer> server_;
    std::unique_ptr<sdk::ServeLoop> loop_;  // the socket, the stop eventfd
    uint64_t region_size_[kPciNumRegions] = {};
    Connection* conn_ = nullptr;  // the client being served (for DMA messages)
    sdk::GuestRam dma_;           // DMA_MAP'ed ranges, by IOVA
    // Interrupt state: eventfds per VFIO irq index and vector, masks, INTx resample fd.
    std::vector<UniqueFd> irq_fds_[kPciNumIrqs];
    std::vector<bool> irq_masked_[kPciNumIrqs];
    std::vector<bool> irq_pending_[kPciNumIrqs];
    sdk::ResampleFd intx_unmask_;      // in the connection's wait set while it is served
    sdk::DoorbellFds doorbells_;       // the model's doorbells, as ioeventfds (server_regions.cpp)
    uint64_t signal_failures_ = 0;     // eventfd writes that failed (logged once)
    uint16_t next_msg_id_ = 0x8000;    // our requests (DMA_READ/WRITE) to the client
    bool awaiting_dma_reply_ = false;  // requests served now are nested in a DMA wait
    std::vector<uint8_t> scratch_;     // REGION_READ data, reused
    Stats stats_;
};

}  // namespace potemkin::vfio_user
