#include "sdk/model_server.hpp"

#include "common/bytes.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "common/log.hpp"
#include "pci/header.hpp"
#include "pci/registers.hpp"

namespace potemkin::sdk {

namespace {

// Largest ROM image accepted. The ROM BAR could describe up to 2 GiB, but an image that large
// is certainly a mistake, and the server keeps the image in memory.
constexpr size_t kMaxRomBytes = size_t{16} << 20;
constexpr uint32_t kMinRomRegion = 2048;  // spec 3.0 section 6.2.5.2: ROM BAR >= 2 KiB

std::string region_name(uint32_t index) {
    if (index < hostdev::kRomRegion) return fmt::format("BAR{}", index);
    if (index == hostdev::kRomRegion) return "ROM";
    if (index == hostdev::kConfigRegion) return "config";
    return fmt::format("region {}", index);
}

uint64_t size_mask(unsigned size) {
    return size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1;
}

// The chunk size for position `offset` with `remaining` bytes left: the largest of 8/4/2/1 that
// fits and is naturally aligned, so models only ever see aligned accesses from bulk transfers.
unsigned chunk_size(uint64_t offset, uint64_t remaining) {
    for (unsigned s : {8u, 4u, 2u}) {
        if (remaining >= s && offset % s == 0) return s;
    }
    return 1;
}

bool single_access(size_t length) {
    return length == 1 || length == 2 || length == 4 || length == 8;
}

}  // namespace

ModelServer::ModelServer(std::unique_ptr<DeviceModel> model, hostdev::HostDeviceEvents* events,
                         const ModelServerSettings& settings)
    : model_(std::move(model)), events_(events), settings_(settings), spec_(model_->spec()) {}

ModelServer::~ModelServer() {
    // The model holds a pointer to us (its DeviceServices): let it go first.
    model_.reset();
    // Nobody is left to take an error: log it.
    for (auto& b : shared_) {
        if (b.host && ::munmap(b.host, b.size) != 0)
            log::error("device model '{}': munmap of a shared BAR: {}", spec_.name,
                       std::strerror(errno));
        if (b.fd >= 0 && ::close(b.fd) != 0)
            log::error("device model '{}': close of a shared BAR's memfd: {}", spec_.name,
                       std::strerror(errno));
    }
}

std::span<uint8_t> ModelServer::shared_memory(int bar) {
    if (bar < 0 || bar >= pci::kBarCount || !shared_[static_cast<size_t>(bar)].host) return {};
    const auto& b = shared_[static_cast<size_t>(bar)];
    return {b.host, b.size};
}

Result<std::unique_ptr<ModelServer>> ModelServer::create(std::unique_ptr<DeviceModel> model,
                                                         hostdev::HostDeviceEvents* events,
                                                         const ModelServerSettings& settings) {
    if (!model) return fail("model server: no model given");
    std::unique_ptr<ModelServer> server(new ModelServer(std::move(model), events, settings));
    if (auto r = server->build(); !r) {
        return fail(r.error().context(fmt::format("device model '{}'", server->spec_.name)));
    }
    server->model_->attach(*server);
    return server;
}

Result<void> ModelServer::build() {
    pci::HeaderSettings header = spec_.header;
    if (spec_.pcie) header.express = true;
    auto cs = pci::make_type0_header(header);
    if (!cs) return fail(cs.error());
    config_ = std::move(cs).value();

    for (int i = 0; i < pci::kBarCount; ++i) {
        const auto& bar = spec_.bars[static_cast<size_t>(i)];
        if (!bar) continue;
        if (bar->kind == pci::BarKind::rom) {
            return failf("BAR{}: the ROM is DeviceSpec::rom, not a BAR", i);
        }
        layout_.bars[static_cast<size_t>(i)] =
            pci::BarSettings{bar->kind, bar->size, bar->prefetchable, 0};
        if (bar->mappable) {
            if (bar->kind == pci::BarKind::io || bar->size % 4096 != 0)
                return failf("BAR{}: only memory BARs of whole 4 KiB pages can be mappable", i);
            auto& sb = shared_[static_cast<size_t>(i)];
            const std::string name = fmt::format("potemkin-{}-bar{}", spec_.name, i);
            sb.fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
            if (sb.fd < 0) return failf(Errno{errno}, "BAR{}: memfd_create", i);
            if (::ftruncate(sb.fd, static_cast<off_t>(bar->size)) != 0)
                return failf(Errno{errno}, "BAR{}: ftruncate", i);
            void* p = ::mmap(nullptr, bar->size, PROT_READ | PROT_WRITE, MAP_SHARED, sb.fd, 0);
            if (p == MAP_FAILED) return failf(Errno{errno}, "BAR{}: mmap", i);
            sb.host = static_cast<uint8_t*>(p);
            sb.size = bar->size;
        }
    }
    if (!spec_.rom.empty()) {
        if (spec_.rom.size() > kMaxRomBytes) {
            return failf("ROM image of {} bytes is larger than {} bytes", spec_.rom.size(),
                         kMaxRomBytes);
        }
        rom_region_size_ =
            std::max(kMinRomRegion, std::bit_ceil(static_cast<uint32_t>(spec_.rom.size())));
        layout_.rom = pci::RomSettings{rom_region_size_, 0};
    }
    POTEMKIN_TRY(pci::install_bars(config_, layout_));

    if (spec_.msi) {
        auto image = pci::msi_capability(*spec_.msi);
        if (!image) return fail(image.error().context("MSI"));
        auto at = pci::add_capability(config_, *image);
        if (!at) return fail(at.error().context("MSI"));
    }
    if (spec_.msix) {
        const MsixSpec& m = *spec_.msix;
        if (m.bar < 0 || m.bar >= pci::kBarCount || !spec_.bars[static_cast<size_t>(m.bar)]) {
            return failf("MSI-X: table BAR{} is not implemented", m.bar);
        }
        const BarSpec& bar = *spec_.bars[static_cast<size_t>(m.bar)];
        if (bar.kind == pci::BarKind::io) {
            // Spec 3.0 section 6.8.2.4: the table and PBA live in memory space.
            return failf("MSI-X: table BAR{} is an I/O BAR", m.bar);
        }
        auto table = pci::MsixTable::create(m.vectors);
        if (!table) return fail(table.error().context("MSI-X"));
        const uint64_t tb = table->table_bytes();
        const uint64_t pb = table->pba_bytes();
        if (uint64_t{m.table_offset} + tb > bar.size || uint64_t{m.pba_offset} + pb > bar.size) {
            return failf("MSI-X: table ({:#x}+{:#x}) or PBA ({:#x}+{:#x}) runs past BAR{} ({:#x})",
                         m.table_offset, tb, m.pba_offset, pb, m.bar, bar.size);
        }
        if (m.table_offset < m.pba_offset + pb && m.pba_offset < m.table_offset + tb) {
            return failf("MSI-X: table ({:#x}+{:#x}) and PBA ({:#x}+{:#x}) overlap", m.table_offset,
                         tb, m.pba_offset, pb);
        }
        const auto bir = static_cast<uint8_t>(m.bar);
        auto image = pci::msix_capability({m.vectors, bir, m.table_offset, bir, m.pba_offset});
        if (!image) return fail(image.error().context("MSI-X"));
        auto at = pci::add_capability(config_, *image);
        if (!at) return fail(at.error().context("MSI-X"));
        msix_cap_ = *at;
        msix_.emplace(std::move(table).value());
    }
    if (spec_.pcie) POTEMKIN_TRY(build_express(*spec_.pcie));
    for (size_t i = 0; i < spec_.doorbells.size(); ++i) {
        const DoorbellSpec& d = spec_.doorbells[i];
        if (d.bar < 0 || d.bar >= pci::kBarCount || !spec_.bars[static_cast<size_t>(d.bar)])
            return failf("doorbell {}: BAR{} is not implemented", i, d.bar);
        const BarSpec& bar = *spec_.bars[static_cast<size_t>(d.bar)];
        if (!single_access(d.size) || d.offset % d.size != 0 || d.offset + d.size > bar.size)
            return failf(
                "doorbell {}: {} bytes at {:#x} is not an aligned 1, 2, 4 or 8-byte "
                "register inside BAR{} ({:#x} bytes)",
                i, d.size, d.offset, d.bar, bar.size);
        if (bar.mappable)
            return failf("doorbell {}: BAR{} is mappable (the guest's writes never trap)", i,
                         d.bar);
        if (msix_part(d.bar, d.offset, d.size) != MsixPart::none)
            return failf("doorbell {}: {:#x} is in BAR{}'s MSI-X table or PBA", i, d.offset, d.bar);
        if (d.datamatch && d.size < 8 && (*d.datamatch >> (8 * d.size)) != 0)
            return failf("doorbell {}: datamatch {:#x} does not fit in {} bytes", i, *d.datamatch,
                         d.size);
    }
    initial_config_ = config_;
    return ok();
}

// After MSI and MSI-X, so their offsets do not depend on whether the function is PCIe.
Result<void> ModelServer::build_express(const PcieSpec& p) {
    auto cap = pci::pcie_capability(p.capability);
    if (!cap) return fail(cap.error());
    if (auto at = pci::add_capability(config_, *cap); !at)
        return fail(at.error().context("PCI Express capability"));
    if (p.aer) POTEMKIN_TRY(pci::add_extended_capability(config_, pci::aer_capability()));
    if (p.serial_number)
        POTEMKIN_TRY(pci::add_extended_capability(config_, pci::dsn_capability(*p.serial_number)));
    for (const auto& v : p.vendor_specific) {
        auto img = pci::vendor_specific_capability(v);
        if (!img) return fail(img.error());
        POTEMKIN_TRY(pci::add_extended_capability(config_, *img));
    }
    for (const auto& e : p.extended) POTEMKIN_TRY(pci::add_extended_capability(config_, e));
    return ok();
}

Result<void> ModelServer::ring_doorbell(size_t index, uint64_t count) {
    if (index >= spec_.doorbells.size())
        return failf("device '{}': no doorbell {} ({} declared)", spec_.name, index,
                     spec_.doorbells.size());
    for (uint64_t i = 0; i < count; ++i) {
        ++doorbell_rings_;
        model_->doorbell(index);
    }
    return ok();
}

hostdev::DeviceInfo ModelServer::info() const {
    hostdev::DeviceInfo out;
    out.name = spec_.name;
    out.num_regions = hostdev::kPciRegionCount;
    out.num_irqs = 3;  // VFIO indexes INTx, MSI, MSI-X
    out.reset_supported = true;
    return out;
}

Result<hostdev::RegionInfo> ModelServer::region_info(uint32_t index) const {
    if (index >= hostdev::kPciRegionCount) {
        return failf("device '{}': no region {} (regions are 0-{})", spec_.name, index,
                     hostdev::kPciRegionCount - 1);
    }
    hostdev::RegionInfo out;
    out.index = index;
    if (index < hostdev::kRomRegion) {
        const auto& bar = spec_.bars[index];
        if (!bar) return out;  // absent, or the upper half of a mem64 BAR
        out.bar_kind = bar->kind;
        out.size = bar->size;
        out.readable = out.writable = true;
        out.prefetchable = bar->prefetchable;
        if (const auto& sb = shared_[index]; sb.fd >= 0) {
            out.mmap_areas.push_back({0, bar->size});
            out.fd = sb.fd;
            out.fd_offset = 0;
        }
    } else if (index == hostdev::kRomRegion) {
        if (spec_.rom.empty()) return out;
        out.bar_kind = pci::BarKind::rom;
        out.size = rom_region_size_;
        out.readable = true;
    } else {
        out.size = config_.size();
        out.readable = out.writable = true;
    }
    return out;
}

// On every access, so it avoids building a RegionInfo (which owns a vector).
uint64_t ModelServer::region_size(uint32_t index) const {
    if (index < hostdev::kRomRegion) return spec_.bars[index] ? spec_.bars[index]->size : 0;
    if (index == hostdev::kRomRegion) return spec_.rom.empty() ? 0 : rom_region_size_;
    if (index == hostdev::kConfigRegion) return config_.size();
    return 0;
}

Result<void> ModelServer::check_region(uint32_t index, uint64_t offset, uint64_t length) const {
    if (index >= hostdev::kPciRegionCount) {
        return failf("device '{}': no region {} (regions are 0-{})", spec_.name, index,
                     hostdev::kPciRegionCount - 1);
    }
    const uint64_t size = region_size(index);
    if (size == 0) {
        return failf("device '{}': region {} ({}) is not implemented", spec_.name, index,
                     region_name(index));
    }
    if (offset > size || length > size - offset) {
        return failf(
            "device '{}': access at offset {:#x} length {} runs past the end of region {} ({}, "
            "{:#x} bytes)",
            spec_.name, offset, length, index, region_name(index), size);
    }
    return ok();
}

Result<void> ModelServer::config_read(uint32_t offset, std::span<uint8_t> out) const {
    POTEMKIN_TRY(check_region(hostdev::kConfigRegion, offset, out.size()));
    // Config reads have no side effects here, so byte by byte is exact for any length.
    for (size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<uint8_t>(config_.read(offset + static_cast<uint32_t>(i), 1));
    }
    return ok();
}

Result<void> ModelServer::config_write(uint32_t offset, std::span<const uint8_t> in) {
    POTEMKIN_TRY(check_region(hostdev::kConfigRegion, offset, in.size()));
    if (in.size() == 1 || in.size() == 2 || in.size() == 4) {
        config_.write(offset, static_cast<unsigned>(in.size()), static_cast<uint32_t>(load_le(in)));
    } else {
        // The write path applies any access byte by byte, so this is the same thing.
        for (size_t i = 0; i < in.size(); ++i) {
            config_.write(offset + static_cast<uint32_t>(i), 1, in[i]);
        }
    }
    // Interrupt Disable gates INTx; the MSI-X function mask gates the table. Enables are not
    // read from here (set_irqs says them).
    sync_msix_control();
    update_line();
    return ok();
}

Result<void> ModelServer::region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) {
    POTEMKIN_TRY(check_region(index, offset, out.size()));
    if (index == hostdev::kConfigRegion) return config_read(static_cast<uint32_t>(offset), out);
    if (index == hostdev::kRomRegion) {
        // Past the image the ROM region reads zeros (the padding up to a power of two).
        for (size_t i = 0; i < out.size(); ++i) {
            const uint64_t at = offset + i;
            out[i] = at < spec_.rom.size() ? spec_.rom[at] : 0;
        }
        return ok();
    }
    const int bar = static_cast<int>(index);
    ++bar_accesses_;
    if (single_access(out.size())) {
        store_le(out, bar_access_read(bar, offset, static_cast<unsigned>(out.size())));
        return ok();
    }
    for (size_t pos = 0; pos < out.size();) {
        const unsigned s = chunk_size(offset + pos, out.size() - pos);
        store_le(out.subspan(pos, s), bar_access_read(bar, offset + pos, s));
        pos += s;
    }
    return ok();
}

