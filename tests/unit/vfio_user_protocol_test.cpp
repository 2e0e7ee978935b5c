// The vfio-user codec (vfio_user/protocol.hpp) and framing (socket.hpp): round trips of
// every payload, the exact wire bytes of the fixed structs, and each validation error with the
// field it names and the errno a server replies with.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin::vfio_user {
namespace {

std::vector<uint8_t> bytes(std::string_view s, bool nul = true) {
    std::vector<uint8_t> v(s.begin(), s.end());
    if (nul) v.push_back(0);
    return v;
}

std::vector<uint8_t> version_payload(uint16_t major, uint16_t minor, std::string_view json,
                                     bool nul = true) {
    std::vector<uint8_t> v(4);
    std::memcpy(v.data(), &major, 2);
    std::memcpy(v.data() + 2, &minor, 2);
    auto j = bytes(json, nul);
    v.insert(v.end(), j.begin(), j.end());
    return v;
}

template <typename T>
void expect_error(const Result<T>& r, std::string_view text, int err = EINVAL) {
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find(text), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().sys_errno, err) << r.error().message;
}

TEST(VfioUserProtocol, HeaderIsSixteenLittleEndianBytes) {
    Header h;
    h.msg_id = 0x0102;
    h.cmd = 9;
    h.msg_size = 0x20;
    h.flags = kTypeReply | kFlagError;
    h.error_no = 22;
    auto b = encode_header(h);
    const uint8_t want[16] = {0x02, 0x01, 9, 0, 0x20, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0};
    EXPECT_EQ(0, std::memcmp(b.data(), want, 16));
    Header back = decode_header(b);
    EXPECT_EQ(back.msg_id, 0x0102);
    EXPECT_EQ(back.cmd, 9);
    EXPECT_EQ(back.msg_size, 0x20u);
    EXPECT_TRUE(back.is_reply());
    EXPECT_TRUE(back.is_error());
    EXPECT_FALSE(back.no_reply());
    EXPECT_EQ(back.error_no, 22u);
}

TEST(VfioUserProtocol, ReplyHeadersEchoIdAndCommand) {
    Header req;
    req.msg_id = 7;
    req.cmd = 5;
    req.msg_size = 48;
    Header r = reply_header(req, 32);
    EXPECT_EQ(r.msg_id, 7);
    EXPECT_EQ(r.cmd, 5);
    EXPECT_EQ(r.msg_size, 48u);
    EXPECT_EQ(r.flags, kTypeReply);
    Header e = error_reply_header(req, EINVAL);
    EXPECT_EQ(e.flags, 0x21u);
    EXPECT_EQ(e.msg_size, 16u);
    EXPECT_EQ(e.error_no, static_cast<uint32_t>(EINVAL));
}

TEST(VfioUserProtocol, CommandNames) {
    EXPECT_EQ(command_name(Command::region_read), "REGION_READ");
    EXPECT_EQ(command_name(Command::device_reset), "DEVICE_RESET");
    EXPECT_EQ(command_name(uint16_t{14}), "cmd 14");
    EXPECT_EQ(command_name(uint16_t{99}), "cmd 99");
}

TEST(VfioUserProtocol, FramingChecks) {
    Header h;
    h.cmd = 9;
    h.msg_size = 15;
    expect_error(check_framing(h, kServerMaxMsgSize), "msg_size 15 is smaller than the 16-byte",
                 EPROTO);
    h.msg_size = kServerMaxMsgSize + 1;
    expect_error(check_framing(h, kServerMaxMsgSize),
                 "msg_size 1048609 exceeds the maximum 1048608", EPROTO);
    h.msg_size = kServerMaxMsgSize;
    EXPECT_TRUE(check_framing(h, kServerMaxMsgSize));
}

TEST(VfioUserProtocol, RequestChecks) {
    Header h;
    h.cmd = 4;
    h.msg_size = 16;
    expect_error(check_request(h), "DEVICE_GET_INFO (msg_id 0): no payload");
    h.cmd = 13;
    EXPECT_TRUE(check_request(h));  // DEVICE_RESET is header-only
    h.flags = kTypeReply;
    expect_error(check_request(h), "message type 1 is not a command");
}

TEST(VfioUserProtocol, ReplyChecks) {
    Header req;
    req.msg_id = 3;
    req.cmd = 9;
    Header rep = reply_header(req);
    EXPECT_TRUE(check_reply(req, rep));
    Header wrong_id = rep;
    wrong_id.msg_id = 4;
    expect_error(check_reply(req, wrong_id), "reply is for REGION_READ msg_id 4");
    Header cmd = req;
    expect_error(check_reply(req, cmd), "expected a reply");
    expect_error(check_reply(req, error_reply_header(req, ENOENT)), "peer replied error 2", ENOENT);
    // Out-of-range errnos become EINVAL, as libvfio-user's client does.
    expect_error(check_reply(req, error_reply_header(req, 5000)), "peer replied error 5000");
    expect_error(check_reply(req, error_reply_header(req, 0)), "peer replied error 0");
}

