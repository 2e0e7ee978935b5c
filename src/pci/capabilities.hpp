// The capability list (PCI Local Bus Spec 3.0 section 6.7) and the capabilities the model
// provides: Power Management (PCI PM 1.2), MSI (section 6.8.1) and MSI-X (section 6.8.2).
//
// Each capability is an image: its bytes (including the two header bytes, which
// add_capability fills in) and per-byte masks, so offsets inside the image are the offsets
// of the spec's register tables. add_capability links the image into the list.
//
// Walking a list never trusts it: a list pulled from a host device (or crafted by a
// malicious one) may point into the header, out of the space or back on itself.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/result.hpp"
#include "pci/config_space.hpp"

namespace potemkin::pci {

// Capability IDs (PCI Code and ID Assignment Specification).
namespace cap_id {
inline constexpr uint8_t kPowerManagement = 0x01;
inline constexpr uint8_t kMsi = 0x05;
inline constexpr uint8_t kVendorSpecific = 0x09;
inline constexpr uint8_t kPciExpress = 0x10;
inline constexpr uint8_t kMsix = 0x11;
}  // namespace cap_id

// First byte a capability may occupy, and the end of the area the list lives in (extended
// capabilities at 0x100+ are a different list).
inline constexpr uint32_t kCapabilityAreaStart = 0x40;
inline constexpr uint32_t kCapabilityAreaEnd = 0x100;

struct CapabilityImage {
    uint8_t id = 0;
    std::vector<uint8_t> bytes;            // bytes[0] = ID, bytes[1] = next pointer (filled in)
    std::vector<uint8_t> wmask, w1c, w1s;  // same length as bytes

    // An image of `length` zero bytes, read-only.
    static CapabilityImage zeroed(uint8_t id, size_t length);
    // Define a register inside the image (offset relative to the capability).
    void set(size_t offset, unsigned size, uint32_t value, Masks masks = {});
    uint32_t get(size_t offset, unsigned size) const;
};

// Place `image` at the first 4-byte-aligned free offset at or above 0x40 where none of its
// bytes is already claimed, append it to the end of the list (the capability pointer at 0x34
// when the list is empty, else the last capability's next pointer), and set the status
// register's capabilities-list bit. Returns the capability's offset. Fails when the image is
// shorter than 2 bytes, the masks are malformed, the existing list is malformed or there is
// no room below 0x100.
Result<uint8_t> add_capability(ConfigSpace& cs, const CapabilityImage& image);

struct CapabilityRef {
    uint8_t offset = 0;
    uint8_t id = 0;
    bool operator==(const CapabilityRef&) const = default;
};

// The list in order. Empty when the status register's capabilities-list bit is clear (the
// pointer is then undefined, spec 3.0 section 6.7). Pointers have their reserved low two bits
// masked off as the spec requires of software. Fails on a pointer into the header (< 0x40),
// a capability whose header would not fit, or a loop.
Result<std::vector<CapabilityRef>> walk_capabilities(const ConfigSpace& cs);

// Offset of the first capability with `id`; nullopt when absent or when the list is
// malformed before it (walk_capabilities says why).
std::optional<uint8_t> find_capability(const ConfigSpace& cs, uint8_t id);

// ---- Power Management (PCI Bus Power Management Interface Spec 1.2, chapter 3) ----------

struct PmSettings {
    bool d1_support = false;
    bool d2_support = false;
    bool no_soft_reset = true;  // D3hot -> D0 keeps the function's state
};

// 8 bytes: PMC (RO, version 3 = PM 1.2), PMCSR (PowerState bits 1:0 RW, the rest RO),
// PMCSR_BSE and Data (RO 0). PME is not supported.
CapabilityImage pm_capability(const PmSettings& settings = {});

// The PowerState field (0 = D0 ... 3 = D3hot).
uint8_t read_power_state(const ConfigSpace& cs, uint8_t cap_offset);

// ---- MSI (spec 3.0 section 6.8.1) --------------------------------------------------------

namespace msi {
// Offsets inside the capability.
inline constexpr uint8_t kControl = 0x02;
inline constexpr uint8_t kAddressLo = 0x04;
inline constexpr uint8_t kAddressHi = 0x08;  // 64-bit variant only
// Message Control bits.
inline constexpr uint16_t kEnable = 1u << 0;
inline constexpr uint16_t kMmcShift = 1;  // multiple message capable, 3:1, RO
inline constexpr uint16_t kMmeShift = 4;  // multiple message enable, 6:4, RW
inline constexpr uint16_t kMmeMask = 0x7u << kMmeShift;
inline constexpr uint16_t k64Bit = 1u << 7;
inline constexpr uint16_t kPerVectorMasking = 1u << 8;
// Data, mask and pending offsets for a given variant.
constexpr uint8_t data_offset(bool address64) {
    return address64 ? 0x0C : 0x08;
}
constexpr uint8_t mask_offset(bool address64) {
    return address64 ? 0x10 : 0x0C;
}
constexpr uint8_t pending_offset(bool address64) {
    return address64 ? 0x14 : 0x10;
}
}  // namespace msi

struct MsiSettings {
    unsigned vectors = 1;  // multiple message capable: 1, 2, 4, 8, 16 or 32
    bool address64 = true;
    bool per_vector_masking = false;
};

// Control: enable and multiple-message-enable RW, the rest RO. Address: bits 31:2 RW, 1:0
// RO 0 (dword aligned, section 6.8.1.4). Upper address (64-bit variant) and data: RW. Mask
// bits: RW for implemented vectors, RO 0 above. Pending bits: RO (the function sets them).
Result<CapabilityImage> msi_capability(const MsiSettings& settings);

struct MsiMessage {
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const MsiMessage&) const = default;
};

