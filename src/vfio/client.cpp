// The VFIO client as a HostDevice: region and config accesses as pread/pwrite on the device fd,
// interrupts as eventfds the kernel signals (VFIO_DEVICE_SET_IRQS), reset and close.
#include "vfio/client.hpp"

#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/bytes.hpp"
#include "common/log.hpp"
#include "hostdev/bar_kind.hpp"
#include "pci/registers.hpp"
#include "vfio/client_impl.hpp"
#include "vfio/region_caps.hpp"

namespace potemkin::vfio {

namespace {

// Region info replies with capabilities are asked for again at their full size, up to this.
constexpr uint32_t kMaxRegionInfoSize = 64 * 1024;

}  // namespace

// ---- Regions -------------------------------------------------------------------------------

Result<hostdev::DeviceInfo> VfioClient::Impl::info() {
    link_.run_inbox();
    hostdev::DeviceInfo d;
    d.name = s_.label;
    d.num_regions = num_regions_;
    d.num_irqs = num_irqs_;
    d.reset_supported = (device_flags_ & VFIO_DEVICE_FLAGS_RESET) != 0;
    return d;
}

Result<hostdev::RegionInfo> VfioClient::Impl::region_info(uint32_t index) {
    link_.run_inbox();
    if (index >= num_regions_)
        return failf("{}: region {} does not exist (the device has {})", s_.label, index,
                     num_regions_);
    // The reply's capability chain follows the struct; the first call says how much room it
    // needs. uint64_t elements keep the structs aligned.
    std::vector<uint64_t> buf((sizeof(vfio_region_info) + 7) / 8);
    auto* ri = reinterpret_cast<vfio_region_info*>(buf.data());
    for (int attempt = 0; attempt < 2; ++attempt) {
        const auto room = static_cast<uint32_t>(buf.size() * 8);
        ri->argsz = room;
        ri->index = index;
        if (::ioctl(device_fd_, VFIO_DEVICE_GET_REGION_INFO, ri) != 0)
            return failf(Errno{errno}, "{}: VFIO_DEVICE_GET_REGION_INFO for {}", s_.label,
                         hostdev::region_name(index));
        if (ri->argsz <= room || ri->argsz > kMaxRegionInfoSize) break;
        buf.assign((ri->argsz + 7) / 8, 0);
        ri = reinterpret_cast<vfio_region_info*>(buf.data());
    }
    const uint64_t have = std::min<uint64_t>(ri->argsz, buf.size() * 8);
    hostdev::RegionInfo out;
    out.index = index;
    out.size = ri->size;
    out.readable = (ri->flags & VFIO_REGION_INFO_FLAG_READ) != 0;
    out.writable = (ri->flags & VFIO_REGION_INFO_FLAG_WRITE) != 0;
    if (index < regions_.size()) regions_[index] = Region{ri->offset, ri->size, ri->flags};
    if (ri->size == 0) return out;                           // absent
    POTEMKIN_TRY(hostdev::describe_bar(*this, index, out));  // the size only says how big
    if ((ri->flags & VFIO_REGION_INFO_FLAG_MMAP) == 0 || !s_.mmap) return out;
    out.fd = device_fd_;
    out.fd_offset = ri->offset;
    const auto sparse =
        (ri->flags & VFIO_REGION_INFO_FLAG_CAPS) != 0
            ? find_sparse_mmap(std::span(reinterpret_cast<const uint8_t*>(buf.data()),
                                         static_cast<size_t>(have)),
                               ri->cap_offset, ri->size)
            : std::nullopt;
    if (!sparse) {
        out.mmap_areas.push_back(hostdev::MmapArea{0, ri->size});
        return out;
    }
    for (const auto& bad : sparse->ignored)
        log::warn("{}: {} sparse mmap area {} is outside the region: ignored", s_.label,
                  hostdev::region_name(index), bad);
    out.mmap_areas = sparse->areas;
    return out;
}

// pread/pwrite at the region's offset on the device fd. vfio-pci splits a BAR access into the
// widest aligned accesses it can make (up to 4 bytes), so any length works; a short transfer
// goes on where it stopped.
Result<void> VfioClient::Impl::access(uint32_t index, uint64_t offset, std::span<uint8_t> buf,
                                      bool write) {
    if (index >= regions_.size() || regions_[index].size == 0)
        return failf("{}: {} {} {:#x} ({} bytes): the region is absent", s_.label,
                     write ? "write to" : "read of", hostdev::region_name(index), offset,
                     buf.size());
    const Region& r = regions_[index];
    if (offset > r.size || buf.size() > r.size - offset)
        return failf("{}: {} {} at {:#x} ({} bytes) runs past its end ({:#x})", s_.label,
                     write ? "write to" : "read of", hostdev::region_name(index), offset,
                     buf.size(), r.size);
    size_t done = 0;
    while (done < buf.size()) {
        const auto at = static_cast<off_t>(r.offset + offset + done);
        const ssize_t n = write ? ::pwrite(device_fd_, buf.data() + done, buf.size() - done, at)
                                : ::pread(device_fd_, buf.data() + done, buf.size() - done, at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return failf(Errno{n < 0 ? errno : EIO}, "{}: {} {} at {:#x} ({} bytes)", s_.label,
                         write ? "pwrite to" : "pread of", hostdev::region_name(index),
                         offset + done, buf.size() - done);
        done += static_cast<size_t>(n);
    }
    return ok();
}

Result<void> VfioClient::Impl::region_read(uint32_t index, uint64_t offset,
                                           std::span<uint8_t> out) {
    link_.run_inbox();
    return access(index, offset, out, false);
}

Result<void> VfioClient::Impl::region_write(uint32_t index, uint64_t offset,
                                            std::span<const uint8_t> in) {
    link_.run_inbox();
    // pwrite does not write to its buffer; the span is non-const only to share access().
    auto r = access(index, offset, std::span(const_cast<uint8_t*>(in.data()), in.size()), true);
    // A write is how a guest makes a device raise an interrupt: the host kernel signalled the
    // eventfd by the time pwrite returned if the device raised it at once (as edu does), so it
    // reaches the front-end before the guest's next instruction.
    link_.drain();
    return r;
}

// Nothing is posted (pwrite waits), but a write through a direct mapping does not come here:
// what it raised may be in an eventfd the poll thread has not looked at. A read from state the
// front-end shadows (the Interrupt Status bit) must see it: one epoll_wait.
Result<void> VfioClient::Impl::complete_posted() {
    link_.drain();
    return ok();
}

// ---- Interrupts ------------------------------------------------------------------------------

Result<void> VfioClient::Impl::set_trigger(hostdev::IrqKind kind, uint32_t count) {
    const auto index = static_cast<uint32_t>(kind);
    std::vector<uint8_t> buf(sizeof(vfio_irq_set) + count * sizeof(int32_t));
    vfio_irq_set head{};
    head.argsz = static_cast<uint32_t>(buf.size());
    head.flags = (count == 0 ? VFIO_IRQ_SET_DATA_NONE : VFIO_IRQ_SET_DATA_EVENTFD) |
                 VFIO_IRQ_SET_ACTION_TRIGGER;
    head.index = index;
    head.start = 0;
    head.count = count;
    std::memcpy(buf.data(), &head, sizeof head);
    for (uint32_t i = 0; i < count; ++i) {
        const int32_t fd = kind == hostdev::IrqKind::intx ? intx_fd_.get() : vector_fds_[i].get();
        std::memcpy(buf.data() + sizeof head + i * sizeof fd, &fd, sizeof fd);
    }
    if (::ioctl(device_fd_, VFIO_DEVICE_SET_IRQS, buf.data()) != 0)
        return failf(Errno{errno}, "{}: VFIO_DEVICE_SET_IRQS {} {} ({} vectors)", s_.label,
                     count == 0 ? "disabling" : "enabling", irq_name(kind), count);
    return ok();
}

Result<void> VfioClient::Impl::disarm() {
    if (!armed_) return ok();
    const auto kind = *armed_;
    armed_.reset();
    return set_trigger(kind, 0);
}

Result<void> VfioClient::Impl::arm(hostdev::IrqKind kind, uint32_t count) {
    if (kind != hostdev::IrqKind::intx) POTEMKIN_TRY(ensure_vector_fds(count));
    POTEMKIN_TRY(set_trigger(kind, count));
    armed_ = kind;
    return ok();
}

void VfioClient::Impl::on_intx() {
    // A stale signal from before a switch to MSI: the kernel raised it, nobody wants it now.
    if (kind_ != hostdev::IrqKind::intx) return;
    interrupts_.fetch_add(1, std::memory_order_relaxed);
    link_.assert_intx();
}

void VfioClient::Impl::on_vector(unsigned vector) {
    if (kind_ == hostdev::IrqKind::intx) return;
    interrupts_.fetch_add(1, std::memory_order_relaxed);
    s_.events->msi(vector);
}

// The kernel's MSI and MSI-X blocks are all-or-nothing: changing the vector count or the kind
// means disabling what is armed first (VFIO_DEVICE_SET_IRQS with count 0), then arming anew.
Result<void> VfioClient::Impl::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    link_.run_inbox();
    const auto index = static_cast<uint32_t>(kind);
    if (index >= irqs_.size()) return failf("{}: unknown interrupt kind {}", s_.label, index);
    if (count > irqs_[index].count)
        return failf("{}: {} vectors of {} asked for; the device has {}", s_.label, count,
                     irq_name(kind), irqs_[index].count);
    kind_ = kind;
    link_.deassert_intx();
    POTEMKIN_TRY(disarm());
    if (count != 0) POTEMKIN_TRY(arm(kind, count));
    link_.drain();
    return ok();
}

// The guest's EOI: drop the line and unmask; vfio-pci signals the eventfd again if the device
// still asserts INTx (the resample). The re-trigger comes from the host kernel's interrupt
// handler, usually before the ioctl returns; otherwise through the poll thread a moment later.
Result<void> VfioClient::Impl::ack_intx() {
    link_.run_inbox();
    if (kind_ != hostdev::IrqKind::intx || armed_ != hostdev::IrqKind::intx) return ok();
    link_.deassert_intx();
    vfio_irq_set s{};
    s.argsz = sizeof s;
    s.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
    s.index = VFIO_PCI_INTX_IRQ_INDEX;
    s.start = 0;
    s.count = 1;
    if (::ioctl(device_fd_, VFIO_DEVICE_SET_IRQS, &s) != 0)
        return failf(Errno{errno}, "{}: VFIO_DEVICE_SET_IRQS unmask of INTx", s_.label);
    link_.drain();
    return ok();
}

// Back to the power-on state as far as the host lets us: interrupts off, then the command
// register cleared (no decode, no bus mastering: DMA stops) and the function reset when the
// device has one; then INTx armed again (HostDevice contract). A device without a reset keeps
// its internal state (said once in the log).
Result<void> VfioClient::Impl::reset() {
    link_.run_inbox();
    link_.deassert_intx();
    kind_ = hostdev::IrqKind::intx;
    Result<void> out = disarm();
    std::array<uint8_t, 2> zero{};
    if (auto r = access(hostdev::kConfigRegion, pci::reg::kCommand, zero, true); !r && out)
        out = fail(r.error());
    if ((device_flags_ & VFIO_DEVICE_FLAGS_RESET) != 0) {
        if (::ioctl(device_fd_, VFIO_DEVICE_RESET) != 0 && out)
            out = failf(Errno{errno}, "{}: VFIO_DEVICE_RESET", s_.label);
    } else {
        if (!reset_note_given_) {
            reset_note_given_ = true;
            log::info(
                "{}: the device has no reset VFIO can use (no FLR, PM or bus reset): "
                "interrupts and the command register are reset, its internal state is not",
                s_.label);
        }
    }
    if (irqs_[0].count != 0)
        if (auto r = arm(hostdev::IrqKind::intx, 1); !r && out) out = fail(r.error());
    link_.drain();
    return out;
}

void VfioClient::Impl::close() {
    if (link_.closed()) return;
    link_.stop_polling();
    if (container_) {
        if (auto r = disarm(); !r) log::warn("{}: closing: {}", s_.label, r.error().message);
        if (auto r = container_->unmap_all(); !r)
            log::warn("{}: closing: {}", s_.label, r.error().message);
    }
    link_.close();
    container_.reset();  // the device, group and container fds
    device_fd_ = -1;
    intx_fd_.reset();
    vector_fds_.clear();
}

VfioStats VfioClient::Impl::stats() const {
    VfioStats st;
    st.address = sysfs_.address.str();
    st.group = sysfs_.group;
    st.type1v2 = container_ && container_->iommu_type() == VFIO_TYPE1v2_IOMMU;
    st.dma_mappings = container_ ? container_->mappings() : 0;
    st.dma_bytes = dma_bytes_;
    st.interrupts = interrupts_.load(std::memory_order_relaxed);
    return st;
}

// ---- VfioClient ------------------------------------------------------------------------------

VfioClient::VfioClient(std::shared_ptr<Impl> impl)
    : RemoteClient(impl, impl->link()), impl_(impl.get()) {}

Result<std::unique_ptr<VfioClient>> VfioClient::open(VfioClientSettings settings) {
    if (settings.label.empty()) {
        auto a = parse_pci_address(settings.device);
        settings.label = "vfio:" + (a ? a->str() : settings.device);
    }
    POTEMKIN_TRY_ASSIGN(auto impl, hostdev::start_remote_state<Impl>(std::move(settings)));
    return std::unique_ptr<VfioClient>(new VfioClient(std::move(impl)));
}

VfioStats VfioClient::stats() const {
    return impl_->stats();
}

}  // namespace potemkin::vfio
