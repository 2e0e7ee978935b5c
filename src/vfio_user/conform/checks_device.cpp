// Checks of the device description: DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (every region, argsz
// handling, capabilities, mmap), DEVICE_GET_REGION_IO_FDS, DEVICE_RESET.
#include <sys/mman.h>

#include <cerrno>

#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

constexpr uint32_t kBigArgsz = 4096;

std::vector<uint8_t> device_info_request(uint32_t argsz) {
    DeviceInfo d;
    d.argsz = argsz;
    return encode_device_info(d);
}

Result<Verdict> device_info(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const Message m,
                        request_ok(*s, Command::device_get_info, device_info_request(16)));
    POTEMKIN_TRY(check_within_argsz(m, 16));
    POTEMKIN_TRY_ASSIGN(const DeviceInfo d, decode_device_info(m.payload));
    if ((d.flags & kDeviceFlagPci) == 0)
        return failv("flags {:#x} lack VFIO_DEVICE_FLAGS_PCI (this version only supports PCI)",
                     d.flags);
    if (d.num_regions < kPciNumRegions)
        return failv("num_regions {} is below VFIO_PCI_NUM_REGIONS (9)", d.num_regions);
    if (!m.fds.empty()) return failv("the reply carries {} fds", m.fds.size());
    return Verdict::pass(
        fmt::format("flags {:#x}, {} regions, {} irq types", d.flags, d.num_regions, d.num_irqs));
}

// A request argsz below the fixed reply: an error, or a reply that fits in it.
Result<Verdict> small_argsz(Context& ctx, Command cmd, std::vector<uint8_t> payload,
                            uint32_t argsz) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const Header req, s->send(cmd, payload));
    POTEMKIN_TRY_ASSIGN(Message m, s->receive());
    if (m.header.is_reply() && !m.header.is_error() && m.header.msg_id == req.msg_id) {
        POTEMKIN_TRY(check_within_argsz(m, argsz));
        return Verdict::pass(fmt::format("reply of {} bytes", m.payload.size()));
    }
    Result<Message> got = std::move(m);
    POTEMKIN_TRY_ASSIGN(const std::string seen, judge_error(req, std::move(got)));
    return Verdict::pass(seen);
}

Result<Verdict> device_info_small_argsz(Context& ctx) {
    return small_argsz(ctx, Command::device_get_info, device_info_request(8), 8);
}

// One region's reply to a request with room for capabilities.
Result<std::string> judge_region(Session& s, uint32_t index, RegionInfo& out) {
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(s, Command::device_get_region_info,
                                                    encode_region_info_request(index, kBigArgsz)));
    POTEMKIN_TRY(check_within_argsz(m, kBigArgsz));
    POTEMKIN_TRY_ASSIGN(out, decode_region_info_reply(m.payload));
    if (out.index != index) return failf("the reply names region {}", out.index);
    if (out.argsz < kRegionInfoSize) return failf("argsz {} is below 32", out.argsz);
    if (out.argsz <= kBigArgsz && m.payload.size() != out.argsz)
        return failf("argsz {} but {} payload bytes", out.argsz, m.payload.size());
    if ((out.flags & kRegionFlagCaps) != 0 && out.cap_offset < kRegionInfoSize)
        return failf("CAPS with cap_offset {} inside the struct", out.cap_offset);
    if ((out.flags & kRegionFlagMmap) != 0 && m.fds.empty())
        return failf("MMAP without a file descriptor (spec: the reply will include one)");
    if (out.sparse_mmap) {
        for (const SparseArea& a : *out.sparse_mmap)
            if (a.offset > out.size || a.size > out.size - a.offset)
                return failf("sparse mmap area {:#x}+{:#x} is outside the {:#x}-byte region",
                             a.offset, a.size, out.size);
    }
    if (index == kRegionConfig &&
        (out.size < 256 || (out.flags & (kRegionFlagRead | kRegionFlagWrite)) !=
                               (kRegionFlagRead | kRegionFlagWrite)))
        return failf(
            "the config region has size {:#x} flags {:#x} (a PCI config space is at "
            "least 256 bytes, readable and writable)",
            out.size, out.flags);
    return fmt::format("{}:{:#x}/{:#x}{}", index, out.size, out.flags, m.fds.empty() ? "" : "+fd");
}