struct MsiState {
    bool enabled = false;
    bool address64 = false;
    bool per_vector_masking = false;
    unsigned vectors_capable = 1;
    // 2^MME, limited to vectors_capable (software must not enable more than capable;
    // section 6.8.1.3).
    unsigned vectors_enabled = 1;
    uint64_t address = 0;
    uint16_t data = 0;
    uint32_t mask_bits = 0;     // 0 without per-vector masking
    uint32_t pending_bits = 0;  // 0 without per-vector masking
};

MsiState read_msi(const ConfigSpace& cs, uint8_t cap_offset);

// The message for `vector`: the function may modify the low log2(vectors_enabled) bits of
// the data to identify the vector (section 6.8.1, Multiple Message Enable). nullopt when MSI is
// disabled or the vector is not enabled.
std::optional<MsiMessage> msi_message(const MsiState& state, unsigned vector);

// The function wants to signal `vector`: returns the message to send, or nullopt when MSI is
// disabled, the vector is not enabled, or the vector is masked — in the last case the
// vector's pending bit is set (section 6.8.3.4).
std::optional<MsiMessage> msi_signal(ConfigSpace& cs, uint8_t cap_offset, unsigned vector);

// After a config write: messages of vectors that are pending and no longer masked, with their
// pending bits cleared ("When software unmasks a vector whose associated Pending bit is set,
// the function must schedule sending the associated message, and clear the Pending bit as
// soon as the message has been sent", section 6.8.3.4).
[[nodiscard]] std::vector<MsiMessage> msi_take_unmasked_pending(ConfigSpace& cs,
                                                                uint8_t cap_offset);

// ---- MSI-X (spec 3.0 section 6.8.2) ------------------------------------------------------

namespace msix {
inline constexpr uint8_t kControl = 0x02;
inline constexpr uint8_t kTable = 0x04;
inline constexpr uint8_t kPba = 0x08;
inline constexpr uint16_t kTableSizeMask = 0x07FF;  // N-1
inline constexpr uint16_t kFunctionMask = 1u << 14;
inline constexpr uint16_t kEnable = 1u << 15;
inline constexpr uint32_t kBirMask = 0x7;
inline constexpr unsigned kMaxVectors = 2048;
inline constexpr unsigned kEntrySize = 16;
// Table entry layout.
inline constexpr unsigned kEntryAddressLo = 0x0;
inline constexpr unsigned kEntryAddressHi = 0x4;
inline constexpr unsigned kEntryData = 0x8;
inline constexpr unsigned kEntryVectorControl = 0xC;
inline constexpr uint32_t kVectorMasked = 1u << 0;
}  // namespace msix