TEST(VfioUserProtocol, VersionRoundTrip) {
    Version v;
    v.minor = 1;
    v.caps.max_msg_fds = 8;
    v.caps.max_data_xfer_size = 65536;
    v.caps.pgsizes = 4096;
    v.caps.max_dma_maps = 100;
    v.caps.migration_pgsize = 4096;
    v.caps.twin_socket_supported = true;
    auto payload = encode_version(v);
    EXPECT_EQ(payload.back(), 0);
    auto back = decode_version(payload);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->major, 0);
    EXPECT_EQ(back->minor, 1);
    EXPECT_EQ(back->caps.max_msg_fds, 8u);
    EXPECT_EQ(back->caps.max_data_xfer_size, 65536u);
    EXPECT_EQ(back->caps.pgsizes, 4096u);
    EXPECT_EQ(back->caps.max_dma_maps, 100u);
    EXPECT_EQ(back->caps.migration_pgsize, 4096u);
    EXPECT_TRUE(back->caps.twin_socket_supported);
    EXPECT_FALSE(back->caps.twin_socket_fd_index);  // the client's offer carries no index
}

// Spec, VERSION: the client offers {"supported":true}; the server's reply adds fd_index.
TEST(VfioUserProtocol, TwinSocketCapability) {
    Capabilities offer;
    offer.twin_socket_supported = true;
    EXPECT_NE(capabilities_json(offer).find(R"("twin_socket":{"supported":true})"),
              std::string::npos)
        << capabilities_json(offer);
    Capabilities reply;
    reply.twin_socket_supported = true;
    reply.twin_socket_fd_index = 0;
    EXPECT_NE(capabilities_json(reply).find(R"("twin_socket":{"supported":true,"fd_index":0})"),
              std::string::npos)
        << capabilities_json(reply);
    auto back = parse_capabilities_json(capabilities_json(reply));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_TRUE(back->twin_socket_supported);
    EXPECT_EQ(back->twin_socket_fd_index, 0u);
    // Absent, or supported false: no twin socket.
    auto none = parse_capabilities_json(R"({"capabilities":{"twin_socket":{"supported":false}}})");
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->twin_socket_supported);
    EXPECT_EQ(capabilities_json(Capabilities{}).find("twin_socket"), std::string::npos);
    expect_error(parse_capabilities_json(R"({"capabilities":{"twin_socket":{"fd_index":-1}}})"),
                 "fd_index = -1 is outside");
    expect_error(parse_capabilities_json(R"({"capabilities":{"twin_socket":{"fd_index":"0"}}})"),
                 "fd_index is not an integer");
}

TEST(VfioUserProtocol, VersionWithoutJsonHasDefaults) {
    auto v = decode_version(version_payload(0, 2, "", false));
    ASSERT_TRUE(v);
    EXPECT_FALSE(v->has_json);
    EXPECT_EQ(v->caps.max_msg_fds, kDefaultMaxMsgFds);
    EXPECT_EQ(v->caps.max_data_xfer_size, kDefaultMaxDataXferSize);
}

TEST(VfioUserProtocol, VersionParsesLibvfioUserReplyAndIgnoresUnknown) {
    auto v = decode_version(version_payload(
        0, 2,
        R"({ "capabilities": { "max_msg_fds": 8, "max_data_xfer_size": 1048576, "migration": )"
        R"({ "pgsize": 4096 }, "future": [1, 2] }, "other": true })"));
    ASSERT_TRUE(v) << v.error().message;
    EXPECT_EQ(v->caps.max_msg_fds, 8u);
    EXPECT_EQ(v->caps.migration_pgsize, 4096u);
}

TEST(VfioUserProtocol, VersionErrors) {
    expect_error(decode_version(std::vector<uint8_t>{0, 0}), "VERSION: payload of 2 bytes");
    expect_error(decode_version(version_payload(0, 2, "{}", false)), "not NUL-terminated");
    expect_error(decode_version(version_payload(0, 2, "{\"capabilities\":")),
                 "malformed capabilities JSON");
    expect_error(decode_version(version_payload(0, 2, "[1]")), "not an object");
    expect_error(decode_version(version_payload(0, 2, R"({"capabilities":{"max_msg_fds":"8"}})")),
                 "capability max_msg_fds is not an integer");
    expect_error(decode_version(version_payload(0, 2, R"({"capabilities":{"max_msg_fds":1.5}})")),
                 "capability max_msg_fds is not an integer");
    expect_error(decode_version(version_payload(0, 2, R"({"capabilities":{"max_msg_fds":1025}})")),
                 "max_msg_fds = 1025 is outside [0, 1024]");
    expect_error(decode_version(version_payload(0, 2, R"({"capabilities":{"max_msg_fds":-1}})")),
                 "max_msg_fds = -1 is outside");
    expect_error(
        decode_version(version_payload(0, 2, R"({"capabilities":{"max_data_xfer_size":0}})")),
        "max_data_xfer_size = 0 is outside");
    expect_error(decode_version(version_payload(0, 2, R"({"capabilities":7})")),
                 "\"capabilities\" is not an object");
    expect_error(decode_version(version_payload(0, 2, R"({"capabilities":{"migration":1}})")),
                 "migration is not an object");
    expect_error(decode_version(
                     version_payload(0, 2, R"({"capabilities":{"twin_socket":{"supported":1}}})")),
                 "twin_socket.supported is not a boolean");
}

TEST(VfioUserProtocol, VersionMajorMustBeZero) {
    Version v;
    v.major = 1;
    v.minor = 0;
    expect_error(check_version_compatible(v),
                 "incompatible vfio-user version 1.0 (this side speaks 0.2)");
    v.major = 0;
    v.minor = 7;  // a newer minor is fine: the reply says min(7, 2)
    EXPECT_TRUE(check_version_compatible(v));
}