Result<void> ModelServer::region_write(uint32_t index, uint64_t offset,
                                       std::span<const uint8_t> in) {
    POTEMKIN_TRY(check_region(index, offset, in.size()));
    if (index == hostdev::kConfigRegion) return config_write(static_cast<uint32_t>(offset), in);
    if (index == hostdev::kRomRegion) {
        return failf("device '{}': region 6 (ROM) is read-only (write at offset {:#x})", spec_.name,
                     offset);
    }
    const int bar = static_cast<int>(index);
    ++bar_accesses_;
    if (single_access(in.size())) {
        bar_access_write(bar, offset, static_cast<unsigned>(in.size()), load_le(in));
        return ok();
    }
    for (size_t pos = 0; pos < in.size();) {
        const unsigned s = chunk_size(offset + pos, in.size() - pos);
        bar_access_write(bar, offset + pos, s, load_le(in.subspan(pos, s)));
        pos += s;
    }
    return ok();
}

ModelServer::MsixPart ModelServer::msix_part(int bar, uint64_t offset, unsigned size) const {
    if (!msix_ || bar != spec_.msix->bar) return MsixPart::none;
    const uint64_t end = offset + size;
    const uint64_t t0 = spec_.msix->table_offset, t1 = t0 + msix_->table_bytes();
    const uint64_t p0 = spec_.msix->pba_offset, p1 = p0 + msix_->pba_bytes();
    if (offset >= t0 && end <= t1) return MsixPart::table;
    if (offset >= p0 && end <= p1) return MsixPart::pba;
    if ((offset < t1 && t0 < end) || (offset < p1 && p0 < end)) return MsixPart::straddles;
    return MsixPart::none;
}

