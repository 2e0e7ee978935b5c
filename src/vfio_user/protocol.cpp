#include "vfio_user/protocol.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <type_traits>

namespace potemkin::vfio_user {

namespace {

// Every decode error is EINVAL: the errno a server replies with for a malformed request.
template <typename... Args>
Unexpected<Error> invalid(fmt::format_string<Args...> f, Args&&... args) {
    return fail(fmt::format(f, std::forward<Args>(args)...), EINVAL);
}

// Little helpers over byte buffers: the wire is host-endian and packed.
class Writer {
  public:
    explicit Writer(size_t reserve = 0) { bytes_.reserve(reserve); }
    template <typename T>
    Writer& put(T v) {
        static_assert(std::is_integral_v<T>);
        const size_t at = bytes_.size();
        bytes_.resize(at + sizeof(T));
        std::memcpy(bytes_.data() + at, &v, sizeof(T));
        return *this;
    }
    Writer& put(std::span<const uint8_t> data) {
        bytes_.insert(bytes_.end(), data.begin(), data.end());
        return *this;
    }
    std::vector<uint8_t> take() { return std::move(bytes_); }

  private:
    std::vector<uint8_t> bytes_;
};

// Reads fixed-size fields; the caller checked the total length first.
class Reader {
  public:
    explicit Reader(std::span<const uint8_t> bytes, size_t at = 0) : bytes_(bytes), at_(at) {}
    template <typename T>
    T get() {
        static_assert(std::is_integral_v<T>);
        T v{};
        if (at_ + sizeof(T) <= bytes_.size()) std::memcpy(&v, bytes_.data() + at_, sizeof(T));
        at_ += sizeof(T);
        return v;
    }
    size_t position() const { return at_; }

