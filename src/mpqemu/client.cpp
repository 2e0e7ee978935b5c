#include "mpqemu/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "common/log.hpp"
#include "mpqemu/protocol.hpp"
#include "mpqemu/qemu_process.hpp"

namespace potemkin::mpqemu {

namespace mq = mpqemu;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kConfigSize = kConventionalConfigSize;  // 256
constexpr uint32_t kCommandOffset = 0x04;
constexpr uint32_t kBarOffset = 0x10;
constexpr uint32_t kRomOffset = 0x30;
constexpr uint32_t kRomAddressMask = 0xFFFF'F800u;
constexpr uint16_t kCommandIo = 1u << 0;
constexpr uint16_t kCommandMemory = 1u << 1;
constexpr uint32_t kBarSlots = 6;

std::string region_name(uint32_t index) {
    if (index < hostdev::kRomRegion) return fmt::format("BAR{}", index);
    if (index == hostdev::kRomRegion) return "ROM";
    if (index == hostdev::kConfigRegion) return "config";
    return fmt::format("region {}", index);
}

Result<UniqueFd> make_eventfd() {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return fail(fmt::format("eventfd: {}", std::strerror(errno)), errno);
    return UniqueFd(fd);
}

// Reads and resets an eventfd counter if it fired. Polls first: QEMU clears O_NONBLOCK on the
// fds it receives (the flag belongs to the shared file description), so a read of a quiet
// eventfd would block. Callers serialise on in_mu_, so nobody consumes it between poll and read.
bool consume_eventfd(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1 || (p.revents & POLLIN) == 0) return false;
    uint64_t v = 0;
    return ::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v) && v != 0;
}

void signal_eventfd(int fd) {
    const uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
}

uint64_t lowest_bit(uint64_t v) {
    return v & (~v + 1);
}

uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) & ~(a - 1);
}

// The largest access of 8, 4, 2 or 1 bytes that is aligned at `at` and fits in `left`.
uint32_t chunk_size(uint64_t at, uint64_t left, uint32_t max) {
    for (uint32_t s = max; s > 1; s /= 2)
        if (at % s == 0 && left >= s) return s;
    return 1;
}

bool is_bar_register(uint32_t offset) {
    return (offset >= kBarOffset && offset < kBarOffset + 4 * kBarSlots) ||
           (offset >= kRomOffset && offset < kRomOffset + 4);
}

}  // namespace

// ---- Shared state -----------------------------------------------------------------------------
//
// Locks: io_mu_ (the socket: one request/reply at a time) before in_mu_ (the inbox). Engine-
// thread-only state has no lock; the interrupt thread never touches it.
class MpqemuClient::Impl : public std::enable_shared_from_this<Impl> {
  public:
    explicit Impl(MpqemuClientSettings s) : s_(std::move(s)) {}
    ~Impl() { stop_poller(); }

    Result<void> start();
    void close();

    Result<hostdev::DeviceInfo> info();
    Result<hostdev::RegionInfo> region_info(uint32_t index);
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out);
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in);
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out);
    Result<void> region_write(uint32_t index, uint64_t offset, std::span<const uint8_t> in);
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count);
    Result<void> ack_intx();
    Result<void> reset();
    void drain();

    bool connected() const { return up_.load(); }
    MpqemuBar bar(uint32_t index) const {
        return index < bars_.size() ? bars_[index] : MpqemuBar{};
    }
    pid_t qemu_pid() const {
        std::lock_guard lk(io_mu_);
        return s_.process ? s_.process->pid() : -1;
    }
    uint64_t respawns() const { return respawns_.load(); }

  private:
    // ---- Messages ----
    Result<uint64_t> request(Cmd cmd, std::span<const uint8_t> payload, const std::string& what);
    Result<uint64_t> request_locked(Cmd cmd, std::span<const uint8_t> payload,
                                    const std::string& what);
    Result<void> send_locked(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                             const std::string& what);
    Error gone_error(const std::string& what) const;
    void lose_locked(const std::string& why);
    void on_lost(const std::string& why);

    Result<uint32_t> cfg_read_locked(uint32_t offset, int len);
    Result<void> cfg_write_locked(uint32_t offset, uint32_t value, int len);

    // ---- Setup ----
    Result<void> setup_locked();
    Result<void> sync_sysmem_locked();
    Result<void> set_irqfd_locked();
    Result<void> probe_bars_locked();
    Result<void> place_bars();
    Result<void> program_bars_locked();
    Result<void> replay_config_locked();
    void record_config(uint32_t offset, uint8_t value);
    void try_respawn();
    void adopt(UniqueFd sock, std::unique_ptr<QemuProcess> process);

    // ---- Interrupts ----
    void queue(std::function<void()> fn);
    void post_drain();
    void deliver_intx();
    void drop_intx();
    void wake_poller();
    void poll_loop();
    void stop_poller();

    MpqemuClientSettings s_;

    mutable std::mutex io_mu_;
    std::atomic<bool> up_{false};
    std::string lost_why_;  // why up_ went false (io_mu_)
    // The socket the interrupt thread watches for hang-ups (s_.socket changes on a respawn).
    std::atomic<int> watch_fd_{-1};
    std::atomic<uint64_t> respawns_{0};

    std::mutex in_mu_;
    std::vector<std::function<void()>> inbox_;
    bool drain_posted_ = false;
    bool stopping_ = false;
    bool adopt_pending_ = false;
    // Never closed before close(): the interrupt thread may be polling them.
    UniqueFd wake_fd_, irq_fd_, resample_fd_;
    std::thread poller_;

    // Engine thread only.
    std::array<MpqemuBar, 7> bars_{};
    uint16_t decode_bits_ = 0;    // what the client keeps on in the remote's command register
    uint16_t guest_command_ = 0;  // the guest's last command value
    bool intx_asserted_ = false;
    bool lost_reported_ = false;
    bool draining_ = false;
    bool closed_ = false;
    bool rcvtimeo_set_ = false;  // SO_RCVTIMEO bounds the reply wait (setup_locked)
    bool external_held_ = false;
    // Config bytes the guest wrote (other than BARs and command), replayed after a respawn:
    // offset → (sequence, value).
    std::map<uint32_t, std::pair<uint64_t, uint8_t>> config_log_;
    uint64_t config_seq_ = 0;
};

