#include "models/multibar.hpp"

#include <cstring>

#include "pci/expansion_rom.hpp"
#include "sdk/params.hpp"

namespace potemkin::models {

namespace {

uint64_t read_le(const uint8_t* p, unsigned size) {
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) v |= uint64_t{p[i]} << (8 * i);
    return v;
}

void write_le(uint8_t* p, unsigned size, uint64_t v) {
    for (unsigned i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Bytes 0..7 of BAR0 are read-only (ID, version).
constexpr uint64_t kIoScratch = 8;

}  // namespace

Multibar::Multibar(const MultibarSettings& settings) : settings_(settings) {
    spec_.name = "multibar";
    spec_.header.vendor_id = 0x1b36;
    spec_.header.device_id = 0xff01;
    spec_.header.revision_id = 0x01;
    spec_.header.class_code = 0x00ff00;
    spec_.header.subsystem_vendor_id = 0x1b36;
    spec_.header.subsystem_id = 0xff01;
    spec_.header.interrupt_pin = pci::InterruptPin::inta;
    spec_.bars[0] = sdk::BarSpec{pci::BarKind::io, kIoSize, false};
    spec_.bars[1] = sdk::BarSpec{pci::BarKind::mem32, kMmioSize, false};
    spec_.bars[2] = sdk::BarSpec{pci::BarKind::mem64, kMem64Size, true, settings_.mmap};
    if (settings_.mem24) spec_.bars[4] = sdk::BarSpec{pci::BarKind::mem24, kMem24Size, false};
    // A valid image (Linux reads a ROM through sysfs only with a PCIR structure naming the
    // device) that no firmware runs (code type "none").
    pci::ExpansionRomSettings rom;
    rom.vendor_id = spec_.header.vendor_id;
    rom.device_id = spec_.header.device_id;
    rom.class_code = spec_.header.class_code;
    rom.size = kRomSize;
    rom.code_type = pci::rom_code::kNone;
    rom.pcir_offset = kRomPcirOffset;
    spec_.rom = pci::make_expansion_rom(rom);
    std::memcpy(spec_.rom.data() + kRomStringOffset, kRomString, std::strlen(kRomString));
    pci::seal_expansion_rom(spec_.rom);
    spec_.msi =
        pci::MsiSettings{.vectors = kVectors, .address64 = true, .per_vector_masking = true};
    spec_.msix = sdk::MsixSpec{kVectors, 1, kMsixTable, kMsixPba};
    if (settings_.pcie) {
        sdk::PcieSpec p;
        p.capability = pci::PcieSettings{.max_payload = 256, .link_speed = 3, .link_width = 4};
        p.aer = true;
        p.serial_number = kSerialNumber;
        pci::VendorSpecificSettings v{.vsec_id = kVsecId, .vsec_revision = 1};
        v.data.assign(12, 0);
        write_le(v.data.data(), 4, kId);
        write_le(v.data.data() + 8, 4, kVsecW1cReset);
        v.wmask.assign(12, 0);
        v.w1c.assign(12, 0);
        for (size_t i = 4; i < 8; ++i) v.wmask[i] = 0xFF;
        for (size_t i = 8; i < 12; ++i) v.w1c[i] = 0xFF;
        p.vendor_specific.push_back(std::move(v));
        spec_.pcie = std::move(p);
    }
    // The doorbell register, one doorbell per vector the guest can signal: a VMM that takes
    // ioeventfds rings them without a message; any other value still comes as a write.
    for (uint32_t n = 0; n < kVectors; ++n)
        spec_.doorbells.push_back(sdk::DoorbellSpec{1, kRegDoorbell, 4, n});
    reset();
}

Result<std::unique_ptr<sdk::DeviceModel>> Multibar::create(const sdk::ModelParams& params) {
    POTEMKIN_TRY(sdk::check_params(params, {"seed", "mem24", "mmap", "pcie"}));
    MultibarSettings settings;
    auto seed = sdk::param_u64(params, "seed", settings.seed);
    if (!seed) return fail(seed.error());
    if (*seed > 0xFFFFFFFF) return failf("parameter seed={:#x} does not fit 32 bits", *seed);
    settings.seed = static_cast<uint32_t>(*seed);
    auto mem24 = sdk::param_bool(params, "mem24", settings.mem24);
    if (!mem24) return fail(mem24.error());
    settings.mem24 = *mem24;
    auto mmap = sdk::param_bool(params, "mmap", settings.mmap);
    if (!mmap) return fail(mmap.error());
    settings.mmap = *mmap;
    auto pcie = sdk::param_bool(params, "pcie", settings.pcie);
    if (!pcie) return fail(pcie.error());
    settings.pcie = *pcie;
    return std::unique_ptr<sdk::DeviceModel>(std::make_unique<Multibar>(settings));
}

void Multibar::fill_pattern(std::span<uint8_t> mem) const {
    for (size_t off = 0; off < mem.size(); off += 4) {
        write_le(mem.data() + off, 4, static_cast<uint32_t>(off) ^ settings_.seed);
    }
}

void Multibar::reset() {
    io_.fill(0);
    write_le(io_.data(), 4, kId);
    write_le(io_.data() + 4, 4, kVersion);
    scratch_.assign(kScratchEnd - kScratchStart, 0);
    if (bar2_.empty()) {
        mem64_.resize(kMem64Size);
        bar2_ = mem64_;
    }
    fill_pattern(bar2_);
    if (settings_.mem24) {
        mem24_.resize(kMem24Size);
        fill_pattern(mem24_);
    }
    irq_status_ = 0;
    doorbells_ = 0;
    window_ = 0;
    if (services_ != nullptr) services_->set_intx(false);
}

void Multibar::attach(sdk::DeviceServices& services) {
    DeviceModel::attach(services);
    auto shared = services.shared_memory(2);
    if (shared.size() < kMem64Size) return;
    bar2_ = shared.first(kMem64Size);
    mem64_.clear();
    mem64_.shrink_to_fit();
    fill_pattern(bar2_);
}

uint64_t Multibar::bar_read(int bar, uint64_t offset, unsigned size) {
    switch (bar) {
        case 0:
            return read_le(io_.data() + offset, size);
        case 1:
            if (offset >= kScratchStart && offset + size <= kScratchEnd) {
                return read_le(scratch_.data() + (offset - kScratchStart), size);
            }
            if (size != 4) return 0;
            switch (offset) {
                case kRegId:
                    return kId;
                case kRegIrqStatus:
                    return irq_status_;
                case kRegDoorbellCount:
                    return doorbells_;
                case kRegBar2Window:
                    return window_;
                case kRegBar2Peek:
                    return read_le(bar2_.data() + window_, 4);
                default:
                    return 0;
            }
        case 2:
            return read_le(bar2_.data() + offset, size);
        case 4:
            if (!mem24_.empty()) return read_le(mem24_.data() + offset, size);
            return 0;
        default:
            return 0;
    }
}

void Multibar::bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) {
    switch (bar) {
        case 0:
            // Byte-wise, so an access straddling the read-only head keeps its writable part.
            for (unsigned i = 0; i < size; ++i) {
                if (offset + i >= kIoScratch)
                    io_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
            }
            break;
        case 1:
            if (offset >= kScratchStart && offset + size <= kScratchEnd) {
                write_le(scratch_.data() + (offset - kScratchStart), size, value);
            } else if (size == 4 && offset == kRegDoorbell) {
                ring(static_cast<uint32_t>(value));
            } else if (size == 4 && offset == kRegBar2Window) {
                window_ = static_cast<uint32_t>(value) & static_cast<uint32_t>(kMem64Size - 4);
            } else if (size == 4 && offset == kRegIrqAck) {
                irq_status_ &= ~static_cast<uint32_t>(value);
                if (irq_status_ == 0 && services_ != nullptr) services_->set_intx(false);
            }
            break;
        case 2:
            write_le(bar2_.data() + offset, size, value);
            break;
        case 4:
            if (!mem24_.empty()) write_le(mem24_.data() + offset, size, value);
            break;
        default:
            break;
    }
}

void Multibar::ring(uint32_t n) {
    ++doorbells_;
    if (services_ == nullptr) return;
    if (services_->irq_mode() != sdk::IrqMode::intx) {
        services_->signal_msi(n);
        return;
    }
    if (n >= 32) return;
    irq_status_ |= uint32_t{1} << n;
    services_->set_intx(true);
}

}  // namespace potemkin::models
