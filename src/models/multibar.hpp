// "multibar": a test device of potemkin's own design that exercises every BAR kind, an
// expansion ROM, MSI and MSI-X through one small, fully predictable register set. It is what
// the front-end, the transports and the guest-side PCI code are tested against.
//
// Identity: vendor 1b36 (Red Hat, the vendor QEMU uses for its own test and paravirtual
// devices), device ff01 — an ID we made up from the top of that range for local testing only;
// it is not assigned by Red Hat and must never leave a test VM. Class 0x00ff00 (unclassified),
// revision 1, subsystem 1b36:ff01, INTA#.
//
// BAR0, I/O, 32 ports (any access of 1, 2 or 4 bytes, little-endian byte registers):
//   0x00 RO  ID 0x7261626d ("mbar" in memory order)
//   0x04 RO  version 0x00010000
//   0x08..0x1F RW scratch (24 bytes, 0 at reset)
// BAR1, MEM32, 4 KiB, non-prefetchable:
//   0x000 RO  ID (as BAR0)
//   0x004 WO  doorbell: writing N signals interrupt N. In MSI or MSI-X mode that is vector N.
//             Values 0-3 are declared doorbells (DeviceSpec::doorbells, datamatch N): over
//             vfio-user they come as ioeventfd writes, not messages
//             (the server drops vectors the guest did not enable); in INTx mode it sets bit N
//             (N < 32) of the interrupt status and asserts INTx
//   0x008 RO  interrupt status (INTx mode)
//   0x00C W1C interrupt acknowledge: clears the written bits; INTx drops when status is 0
//   0x010 RO  doorbell count (writes to 0x004 since reset)
//   0x014 RW  BAR2 window offset (0 at reset; the low 20 bits count, dword-aligned)
//   0x018 RO  the BAR2 dword at the window offset, read by the model: a trapped view of BAR2
//             that shows what the device sees when BAR2 itself is mapped straight into the
//             guest (a write through the mapping must land in the device's memory)
//   0x100..0x7FF RW scratch RAM (any size 1..8, 0 at reset)
//   0x800..0x83F MSI-X table (4 vectors), 0xC00..0xC07 PBA: served by the ModelServer
//   everything else reads 0, writes ignored
// BAR2+3, MEM64, prefetchable, 1 MiB: each dword reads its byte offset XOR `seed` (parameter,
//   default 0x5eed0000) until written; any access size 1..8. Mappable (BarSpec::mappable,
//   parameter mmap, default on): the memory is the server's shared memory, which the VMM maps
//   straight into the guest, so guest accesses to it cause no model calls.
// BAR4 (only with parameter mem24=1), MEM24, 4 KiB: the same pattern as BAR2 (a legacy BAR
//   type few devices still have; off by default because a guest must place it below 1 MiB).
// Expansion ROM, 4 KiB, one valid image (PCI Firmware Specification 3.x section 5.1,
//   pci::make_expansion_rom): 0x55 0xAA, byte 2 = 8 (size in 512-byte units), the pointer at
//   0x18 = 0x40 to a "PCIR" data structure (revision 3, vendor/device 1b36:ff01, class
//   0x00ff00, image length 8 units, code type 0xFF so no firmware runs it, last image), the
//   ASCII string "potemkin multibar option ROM" at 0x20, and a checksum in the last byte (the
//   bytes sum to 0). Linux's sysfs `rom` file reads it.
// MSI: 4 vectors, 64-bit, per-vector masking. MSI-X: 4 vectors, table and PBA in BAR1.
// PCI Express (only with parameter pcie=1; docs/sdk.md "PCI Express"): a 4 KiB configuration
//   space, the PCI Express capability after MSI-X (Endpoint, Max_Payload_Size 256 supported,
//   extended tags, 8 GT/s x4 link that is always up) and three extended capabilities:
//   0x100 Advanced Error Reporting (version 2; never signals an error), 0x148 Device Serial
//   Number kSerialNumber, 0x154 Vendor-Specific (VSEC ID kVsecId, revision 1, 20 bytes):
//     +0x08 RO  ID (as BAR0), +0x0C RW scratch (0 at reset), +0x10 RW1C, kVsecW1cReset at reset.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "sdk/device_model.hpp"

namespace potemkin::models {

struct MultibarSettings {
    uint32_t seed = 0x5eed0000;  // XOR-ed into the BAR2/BAR4 pattern
    bool mem24 = false;          // add BAR4 as a 4 KiB MEM24 BAR
    bool mmap = true;            // BAR2 is mappable shared memory
    bool pcie = false;           // a PCI Express endpoint with extended capabilities
};

class Multibar final : public sdk::DeviceModel {
  public:
    static constexpr uint32_t kId = 0x7261626d;
    static constexpr uint32_t kVersion = 0x00010000;
    static constexpr uint64_t kIoSize = 32;
    static constexpr uint64_t kMmioSize = 4096;
    static constexpr uint64_t kMem64Size = uint64_t{1} << 20;
    static constexpr uint64_t kMem24Size = 4096;
    // BAR1 registers.
    static constexpr uint64_t kRegId = 0x000;
    static constexpr uint64_t kRegDoorbell = 0x004;
    static constexpr uint64_t kRegIrqStatus = 0x008;
    static constexpr uint64_t kRegIrqAck = 0x00C;
    static constexpr uint64_t kRegDoorbellCount = 0x010;
    static constexpr uint64_t kRegBar2Window = 0x014;
    static constexpr uint64_t kRegBar2Peek = 0x018;
    static constexpr uint64_t kScratchStart = 0x100;
    static constexpr uint64_t kScratchEnd = 0x800;
    static constexpr uint32_t kMsixTable = 0x800;
    static constexpr uint32_t kMsixPba = 0xC00;
    static constexpr unsigned kVectors = 4;
    static constexpr uint32_t kRomSize = 4096;
    static constexpr uint32_t kRomStringOffset = 0x20;
    static constexpr uint16_t kRomPcirOffset = 0x40;
    static constexpr const char* kRomString = "potemkin multibar option ROM";
    static constexpr uint64_t kSerialNumber = 0x1b36'ff01'0000'0001ull;
    static constexpr uint16_t kVsecId = 0x0001;
    static constexpr uint32_t kVsecW1cReset = 0xa5a5a5a5u;

    explicit Multibar(const MultibarSettings& settings = {});
    // Factory for the model registry: parameters seed (number), mem24, mmap and pcie
    // (booleans).
    static Result<std::unique_ptr<sdk::DeviceModel>> create(const sdk::ModelParams& params);

    const sdk::DeviceSpec& spec() const override { return spec_; }
    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override;
    void bar_write(int bar, uint64_t offset, unsigned size, uint64_t value) override;
    void reset() override;
    void attach(sdk::DeviceServices& services) override;

  private:
    uint64_t pattern_read(const std::vector<uint8_t>& mem, uint64_t offset, unsigned size) const;
    void fill_pattern(std::span<uint8_t> mem) const;
    void ring(uint32_t n);

    MultibarSettings settings_;
    sdk::DeviceSpec spec_;
    std::array<uint8_t, kIoSize> io_{};
    std::vector<uint8_t> scratch_;  // BAR1 0x100..0x7FF
    std::vector<uint8_t> mem64_;
    std::span<uint8_t> bar2_;  // mem64_, or the server's shared memory when mappable
    std::vector<uint8_t> mem24_;
    uint32_t irq_status_ = 0;
    uint32_t doorbells_ = 0;
    uint32_t window_ = 0;  // BAR1 0x014: offset of the BAR2 dword 0x018 shows
};

}  // namespace potemkin::models
