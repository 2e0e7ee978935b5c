#include "devices/host_link.hpp"

#include <algorithm>

#include "common/log.hpp"
#include "pci/registers.hpp"
#include "vm/config.hpp"

namespace potemkin::devices {

HostLink::HostLink(std::string name, HostLinkOwner& owner, vm::DeviceContext& ctx)
    : name_(std::move(name)), owner_(owner), ctx_(ctx) {}

HostLink::~HostLink() {
    close();
}

Result<void> HostLink::open(const HostLinkSettings& s) {
    const auto& transports = s.transports ? *s.transports : hostdev::TransportRegistry::builtin();
    // Everything a transport may need: a vfio-user or mpqemu client shares guest RAM with its
    // device process (memory), marshals the events of its own threads onto the engine thread
    // (post) and keeps a halted guest waiting for them (external_source).
    hostdev::OpenContext oc{.events = this,
                            .memory = &ctx_.memory,
                            .post = ctx_.post,
                            .external_source = ctx_.external_source};
    if (s.element) {
        oc.base_dir = s.element->document().directory();
        POTEMKIN_TRY_ASSIGN(auto files, vm::config_files(*s.element));
        for (auto& f : files) oc.files.emplace_back(std::move(f.id), std::move(f.path));
    }
    POTEMKIN_TRY_ASSIGN(host_, transports.open(s.url, oc));
    disconnected_ = false;
    intx_level_ = false;
    irq_kind_ = hostdev::IrqKind::intx;
    return ok();
}

void HostLink::close() {
    if (!host_) return;
    host_->close();
    host_.reset();  // while `this` (its events sink) is still whole
}

// ---- Calls into the device -----------------------------------------------------------------

void HostLink::config_read(uint32_t offset, std::span<uint8_t> out) {
    if (!connected()) {
        std::fill(out.begin(), out.end(), uint8_t{0xFF});
        return;
    }
    if (auto r = host_->config_read(offset, out); !r) {
        read_failed(r.error(), "config", hostdev::kConfigRegion, offset, out.size());
        std::fill(out.begin(), out.end(), uint8_t{0xFF});
    }
}

void HostLink::complete_posted() {
    if (!connected()) return;
    if (auto r = host_->complete_posted(); !r)
        read_failed(r.error(), "config", hostdev::kConfigRegion, pci::reg::kStatus, 2);
}

void HostLink::config_write(uint32_t offset, std::span<const uint8_t> in) {
    if (!connected()) return;
    if (auto r = host_->config_write(offset, in); !r)
        write_failed(r.error(), "config", hostdev::kConfigRegion, offset, in.size());
}

void HostLink::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    irq_kind_ = kind;  // what the device's msi() events mean, for the trace
    if (!connected()) return;
    if (auto r = host_->set_irqs(kind, count); !r)
        write_failed(r.error(), "set_irqs", static_cast<uint32_t>(kind), count, 0);
}

void HostLink::eoi() {
    if (!intx_level_ || !connected()) return;
    if (auto r = host_->ack_intx(); !r) {
        ++stats_.failed_acks;
        if (ack_logged_) return;
        ack_logged_ = true;
        log::warn(
            "{}: passing the guest's EOI to the host device failed (logged once, further "
            "failures are counted): {}",
            name_, r.error().message);
    }
}

bool HostLink::reset() {
    if (!connected()) return true;
    if (auto r = host_->reset(); !r) {
        ++stats_.failed_resets;
        log::warn("{}: host device reset failed: {}", name_, r.error().message);
        return false;
    }
    return true;
}

void HostLink::read_failed(const Error& e, const char* space, uint32_t region, uint64_t offset,
                           size_t size) {
    ++stats_.failed_reads;
    if (read_logged_) return;
    read_logged_ = true;
    log::warn(
        "{}: host device read failed ({} {} at {:#x}, {} bytes), the guest reads all-ones "
        "(logged once, further failures are counted): {}",
        name_, space, region, offset, size, e.message);
}

void HostLink::write_failed(const Error& e, const char* space, uint32_t region, uint64_t offset,
                            size_t size) {
    ++stats_.failed_writes;
    if (write_logged_) return;
    write_logged_ = true;
    log::warn(
        "{}: host device write failed and was dropped ({} {} at {:#x}, {} bytes; logged once, "
        "further failures are counted): {}",
        name_, space, region, offset, size, e.message);
}

// ---- Events from the device ----------------------------------------------------------------

void HostLink::intx(bool asserted) {
    intx_level_ = asserted;
    if (!ctx_.trace) return owner_.intx(asserted);
    ctx_.trace->interrupt_begin(name_, {vm::TracedInterrupt::Kind::intx, asserted, 0});
    owner_.intx(asserted);
    ctx_.trace->interrupt_end();
}

void HostLink::msi(unsigned vector) {
    if (!ctx_.trace) return owner_.msi(vector);
    const auto kind = irq_kind_ == hostdev::IrqKind::msix ? vm::TracedInterrupt::Kind::msix
                                                          : vm::TracedInterrupt::Kind::msi;
    ctx_.trace->interrupt_begin(name_, {kind, false, vector});
    owner_.msi(vector);
    ctx_.trace->interrupt_end();
}

Result<void> HostLink::dma_failed(bool to_guest, uint64_t guest_address, size_t size,
                                  std::string_view why) {
    ++stats_.failed_dma;
    if (ctx_.trace) ctx_.trace->dma(name_, to_guest, guest_address, size, why);
    auto e = failf("{}: DMA {} of {} bytes at {:#x} refused: {}", name_,
                   to_guest ? "write" : "read", size, guest_address, why);
    if (!dma_logged_) {
        dma_logged_ = true;
        log::warn("{} (logged once, further refusals are counted)", e.error.message);
    }
    return e;
}

Result<void> HostLink::dma_read(uint64_t guest_address, std::span<uint8_t> out) {
    if (const char* why = owner_.dma_refusal())
        return dma_failed(false, guest_address, out.size(), why);
    if (auto r = ctx_.memory.read(Gpa(guest_address), out); !r)
        return dma_failed(false, guest_address, out.size(), r.error().message);
    if (ctx_.trace) ctx_.trace->dma(name_, false, guest_address, out.size(), {});
    return ok();
}

Result<void> HostLink::dma_write(uint64_t guest_address, std::span<const uint8_t> in) {
    if (const char* why = owner_.dma_refusal())
        return dma_failed(true, guest_address, in.size(), why);
    if (auto r = ctx_.memory.write(Gpa(guest_address), in); !r)
        return dma_failed(true, guest_address, in.size(), r.error().message);
    if (ctx_.trace) ctx_.trace->dma(name_, true, guest_address, in.size(), {});
    return ok();
}

void HostLink::disconnected(std::string_view why) {
    if (disconnected_) return;
    disconnected_ = true;
    if (ctx_.trace) ctx_.trace->link(name_, false, why);
    log::warn(
        "{}: host device disconnected ({}); reads return all-ones and writes are dropped until "
        "it comes back",
        name_, why);
    // A device that is gone cannot hold its interrupt line.
    if (intx_level_) intx(false);
}

void HostLink::reconnected() {
    // Called whether or not disconnected() was (a transport that reconnects by itself does not
    // report the loss).
    if (ctx_.trace) ctx_.trace->link(name_, true, {});
    if (disconnected_) {
        disconnected_ = false;
        log::warn("{}: host device is back; accesses reach it again", name_);
    }
    owner_.link_restored();
}

}  // namespace potemkin::devices