TEST(VfioUserProtocol, DmaMapRoundTripAndLayout) {
    DmaMap m;
    m.flags = kDmaMapFlagRead | kDmaMapFlagWrite;
    m.offset = 0x1000;
    m.addr = 0x100000;
    m.size = 0x20000;
    auto p = encode_dma_map(m);
    ASSERT_EQ(p.size(), 32u);
    uint64_t addr;
    std::memcpy(&addr, p.data() + 16, 8);
    EXPECT_EQ(addr, 0x100000u);
    auto back = decode_dma_map(p);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->offset, 0x1000u);
    EXPECT_EQ(back->addr, 0x100000u);
    EXPECT_EQ(back->size, 0x20000u);
}

TEST(VfioUserProtocol, DmaMapErrors) {
    DmaMap m;
    m.size = 0x1000;
    auto p = encode_dma_map(m);
    expect_error(decode_dma_map(std::span(p).first(31)), "DMA_MAP: payload of 31 bytes");
    m.argsz = 16;
    expect_error(decode_dma_map(encode_dma_map(m)), "DMA_MAP: argsz 16 is less than 32");
    m.argsz = 32;
    m.flags = 0x13;
    expect_error(decode_dma_map(encode_dma_map(m)), "flags 0x13 has unknown bits 0x10");
    m.flags = 3;
    m.size = 0;
    expect_error(decode_dma_map(encode_dma_map(m)), "DMA_MAP: size is 0");
    m.size = kMaxDmaRegionSize + 1;
    expect_error(decode_dma_map(encode_dma_map(m)), "exceeds the maximum region size");
    m.size = 0x2000;
    m.addr = ~uint64_t{0} - 0xfff;
    expect_error(decode_dma_map(encode_dma_map(m)), "overflows");
    m.addr = 0;
    p = encode_dma_map(m);
    p.push_back(0);
    expect_error(decode_dma_map(p), "payload of 33 bytes, expected 32");
}

TEST(VfioUserProtocol, DmaUnmapRoundTripAndErrors) {
    DmaUnmap u;
    u.addr = 0x1000;
    u.size = 0x2000;
    auto p = encode_dma_unmap(u);
    ASSERT_EQ(p.size(), 24u);
    auto back = decode_dma_unmap(p);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->addr, 0x1000u);
    EXPECT_EQ(back->size, 0x2000u);
    u.flags = kDmaUnmapFlagAll;
    expect_error(decode_dma_unmap(encode_dma_unmap(u)), "UNMAP_ALL needs addr and size 0");
    u.addr = u.size = 0;
    EXPECT_TRUE(decode_dma_unmap(encode_dma_unmap(u)));
    u.flags = 4;
    expect_error(decode_dma_unmap(encode_dma_unmap(u)), "flags 0x4 has unknown bits");
    u.flags = 0;
    u.argsz = 20;
    expect_error(decode_dma_unmap(encode_dma_unmap(u)), "argsz 20 is less than 24");
    u.argsz = (1u << 20) + 1;
    expect_error(decode_dma_unmap(encode_dma_unmap(u)), "exceeds 1 MiB");
    u.argsz = 24;
    u.flags = kDmaUnmapFlagGetDirtyBitmap;
    expect_error(decode_dma_unmap(encode_dma_unmap(u)), "GET_DIRTY_BITMAP needs argsz >= 40");
}

TEST(VfioUserProtocol, DeviceInfo) {
    DeviceInfo d;
    d.flags = kDeviceFlagPci | kDeviceFlagReset;
    d.num_regions = 9;
    d.num_irqs = 5;
    auto back = decode_device_info(encode_device_info(d));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->flags, 3u);
    EXPECT_EQ(back->num_regions, 9u);
    EXPECT_EQ(back->num_irqs, 5u);
    d.argsz = 8;
    expect_error(decode_device_info(encode_device_info(d)), "argsz 8 is less than 16");
    expect_error(decode_device_info(std::vector<uint8_t>(12)), "payload of 12 bytes");
}

TEST(VfioUserProtocol, RegionInfoWithoutCaps) {
    auto req = decode_region_info_request(encode_region_info_request(7, 32));
    ASSERT_TRUE(req);
    EXPECT_EQ(req->index, 7u);
    EXPECT_EQ(req->argsz, 32u);
    expect_error(decode_region_info_request(encode_region_info_request(7, 16)),
                 "argsz 16 is less than 32");
    RegionInfo info;
    info.index = 7;
    info.flags = kRegionFlagRead | kRegionFlagWrite;
    info.size = 256;
    bool fits = true;
    auto p = encode_region_info_reply(info, 32, &fits);
    EXPECT_FALSE(fits);
    ASSERT_EQ(p.size(), 32u);
    auto back = decode_region_info_reply(p);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->argsz, 32u);
    EXPECT_EQ(back->flags, 3u);
    EXPECT_EQ(back->size, 256u);
    EXPECT_FALSE(back->sparse_mmap);
}

