// vfio-user wire format: the message header, command numbers and every payload this project
// sends or accepts, as plain structs with encode/decode functions. Shared by the client
// transport (hostdev/vfio_user_client) and the device server (sdk/vfio_user_server).
//
// Source of truth: ../shared/protocols/vfio-user.md (protocol 0.2 as libvfio-user speaks it;
// QEMU docs/interop/vfio-user.rst). Section numbers below (§n) refer to those notes.
//
// Conventions:
// - Integers are host-endian (little-endian in practice); structs are packed on the wire. The
//   C++ structs here are NOT the wire images: encode_* writes the exact bytes, decode_* reads
//   them with bounds checks, so no struct is ever reinterpret_cast over a buffer.
// - decode_* validates everything that can be checked from the bytes alone (sizes, flag bits,
//   argsz) and fails with an Error whose message names the command and the field
//   ("REGION_READ: count 1048577 exceeds max_data_xfer_size 1048576") and whose sys_errno is
//   the errno a server replies with (EINVAL unless noted). Checks that need device state
//   (region sizes, irq counts, fd counts) are separate helpers or the server's.
// - Payload = the bytes after the 16-byte header.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace potemkin::vfio_user {

// ---- Limits (§15) ----------------------------------------------------------------------------
inline constexpr uint16_t kMajor = 0;
inline constexpr uint16_t kMinor = 2;
inline constexpr uint32_t kHeaderSize = 16;
inline constexpr uint32_t kDefaultMaxDataXferSize = 1u << 20;  // 1 MiB, also the server's
// 1 MiB of data + header + region_access: the largest message a server accepts.
inline constexpr uint32_t kServerMaxMsgSize = kDefaultMaxDataXferSize + 16 + 16;
inline constexpr uint32_t kDefaultMaxMsgFds = 1;                  // a peer that does not say
inline constexpr uint32_t kServerMaxMsgFds = 8;                   // what our server advertises
inline constexpr uint32_t kMaxMsgFdsLimit = 1024;                 // the most a peer may advertise
inline constexpr uint64_t kMaxDmaRegionSize = uint64_t{8} << 40;  // 8 TiB

// ---- Commands (§3) ---------------------------------------------------------------------------
enum class Command : uint16_t {
    version = 1,
    dma_map = 2,
    dma_unmap = 3,
    device_get_info = 4,
    device_get_region_info = 5,
    device_get_region_io_fds = 6,
    device_get_irq_info = 7,
    device_set_irqs = 8,
    region_read = 9,
    region_write = 10,
    dma_read = 11,
    dma_write = 12,
    device_reset = 13,
    // 14 was DIRTY_PAGES (removed); 15 REGION_WRITE_MULTI is defined but not implemented.
    region_write_multi = 15,
    device_feature = 16,
    mig_data_read = 17,
    mig_data_write = 18,
};
// "REGION_READ", or "cmd 42" for numbers not in the enum.
std::string command_name(uint16_t cmd);
inline std::string command_name(Command cmd) {
    return command_name(static_cast<uint16_t>(cmd));
}

// ---- Header (§2) -----------------------------------------------------------------------------
inline constexpr uint32_t kFlagTypeMask = 0xf;
inline constexpr uint32_t kTypeCommand = 0;
inline constexpr uint32_t kTypeReply = 1;
inline constexpr uint32_t kFlagNoReply = 0x10;
inline constexpr uint32_t kFlagError = 0x20;

struct Header {
    uint16_t msg_id = 0;
    uint16_t cmd = 0;
    uint32_t msg_size = kHeaderSize;  // including the header
    uint32_t flags = kTypeCommand;
    uint32_t error_no = 0;

    uint32_t type() const { return flags & kFlagTypeMask; }
    bool is_command() const { return type() == kTypeCommand; }
    bool is_reply() const { return type() == kTypeReply; }
    bool no_reply() const { return (flags & kFlagNoReply) != 0; }
    bool is_error() const { return (flags & kFlagError) != 0; }
    uint32_t payload_size() const { return msg_size >= kHeaderSize ? msg_size - kHeaderSize : 0; }
};

