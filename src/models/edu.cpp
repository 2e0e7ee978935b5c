#include "models/edu.hpp"

#include <vector>

#include "common/log.hpp"
#include "sdk/params.hpp"

namespace potemkin::models {

namespace {
constexpr uint64_t kAllOnes = ~uint64_t{0};
}

Edu::Edu(const EduSettings& settings) : settings_(settings) {
    spec_.name = "edu";
    spec_.header.vendor_id = 0x1234;
    spec_.header.device_id = 0x11e8;
    spec_.header.revision_id = 0x10;
    spec_.header.class_code = 0x00ff00;
    spec_.header.subsystem_vendor_id = 0x1af4;
    spec_.header.subsystem_id = 0x1100;
    spec_.header.interrupt_pin = pci::InterruptPin::inta;
    spec_.bars[0] = sdk::BarSpec{pci::BarKind::mem32, kBar0Size, false};
    spec_.msi = pci::MsiSettings{.vectors = 1, .address64 = true, .per_vector_masking = false};
}

Result<std::unique_ptr<sdk::DeviceModel>> Edu::create(const sdk::ModelParams& params) {
    POTEMKIN_TRY(sdk::check_params(params, {"dma_mask"}));
    EduSettings settings;
    auto mask = sdk::param_u64(params, "dma_mask", settings.dma_mask);
    if (!mask) return fail(mask.error());
    settings.dma_mask = *mask;
    return std::unique_ptr<sdk::DeviceModel>(std::make_unique<Edu>(settings));
}

uint64_t Edu::bar_read(int bar, uint64_t offset, unsigned size) {
    if (bar != 0) return kAllOnes;
    if (offset < 0x80 && size != 4) return kAllOnes;
    if (offset >= 0x80 && size != 4 && size != 8) return kAllOnes;
    switch (offset) {
        case kIdentification:
            return kIdValue;
        case kLiveness:
            return liveness_;
        case kFactorial:
            return factorial_;
        case kStatus:
            return status_;
        case kIrqStatus:
            return irq_status_;
        case kDmaSource:
            return dma_source_;
        case kDmaDestination:
            return dma_destination_;
        case kDmaCount:
            return dma_count_;
        case kDmaCommand:
            return dma_command_;
        default:
            return kAllOnes;
    }
}

void Edu::bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) {
    if (bar != 0) return;
    if (offset < 0x80 && size != 4) return;
    if (offset >= 0x80 && size != 4 && size != 8) return;
    const auto v32 = static_cast<uint32_t>(value);
    // A DMA register write while a transfer runs is ignored (edu.c dma_rw): between the
    // command write and the deferred transfer, and while the transfer waits for the VMM.
    const bool dma_busy = (dma_command_ & kDmaRun) != 0;
    switch (offset) {
        case kLiveness:
            liveness_ = ~v32;
            break;
        case kFactorial: {
            if ((status_ & kStatusComputing) != 0) break;
            uint32_t result = 1;  // uint32_t: wraps exactly like edu.c's edu_fact_thread
            for (uint32_t i = v32; i > 0; --i) result *= i;
            factorial_ = result;
            if ((status_ & kStatusIrqFactorial) != 0) raise_irq(kFactorialIrq);
            break;
        }
        case kStatus:
            // Only bit 7 is writable; bit 0 is the (never set) computing flag.
            status_ = (status_ & ~kStatusIrqFactorial) | (v32 & kStatusIrqFactorial);
            break;
        case kIrqRaise:
            raise_irq(v32);
            break;
        case kIrqAck:
            lower_irq(v32);
            break;
        case kDmaSource:
            if (!dma_busy) dma_source_ = value;
            break;
        case kDmaDestination:
            if (!dma_busy) dma_destination_ = value;
            break;
        case kDmaCount:
            if (!dma_busy) dma_count_ = value;
            break;
        case kDmaCommand:
            if ((value & kDmaRun) == 0 || dma_busy) break;
            dma_command_ = value;
            // After the write is answered (QEMU's edu runs it from a timer, too): a VMM may
            // serve DMA only once the vCPU that wrote the command is released.
            if (services_ != nullptr) {
                services_->defer([this] { run_dma(); });
            } else {
                run_dma();  // refused: nothing to reach guest memory with
            }
            break;
        default:
            break;  // read-only or unimplemented: ignored
    }
}

void Edu::raise_irq(uint32_t bits) {
    irq_status_ |= bits;
    if (irq_status_ == 0 || services_ == nullptr) return;
    if (services_->irq_mode() == sdk::IrqMode::msi) {
        services_->signal_msi(0);
    } else {
        services_->set_intx(true);
    }
}

void Edu::lower_irq(uint32_t bits) {
    irq_status_ &= ~bits;
    if (irq_status_ == 0 && services_ != nullptr && services_->irq_mode() != sdk::IrqMode::msi) {
        services_->set_intx(false);
    }
}

bool Edu::refuse_dma(const char* why) {
    ++refused_dma_;
    log::warn("edu: DMA refused ({}): src {:#x} dst {:#x} count {:#x} cmd {:#x}", why, dma_source_,
              dma_destination_, dma_count_, dma_command_);
    return false;
}

void Edu::run_dma() {
    if ((dma_command_ & kDmaRun) == 0) return;  // a reset came first: nothing to run
    const bool to_ram = (dma_command_ & kDmaToRam) != 0;
    const uint64_t edu_addr = to_ram ? dma_source_ : dma_destination_;
    const uint64_t ram_addr = to_ram ? dma_destination_ : dma_source_;
    const uint64_t count = dma_count_;
    [&] {
        // edu.c edu_check_range: the EDU side must lie inside the buffer, count > 0.
        if (count == 0 || count > kDmaBufferSize || edu_addr < kDmaBufferAddress ||
            edu_addr - kDmaBufferAddress > kDmaBufferSize - count) {
            return refuse_dma("EDU-side range outside the 4 KiB buffer at 0x40000");
        }
        if ((ram_addr & ~settings_.dma_mask) != 0 ||
            ((ram_addr + count - 1) & ~settings_.dma_mask) != 0 || ram_addr + count < ram_addr) {
            return refuse_dma("RAM-side range outside dma_mask");
        }
        if (services_ == nullptr) return refuse_dma("no DMA services attached");
        const auto buf = std::span<uint8_t>(buffer_).subspan(edu_addr - kDmaBufferAddress, count);
        auto r = to_ram ? services_->dma_write(ram_addr, buf) : services_->dma_read(ram_addr, buf);
        if (!r) {
            log::warn("edu: {}", r.error().message);
            return refuse_dma("guest memory refused the access");
        }
        return true;
    }();
    dma_command_ &= ~kDmaRun;
    if ((dma_command_ & kDmaIrqWhenDone) != 0) raise_irq(kDmaIrq);
}

void Edu::reset() {
    liveness_ = 0;
    factorial_ = 0;
    status_ = 0;
    if (irq_status_ != 0) lower_irq(irq_status_);
    dma_source_ = dma_destination_ = dma_count_ = dma_command_ = 0;
    buffer_.fill(0);
}

}  // namespace potemkin::models