  private:
    std::span<const uint8_t> bytes_;
    size_t at_;
};

Result<void> need(std::string_view what, std::span<const uint8_t> payload, size_t size) {
    if (payload.size() < size)
        return invalid("{}: payload of {} bytes is shorter than the {}-byte struct", what,
                       payload.size(), size);
    return ok();
}

}  // namespace

std::string command_name(uint16_t cmd) {
    switch (static_cast<Command>(cmd)) {
        case Command::version:
            return "VERSION";
        case Command::dma_map:
            return "DMA_MAP";
        case Command::dma_unmap:
            return "DMA_UNMAP";
        case Command::device_get_info:
            return "DEVICE_GET_INFO";
        case Command::device_get_region_info:
            return "DEVICE_GET_REGION_INFO";
        case Command::device_get_region_io_fds:
            return "DEVICE_GET_REGION_IO_FDS";
        case Command::device_get_irq_info:
            return "DEVICE_GET_IRQ_INFO";
        case Command::device_set_irqs:
            return "DEVICE_SET_IRQS";
        case Command::region_read:
            return "REGION_READ";
        case Command::region_write:
            return "REGION_WRITE";
        case Command::dma_read:
            return "DMA_READ";
        case Command::dma_write:
            return "DMA_WRITE";
        case Command::device_reset:
            return "DEVICE_RESET";
        case Command::region_write_multi:
            return "REGION_WRITE_MULTI";
        case Command::device_feature:
            return "DEVICE_FEATURE";
        case Command::mig_data_read:
            return "MIG_DATA_READ";
        case Command::mig_data_write:
            return "MIG_DATA_WRITE";
    }
    return fmt::format("cmd {}", cmd);
}

// ---- Header ------------------------------------------------------------------------------------

std::array<uint8_t, kHeaderSize> encode_header(const Header& h) {
    std::array<uint8_t, kHeaderSize> out{};
    uint8_t* p = out.data();
    std::memcpy(p + 0, &h.msg_id, 2);
    std::memcpy(p + 2, &h.cmd, 2);
    std::memcpy(p + 4, &h.msg_size, 4);
    std::memcpy(p + 8, &h.flags, 4);
    std::memcpy(p + 12, &h.error_no, 4);
    return out;
}

Header decode_header(std::span<const uint8_t, kHeaderSize> bytes) {
    Header h;
    const uint8_t* p = bytes.data();
    std::memcpy(&h.msg_id, p + 0, 2);
    std::memcpy(&h.cmd, p + 2, 2);
    std::memcpy(&h.msg_size, p + 4, 4);
    std::memcpy(&h.flags, p + 8, 4);
    std::memcpy(&h.error_no, p + 12, 4);
    return h;
}

Header reply_header(const Header& request, uint32_t payload_size) {
    Header h;
    h.msg_id = request.msg_id;
    h.cmd = request.cmd;
    h.msg_size = kHeaderSize + payload_size;
    h.flags = kTypeReply;
    h.error_no = 0;
    return h;
}

Header error_reply_header(const Header& request, int error_no) {
    Header h = reply_header(request, 0);
    h.flags = kTypeReply | kFlagError;
    h.error_no = static_cast<uint32_t>(error_no);
    return h;
}

Result<void> check_framing(const Header& h, uint32_t max_msg_size) {
    if (h.msg_size < kHeaderSize)
        return fail(fmt::format("{} (msg_id {}): msg_size {} is smaller than the {}-byte header",
                                command_name(h.cmd), h.msg_id, h.msg_size, kHeaderSize),
                    EPROTO);
    if (h.msg_size > max_msg_size)
        return fail(fmt::format("{} (msg_id {}): msg_size {} exceeds the maximum {}",
                                command_name(h.cmd), h.msg_id, h.msg_size, max_msg_size),
                    EPROTO);
    return ok();
}

Result<void> check_request(const Header& h) {
    if (!h.is_command())
        return invalid("{} (msg_id {}): message type {} is not a command (flags {:#x})",
                       command_name(h.cmd), h.msg_id, h.type(), h.flags);
    if (h.msg_size == kHeaderSize && h.cmd != static_cast<uint16_t>(Command::device_reset))
        return invalid("{} (msg_id {}): no payload", command_name(h.cmd), h.msg_id);
    return ok();
}

Result<void> check_reply(const Header& request, const Header& reply) {
    if (!reply.is_reply())
        return invalid("{}: expected a reply, got message type {} (flags {:#x})",
                       command_name(request.cmd), reply.type(), reply.flags);
    if (reply.msg_id != request.msg_id || reply.cmd != request.cmd)
        return invalid("{} (msg_id {}): reply is for {} msg_id {}", command_name(request.cmd),
                       request.msg_id, command_name(reply.cmd), reply.msg_id);
    if (reply.is_error()) {
        int e = (reply.error_no >= 1 && reply.error_no <= 4096) ? static_cast<int>(reply.error_no)
                                                                : EINVAL;
        return fail(
            fmt::format("{} (msg_id {}): peer replied error {} ({})", command_name(request.cmd),
                        request.msg_id, reply.error_no, std::strerror(e)),
            e);
    }
    return ok();
}

// ---- VERSION -----------------------------------------------------------------------------------

std::string capabilities_json(const Capabilities& caps) {
    nlohmann::ordered_json c = nlohmann::ordered_json::object();
    c["max_msg_fds"] = caps.max_msg_fds;
    c["max_data_xfer_size"] = caps.max_data_xfer_size;
    if (caps.pgsizes) c["pgsizes"] = *caps.pgsizes;
    if (caps.max_dma_maps) c["max_dma_maps"] = *caps.max_dma_maps;
    if (caps.migration_pgsize) c["migration"] = {{"pgsize", *caps.migration_pgsize}};
    if (caps.twin_socket_supported || caps.twin_socket_fd_index) {
        nlohmann::ordered_json t = {{"supported", caps.twin_socket_supported}};
        if (caps.twin_socket_fd_index) t["fd_index"] = *caps.twin_socket_fd_index;
        c["twin_socket"] = t;
    }
    if (caps.write_multiple) c["write_multiple"] = *caps.write_multiple;
    if (caps.fast_path_version) {
        nlohmann::ordered_json f = {{"version", *caps.fast_path_version}};
        if (caps.fast_path_fd_index) f["fd_index"] = *caps.fast_path_fd_index;
        c["potemkin"] = {{"fast_path", f}};
    }
    nlohmann::ordered_json root;
    root["capabilities"] = c;
    return root.dump();
}

namespace {

// An unsigned integer field in [lo, hi].
Result<uint64_t> json_uint(const nlohmann::json& obj, const char* name, uint64_t lo, uint64_t hi) {
    const auto& v = obj.at(name);
    if (!v.is_number_integer())
        return invalid("VERSION: capability {} is not an integer: {}", name, v.dump());
    if (v.is_number_unsigned()) {
        uint64_t u = v.get<uint64_t>();
        if (u < lo || u > hi)
            return invalid("VERSION: capability {} = {} is outside [{}, {}]", name, u, lo, hi);
        return u;
    }
    int64_t s = v.get<int64_t>();
    if (s < 0 || static_cast<uint64_t>(s) < lo || static_cast<uint64_t>(s) > hi)
        return invalid("VERSION: capability {} = {} is outside [{}, {}]", name, s, lo, hi);
    return static_cast<uint64_t>(s);
}

}  // namespace

Result<Capabilities> parse_capabilities_json(std::string_view json) {
    nlohmann::json root = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) return invalid("VERSION: malformed capabilities JSON: {}", json);
    if (!root.is_object()) return invalid("VERSION: capabilities JSON is not an object: {}", json);
    Capabilities caps;
    auto it = root.find("capabilities");
    if (it == root.end()) return caps;
    const nlohmann::json& c = *it;
    if (!c.is_object()) return invalid("VERSION: \"capabilities\" is not an object");
    if (c.contains("max_msg_fds")) {
        auto v = json_uint(c, "max_msg_fds", 0, kMaxMsgFdsLimit);
        if (!v) return fail(v.error());
        caps.max_msg_fds = static_cast<uint32_t>(*v);
    }
    if (c.contains("max_data_xfer_size")) {
        auto v = json_uint(c, "max_data_xfer_size", 1, UINT32_MAX);
        if (!v) return fail(v.error());
        caps.max_data_xfer_size = static_cast<uint32_t>(*v);
    }
    if (c.contains("pgsizes")) {
        auto v = json_uint(c, "pgsizes", 1, UINT64_MAX);
        if (!v) return fail(v.error());
        caps.pgsizes = *v;
    }
    if (c.contains("max_dma_maps")) {
        auto v = json_uint(c, "max_dma_maps", 0, UINT32_MAX);
        if (!v) return fail(v.error());
        caps.max_dma_maps = static_cast<uint32_t>(*v);
    }
    if (auto m = c.find("migration"); m != c.end()) {
        if (!m->is_object()) return invalid("VERSION: capability migration is not an object");
        if (m->contains("pgsize")) {
            auto v = json_uint(*m, "pgsize", 1, UINT64_MAX);
            if (!v) return fail(v.error());
            caps.migration_pgsize = *v;
        }
    }
    if (auto t = c.find("twin_socket"); t != c.end()) {
        if (!t->is_object()) return invalid("VERSION: capability twin_socket is not an object");
        if (auto s = t->find("supported"); s != t->end()) {
            if (!s->is_boolean())
                return invalid("VERSION: capability twin_socket.supported is not a boolean");
            caps.twin_socket_supported = s->get<bool>();
        }
        if (t->contains("fd_index")) {
            auto v = json_uint(*t, "fd_index", 0, kMaxMsgFdsLimit - 1);
            if (!v) return fail(v.error());
            caps.twin_socket_fd_index = static_cast<uint32_t>(*v);
        }
    }
    if (auto w = c.find("write_multiple"); w != c.end()) {
        if (!w->is_boolean())
            return invalid("VERSION: capability write_multiple is not a boolean: {}", w->dump());
        caps.write_multiple = w->get<bool>();
    }
    // Ours alone, so it is read leniently: anything but the exact shape means "not offered".
    if (auto p = c.find("potemkin"); p != c.end() && p->is_object()) {
        if (auto f = p->find("fast_path"); f != p->end() && f->is_object()) {
            auto v = f->find("version");
            auto i = f->find("fd_index");
            if (v != f->end() && v->is_number_unsigned() && v->get<uint64_t>() <= UINT32_MAX) {
                caps.fast_path_version = static_cast<uint32_t>(v->get<uint64_t>());
                if (i != f->end() && i->is_number_unsigned() &&
                    i->get<uint64_t>() < kMaxMsgFdsLimit)
                    caps.fast_path_fd_index = static_cast<uint32_t>(i->get<uint64_t>());
            }
        }
    }
    return caps;
}