std::array<uint8_t, kHeaderSize> encode_header(const Header& h);
Header decode_header(std::span<const uint8_t, kHeaderSize> bytes);

// A reply header for `request`: same msg_id and cmd, type reply, msg_size for `payload_size`.
Header reply_header(const Header& request, uint32_t payload_size = 0);
// An error reply header: flags reply|ERROR (0x21), error_no = `error_no`, no payload.
Header error_reply_header(const Header& request, int error_no);

// Framing checks on a received request header (§2): msg_size < 16 or > max_msg_size. Failing
// these means the stream cannot be trusted: close the connection (sys_errno EPROTO).
Result<void> check_framing(const Header& h, uint32_t max_msg_size);
// Request-level checks (§2): type must be command; a payload is required except for
// DEVICE_RESET. Failing these gets an EINVAL error reply.
Result<void> check_request(const Header& h);
// Reply-level checks on what a peer sent back for `request`: type reply, same msg_id and cmd.
// An ERROR reply becomes an Error carrying the peer's errno (values outside 1..4096 →
// EINVAL, as libvfio-user's client does).
Result<void> check_reply(const Header& request, const Header& reply);

// ---- VERSION (§4) ----------------------------------------------------------------------------
struct Capabilities {
    uint32_t max_msg_fds = kDefaultMaxMsgFds;
    uint32_t max_data_xfer_size = kDefaultMaxDataXferSize;
    // QEMU's spec: supported IOMMU page sizes (a bitmap of sizes) and DMA map count limit.
    std::optional<uint64_t> pgsizes;
    std::optional<uint32_t> max_dma_maps;
    std::optional<uint64_t> migration_pgsize;  // "migration": {"pgsize": N}
    // "twin_socket": {"supported": true, "fd_index": N} (spec, VERSION): the client offers it
    // with supported; the server's reply adds the index of the socket in its fds.
    bool twin_socket_supported = false;
    std::optional<uint32_t> twin_socket_fd_index;  // reply only
    // "write_multiple": B (QEMU's spec: the client sends REGION_WRITE_MULTI). Kept because
    // QEMU's client is the only one known to send it, which tells a server that the client
    // lays DMA_READ/DMA_WRITE out as QEMU does (DmaLayout::qemu).
    std::optional<bool> write_multiple;
    // "potemkin": {"fast_path": {"version": 1[, "fd_index": N]}}: potemkin's shared-memory
    // fast path (vfio_user/fast_path.hpp, docs/fast-path.md). The client offers the version
    // it speaks; a server that takes it answers with the same version and the index of the
    // area memfd among its fds (the kick and answer eventfds follow it). Any other shape, or
    // another version, is treated as not offered: a peer that does not know it never sees it.
    std::optional<uint32_t> fast_path_version;
    std::optional<uint32_t> fast_path_fd_index;  // reply only
};

struct Version {
    uint16_t major = kMajor;
    uint16_t minor = kMinor;
    // Absent JSON (a 4-byte payload) leaves the defaults.
    Capabilities caps;
    bool has_json = true;  // encode: append the JSON string (with its NUL)
};

// The JSON object `{"capabilities":{...}}` (optional fields only when set).
std::string capabilities_json(const Capabilities& caps);
// Unknown keys are ignored; a known integer field holding a non-integer, out-of-range values
// (max_msg_fds > 1024, max_data_xfer_size 0) or malformed JSON → EINVAL naming the field.
Result<Capabilities> parse_capabilities_json(std::string_view json);

std::vector<uint8_t> encode_version(const Version& v);
// Payload: u16 major, u16 minor, optional NUL-terminated JSON. Does not judge the major.
Result<Version> decode_version(std::span<const uint8_t> payload);
// major != kMajor → error "incompatible vfio-user version 1.0 (this side speaks 0.2)".
Result<void> check_version_compatible(const Version& peer);

