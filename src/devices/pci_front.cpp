#include "devices/pci_front.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/bytes.hpp"
#include "common/log.hpp"
#include "pci/config_write.hpp"
#include "pci/express.hpp"
#include "pci/registers.hpp"

namespace potemkin::devices {

namespace {

namespace reg = pci::reg;

constexpr uint32_t kConventional = static_cast<uint32_t>(pci::SpaceSize::conventional);
constexpr uint32_t kExpress = static_cast<uint32_t>(pci::SpaceSize::express);
constexpr uint32_t kMsixCapLength = 12;

// Status bits that are read-only and device-specific on real hardware: capabilities list (4),
// 66 MHz capable (5), fast back-to-back capable (7), DEVSEL timing (10:9). They keep the value
// the device reported; every other non-W1C bit is reserved and reads 0 (spec 3.0 6.2.3).
constexpr uint16_t kStatus66MHz = 1u << 5;
constexpr uint16_t kStatusFastBackToBack = 1u << 7;
constexpr uint16_t kStatusDevselTiming = 3u << 9;
constexpr uint16_t kStatusDeviceRo =
    pci::status::kCapabilitiesList | kStatus66MHz | kStatusFastBackToBack | kStatusDevselTiming;

uint32_t all_ones32(unsigned size) {
    return static_cast<uint32_t>(HostLink::all_ones(std::min(size, 4u)));
}
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
    return a < b + blen && b < a + alen;
}
uint16_t u16_at(const std::vector<uint8_t>& img, uint32_t off) {
    return static_cast<uint16_t>(load_le(std::span(img).subspan(off, 2)));
}
uint32_t u32_at(const std::vector<uint8_t>& img, uint32_t off) {
    return static_cast<uint32_t>(load_le(std::span(img).subspan(off, 4)));
}

}  // namespace

PciFront::PciFront(std::string id, vm::DeviceContext& ctx, pci::PciBus* bus)
    : Device(std::move(id)), ctx_(ctx), bus_(bus), link_(this->id(), *this, ctx) {}

Result<std::unique_ptr<PciFront>> PciFront::create(std::string id, vm::DeviceContext& ctx,
                                                   const PciFrontSettings& s) {
    std::unique_ptr<PciFront> d(new PciFront(std::move(id), ctx, s.bus));
    POTEMKIN_TRY(d->open(s));
    if (s.bus) {
        auto a = s.bus->add_function(*d, s.slot);
        if (!a) {
            const char* attr = s.slot ? "slot" : "bus";
            return fail(s.element ? s.element->attr_error(attr, a.error().message)
                                  : a.error().context(d->id()));
        }
        d->address_ = *a;
        d->update_intx();  // the device may have asserted INTx while it was being opened
    }
    return d;
}

PciFront::~PciFront() {
    // Unhook first so no guest access can reach this object, then stop the device's events.
    // The seed freed its state and then printed state->name; here nothing is touched after
    // the host device is gone.
    for (int i = 0; i < pci::kBarCount; ++i) {
        unmap_direct(i);
        release_direct(i);
    }
    if (bus_ && address_) {
        if (intx_driven_) bus_->set_intx(*address_, pin_, false);
        bus_->remove_function(*address_);
    }
    link_.close();  // while `this` (the link's owner) is still whole
}

// ---- Open: pull config space and region info, build the shadow --------------------------

Result<void> PciFront::open(const PciFrontSettings& s) {
    // Every open failure is about the host device: report it on the attribute that names it.
    auto err = [&](const Error& e) {
        return s.element ? s.element->attr_error(s.hostdev_attribute, e.message) : e.context(id());
    };
    if (auto r = link_.open({.url = s.hostdev, .transports = s.transports, .element = s.element});
        !r)
        return fail(err(r.error()));
    hostdev::HostDevice& host = link_.device();

    auto info = host.info();
    if (!info) return fail(err(info.error()));
    for (uint32_t i = 0; i < regions_.size(); ++i) {
        auto ri = host.region_info(i);
        if (ri) {
            regions_[i] = *ri;
        } else if (i < info->num_regions) {
            return fail(err(ri.error().context(fmt::format("region {} info", i))));
        } else {
            regions_[i] = hostdev::RegionInfo{.index = i};
        }
    }

    std::vector<uint8_t> image(kConventional);
    if (auto r = host.config_read(0, image); !r)
        return fail(err(r.error().context("reading config space")));
    // A PCIe function has 4 KiB of config space; pull it all when the device offers it.
    {
        pci::ConfigSpace probe;
        if (probe.set_bytes(0, image) && pci::find_capability(probe, pci::cap_id::kPciExpress)) {
            std::vector<uint8_t> big(kExpress);
            if (host.config_read(0, big))
                image = std::move(big);
            else
                log::info("{}: PCIe device without readable extended config space", id());
        }
    }
    if (auto r = build_shadow(std::move(image)); !r) return fail(err(r.error()));
    initial_cs_ = cs_;
    // A VM reset restores the power-on status: no interrupt condition (the device's own reset
    // drops its line, and intx() events set the bit again if it re-asserts).
    (void)initial_cs_.update(reg::kStatus, 2, pci::status::kInterruptStatus, 0);
    open_direct();
    return ok();
}

