// Checks of REGION_READ and REGION_WRITE (spec: "VFIO_USER_REGION_READ", "VFIO_USER_REGION_WRITE",
// "Read and Write Operations"): bounds, sizes, config space.
#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

// A read that must succeed: the reply echoes offset, region and count, then count bytes.
Result<std::vector<uint8_t>> read_ok(Session& s, uint32_t region, uint64_t offset, uint32_t count) {
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(s, Command::region_read,
                                                    encode_region_access(offset, region, count)));
    POTEMKIN_TRY_ASSIGN(RegionAccess a,
                        decode_region_access(Command::region_read, true, m.payload, UINT32_MAX));
    if (a.offset != offset || a.region != region || a.count != count)
        return failf(
            "REGION_READ of region {} at {:#x} ({} bytes): the reply says region {} at "
            "{:#x} ({} bytes)",
            region, offset, count, a.region, a.offset, a.count);
    return std::move(a.data);
}

Result<void> write_ok(Session& s, uint32_t region, uint64_t offset, std::span<const uint8_t> data) {
    const uint32_t count = static_cast<uint32_t>(data.size());
    POTEMKIN_TRY_ASSIGN(
        const Message m,
        request_ok(s, Command::region_write, encode_region_access(offset, region, count, data)));
    POTEMKIN_TRY_ASSIGN(RegionAccess a,
                        decode_region_access(Command::region_write, true, m.payload, UINT32_MAX));
    if (a.offset != offset || a.region != region || a.count != count)
        return failf(
            "REGION_WRITE of region {} at {:#x} ({} bytes): the reply says region {} at "
            "{:#x} ({} bytes)",
            region, offset, count, a.region, a.offset, a.count);
    return ok();
}

uint64_t config_size(const Context& ctx) {
    const RegionInfo* r = ctx.facts().region(kRegionConfig);
    return r != nullptr ? r->size : 0;
}

Result<Verdict> config_header(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const auto dword, read_ok(*s, kRegionConfig, 0, 4));
    // Vendor and device ID are read-only: byte reads must agree with the dword.
    for (uint32_t i = 0; i < 4; ++i) {
        POTEMKIN_TRY_ASSIGN(const auto b, read_ok(*s, kRegionConfig, i, 1));
        if (b[0] != dword[i])
            return failv("config byte {} reads {:#04x}, the dword read gave {:#04x}", i, b[0],
                         dword[i]);
    }
    POTEMKIN_TRY_ASSIGN(const auto word, read_ok(*s, kRegionConfig, 2, 2));
    if (word[0] != dword[2] || word[1] != dword[3])
        return failv("the device ID word at 2 differs from the dword read");
    return Verdict::pass(
        fmt::format("{:02x}{:02x}:{:02x}{:02x}", dword[1], dword[0], dword[3], dword[2]));
}

Result<Verdict> config_whole(Context& ctx) {
    const uint64_t size = config_size(ctx);
    if (size == 0) return Verdict::skip("no config region");
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(size, 4096));
    POTEMKIN_TRY_ASSIGN(const auto all, read_ok(*s, kRegionConfig, 0, n));
    POTEMKIN_TRY_ASSIGN(const auto q, read_ok(*s, kRegionConfig, 0, 8));
    if (!std::equal(q.begin(), q.end(), all.begin()))
        return failv("an 8-byte read differs from the first bytes of a {}-byte read", n);
    return Verdict::pass(fmt::format("{} bytes", n));
}

Result<Verdict> config_write_back(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    // Interrupt Line (0x3c): writable on every PCI function and without effect on the device;
    // writing back what it holds changes nothing.
    POTEMKIN_TRY_ASSIGN(const auto line, read_ok(*s, kRegionConfig, 0x3c, 1));
    POTEMKIN_TRY(write_ok(*s, kRegionConfig, 0x3c, line));
    POTEMKIN_TRY_ASSIGN(const auto again, read_ok(*s, kRegionConfig, 0x3c, 1));
    if (again != line) return failv("interrupt line {:#x} became {:#x}", line[0], again[0]);
    return Verdict::pass();
}

Result<Verdict> refuse(Context& ctx, Command cmd, std::span<const uint8_t> payload) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const std::string seen, request_error(*s, cmd, payload));
    return Verdict::pass(seen);
}