std::vector<uint8_t> encode_version(const Version& v) {
    Writer w(64);
    w.put(v.major).put(v.minor);
    if (v.has_json) {
        std::string json = capabilities_json(v.caps);
        w.put(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(json.data()), json.size()));
        w.put(uint8_t{0});
    }
    return w.take();
}

Result<Version> decode_version(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("VERSION", payload, 4));
    Reader r(payload);
    Version v;
    v.major = r.get<uint16_t>();
    v.minor = r.get<uint16_t>();
    v.has_json = payload.size() > 4;
    if (!v.has_json) return v;
    auto json = payload.subspan(4);
    if (json.back() != 0) return invalid("VERSION: capabilities JSON is not NUL-terminated");
    std::string_view text(reinterpret_cast<const char*>(json.data()), json.size() - 1);
    if (text.find('\0') != std::string_view::npos)
        return invalid("VERSION: capabilities JSON contains a NUL byte");
    auto caps = parse_capabilities_json(text);
    if (!caps) return fail(caps.error());
    v.caps = *caps;
    return v;
}

Result<void> check_version_compatible(const Version& peer) {
    if (peer.major != kMajor)
        return invalid("incompatible vfio-user version {}.{} (this side speaks {}.{})", peer.major,
                       peer.minor, kMajor, kMinor);
    return ok();
}

// ---- DMA_MAP / DMA_UNMAP -----------------------------------------------------------------------

std::vector<uint8_t> encode_dma_map(const DmaMap& m) {
    Writer w(kDmaMapSize);
    w.put(m.argsz).put(m.flags).put(m.offset).put(m.addr).put(m.size);
    return w.take();
}