// ---- DMA_MAP / DMA_UNMAP (§5) ----------------------------------------------------------------
inline constexpr uint32_t kDmaMapFlagRead = 1;
inline constexpr uint32_t kDmaMapFlagWrite = 2;
inline constexpr uint32_t kDmaMapFlagMmap = 4;
inline constexpr uint32_t kDmaMapFlagFileIo = 8;
inline constexpr uint32_t kDmaMapSize = 32;

struct DmaMap {
    uint32_t argsz = kDmaMapSize;
    uint32_t flags = kDmaMapFlagRead | kDmaMapFlagWrite;
    uint64_t offset = 0;  // into the fd
    uint64_t addr = 0;    // IOVA (guest-physical for us)
    uint64_t size = 0;
};
std::vector<uint8_t> encode_dma_map(const DmaMap& m);
// argsz >= 32, unknown flag bits, size 0, addr + size overflow, size > 8 TiB.
Result<DmaMap> decode_dma_map(std::span<const uint8_t> payload);

inline constexpr uint32_t kDmaUnmapFlagGetDirtyBitmap = 1;
inline constexpr uint32_t kDmaUnmapFlagAll = 2;
inline constexpr uint32_t kDmaUnmapSize = 24;

struct DmaUnmap {
    uint32_t argsz = kDmaUnmapSize;
    uint32_t flags = 0;
    uint64_t addr = 0;
    uint64_t size = 0;
};
std::vector<uint8_t> encode_dma_unmap(const DmaUnmap& u);
// argsz >= 24 and <= 1 MiB, unknown flags, UNMAP_ALL needs addr = size = 0. GET_DIRTY_BITMAP
// decodes (the bitmap header is not returned) but our server does not support it.
Result<DmaUnmap> decode_dma_unmap(std::span<const uint8_t> payload);

// ---- DEVICE_GET_INFO (§6) --------------------------------------------------------------------
inline constexpr uint32_t kDeviceFlagReset = 1;
inline constexpr uint32_t kDeviceFlagPci = 2;
inline constexpr uint32_t kDeviceInfoSize = 16;
inline constexpr uint32_t kPciNumRegions = 9;  // BAR0-5, ROM 6, CONFIG 7, VGA 8
inline constexpr uint32_t kPciNumIrqs = 5;     // INTX, MSI, MSIX, ERR, REQ

inline constexpr uint32_t kRegionBar0 = 0;
inline constexpr uint32_t kRegionRom = 6;
inline constexpr uint32_t kRegionConfig = 7;
inline constexpr uint32_t kRegionVga = 8;

struct DeviceInfo {
    uint32_t argsz = kDeviceInfoSize;
    uint32_t flags = 0;
    uint32_t num_regions = 0;
    uint32_t num_irqs = 0;
};
std::vector<uint8_t> encode_device_info(const DeviceInfo& d);
// Request and reply share the layout; argsz >= 16.
Result<DeviceInfo> decode_device_info(std::span<const uint8_t> payload);

// ---- DEVICE_GET_REGION_INFO (§7) -------------------------------------------------------------
inline constexpr uint32_t kRegionFlagRead = 1;
inline constexpr uint32_t kRegionFlagWrite = 2;
inline constexpr uint32_t kRegionFlagMmap = 4;
inline constexpr uint32_t kRegionFlagCaps = 8;
inline constexpr uint32_t kRegionInfoSize = 32;
inline constexpr uint16_t kCapSparseMmap = 1;  // VFIO_REGION_INFO_CAP_SPARSE_MMAP
inline constexpr uint16_t kCapType = 2;        // VFIO_REGION_INFO_CAP_TYPE

struct SparseArea {
    uint64_t offset = 0;  // within the region
    uint64_t size = 0;
    bool operator==(const SparseArea&) const = default;
};
struct RegionType {
    uint32_t type = 0;
    uint32_t subtype = 0;
    bool operator==(const RegionType&) const = default;
};