// ---- Messages ---------------------------------------------------------------------------------

Error MpqemuClient::Impl::gone_error(const std::string& what) const {
    return Error{fmt::format("{}: {}: the remote is gone ({})", s_.label, what, lost_why_),
                 ENOTCONN};
}

Result<uint64_t> MpqemuClient::Impl::request(Cmd cmd, std::span<const uint8_t> payload,
                                             const std::string& what) {
    Result<uint64_t> r = [&] {
        std::lock_guard lk(io_mu_);
        return request_locked(cmd, payload, what);
    }();
    // The remote writes the irqfd before it replies: an interrupt the request raised reaches
    // the front-end before the guest's next instruction.
    drain();
    return r;
}

Result<void> MpqemuClient::Impl::send_locked(Cmd cmd, std::span<const uint8_t> payload,
                                             std::span<const int> fds, const std::string& what) {
    if (!up_) return fail(gone_error(what));
    if (auto r = send_message(s_.socket.get(), cmd, payload, fds); !r) {
        lose_locked(fmt::format("{}: sending: {}", what, r.error().message));
        return fail(gone_error(what));
    }
    return ok();
}

Result<uint64_t> MpqemuClient::Impl::request_locked(Cmd cmd, std::span<const uint8_t> payload,
                                                    const std::string& what) {
    POTEMKIN_TRY(send_locked(cmd, payload, {}, what));
    RecvOptions o;
    o.timeout_ms = static_cast<int>(s_.timeout.count());
    o.rcvtimeo = rcvtimeo_set_;
    o.read_ahead = kRetSize;  // only a RET can come, and nothing after it
    auto m = recv_message(s_.socket.get(), o);
    if (!m) {
        lose_locked(fmt::format("{}: {}", what,
                                m.error().sys_errno == ECONNRESET
                                    ? std::string("the remote closed the connection")
                                    : m.error().message));
        return fail(gone_error(what));
    }
    auto v = decode_ret(*m);
    if (!v) {
        // Anything but a RET breaks the strict request/reply pairing: the stream is lost.
        lose_locked(fmt::format("{}: {}", what, v.error().message));
        return fail(gone_error(what));
    }
    return *v;
}

// The connection is unusable (either thread, io_mu_ held). The socket stays open until close()
// so its number cannot be reused under the interrupt thread's poll.
void MpqemuClient::Impl::lose_locked(const std::string& why) {
    if (!up_) return;
    up_ = false;
    lost_why_ = why;
    ::shutdown(s_.socket.get(), SHUT_RDWR);
    queue([this, why] { on_lost(why); });
    wake_poller();
}

void MpqemuClient::Impl::on_lost(const std::string& why) {
    if (lost_reported_) return;
    lost_reported_ = true;
    drop_intx();  // a device that is gone cannot hold its line
    // Nor raise another interrupt: a halted guest must not wait for one.
    if (external_held_ && s_.external_source) s_.external_source(-1);
    external_held_ = false;
    s_.events->disconnected(fmt::format("{}: the remote went away: {}", s_.label, why));
}

Result<uint32_t> MpqemuClient::Impl::cfg_read_locked(uint32_t offset, int len) {
    const auto what = fmt::format("PCI_CFGREAD at {:#x} ({} bytes)", offset, len);
    if (offset + 4 > kConfigSize)  // the remote exits on these
        return failf("{}: {}: beyond the reachable config space", s_.label, what);
    ConfData c{offset, 0, len};
    auto v = request_locked(Cmd::pci_cfgread, encode_conf(c), what);
    if (!v) return fail(v.error());
    return static_cast<uint32_t>(*v);
}

Result<void> MpqemuClient::Impl::cfg_write_locked(uint32_t offset, uint32_t value, int len) {
    const auto what = fmt::format("PCI_CFGWRITE at {:#x} ({} bytes)", offset, len);
    if (offset + 4 > kConfigSize)
        return failf("{}: {}: beyond the reachable config space", s_.label, what);
    ConfData c{offset, value, len};
    auto v = request_locked(Cmd::pci_cfgwrite, encode_conf(c), what);
    if (!v) return fail(v.error());
    return ok();
}

// ---- Setup --------------------------------------------------------------------------------------

Result<void> MpqemuClient::Impl::start() {
    if (s_.events == nullptr) return failf("{}: no event sink given", s_.label);
    if (!s_.socket) return failf("{}: no socket", s_.label);
    {
        struct stat st {};
        if (::fstat(s_.socket.get(), &st) != 0 || !S_ISSOCK(st.st_mode))
            return failf("{}: fd {} is not a socket", s_.label, s_.socket.get());
    }
    for (auto* fd : {&wake_fd_, &irq_fd_, &resample_fd_}) {
        auto e = make_eventfd();
        if (!e) return fail(e.error().context(s_.label));
        *fd = std::move(*e);
    }
    {
        std::lock_guard lk(io_mu_);
        up_ = true;
        POTEMKIN_TRY(setup_locked());
        watch_fd_ = s_.socket.get();
    }
    if (s_.external_source) {
        s_.external_source(+1);
        external_held_ = true;
    }
    poller_ = std::thread([this] { poll_loop(); });
    return ok();
}