Result<DmaMap> decode_dma_map(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DMA_MAP", payload, kDmaMapSize));
    Reader r(payload);
    DmaMap m;
    m.argsz = r.get<uint32_t>();
    m.flags = r.get<uint32_t>();
    m.offset = r.get<uint64_t>();
    m.addr = r.get<uint64_t>();
    m.size = r.get<uint64_t>();
    if (m.argsz < kDmaMapSize) return invalid("DMA_MAP: argsz {} is less than 32", m.argsz);
    if (payload.size() != kDmaMapSize)
        return invalid("DMA_MAP: payload of {} bytes, expected 32", payload.size());
    constexpr uint32_t known =
        kDmaMapFlagRead | kDmaMapFlagWrite | kDmaMapFlagMmap | kDmaMapFlagFileIo;
    if ((m.flags & ~known) != 0)
        return invalid("DMA_MAP: flags {:#x} has unknown bits {:#x}", m.flags, m.flags & ~known);
    if (m.size == 0) return invalid("DMA_MAP: size is 0");
    if (m.size > kMaxDmaRegionSize)
        return invalid("DMA_MAP: size {:#x} exceeds the maximum region size {:#x}", m.size,
                       kMaxDmaRegionSize);
    if (m.addr + m.size < m.addr)
        return invalid("DMA_MAP: addr {:#x} + size {:#x} overflows", m.addr, m.size);
    if (m.offset + m.size < m.offset)
        return invalid("DMA_MAP: offset {:#x} + size {:#x} overflows", m.offset, m.size);
    return m;
}

std::vector<uint8_t> encode_dma_unmap(const DmaUnmap& u) {
    Writer w(kDmaUnmapSize);
    w.put(u.argsz).put(u.flags).put(u.addr).put(u.size);
    return w.take();
}

Result<DmaUnmap> decode_dma_unmap(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DMA_UNMAP", payload, kDmaUnmapSize));
    Reader r(payload);
    DmaUnmap u;
    u.argsz = r.get<uint32_t>();
    u.flags = r.get<uint32_t>();
    u.addr = r.get<uint64_t>();
    u.size = r.get<uint64_t>();
    if (u.argsz < kDmaUnmapSize) return invalid("DMA_UNMAP: argsz {} is less than 24", u.argsz);
    if (u.argsz > kDefaultMaxDataXferSize)
        return invalid("DMA_UNMAP: argsz {} exceeds 1 MiB", u.argsz);
    constexpr uint32_t known = kDmaUnmapFlagGetDirtyBitmap | kDmaUnmapFlagAll;
    if ((u.flags & ~known) != 0)
        return invalid("DMA_UNMAP: flags {:#x} has unknown bits {:#x}", u.flags, u.flags & ~known);
    if ((u.flags & kDmaUnmapFlagAll) != 0 && (u.addr != 0 || u.size != 0))
        return invalid("DMA_UNMAP: UNMAP_ALL needs addr and size 0 (got {:#x}, {:#x})", u.addr,
                       u.size);
    if ((u.flags & kDmaUnmapFlagGetDirtyBitmap) != 0 && u.argsz < kDmaUnmapSize + 16)
        return invalid("DMA_UNMAP: GET_DIRTY_BITMAP needs argsz >= 40, got {}", u.argsz);
    if ((u.flags & kDmaUnmapFlagAll) == 0 && u.addr + u.size < u.addr)
        return invalid("DMA_UNMAP: addr {:#x} + size {:#x} overflows", u.addr, u.size);
    return u;
}

// ---- DEVICE_GET_INFO ---------------------------------------------------------------------------

std::vector<uint8_t> encode_device_info(const DeviceInfo& d) {
    Writer w(kDeviceInfoSize);
    w.put(d.argsz).put(d.flags).put(d.num_regions).put(d.num_irqs);
    return w.take();
}

Result<DeviceInfo> decode_device_info(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_GET_INFO", payload, kDeviceInfoSize));
    Reader r(payload);
    DeviceInfo d;
    d.argsz = r.get<uint32_t>();
    d.flags = r.get<uint32_t>();
    d.num_regions = r.get<uint32_t>();
    d.num_irqs = r.get<uint32_t>();
    if (d.argsz < kDeviceInfoSize)
        return invalid("DEVICE_GET_INFO: argsz {} is less than 16", d.argsz);
    return d;
}

// ---- DEVICE_GET_REGION_INFO --------------------------------------------------------------------

std::vector<uint8_t> encode_region_info_request(uint32_t index, uint32_t argsz) {
    Writer w(kRegionInfoSize);
    w.put(argsz).put(uint32_t{0}).put(index).put(uint32_t{0}).put(uint64_t{0}).put(uint64_t{0});
    return w.take();
}

Result<RegionInfo> decode_region_info_request(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_GET_REGION_INFO", payload, kRegionInfoSize));
    Reader r(payload);
    RegionInfo i;
    i.argsz = r.get<uint32_t>();
    i.flags = r.get<uint32_t>();
    i.index = r.get<uint32_t>();
    i.cap_offset = r.get<uint32_t>();
    i.size = r.get<uint64_t>();
    i.offset = r.get<uint64_t>();
    if (i.argsz < kRegionInfoSize)
        return invalid("DEVICE_GET_REGION_INFO: argsz {} is less than 32", i.argsz);
    return i;
}