TEST(VfioUserProtocol, RegionInfoSparseMmapAndTypeCaps) {
    RegionInfo info;
    info.index = 1;
    info.flags = kRegionFlagRead | kRegionFlagWrite | kRegionFlagMmap;
    info.size = 0x4000;
    info.offset = 0x10000;
    info.sparse_mmap = std::vector<SparseArea>{{0, 0x1000}, {0x2000, 0x1000}};
    EXPECT_EQ(region_info_caps_size(info), 48u);
    // Too small a buffer: argsz says what is needed, no caps, no CAPS flag (§7).
    bool fits = true;
    auto small = encode_region_info_reply(info, 32, &fits);
    EXPECT_FALSE(fits);
    ASSERT_EQ(small.size(), 32u);
    auto s = decode_region_info_reply(small);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->argsz, 80u);  // as the sample server's BAR1 with 2 areas
    EXPECT_EQ(s->flags & kRegionFlagCaps, 0u);
    EXPECT_EQ(s->cap_offset, 0u);
    // Large enough: the chain at offset 32.
    auto full = encode_region_info_reply(info, 80, &fits);
    EXPECT_TRUE(fits);
    ASSERT_EQ(full.size(), 80u);
    uint16_t id;
    std::memcpy(&id, full.data() + 32, 2);
    EXPECT_EQ(id, kCapSparseMmap);
    auto f = decode_region_info_reply(full);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(f->cap_offset, 32u);
    EXPECT_NE(f->flags & kRegionFlagCaps, 0u);
    ASSERT_TRUE(f->sparse_mmap);
    EXPECT_EQ(*f->sparse_mmap, (std::vector<SparseArea>{{0, 0x1000}, {0x2000, 0x1000}}));
    // Both caps chained; `next` relative to the start of the struct.
    info.type = RegionType{3, 1};
    auto both = encode_region_info_reply(info, 1024);
    ASSERT_EQ(both.size(), 96u);
    uint32_t next;
    std::memcpy(&next, both.data() + 36, 4);
    EXPECT_EQ(next, 80u);
    auto b = decode_region_info_reply(both);
    ASSERT_TRUE(b) << b.error().message;
    ASSERT_TRUE(b->type);
    EXPECT_EQ(*b->type, (RegionType{3, 1}));
    EXPECT_EQ(b->sparse_mmap->size(), 2u);
}

TEST(VfioUserProtocol, RegionInfoReplyChainErrors) {
    RegionInfo info;
    info.size = 0x1000;
    info.sparse_mmap = std::vector<SparseArea>{{0, 0x1000}};
    auto p = encode_region_info_reply(info, 1024);
    // nr_areas larger than what follows.
    auto bad = p;
    uint32_t nr = 5;
    std::memcpy(bad.data() + 40, &nr, 4);
    expect_error(decode_region_info_reply(bad), "sparse mmap nr_areas 5 does not fit");
    // A chain pointing back at itself.
    bad = p;
    uint32_t self = 32;
    std::memcpy(bad.data() + 36, &self, 4);
    expect_error(decode_region_info_reply(bad), "overlaps the previous one");
    // cap_offset past the end.
    bad = p;
    uint32_t far = 4096;
    std::memcpy(bad.data() + 12, &far, 4);
    expect_error(decode_region_info_reply(bad), "capability at offset 4096 is outside");
}

TEST(VfioUserProtocol, RegionIoFds) {
    RegionIoFds r;
    r.index = 2;
    auto back = decode_region_io_fds_request(encode_region_io_fds(r));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->index, 2u);
    r.flags = 1;
    expect_error(decode_region_io_fds_request(encode_region_io_fds(r)), "flags 0x1 must be 0");
    r.flags = 0;
    r.count = 1;
    expect_error(decode_region_io_fds_request(encode_region_io_fds(r)), "count 1 must be 0");
}

TEST(VfioUserProtocol, IrqInfo) {
    IrqInfo i;
    i.index = kIrqIndexMsi;
    i.count = 1;
    auto back = decode_irq_info(encode_irq_info(i));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->index, 1u);
    i.index = 5;
    expect_error(decode_irq_info(encode_irq_info(i)), "index 5 is not an irq index (< 5)");
}

TEST(VfioUserProtocol, IrqSetRoundTrip) {
    IrqSet s;
    s.flags = kIrqSetDataBool | kIrqSetActionMask;
    s.index = kIrqIndexMsix;
    s.start = 1;
    s.count = 3;
    s.bools = {1, 0, 1};
    auto p = encode_irq_set(s);
    ASSERT_EQ(p.size(), 23u);
    auto back = decode_irq_set(p);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->argsz, 23u);
    EXPECT_EQ(back->bools, (std::vector<uint8_t>{1, 0, 1}));
    EXPECT_EQ(back->data(), kIrqSetDataBool);
    EXPECT_EQ(back->action(), kIrqSetActionMask);
}

TEST(VfioUserProtocol, IrqSetErrors) {
    IrqSet s;
    s.index = kIrqIndexMsi;
    s.count = 1;
    s.flags = kIrqSetDataNone | kIrqSetDataEventfd | kIrqSetActionTrigger;
    expect_error(decode_irq_set(encode_irq_set(s)), "must have exactly one DATA bit");
    s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger | kIrqSetActionMask;
    expect_error(decode_irq_set(encode_irq_set(s)), "must have exactly one ACTION bit");
    s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger | 0x40;
    expect_error(decode_irq_set(encode_irq_set(s)), "has unknown bits");
    s.flags = kIrqSetDataBool | kIrqSetActionTrigger;
    s.count = 2;
    s.bools = {1};
    expect_error(decode_irq_set(encode_irq_set(s)), "DATA_BOOL needs count 2 bytes of data, got 1");
    s.flags = kIrqSetDataNone | kIrqSetActionTrigger;
    expect_error(decode_irq_set(encode_irq_set(s)), "1 unexpected data bytes");
    s.bools.clear();
    s.count = 0;
    s.start = 1;
    expect_error(decode_irq_set(encode_irq_set(s)), "count 0 needs start 0 and TRIGGER|DATA_NONE");
    s.start = 0;
    EXPECT_TRUE(decode_irq_set(encode_irq_set(s)));
    s.index = 7;
    expect_error(decode_irq_set(encode_irq_set(s)), "index 7 is not an irq index");
}