// A fresh remote, in the order QEMU's own proxy uses: guest RAM, interrupts, then config space;
// then the private BAR layout, and (after a respawn) the config bytes the guest wrote.
Result<void> MpqemuClient::Impl::setup_locked() {
    // Replies are awaited in a blocking recvmsg that the socket's receive timeout bounds: one
    // system call per reply instead of a poll and a read. Without it, poll first.
    const auto ms = s_.timeout.count();
    const timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    rcvtimeo_set_ =
        ms > 0 && ::setsockopt(s_.socket.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0;
    POTEMKIN_TRY(sync_sysmem_locked());
    POTEMKIN_TRY(set_irqfd_locked());
    // Decode off while the BARs are sized (the remote may come from someone else's use).
    POTEMKIN_TRY(cfg_write_locked(kCommandOffset, 0, 2));
    POTEMKIN_TRY(probe_bars_locked());
    POTEMKIN_TRY(place_bars());
    POTEMKIN_TRY(program_bars_locked());
    return replay_config_locked();
}

Result<void> MpqemuClient::Impl::replay_config_locked() {
    std::vector<std::pair<uint64_t, uint32_t>> order;
    for (const auto& [off, e] : config_log_) order.emplace_back(e.first, off);
    std::sort(order.begin(), order.end());
    for (const auto& [seq, off] : order) {
        (void)seq;
        POTEMKIN_TRY(cfg_write_locked(off, config_log_[off].second, 1));
    }
    return ok();
}

void MpqemuClient::Impl::record_config(uint32_t offset, uint8_t value) {
    config_log_[offset] = {++config_seq_, value};
}

// Guest RAM as the memfd, one entry per region (the remote maps entry i of fds[i] at its gpa).
Result<void> MpqemuClient::Impl::sync_sysmem_locked() {
    if (s_.memory == nullptr) return ok();
    const auto& regions = s_.memory->regions();
    if (regions.empty()) return ok();
    if (regions.size() > kMaxFds)
        return failf("{}: guest RAM has {} regions; SYNC_SYSMEM carries at most {}", s_.label,
                     regions.size(), kMaxFds);
    SyncSysmem m;
    std::vector<int> fds;
    for (const auto& r : regions) {
        m.entries.push_back({r.base.value, r.size, static_cast<int64_t>(r.fd_offset)});
        fds.push_back(s_.memory->fd());
    }
    return send_locked(Cmd::sync_sysmem, encode_sysmem(m), fds, "SYNC_SYSMEM");
}

Result<void> MpqemuClient::Impl::set_irqfd_locked() {
    const std::array<int, 2> fds{irq_fd_.get(), resample_fd_.get()};
    return send_locked(Cmd::set_irqfd, {}, fds, "SET_IRQFD");
}

// Sizes every BAR and the ROM from the remote's registers: save, write all-ones, read back,
// restore (PCI 3.0 6.2.5.1).
Result<void> MpqemuClient::Impl::probe_bars_locked() {
    auto size_register = [&](uint32_t off, uint32_t ones) -> Result<uint32_t> {
        auto orig = cfg_read_locked(off, 4);
        if (!orig) return fail(orig.error());
        POTEMKIN_TRY(cfg_write_locked(off, ones, 4));
        auto v = cfg_read_locked(off, 4);
        if (!v) return fail(v.error());
        POTEMKIN_TRY(cfg_write_locked(off, *orig, 4));
        return *v;
    };
    bars_ = {};
    for (uint32_t i = 0; i < kBarSlots; ++i) {
        auto lo = size_register(kBarOffset + 4 * i, 0xFFFF'FFFFu);
        if (!lo) return fail(lo.error());
        const uint32_t v = *lo;
        MpqemuBar& b = bars_[i];
        if (v == 0) continue;
        const auto decoded = pci::decode_bar_register(v);
        if (!decoded) {
            log::warn("{}: BAR{} reads {:#x} (reserved memory type 11b) when sized: ignored",
                      s_.label, i, v);
            continue;
        }
        b.kind = decoded->kind;
        b.prefetchable = decoded->prefetchable;
        uint32_t high = 0;
        if (decoded->kind == pci::BarKind::mem64) {
            if (i + 1 >= kBarSlots)
                return failf("{}: BAR5 claims to be the low half of a 64-bit BAR", s_.label);
            auto hi = size_register(kBarOffset + 4 * (i + 1), 0xFFFF'FFFFu);
            if (!hi) return fail(hi.error());
            high = *hi;
        }
        b.size = pci::bar_size_from_readback(*decoded, v, high);
        if (decoded->kind == pci::BarKind::mem64) ++i;  // the upper slot stays absent
        if (b.size == 0) {
            log::warn("{}: BAR{} reads {:#x} when sized: ignored", s_.label, i, v);
            b = {};
        }
    }
    auto rom = size_register(kRomOffset, kRomAddressMask);
    if (!rom) return fail(rom.error());
    if ((*rom & kRomAddressMask) != 0) {
        bars_[hostdev::kRomRegion].kind = pci::BarKind::rom;
        bars_[hostdev::kRomRegion].size = lowest_bit(*rom & kRomAddressMask);
    }
    return ok();
}

// The private layout in the remote: memory BARs (and the ROM) naturally aligned, above guest RAM
// (the remote maps RAM over PCI memory, so they must not overlap); I/O BARs from io_base.
Result<void> MpqemuClient::Impl::place_bars() {
    uint64_t mem = s_.mem_base;
    if (s_.memory != nullptr)
        for (const auto& r : s_.memory->regions())
            mem = std::max(mem, align_up(r.base.value + r.size, 1u << 20));
    std::vector<uint32_t> order;
    for (uint32_t i = 0; i < bars_.size(); ++i)
        if (bars_[i].size != 0) order.push_back(i);
    // 32-bit BARs first (they must end below 4 GiB), then 64-bit ones; largest first within
    // each, so natural alignment wastes nothing.
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
        const bool a64 = bars_[a].kind == pci::BarKind::mem64,
                   b64 = bars_[b].kind == pci::BarKind::mem64;
        if (a64 != b64) return b64;
        return bars_[a].size > bars_[b].size;
    });
    uint64_t io = s_.io_base;
    decode_bits_ = 0;
    for (uint32_t i : order) {
        MpqemuBar& b = bars_[i];
        if (b.kind == pci::BarKind::io) {
            b.base = align_up(io, b.size);
            io = b.base + b.size;
            if (io > 0x1'0000)
                return failf("{}: the I/O BARs do not fit below 64 KiB from {:#x}", s_.label,
                             s_.io_base);
            decode_bits_ |= kCommandIo;
        } else {
            b.base = align_up(mem, b.size);
            mem = b.base + b.size;
            if (b.kind != pci::BarKind::mem64 && mem > (1ull << 32))
                return failf("{}: {} ({:#x} bytes, 32-bit) does not fit below 4 GiB from {:#x}",
                             s_.label, region_name(i), b.size, s_.mem_base);
            decode_bits_ |= kCommandMemory;
        }
    }
    return ok();
}

Result<void> MpqemuClient::Impl::program_bars_locked() {
    for (uint32_t i = 0; i < kBarSlots; ++i) {
        const MpqemuBar& b = bars_[i];
        if (b.size == 0) continue;
        POTEMKIN_TRY(cfg_write_locked(kBarOffset + 4 * i, static_cast<uint32_t>(b.base), 4));
        if (b.kind == pci::BarKind::mem64)
            POTEMKIN_TRY(
                cfg_write_locked(kBarOffset + 4 * (i + 1), static_cast<uint32_t>(b.base >> 32), 4));
    }
    const MpqemuBar& rom = bars_[hostdev::kRomRegion];
    if (rom.size != 0)
        POTEMKIN_TRY(cfg_write_locked(kRomOffset, static_cast<uint32_t>(rom.base) | 1u, 4));
    return cfg_write_locked(kCommandOffset, guest_command_ | decode_bits_, 2);
}

// ---- HostDevice calls ---------------------------------------------------------------------------

Result<hostdev::DeviceInfo> MpqemuClient::Impl::info() {
    drain();
    hostdev::DeviceInfo d;
    d.name = s_.label;
    d.num_regions = hostdev::kPciRegionCount;
    d.num_irqs = 1;  // INTx; x-remote has no MSI
    d.reset_supported = true;
    return d;
}

Result<hostdev::RegionInfo> MpqemuClient::Impl::region_info(uint32_t index) {
    drain();
    hostdev::RegionInfo out;
    out.index = index;
    if (index == hostdev::kConfigRegion) {
        out.size = kConfigSize;
        out.readable = out.writable = true;
        return out;
    }
    if (index >= bars_.size())
        return failf("{}: region {} does not exist (the device has {})", s_.label, index,
                     hostdev::kPciRegionCount);
    const MpqemuBar& b = bars_[index];
    if (b.size == 0) return out;  // absent
    out.bar_kind = b.kind;
    out.size = b.size;
    out.prefetchable = b.prefetchable;
    out.readable = true;
    out.writable = index != hostdev::kRomRegion;
    return out;
}

Result<void> MpqemuClient::Impl::config_read(uint32_t offset, std::span<uint8_t> out) {
    drain();
    std::fill(out.begin(), out.end(), 0xFF);
    if (offset > kConfigSize || out.size() > kConfigSize - offset)
        return failf(
            "{}: config read of {} bytes at {:#x}: only the first {} bytes of config "
            "space are reachable over mpqemu",
            s_.label, out.size(), offset, kConfigSize);
    Result<void> result;
    {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < out.size();) {
            const uint32_t at = offset + static_cast<uint32_t>(done);
            uint32_t n = chunk_size(at, out.size() - done, 4);
            uint32_t value = 0;
            if (at + 4 > kConfigSize) {
                // 0xFD-0xFF: the remote refuses offset + 4 > 256 even for a byte; take them
                // from the dword at 0xFC.
                const uint32_t dword = kConfigSize - 4;
                auto v = cfg_read_locked(dword, 4);
                if (!v) {
                    result = fail(v.error());
                    break;
                }
                n = std::min<uint32_t>(kConfigSize - at, static_cast<uint32_t>(out.size() - done));
                value = *v >> (8 * (at - dword));
            } else {
                auto v = cfg_read_locked(at, static_cast<int>(n));
                if (!v) {
                    result = fail(v.error());
                    break;
                }
                value = *v;
            }
            for (uint32_t k = 0; k < n; ++k) out[done + k] = static_cast<uint8_t>(value >> (8 * k));
            done += n;
        }
    }
    drain();
    if (!result) std::fill(out.begin(), out.end(), 0xFF);
    return result;
}

Result<void> MpqemuClient::Impl::config_write(uint32_t offset, std::span<const uint8_t> in) {
    drain();
    if (offset > kConfigSize || in.size() > kConfigSize - offset)
        return failf(
            "{}: config write of {} bytes at {:#x}: only the first {} bytes of config "
            "space are reachable over mpqemu",
            s_.label, in.size(), offset, kConfigSize);
    std::vector<uint8_t> bytes(in.begin(), in.end());
    std::vector<bool> forward(bytes.size(), true);
    for (size_t i = 0; i < bytes.size(); ++i) {
        const uint32_t at = offset + static_cast<uint32_t>(i);
        if (is_bar_register(at)) {
            // The remote's BARs hold the client's private layout; the guest's BAR values live
            // in the front-end.
            forward[i] = false;
        } else if (at == kCommandOffset || at == kCommandOffset + 1) {
            const unsigned shift = 8 * (at - kCommandOffset);
            guest_command_ = static_cast<uint16_t>((guest_command_ & ~(0xFFu << shift)) |
                                                   (uint32_t{bytes[i]} << shift));
            bytes[i] = static_cast<uint8_t>(bytes[i] | (decode_bits_ >> shift));
        } else if (at != kCommandOffset + 2 && at != kCommandOffset + 3 && at + 4 <= kConfigSize) {
            record_config(at, bytes[i]);  // not status (W1C): replaying it would clear bits
        }
    }
    Result<void> result;
    {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < bytes.size();) {
            if (!forward[done]) {
                ++done;
                continue;
            }
            const uint32_t at = offset + static_cast<uint32_t>(done);
            size_t run = 1;
            while (done + run < bytes.size() && forward[done + run]) ++run;
            const uint32_t n = chunk_size(at, run, 4);
            uint32_t value = 0;
            for (uint32_t k = 0; k < n; ++k) value |= uint32_t{bytes[done + k]} << (8 * k);
            if (auto r = cfg_write_locked(at, value, static_cast<int>(n)); !r) {
                result = fail(r.error());
                break;
            }
            done += n;
        }
    }
    drain();
    return result;
}