void PciFront::mark_shadowed(uint32_t offset, uint32_t length) {
    for (uint32_t i = offset; i < offset + length && i < shadowed_.size(); ++i) shadowed_[i] = 1;
}

bool PciFront::shadowed(uint32_t offset) const {
    return offset < shadowed_.size() && shadowed_[offset] != 0;
}

Result<void> PciFront::build_shadow(std::vector<uint8_t> image) {
    const uint16_t vendor = u16_at(image, reg::kVendorId);
    if (vendor == 0xFFFF || vendor == 0)
        return failf("config space has vendor ID {:#06x}: no device", vendor);
    cs_ = pci::ConfigSpace(image.size() == kExpress ? pci::SpaceSize::express
                                                    : pci::SpaceSize::conventional);
    shadowed_.assign(cs_.size(), 0);
    write_through_.assign(cs_.size(), 0);
    // Start from the device's bytes, all read-only; the shadowed registers get their masks
    // below. Forwarded bytes are never read from here, the copy only serves the capability walk.
    POTEMKIN_TRY(cs_.set_bytes(0, image));

    // Command: decode starts off, as after power-on (6.2.2). Written through to the device so
    // bus mastering and interrupt disable reach it; decode is decided here.
    POTEMKIN_TRY(cs_.set_u16(reg::kCommand, 0, {.wmask = pci::command::kWritable}));
    // Status: shadowed so the W1C/RO rules hold whatever the device model does; interrupt
    // status (3) follows the device's intx() events. Written through as well, so the device
    // can clear its own copies of the error bits.
    const uint16_t st = u16_at(image, reg::kStatus);
    const uint16_t intx_status = intx_level_ ? pci::status::kInterruptStatus : 0;
    POTEMKIN_TRY(cs_.set_u16(reg::kStatus,
                             (st & (kStatusDeviceRo | pci::status::kW1c)) | intx_status,
                             {.w1c = pci::status::kW1c}));
    mark_shadowed(reg::kCommand, 4);
    for (uint32_t i = reg::kCommand; i < reg::kCommand + 4; ++i) write_through_[i] = 1;

    // BARs: kinds and sizes from region info, never from the BAR values (the seed computed the
    // size from the value). Addresses start unassigned; the guest's firmware assigns them.
    for (int i = 0; i < pci::kBarCount; ++i) {
        const auto& r = regions_[static_cast<size_t>(i)];
        if (!r.present()) continue;
        if (!r.bar_kind || *r.bar_kind == pci::BarKind::rom)
            return failf("region {} has a kind that cannot be a BAR", i);
        pci::BarSettings b{.kind = *r.bar_kind,
                           .size = r.size,
                           .prefetchable = r.prefetchable && *r.bar_kind != pci::BarKind::io};
        layout_.bars[static_cast<size_t>(i)] = b;
        if (b.kind == pci::BarKind::mem64 && i + 1 < pci::kBarCount) {
            const auto& upper = regions_[static_cast<size_t>(i) + 1];
            if (upper.present())
                return failf("region {} is the upper half of 64-bit BAR{} but is not absent", i + 1,
                             i);
            ++i;
        }
    }
    const auto& rom = regions_[hostdev::kRomRegion];
    if (rom.present()) {
        if (rom.size > (1ull << 31)) return failf("ROM region size {:#x} is too large", rom.size);
        layout_.rom = pci::RomSettings{.size = static_cast<uint32_t>(rom.size)};
    }
    if (auto r = pci::install_bars(cs_, layout_); !r) return fail(r.error().context("region info"));
    mark_shadowed(reg::kBar0, 4 * pci::kBarCount);
    mark_shadowed(reg::kRomBar, 4);

    // Interrupt line: RW scratch for the guest/BIOS; the pin is the device's.
    POTEMKIN_TRY(cs_.set_u8(reg::kInterruptLine, image[reg::kInterruptLine], {.wmask = 0xFF}));
    mark_shadowed(reg::kInterruptLine, 1);
    pin_ = image[reg::kInterruptPin];
    if (pin_ > 4) return failf("interrupt pin {} is not 0-4", pin_);
    irqs_ = Irqs{hostdev::IrqKind::intx, pin_ ? 1u : 0u};

    // MSI and MSI-X: rebuilt locally from what the device declares (a list from a host device
    // is untrusted: walk_capabilities rejects loops and pointers into the header).
    auto caps = pci::walk_capabilities(cs_);
    if (!caps) return fail(caps.error().context("capability list"));
    for (const auto& c : *caps) {
        if (c.id == pci::cap_id::kMsi && !msi_cap_) POTEMKIN_TRY(shadow_msi(image, c.offset));
        if (c.id == pci::cap_id::kMsix && !msix_cap_) POTEMKIN_TRY(shadow_msix(image, c.offset));
        if (c.id == pci::cap_id::kPciExpress && !pcie_cap_)
            POTEMKIN_TRY(shadow_pcie(image, c.offset));
    }
    if (cs_.is_express()) {
        // Extended capabilities are forwarded byte for byte; the chain is only checked, so a
        // malformed one is reported at open rather than discovered by a guest driver.
        if (auto chain = pci::walk_extended_capabilities(cs_); !chain)
            log::warn("{}: {}", id(), chain.error().message);
    }
    return ok();
}

