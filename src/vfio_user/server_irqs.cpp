// VfioUserServer, interrupts: DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS (eventfds per VFIO irq
// index and vector, masks, the INTx resample eventfd), and the model's INTx and MSI/MSI-X
// turned into eventfd signals.
#include "common/log.hpp"
#include "vfio_user/server_internal.hpp"

namespace potemkin::vfio_user {

using server_detail::bytes_of;
using server_detail::invalid;
using server_detail::no_fds;

uint32_t VfioUserServer::irq_count(uint32_t index) const {
    const sdk::DeviceSpec& spec = server_->spec();
    switch (index) {
        case kIrqIndexIntx:
            return spec.header.interrupt_pin != pci::InterruptPin::none ? 1 : 0;
        case kIrqIndexMsi:
            return spec.msi ? spec.msi->vectors : 0;
        case kIrqIndexMsix:
            return spec.msix ? spec.msix->vectors : 0;
        default:
            return 0;  // ERR, REQ: this server never signals them
    }
}

Result<void> VfioUserServer::handle_irq_info(Connection& conn, Message& msg) {
    POTEMKIN_TRY(no_fds(msg));
    auto req = decode_irq_info(msg.payload);
    if (!req) return fail(req.error());
    IrqInfo out;
    out.index = req->index;
    out.count = irq_count(req->index);
    out.flags = kIrqInfoFlagEventfd;
    if (req->index == kIrqIndexIntx)
        out.flags |= kIrqInfoFlagMaskable | kIrqInfoFlagAutomasked;
    else if (req->index == kIrqIndexMsi || req->index == kIrqIndexMsix)
        out.flags |= kIrqInfoFlagMaskable;
    auto payload = encode_irq_info(out);
    std::span<const uint8_t> parts[1] = {bytes_of(payload)};
    return reply(conn, msg, parts);
}

Result<void> VfioUserServer::handle_set_irqs(Connection& conn, Message& msg) {
    auto s = decode_irq_set(msg.payload);
    if (!s) return fail(s.error());
    const uint32_t index = s->index;
    POTEMKIN_TRY(check_irq_set(*s, irq_count(index), msg.fds.size()));
    auto& fds = irq_fds_[index];
    auto& masked = irq_masked_[index];
    auto& pending = irq_pending_[index];
    // Which vectors of [start, start + count) a DATA_BOOL/DATA_NONE action applies to.
    auto selected = [&](uint32_t i) {
        return s->data() != kIrqSetDataBool || s->bools[i - s->start] != 0;
    };
    const uint32_t end = s->start + s->count;
    switch (s->action()) {
        case kIrqSetActionTrigger:
            if (s->data() == kIrqSetDataEventfd) {
                if (msg.fds.empty()) {
                    for (auto& fd : fds) fd.reset();  // disable the index
                } else {
                    for (uint32_t i = s->start; i < end; ++i) {
                        // VFIO: fd -1 clears one vector; a received fd is never -1, so each
                        // one installs.
                        fds[i] = std::move(msg.fds[i - s->start]);
                    }
                }
                if (index == kIrqIndexMsi || index == kIrqIndexMsix) tell_irq_mode();
            } else if (s->count == 0) {
                for (auto& fd : fds) fd.reset();
                if (index == kIrqIndexMsi || index == kIrqIndexMsix) tell_irq_mode();
            } else {
                // Loopback: signal the selected vectors as if the device had.
                for (uint32_t i = s->start; i < end; ++i)
                    if (selected(i) && fds[i]) signal(fds[i].get());
            }
            break;
        case kIrqSetActionMask:
            if (s->data() == kIrqSetDataEventfd)
                return invalid("DEVICE_SET_IRQS: MASK with DATA_EVENTFD is not supported");
            for (uint32_t i = s->start; i < end; ++i)
                if (selected(i)) masked[i] = true;
            break;
        case kIrqSetActionUnmask:
            if (s->data() == kIrqSetDataEventfd) {
                if (index != kIrqIndexIntx)
                    return invalid("DEVICE_SET_IRQS: UNMASK with DATA_EVENTFD is for INTx only");
                // The resample eventfd: written by the client when the guest EOIs.
                intx_unmask_.set(msg.fds.empty() ? UniqueFd() : std::move(msg.fds[0]));
                break;
            }
            for (uint32_t i = s->start; i < end; ++i) {
                if (!selected(i)) continue;
                if (index == kIrqIndexIntx) {
                    unmask_intx();
                    continue;
                }
                masked[i] = false;
                if (pending[i]) {
                    pending[i] = false;
                    if (fds[i]) signal(fds[i].get());
                }
            }
            break;
        default:
            break;
    }
    return reply(conn, msg);
}

void VfioUserServer::tell_irq_mode() {
    auto installed = [&](uint32_t index) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < irq_fds_[index].size(); ++i)
            if (irq_fds_[index][i]) n = i + 1;
        return n;
    };
    const uint32_t msix = installed(kIrqIndexMsix);
    const uint32_t msi = installed(kIrqIndexMsi);
    Result<void> r;
    if (msix > 0) {
        r = server_->set_irqs(hostdev::IrqKind::msix, msix);
    } else if (msi > 0) {
        r = server_->set_irqs(hostdev::IrqKind::msi, msi);
    } else {
        // Back to INTx from whichever mode was on.
        r = server_->set_irqs(server_->irq_mode() == sdk::IrqMode::msix ? hostdev::IrqKind::msix
                                                                        : hostdev::IrqKind::msi,
                              0);
    }
    if (!r) log::warn("{}: set_irqs: {}", settings_.label, r.error().message);
}