TEST(VfioUserProtocol, IrqSetDeviceChecks) {
    IrqSet s;
    s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger;
    s.index = kIrqIndexMsi;
    s.start = 0;
    s.count = 2;
    EXPECT_TRUE(check_irq_set(s, 2, 2));
    EXPECT_TRUE(check_irq_set(s, 2, 0));  // no fds: disable
    expect_error(check_irq_set(s, 2, 1), "1 fds attached, count is 2");
    expect_error(check_irq_set(s, 1, 2), "start 0 count 2 exceed the 1 irqs of index 1");
    s.start = 1;
    s.count = 1;
    expect_error(check_irq_set(s, 1, 1), "start 1 count 1 exceed");
    s.flags = kIrqSetDataNone | kIrqSetActionTrigger;
    s.start = 0;
    expect_error(check_irq_set(s, 1, 1), "1 fds attached but the data type is not EVENTFD");
    s.index = kIrqIndexErr;
    s.flags = kIrqSetDataNone | kIrqSetActionMask;
    expect_error(check_irq_set(s, 1, 0), "index 3 takes ACTION_TRIGGER only");
}

TEST(VfioUserProtocol, RegionAccess) {
    auto p = encode_region_access(0x10, 7, 4);
    ASSERT_EQ(p.size(), 16u);
    auto r = decode_region_access(Command::region_read, false, p, kDefaultMaxDataXferSize);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->offset, 0x10u);
    EXPECT_EQ(r->region, 7u);
    EXPECT_EQ(r->count, 4u);
    const uint8_t data[4] = {1, 2, 3, 4};
    auto w = decode_region_access(Command::region_write, false, encode_region_access(0, 0, 4, data),
                                  kDefaultMaxDataXferSize);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->data, (std::vector<uint8_t>{1, 2, 3, 4}));
    // A read reply carries the data, a write reply does not.
    EXPECT_TRUE(decode_region_access(Command::region_read, true,
                                     encode_region_access(0, 0, 4, data), 4096));
    EXPECT_TRUE(
        decode_region_access(Command::region_write, true, encode_region_access(0, 0, 4), 4096));
}

TEST(VfioUserProtocol, RegionAccessErrors) {
    expect_error(decode_region_access(Command::region_read, false,
                                      encode_region_access(0, 0, 1048577), kDefaultMaxDataXferSize),
                 "REGION_READ: count 1048577 exceeds max_data_xfer_size 1048576");
    const uint8_t two[2] = {1, 2};
    expect_error(decode_region_access(Command::region_write, false,
                                      encode_region_access(0, 0, 4, two), 4096),
                 "REGION_WRITE: count 4 but 2 data bytes follow");
    expect_error(
        decode_region_access(Command::region_read, false, encode_region_access(0, 0, 2, two), 4096),
        "REGION_READ: 2 unexpected data bytes");
    expect_error(decode_region_access(Command::region_read, false, std::vector<uint8_t>(8), 4096),
                 "REGION_READ: payload of 8 bytes is shorter than the 16-byte struct");
    expect_error(decode_region_access(Command::region_read, false,
                                      encode_region_access(~uint64_t{0}, 0, 2), 4096),
                 "overflows");
    expect_error(
        decode_region_access(Command::region_read, true, encode_region_access(0, 0, 4), 4096),
        "REGION_READ reply: count 4 but 0 data bytes follow");
}

TEST(VfioUserProtocol, DmaAccess) {
    const uint8_t data[3] = {7, 8, 9};
    auto w = decode_dma_access(Command::dma_write, false, encode_dma_access(0x1000, 3, data), 4096);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->addr, 0x1000u);
    EXPECT_EQ(w->data, (std::vector<uint8_t>{7, 8, 9}));
    EXPECT_TRUE(decode_dma_access(Command::dma_read, false, encode_dma_access(0x1000, 3), 4096));
    expect_error(decode_dma_access(Command::dma_read, false, encode_dma_access(0, 8192), 4096),
                 "DMA_READ: count 8192 exceeds max_data_xfer_size 4096");
    expect_error(decode_dma_access(Command::dma_read, true, encode_dma_access(0, 4, data), 4096),
                 "DMA_READ reply: count 4 but 3 data bytes follow");
}

// The spec layout, byte for byte: u64 addr, u64 count, data at payload offset 16.
TEST(VfioUserProtocol, DmaAccessSpecLayoutBytes) {
    const uint8_t data[3] = {0xa1, 0xa2, 0xa3};
    EXPECT_EQ(encode_dma_access(DmaLayout::spec, 0x1122334455667788, 3, data),
              (std::vector<uint8_t>{0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // addr
                                    3, 0, 0, 0, 0, 0, 0, 0,                          // u64 count
                                    0xa1, 0xa2, 0xa3}));
    // The layout-free encoder is the spec's.
    EXPECT_EQ(encode_dma_access(DmaLayout::spec, 0x1000, 3, data),
              encode_dma_access(0x1000, 3, data));
    const DmaFrame f = encode_dma_frame(DmaLayout::spec, 0x1000, 8);
    EXPECT_EQ(f.head().size(), 16u);
    EXPECT_TRUE(f.tail().empty());
    auto r = decode_dma_access(DmaLayout::spec, Command::dma_read, true,
                               encode_dma_access(0x1000, 3, data), 4096);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->data, (std::vector<uint8_t>{0xa1, 0xa2, 0xa3}));
}