// Device Status (PCIe Base Spec section 7.5.3.5) is shadowed like the status register: its four
// error bits RW1C whatever the device model does, the rest read-only; written through so the
// device clears its own copies.
Result<void> PciFront::shadow_pcie(const std::vector<uint8_t>& image, uint8_t cap) {
    if (cap + uint32_t{pci::pcie::kDevSta} + 2 > pci::kCapabilityAreaEnd)
        return failf("PCI Express capability at {:#x} does not fit the capability area", cap);
    const uint32_t at = cap + uint32_t{pci::pcie::kDevSta};
    POTEMKIN_TRY(cs_.set_u16(at, u16_at(image, at), {.w1c = pci::pcie::kDevStaW1c}));
    mark_shadowed(at, 2);
    write_through_[at] = write_through_[at + 1] = 1;
    pcie_cap_ = cap;
    return ok();
}

Result<void> PciFront::shadow_msi(const std::vector<uint8_t>& image, uint8_t cap) {
    const uint16_t ctl = u16_at(image, cap + uint32_t{pci::msi::kControl});
    const unsigned mmc = (ctl >> pci::msi::kMmcShift) & 0x7;
    if (mmc > 5)
        return failf("MSI capability at {:#x}: Multiple Message Capable {} is reserved", cap, mmc);
    auto img =
        pci::msi_capability({.vectors = 1u << mmc,
                             .address64 = (ctl & pci::msi::k64Bit) != 0,
                             .per_vector_masking = (ctl & pci::msi::kPerVectorMasking) != 0});
    if (!img) return fail(img.error());
    if (cap + img->bytes.size() > pci::kCapabilityAreaEnd)
        return failf("MSI capability at {:#x} does not fit the capability area", cap);
    img->bytes[0] = image[cap];
    img->bytes[1] = image[cap + 1u];
    POTEMKIN_TRY(cs_.set_bytes(cap, img->bytes, img->wmask, img->w1c, img->w1s));
    msi_length_ = static_cast<uint32_t>(img->bytes.size());
    mark_shadowed(cap, msi_length_);
    msi_cap_ = cap;
    return ok();
}

Result<void> PciFront::shadow_msix(const std::vector<uint8_t>& image, uint8_t cap) {
    if (cap + kMsixCapLength > pci::kCapabilityAreaEnd)
        return failf("MSI-X capability at {:#x} does not fit the capability area", cap);
    const uint16_t ctl = u16_at(image, cap + uint32_t{pci::msix::kControl});
    const uint32_t table = u32_at(image, cap + uint32_t{pci::msix::kTable});
    const uint32_t pba = u32_at(image, cap + uint32_t{pci::msix::kPba});
    const pci::MsixSettings ms{
        .vectors = (ctl & pci::msix::kTableSizeMask) + 1u,
        .table_bir = static_cast<uint8_t>(table & pci::msix::kBirMask),
        .table_offset = table & ~pci::msix::kBirMask,
        .pba_bir = static_cast<uint8_t>(pba & pci::msix::kBirMask),
        .pba_offset = pba & ~pci::msix::kBirMask,
    };
    auto img = pci::msix_capability(ms);
    if (!img) return fail(img.error());
    auto t = pci::MsixTable::create(ms.vectors);
    if (!t) return fail(t.error());
    // The table and PBA must lie inside memory BARs the device has.
    auto check = [&](const char* what, uint8_t bir, uint64_t offset, uint64_t length) {
        const auto& b = layout_.bars[bir];
        if (!b || b->kind == pci::BarKind::io)
            return Result<void>(
                failf("MSI-X {} is in BAR{}, which is not a memory BAR", what, bir));
        if (offset + length > b->size)
            return Result<void>(failf("MSI-X {} at {:#x}+{:#x} does not fit BAR{} ({:#x} bytes)",
                                      what, offset, length, bir, b->size));
        return ok();
    };
    POTEMKIN_TRY(check("table", ms.table_bir, ms.table_offset, t->table_bytes()));
    POTEMKIN_TRY(check("PBA", ms.pba_bir, ms.pba_offset, t->pba_bytes()));
    img->bytes[0] = image[cap];
    img->bytes[1] = image[cap + 1u];
    POTEMKIN_TRY(cs_.set_bytes(cap, img->bytes, img->wmask, img->w1c, img->w1s));
    mark_shadowed(cap, kMsixCapLength);
    msix_cap_ = cap;
    msix_ = pci::read_msix(cs_, cap);
    msix_table_.emplace(std::move(*t));
    return ok();
}