void VfioUserServer::signal_intx(bool asserted) {
    if (!asserted || irq_fds_[kIrqIndexIntx].empty()) return;
    auto& masked = irq_masked_[kIrqIndexIntx];
    const auto& fd = irq_fds_[kIrqIndexIntx][0];
    if (masked[0] || !fd) {
        // Masked: ModelServer re-sends the asserted line on ack_intx() after the unmask.
        ++stats_.dropped_interrupts;
        return;
    }
    masked[0] = true;  // auto-masked, as VFIO INTx
    signal(fd.get());
}

void VfioUserServer::unmask_intx() {
    if (irq_masked_[kIrqIndexIntx].empty()) return;
    irq_masked_[kIrqIndexIntx][0] = false;
    // Resample: a line that is still asserted is signalled again.
    server_->ack_intx();
}

void VfioUserServer::signal_msi(unsigned vector) {
    const uint32_t index = server_->irq_mode() == sdk::IrqMode::msix ? kIrqIndexMsix : kIrqIndexMsi;
    auto& fds = irq_fds_[index];
    if (vector >= fds.size() || !fds[vector]) {
        ++stats_.dropped_interrupts;
        return;
    }
    if (irq_masked_[index][vector]) {
        irq_pending_[index][vector] = true;
        return;
    }
    signal(fds[vector].get());
}

void VfioUserServer::signal(int fd) {
    sdk::signal_client_eventfd(fd, settings_.label, "interrupt eventfd", signal_failures_);
}

void VfioUserServer::disconnect_cleanup() {
    dma_.clear();
    intx_unmask_.set(UniqueFd());
    bool had_msi = false;
    for (uint32_t i = 0; i < kPciNumIrqs; ++i) {
        for (auto& fd : irq_fds_[i]) {
            if (fd && (i == kIrqIndexMsi || i == kIrqIndexMsix)) had_msi = true;
            fd.reset();
        }
        irq_masked_[i].assign(irq_masked_[i].size(), false);
        irq_pending_[i].assign(irq_pending_[i].size(), false);
    }
    if (had_msi && server_) tell_irq_mode();
}

}  // namespace potemkin::vfio_user
