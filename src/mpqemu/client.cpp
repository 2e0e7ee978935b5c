// The mpqemu client as a HostDevice: what the front-end calls, on the engine thread, turned into
// PCI_CFGREAD/PCI_CFGWRITE and BAR_READ/BAR_WRITE at the remote's private BAR layout, and the
// remote's irqfd turned into an INTx line held until the guest's EOI (client.hpp).
//
// The guest access path (region_read/region_write) costs the exchange and nothing else: one
// sendmsg, one recvmsg, no allocation (the request's name is formatted only for an error, the
// reply is received into a reused message). Interrupts reach the front-end through the link:
// the poll thread watches the irqfd. A write additionally takes what the irqfd holds right
// after its RET (one epoll_wait), since a write is how a guest makes a device raise an
// interrupt and the remote writes the irqfd before it replies: that interrupt is seen before
// the guest's next instruction.
#include "mpqemu/client.hpp"

#include <algorithm>
#include <array>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "mpqemu/client_impl.hpp"

namespace potemkin::mpqemu {

namespace {

// The largest access of 8, 4, 2 or 1 bytes that is aligned at `at` and fits in `left`.
uint32_t chunk_size(uint64_t at, uint64_t left, uint32_t max) {
    for (uint32_t s = max; s > 1; s /= 2)
        if (at % s == 0 && left >= s) return s;
    return 1;
}

bool is_bar_register(uint32_t offset) {
    return (offset >= pci::reg::kBar0 && offset < pci::reg::bar(pci::kBarCount)) ||
           (offset >= pci::reg::kRomBar && offset < pci::reg::kRomBar + 4);
}

}  // namespace

MpqemuClient::Impl::Impl(MpqemuClientSettings s)
    : s_(std::move(s)),
      link_(hostdev::RemoteLinkSettings::of(s_, static_cast<bool>(s_.respawn),
                                            s_.respawn_interval)) {}

void MpqemuClient::Impl::close() {
    if (link_.closed()) return;
    link_.stop_polling();
    {
        std::lock_guard lk(io_mu_);
        if (link_.up()) {
            lost_why_ = "the client was closed";
            link_.lost(lost_why_, false);
        }
        s_.socket.reset();  // x-remote exits on EOF
    }
    if (s_.process) {
        const int st = s_.process->terminate();
        log::debug("{}: qemu ended (wait status {:#x})", s_.label, st);
    }
    link_.close();
}

// Config bytes as aligned PCI_CFGWRITEs of 1, 2 or 4 bytes (the remote takes nothing else).
Result<void> MpqemuClient::Impl::cfg_write_bytes_locked(uint32_t offset,
                                                        std::span<const uint8_t> bytes) {
    for (size_t done = 0; done < bytes.size();) {
        const uint32_t at = offset + static_cast<uint32_t>(done);
        const uint32_t n = chunk_size(at, bytes.size() - done, 4);
        uint32_t value = 0;
        for (uint32_t k = 0; k < n; ++k) value |= uint32_t{bytes[done + k]} << (8 * k);
        POTEMKIN_TRY(cfg_write_locked(at, value, static_cast<int>(n)));
        done += n;
    }
    return ok();
}

// ---- Interrupts ------------------------------------------------------------------------------

void MpqemuClient::Impl::deliver_intx() {
    if (link_.up()) link_.assert_intx();
}

// ---- HostDevice calls
// ----------------------------------------------------------------------------

Result<hostdev::DeviceInfo> MpqemuClient::Impl::info() {
    link_.run_inbox();
    hostdev::DeviceInfo d;
    d.name = s_.label;
    d.num_regions = hostdev::kPciRegionCount;
    d.num_irqs = 1;  // INTx; x-remote has no MSI
    d.reset_supported = true;
    return d;
}

Result<hostdev::RegionInfo> MpqemuClient::Impl::region_info(uint32_t index) {
    link_.run_inbox();
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
    link_.run_inbox();
    std::fill(out.begin(), out.end(), 0xFF);
    if (offset > kConfigSize || out.size() > kConfigSize - offset)
        return failf(
            "{}: config read of {} bytes at {:#x}: only the first {} bytes of config "
            "space are reachable over mpqemu",
            s_.label, out.size(), offset, kConfigSize);
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < out.size();) {
            const uint32_t at = offset + static_cast<uint32_t>(done);
            uint32_t n = chunk_size(at, out.size() - done, 4);
            uint32_t value = 0;
            if (at + 4 > kConfigSize) {
                // 0xFD-0xFF: the remote refuses offset + 4 > 256 even for a byte; take them
                // from the dword at 0xFC.
                const uint32_t dword = kConfigSize - 4;
                POTEMKIN_TRY_ASSIGN(const uint32_t v, cfg_read_locked(dword, 4));
                n = std::min<uint32_t>(kConfigSize - at, static_cast<uint32_t>(out.size() - done));
                value = v >> (8 * (at - dword));
            } else {
                POTEMKIN_TRY_ASSIGN(value, cfg_read_locked(at, static_cast<int>(n)));
            }
            for (uint32_t k = 0; k < n; ++k) out[done + k] = static_cast<uint8_t>(value >> (8 * k));
            done += n;
        }
        return ok();
    }();
    link_.run_inbox();  // a loss the exchange found
    if (!result) std::fill(out.begin(), out.end(), 0xFF);
    return result;
}