// ---- Config space ----------------------------------------------------------------------

uint16_t PciFront::command() const {
    return static_cast<uint16_t>(cs_.read(reg::kCommand, 2));
}

uint32_t PciFront::config_read(uint32_t offset, unsigned size) {
    if ((size != 1 && size != 2 && size != 4) || offset + size > cs_.size() ||
        (offset & 3) + size > 4)
        return 0xFFFF'FFFFu;
    if (!link_.connected()) return all_ones32(size);
    std::array<uint8_t, 4> buf{};
    // Split into runs of local and forwarded bytes; each run is read from its owner.
    for (unsigned i = 0; i < size;) {
        const bool local = shadowed(offset + i);
        unsigned j = i;
        while (j < size && shadowed(offset + j) == local) ++j;
        if (local) {
            // The Interrupt Status bit is the device's: writes it has not handled yet (posted)
            // go first, as they would before a non-posted read on PCI.
            if (offset + i <= reg::kStatus && reg::kStatus < offset + j) link_.complete_posted();
            for (unsigned k = i; k < j; ++k) buf[k] = static_cast<uint8_t>(cs_.read(offset + k, 1));
        } else {
            link_.config_read(offset + i, std::span(buf.data() + i, j - i));
        }
        i = j;
    }
    return static_cast<uint32_t>(load_le(std::span(buf.data(), size)));
}

pci::DecodeSnapshot PciFront::decode_now() {
    if (!pending_) return pci::decode_all(cs_, layout_);
    // Decode as if the pending half still held its old value.
    const uint32_t off = reg::bar(pending_->bar + pending_->half);
    const uint32_t cur = cs_.read(off, 4);
    (void)cs_.store(off, 4, pending_->old);
    auto snap = pci::decode_all(cs_, layout_);
    (void)cs_.store(off, 4, cur);
    return snap;
}

// A 64-bit BAR is moved with two dword writes. Decoding after the first would map the BAR at
// a mix of the old and new halves: an address nobody asked for, which may collide with
// another device and get the write rejected. So when a half-write would move a *mapped* BAR
// to another valid place, its decode waits for the other half (either order). Any other
// config write lands it alone. A write that unmaps (sizing, address 0) or maps an unmapped
// BAR lands at once, so sizing and assignment with decode off behave as on hardware.
std::optional<PciFront::Pending64> PciFront::next_pending(uint32_t offset, uint32_t dword_before) {
    const uint32_t dword = offset & ~3u;
    int bar = -1, half = 0;
    for (int i = 0; i + 1 < pci::kBarCount; ++i) {
        const auto& b = layout_.bars[static_cast<size_t>(i)];
        if (!b || b->kind != pci::BarKind::mem64) continue;
        if (dword == reg::bar(i)) bar = i, half = 0;
        if (dword == reg::bar(i + 1)) bar = i, half = 1;
    }
    if (bar < 0) return std::nullopt;
    const bool same_bar = pending_ && pending_->bar == bar;
    if (same_bar && pending_->half != half) return std::nullopt;  // both halves land together
    const uint32_t old = same_bar ? pending_->old : dword_before;
    const uint32_t cur = cs_.read(dword, 4);
    if (cur == old) return std::nullopt;
    const auto now = pci::decode_bar(cs_, bar);
    (void)cs_.store(dword, 4, old);
    const auto was = pci::decode_bar(cs_, bar);
    (void)cs_.store(dword, 4, cur);
    if (was && now && now->address != was->address) return Pending64{bar, half, old};
    return std::nullopt;
}