uint32_t region_info_caps_size(const RegionInfo& info) {
    uint32_t size = 0;
    if (info.sparse_mmap) size += 16 + 16 * static_cast<uint32_t>(info.sparse_mmap->size());
    if (info.type) size += 16;
    return size;
}

std::vector<uint8_t> encode_region_info_reply(const RegionInfo& info, uint32_t request_argsz,
                                              bool* fits) {
    const uint32_t caps = region_info_caps_size(info);
    const uint32_t needed = kRegionInfoSize + caps;
    const bool caps_fit = caps > 0 && request_argsz >= needed;
    if (fits != nullptr) *fits = caps_fit;
    uint32_t flags = info.flags & ~kRegionFlagCaps;
    if (caps_fit) flags |= kRegionFlagCaps;
    Writer w(needed);
    w.put(needed).put(flags).put(info.index).put(caps_fit ? kRegionInfoSize : uint32_t{0});
    w.put(info.size).put(info.offset);
    if (caps_fit) {
        // The chain: each header's `next` is relative to the start of vfio_region_info (§7).
        uint32_t at = kRegionInfoSize;
        if (info.sparse_mmap) {
            const uint32_t len = 16 + 16 * static_cast<uint32_t>(info.sparse_mmap->size());
            const uint32_t next = info.type ? at + len : 0;
            w.put(kCapSparseMmap).put(uint16_t{1}).put(next);
            w.put(static_cast<uint32_t>(info.sparse_mmap->size())).put(uint32_t{0});
            for (const SparseArea& a : *info.sparse_mmap) w.put(a.offset).put(a.size);
            at += len;
        }
        if (info.type) {
            w.put(kCapType).put(uint16_t{1}).put(uint32_t{0});
            w.put(info.type->type).put(info.type->subtype);
        }
    }
    std::vector<uint8_t> out = w.take();
    if (out.size() > request_argsz && request_argsz >= kRegionInfoSize) out.resize(request_argsz);
    return out;
}

Result<RegionInfo> decode_region_info_reply(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_GET_REGION_INFO reply", payload, kRegionInfoSize));
    Reader r(payload);
    RegionInfo i;
    i.argsz = r.get<uint32_t>();
    i.flags = r.get<uint32_t>();
    i.index = r.get<uint32_t>();
    i.cap_offset = r.get<uint32_t>();
    i.size = r.get<uint64_t>();
    i.offset = r.get<uint64_t>();
    if ((i.flags & kRegionFlagCaps) == 0 || i.cap_offset == 0) return i;
    uint32_t at = i.cap_offset;
    // A chain of at most payload/8 caps, each strictly after the previous: no loops.
    uint32_t prev_end = kRegionInfoSize;
    while (at != 0) {
        if (at < prev_end || at > payload.size() || payload.size() - at < 8)
            return invalid(
                "DEVICE_GET_REGION_INFO reply: capability at offset {} is outside "
                "the {}-byte payload or overlaps the previous one",
                at, payload.size());
        Reader c(payload, at);
        const uint16_t id = c.get<uint16_t>();
        const uint16_t version = c.get<uint16_t>();
        const uint32_t next = c.get<uint32_t>();
        (void)version;
        if (id == kCapSparseMmap) {
            if (payload.size() - at < 16)
                return invalid("DEVICE_GET_REGION_INFO reply: sparse mmap cap at {} truncated", at);
            const uint32_t nr = c.get<uint32_t>();
            c.get<uint32_t>();
            if ((payload.size() - at - 16) / 16 < nr)
                return invalid(
                    "DEVICE_GET_REGION_INFO reply: sparse mmap nr_areas {} does not "
                    "fit in the payload",
                    nr);
            std::vector<SparseArea> areas(nr);
            for (auto& a : areas) {
                a.offset = c.get<uint64_t>();
                a.size = c.get<uint64_t>();
            }
            i.sparse_mmap = std::move(areas);
            prev_end = at + 16 + 16 * nr;
        } else if (id == kCapType) {
            if (payload.size() - at < 16)
                return invalid("DEVICE_GET_REGION_INFO reply: type cap at {} truncated", at);
            RegionType t;
            t.type = c.get<uint32_t>();
            t.subtype = c.get<uint32_t>();
            i.type = t;
            prev_end = at + 16;
        } else {
            prev_end = at + 8;  // unknown: skipped
        }
        at = next;
    }
    return i;
}

// ---- DEVICE_GET_REGION_IO_FDS ------------------------------------------------------------------

std::vector<uint8_t> encode_region_io_fds(const RegionIoFds& x) {
    Writer w(kRegionIoFdsSize);
    w.put(x.argsz).put(x.flags).put(x.index).put(x.count);
    return w.take();
}