Result<void> MpqemuClient::Impl::region_read(uint32_t index, uint64_t offset,
                                             std::span<uint8_t> out) {
    if (index == hostdev::kConfigRegion) {
        if (offset > kConfigSize) {
            std::fill(out.begin(), out.end(), 0xFF);
            return failf("{}: config read at {:#x}: beyond config space", s_.label, offset);
        }
        return config_read(static_cast<uint32_t>(offset), out);
    }
    drain();
    std::fill(out.begin(), out.end(), 0xFF);
    if (index >= bars_.size() || bars_[index].size == 0)
        return failf("{}: read of {}: no such region", s_.label, region_name(index));
    const MpqemuBar& b = bars_[index];
    if (offset > b.size || out.size() > b.size - offset)
        return failf("{}: read of {} bytes at {:#x} is outside {} ({:#x} bytes)", s_.label,
                     out.size(), offset, region_name(index), b.size);
    const bool memory = b.kind != pci::BarKind::io;
    Result<void> result;
    {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < out.size();) {
            const uint64_t at = offset + done;
            const uint32_t n = chunk_size(at, out.size() - done, memory ? 8 : 4);
            BarAccess a{b.base + at, 0, n, memory};
            auto v = request_locked(
                Cmd::bar_read, encode_bar(a),
                fmt::format("BAR_READ of {} at {:#x} ({} bytes)", region_name(index), at, n));
            if (!v) {
                result = fail(v.error());
                break;
            }
            for (uint32_t k = 0; k < n; ++k) out[done + k] = static_cast<uint8_t>(*v >> (8 * k));
            done += n;
        }
    }
    drain();
    if (!result) std::fill(out.begin(), out.end(), 0xFF);
    return result;
}