struct MsixSettings {
    unsigned vectors = 1;       // 1..2048
    uint8_t table_bir = 0;      // BAR holding the table, 0..5
    uint32_t table_offset = 0;  // QWORD aligned
    uint8_t pba_bir = 0;
    uint32_t pba_offset = 0;  // QWORD aligned
};

// 12 bytes: control (table size RO, function mask and enable RW), table and PBA
// offset/BIR (RO).
Result<CapabilityImage> msix_capability(const MsixSettings& settings);

struct MsixState {
    bool enabled = false;
    bool function_masked = false;
    unsigned vectors = 0;  // table size + 1
    uint8_t table_bir = 0;
    uint32_t table_offset = 0;
    uint8_t pba_bir = 0;
    uint32_t pba_offset = 0;
};

MsixState read_msix(const ConfigSpace& cs, uint8_t cap_offset);

// The MSI-X table and Pending Bit Array as memory: the front-end routes guest accesses to the
// table and PBA ranges of their BARs here. Pure state: delivery is the caller's job; every
// method that makes messages deliverable returns them.
class MsixTable {
  public:
    struct Entry {
        uint64_t address = 0;
        uint32_t data = 0;
        bool masked = true;
    };

    // vectors: 1..2048. All entries start masked with address and data 0 (section 6.8.2.9:
    // the Mask bit's reset value is 1).
    static Result<MsixTable> create(unsigned vectors);

    unsigned vectors() const { return static_cast<unsigned>(entries_.size()); }
    uint64_t table_bytes() const { return uint64_t{vectors()} * msix::kEntrySize; }
    uint64_t pba_bytes() const { return (uint64_t{vectors()} + 63) / 64 * 8; }

    // Guest access to the table, offset relative to the table start. Any size 1..8 that
    // stays within the table (the spec only defines aligned dword and qword accesses);
    // outside the table: reads all-ones, writes ignored. Address bits 1:0 and vector control
    // bits 31:1 are read-only zero. Returns the messages made deliverable by clearing a mask
    // bit of a pending vector.
    uint64_t read_table(uint64_t offset, unsigned size) const;
    [[nodiscard]] std::vector<MsiMessage> write_table(uint64_t offset, unsigned size,
                                                      uint64_t value);

    // Guest access to the PBA: read-only (writes are ignored, section 6.8.2.10).
    uint64_t read_pba(uint64_t offset, unsigned size) const;

    // Mirror the capability's control register (call after every config write that may have
    // changed it). Clearing the function mask or setting enable delivers pending, unmasked
    // vectors.
    [[nodiscard]] std::vector<MsiMessage> set_control(bool enabled, bool function_masked);
    bool enabled() const { return enabled_; }
    bool function_masked() const { return function_masked_; }

    // The function wants to signal `vector`. Returns the message to send; nullopt when MSI-X
    // is disabled or the vector is out of range (nothing recorded), or when the function or
    // the vector is masked (pending bit set).
    std::optional<MsiMessage> signal(unsigned vector);

    // The interrupt condition went away while pending: the function clears the bit.
    void clear_pending(unsigned vector);

    bool pending(unsigned vector) const;
    std::optional<Entry> entry(unsigned vector) const;

  private:
    explicit MsixTable(unsigned vectors);
    uint8_t table_byte(uint64_t offset) const;
    void write_table_byte(uint64_t offset, uint8_t value);
    std::vector<MsiMessage> deliver_pending();

    std::vector<Entry> entries_;
    std::vector<uint64_t> pba_;
    bool enabled_ = false;
    bool function_masked_ = false;
};

}  // namespace potemkin::pci