uint64_t ModelServer::bar_access_read(int bar, uint64_t offset, unsigned size) {
    switch (msix_part(bar, offset, size)) {
        case MsixPart::table:
            return msix_->read_table(offset - spec_.msix->table_offset, size);
        case MsixPart::pba:
            return msix_->read_pba(offset - spec_.msix->pba_offset, size);
        case MsixPart::straddles: {
            // Only an unaligned access can get here (table and PBA are QWORD aligned): give
            // each byte to its owner.
            uint64_t v = 0;
            for (unsigned i = 0; i < size; ++i) v |= bar_access_read(bar, offset + i, 1) << (8 * i);
            return v;
        }
        case MsixPart::none:
            break;
    }
    return model_->bar_read(bar, offset, size) & size_mask(size);
}

void ModelServer::bar_access_write(int bar, uint64_t offset, unsigned size, uint64_t value) {
    switch (msix_part(bar, offset, size)) {
        case MsixPart::table: {
            const auto before = msix_pending();
            static_cast<void>(msix_->write_table(offset - spec_.msix->table_offset, size, value));
            send_unpended(before);
            return;
        }
        case MsixPart::pba:
            return;  // read-only (spec 3.0 section 6.8.2.10)
        case MsixPart::straddles:
            for (unsigned i = 0; i < size; ++i)
                bar_access_write(bar, offset + i, 1, value >> (8 * i));
            return;
        case MsixPart::none:
            break;
    }
    model_->bar_write(bar, offset, size, value & size_mask(size));
}