pci::ConfigWriteResult PciFront::config_write(uint32_t offset, unsigned size, uint32_t value) {
    if ((size != 1 && size != 2 && size != 4) || offset + size > cs_.size() ||
        (offset & 3) + size > 4)
        return {};
    if (!link_.connected()) return {};  // a device that is gone accepts nothing
    snapshot_ = Snapshot{.valid = true, .offset = offset, .size = size, .pending = pending_};
    for (unsigned k = 0; k < size; ++k)
        snapshot_.bytes[k] = static_cast<uint8_t>(cs_.read(offset + k, 1));
    const uint32_t dword_before = cs_.read(offset & ~3u, 4);
    const pci::DecodeSnapshot before = decode_now();

    std::array<uint8_t, 4> bytes{};
    store_le(std::span(bytes.data(), size), value);
    for (unsigned k = 0; k < size; ++k)
        if (shadowed(offset + k)) cs_.write(offset + k, 1, bytes[k]);
    // Forward the non-shadowed runs (and the write-through command/status bytes) as the guest
    // wrote them: a dword straddling both kinds is split per byte range.
    auto forwarded = [&](unsigned k) {
        return !shadowed(offset + k) || write_through_[offset + k] != 0;
    };
    for (unsigned i = 0; i < size;) {
        const bool fwd = forwarded(i);
        unsigned j = i;
        while (j < size && forwarded(j) == fwd) ++j;
        if (fwd) link_.config_write(offset + i, std::span(bytes.data() + i, j - i));
        i = j;
    }

    pending_ = next_pending(offset, dword_before);
    pci::ConfigWriteResult result{pci::diff_decode(before, decode_now())};
    after_config_change(offset, size);
    return result;
}

void PciFront::config_write_rejected() {
    if (!snapshot_.valid) return;
    snapshot_.valid = false;
    const uint32_t off = snapshot_.offset;
    for (unsigned k = 0; k < snapshot_.size; ++k)
        if (shadowed(off + k)) (void)cs_.store(off + k, 1, snapshot_.bytes[k]);
    pending_ = snapshot_.pending;
    // The device saw the command write; give it back the restored value.
    if (overlaps(off, snapshot_.size, reg::kCommand, 2)) {
        std::array<uint8_t, 2> b{};
        store_le(b, command());
        link_.config_write(reg::kCommand, b);
    }
    after_config_change(off, snapshot_.size);
}

void PciFront::config_write_applied() {
    sync_direct();
}

void PciFront::after_config_change(uint32_t offset, unsigned size) {
    update_intx();  // interrupt disable may have changed
    update_irqs();  // tell the device first, then deliver what became deliverable
    if (msi_cap_ && overlaps(offset, size, *msi_cap_, msi_length_))
        send(pci::msi_take_unmasked_pending(cs_, *msi_cap_));
    if (msix_cap_ && overlaps(offset, size, *msix_cap_, kMsixCapLength)) {
        const auto st = pci::read_msix(cs_, *msix_cap_);
        send(msix_table_->set_control(st.enabled, st.function_masked));
    }
}

// ---- Interrupts --------------------------------------------------------------------------

void PciFront::update_intx() {
    const bool want =
        pin_ != 0 && intx_level_ && (command() & pci::command::kInterruptDisable) == 0;
    if (!bus_ || !address_ || want == intx_driven_) return;
    intx_driven_ = want;
    bus_->set_intx(*address_, pin_, want);
}

void PciFront::update_irqs() {
    Irqs want{hostdev::IrqKind::intx, pin_ ? 1u : 0u};
    if (msix_cap_) {
        const auto st = pci::read_msix(cs_, *msix_cap_);
        if (st.enabled) want = Irqs{hostdev::IrqKind::msix, st.vectors};
    }
    if (want.kind == hostdev::IrqKind::intx && msi_cap_) {
        const auto st = pci::read_msi(cs_, *msi_cap_);
        if (st.enabled) want = Irqs{hostdev::IrqKind::msi, st.vectors_enabled};
    }
    if (want == irqs_) return;
    irqs_ = want;
    link_.set_irqs(want.kind, want.count);
}

void PciFront::send(const pci::MsiMessage& m) {
    // An MSI is a memory write by the function: without bus mastering it cannot happen.
    if ((command() & pci::command::kBusMaster) == 0) {
        log::debug("{}: MSI dropped: bus mastering is disabled", id());
        return;
    }
    ctx_.interrupts.send_msi(m.address, m.data);
}

void PciFront::send(const std::vector<pci::MsiMessage>& messages) {
    for (const auto& m : messages) send(m);
}

void PciFront::intx(bool asserted) {
    intx_level_ = asserted;
    // Interrupt status reflects the device's condition whatever interrupt disable says.
    const uint32_t bit = pci::status::kInterruptStatus;
    (void)cs_.update(reg::kStatus, 2, asserted ? 0 : bit, asserted ? bit : 0);
    update_intx();
}

