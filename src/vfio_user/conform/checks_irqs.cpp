// Checks of DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS (flag combinations, eventfd counts, ranges).
#include "common/eventfd.hpp"
#include "vfio_user/conform/check.hpp"

namespace potemkin::vfio_user::conform {

namespace {

std::vector<uint8_t> irq_set(uint32_t flags, uint32_t index, uint32_t start, uint32_t count,
                             std::vector<uint8_t> bools = {}) {
    IrqSet s;
    s.flags = flags;
    s.index = index;
    s.start = start;
    s.count = count;
    s.bools = std::move(bools);
    return encode_irq_set(s);
}

Result<std::vector<UniqueFd>> eventfds(uint32_t n) {
    std::vector<UniqueFd> out;
    for (uint32_t i = 0; i < n; ++i) {
        POTEMKIN_TRY_ASSIGN(UniqueFd fd, make_eventfd());
        out.push_back(std::move(fd));
    }
    return out;
}
std::vector<int> raw(const std::vector<UniqueFd>& fds) {
    std::vector<int> out;
    for (const auto& f : fds) out.push_back(f.get());
    return out;
}

Result<void> set_ok(Session& s, std::span<const uint8_t> payload, std::span<const int> fds = {}) {
    POTEMKIN_TRY_ASSIGN(const Message m, request_ok(s, Command::device_set_irqs, payload, fds));
    if (!m.payload.empty())
        return failf("SET_IRQS: the reply carries {} payload bytes (spec: none)", m.payload.size());
    return ok();
}

// The irq index a check works on: one with eventfd support and at least `n` vectors.
std::optional<IrqInfo> pick(const Context& ctx, uint32_t n = 1) {
    return ctx.facts().irq_with(n);
}
Verdict no_irq(uint32_t n) {
    return Verdict::skip(
        fmt::format("no INTx, MSI or MSI-X index with {} eventfd interrupt(s)", n));
}

Result<Verdict> every_index(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    std::string seen;
    for (uint32_t i = 0; i < ctx.facts().info.num_irqs && i < 64; ++i) {
        IrqInfo q;
        q.index = i;
        POTEMKIN_TRY_ASSIGN(const Message m,
                            request_ok(*s, Command::device_get_irq_info, encode_irq_info(q)));
        POTEMKIN_TRY(check_within_argsz(m, kIrqInfoSize));
        if (m.payload.size() < kIrqInfoSize)
            return failv("index {}: a {}-byte reply (the struct is 16)", i, m.payload.size());
        const uint32_t argsz = get_u32(m.payload, 0), flags = get_u32(m.payload, 4),
                       index = get_u32(m.payload, 8), count = get_u32(m.payload, 12);
        if (argsz < kIrqInfoSize || index != i || (flags & ~0xfu) != 0)
            return failv("index {}: reply argsz {} flags {:#x} index {}", i, argsz, flags, index);
        seen += fmt::format("{}{}:{}/{:#x}", seen.empty() ? "" : " ", i, count, flags);
    }
    return Verdict::pass(seen);
}

Result<Verdict> irq_info_bad_index(Context& ctx) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    IrqInfo q;
    q.index = ctx.facts().info.num_irqs;
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(*s, Command::device_get_irq_info, encode_irq_info(q)));
    return Verdict::pass(seen);
}

Result<Verdict> eventfd_trigger(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(auto fds, eventfds(1));
    const uint32_t trig_efd = kIrqSetActionTrigger | kIrqSetDataEventfd;
    POTEMKIN_TRY(set_ok(*s, irq_set(trig_efd, irq->index, 0, 1), raw(fds)));
    // "a count (and start) of 0, with data flags of VFIO_IRQ_SET_DATA_NONE disables all
    // interrupts of the index"
    POTEMKIN_TRY(set_ok(*s, irq_set(kIrqSetActionTrigger | kIrqSetDataNone, irq->index, 0, 0)));
    return Verdict::pass(fmt::format("index {}", irq->index));
}

Result<Verdict> eventfd_none(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    // "If no file descriptors are provided, this de-assigns the specified previously configured
    // interrupts."
    POTEMKIN_TRY(set_ok(*s, irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, 0, 1)));
    return Verdict::pass(fmt::format("index {}", irq->index));
}

// A SET_IRQS the server must refuse.
Result<Verdict> refuse(Context& ctx, std::span<const uint8_t> payload, uint32_t nfds = 0) {
    POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
    POTEMKIN_TRY_ASSIGN(auto fds, eventfds(nfds));
    POTEMKIN_TRY_ASSIGN(const std::string seen,
                        request_error(*s, Command::device_set_irqs, payload, raw(fds)));
    return Verdict::pass(seen);
}