std::vector<bool> ModelServer::msix_pending() const {
    std::vector<bool> out;
    if (!msix_) return out;
    out.resize(msix_->vectors());
    for (unsigned v = 0; v < msix_->vectors(); ++v) out[v] = msix_->pending(v);
    return out;
}

void ModelServer::send_unpended(const std::vector<bool>& before) {
    // MsixTable hands back messages; the events want vector numbers, so diff the PBA instead.
    for (unsigned v = 0; v < before.size(); ++v) {
        if (before[v] && !msix_->pending(v)) {
            if (events_ != nullptr) {
                events_->msi(v);
            } else {
                ++dropped_msi_;
            }
        }
    }
}

void ModelServer::sync_msix_control() {
    if (!msix_) return;
    const auto state = pci::read_msix(config_, msix_cap_);
    const auto before = msix_pending();
    static_cast<void>(msix_->set_control(mode_ == IrqMode::msix, state.function_masked));
    send_unpended(before);
}

void ModelServer::update_line() {
    const uint16_t command = static_cast<uint16_t>(config_.read(pci::reg::kCommand, 2));
    const bool pending = model_level_ && mode_ == IrqMode::intx;
    // Status bit 3 reflects the function's interrupt condition whatever Interrupt Disable says
    // (spec 3.0 section 6.2.3); the pin is driven only when it is clear (section 6.2.2).
    static_cast<void>(config_.update(pci::reg::kStatus, 2, pci::status::kInterruptStatus,
                                     pending ? pci::status::kInterruptStatus : 0));
    const bool line = pending && (command & pci::command::kInterruptDisable) == 0 &&
                      spec_.header.interrupt_pin != pci::InterruptPin::none;
    if (line == line_) return;
    line_ = line;
    ++intx_events_;
    if (events_ != nullptr) events_->intx(line_);
}