void PciFront::msi(unsigned vector) {
    switch (irqs_.kind) {
        case hostdev::IrqKind::msix:
            if (auto m = msix_table_->signal(vector)) send(*m);
            return;
        case hostdev::IrqKind::msi:
            if (auto m = pci::msi_signal(cs_, *msi_cap_, vector)) send(*m);
            return;
        case hostdev::IrqKind::intx:
            log::debug("{}: MSI vector {} while MSI and MSI-X are disabled: dropped", id(), vector);
            return;
    }
}

// The guest EOId the line our pin drives. Only while we drive it: an EOI on a shared line for
// another function's interrupt, or one while Interrupt Disable holds our line back, is not ours
// to acknowledge (the device stays masked until the guest takes its interrupt).
void PciFront::intx_eoi(uint8_t pin) {
    if (pin == pin_ && intx_driven_) link_.eoi();  // the link: only while connected
}

// ---- VM reset ----------------------------------------------------------------------------

void PciFront::reset() {
    // Nothing decodes after a reset: direct mappings, bus ranges and the INTx pin go first.
    for (int i = 0; i < pci::kBarCount; ++i) unmap_direct(i);
    if (bus_ && address_) bus_->function_reset(*address_);
    intx_driven_ = false;
    intx_level_ = false;
    const Irqs before = irqs_;
    cs_ = initial_cs_;
    pending_.reset();
    snapshot_ = Snapshot{};
    if (msix_table_) {
        // Cannot fail: the same vector count succeeded at open.
        msix_table_.emplace(pci::MsixTable::create(msix_table_->vectors()).value());
    }
    irqs_ = Irqs{hostdev::IrqKind::intx, pin_ ? 1u : 0u};
    // The device back to its power-on state (vfio-user: DEVICE_RESET). It may raise intx()
    // while doing so; that lands in the fresh shadow. A failure is logged and counted.
    (void)link_.reset();
    // A reset device is in INTx mode; tell the transport, which still holds the mode the guest
    // chose before.
    if (irqs_ != before) link_.set_irqs(irqs_.kind, irqs_.count);
    update_intx();
}

// ---- Events (after the host link's bookkeeping) -------------------------------------------

// DMA is checked against guest RAM by the link; a function may master the bus only while
// bus mastering is on (6.2.2).
const char* PciFront::dma_refusal() const {
    return (command() & pci::command::kBusMaster) == 0 ? "bus mastering is disabled" : nullptr;
}

// The transport reached a server again, maybe a new process with new memory behind its BARs.
void PciFront::link_restored() {
    refresh_direct();
}

// ---- BARs --------------------------------------------------------------------------------

vm::BusHandler PciFront::bar_handler(int bar) {
    return vm::BusHandler{
        [this, bar](uint64_t off, unsigned size) { return region_access_read(bar, off, size); },
        [this, bar](uint64_t off, unsigned size, uint64_t v) {
            region_access_write(bar, off, size, v);
        }};
}

uint64_t PciFront::region_access_read(int bar, uint64_t offset, unsigned size) {
    ++trapped_accesses_;
    report_shrunk(bar);
    if (size == 0 || size > 8 || !link_.connected()) return HostLink::all_ones(size);
    if (msix_table_) {
        if (bar == msix_.table_bir &&
            overlaps(offset, 1, msix_.table_offset, msix_table_->table_bytes()))
            return msix_table_->read_table(offset - msix_.table_offset, size);
        if (bar == msix_.pba_bir && overlaps(offset, 1, msix_.pba_offset, msix_table_->pba_bytes()))
            return msix_table_->read_pba(offset - msix_.pba_offset, size);
    }
    return link_.read(static_cast<uint32_t>(bar), offset, size);
}

void PciFront::region_access_write(int bar, uint64_t offset, unsigned size, uint64_t value) {
    ++trapped_accesses_;
    if (size == 0 || size > 8 || !link_.connected()) return;
    if (bar == pci::kRomBarIndex) return;  // read-only memory
    if (msix_table_) {
        if (bar == msix_.table_bir &&
            overlaps(offset, 1, msix_.table_offset, msix_table_->table_bytes())) {
            send(msix_table_->write_table(offset - msix_.table_offset, size, value));
            return;
        }
        if (bar == msix_.pba_bir && overlaps(offset, 1, msix_.pba_offset, msix_table_->pba_bytes()))
            return;  // the PBA is read-only (6.8.2.10)
    }
    link_.write(static_cast<uint32_t>(bar), offset, size, value);
}

// ---- Direct mapping of mmap areas ---------------------------------------------------------

void PciFront::open_direct() {
    if (!ctx_.map_direct || !ctx_.unmap_direct) return;
    for (int i = 0; i < pci::kBarCount; ++i) open_direct_bar(i);
}