Result<void> MpqemuClient::Impl::region_write(uint32_t index, uint64_t offset,
                                              std::span<const uint8_t> in) {
    if (index == hostdev::kConfigRegion) {
        if (offset > kConfigSize)
            return failf("{}: config write at {:#x}: beyond config space", s_.label, offset);
        return config_write(static_cast<uint32_t>(offset), in);
    }
    drain();
    if (index >= bars_.size() || bars_[index].size == 0)
        return failf("{}: write to {}: no such region", s_.label, region_name(index));
    if (index == hostdev::kRomRegion) return failf("{}: the ROM is read-only", s_.label);
    const MpqemuBar& b = bars_[index];
    if (offset > b.size || in.size() > b.size - offset)
        return failf("{}: write of {} bytes at {:#x} is outside {} ({:#x} bytes)", s_.label,
                     in.size(), offset, region_name(index), b.size);
    const bool memory = b.kind != pci::BarKind::io;
    Result<void> result;
    {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < in.size();) {
            const uint64_t at = offset + done;
            const uint32_t n = chunk_size(at, in.size() - done, memory ? 8 : 4);
            uint64_t value = 0;
            for (uint32_t k = 0; k < n; ++k) value |= uint64_t{in[done + k]} << (8 * k);
            BarAccess a{b.base + at, value, n, memory};
            auto v = request_locked(
                Cmd::bar_write, encode_bar(a),
                fmt::format("BAR_WRITE of {} at {:#x} ({} bytes)", region_name(index), at, n));
            if (!v) {
                result = fail(v.error());
                break;
            }
            done += n;
        }
    }
    drain();
    return result;
}

