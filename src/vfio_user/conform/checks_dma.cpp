// Checks of DMA_MAP and DMA_UNMAP (spec: "VFIO_USER_DMA_MAP", "VFIO_USER_DMA_UNMAP").
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

constexpr uint64_t kPage = 4096;
// IOVAs far from anything a real client maps, page aligned.
constexpr uint64_t kIova = uint64_t{1} << 32;
constexpr uint64_t kIovaUnmapped = uint64_t{3} << 32;

// Memory a client would share: a memfd of a few pages.
Result<UniqueFd> client_memory(uint64_t size) {
    UniqueFd fd(::memfd_create("potemkin-conform", MFD_CLOEXEC));
    if (!fd) return failf(Errno{errno}, "memfd_create");
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
        return failf(Errno{errno}, "ftruncate");
    return fd;
}

std::vector<uint8_t> map_payload(uint64_t addr, uint64_t size, uint64_t offset = 0,
                                 uint32_t flags = kDmaMapFlagRead | kDmaMapFlagWrite) {
    DmaMap m;
    m.flags = flags;
    m.addr = addr;
    m.size = size;
    m.offset = offset;
    return encode_dma_map(m);
}
std::vector<uint8_t> unmap_payload(uint64_t addr, uint64_t size) {
    DmaUnmap u;
    u.addr = addr;
    u.size = size;
    return encode_dma_unmap(u);
}

Result<void> map_ok(Session& s, std::span<const uint8_t> payload, std::span<const int> fds) {
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(s, Command::dma_map, payload, fds));
    if (!m.payload.empty())
        return failf("DMA_MAP: the reply carries {} payload bytes (spec: none)", m.payload.size());
    return ok();
}

Result<void> unmap_ok(Session& s, uint64_t addr, uint64_t size) {
    const auto p = unmap_payload(addr, size);
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(s, Command::dma_unmap, p));
    if (m.payload.size() < p.size() || !std::equal(p.begin(), p.end(), m.payload.begin()))
        return failf(
            "DMA_UNMAP: the reply ({} bytes) is not the request's 24-byte entry (spec: "
            "the server responds with the original DMA entry)",
            m.payload.size());
    return ok();
}

Result<Verdict> map_with_fd(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(UniqueFd mem, client_memory(4 * kPage));
    const int fds[1] = {mem.get()};
    POTEMKIN_TRY(map_ok(*s, map_payload(kIova, 2 * kPage, kPage), fds));
    POTEMKIN_TRY(unmap_ok(*s, kIova, 2 * kPage));
    return Verdict::pass();
}

Result<Verdict> map_without_fd(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY(map_ok(*s, map_payload(kIova, 2 * kPage), {}));
    POTEMKIN_TRY(unmap_ok(*s, kIova, 2 * kPage));
    return Verdict::pass();
}

Result<Verdict> overlap(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(UniqueFd mem, client_memory(4 * kPage));
    const int fds[1] = {mem.get()};
    POTEMKIN_TRY(map_ok(*s, map_payload(kIova, 2 * kPage), fds));
    POTEMKIN_TRY_ASSIGN(
        const std::string seen,
        request_error(*s, Command::dma_map, map_payload(kIova + kPage, 2 * kPage, kPage), fds,
                      {EEXIST, false}));
    POTEMKIN_TRY(unmap_ok(*s, kIova, 2 * kPage));
    return Verdict::pass(seen);
}

Result<Verdict> identical_remap(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(UniqueFd mem, client_memory(2 * kPage));
    const int fds[1] = {mem.get()};
    const auto p = map_payload(kIova, 2 * kPage);
    POTEMKIN_TRY(map_ok(*s, p, fds));
    // The spec's rule ("a command to map over an existing region must be failed with EEXIST")
    // covers the same region again; a server that accepts it as a no-op is let pass (the Linux
    // kernel's VFIO says EEXIST, libvfio-user accepts).
    POTEMKIN_TRY_ASSIGN(const Header req, s->send(Command::dma_map, p, fds));
    POTEMKIN_TRY_ASSIGN(Message m, s->receive());
    std::string seen = "accepted";
    if (m.header.is_error()) {
        Result<Message> got = std::move(m);
        POTEMKIN_TRY_ASSIGN(seen, judge_error(req, std::move(got), {EEXIST, false}));
    } else {
        Result<Message> got = std::move(m);
        POTEMKIN_TRY(judge_ok(req, std::move(got)));
    }
    POTEMKIN_TRY(unmap_ok(*s, kIova, 2 * kPage));
    return Verdict::pass(seen);
}

Result<Verdict> unmap_unmapped(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(*s, Command::dma_unmap, unmap_payload(kIovaUnmapped, kPage)));
    return Verdict::pass(seen);
}

Result<Verdict> unmap_partial(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY(map_ok(*s, map_payload(kIova, 2 * kPage), {}));
    // "The address and size of the DMA region being unmapped must match exactly a previous
    // mapping."
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(*s, Command::dma_unmap, unmap_payload(kIova, kPage)));
    POTEMKIN_TRY(unmap_ok(*s, kIova, 2 * kPage));
    return Verdict::pass(seen);
}

Result<Verdict> map_argsz_small(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    auto p = map_payload(kIova, kPage);
    put_u32(p, 0, 16);
    POTEMKIN_TRY_ASSIGN(const std::string seen, request_error(*s, Command::dma_map, p));
    return Verdict::pass(seen);
}

Result<Verdict> map_unknown_flags(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    const auto p = map_payload(kIova, kPage, 0, kDmaMapFlagRead | kDmaMapFlagWrite | 0x80000000u);
    POTEMKIN_TRY_ASSIGN(const std::string seen, request_error(*s, Command::dma_map, p));
    return Verdict::pass(seen);
}

Result<Verdict> map_truncated(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    auto p = map_payload(kIova, kPage);
    p.resize(20);
    POTEMKIN_TRY_ASSIGN(const std::string seen, request_error(*s, Command::dma_map, p));
    return Verdict::pass(seen);
}

Result<Verdict> unmap_argsz_small(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY(map_ok(*s, map_payload(kIova, kPage), {}));
    auto p = unmap_payload(kIova, kPage);
    put_u32(p, 0, 8);
    POTEMKIN_TRY_ASSIGN(const std::string seen, request_error(*s, Command::dma_unmap, p));
    POTEMKIN_TRY(unmap_ok(*s, kIova, kPage));
    return Verdict::pass(seen);
}

}  // namespace

void add_dma_checks(std::vector<Check>& out) {
    const char* map = "VFIO_USER_DMA_MAP";
    const char* unmap = "VFIO_USER_DMA_UNMAP";
    out.push_back({"dma_map.with_fd", map, false, map_with_fd});
    out.push_back({"dma_map.without_fd", map, false, map_without_fd});
    out.push_back({"dma_map.overlap_eexist", map, false, overlap});
    out.push_back({"dma_map.identical_remap", map, false, identical_remap});
    out.push_back({"dma_map.argsz_too_small", map, false, map_argsz_small});
    out.push_back({"dma_map.unknown_flags", map, false, map_unknown_flags});
    out.push_back({"dma_map.truncated_struct", map, false, map_truncated});
    out.push_back({"dma_unmap.unmapped_range", unmap, false, unmap_unmapped});
    out.push_back({"dma_unmap.partial_range", unmap, false, unmap_partial});
    out.push_back({"dma_unmap.argsz_too_small", unmap, false, unmap_argsz_small});
}

}  // namespace potemkin::vfio_user::conform
