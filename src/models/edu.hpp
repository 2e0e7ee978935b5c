// QEMU's educational PCI device ("edu"), as specified by QEMU's docs/specs/edu.rst and
// implemented in hw/misc/edu.c: a factorial engine, an interrupt raise/acknowledge pair and a
// small DMA engine with a 4 KiB buffer. The device every PCI-driver tutorial targets, so a
// guest driver written for QEMU's edu runs unchanged against this one.
//
// PCI identity (edu.c edu_class_init / pci_edu_realize): vendor 1234, device 11e8, revision
// 0x10, class 0x00ff00 (PCI_CLASS_OTHERS), subsystem 1af4:1100 (QEMU's default for every
// device), INTA#, MSI with 1 vector and a 64-bit address, BAR0 1 MiB 32-bit non-prefetchable
// memory.
//
// Registers of BAR0 (edu.rst "MMIO area spec"):
//   0x00 RO  identification 0x010000ed (major 1 << 24 | minor 0 << 16 | 0xed)
//   0x04 RW  card liveness check: reads the bitwise inverse of the last value written (0 at
//            reset)
//   0x08 RW  factorial: writing n computes n! (32-bit wrapping, as edu.c's uint32_t loop);
//            reading gives the result. Ignored while a computation runs (never observable here)
//   0x20 RW  status: bit 0 "computing" (RO), bit 7 "raise interrupt 0x1 after factorial"
//   0x24 RO  interrupt status
//   0x60 WO  interrupt raise: value OR-ed into interrupt status, interrupt raised
//   0x64 WO  interrupt acknowledge: value's bits cleared; INTx drops when status becomes 0
//   0x80 RW  DMA source address        (8 bytes)
//   0x88 RW  DMA destination address   (8 bytes)
//   0x90 RW  DMA transfer count        (8 bytes)
//   0x98 RW  DMA command: bit 0 start, bit 1 direction (0 RAM → EDU, 1 EDU → RAM), bit 2 raise
//            interrupt 0x100 when done. A write without bit 0 is ignored (as edu.c); address,
//            count and command writes are ignored while a transfer runs (bit 0 set)
// The DMA buffer is EDU-internal address 0x40000..0x40FFF.
// Access sizes (edu.c edu_mmio_read/write): 4 bytes below 0x80, 4 or 8 bytes from 0x80; any
// other size reads all-ones and is ignored on write. A 4-byte write to a DMA register sets the
// whole register (upper half 0); the upper halves (0x84, ...) are not registers of their own
// and read all-ones. Unlisted offsets read all-ones.
//
// Interrupts: when the server's irq mode is MSI, each raise sends vector 0; otherwise INTx is
// asserted while interrupt status != 0 (edu.c edu_raise_irq / edu_lower_irq).
//
// Differences from QEMU, on purpose:
// - The factorial is computed inside the register write (QEMU uses a thread), so status bit 0
//   is never observed set. DMA runs as deferred work (DeviceServices::defer) right after the
//   command write has been answered, not from QEMU's 100 ms timer: command bit 0 reads set
//   until the transfer is done; a driver polls it or waits for interrupt 0x100, as on QEMU.
//   Reading the registers while the transfer waits for the VMM is answered (re-entrancy).
// - DMA is refused (counted in refused_dma()) while bus mastering is off: the server refuses
//   it (QEMU's edu does no DMA then either).
// - Out-of-range DMA (EDU-side range outside the buffer, count 0, a RAM address outside the
//   DMA mask, or guest memory refusing the access) completes with no data transferred and is
//   logged and counted (refused_dma()). QEMU calls hw_error() (aborts) for the first and
//   silently clamps the RAM address to the mask for the third. The completion interrupt is
//   still raised when requested, so a driver waiting for it does not hang.
// - reset() returns the device to its power-on state (edu.c has no reset handler).
// - Parameter dma_mask (default 0x0FFFFFFF, 28 bits, as edu.c's "dma_mask" property): the
//   RAM-side range must lie inside it.
// Not implemented: nothing else of edu.rst; edu.c's debug printfs.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "common/result.hpp"
#include "sdk/device_model.hpp"

namespace potemkin::models {

struct EduSettings {
    uint64_t dma_mask = (uint64_t{1} << 28) - 1;  // edu.c: DMA_MASK default
};

class Edu final : public sdk::DeviceModel {
  public:
    // Register offsets (edu.rst).
    static constexpr uint64_t kIdentification = 0x00;
    static constexpr uint64_t kLiveness = 0x04;
    static constexpr uint64_t kFactorial = 0x08;
    static constexpr uint64_t kStatus = 0x20;
    static constexpr uint64_t kIrqStatus = 0x24;
    static constexpr uint64_t kIrqRaise = 0x60;
    static constexpr uint64_t kIrqAck = 0x64;
    static constexpr uint64_t kDmaSource = 0x80;
    static constexpr uint64_t kDmaDestination = 0x88;
    static constexpr uint64_t kDmaCount = 0x90;
    static constexpr uint64_t kDmaCommand = 0x98;

    static constexpr uint32_t kIdValue = 0x010000ed;
    static constexpr uint32_t kStatusComputing = 0x01;
    static constexpr uint32_t kStatusIrqFactorial = 0x80;
    static constexpr uint32_t kFactorialIrq = 0x001;
    static constexpr uint32_t kDmaIrq = 0x100;
    static constexpr uint64_t kDmaRun = 0x1;
    static constexpr uint64_t kDmaToRam = 0x2;  // direction bit: 1 = EDU → RAM
    static constexpr uint64_t kDmaIrqWhenDone = 0x4;
    static constexpr uint64_t kDmaBufferAddress = 0x40000;
    static constexpr size_t kDmaBufferSize = 4096;
    static constexpr uint64_t kBar0Size = uint64_t{1} << 20;

    explicit Edu(const EduSettings& settings = {});
    // Factory for the model registry: parameter dma_mask (number).
    static Result<std::unique_ptr<sdk::DeviceModel>> create(const sdk::ModelParams& params);

    const sdk::DeviceSpec& spec() const override { return spec_; }
    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override;
    void bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) override;
    void reset() override;

    // DMA commands that completed without a transfer.
    uint64_t refused_dma() const { return refused_dma_; }
    std::span<const uint8_t> dma_buffer() const { return buffer_; }

  private:
    void raise_irq(uint32_t bits);
    void lower_irq(uint32_t bits);
    void run_dma();
    bool refuse_dma(const char* why);

    EduSettings settings_;
    sdk::DeviceSpec spec_;
    uint32_t liveness_ = 0;  // stored inverted, as edu.c's addr4
    uint32_t factorial_ = 0;
    uint32_t status_ = 0;
    uint32_t irq_status_ = 0;
    uint64_t dma_source_ = 0;
    uint64_t dma_destination_ = 0;
    uint64_t dma_count_ = 0;
    uint64_t dma_command_ = 0;
    std::array<uint8_t, kDmaBufferSize> buffer_{};
    uint64_t refused_dma_ = 0;
};

}  // namespace potemkin::models