// mmaps BAR `bar`'s region fd (regions_) if it has usable areas; mapping it into the guest is
// sync_direct's business.
void PciFront::open_direct_bar(int i) {
    constexpr uint64_t kPage = 4096;
    const auto& ri = regions_[static_cast<size_t>(i)];
    const auto& b = layout_.bars[static_cast<size_t>(i)];
    if (ri.fd < 0 || ri.mmap_areas.empty() || !b || b->kind == pci::BarKind::io) return;
    std::vector<hostdev::MmapArea> areas;
    for (const auto& a : ri.mmap_areas) {
        bool usable = a.size != 0 && (a.offset | a.size) % kPage == 0 && a.offset <= b->size &&
                      a.size <= b->size - a.offset;
        if (usable && msix_table_) {
            if (i == msix_.table_bir &&
                overlaps(a.offset, a.size, msix_.table_offset, msix_table_->table_bytes()))
                usable = false;
            if (i == msix_.pba_bir &&
                overlaps(a.offset, a.size, msix_.pba_offset, msix_table_->pba_bytes()))
                usable = false;
        }
        if (usable)
            areas.push_back(a);
        else
            log::info(
                "{}: BAR{} mmap area {:#x}+{:#x} is not mapped directly (not whole "
                "pages, or it holds MSI-X structures); it traps",
                id(), i, a.offset, a.size);
    }
    if (areas.empty()) return;
    if (ri.fd_offset % kPage != 0) {
        log::info("{}: BAR{} region fd offset {:#x} is not page-aligned; the BAR traps", id(), i,
                  ri.fd_offset);
        return;
    }
    // The file must hold every area the guest will see: a page past its end would fault in
    // the middle of a guest access (SIGBUS), and the server decides the file's size.
    uint64_t needed = 0;
    for (const auto& a : areas) needed = std::max(needed, a.offset + a.size);
    struct stat st {};
    if (::fstat(ri.fd, &st) != 0) {
        log::warn("{}: BAR{}: fstat of the region fd failed ({}); the BAR traps", id(), i,
                  std::strerror(errno));
        return;
    }
    if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < ri.fd_offset + needed) {
        log::warn(
            "{}: BAR{}: the region fd holds {:#x} bytes but its mmap areas need {:#x} from "
            "offset {:#x}; the BAR traps",
            id(), i, st.st_size, needed, ri.fd_offset);
        return;
    }
    void* p = ::mmap(nullptr, b->size, PROT_READ | PROT_WRITE, MAP_SHARED, ri.fd,
                     static_cast<off_t>(ri.fd_offset));
    if (p == MAP_FAILED) {
        log::warn("{}: BAR{}: mmap of the region fd failed ({}); the BAR traps", id(), i,
                  std::strerror(errno));
        return;
    }
    // The server may still shrink the file later: the guard turns the guest's fault there
    // into a zero page (docs/hostile.md).
    auto guard = ShrinkGuard::watch(p, b->size);
    if (!guard) {
        log::warn("{}: BAR{}: {}; the BAR traps", id(), i, guard.error().message);
        if (::munmap(p, b->size) != 0)
            log::warn("{}: BAR{}: munmap: {}", id(), i, std::strerror(errno));
        return;
    }
    auto& d = direct_[static_cast<size_t>(i)];
    d.host = static_cast<uint8_t*>(p);
    d.length = b->size;
    d.areas = std::move(areas);
    d.guard = std::move(guard).value();
}

// Tells once per BAR mapping that the server shrank the memory behind it (the guest read
// zeros where its pages were).
void PciFront::report_shrunk(int bar) {
    if (bar < 0 || bar >= pci::kBarCount) return;  // the ROM is never mapped directly
    auto& d = direct_[static_cast<size_t>(bar)];
    const uint64_t faults = d.guard.faults();
    if (faults == 0 || d.shrink_reported) return;
    d.shrink_reported = true;
    log::warn(
        "{}: BAR{}: the server shrank the memory file behind the BAR; {} page(s) past its "
        "end read zeros and writes there are lost",
        id(), bar, faults);
}

// The transport is connected to a server again, which may be a new process with new memory
// behind its BARs: the old mappings show memory nobody serves any more. Ask for every BAR's
// region info again (new fds), drop the old mappings and map the new memory where the BARs
// decode now. A BAR whose region changed size, or lost its fd, traps from now on.
void PciFront::refresh_direct() {
    if (!ctx_.map_direct || !ctx_.unmap_direct) return;
    for (int i = 0; i < pci::kBarCount; ++i) {
        auto& old = regions_[static_cast<size_t>(i)];
        if (old.size == 0 || !layout_.bars[static_cast<size_t>(i)]) continue;
        auto ri = link_.device().region_info(static_cast<uint32_t>(i));
        unmap_direct(i);
        release_direct(i);
        if (!ri) {
            log::warn("{}: BAR{}: region info after reconnecting: {}; the BAR traps", id(), i,
                      ri.error().message);
            old.fd = -1;
            old.mmap_areas.clear();
            continue;
        }
        if (ri->size != old.size) {
            log::warn("{}: BAR{}: the server now reports {:#x} bytes (was {:#x}); the BAR traps",
                      id(), i, ri->size, old.size);
            old.fd = -1;
            old.mmap_areas.clear();
            continue;
        }
        old.fd = ri->fd;
        old.fd_offset = ri->fd_offset;
        old.mmap_areas = ri->mmap_areas;
        open_direct_bar(i);
    }
    sync_direct();
}