// QEMU 10.2's VFIOUserDMARW (hw/vfio-user/protocol.h): u64 addr, u32 count, data at payload
// offset 12; QEMU sizes every message against sizeof() = 32, so N data bytes travel in a
// 32 + N byte message with 4 bytes after the data.
TEST(VfioUserProtocol, DmaAccessQemuLayoutBytes) {
    // DMA_READ request: 16 payload bytes (msg_size 32, QEMU's minimum), count 8.
    EXPECT_EQ(encode_dma_access(DmaLayout::qemu, 0x1122334455667788, 8),
              (std::vector<uint8_t>{0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // addr
                                    8, 0, 0, 0,                                      // u32 count
                                    0, 0, 0, 0}));                                   // padding
    // DMA_WRITE request of 3 bytes: the data at 12, then 4 zero bytes: msg_size 35 = 32 + 3,
    // which is what QEMU's "count <= size - sizeof(VFIOUserDMARW)" needs.
    const uint8_t data[3] = {0xa1, 0xa2, 0xa3};
    const auto w = encode_dma_access(DmaLayout::qemu, 0x2000, 3, data);
    EXPECT_EQ(w, (std::vector<uint8_t>{0, 0x20, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0xa1, 0xa2, 0xa3, 0,
                                       0, 0, 0}));
    EXPECT_EQ(kHeaderSize + w.size(), 32u + 3u);
    // The frame gives the same bytes around data passed separately.
    const DmaFrame f = encode_dma_frame(DmaLayout::qemu, 0x2000, 3);
    std::vector<uint8_t> joined(f.head().begin(), f.head().end());
    joined.insert(joined.end(), data, data + 3);
    joined.insert(joined.end(), f.tail().begin(), f.tail().end());
    EXPECT_EQ(joined, w);

    // QEMU's DMA_READ reply for 4 bytes: msg_size 36 = 4 + 32, the data at payload offset 12;
    // the last 4 bytes are whatever QEMU left there (here: not zero) and are ignored.
    const std::vector<uint8_t> reply = {0,    0x30, 0,    0,    0, 0, 0, 0,  // addr 0x3000
                                        4,    0,    0,    0,                 // u32 count
                                        0xd1, 0xd2, 0xd3, 0xd4,              // data
                                        0xee, 0xee, 0xee, 0xee};             // padding
    auto r = decode_dma_access(DmaLayout::qemu, Command::dma_read, true, reply, 4096);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->addr, 0x3000u);
    EXPECT_EQ(r->count, 4u);
    EXPECT_EQ(r->data, (std::vector<uint8_t>{0xd1, 0xd2, 0xd3, 0xd4}));
    // The same bytes read as the spec layout: the count field holds data (what the server
    // refused before it knew QEMU's layout).
    expect_error(decode_dma_access(DmaLayout::spec, Command::dma_read, true, reply, 4096),
                 "DMA_READ reply: count 15335832951216668676 exceeds max_data_xfer_size 4096");

    // A DMA_WRITE request decodes back (a client's view), a DMA_READ request without data.
    auto wd = decode_dma_access(DmaLayout::qemu, Command::dma_write, false, w, 4096);
    ASSERT_TRUE(wd) << wd.error().message;
    EXPECT_EQ(wd->addr, 0x2000u);
    EXPECT_EQ(wd->data, (std::vector<uint8_t>{0xa1, 0xa2, 0xa3}));
    EXPECT_TRUE(decode_dma_access(DmaLayout::qemu, Command::dma_read, false,
                                  encode_dma_access(DmaLayout::qemu, 0x2000, 8), 4096));
}

TEST(VfioUserProtocol, DmaAccessQemuLayoutErrors) {
    // Shorter than QEMU's 32-byte struct.
    expect_error(
        decode_dma_access(DmaLayout::qemu, Command::dma_read, true, std::vector<uint8_t>(12), 4096),
        "DMA_READ reply (QEMU layout): payload of 12 bytes is shorter than the 16-byte "
        "struct");
    // A reply whose msg_size is not count + 32.
    const uint8_t four[4] = {1, 2, 3, 4};
    expect_error(decode_dma_access(DmaLayout::qemu, Command::dma_read, true,
                                   encode_dma_access(DmaLayout::qemu, 0, 8, four), 4096),
                 "DMA_READ reply (QEMU layout): count 8 but 4 data bytes follow");
    expect_error(decode_dma_access(DmaLayout::qemu, Command::dma_read, false,
                                   encode_dma_access(DmaLayout::qemu, 0, 8192), 4096),
                 "DMA_READ (QEMU layout): count 8192 exceeds max_data_xfer_size 4096");
    expect_error(decode_dma_access(DmaLayout::qemu, Command::dma_read, false,
                                   encode_dma_access(DmaLayout::qemu, 0, 4, four), 4096),
                 "DMA_READ (QEMU layout): 4 unexpected data bytes after the struct");
    expect_error(decode_dma_access(DmaLayout::qemu, Command::dma_read, false,
                                   encode_dma_access(DmaLayout::qemu, ~uint64_t{0}, 4), 4096),
                 "overflows");
    EXPECT_EQ(dma_layout_name(DmaLayout::qemu), "qemu");
    EXPECT_EQ(dma_layout_name(DmaLayout::spec), "spec");
}

