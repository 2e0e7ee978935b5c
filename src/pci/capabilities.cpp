#include "pci/capabilities.hpp"

#include <algorithm>
#include <array>
#include <bit>

#include "pci/registers.hpp"

namespace potemkin::pci {

namespace {

uint8_t byte_of(uint64_t v, unsigned i) {
    return static_cast<uint8_t>(v >> (8 * i));
}

// Walk the list into `out`, stopping at the first malformed pointer.
Result<void> walk_into(const ConfigSpace& cs, std::vector<CapabilityRef>& out) {
    if ((cs.read(reg::kStatus, 2) & status::kCapabilitiesList) == 0) return ok();
    std::array<bool, kCapabilityAreaEnd> seen{};
    // "The bottom two bits are Reserved and must be set to 00b. Software must mask these bits
    // off before using this register as a pointer" (spec 3.0 section 6.7).
    uint32_t ptr = cs.read(reg::kCapabilityPointer, 1) & 0xFC;
    uint32_t from = reg::kCapabilityPointer;
    while (ptr != 0) {
        if (ptr < kCapabilityAreaStart)
            return failf("capability list: pointer at {:#x} points into the header ({:#x})", from,
                         ptr);
        if (seen[ptr])
            return failf("capability list: pointer at {:#x} loops back to {:#x}", from, ptr);
        seen[ptr] = true;
        out.push_back({static_cast<uint8_t>(ptr), static_cast<uint8_t>(cs.read(ptr, 1))});
        from = ptr + 1;
        ptr = cs.read(from, 1) & 0xFC;
    }
    return ok();
}

}  // namespace

CapabilityImage CapabilityImage::zeroed(uint8_t id, size_t length) {
    CapabilityImage img;
    img.id = id;
    img.bytes.assign(length, 0);
    img.wmask.assign(length, 0);
    img.w1c.assign(length, 0);
    img.w1s.assign(length, 0);
    return img;
}

void CapabilityImage::set(size_t offset, unsigned size, uint32_t value, Masks masks) {
    // Used with constant offsets by the builders below; an image too short is a programming
    // error in a builder, not a runtime condition.
    const size_t need = offset + size;
    for (auto* v : {&bytes, &wmask, &w1c, &w1s})
        if (v->size() < need) v->resize(need, 0);
    for (unsigned i = 0; i < size; ++i) {
        bytes[offset + i] = byte_of(value, i);
        wmask[offset + i] = byte_of(masks.wmask, i);
        w1c[offset + i] = byte_of(masks.w1c, i);
        w1s[offset + i] = byte_of(masks.w1s, i);
    }
}

uint32_t CapabilityImage::get(size_t offset, unsigned size) const {
    uint32_t v = 0;
    for (unsigned i = 0; i < size && offset + i < bytes.size(); ++i)
        v |= static_cast<uint32_t>(bytes[offset + i]) << (8 * i);
    return v;
}

Result<uint8_t> add_capability(ConfigSpace& cs, const CapabilityImage& image) {
    const size_t len = image.bytes.size();
    if (len < 2) return failf("capability {:#x}: image of {} bytes has no header", image.id, len);
    std::vector<CapabilityRef> list;
    if (auto r = walk_into(cs, list); !r)
        return fail(r.error().context(fmt::format("capability {:#x}", image.id)));

    // First dword-aligned window of unclaimed bytes (spec 3.0 section 6.7: capabilities are
    // DWORD aligned, in the device-specific area 0x40..0xFF).
    uint32_t at = 0;
    for (uint32_t off = kCapabilityAreaStart; off + len <= kCapabilityAreaEnd; off += 4) {
        bool free = true;
        for (uint32_t i = off; i < off + len && free; ++i) free = !cs.claimed(i);
        if (free) {
            at = off;
            break;
        }
    }
    if (at == 0)
        return failf("capability {:#x}: no room for {} bytes in 0x40..0xff", image.id, len);

    // The two header bytes are read-only whatever the image says.
    std::vector<uint8_t> bytes = image.bytes, wmask = image.wmask, w1c = image.w1c, w1s = image.w1s;
    bytes[0] = image.id;
    bytes[1] = 0;
    for (auto* m : {&wmask, &w1c, &w1s})
        if (m->size() >= 2) (*m)[0] = (*m)[1] = 0;
    if (auto r = cs.set_bytes(at, bytes, wmask, w1c, w1s); !r)
        return fail(r.error().context(fmt::format("capability {:#x}", image.id)));

    const uint32_t link = list.empty() ? reg::kCapabilityPointer : list.back().offset + 1u;
    POTEMKIN_TRY(cs.store(link, 1, at));
    POTEMKIN_TRY(cs.update(reg::kStatus, 2, 0, status::kCapabilitiesList));
    return static_cast<uint8_t>(at);
}

Result<std::vector<CapabilityRef>> walk_capabilities(const ConfigSpace& cs) {
    std::vector<CapabilityRef> list;
    POTEMKIN_TRY(walk_into(cs, list));
    return list;
}

std::optional<uint8_t> find_capability(const ConfigSpace& cs, uint8_t id) {
    std::vector<CapabilityRef> list;
    (void)walk_into(cs, list);  // a malformed tail still leaves the well-formed prefix usable
    for (const auto& c : list)
        if (c.id == id) return c.offset;
    return std::nullopt;
}

// ---- Power Management --------------------------------------------------------------------

CapabilityImage pm_capability(const PmSettings& s) {
    auto img = CapabilityImage::zeroed(cap_id::kPowerManagement, 8);
    // PMC: version 011b = PM 1.2; D1/D2 support bits 9/10; no PME support (bits 15:11 = 0).
    img.set(0x02, 2, 0x3u | (s.d1_support ? 1u << 9 : 0) | (s.d2_support ? 1u << 10 : 0));
    // PMCSR: PowerState 1:0 RW; No_Soft_Reset bit 3 RO. PME_En is RO 0 without PME support.
    img.set(0x04, 2, s.no_soft_reset ? 1u << 3 : 0, {.wmask = 0x3});
    return img;
}

uint8_t read_power_state(const ConfigSpace& cs, uint8_t cap_offset) {
    return static_cast<uint8_t>(cs.read(cap_offset + 4u, 2) & 0x3);
}

// ---- MSI ---------------------------------------------------------------------------------

Result<CapabilityImage> msi_capability(const MsiSettings& s) {
    if (!std::has_single_bit(s.vectors) || s.vectors > 32)
        return failf("MSI: {} vectors is not 1, 2, 4, 8, 16 or 32", s.vectors);
    const auto mmc = static_cast<uint32_t>(std::countr_zero(s.vectors));
    const size_t len =
        s.per_vector_masking ? (s.address64 ? 0x18 : 0x14) : (s.address64 ? 0x0E : 0x0A);
    auto img = CapabilityImage::zeroed(cap_id::kMsi, len);
    const uint32_t ctl = (mmc << msi::kMmcShift) | (s.address64 ? msi::k64Bit : 0) |
                         (s.per_vector_masking ? msi::kPerVectorMasking : 0);
    img.set(msi::kControl, 2, ctl, {.wmask = msi::kEnable | msi::kMmeMask});
    // "Message Address ... DWORD aligned": bits 1:0 read as 0 (section 6.8.1.4).
    img.set(msi::kAddressLo, 4, 0, {.wmask = 0xFFFF'FFFCu});
    if (s.address64) img.set(msi::kAddressHi, 4, 0, {.wmask = 0xFFFF'FFFFu});
    img.set(msi::data_offset(s.address64), 2, 0, {.wmask = 0xFFFF});
    if (s.per_vector_masking) {
        const uint32_t implemented = s.vectors == 32 ? 0xFFFF'FFFFu : (1u << s.vectors) - 1;
        img.set(msi::mask_offset(s.address64), 4, 0, {.wmask = implemented});
        img.set(msi::pending_offset(s.address64), 4, 0);  // RO to software
    }
    return img;
}

MsiState read_msi(const ConfigSpace& cs, uint8_t cap) {
    MsiState st;
    const uint32_t ctl = cs.read(cap + uint32_t{msi::kControl}, 2);
    st.enabled = (ctl & msi::kEnable) != 0;
    st.address64 = (ctl & msi::k64Bit) != 0;
    st.per_vector_masking = (ctl & msi::kPerVectorMasking) != 0;
    // Encodings 110b and 111b are reserved; treat them as the 32-vector maximum.
    st.vectors_capable = 1u << std::min<uint32_t>((ctl >> msi::kMmcShift) & 0x7, 5);
    st.vectors_enabled =
        std::min(1u << std::min<uint32_t>((ctl >> msi::kMmeShift) & 0x7, 5), st.vectors_capable);
    st.address = cs.read(cap + uint32_t{msi::kAddressLo}, 4);
    if (st.address64) st.address |= uint64_t{cs.read(cap + uint32_t{msi::kAddressHi}, 4)} << 32;
    st.data = static_cast<uint16_t>(cs.read(cap + uint32_t{msi::data_offset(st.address64)}, 2));
    if (st.per_vector_masking) {
        st.mask_bits = cs.read(cap + uint32_t{msi::mask_offset(st.address64)}, 4);
        st.pending_bits = cs.read(cap + uint32_t{msi::pending_offset(st.address64)}, 4);
    }
    return st;
}

std::optional<MsiMessage> msi_message(const MsiState& st, unsigned vector) {
    if (!st.enabled || vector >= st.vectors_enabled) return std::nullopt;
    const uint32_t low = st.vectors_enabled - 1;
    return MsiMessage{st.address, (st.data & ~low) | vector};
}

std::optional<MsiMessage> msi_signal(ConfigSpace& cs, uint8_t cap, unsigned vector) {
    const MsiState st = read_msi(cs, cap);
    auto msg = msi_message(st, vector);
    if (!msg) return std::nullopt;
    if (st.per_vector_masking && (st.mask_bits & (1u << vector))) {
        (void)cs.update(cap + uint32_t{msi::pending_offset(st.address64)}, 4, 0, 1u << vector);
        return std::nullopt;
    }
    return msg;
}

std::vector<MsiMessage> msi_take_unmasked_pending(ConfigSpace& cs, uint8_t cap) {
    std::vector<MsiMessage> out;
    const MsiState st = read_msi(cs, cap);
    if (!st.per_vector_masking || !st.enabled) return out;
    const uint32_t due = st.pending_bits & ~st.mask_bits;
    for (unsigned v = 0; v < st.vectors_enabled; ++v) {
        if (!(due & (1u << v))) continue;
        if (auto m = msi_message(st, v)) out.push_back(*m);
        (void)cs.update(cap + uint32_t{msi::pending_offset(st.address64)}, 4, 1u << v, 0);
    }
    return out;
}

// ---- MSI-X -------------------------------------------------------------------------------

Result<CapabilityImage> msix_capability(const MsixSettings& s) {
    if (s.vectors < 1 || s.vectors > msix::kMaxVectors)
        return failf("MSI-X: {} vectors is not in 1..2048", s.vectors);
    if (s.table_bir > 5 || s.pba_bir > 5)
        return failf("MSI-X: BIR {} / {} is not a BAR number 0..5", s.table_bir, s.pba_bir);
    if ((s.table_offset & msix::kBirMask) || (s.pba_offset & msix::kBirMask))
        return failf("MSI-X: table offset {:#x} / PBA offset {:#x} is not QWORD aligned",
                     s.table_offset, s.pba_offset);
    auto img = CapabilityImage::zeroed(cap_id::kMsix, 12);
    img.set(msix::kControl, 2, s.vectors - 1, {.wmask = msix::kFunctionMask | msix::kEnable});
    img.set(msix::kTable, 4, s.table_offset | s.table_bir);
    img.set(msix::kPba, 4, s.pba_offset | s.pba_bir);
    return img;
}

MsixState read_msix(const ConfigSpace& cs, uint8_t cap) {
    MsixState st;
    const uint32_t ctl = cs.read(cap + uint32_t{msix::kControl}, 2);
    st.enabled = (ctl & msix::kEnable) != 0;
    st.function_masked = (ctl & msix::kFunctionMask) != 0;
    st.vectors = (ctl & msix::kTableSizeMask) + 1;
    const uint32_t t = cs.read(cap + uint32_t{msix::kTable}, 4);
    const uint32_t p = cs.read(cap + uint32_t{msix::kPba}, 4);
    st.table_bir = static_cast<uint8_t>(t & msix::kBirMask);
    st.table_offset = t & ~msix::kBirMask;
    st.pba_bir = static_cast<uint8_t>(p & msix::kBirMask);
    st.pba_offset = p & ~msix::kBirMask;
    return st;
}

MsixTable::MsixTable(unsigned vectors) : entries_(vectors), pba_((vectors + 63) / 64, 0) {}

Result<MsixTable> MsixTable::create(unsigned vectors) {
    if (vectors < 1 || vectors > msix::kMaxVectors)
        return failf("MSI-X table: {} vectors is not in 1..2048", vectors);
    return MsixTable(vectors);
}

uint8_t MsixTable::table_byte(uint64_t offset) const {
    const Entry& e = entries_[offset / msix::kEntrySize];
    const unsigned field = offset % msix::kEntrySize;
    uint32_t dword = 0;
    switch (field / 4 * 4) {
        case msix::kEntryAddressLo:
            dword = static_cast<uint32_t>(e.address);
            break;
        case msix::kEntryAddressHi:
            dword = static_cast<uint32_t>(e.address >> 32);
            break;
        case msix::kEntryData:
            dword = e.data;
            break;
        default:
            dword = e.masked ? msix::kVectorMasked : 0;
            break;
    }
    return byte_of(dword, field % 4);
}

void MsixTable::write_table_byte(uint64_t offset, uint8_t value) {
    Entry& e = entries_[offset / msix::kEntrySize];
    const unsigned field = offset % msix::kEntrySize;
    const unsigned shift = 8 * (field % 4);
    switch (field / 4 * 4) {
        case msix::kEntryAddressLo:
        case msix::kEntryAddressHi: {
            const unsigned s = shift + (field >= msix::kEntryAddressHi ? 32 : 0);
            // Address bits 1:0: "software must always write zeros ... otherwise the result is
            // undefined" (section 6.8.2.6); keep them zero.
            const uint8_t v = field == 0 ? static_cast<uint8_t>(value & 0xFC) : value;
            e.address = (e.address & ~(uint64_t{0xFF} << s)) | (uint64_t{v} << s);
            break;
        }
        case msix::kEntryData:
            e.data = (e.data & ~(0xFFu << shift)) | (uint32_t{value} << shift);
            break;
        default:  // vector control: bit 0 mask, bits 31:1 reserved RO 0
            if (field == msix::kEntryVectorControl) e.masked = (value & msix::kVectorMasked) != 0;
            break;
    }
}

uint64_t MsixTable::read_table(uint64_t offset, unsigned size) const {
    if (size < 1 || size > 8 || offset >= table_bytes() || size > table_bytes() - offset)
        return size >= 8 || size == 0 ? ~0ull : (1ull << (8 * size)) - 1;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) v |= uint64_t{table_byte(offset + i)} << (8 * i);
    return v;
}

std::vector<MsiMessage> MsixTable::write_table(uint64_t offset, unsigned size, uint64_t value) {
    std::vector<MsiMessage> out;
    if (size < 1 || size > 8 || offset >= table_bytes() || size > table_bytes() - offset)
        return out;
    for (unsigned i = 0; i < size; ++i) write_table_byte(offset + i, byte_of(value, i));
    // "When software unmasks a vector whose associated Pending bit is set, the function must
    // schedule sending the associated message, and clear the Pending bit as soon as the
    // message has been sent" (section 6.8.3.4).
    if (!enabled_ || function_masked_) return out;
    const uint64_t first = offset / msix::kEntrySize;
    const uint64_t last = (offset + size - 1) / msix::kEntrySize;
    for (uint64_t v = first; v <= last; ++v) {
        const auto vec = static_cast<unsigned>(v);
        if (!entries_[vec].masked && pending(vec)) {
            clear_pending(vec);
            out.push_back({entries_[vec].address, entries_[vec].data});
        }
    }
    return out;
}

uint64_t MsixTable::read_pba(uint64_t offset, unsigned size) const {
    if (size < 1 || size > 8 || offset >= pba_bytes() || size > pba_bytes() - offset)
        return size >= 8 || size == 0 ? ~0ull : (1ull << (8 * size)) - 1;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) {
        const uint64_t at = offset + i;
        v |= uint64_t{byte_of(pba_[at / 8], at % 8)} << (8 * i);
    }
    return v;
}

std::vector<MsiMessage> MsixTable::set_control(bool enabled, bool function_masked) {
    enabled_ = enabled;
    function_masked_ = function_masked;
    if (!enabled_ || function_masked_) return {};
    return deliver_pending();
}

std::vector<MsiMessage> MsixTable::deliver_pending() {
    std::vector<MsiMessage> out;
    for (unsigned v = 0; v < vectors(); ++v) {
        if (entries_[v].masked || !pending(v)) continue;
        clear_pending(v);
        out.push_back({entries_[v].address, entries_[v].data});
    }
    return out;
}

std::optional<MsiMessage> MsixTable::signal(unsigned vector) {
    if (vector >= vectors() || !enabled_) return std::nullopt;
    const Entry& e = entries_[vector];
    if (function_masked_ || e.masked) {
        pba_[vector / 64] |= 1ull << (vector % 64);
        return std::nullopt;
    }
    return MsiMessage{e.address, e.data};
}

void MsixTable::clear_pending(unsigned vector) {
    if (vector < vectors()) pba_[vector / 64] &= ~(1ull << (vector % 64));
}

bool MsixTable::pending(unsigned vector) const {
    return vector < vectors() && (pba_[vector / 64] >> (vector % 64)) & 1;
}

std::optional<MsixTable::Entry> MsixTable::entry(unsigned vector) const {
    if (vector >= vectors()) return std::nullopt;
    return entries_[vector];
}

}  // namespace potemkin::pci