struct RegionInfo {
    uint32_t argsz = kRegionInfoSize;  // request: the buffer size; reply: the size needed
    uint32_t flags = 0;
    uint32_t index = 0;
    uint32_t cap_offset = 0;
    uint64_t size = 0;
    uint64_t offset = 0;  // file offset of the region in its fd
    // Capabilities (reply only): decoded from the chain, encoded after the struct.
    std::optional<std::vector<SparseArea>> sparse_mmap;
    std::optional<RegionType> type;
};
// A request: only argsz and index matter.
std::vector<uint8_t> encode_region_info_request(uint32_t index, uint32_t argsz);
Result<RegionInfo> decode_region_info_request(std::span<const uint8_t> payload);
// The size of the caps chain `info` carries (0 without caps).
uint32_t region_info_caps_size(const RegionInfo& info);
// A reply to a request whose argsz was `request_argsz` (§7): argsz = 32 + caps size; the
// payload is min(that, request_argsz) bytes; when the caps fit, flags |= CAPS and
// cap_offset = 32, otherwise both are cleared and the caps are left out. `fits` (optional out)
// tells which, so the server attaches the region fd only then.
std::vector<uint8_t> encode_region_info_reply(const RegionInfo& info, uint32_t request_argsz,
                                              bool* fits = nullptr);
// Walks the capability chain with bounds and loop checks; unknown cap ids are skipped.
Result<RegionInfo> decode_region_info_reply(std::span<const uint8_t> payload);

// ---- DEVICE_GET_REGION_IO_FDS (§8) -----------------------------------------------------------
inline constexpr uint32_t kRegionIoFdsSize = 16;
struct RegionIoFds {
    uint32_t argsz = kRegionIoFdsSize;
    uint32_t flags = 0;
    uint32_t index = 0;
    uint32_t count = 0;
};
std::vector<uint8_t> encode_region_io_fds(const RegionIoFds& r);
// Request: argsz >= 16, flags 0, count 0.
Result<RegionIoFds> decode_region_io_fds_request(std::span<const uint8_t> payload);

// The reply's sub-regions, ioeventfd form (40 bytes each, libvfio-user's
// vfio_user_sub_region_ioeventfd): a guest write of `size` bytes (0: any size) at `offset` in the
// region, with `datamatch` equal to the value written when flags has DATAMATCH, becomes a write
// to the eventfd sent as fd `fd_index` of the reply.
inline constexpr uint32_t kIoFdTypeIoeventfd = 0;
inline constexpr uint32_t kIoFdTypeIoregionfd = 1;
inline constexpr uint32_t kIoeventfdFlagDatamatch = 1;  // KVM_IOEVENTFD_FLAG_DATAMATCH
inline constexpr uint32_t kIoeventfdFlagPio = 2;        // KVM_IOEVENTFD_FLAG_PIO
inline constexpr uint32_t kSubRegionIoFdSize = 40;
struct SubRegionIoFd {
    uint64_t offset = 0;
    uint64_t size = 0;
    uint32_t fd_index = 0;
    uint32_t type = kIoFdTypeIoeventfd;
    uint32_t flags = 0;
    uint64_t datamatch = 0;  // ioregionfd: user_data
    bool operator==(const SubRegionIoFd&) const = default;
};
struct RegionIoFdsReply {
    RegionIoFds head;                    // argsz: the size needed for every entry
    std::vector<SubRegionIoFd> entries;  // empty when they did not fit the request's argsz
};
// A reply for `index` to a request whose argsz was `request_argsz`: argsz = 16 + 40 * count;
// the entries only when that fits (`fits` says so; attach the fds only then), else the head
// alone with the count.
std::vector<uint8_t> encode_region_io_fds_reply(uint32_t index,
                                                std::span<const SubRegionIoFd> entries,
                                                uint32_t request_argsz, bool* fits = nullptr);
// The entry stride is (argsz - 16) / count, at least 40 (the spec's rule: entries may grow).
Result<RegionIoFdsReply> decode_region_io_fds_reply(std::span<const uint8_t> payload);