Result<Verdict> read_past_end(Context& ctx) {
    const uint64_t size = config_size(ctx);
    if (size < 2) return Verdict::skip("no config region");
    return refuse(ctx, Command::region_read, encode_region_access(size - 2, kRegionConfig, 4));
}
Result<Verdict> read_at_end(Context& ctx) {
    const uint64_t size = config_size(ctx);
    if (size == 0) return Verdict::skip("no config region");
    return refuse(ctx, Command::region_read, encode_region_access(size, kRegionConfig, 1));
}
Result<Verdict> read_wraps(Context& ctx) {
    return refuse(ctx, Command::region_read,
                  encode_region_access(~uint64_t{0} - 3, kRegionConfig, 8));
}
Result<Verdict> read_too_big(Context& ctx) {
    // "The count field must not exceed the value of max_data_xfer_size of the peer".
    const uint32_t max = ctx.facts().version.caps.max_data_xfer_size;
    if (max == UINT32_MAX) return Verdict::skip("max_data_xfer_size is 2^32-1");
    return refuse(ctx, Command::region_read, encode_region_access(0, kRegionConfig, max + 1));
}
Result<Verdict> read_bad_region(Context& ctx) {
    return refuse(ctx, Command::region_read,
                  encode_region_access(0, ctx.facts().info.num_regions, 4));
}
Result<Verdict> read_absent_region(Context& ctx) {
    for (const RegionInfo& r : ctx.facts().regions) {
        if (r.size != 0 || r.index == kRegionConfig) continue;
        return refuse(ctx, Command::region_read, encode_region_access(0, r.index, 4));
    }
    return Verdict::skip("every region has a size");
}
Result<Verdict> read_with_data(Context& ctx) {
    const uint8_t data[4] = {1, 2, 3, 4};
    return refuse(ctx, Command::region_read, encode_region_access(0, kRegionConfig, 4, data));
}
Result<Verdict> write_length_mismatch(Context& ctx) {
    const uint8_t data[2] = {0, 0};
    auto p = encode_region_access(0x3c, kRegionConfig, 2, data);
    put_u32(p, 12, 4);  // count 4, two bytes of data
    return refuse(ctx, Command::region_write, p);
}
Result<Verdict> write_past_end(Context& ctx) {
    const uint64_t size = config_size(ctx);
    if (size < 2) return Verdict::skip("no config region");
    const uint8_t data[4] = {};
    return refuse(ctx, Command::region_write,
                  encode_region_access(size - 2, kRegionConfig, 4, data));
}
Result<Verdict> read_truncated(Context& ctx) {
    auto p = encode_region_access(0, kRegionConfig, 4);
    p.resize(12);
    return refuse(ctx, Command::region_read, p);
}

// Every readable BAR answers a small read with a well-formed reply: the data, or a header-only
// error (a device may refuse accesses it does not implement).
Result<Verdict> bars_well_formed(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen;
    for (uint32_t i = 0; i < 6 && i < ctx.facts().regions.size(); ++i) {
        const RegionInfo& r = ctx.facts().regions[i];
        if (r.size == 0 || (r.flags & kRegionFlagRead) == 0) continue;
        const uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(r.size, 4));
        POTEMKIN_TRY_ASSIGN(const Header req,
                            s->send(Command::region_read, encode_region_access(0, i, count)));
        POTEMKIN_TRY_ASSIGN(Message m, s->receive());
        std::string what;
        if (m.header.is_error()) {
            Result<Message> got = std::move(m);
            POTEMKIN_TRY_ASSIGN(what, judge_error(req, std::move(got)));
        } else {
            Result<Message> got = std::move(m);
            POTEMKIN_TRY_ASSIGN(const Message ok_m, judge_ok(req, std::move(got)));
            POTEMKIN_TRY_ASSIGN(
                const RegionAccess a,
                decode_region_access(Command::region_read, true, ok_m.payload, UINT32_MAX));
            if (a.region != i || a.offset != 0 || a.count != count)
                return failv("BAR{}: the reply says region {} at {:#x} ({} bytes)", i, a.region,
                             a.offset, a.count);
            what = fmt::format("{} bytes", count);
        }
        seen += fmt::format("{}BAR{}: {}", seen.empty() ? "" : ", ", i, what);
    }
    if (seen.empty()) return Verdict::skip("no readable BAR");
    return Verdict::pass(seen);
}

}  // namespace

void add_access_checks(std::vector<Check>& out) {
    const char* rd = "VFIO_USER_REGION_READ";
    const char* wr = "VFIO_USER_REGION_WRITE";
    out.push_back({"region_read.config_header", rd, false, config_header});
    out.push_back({"region_read.config_whole", rd, false, config_whole});
    out.push_back({"region_read.bars_well_formed", rd, false, bars_well_formed});
    out.push_back({"region_read.past_end", rd, false, read_past_end});
    out.push_back({"region_read.at_end", rd, false, read_at_end});
    out.push_back({"region_read.offset_wraps", rd, false, read_wraps});
    out.push_back({"region_read.count_over_max_data_xfer_size", "Read and Write Operations", false,
                   read_too_big});
    out.push_back({"region_read.index_out_of_range", rd, false, read_bad_region});
    out.push_back({"region_read.absent_region", rd, false, read_absent_region});
    out.push_back({"region_read.request_with_data", rd, false, read_with_data});
    out.push_back({"region_read.truncated_struct", rd, false, read_truncated});
    out.push_back({"region_write.config_write_back", wr, false, config_write_back});
    out.push_back({"region_write.data_length_mismatch", wr, false, write_length_mismatch});
    out.push_back({"region_write.past_end", wr, false, write_past_end});
}

}  // namespace potemkin::vfio_user::conform
