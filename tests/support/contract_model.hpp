// "contract": the device model the transport contract suite (tests/contract/) runs on every
// transport. Each register lets a test trigger one HostDevice behaviour by an access, so the
// same test drives inproc:, vfio-user: and mpqemu alike without touching the model directly.
// Test-only: registered in a test's own ModelRegistry, never shipped.
//
// Identity: vendor 1b36, device ff0c (made up for local testing, like multibar's ff01), class
// 0x00ff00, revision 3, subsystem 1b36:ff0c, INTA#, a PCI Express-sized (4096-byte) config
// space. MSI (4 vectors, 64-bit) and MSI-X (4 vectors, table and PBA in BAR1).
//
// Byte order: every register and scratch byte is little-endian; a scratch area stores bytes,
// so any access size (1, 2, 4, 8) reads back what any other size wrote.
//
// BAR0, I/O, 32 ports: scratch, 0 at reset.
// BAR1, MEM32, 4 KiB, non-prefetchable:
//   0x000 RO  ID kId: bytes 'C' 'T' 'R' 'T' in memory order
//   0x004 RW  INTx level: write 1 asserts the model's line, 0 lowers it (reads the level)
//   0x008 WO  MSI/MSI-X doorbell: writing N signals vector N of the enabled mode
//   0x010 RW  DMA guest-physical address (8 bytes, or two dwords)
//   0x018 RW  DMA length (<= kDmaBufferSize)
//   0x01C WO  DMA command: 1 reads guest memory into the buffer, 2 writes the buffer to guest
//             memory
//   0x020 RO  DMA status: 0 ok, 1 the last DMA failed, 2 bad length or command
//   0x024 RW  power-on register, kPowerOn at reset
//   0x100..0x3FF RW scratch, 0 at reset
//   0x400..0x43F MSI-X table, 0x600..0x607 PBA (served by the ModelServer)
//   0x800..0xFFF RW DMA buffer, 0 at reset
// BAR2+3, MEM64, prefetchable, 4 KiB (trapped, not mappable): byte at offset o reads
//   (o * 7 + 0x11) & 0xFF until written.
// Expansion ROM, 2 KiB: 0x55 0xAA, then kRomString at kRomStringOffset.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "sdk/device_model.hpp"

namespace potemkin::testing {

class ContractModel final : public sdk::DeviceModel {
  public:
    static constexpr uint16_t kVendor = 0x1b36;
    static constexpr uint16_t kDevice = 0xff0c;
    static constexpr uint8_t kRevision = 3;
    static constexpr uint32_t kClass = 0x00ff00;
    static constexpr uint32_t kId = 0x54525443;  // "CTRT" in memory order
    static constexpr uint32_t kPowerOn = 0xC0FFEE11;

    static constexpr uint64_t kIoSize = 32;
    static constexpr uint64_t kMmioSize = 4096;
    static constexpr uint64_t kMem64Size = 4096;

    static constexpr uint64_t kRegId = 0x000;
    static constexpr uint64_t kRegIntx = 0x004;
    static constexpr uint64_t kRegDoorbell = 0x008;
    static constexpr uint64_t kRegDmaAddress = 0x010;
    static constexpr uint64_t kRegDmaLength = 0x018;
    static constexpr uint64_t kRegDmaCommand = 0x01C;
    static constexpr uint64_t kRegDmaStatus = 0x020;
    static constexpr uint64_t kRegPowerOn = 0x024;
    static constexpr uint64_t kScratchStart = 0x100;
    static constexpr uint64_t kScratchEnd = 0x400;
    static constexpr uint32_t kMsixTable = 0x400;
    static constexpr uint32_t kMsixPba = 0x600;
    static constexpr uint64_t kDmaBuffer = 0x800;
    static constexpr uint64_t kDmaBufferSize = 0x800;
    static constexpr unsigned kVectors = 4;

    static constexpr uint32_t kDmaToDevice = 1;  // guest memory → buffer (a DMA read)
    static constexpr uint32_t kDmaToGuest = 2;   // buffer → guest memory (a DMA write)
    static constexpr uint32_t kDmaOk = 0;
    static constexpr uint32_t kDmaFailed = 1;
    static constexpr uint32_t kDmaBadRequest = 2;

    static constexpr uint32_t kRomSize = 2048;
    static constexpr uint32_t kRomStringOffset = 0x20;
    static constexpr const char* kRomString = "potemkin contract ROM";

    static constexpr uint8_t mem64_pattern(uint64_t offset) {
        return static_cast<uint8_t>((offset * 7 + 0x11) & 0xFF);
    }

    ContractModel() {
        spec_.name = "contract";
        spec_.header.vendor_id = kVendor;
        spec_.header.device_id = kDevice;
        spec_.header.revision_id = kRevision;
        spec_.header.class_code = kClass;
        spec_.header.subsystem_vendor_id = kVendor;
        spec_.header.subsystem_id = kDevice;
        spec_.header.interrupt_pin = pci::InterruptPin::inta;
        spec_.header.express = true;
        spec_.bars[0] = sdk::BarSpec{pci::BarKind::io, kIoSize, false};
        spec_.bars[1] = sdk::BarSpec{pci::BarKind::mem32, kMmioSize, false};
        spec_.bars[2] = sdk::BarSpec{pci::BarKind::mem64, kMem64Size, true};
        spec_.rom.assign(kRomSize, 0);
        spec_.rom[0] = 0x55;
        spec_.rom[1] = 0xAA;
        std::memcpy(spec_.rom.data() + kRomStringOffset, kRomString, std::strlen(kRomString));
        spec_.msi =
            pci::MsiSettings{.vectors = kVectors, .address64 = true, .per_vector_masking = false};
        spec_.msix = sdk::MsixSpec{kVectors, 1, kMsixTable, kMsixPba};
        reset();
    }