Result<void> MpqemuClient::Impl::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    drain();
    if (kind != hostdev::IrqKind::intx && count > 0)
        return failf("{}: {} asked for: QEMU's x-remote machine has no MSI, only INTx", s_.label,
                     kind == hostdev::IrqKind::msi ? "MSI" : "MSI-X");
    return ok();
}

Result<void> MpqemuClient::Impl::ack_intx() {
    drain();
    drop_intx();
    if (up_) signal_eventfd(resample_fd_.get());
    return ok();
}

Result<void> MpqemuClient::Impl::reset() {
    drain();
    Result<void> result;
    {
        std::lock_guard lk(io_mu_);
        auto r = request_locked(Cmd::device_reset, {}, "DEVICE_RESET");
        // The reset cleared the command register the guest programmed, and the remote's BARs.
        guest_command_ = 0;
        config_log_.clear();
        if (!r)
            result = fail(r.error());
        else
            result = program_bars_locked();
    }
    drop_intx();
    drain();
    return result;
}

// ---- Interrupts -------------------------------------------------------------------------------

void MpqemuClient::Impl::queue(std::function<void()> fn) {
    {
        std::lock_guard lk(in_mu_);
        inbox_.push_back(std::move(fn));
    }
    post_drain();
}

void MpqemuClient::Impl::post_drain() {
    {
        std::lock_guard lk(in_mu_);
        if (inbox_.empty() || !s_.post || drain_posted_) return;
        drain_posted_ = true;
    }
    s_.post([weak = weak_from_this()] {
        if (auto self = weak.lock()) self->drain();
    });
}