Result<void> MpqemuClient::Impl::config_write(uint32_t offset, std::span<const uint8_t> in) {
    link_.run_inbox();
    if (offset > kConfigSize || in.size() > kConfigSize - offset)
        return failf(
            "{}: config write of {} bytes at {:#x}: only the first {} bytes of config "
            "space are reachable over mpqemu",
            s_.label, in.size(), offset, kConfigSize);
    // What goes to the remote, byte by byte (at most the 256 bytes of config space).
    std::array<uint8_t, kConfigSize> bytes{};
    std::array<bool, kConfigSize> forward{};
    size_t run_start = 0, run_len = 0;  // bytes to record for a replay, one run at a time
    auto record_run = [&] {
        if (run_len > 0)
            config_log_.record(offset + static_cast<uint32_t>(run_start),
                               std::span<const uint8_t>(bytes.data() + run_start, run_len));
        run_len = 0;
    };
    for (size_t i = 0; i < in.size(); ++i) {
        const uint32_t at = offset + static_cast<uint32_t>(i);
        bytes[i] = in[i];
        forward[i] = true;
        if (is_bar_register(at)) {
            // The remote's BARs hold the client's private layout; the guest's BAR values live
            // in the front-end.
            forward[i] = false;
            record_run();
        } else if (at == pci::reg::kCommand || at == pci::reg::kCommand + 1) {
            const unsigned shift = 8 * (at - pci::reg::kCommand);
            guest_command_ = static_cast<uint16_t>((guest_command_ & ~(0xFFu << shift)) |
                                                   (uint32_t{bytes[i]} << shift));
            bytes[i] = static_cast<uint8_t>(bytes[i] | (decode_bits_ >> shift));
            record_run();  // replayed through program_bars_locked with the decode bits
        } else if (at != pci::reg::kCommand + 2 && at != pci::reg::kCommand + 3 &&
                   at + 4 <= kConfigSize) {
            // Not status (W1C: replaying it would clear bits).
            if (run_len == 0) run_start = i;
            ++run_len;
        } else {
            record_run();
        }
    }
    record_run();
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < in.size();) {
            if (!forward[done]) {
                ++done;
                continue;
            }
            const uint32_t at = offset + static_cast<uint32_t>(done);
            size_t run = 1;
            while (done + run < in.size() && forward[done + run]) ++run;
            const uint32_t n = chunk_size(at, run, 4);
            POTEMKIN_TRY(cfg_write_bytes_locked(at, std::span<const uint8_t>(&bytes[done], n)));
            done += n;
        }
        return ok();
    }();
    link_.drain();  // an interrupt the write raised, before the guest's next instruction
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
    link_.run_inbox();
    std::fill(out.begin(), out.end(), 0xFF);
    if (index >= bars_.size() || bars_[index].size == 0)
        return failf("{}: read of {}: no such region", s_.label, hostdev::region_name(index));
    const MpqemuBar& b = bars_[index];
    if (offset > b.size || out.size() > b.size - offset)
        return failf("{}: read of {} bytes at {:#x} is outside {} ({:#x} bytes)", s_.label,
                     out.size(), offset, hostdev::region_name(index), b.size);
    const bool memory = b.kind != pci::BarKind::io;
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < out.size();) {
            const uint64_t at = offset + done;
            const uint32_t n = chunk_size(at, out.size() - done, memory ? 8 : 4);
            auto what = [&] {
                return fmt::format("BAR_READ of {} at {:#x} ({} bytes)",
                                   hostdev::region_name(index), at, n);
            };
            POTEMKIN_TRY_ASSIGN(
                const uint64_t v,
                request_locked(Cmd::bar_read, encode_bar({b.base + at, 0, n, memory}), what));
            for (uint32_t k = 0; k < n; ++k) out[done + k] = static_cast<uint8_t>(v >> (8 * k));
            done += n;
        }
        return ok();
    }();
    link_.run_inbox();  // a loss the exchange found
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
    link_.run_inbox();
    if (index >= bars_.size() || bars_[index].size == 0)
        return failf("{}: write to {}: no such region", s_.label, hostdev::region_name(index));
    if (index == hostdev::kRomRegion) return failf("{}: the ROM is read-only", s_.label);
    const MpqemuBar& b = bars_[index];
    if (offset > b.size || in.size() > b.size - offset)
        return failf("{}: write of {} bytes at {:#x} is outside {} ({:#x} bytes)", s_.label,
                     in.size(), offset, hostdev::region_name(index), b.size);
    const bool memory = b.kind != pci::BarKind::io;
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        for (size_t done = 0; done < in.size();) {
            const uint64_t at = offset + done;
            const uint32_t n = chunk_size(at, in.size() - done, memory ? 8 : 4);
            uint64_t value = 0;
            for (uint32_t k = 0; k < n; ++k) value |= uint64_t{in[done + k]} << (8 * k);
            auto what = [&] {
                return fmt::format("BAR_WRITE of {} at {:#x} ({} bytes)",
                                   hostdev::region_name(index), at, n);
            };
            POTEMKIN_TRY(
                request_locked(Cmd::bar_write, encode_bar({b.base + at, value, n, memory}), what));
            done += n;
        }
        return ok();
    }();
    link_.drain();  // an interrupt the write raised, before the guest's next instruction
    return result;
}