Result<void> ModelServer::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    switch (kind) {
        case hostdev::IrqKind::intx:
            mode_ = IrqMode::intx;
            vectors_ = 0;
            break;
        case hostdev::IrqKind::msi:
            if (count == 0) {
                if (mode_ == IrqMode::msi) {
                    mode_ = IrqMode::intx;
                    vectors_ = 0;
                }
                break;
            }
            if (!spec_.msi) return failf("device '{}' has no MSI capability", spec_.name);
            if (count > spec_.msi->vectors) {
                return failf("device '{}': {} MSI vectors requested, {} capable", spec_.name, count,
                             spec_.msi->vectors);
            }
            mode_ = IrqMode::msi;
            vectors_ = count;
            break;
        case hostdev::IrqKind::msix:
            if (count == 0) {
                if (mode_ == IrqMode::msix) {
                    mode_ = IrqMode::intx;
                    vectors_ = 0;
                }
                break;
            }
            if (!msix_) return failf("device '{}' has no MSI-X capability", spec_.name);
            if (count > msix_->vectors()) {
                return failf("device '{}': {} MSI-X vectors requested, table has {}", spec_.name,
                             count, msix_->vectors());
            }
            mode_ = IrqMode::msix;
            vectors_ = count;
            break;
        default:
            return failf("device '{}': unknown interrupt kind {}", spec_.name,
                         static_cast<unsigned>(kind));
    }
    // Leaving INTx drops the line (a function using MSI must not drive INTx, spec 3.0 section
    // 6.8.1); coming back re-drives a condition that persisted.
    sync_msix_control();
    update_line();
    return ok();
}