Result<Verdict> every_region(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen, bad;
    for (uint32_t i = 0; i < ctx.facts().regions.size(); ++i) {
        RegionInfo info;
        auto r = judge_region(*s, i, info);
        if (!r && r.error().sys_errno != 0) return fail(r.error());  // the connection broke
        if (!r)
            bad += fmt::format("{}region {}: {}", bad.empty() ? "" : "; ", i, r.error().message);
        else
            seen += (seen.empty() ? "" : " ") + *r;
    }
    if (!bad.empty()) return Verdict::fail(bad);
    return Verdict::pass(seen);
}

// A region whose full reply is longer than the fixed struct (it has capabilities).
std::optional<RegionInfo> region_with_caps(const DeviceFacts& f) {
    for (const RegionInfo& r : f.regions)
        if (r.argsz > kRegionInfoSize) return r;
    return std::nullopt;
}

Result<Verdict> region_caps_argsz_short(Context& ctx) {
    auto r = region_with_caps(ctx.facts());
    if (!r) return Verdict::skip("no region has capabilities");
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const Message m,
                        request_ok(*s, Command::device_get_region_info,
                                   encode_region_info_request(r->index, kRegionInfoSize)));
    POTEMKIN_TRY(check_within_argsz(m, kRegionInfoSize));
    POTEMKIN_TRY_ASSIGN(const RegionInfo got, decode_region_info_reply(m.payload));
    if (got.argsz != r->argsz)
        return failv(
            "region {}: argsz {} in the short reply, {} in the full one (spec, Message "
            "sizes: the reply's argsz is the size needed)",
            r->index, got.argsz, r->argsz);
    return Verdict::pass(
        fmt::format("region {}: 32 of {} bytes, argsz {}", r->index, m.payload.size(), got.argsz));
}

Result<Verdict> region_info_small_argsz(Context& ctx) {
    return small_argsz(ctx, Command::device_get_region_info, encode_region_info_request(7, 16), 16);
}

Result<Verdict> region_info_bad_index(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen;
    for (uint32_t index : {ctx.facts().info.num_regions, 0xffffffffu}) {
        POTEMKIN_TRY_ASSIGN(const std::string e,
                            request_error(*s, Command::device_get_region_info,
                                          encode_region_info_request(index, kBigArgsz)));
        seen += fmt::format("{}{}: {}", seen.empty() ? "" : ", ", index, e);
    }
    return Verdict::pass(seen);
}

// Every mappable area can be mapped from the fd the server sent.
Result<Verdict> mmap_usable(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen;
    for (const RegionInfo& f : ctx.facts().regions) {
        if ((f.flags & kRegionFlagMmap) == 0) continue;
        POTEMKIN_TRY_ASSIGN(const Message m,
                            request_ok(*s, Command::device_get_region_info,
                                       encode_region_info_request(f.index, kBigArgsz)));
        POTEMKIN_TRY_ASSIGN(const RegionInfo r, decode_region_info_reply(m.payload));
        if (m.fds.empty()) return failv("region {}: MMAP without an fd", r.index);
        std::vector<SparseArea> areas =
            r.sparse_mmap.value_or(std::vector<SparseArea>{{0, r.size}});
        for (const SparseArea& a : areas) {
            if (a.size == 0) continue;
            void* p = ::mmap(nullptr, a.size, PROT_READ, MAP_SHARED, m.fds[0].get(),
                             static_cast<off_t>(r.offset + a.offset));
            if (p == MAP_FAILED)
                return failv("region {}: mmap of {:#x}+{:#x} at file offset {:#x}: {}", r.index,
                             a.offset, a.size, r.offset + a.offset, std::strerror(errno));
            if (::munmap(p, a.size) != 0) return failf(Errno{errno}, "munmap");
        }
        seen +=
            fmt::format("{}region {}: {} area(s)", seen.empty() ? "" : ", ", r.index, areas.size());
    }
    if (seen.empty()) return Verdict::skip("no region is mappable");
    return Verdict::pass(seen);
}

std::vector<uint8_t> io_fds_request(uint32_t index, uint32_t argsz) {
    RegionIoFds q;
    q.argsz = argsz;
    q.index = index;
    return encode_region_io_fds(q);
}