// munmaps BAR `bar`'s host mapping (after unmap_direct took it out of the guest).
void PciFront::release_direct(int bar) {
    auto& d = direct_[static_cast<size_t>(bar)];
    report_shrunk(bar);
    d.guard = ShrinkGuard();  // before the unmap: the address range may be reused
    if (d.host && ::munmap(d.host, d.length) != 0)
        log::warn("{}: BAR{}: munmap of the region mapping failed: {}", id(), bar,
                  std::strerror(errno));
    d = DirectBar{};
}

std::optional<uint64_t> PciFront::direct_base(int bar) const {
    if (bar < 0 || bar >= pci::kBarCount) return std::nullopt;
    return direct_[static_cast<size_t>(bar)].mapped_at;
}

void PciFront::unmap_direct(int bar) {
    auto& d = direct_[static_cast<size_t>(bar)];
    if (!d.mapped_at) return;
    for (const auto& a : d.areas)
        if (auto r = ctx_.unmap_direct(Gpa(*d.mapped_at + a.offset), a.size); !r)
            log::warn("{}: BAR{}: {}", id(), bar, r.error().message);
    d.mapped_at.reset();
}

// After the bus applied a config write: map the areas of every BAR that decodes where it
// decodes, unmap those that stopped decoding or moved.
void PciFront::sync_direct() {
    const pci::DecodeSnapshot now = decode_now();
    for (int i = 0; i < pci::kBarCount; ++i) {
        auto& d = direct_[static_cast<size_t>(i)];
        if (!d.host) continue;
        std::optional<uint64_t> want;
        for (const auto& r : now.mmio)
            if (r.bar == i) want = r.base;
        if (want == d.mapped_at) continue;
        unmap_direct(i);
        if (!want) continue;
        size_t done = 0;
        for (; done < d.areas.size(); ++done) {
            const auto& a = d.areas[done];
            if (auto r = ctx_.map_direct(Gpa(*want + a.offset), a.size, d.host + a.offset); !r) {
                log::warn("{}: BAR{} at {:#x}: direct mapping failed, the BAR traps: {}", id(), i,
                          *want, r.error().message);
                break;
            }
        }
        if (done == d.areas.size()) {
            d.mapped_at = want;
            continue;
        }
        for (size_t k = 0; k < done; ++k)
            if (auto r = ctx_.unmap_direct(Gpa(*want + d.areas[k].offset), d.areas[k].size); !r)
                log::warn("{}: BAR{}: {}", id(), i, r.error().message);
    }
}

// ---- Configuration -----------------------------------------------------------------------

Result<std::optional<uint8_t>> pci_slot_attribute(const vm::ConfigElement& e) {
    if (!e.has("slot")) return std::optional<uint8_t>{};
    auto n = e.number("slot", std::nullopt, 31);
    if (!n) return fail(n.error());
    if (*n == 0) return fail(e.attr_error("slot", "0 is the host bridge; use 1-31"));
    return std::optional<uint8_t>{static_cast<uint8_t>(*n)};
}

Result<void> register_pci_front(vm::DeviceClassRegistry& registry,
                                const hostdev::TransportRegistry* transports) {
    return registry.add(
        "PCI_FRONT",
        [transports](const vm::ConfigElement& e,
                     vm::DeviceContext& ctx) -> Result<std::unique_ptr<vm::Device>> {
            POTEMKIN_TRY(e.only_attributes({"class", "id", "bus", "hostdev", "slot"}));
            auto bus = ctx.devices.reference<pci::PciBus>(e, "bus", "a PCI bus");
            if (!bus) return fail(bus.error());
            auto url = e.required("hostdev");
            if (!url) return fail(url.error());
            PciFrontSettings s{
                .hostdev = *url, .bus = *bus, .transports = transports, .element = &e};
            POTEMKIN_TRY_ASSIGN(s.slot, pci_slot_attribute(e));
            auto d = PciFront::create(*e.attr("id"), ctx, s);
            if (!d) return fail(d.error());
            return std::unique_ptr<vm::Device>(std::move(*d));
        });
}

}  // namespace potemkin::devices