Result<Verdict> more_fds_than_count(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(ctx, irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, 0, 1), 2);
}
Result<Verdict> fewer_fds_than_count(Context& ctx) {
    const auto irq = pick(ctx, 2);
    if (!irq) return no_irq(2);
    return refuse(ctx, irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, 0, 2), 1);
}
Result<Verdict> fds_without_eventfd_data(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    // Masking with DATA_NONE does not take fds.
    return refuse(ctx, irq_set(kIrqSetActionMask | kIrqSetDataNone, irq->index, 0, 1), 1);
}
Result<Verdict> two_data_flags(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(ctx, irq_set(kIrqSetActionTrigger | kIrqSetDataNone | kIrqSetDataEventfd,
                               irq->index, 0, 1));
}
Result<Verdict> two_action_flags(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(ctx, irq_set(kIrqSetActionTrigger | kIrqSetActionMask | kIrqSetDataEventfd,
                               irq->index, 0, 1));
}
Result<Verdict> no_action_flag(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(ctx, irq_set(kIrqSetDataEventfd, irq->index, 0, 1));
}
Result<Verdict> unknown_flag(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(
        ctx, irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd | 0x40000000u, irq->index, 0, 1));
}
Result<Verdict> start_out_of_range(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    // DATA_EVENTFD without fds: a server that wrongly accepts only de-assigns.
    return refuse(ctx,
                  irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, irq->count, 1));
}
Result<Verdict> count_out_of_range(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(
        ctx, irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, 0, irq->count + 1));
}
Result<Verdict> start_count_wrap(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    return refuse(ctx,
                  irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, 1, 0xffffffffu));
}
Result<Verdict> index_out_of_range(Context& ctx) {
    return refuse(
        ctx, irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, ctx.facts().info.num_irqs, 0, 1));
}
Result<Verdict> bool_short(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    // DATA_BOOL promises count bytes of booleans after the struct; none follow.
    auto p = irq_set(kIrqSetActionMask | kIrqSetDataBool, irq->index, 0, 1, {1});
    p.resize(kIrqSetSize);
    put_u32(p, 0, kIrqSetSize);
    return refuse(ctx, p);
}
Result<Verdict> argsz_small(Context& ctx) {
    const auto irq = pick(ctx, 1);
    if (!irq) return no_irq(1);
    auto p = irq_set(kIrqSetActionTrigger | kIrqSetDataEventfd, irq->index, 0, 1);
    put_u32(p, 0, 8);
    return refuse(ctx, p);
}

Result<Verdict> mask_unmask(Context& ctx) {
    const DeviceFacts& f = ctx.facts();
    for (const IrqInfo& i : f.irqs) {
        if ((i.flags & kIrqInfoFlagMaskable) == 0 || i.count == 0) continue;
        POTEMKIN_TRY_ASSIGN(Session * s, ctx.session());
        // "VFIO_IRQ_INFO_MASKABLE indicates that the IRQ type supports the MASK and UNMASK
        // actions"
        POTEMKIN_TRY(set_ok(*s, irq_set(kIrqSetActionMask | kIrqSetDataNone, i.index, 0, 1)));
        POTEMKIN_TRY(set_ok(*s, irq_set(kIrqSetActionUnmask | kIrqSetDataNone, i.index, 0, 1)));
        POTEMKIN_TRY(set_ok(*s, irq_set(kIrqSetActionMask | kIrqSetDataBool, i.index, 0, 1, {1})));
        POTEMKIN_TRY(
            set_ok(*s, irq_set(kIrqSetActionUnmask | kIrqSetDataBool, i.index, 0, 1, {1})));
        return Verdict::pass(fmt::format("index {}", i.index));
    }
    return Verdict::skip("no irq index is MASKABLE");
}

}  // namespace

void add_irq_checks(std::vector<Check>& out) {
    const char* info = "VFIO_USER_DEVICE_GET_IRQ_INFO";
    const char* set = "VFIO_USER_DEVICE_SET_IRQS";
    out.push_back({"irq_info.every_index", info, false, every_index});
    out.push_back({"irq_info.index_out_of_range", info, false, irq_info_bad_index});
    out.push_back({"set_irqs.eventfd_trigger_then_disable", set, false, eventfd_trigger});
    out.push_back({"set_irqs.eventfd_without_fds_deassigns", set, false, eventfd_none});
    out.push_back({"set_irqs.more_fds_than_count", set, false, more_fds_than_count});
    out.push_back({"set_irqs.fewer_fds_than_count", set, false, fewer_fds_than_count});
    out.push_back({"set_irqs.fds_with_data_none", set, false, fds_without_eventfd_data});
    out.push_back({"set_irqs.two_data_flags", set, false, two_data_flags});
    out.push_back({"set_irqs.two_action_flags", set, false, two_action_flags});
    out.push_back({"set_irqs.no_action_flag", set, false, no_action_flag});
    out.push_back({"set_irqs.unknown_flag", set, false, unknown_flag});
    out.push_back({"set_irqs.start_out_of_range", set, false, start_out_of_range});
    out.push_back({"set_irqs.count_out_of_range", set, false, count_out_of_range});
    out.push_back({"set_irqs.start_plus_count_wraps", set, false, start_count_wrap});
    out.push_back({"set_irqs.index_out_of_range", set, false, index_out_of_range});
    out.push_back({"set_irqs.bool_data_missing", set, false, bool_short});
    out.push_back({"set_irqs.argsz_too_small", set, false, argsz_small});
    out.push_back({"set_irqs.mask_unmask_maskable", set, false, mask_unmask});
}

}  // namespace potemkin::vfio_user::conform