Result<RegionIoFds> decode_region_io_fds_request(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_GET_REGION_IO_FDS", payload, kRegionIoFdsSize));
    Reader r(payload);
    RegionIoFds x;
    x.argsz = r.get<uint32_t>();
    x.flags = r.get<uint32_t>();
    x.index = r.get<uint32_t>();
    x.count = r.get<uint32_t>();
    if (x.argsz < kRegionIoFdsSize)
        return invalid("DEVICE_GET_REGION_IO_FDS: argsz {} is less than 16", x.argsz);
    if (x.flags != 0) return invalid("DEVICE_GET_REGION_IO_FDS: flags {:#x} must be 0", x.flags);
    if (x.count != 0) return invalid("DEVICE_GET_REGION_IO_FDS: count {} must be 0", x.count);
    return x;
}

std::vector<uint8_t> encode_region_io_fds_reply(uint32_t index,
                                                std::span<const SubRegionIoFd> entries,
                                                uint32_t request_argsz, bool* fits) {
    const auto needed =
        static_cast<uint32_t>(kRegionIoFdsSize + kSubRegionIoFdSize * entries.size());
    const bool all = request_argsz >= needed;
    if (fits != nullptr) *fits = all;
    Writer w(all ? needed : kRegionIoFdsSize);
    w.put(needed).put(uint32_t{0}).put(index).put(static_cast<uint32_t>(entries.size()));
    if (!all) return w.take();
    for (const auto& e : entries) {
        w.put(e.offset).put(e.size).put(e.fd_index).put(e.type).put(e.flags).put(uint32_t{0});
        w.put(e.datamatch);
    }
    return w.take();
}

Result<RegionIoFdsReply> decode_region_io_fds_reply(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_GET_REGION_IO_FDS reply", payload, kRegionIoFdsSize));
    Reader r(payload);
    RegionIoFdsReply out;
    out.head.argsz = r.get<uint32_t>();
    out.head.flags = r.get<uint32_t>();
    out.head.index = r.get<uint32_t>();
    out.head.count = r.get<uint32_t>();
    const size_t body = payload.size() - kRegionIoFdsSize;
    if (body == 0 || out.head.count == 0) return out;  // no entries, or they did not fit
    const size_t stride = body / out.head.count;
    if (stride < kSubRegionIoFdSize)
        return invalid("DEVICE_GET_REGION_IO_FDS reply: {} bytes for {} entries of at least {}",
                       body, out.head.count, kSubRegionIoFdSize);
    out.entries.reserve(out.head.count);
    for (uint32_t i = 0; i < out.head.count; ++i) {
        Reader e(payload.subspan(kRegionIoFdsSize + i * stride, kSubRegionIoFdSize));
        SubRegionIoFd s;
        s.offset = e.get<uint64_t>();
        s.size = e.get<uint64_t>();
        s.fd_index = e.get<uint32_t>();
        s.type = e.get<uint32_t>();
        s.flags = e.get<uint32_t>();
        (void)e.get<uint32_t>();  // padding
        s.datamatch = e.get<uint64_t>();
        out.entries.push_back(s);
    }
    return out;
}

// ---- DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS -----------------------------------------------------

std::vector<uint8_t> encode_irq_info(const IrqInfo& i) {
    Writer w(kIrqInfoSize);
    w.put(i.argsz).put(i.flags).put(i.index).put(i.count);
    return w.take();
}

Result<IrqInfo> decode_irq_info(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_GET_IRQ_INFO", payload, kIrqInfoSize));
    Reader r(payload);
    IrqInfo i;
    i.argsz = r.get<uint32_t>();
    i.flags = r.get<uint32_t>();
    i.index = r.get<uint32_t>();
    i.count = r.get<uint32_t>();
    if (i.argsz < kIrqInfoSize)
        return invalid("DEVICE_GET_IRQ_INFO: argsz {} is less than 16", i.argsz);
    if (i.index >= kPciNumIrqs)
        return invalid("DEVICE_GET_IRQ_INFO: index {} is not an irq index (< {})", i.index,
                       kPciNumIrqs);
    return i;
}

std::vector<uint8_t> encode_irq_set(const IrqSet& s) {
    Writer w(kIrqSetSize + s.bools.size());
    w.put(static_cast<uint32_t>(kIrqSetSize + s.bools.size()));
    w.put(s.flags).put(s.index).put(s.start).put(s.count);
    w.put(std::span<const uint8_t>(s.bools));
    return w.take();
}