// ---- DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS (§9) ----------------------------------------------
inline constexpr uint32_t kIrqIndexIntx = 0;
inline constexpr uint32_t kIrqIndexMsi = 1;
inline constexpr uint32_t kIrqIndexMsix = 2;
inline constexpr uint32_t kIrqIndexErr = 3;
inline constexpr uint32_t kIrqIndexReq = 4;
inline constexpr uint32_t kIrqInfoFlagEventfd = 1;
inline constexpr uint32_t kIrqInfoFlagMaskable = 2;
inline constexpr uint32_t kIrqInfoFlagAutomasked = 4;
inline constexpr uint32_t kIrqInfoFlagNoresize = 8;
inline constexpr uint32_t kIrqInfoSize = 16;

struct IrqInfo {
    uint32_t argsz = kIrqInfoSize;
    uint32_t flags = 0;
    uint32_t index = 0;
    uint32_t count = 0;
};
std::vector<uint8_t> encode_irq_info(const IrqInfo& i);
// Request and reply share the layout; argsz >= 16; index < 5 (EINVAL otherwise).
Result<IrqInfo> decode_irq_info(std::span<const uint8_t> payload);

inline constexpr uint32_t kIrqSetDataNone = 1;
inline constexpr uint32_t kIrqSetDataBool = 2;
inline constexpr uint32_t kIrqSetDataEventfd = 4;
inline constexpr uint32_t kIrqSetActionMask = 8;
inline constexpr uint32_t kIrqSetActionUnmask = 0x10;
inline constexpr uint32_t kIrqSetActionTrigger = 0x20;
inline constexpr uint32_t kIrqSetDataMask = 7;
inline constexpr uint32_t kIrqSetActionMaskBits = 0x38;
inline constexpr uint32_t kIrqSetSize = 20;

struct IrqSet {
    uint32_t argsz = kIrqSetSize;
    uint32_t flags = 0;
    uint32_t index = 0;
    uint32_t start = 0;
    uint32_t count = 0;
    std::vector<uint8_t> bools;  // DATA_BOOL: count bytes; otherwise empty

    uint32_t data() const { return flags & kIrqSetDataMask; }
    uint32_t action() const { return flags & kIrqSetActionMaskBits; }
};
// argsz is computed (20 + bools.size()).
std::vector<uint8_t> encode_irq_set(const IrqSet& s);
// Exactly one DATA and one ACTION flag, no other bits; index < 5; DATA_BOOL carries exactly
// count bytes, the others none; count == 0 needs start == 0 and TRIGGER|DATA_NONE.
Result<IrqSet> decode_irq_set(std::span<const uint8_t> payload);
// The checks that need the device and the fds (§9): start/count within `irq_count`; ERR and
// REQ take TRIGGER only and count <= 1; fds only with DATA_EVENTFD and then exactly count
// of them (or none, which disables).
Result<void> check_irq_set(const IrqSet& s, uint32_t irq_count, size_t nfds);

// ---- REGION_READ / REGION_WRITE (§10), DMA_READ / DMA_WRITE (§11) ----------------------------
inline constexpr uint32_t kRegionAccessSize = 16;
inline constexpr uint32_t kDmaAccessSize = 16;

struct RegionAccess {
    uint64_t offset = 0;
    uint32_t region = 0;
    uint32_t count = 0;
    std::vector<uint8_t> data;  // write request / read reply: count bytes
};
// The 16-byte struct followed by `data` (empty for a read request and a write reply).
std::vector<uint8_t> encode_region_access(uint64_t offset, uint32_t region, uint32_t count,
                                          std::span<const uint8_t> data = {});
// `cmd` is REGION_READ or REGION_WRITE; `reply` selects which side carries data (write
// request, read reply). count <= max_data_xfer_size; data length == count.
Result<RegionAccess> decode_region_access(Command cmd, bool reply, std::span<const uint8_t> payload,
                                          uint32_t max_data_xfer_size);