void ModelServer::ack_intx() {
    const uint64_t before = intx_events_;
    model_->intx_acknowledged();
    // Resample: the condition persists and the model said nothing new, so tell the events the
    // line is still high (a front-end that masked the line on delivery needs this to see it).
    if (line_ && intx_events_ == before && events_ != nullptr) events_->intx(true);
}

void ModelServer::reset() {
    config_ = initial_config_;
    mode_ = IrqMode::intx;
    vectors_ = 0;
    if (msix_) {
        // Cannot fail: the same vector count succeeded at build().
        msix_.emplace(pci::MsixTable::create(msix_->vectors()).value());
    }
    model_level_ = false;
    // Work queued before the reset belongs to the state the reset discards.
    deferred_.clear();
    update_line();
    model_->reset();
}

Result<void> ModelServer::check_dma(const char* dir, uint64_t guest_address, size_t size) {
    const auto command = static_cast<uint16_t>(config_.read(pci::reg::kCommand, 2));
    if ((command & pci::command::kBusMaster) == 0) {
        ++refused_dma_;
        return fail(fmt::format("device '{}': DMA {} of {} bytes at {:#x} refused: bus "
                                "mastering is off (command register {:#06x}, bit 2 clear)",
                                spec_.name, dir, size, guest_address, command),
                    EPERM);
    }
    if (events_ == nullptr) {
        return failf("device '{}': DMA {} of {} bytes at {:#x} with no VMM attached", spec_.name,
                     dir, size, guest_address);
    }
    return ok();
}

Result<void> ModelServer::dma_read(uint64_t guest_address, std::span<uint8_t> out) {
    POTEMKIN_TRY(check_dma("read", guest_address, out.size()));
    return events_->dma_read(guest_address, out);
}

Result<void> ModelServer::dma_write(uint64_t guest_address, std::span<const uint8_t> in) {
    POTEMKIN_TRY(check_dma("write", guest_address, in.size()));
    return events_->dma_write(guest_address, in);
}

void ModelServer::run_deferred() {
    if (running_deferred_) return;  // the outer call runs what is queued now
    running_deferred_ = true;
    while (!deferred_.empty()) {
        auto work = std::move(deferred_.front());
        deferred_.pop_front();
        work();
    }
    running_deferred_ = false;
}

void ModelServer::set_intx(bool asserted) {
    model_level_ = asserted;
    update_line();
}

void ModelServer::signal_msi(unsigned vector) {
    if (mode_ == IrqMode::intx || vector >= vectors_ || events_ == nullptr) {
        ++dropped_msi_;
        log::debug("device '{}': MSI vector {} dropped (mode {}, {} vectors enabled)", spec_.name,
                   vector,
                   mode_ == IrqMode::intx  ? "intx"
                   : mode_ == IrqMode::msi ? "msi"
                                           : "msix",
                   vectors_);
        return;
    }
    if (mode_ == IrqMode::msix && settings_.msix_masking) {
        // Masked: the table records it in the PBA and send_unpended() delivers it later.
        if (!msix_->signal(vector)) return;
    }
    events_->msi(vector);
}

}  // namespace potemkin::sdk