Result<IrqSet> decode_irq_set(std::span<const uint8_t> payload) {
    POTEMKIN_TRY(need("DEVICE_SET_IRQS", payload, kIrqSetSize));
    Reader r(payload);
    IrqSet s;
    s.argsz = r.get<uint32_t>();
    s.flags = r.get<uint32_t>();
    s.index = r.get<uint32_t>();
    s.start = r.get<uint32_t>();
    s.count = r.get<uint32_t>();
    if (s.argsz < kIrqSetSize) return invalid("DEVICE_SET_IRQS: argsz {} is less than 20", s.argsz);
    if ((s.flags & ~(kIrqSetDataMask | kIrqSetActionMaskBits)) != 0)
        return invalid("DEVICE_SET_IRQS: flags {:#x} has unknown bits", s.flags);
    const uint32_t data = s.data();
    const uint32_t action = s.action();
    if (data != kIrqSetDataNone && data != kIrqSetDataBool && data != kIrqSetDataEventfd)
        return invalid("DEVICE_SET_IRQS: flags {:#x} must have exactly one DATA bit", s.flags);
    if (action != kIrqSetActionMask && action != kIrqSetActionUnmask &&
        action != kIrqSetActionTrigger)
        return invalid("DEVICE_SET_IRQS: flags {:#x} must have exactly one ACTION bit", s.flags);
    if (s.index >= kPciNumIrqs)
        return invalid("DEVICE_SET_IRQS: index {} is not an irq index (< {})", s.index,
                       kPciNumIrqs);
    const size_t extra = payload.size() - kIrqSetSize;
    if (data == kIrqSetDataBool) {
        if (extra != s.count)
            return invalid("DEVICE_SET_IRQS: DATA_BOOL needs count {} bytes of data, got {}",
                           s.count, extra);
        s.bools.assign(payload.begin() + kIrqSetSize, payload.end());
    } else if (extra != 0) {
        return invalid("DEVICE_SET_IRQS: {} unexpected data bytes after the struct", extra);
    }
    if (s.count == 0 && (s.start != 0 || action != kIrqSetActionTrigger || data != kIrqSetDataNone))
        return invalid(
            "DEVICE_SET_IRQS: count 0 needs start 0 and TRIGGER|DATA_NONE (start {}, "
            "flags {:#x})",
            s.start, s.flags);
    return s;
}

Result<void> check_irq_set(const IrqSet& s, uint32_t irq_count, size_t nfds) {
    if (s.index == kIrqIndexErr || s.index == kIrqIndexReq) {
        if (s.action() != kIrqSetActionTrigger)
            return invalid("DEVICE_SET_IRQS: index {} takes ACTION_TRIGGER only", s.index);
        if (s.count > 1) return invalid("DEVICE_SET_IRQS: index {} count {} > 1", s.index, s.count);
    }
    if (s.count != 0 && (s.start >= irq_count || s.count > irq_count - s.start))
        return invalid("DEVICE_SET_IRQS: start {} count {} exceed the {} irqs of index {}", s.start,
                       s.count, irq_count, s.index);
    if (nfds != 0 && s.data() != kIrqSetDataEventfd)
        return invalid("DEVICE_SET_IRQS: {} fds attached but the data type is not EVENTFD", nfds);
    if (s.data() == kIrqSetDataEventfd && nfds != 0 && nfds != s.count)
        return invalid("DEVICE_SET_IRQS: {} fds attached, count is {}", nfds, s.count);
    return ok();
}

// ---- REGION_READ / REGION_WRITE, DMA_READ / DMA_WRITE ------------------------------------------

std::vector<uint8_t> encode_region_access(uint64_t offset, uint32_t region, uint32_t count,
                                          std::span<const uint8_t> data) {
    Writer w(kRegionAccessSize + data.size());
    w.put(offset).put(region).put(count).put(data);
    return w.take();
}

std::array<uint8_t, kRegionAccessSize> encode_region_access_head(uint64_t offset, uint32_t region,
                                                                 uint32_t count) {
    std::array<uint8_t, kRegionAccessSize> out{};
    std::memcpy(out.data(), &offset, 8);
    std::memcpy(out.data() + 8, &region, 4);
    std::memcpy(out.data() + 12, &count, 4);
    return out;
}

Result<RegionAccessView> decode_region_access_view(Command cmd, bool reply,
                                                   std::span<const uint8_t> payload,
                                                   uint32_t max_data_xfer_size) {
    // The name is built only for an error: this is the per-access hot path.
    auto name = [&] { return command_name(cmd) + (reply ? " reply" : ""); };
    if (payload.size() < kRegionAccessSize) return fail(need(name(), payload, 16).error());
    Reader r(payload);
    RegionAccessView a;
    a.offset = r.get<uint64_t>();
    a.region = r.get<uint32_t>();
    a.count = r.get<uint32_t>();
    if (a.count > max_data_xfer_size)
        return invalid("{}: count {} exceeds max_data_xfer_size {}", name(), a.count,
                       max_data_xfer_size);
    const bool carries_data = (cmd == Command::region_write) != reply;
    const size_t extra = payload.size() - kRegionAccessSize;
    if (carries_data) {
        if (extra != a.count)
            return invalid("{}: count {} but {} data bytes follow", name(), a.count, extra);
        a.data = payload.subspan(kRegionAccessSize);
    } else if (extra != 0) {
        return invalid("{}: {} unexpected data bytes after the struct", name(), extra);
    }
    if (a.offset + a.count < a.offset)
        return invalid("{}: offset {:#x} + count {} overflows", name(), a.offset, a.count);
    return a;
}