// QEMU 10.2's client VERSION capabilities (hw/vfio-user/proxy.c caps_json), as JSON: the
// "write_multiple" key is kept; a non-boolean is refused like any known key of the wrong type.
TEST(VfioUserProtocol, WriteMultipleCapability) {
    auto c = parse_capabilities_json(
        R"({"capabilities":{"migration":{"pgsize":4096,"max_bitmap_size":268435456},)"
        R"("max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,)"
        R"("write_multiple":true}})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->write_multiple, std::optional<bool>(true));
    EXPECT_EQ(c->max_msg_fds, 16u);
    auto none = parse_capabilities_json(R"({"capabilities":{"max_msg_fds":1}})");
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->write_multiple);
    expect_error(parse_capabilities_json(R"({"capabilities":{"write_multiple":1}})"),
                 "VERSION: capability write_multiple is not a boolean: 1");
    Capabilities w;
    w.write_multiple = false;
    EXPECT_NE(capabilities_json(w).find(R"("write_multiple":false)"), std::string::npos);
    EXPECT_EQ(capabilities_json(Capabilities{}).find("write_multiple"), std::string::npos);
}

// ---- Framing over a real socket pair -------------------------------------------------------

struct SocketPair {
    UniqueFd a, b;
    SocketPair() {
        int sv[2];
        EXPECT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
};

TEST(VfioUserSocket, MessageWithFdsInOneSendmsg) {
    SocketPair sp;
    UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
    Header h;
    h.msg_id = 42;
    h.cmd = static_cast<uint16_t>(Command::device_set_irqs);
    const uint8_t p1[3] = {1, 2, 3};
    const uint8_t p2[2] = {4, 5};
    std::span<const uint8_t> parts[2] = {p1, p2};
    int fds[1] = {ev.get()};
    ASSERT_TRUE(send_message(sp.a.get(), h, parts, fds));
    RecvOptions o;
    o.timeout_ms = 1000;
    auto m = recv_message(sp.b.get(), o);
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(m->header.msg_id, 42);
    EXPECT_EQ(m->header.msg_size, 21u);
    EXPECT_EQ(m->payload, (std::vector<uint8_t>{1, 2, 3, 4, 5}));
    ASSERT_EQ(m->fds.size(), 1u);
    // The received fd is the same eventfd.
    uint64_t one = 1;
    ASSERT_EQ(::write(m->fds[0].get(), &one, 8), 8);
    uint64_t got = 0;
    ASSERT_EQ(::read(ev.get(), &got, 8), 8);
    EXPECT_EQ(got, 1u);
}

TEST(VfioUserSocket, FramingErrors) {
    SocketPair sp;
    RecvOptions o;
    o.timeout_ms = 1000;
    Header h;
    h.msg_size = 8;
    auto b = encode_header(h);
    ASSERT_TRUE(send_raw(sp.a.get(), b));
    expect_error(recv_message(sp.b.get(), o), "msg_size 8 is smaller", EPROTO);
    h.msg_size = kServerMaxMsgSize + 1;
    b = encode_header(h);
    ASSERT_TRUE(send_raw(sp.a.get(), b));
    expect_error(recv_message(sp.b.get(), o), "exceeds the maximum", EPROTO);
}

TEST(VfioUserSocket, TooManyFdsIsTruncationAndClosesThem) {
    SocketPair sp;
    UniqueFd e1(::eventfd(0, EFD_CLOEXEC)), e2(::eventfd(0, EFD_CLOEXEC));
    int fds[2] = {e1.get(), e2.get()};
    Header h;
    h.cmd = 2;
    const uint8_t p[4] = {};
    ASSERT_TRUE(send_message(sp.a.get(), h, p, fds));
    RecvOptions o;
    o.timeout_ms = 1000;
    o.max_fds = 1;
    expect_error(recv_message(sp.b.get(), o), "more than 1 fds", EPROTO);
}

TEST(VfioUserSocket, EofAndShortBodyAndTimeout) {
    RecvOptions o;
    o.timeout_ms = 50;
    {
        SocketPair sp;
        sp.a.reset();
        expect_error(recv_message(sp.b.get(), o), "peer closed", ECONNRESET);
    }
    {
        SocketPair sp;
        Header h;
        h.msg_size = 32;
        auto b = encode_header(h);
        ASSERT_TRUE(send_raw(sp.a.get(), b));
        expect_error(recv_message(sp.b.get(), o), "timed out after 0 of 16 bytes", ETIMEDOUT);
        sp.a.reset();
    }
    {
        SocketPair sp;
        Header h;
        h.msg_size = 32;
        auto b = encode_header(h);
        ASSERT_TRUE(send_raw(sp.a.get(), b));
        sp.a.reset();
        expect_error(recv_message(sp.b.get(), o), "peer closed after 0 of 16 bytes", ECONNRESET);
    }
    {
        SocketPair sp;
        expect_error(recv_message(sp.b.get(), o), "timed out waiting", ETIMEDOUT);
    }
}

// ---- MessageReader: one recvmsg for header and body, messages split or batched -----------------

std::vector<uint8_t> wire(uint16_t id, std::vector<uint8_t> payload) {
    Header h;
    h.msg_id = id;
    h.cmd = static_cast<uint16_t>(Command::region_read);
    h.msg_size = kHeaderSize + static_cast<uint32_t>(payload.size());
    auto head = encode_header(h);
    std::vector<uint8_t> out(head.begin(), head.end());
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

bool same_file(int a, int b) {
    struct stat sa {
    }, sb{};
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
}

TEST(VfioUserReader, TwoMessagesInOneReadAreBothReturned) {
    SocketPair sp;
    auto bytes = wire(1, {1, 2, 3});
    auto second = wire(2, {4});
    bytes.insert(bytes.end(), second.begin(), second.end());
    ASSERT_TRUE(send_raw(sp.a.get(), bytes));
    MessageReader reader;
    RecvOptions o;
    o.timeout_ms = 1000;
    Message m;
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    EXPECT_EQ(m.header.msg_id, 1);
    EXPECT_EQ(m.payload, (std::vector<uint8_t>{1, 2, 3}));
    // The second one is buffered: no wait, even with a socket that has nothing more.
    EXPECT_TRUE(reader.has_message());
    o.readable = true;  // a recvmsg would fail with ETIMEDOUT: the socket is empty
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    EXPECT_EQ(m.header.msg_id, 2);
    EXPECT_EQ(m.payload, (std::vector<uint8_t>{4}));
    EXPECT_FALSE(reader.pending());
    expect_error(reader.next(sp.b.get(), m, o), "timed out waiting", ETIMEDOUT);
}

TEST(VfioUserReader, SplitMessageIsAssembledAcrossTimeouts) {
    SocketPair sp;
    const auto bytes = wire(7, {9, 8, 7, 6, 5});
    MessageReader reader;
    RecvOptions o;
    o.timeout_ms = 20;
    Message m;
    // Half a header, then the rest of the header, then the body: a timeout in between keeps
    // what came, and the next call goes on with the same message.
    ASSERT_TRUE(send_raw(sp.a.get(), std::span(bytes).first(8)));
    expect_error(reader.next(sp.b.get(), m, o), "header: timed out after 8 of 16 bytes", ETIMEDOUT);
    EXPECT_TRUE(reader.pending());
    EXPECT_FALSE(reader.has_message());
    ASSERT_TRUE(send_raw(sp.a.get(), std::span(bytes).subspan(8, 10)));
    expect_error(reader.next(sp.b.get(), m, o), "message: timed out after 18 of 21 bytes",
                 ETIMEDOUT);
    ASSERT_TRUE(send_raw(sp.a.get(), std::span(bytes).subspan(18)));
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    EXPECT_EQ(m.header.msg_id, 7);
    EXPECT_EQ(m.payload, (std::vector<uint8_t>{9, 8, 7, 6, 5}));
}

TEST(VfioUserReader, FdsGoWithTheirMessage) {
    SocketPair sp;
    UniqueFd e1(::eventfd(0, EFD_CLOEXEC)), e2(::eventfd(0, EFD_CLOEXEC));
    // Three messages before the reader looks: none, one fd, one fd. The kernel stops a read
    // after data with fds, so several reads happen; each fd must land on its own message.
    ASSERT_TRUE(send_raw(sp.a.get(), wire(1, {1})));
    int f1[1] = {e1.get()}, f2[1] = {e2.get()};
    ASSERT_TRUE(send_raw(sp.a.get(), wire(2, {2, 2}), f1));
    ASSERT_TRUE(send_raw(sp.a.get(), wire(3, {3, 3, 3}), f2));
    MessageReader reader;
    RecvOptions o;
    o.timeout_ms = 1000;
    o.max_fds = 4;
    Message m;
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    EXPECT_EQ(m.header.msg_id, 1);
    EXPECT_TRUE(m.fds.empty());
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    EXPECT_EQ(m.header.msg_id, 2);
    ASSERT_EQ(m.fds.size(), 1u);
    EXPECT_TRUE(same_file(m.fds[0].get(), e1.get()));
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    EXPECT_EQ(m.header.msg_id, 3);
    ASSERT_EQ(m.fds.size(), 1u);
    EXPECT_TRUE(same_file(m.fds[0].get(), e2.get()));
}

TEST(VfioUserReader, LargeMessageGrowsTheBufferAndErrorsAreReported) {
    SocketPair sp;
    std::vector<uint8_t> big(200 * 1024);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
    const auto bytes = wire(5, big);
    // A writer thread: the message is larger than the socket buffer.
    std::thread writer([&] { EXPECT_TRUE(send_raw(sp.a.get(), bytes)); });
    MessageReader reader;
    RecvOptions o;
    o.timeout_ms = 1000;
    Message m;
    ASSERT_TRUE(reader.next(sp.b.get(), m, o));
    writer.join();
    EXPECT_EQ(m.payload, big);

    Header h;
    h.msg_size = 8;
    auto b = encode_header(h);
    ASSERT_TRUE(send_raw(sp.a.get(), b));
    expect_error(reader.next(sp.b.get(), m, o), "msg_size 8 is smaller", EPROTO);
    reader.reset();
    const auto cut = wire(6, {1, 2});
    ASSERT_TRUE(send_raw(sp.a.get(), std::span(cut).first(10)));
    sp.a.reset();
    expect_error(reader.next(sp.b.get(), m, o), "peer closed after 10 of 16 bytes", ECONNRESET);
}

}  // namespace
}  // namespace potemkin::vfio_user