Result<Verdict> io_fds_every_region(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen;
    for (uint32_t i = 0; i < ctx.facts().regions.size(); ++i) {
        POTEMKIN_TRY_ASSIGN(const Header req, s->send(Command::device_get_region_io_fds,
                                                      io_fds_request(i, kBigArgsz)));
        POTEMKIN_TRY_ASSIGN(Message reply, s->receive());
        if (reply.header.is_error()) {
            // An optional feature: a server may not offer it at all.
            Result<Message> got = std::move(reply);
            POTEMKIN_TRY_ASSIGN(const std::string e, judge_error(req, std::move(got)));
            seen += fmt::format("{}{}: {}", seen.empty() ? "" : ", ", i, e);
            continue;
        }
        Result<Message> got = std::move(reply);
        POTEMKIN_TRY_ASSIGN(const Message m, judge_ok(req, std::move(got)));
        POTEMKIN_TRY(check_within_argsz(m, kBigArgsz));
        if (m.payload.size() < kRegionIoFdsSize)
            return failv("region {}: a {}-byte reply (the struct is 16)", i, m.payload.size());
        const uint32_t argsz = get_u32(m.payload, 0), flags = get_u32(m.payload, 4),
                       index = get_u32(m.payload, 8), count = get_u32(m.payload, 12);
        if (flags != 0 || index != i)
            return failv(
                "region {}: reply flags {:#x} index {} (flags must be zero, index the "
                "region's)",
                i, flags, index);
        if (count > 0 && argsz <= kBigArgsz && m.fds.empty())
            return failv("region {}: {} sub-regions but no fd", i, count);
        if (count > 0 && argsz <= kBigArgsz && m.payload.size() < argsz)
            return failv("region {}: argsz {} but {} payload bytes", i, argsz, m.payload.size());
        seen += fmt::format("{}{}: {} sub-regions", seen.empty() ? "" : ", ", i, count);
    }
    return Verdict::pass(seen);
}

Result<Verdict> io_fds_bad_index(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(*s, Command::device_get_region_io_fds,
                                      io_fds_request(ctx.facts().info.num_regions, kBigArgsz)));
    return Verdict::pass(seen);
}

Result<Verdict> io_fds_flags(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    auto p = io_fds_request(kRegionConfig, kBigArgsz);
    put_u32(p, 4, 0x80000000);
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(*s, Command::device_get_region_io_fds, p));
    return Verdict::pass(seen);
}

Result<Verdict> reset(Context& ctx) {
    if ((ctx.facts().info.flags & kDeviceFlagReset) == 0)
        return Verdict::skip("the device does not set VFIO_DEVICE_FLAGS_RESET");
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(*s, Command::device_reset, {}));
    if (!m.payload.empty())
        return failv(
            "the reply carries {} payload bytes (spec: neither request nor reply has "
            "one)",
            m.payload.size());
    POTEMKIN_TRY(request_ok(*s, Command::device_get_info, device_info_request(16)));
    return Verdict::pass();
}

}  // namespace

void add_device_checks(std::vector<Check>& out) {
    const char* info = "VFIO_USER_DEVICE_GET_INFO";
    const char* region = "VFIO_USER_DEVICE_GET_REGION_INFO";
    const char* io = "VFIO_USER_DEVICE_GET_REGION_IO_FDS";
    out.push_back({"device_info.reply", info, false, device_info});
    out.push_back({"device_info.argsz_too_small", "Message sizes", false, device_info_small_argsz});
    out.push_back({"region_info.every_region", region, false, every_region});
    out.push_back({"region_info.argsz_without_room_for_caps", "Message sizes", false,
                   region_caps_argsz_short});
    out.push_back({"region_info.argsz_too_small", "Message sizes", false, region_info_small_argsz});
    out.push_back({"region_info.index_out_of_range", region, false, region_info_bad_index});
    out.push_back({"region_info.mmap_areas_mappable", "Sparse Regions", false, mmap_usable});
    out.push_back({"region_io_fds.every_region", io, false, io_fds_every_region});
    out.push_back({"region_io_fds.index_out_of_range", io, false, io_fds_bad_index});
    out.push_back({"region_io_fds.nonzero_flags", io, false, io_fds_flags});
    out.push_back({"device_reset.header_only", "VFIO_USER_DEVICE_RESET", false, reset});
}

}  // namespace potemkin::vfio_user::conform