Result<void> MpqemuClient::Impl::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    link_.run_inbox();
    if (kind != hostdev::IrqKind::intx && count > 0)
        return failf("{}: {} asked for: QEMU's x-remote machine has no MSI, only INTx", s_.label,
                     kind == hostdev::IrqKind::msi ? "MSI" : "MSI-X");
    return ok();
}

// The guest's EOI: the line drops, and the resamplefd asks the remote to fire the irqfd again
// if its line is still up (KVM's resampling irqfd, done in the VMM).
Result<void> MpqemuClient::Impl::ack_intx() {
    link_.run_inbox();
    link_.deassert_intx();
    if (!link_.up()) return ok();
    if (auto r = signal_eventfd(resample_fd_.get()); !r)
        return fail(r.error().context(fmt::format("{}: resample", s_.label)));
    return ok();
}

Result<void> MpqemuClient::Impl::reset() {
    link_.run_inbox();
    Result<void> result = [&]() -> Result<void> {
        std::lock_guard lk(io_mu_);
        auto r = request_locked(Cmd::device_reset, {}, "DEVICE_RESET");
        // The reset cleared the command register the guest programmed, and the remote's BARs.
        guest_command_ = 0;
        config_log_.clear();
        POTEMKIN_TRY(r);
        return program_bars_locked();
    }();
    link_.deassert_intx();
    link_.drain();
    return result;
}

// ---- MpqemuClient: the public shell over the shared state ------------------------------------

MpqemuClient::MpqemuClient(std::shared_ptr<Impl> impl)
    : RemoteClient(impl, impl->link()), impl_(impl.get()) {}

Result<std::unique_ptr<MpqemuClient>> MpqemuClient::open(MpqemuClientSettings settings) {
    if (settings.label.empty()) settings.label = "mpqemu";
    if (settings.timeout.count() <= 0)
        return failf("{}: the timeout must be positive", settings.label);
    POTEMKIN_TRY_ASSIGN(auto impl, hostdev::start_remote_state<Impl>(std::move(settings)));
    return std::unique_ptr<MpqemuClient>(new MpqemuClient(std::move(impl)));
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

}  // namespace potemkin::mpqemu