// The same without allocating, for the per-access path: the struct alone (send the data as a
// second payload part), and a decode whose data is a view into `payload`.
std::array<uint8_t, kRegionAccessSize> encode_region_access_head(uint64_t offset, uint32_t region,
                                                                 uint32_t count);
struct RegionAccessView {
    uint64_t offset = 0;
    uint32_t region = 0;
    uint32_t count = 0;
    std::span<const uint8_t> data;  // points into the decoded payload
};
Result<RegionAccessView> decode_region_access_view(Command cmd, bool reply,
                                                   std::span<const uint8_t> payload,
                                                   uint32_t max_data_xfer_size);

// How a peer lays out DMA_READ/DMA_WRITE (payload offsets; the header is 16 bytes before):
// - spec: struct vfio_user_dma_region_access as the spec and libvfio-user have it: u64 addr
//   at 0, u64 count at 8, data at 16. A message carrying N data bytes is 32 + N bytes long.
// - qemu: QEMU 10.x's client (hw/vfio-user/protocol.h, VFIOUserDMARW: header, u64 offset,
//   u32 count, char data[]): u64 addr at 0, u32 count at 8, data at 12. QEMU measures messages
//   against sizeof(VFIOUserDMARW), which is 32 (the struct is padded to 8 bytes): it refuses a
//   request shorter than 32 bytes, takes a DMA_WRITE's count only if count <= msg_size - 32,
//   and replies to a DMA_READ of N bytes with msg_size N + 32, the data at payload offset 12
//   and 4 bytes after it that mean nothing. So every message is 32 + N bytes long here too:
//   u64 addr, u32 count, the N data bytes, then 4 bytes of padding (zero when we send).
//   QEMU answers a DMA_WRITE with the bare header.
enum class DmaLayout : uint8_t { spec, qemu };
// "spec", "qemu".
std::string_view dma_layout_name(DmaLayout layout);
// The bytes of a DMA_READ/DMA_WRITE message around its data, so a sender can pass the data as a
// payload part of its own (no copy): head, then the data, then tail.
struct DmaFrame {
    std::array<uint8_t, kDmaAccessSize> head_bytes{};
    uint8_t head_size = 0;
    uint8_t tail_size = 0;  // zero bytes after the data
    std::span<const uint8_t> head() const { return {head_bytes.data(), head_size}; }
    std::span<const uint8_t> tail() const;  // tail_size zero bytes
};
// The frame for `count` bytes at `addr`; the payload is always kDmaAccessSize + data bytes.
DmaFrame encode_dma_frame(DmaLayout layout, uint64_t addr, uint32_t count);

struct DmaAccess {
    uint64_t addr = 0;
    uint64_t count = 0;
    std::vector<uint8_t> data;  // DMA_WRITE request / DMA_READ reply
};
// The spec layout: the struct followed by `data`.
std::vector<uint8_t> encode_dma_access(uint64_t addr, uint64_t count,
                                       std::span<const uint8_t> data = {});
// Either layout: head, data, tail (see DmaFrame). `count` is what the count field says; a
// DMA_READ request carries no data, a DMA_WRITE request and a DMA_READ reply `count` bytes.
std::vector<uint8_t> encode_dma_access(DmaLayout layout, uint64_t addr, uint32_t count,
                                       std::span<const uint8_t> data = {});
// `cmd` is DMA_READ or DMA_WRITE; as decode_region_access; addr + count must not overflow.
// The spec layout.
Result<DmaAccess> decode_dma_access(Command cmd, bool reply, std::span<const uint8_t> payload,
                                    uint32_t max_data_xfer_size);
// Either layout. qemu: the payload is 16 bytes without data, 16 + count with (its last 4 bytes
// are padding and ignored); a DMA_WRITE reply's payload, when not empty, is the 16 bytes alone.
Result<DmaAccess> decode_dma_access(DmaLayout layout, Command cmd, bool reply,
                                    std::span<const uint8_t> payload, uint32_t max_data_xfer_size);

}  // namespace potemkin::vfio_user
