// The mpqemu client's state, shared by the files it is split into (private to src/mpqemu):
//   client_connection.cpp  one request/RET exchange, loss, the poll thread's view of the socket,
//                          setting a remote up, respawning it;
//   bar_layout.cpp         sizing the remote's BARs and placing them in its private address
//                          spaces;
//   client.cpp             the HostDevice adapter (what the front-end calls);
//   client_url.cpp         the "mpqemu-fd:" and "qemu:" URLs and their registration.
// The inbox, the poll thread, the eventfd set, loss reporting, the config replay log and the
// external source are the remote link's (hostdev/remote_link.hpp).
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "hostdev/config_log.hpp"
#include "hostdev/remote_link.hpp"
#include "hostdev/what.hpp"
#include "mpqemu/client.hpp"
#include "mpqemu/protocol.hpp"
#include "mpqemu/qemu_process.hpp"
#include "pci/bar.hpp"
#include "pci/registers.hpp"

namespace potemkin::mpqemu {

using hostdev::What;

inline constexpr uint32_t kConfigSize = kConventionalConfigSize;  // 256

// Locks: io_mu_ (the socket: one request/reply at a time) before the link's inbox lock.
// Engine-thread-only state has no lock; the poll thread never touches it.
class MpqemuClient::Impl final : public hostdev::HostDevice,
                                 public std::enable_shared_from_this<Impl>,
                                 private hostdev::RemoteTransport {
  public:
    explicit Impl(MpqemuClientSettings s);
    ~Impl() override { link_.stop_polling(); }

    Result<void> start();

    // ---- HostDevice calls (engine thread; client.cpp) ----
    Result<hostdev::DeviceInfo> info() override;
    Result<hostdev::RegionInfo> region_info(uint32_t index) override;
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) override;
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) override;
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) override;
    Result<void> region_write(uint32_t index, uint64_t offset,
                              std::span<const uint8_t> in) override;
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count) override;
    Result<void> ack_intx() override;
    Result<void> reset() override;
    void close() override;
    hostdev::RemoteLink& link() { return link_; }

    MpqemuBar bar(uint32_t index) const {
        return index < bars_.size() ? bars_[index] : MpqemuBar{};
    }
    pid_t qemu_pid() const {
        std::lock_guard lk(io_mu_);
        return s_.process ? s_.process->pid() : -1;
    }
    uint64_t respawns() const { return respawns_.load(); }

  private:
    // ---- Messages (client_connection.cpp) ----
    // One request and its RET; nothing allocated, `what` formatted only for an error.
    Result<uint64_t> request_locked(Cmd cmd, std::span<const uint8_t> payload, What what);
    Result<void> send_locked(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                             What what);
    Error gone_error(What what) const;
    void lose_locked(const std::string& why);
    Result<uint32_t> cfg_read_locked(uint32_t offset, int len);
    Result<void> cfg_write_locked(uint32_t offset, uint32_t value, int len);
    // Config bytes in aligned accesses of 1, 2 or 4 bytes.
    Result<void> cfg_write_bytes_locked(uint32_t offset, std::span<const uint8_t> bytes);
    // The poll thread's side (hostdev::RemoteTransport).
    Watch connection_watch() override;
    void connection_event(const Watch& watched, short revents) override;
    std::function<void()> try_restore() override;

    // ---- Setup (client_connection.cpp) ----
    Result<void> setup_locked();
    Result<void> sync_sysmem_locked();
    Result<void> set_irqfd_locked();
    void adopt(UniqueFd sock, std::unique_ptr<QemuProcess> process);

    // ---- BAR layout (bar_layout.cpp) ----
    Result<void> probe_bars_locked();
    Result<void> place_bars();
    Result<void> program_bars_locked();

    // ---- Interrupts (client.cpp) ----
    void deliver_intx();

    MpqemuClientSettings s_;
    hostdev::RemoteLink link_;

    mutable std::mutex io_mu_;
    std::string lost_why_;       // why the link went down (io_mu_)
    Message rx_;                 // the last reply, reused: receiving one allocates nothing
    bool rcvtimeo_set_ = false;  // SO_RCVTIMEO bounds the reply wait (setup_locked)
    // The socket the poll thread watches for hang-ups (s_.socket changes on a respawn).
    std::atomic<int> watch_fd_{-1};
    std::atomic<uint64_t> respawns_{0};
    // Never closed before close(): the poll thread may be polling the irqfd.
    UniqueFd irq_fd_, resample_fd_;

    // Engine thread only.
    std::array<MpqemuBar, 7> bars_{};
    uint16_t decode_bits_ = 0;    // what the client keeps on in the remote's command register
    uint16_t guest_command_ = 0;  // the guest's last command value
    // Config bytes the guest wrote (not BARs, command or status), replayed after a respawn.
    hostdev::ConfigLog config_log_;
};

}  // namespace potemkin::mpqemu