Result<RegionAccess> decode_region_access(Command cmd, bool reply, std::span<const uint8_t> payload,
                                          uint32_t max_data_xfer_size) {
    auto v = decode_region_access_view(cmd, reply, payload, max_data_xfer_size);
    if (!v) return fail(v.error());
    RegionAccess a;
    a.offset = v->offset;
    a.region = v->region;
    a.count = v->count;
    a.data.assign(v->data.begin(), v->data.end());
    return a;
}

std::vector<uint8_t> encode_dma_access(uint64_t addr, uint64_t count,
                                       std::span<const uint8_t> data) {
    Writer w(kDmaAccessSize + data.size());
    w.put(addr).put(count).put(data);
    return w.take();
}

std::string_view dma_layout_name(DmaLayout layout) {
    return layout == DmaLayout::qemu ? "qemu" : "spec";
}

namespace {
// QEMU's VFIOUserDMARW: u64 addr, u32 count, then the data; the struct's 4 bytes of padding
// count in every size QEMU checks, so they follow the data on the wire.
constexpr uint8_t kQemuDmaHeadSize = 12;
constexpr uint8_t kQemuDmaTailSize = kDmaAccessSize - kQemuDmaHeadSize;
constexpr std::array<uint8_t, kQemuDmaTailSize> kZeroTail{};
}  // namespace

std::span<const uint8_t> DmaFrame::tail() const {
    return std::span<const uint8_t>(kZeroTail.data(), tail_size);
}

DmaFrame encode_dma_frame(DmaLayout layout, uint64_t addr, uint32_t count) {
    DmaFrame f;
    std::memcpy(f.head_bytes.data(), &addr, 8);
    if (layout == DmaLayout::qemu) {
        std::memcpy(f.head_bytes.data() + 8, &count, 4);
        f.head_size = kQemuDmaHeadSize;
        f.tail_size = kQemuDmaTailSize;
    } else {
        const uint64_t count64 = count;
        std::memcpy(f.head_bytes.data() + 8, &count64, 8);
        f.head_size = kDmaAccessSize;
        f.tail_size = 0;
    }
    return f;
}

std::vector<uint8_t> encode_dma_access(DmaLayout layout, uint64_t addr, uint32_t count,
                                       std::span<const uint8_t> data) {
    const DmaFrame f = encode_dma_frame(layout, addr, count);
    Writer w(kDmaAccessSize + data.size());
    w.put(f.head()).put(data).put(f.tail());
    return w.take();
}

// Both layouts: the same 16 bytes before the data in size, but QEMU's count is a u32 and its
// data starts right after it (payload offset 12), its last 4 bytes padding.
Result<DmaAccess> decode_dma_access(DmaLayout layout, Command cmd, bool reply,
                                    std::span<const uint8_t> payload, uint32_t max_data_xfer_size) {
    const bool qemu = layout == DmaLayout::qemu;
    const std::string name =
        command_name(cmd) + (reply ? " reply" : "") + (qemu ? " (QEMU layout)" : "");
    POTEMKIN_TRY(need(name, payload, kDmaAccessSize));
    Reader r(payload);
    DmaAccess a;
    a.addr = r.get<uint64_t>();
    a.count = qemu ? r.get<uint32_t>() : r.get<uint64_t>();
    if (a.count > max_data_xfer_size)
        return invalid("{}: count {} exceeds max_data_xfer_size {}", name, a.count,
                       max_data_xfer_size);
    const bool carries_data = (cmd == Command::dma_write) != reply;
    const size_t extra = payload.size() - kDmaAccessSize;
    if (carries_data) {
        if (extra != a.count)
            return invalid("{}: count {} but {} data bytes follow", name, a.count, extra);
        const auto data = payload.subspan(qemu ? kQemuDmaHeadSize : kDmaAccessSize, a.count);
        a.data.assign(data.begin(), data.end());
    } else if (extra != 0) {
        return invalid("{}: {} unexpected data bytes after the struct", name, extra);
    }
    if (a.addr + a.count < a.addr)
        return invalid("{}: addr {:#x} + count {} overflows", name, a.addr, a.count);
    return a;
}

Result<DmaAccess> decode_dma_access(Command cmd, bool reply, std::span<const uint8_t> payload,
                                    uint32_t max_data_xfer_size) {
    return decode_dma_access(DmaLayout::spec, cmd, reply, payload, max_data_xfer_size);
}

}  // namespace potemkin::vfio_user