void MpqemuClient::Impl::drain() {
    if (draining_ || closed_) return;
    draining_ = true;
    for (;;) {
        std::vector<std::function<void()>> work;
        {
            std::lock_guard lk(in_mu_);
            if (irq_fd_ && consume_eventfd(irq_fd_.get()))
                inbox_.push_back([this] { deliver_intx(); });
            work.swap(inbox_);
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

void MpqemuClient::Impl::deliver_intx() {
    if (intx_asserted_ || !up_) return;
    intx_asserted_ = true;
    s_.events->intx(true);
}

void MpqemuClient::Impl::drop_intx() {
    if (!intx_asserted_) return;
    intx_asserted_ = false;
    s_.events->intx(false);
}

void MpqemuClient::Impl::wake_poller() {
    if (wake_fd_) signal_eventfd(wake_fd_.get());
}

// The interrupt thread: the irqfd, and hang-ups of the idle socket (the remote never sends
// anything unasked, so its only news is dying).
void MpqemuClient::Impl::poll_loop() {
    auto next_try = Clock::now();
    for (;;) {
        {
            std::lock_guard lk(in_mu_);
            if (stopping_) return;
        }
        bool respawning = false;
        {
            std::lock_guard lk(in_mu_);
            respawning = !up_ && s_.respawn && !adopt_pending_;
        }
        if (respawning && Clock::now() >= next_try) {
            try_respawn();
            next_try = Clock::now() + s_.respawn_interval;
            continue;
        }
        std::array<pollfd, 3> p{};
        p[0] = {wake_fd_.get(), POLLIN, 0};
        p[1] = {irq_fd_.get(), POLLIN, 0};
        nfds_t n = 2;
        const int sock = up_ ? watch_fd_.load() : -1;
        if (sock >= 0) p[n++] = {sock, POLLRDHUP, 0};
        int timeout = -1;
        if (respawning)
            timeout = static_cast<int>(std::max<int64_t>(
                0, std::chrono::duration_cast<std::chrono::milliseconds>(next_try - Clock::now())
                       .count()));
        const int r = ::poll(p.data(), n, timeout);
        if (r < 0) {
            if (errno == EINTR) continue;
            log::error("{}: poll: {}; interrupts are no longer delivered", s_.label,
                       std::strerror(errno));
            return;
        }
        if ((p[0].revents & POLLIN) != 0) (void)consume_eventfd(wake_fd_.get());
        if (p[1].revents != 0) {
            bool fired = false;
            {
                std::lock_guard lk(in_mu_);
                fired = consume_eventfd(irq_fd_.get());
            }
            if (fired) queue([this] { deliver_intx(); });
        }
        if (n > 2 && p[2].revents != 0) {
            std::lock_guard lk(io_mu_);
            if (s_.socket.get() == sock) lose_locked("the remote closed the connection");
        }
    }
}

// The interrupt thread, after a loss: start a new remote and hand it to the engine thread,
// which owns the state the setup rebuilds.
void MpqemuClient::Impl::try_respawn() {
    log::info("{}: starting a new remote", s_.label);
    auto r = s_.respawn();
    if (!r) {
        log::warn("{}: respawn failed, retrying: {}", s_.label, r.error().message);
        return;
    }
    {
        std::lock_guard lk(in_mu_);
        adopt_pending_ = true;
    }
    auto fresh = std::make_shared<std::pair<UniqueFd, std::unique_ptr<QemuProcess>>>(std::move(*r));
    queue([this, fresh] { adopt(std::move(fresh->first), std::move(fresh->second)); });
}

// Engine thread: set up the new remote like the first one, then restore the guest's config.
void MpqemuClient::Impl::adopt(UniqueFd sock, std::unique_ptr<QemuProcess> process) {
    {
        std::lock_guard lk(in_mu_);
        adopt_pending_ = false;
    }
    if (closed_) return;
    std::unique_ptr<QemuProcess> old;
    Result<void> r;
    {
        std::lock_guard lk(io_mu_);
        old = std::move(s_.process);
        s_.process = std::move(process);
        s_.socket = std::move(sock);
        up_ = true;
        r = setup_locked();
        if (r) {
            watch_fd_ = s_.socket.get();
        } else if (up_) {
            lose_locked(r.error().message);
        }
    }
    if (old) old->terminate();  // reaps the dead one
    wake_poller();
    if (!r) {
        log::warn("{}: the new remote could not be set up, retrying: {}", s_.label,
                  r.error().message);
        return;
    }
    ++respawns_;
    lost_reported_ = false;
    if (!external_held_ && s_.external_source) {
        s_.external_source(+1);
        external_held_ = true;
    }
    log::warn(
        "{}: new remote (qemu[{}]) set up: guest RAM, interrupts, BARs and {} config bytes "
        "restored",
        s_.label, s_.process ? s_.process->pid() : -1, config_log_.size());
    s_.events->reconnected();
}

void MpqemuClient::Impl::stop_poller() {
    {
        std::lock_guard lk(in_mu_);
        stopping_ = true;
    }
    wake_poller();
    if (poller_.joinable()) poller_.join();
}

void MpqemuClient::Impl::close() {
    if (closed_) return;
    stop_poller();
    {
        std::lock_guard lk(io_mu_);
        if (up_) lost_why_ = "the client was closed";
        up_ = false;
        s_.socket.reset();  // x-remote exits on EOF
    }
    if (s_.process) {
        const int st = s_.process->terminate();
        log::debug("{}: qemu ended (wait status {:#x})", s_.label, st);
    }
    closed_ = true;
    if (external_held_ && s_.external_source) s_.external_source(-1);
    external_held_ = false;
    std::lock_guard lk(in_mu_);
    inbox_.clear();
}

// ---- MpqemuClient -------------------------------------------------------------------------------

MpqemuClient::MpqemuClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

MpqemuClient::~MpqemuClient() {
    close();
}

Result<std::unique_ptr<MpqemuClient>> MpqemuClient::open(MpqemuClientSettings settings) {
    if (settings.label.empty()) settings.label = "mpqemu";
    if (settings.timeout.count() <= 0)
        return failf("{}: the timeout must be positive", settings.label);
    auto impl = std::make_shared<Impl>(std::move(settings));
    if (auto r = impl->start(); !r) {
        impl->close();
        return fail(r.error());
    }
    return std::unique_ptr<MpqemuClient>(new MpqemuClient(std::move(impl)));
}

Result<hostdev::DeviceInfo> MpqemuClient::info() {
    return impl_->info();
}
Result<hostdev::RegionInfo> MpqemuClient::region_info(uint32_t index) {
    return impl_->region_info(index);
}
Result<void> MpqemuClient::config_read(uint32_t offset, std::span<uint8_t> out) {
    return impl_->config_read(offset, out);
}
Result<void> MpqemuClient::config_write(uint32_t offset, std::span<const uint8_t> in) {
    return impl_->config_write(offset, in);
}
Result<void> MpqemuClient::region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) {
    return impl_->region_read(index, offset, out);
}
Result<void> MpqemuClient::region_write(uint32_t index, uint64_t offset,
                                        std::span<const uint8_t> in) {
    return impl_->region_write(index, offset, in);
}
Result<void> MpqemuClient::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    return impl_->set_irqs(kind, count);
}
Result<void> MpqemuClient::ack_intx() {
    return impl_->ack_intx();
}
Result<void> MpqemuClient::reset() {
    return impl_->reset();
}
void MpqemuClient::close() {
    if (impl_) impl_->close();
}
bool MpqemuClient::connected() const {
    return impl_->connected();
}
MpqemuBar MpqemuClient::bar(uint32_t index) const {
    return impl_->bar(index);
}
pid_t MpqemuClient::qemu_pid() const {
    return impl_->qemu_pid();
}
uint64_t MpqemuClient::respawns() const {
    return impl_->respawns();
}
void MpqemuClient::poll_events() {
    impl_->drain();
}

// ---- URLs and registration ----------------------------------------------------------------------

Result<QemuDeviceSpec> parse_qemu_device(std::string_view path) {
    QemuDeviceSpec spec;
    size_t start = 0;
    bool first = true;
    while (start <= path.size()) {
        const size_t comma = path.find(',', start);
        const std::string_view item = path.substr(
            start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        if (first) {
            if (item.empty()) return failf("no device name before the first ','");
            if (item.find('=') != std::string_view::npos)
                return failf("'{}' is not a device name (expected e.g. qemu:nvme,...)", item);
            spec.device = std::string(item);
            first = false;
        } else {
            const size_t eq = item.find('=');
            if (item.empty()) return failf("an empty device property (stray ',')");
            if (eq == std::string_view::npos || eq == 0)
                return failf("device property '{}' is not of the form key=value", item);
            std::string key(item.substr(0, eq));
            std::string value(item.substr(eq + 1));
            if (key == "id" || key == "bus" || key == "addr")
                return failf("device property '{}' is set by potemkin", key);
            if (key == "drive") {
                if (value.empty()) return failf("drive= needs a raw image path");
                if (!spec.drive.empty()) return failf("drive= is given twice");
                spec.drive = std::move(value);
            } else {
                for (const auto& [k, v] : spec.props)
                    if (k == key) return failf("device property '{}' is given twice", key);
                spec.props.emplace_back(std::move(key), std::move(value));
            }
        }
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    return spec;
}

namespace {

Result<uint64_t> number_param(const std::string& key, const std::string& value, uint64_t max) {
    uint64_t n = 0;
    int base = 10;
    std::string_view v = value;
    if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        v.remove_prefix(2);
        base = 16;
    }
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
    if (ec != std::errc() || end != v.data() + v.size() || n > max)
        return failf("parameter {}='{}' is not a number up to {}", key, value, max);
    return n;
}

struct CommonParams {
    std::chrono::milliseconds timeout{5000};
    std::optional<uint64_t> mem_base;
    std::optional<uint32_t> io_base;
};

// Parameters both schemes take; `extra` lists the scheme's own (handled by the caller).
Result<CommonParams> common_params(const hostdev::ParsedUrl& url,
                                   std::initializer_list<const char*> extra) {
    CommonParams c;
    for (const auto& [key, value] : url.params) {
        if (key == "timeout_ms") {
            auto n = number_param(key, value, 3'600'000);
            if (!n) return fail(n.error());
            if (*n == 0) return failf("parameter timeout_ms must be positive");
            c.timeout = std::chrono::milliseconds(*n);
        } else if (key == "bar_base") {
            auto n = number_param(key, value, ~0ull);
            if (!n) return fail(n.error());
            c.mem_base = *n;
        } else if (key == "io_base") {
            auto n = number_param(key, value, 0xFFFF);
            if (!n) return fail(n.error());
            c.io_base = static_cast<uint32_t>(*n);
        } else if (std::find_if(extra.begin(), extra.end(),
                                [&](const char* e) { return key == e; }) == extra.end()) {
            std::string known = "timeout_ms, bar_base, io_base";
            for (const char* e : extra) known += fmt::format(", {}", e);
            return failf("unknown parameter '{}' (known: {})", key, known);
        }
    }
    return c;
}

void apply(MpqemuClientSettings& s, const CommonParams& c, const hostdev::OpenContext& ctx) {
    s.timeout = c.timeout;
    if (c.mem_base) s.mem_base = *c.mem_base;
    if (c.io_base) s.io_base = *c.io_base;
    s.events = ctx.events;
    s.memory = ctx.memory;
    s.post = ctx.post;
    s.external_source = ctx.external_source;
}

}  // namespace

Result<void> register_mpqemu_transports(hostdev::TransportRegistry& transports) {
    POTEMKIN_TRY(transports.add(
        "mpqemu-fd",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            auto fd = number_param("fd", url.path, 1'000'000);
            if (!fd) return failf("'{}' is not a file descriptor number", url.path);
            auto c = common_params(url, {});
            if (!c) return fail(c.error());
            MpqemuClientSettings s;
            s.label = "mpqemu-fd:" + url.path;  // parameters would only clutter messages
            // Taken over: a dup, so the number the caller gave stays theirs to close.
            const int dup = ::fcntl(static_cast<int>(*fd), F_DUPFD_CLOEXEC, 3);
            if (dup < 0) return failf("fd {}: {}", *fd, std::strerror(errno));
            s.socket = UniqueFd(dup);
            apply(s, *c, ctx);
            auto client = MpqemuClient::open(std::move(s));
            if (!client) return fail(client.error());
            return std::unique_ptr<hostdev::HostDevice>(std::move(*client));
        }));
    return transports.add(
        "qemu",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            auto spec = parse_qemu_device(url.path);
            if (!spec) return fail(spec.error());
            auto c = common_params(url, {"qemu", "start_timeout_ms", "respawn"});
            if (!c) return fail(c.error());
            QemuLaunchSettings q;
            q.label = "qemu:" + url.path;  // parameters would only clutter messages
            q.device = spec->device;
            q.device_props = spec->props;
            if (const auto* bin = url.param("qemu")) q.binary = *bin;
            if (const auto* t = url.param("start_timeout_ms")) {
                auto n = number_param("start_timeout_ms", *t, 3'600'000);
                if (!n) return fail(n.error());
                q.timeout = std::chrono::milliseconds(*n);
            }
            if (!spec->drive.empty()) {
                // A <file> id from the VM configuration, or a path.
                const std::string* named = ctx.file(spec->drive);
                std::filesystem::path p(named ? *named : spec->drive);
                if (p.is_relative() && !ctx.base_dir.empty()) p = ctx.base_dir / p;
                std::error_code ec;
                p = std::filesystem::absolute(p, ec);
                if (!std::filesystem::is_regular_file(p, ec))
                    return failf("drive '{}' ({}) is not a regular file", spec->drive, p.string());
                q.drive = p.string();
            }
            bool respawn = false;
            if (const auto* v = url.param("respawn")) {
                if (*v != "0" && *v != "1")
                    return failf("parameter respawn='{}' is not 0 or 1", *v);
                respawn = *v == "1";
            }
            UniqueFd sock;
            auto proc = QemuProcess::launch(q, sock);
            if (!proc) return fail(proc.error());
            MpqemuClientSettings s;
            s.label = q.label;
            s.socket = std::move(sock);
            s.process = std::move(*proc);
            apply(s, *c, ctx);
            if (respawn) {
                s.respawn = [q]() -> Result<std::pair<UniqueFd, std::unique_ptr<QemuProcess>>> {
                    UniqueFd fresh;
                    auto p = QemuProcess::launch(q, fresh);
                    if (!p) return fail(p.error());
                    return std::make_pair(std::move(fresh), std::move(*p));
                };
            }
            auto client = MpqemuClient::open(std::move(s));
            if (!client) return fail(client.error());
            return std::unique_ptr<hostdev::HostDevice>(std::move(*client));
        });
}

}  // namespace potemkin::mpqemu