    static Result<std::unique_ptr<sdk::DeviceModel>> create(const sdk::ModelParams& params) {
        if (!params.empty()) return failf("the contract model takes no parameters");
        return std::unique_ptr<sdk::DeviceModel>(std::make_unique<ContractModel>());
    }

    const sdk::DeviceSpec& spec() const override { return spec_; }

    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override {
        switch (bar) {
            case 0:
                return load(io_.data() + offset, size);
            case 1:
                if (in(offset, size, kScratchStart, kScratchEnd))
                    return load(scratch_.data() + (offset - kScratchStart), size);
                if (in(offset, size, kDmaBuffer, kDmaBuffer + kDmaBufferSize))
                    return load(dma_buffer_.data() + (offset - kDmaBuffer), size);
                if (offset == kRegDmaAddress && size == 8) return dma_address_;
                if (size != 4) return 0;
                switch (offset) {
                    case kRegId:
                        return kId;
                    case kRegIntx:
                        return level_ ? 1 : 0;
                    case kRegDmaAddress:
                        return static_cast<uint32_t>(dma_address_);
                    case kRegDmaAddress + 4:
                        return static_cast<uint32_t>(dma_address_ >> 32);
                    case kRegDmaLength:
                        return dma_length_;
                    case kRegDmaStatus:
                        return dma_status_;
                    case kRegPowerOn:
                        return power_on_;
                    default:
                        return 0;
                }
            case 2:
                return load(mem64_.data() + offset, size);
            default:
                return 0;
        }
    }

    void bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) override {
        switch (bar) {
            case 0:
                store(io_.data() + offset, size, value);
                return;
            case 1:
                if (in(offset, size, kScratchStart, kScratchEnd)) {
                    store(scratch_.data() + (offset - kScratchStart), size, value);
                    return;
                }
                if (in(offset, size, kDmaBuffer, kDmaBuffer + kDmaBufferSize)) {
                    store(dma_buffer_.data() + (offset - kDmaBuffer), size, value);
                    return;
                }
                if (offset == kRegDmaAddress && size == 8) {
                    dma_address_ = value;
                    return;
                }
                if (size != 4) return;
                switch (offset) {
                    case kRegIntx:
                        level_ = (value & 1) != 0;
                        if (services_ != nullptr) services_->set_intx(level_);
                        return;
                    case kRegDoorbell:
                        if (services_ != nullptr)
                            services_->signal_msi(static_cast<unsigned>(value));
                        return;
                    case kRegDmaAddress:
                        dma_address_ =
                            (dma_address_ & ~uint64_t{0xFFFF'FFFF}) | (value & 0xFFFF'FFFF);
                        return;
                    case kRegDmaAddress + 4:
                        dma_address_ = (dma_address_ & 0xFFFF'FFFF) | (value << 32);
                        return;
                    case kRegDmaLength:
                        dma_length_ = static_cast<uint32_t>(value);
                        return;
                    case kRegDmaCommand:
                        dma(static_cast<uint32_t>(value));
                        return;
                    case kRegPowerOn:
                        power_on_ = static_cast<uint32_t>(value);
                        return;
                    default:
                        return;
                }
            case 2:
                store(mem64_.data() + offset, size, value);
                return;
            default:
                return;
        }
    }

    void reset() override {
        io_.fill(0);
        scratch_.assign(kScratchEnd - kScratchStart, 0);
        dma_buffer_.assign(kDmaBufferSize, 0);
        mem64_.resize(kMem64Size);
        for (uint64_t o = 0; o < kMem64Size; ++o) mem64_[o] = mem64_pattern(o);
        dma_address_ = 0;
        dma_length_ = 0;
        dma_status_ = kDmaOk;
        power_on_ = kPowerOn;
        level_ = false;
        if (services_ != nullptr) services_->set_intx(false);
    }

  private:
    static bool in(uint64_t offset, unsigned size, uint64_t start, uint64_t end) {
        return offset >= start && offset + size <= end;
    }
    static uint64_t load(const uint8_t* p, unsigned size) {
        uint64_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint64_t{p[i]} << (8 * i);
        return v;
    }
    static void store(uint8_t* p, unsigned size, uint64_t v) {
        for (unsigned i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
    }

    void dma(uint32_t command) {
        if (dma_length_ > kDmaBufferSize || (command != kDmaToDevice && command != kDmaToGuest) ||
            services_ == nullptr) {
            dma_status_ = kDmaBadRequest;
            return;
        }
        std::span<uint8_t> buf(dma_buffer_.data(), dma_length_);
        const Result<void> r = command == kDmaToDevice ? services_->dma_read(dma_address_, buf)
                                                       : services_->dma_write(dma_address_, buf);
        dma_status_ = r ? kDmaOk : kDmaFailed;
    }

    sdk::DeviceSpec spec_;
    std::array<uint8_t, kIoSize> io_{};
    std::vector<uint8_t> scratch_;
    std::vector<uint8_t> dma_buffer_;
    std::vector<uint8_t> mem64_;
    uint64_t dma_address_ = 0;
    uint32_t dma_length_ = 0;
    uint32_t dma_status_ = kDmaOk;
    uint32_t power_on_ = kPowerOn;
    bool level_ = false;
};

}  // namespace potemkin::testing
