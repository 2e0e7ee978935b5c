// MpqemuServer: serves one DeviceModel (through a ModelServer) to QEMU's `x-pci-proxy-dev`
// over QEMU's multi-process protocol (mpqemu/protocol.hpp, docs/interop.md,
// ../shared/protocols/mpqemu.md). QEMU runs the guest; this process is the device. The device
// side of `potemkin serve MODEL --mpqemu-fd N`.
//
// What it does:
// - One connected socket (one end of a socketpair; the other is QEMU's `fd=`), one proxy, one
//   device. Strictly request → reply: every request but SYNC_SYSMEM and SET_IRQFD gets a RET.
// - PCI_CFGREAD/PCI_CFGWRITE (len 1, 2, 4): the ModelServer's configuration space. An access
//   past the end of it replies all-ones and is logged (QEMU's own remote exits instead).
// - BAR_READ/BAR_WRITE: the address is absolute (guest-physical, or an I/O port when the
//   message's `memory` flag is clear). It is resolved to (BAR, offset) from the BARs the guest
//   programmed through forwarded config writes and the command register's decode enables
//   (pci::decode_bar: 64-bit BARs and the ROM included). An access that decodes to no BAR, or
//   runs past the end of the one it starts in, reads all-ones and writes nothing; the first
//   one is logged (then counted), and serving goes on.
// - SYNC_SYSMEM: each (gpa, size, offset, fd) is mapped MAP_SHARED (an sdk::GuestRam); the
//   previous set is unmapped and its fds closed on every re-send (QEMU sends one per
//   memory-topology change, between any two requests). The model's DMA is a bounds-checked
//   memcpy into those mappings; an access outside all of them fails (the model sees a DMA
//   error, nothing crashes). A set that cannot be mapped (an entry past the end of its file or
//   overlapping another, mmap refusing the fd) leaves no mappings and is logged; config and
//   BARs still work. Not guarded: a peer that shrinks a file after sending it (a DMA there
//   faults), and the bus-master bit (not enforced, as ModelServer documents).
// - SET_IRQFD: the INTx irqfd and resamplefd. The irqfd is written when the INTx line goes
//   0→1; when the resamplefd fires (the VMM saw the guest's EOI) ModelServer::ack_intx()
//   re-writes it if the line is still asserted. The proxy has no MSI path: MSI requests from
//   the model are dropped (the ModelServer stays in INTx mode). Note that QEMU only routes the
//   irqfd under KVM: under TCG no interrupt reaches the guest.
// - DEVICE_RESET: ModelServer::reset(); RET 0.
// - Every frame is validated (mpqemu_msg_valid's rules plus the decoders'). A malformed one, a
//   RET (the proxy never sends one) or a frame that stalls mid-way for io_timeout_ms ends the
//   connection with an error naming the field. EOF (QEMU went away) ends it cleanly.
//
// Threading: run() serves on the calling thread; every model call happens there. stop() is the
// only call allowed from other threads (and from signal handlers: it writes an eventfd).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "mpqemu/protocol.hpp"
#include "sdk/device_model.hpp"
#include "sdk/guest_ram.hpp"
#include "sdk/model_server.hpp"
#include "sdk/serve_loop.hpp"
#include "sdk/server_events.hpp"

namespace potemkin::mpqemu {

struct MpqemuServerSettings : sdk::DeviceServerSettings {
    // The connected socket to the proxy (inherited; ownership is taken).
    int fd = -1;
};

class MpqemuServer final : public sdk::DeviceServer {
  public:
    // Builds the ModelServer around `model` and checks the socket.
    static Result<std::unique_ptr<MpqemuServer>> create(std::unique_ptr<sdk::DeviceModel> model,
                                                        const MpqemuServerSettings& settings);
    ~MpqemuServer() override;

    // Serves the proxy until it closes the socket or the server is stopped (ok), or until it
    // breaks the protocol or the socket fails (an error naming what happened). Once.
    Result<void> run() override;
    void stop() override;
    sdk::ModelServer& model_server() override { return *server_; }
    struct Stats {
        uint64_t requests = 0;
        uint64_t sysmem_syncs = 0;
        uint64_t unmapped_accesses = 0;  // BAR accesses that decoded to no BAR
        uint64_t bad_config_accesses = 0;
        uint64_t dma_failures = 0;
        uint64_t irqfd_writes = 0;
        uint64_t dropped_msi = 0;
    };
    Stats stats() const { return stats_; }

  private:
    friend class sdk::ServerEvents<MpqemuServer>;
    // A BAR the function decodes right now: region index (0-5, 6 = ROM), kind, range.
    struct Window {
        uint32_t region = 0;
        bool io = false;
        uint64_t base = 0;
        uint64_t size = 0;
    };

    explicit MpqemuServer(const MpqemuServerSettings& settings);
    // The proxy's connection, until it closes, breaks the protocol or a stop.
    Result<void> serve(UniqueFd sock);
    // One validated request. An error ends the connection.
    Result<void> handle(Message& msg);
    Result<void> handle_config(const Message& msg);
    Result<void> handle_bar(const Message& msg);
    void handle_sysmem(Message& msg);
    void handle_irqfd(Message& msg);
    Result<void> reply(uint64_t value);

    // Recomputes windows_ from the configuration space (after config writes and resets).
    void update_windows();
    std::optional<std::pair<uint32_t, uint64_t>> resolve(uint64_t addr, uint64_t size,
                                                         bool memory) const;
    // The model's DMA, from ServerEvents.
    Result<void> dma(uint64_t gpa, std::span<uint8_t> buf, bool write);
    void signal_intx(bool asserted);
    // QEMU's proxy has no MSI: a model's MSI is counted and dropped.
    void signal_msi(unsigned) { ++stats_.dropped_msi; }

    MpqemuServerSettings settings_;
    std::unique_ptr<sdk::ServeLoop> loop_;  // the inherited socket, the stop eventfd
    UniqueFd sock_;                         // the proxy, while served
    std::unique_ptr<sdk::ServerEvents<MpqemuServer>> events_;
    std::unique_ptr<sdk::ModelServer> server_;
    std::vector<Window> windows_;
    sdk::GuestRam sysmem_;  // SYNC_SYSMEM's set
    UniqueFd irqfd_;
    sdk::ResampleFd resamplefd_;  // in the connection's wait set while it is served
    uint64_t signal_failures_ = 0;
    bool ran_ = false;
    Stats stats_;
};

}  // namespace potemkin::mpqemu
