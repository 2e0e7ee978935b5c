// vfio_user::VfioUserServer at the wire level: a raw socket client written here (no client library)
// against the edu model served on a thread. Every command's happy path, the malformed set with
// the exact error replies, and that the server keeps serving after each error and across
// reconnects (the device state survives).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/log.hpp"
#include "machine/builtins.hpp"
#include "pci/registers.hpp"
#include "sdk/device_model.hpp"
#include "unix_socket.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/server.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin::vfio_user {
using sdk::DeviceModel;
using sdk::ModelRegistry;
namespace {

constexpr int kTimeoutMs = 2000;  // generous: only reached when something is broken

std::span<const uint8_t> as_bytes(const std::vector<uint8_t>& v) {
    return {v.data(), v.size()};
}

std::vector<uint8_t> le32(uint32_t v) {
    std::vector<uint8_t> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
}
std::vector<uint8_t> le64(uint64_t v) {
    std::vector<uint8_t> b(8);
    std::memcpy(b.data(), &v, 8);
    return b;
}

bool readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

// True when the server closed the connection (EOF within the timeout).
bool closed_by_peer(int fd) {
    if (!readable(fd, kTimeoutMs)) return false;
    uint8_t b;
    return ::recv(fd, &b, 1, 0) == 0;
}

class VfioUserServerTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(machine::register_builtins());
        char tmpl[] = "/tmp/potemkin-vfu-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = dir_ + "/edu.sock";
        auto model = make_model();
        ASSERT_TRUE(model) << model.error().message;
        VfioUserServerSettings s;
        s.socket_path = path_;
        s.io_timeout_ms = 500;
        s.label = "edu";
        configure(s);
        auto server = VfioUserServer::create(std::move(model).value(), s);
        ASSERT_TRUE(server) << server.error().message;
        server_ = std::move(server).value();
        thread_ = std::thread([this] { run_result_ = server_->run().has_value(); });
    }
    // Settings a test suite changes (after the defaults above).
    virtual void configure(VfioUserServerSettings&) {}
    // The model served: edu unless a test suite says otherwise.
    virtual Result<std::unique_ptr<DeviceModel>> make_model() {
        return ModelRegistry::builtin().create("edu", {});
    }
    void TearDown() override {
        if (server_) server_->stop();
        if (thread_.joinable()) thread_.join();
        EXPECT_TRUE(run_result_);
        server_.reset();
        EXPECT_FALSE(std::filesystem::exists(path_));  // unlinked on exit
        std::filesystem::remove_all(dir_);
    }

    UniqueFd connect_raw() { return test_support::connect_unix(path_); }
    UniqueFd connect_negotiated() {
        UniqueFd fd = connect_raw();
        Version v;
        auto r = request(fd.get(), Command::version, encode_version(v));
        EXPECT_TRUE(r && !r->header.is_error());
        return fd;
    }

    // Sends a command and returns the reply (error replies included: check header.is_error()).
    Result<Message> request(int fd, Command cmd, const std::vector<uint8_t>& payload,
                            std::span<const int> fds = {}, uint32_t extra_flags = 0) {
        Header h;
        h.msg_id = ++msg_id_;
        h.cmd = static_cast<uint16_t>(cmd);
        h.flags = kTypeCommand | extra_flags;
        POTEMKIN_TRY(send_message(fd, h, as_bytes(payload), fds));
        return receive(fd, h);
    }
    Result<Message> receive(int fd, const Header& sent) {
        RecvOptions o;
        o.timeout_ms = kTimeoutMs;
        auto m = recv_message(fd, o);
        if (!m) return m;
        EXPECT_TRUE(m->header.is_reply());
        EXPECT_EQ(m->header.msg_id, sent.msg_id);
        EXPECT_EQ(m->header.cmd, sent.cmd);
        return m;
    }
    // The request must get an error reply with `err` (and no payload).
    void expect_error_reply(int fd, Command cmd, const std::vector<uint8_t>& payload, int err,
                            std::span<const int> fds = {}) {
        auto r = request(fd, cmd, payload, fds);
        ASSERT_TRUE(r) << r.error().message;
        EXPECT_TRUE(r->header.is_error()) << command_name(cmd);
        EXPECT_EQ(r->header.flags, 0x21u);
        EXPECT_EQ(r->header.error_no, static_cast<uint32_t>(err));
        EXPECT_EQ(r->header.msg_size, 16u);
    }

    Result<std::vector<uint8_t>> region_read(int fd, uint32_t region, uint64_t offset,
                                             uint32_t count) {
        auto r = request(fd, Command::region_read, encode_region_access(offset, region, count));
        if (!r) return fail(r.error());
        if (r->header.is_error()) return failf("error reply {}", r->header.error_no);
        auto a = decode_region_access(Command::region_read, true, r->payload, 1u << 20);
        if (!a) return fail(a.error());
        EXPECT_EQ(a->offset, offset);
        EXPECT_EQ(a->region, region);
        EXPECT_EQ(a->count, count);
        return a->data;
    }
    uint32_t read32(int fd, uint32_t region, uint64_t offset) {
        auto d = region_read(fd, region, offset, 4);
        EXPECT_TRUE(d) << d.error().message;
        uint32_t v = 0;
        if (d && d->size() == 4) std::memcpy(&v, d->data(), 4);
        return v;
    }
    void write_bytes(int fd, uint32_t region, uint64_t offset, const std::vector<uint8_t>& data) {
        auto r =
            request(fd, Command::region_write,
                    encode_region_access(offset, region, static_cast<uint32_t>(data.size()), data));
        ASSERT_TRUE(r) << r.error().message;
        ASSERT_FALSE(r->header.is_error()) << r->header.error_no;
        EXPECT_EQ(r->header.msg_size, 32u);  // the 16-byte struct echoed, no data
    }
    void write32(int fd, uint32_t region, uint64_t offset, uint32_t v) {
        write_bytes(fd, region, offset, le32(v));
    }
    void set_irq_eventfd(int sock, uint32_t index, int efd) {
        IrqSet s;
        s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger;
        s.index = index;
        s.count = 1;
        int fds[1] = {efd};
        auto r = request(sock, Command::device_set_irqs, encode_irq_set(s), fds);
        ASSERT_TRUE(r);
        ASSERT_FALSE(r->header.is_error()) << r->header.error_no;
    }
    // The server still answers a good request on this connection.
    void expect_alive(int fd) { EXPECT_EQ(read32(fd, 7, 0), 0x11e81234u); }
    // Command register: bus mastering on or off (edu's DMA needs it, as a driver sets it).
    void bus_master(int fd, bool on) {
        write_bytes(fd, 7, pci::reg::kCommand,
                    {static_cast<uint8_t>(on ? pci::command::kBusMaster : 0), 0});
    }
    // Edu's DMA runs after the reply to the command write; the reply to the next request comes
    // after it has run (deferred work runs before the server reads on).
    void expect_dma_done(int fd) { EXPECT_EQ(read32(fd, 0, 0x98) & 1, 0u); }
    // Starts an edu DMA (registers 0x80-0x98) and waits for the command write's reply.
    void start_dma(int fd, uint64_t src, uint64_t dst, uint64_t count, uint64_t cmd) {
        write_bytes(fd, 0, 0x80, le64(src));
        write_bytes(fd, 0, 0x88, le64(dst));
        write_bytes(fd, 0, 0x90, le64(count));
        write_bytes(fd, 0, 0x98, le64(cmd));
    }
    // The next message on `fd` must be the server's DMA request `cmd`.
    Message expect_dma_request(int fd, Command cmd) {
        RecvOptions o;
        o.timeout_ms = kTimeoutMs;
        auto m = recv_message(fd, o);
        EXPECT_TRUE(m) << m.error().message;
        if (!m) return {};
        EXPECT_TRUE(m->header.is_command());
        EXPECT_EQ(m->header.cmd, static_cast<uint16_t>(cmd)) << command_name(m->header.cmd);
        return std::move(m).value();
    }

    std::string dir_, path_;
    std::unique_ptr<VfioUserServer> server_;
    std::thread thread_;
    bool run_result_ = false;
    uint16_t msg_id_ = 0;
};

// ---- VERSION -----------------------------------------------------------------------------------

TEST_F(VfioUserServerTest, VersionNegotiation) {
    UniqueFd fd = connect_raw();
    Version v;
    v.minor = 7;  // newer than ours: the reply says 2
    v.caps.max_msg_fds = 4;
    auto r = request(fd.get(), Command::version, encode_version(v));
    ASSERT_TRUE(r);
    ASSERT_FALSE(r->header.is_error());
    auto back = decode_version(r->payload);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->major, 0);
    EXPECT_EQ(back->minor, 2);
    EXPECT_EQ(back->caps.max_msg_fds, 8u);
    EXPECT_EQ(back->caps.max_data_xfer_size, 1048576u);
    // QEMU >= 10.1 refuses a server offering more than 65535 (VFIO_USER_DEF_MAP_MAX).
    ASSERT_TRUE(back->caps.max_dma_maps);
    EXPECT_LE(*back->caps.max_dma_maps, 65535u);
    EXPECT_GT(*back->caps.max_dma_maps, 0u);
    // No twin socket offered, none given.
    EXPECT_FALSE(back->caps.twin_socket_supported);
    EXPECT_TRUE(r->fds.empty());
    // Only once per connection.
    expect_error_reply(fd.get(), Command::version, encode_version(v), EINVAL);
    expect_alive(fd.get());
}

TEST_F(VfioUserServerTest, VersionBadMajorThenGoodOne) {
    UniqueFd fd = connect_raw();
    Version v;
    v.major = 1;
    expect_error_reply(fd.get(), Command::version, encode_version(v), EINVAL);
    v.major = 0;
    auto r = request(fd.get(), Command::version, encode_version(v));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
}

TEST_F(VfioUserServerTest, VersionUnknownCapabilitiesIgnoredAndNoJson) {
    UniqueFd fd = connect_raw();
    std::vector<uint8_t> p = {0, 0, 2, 0};
    std::string json = R"({"capabilities":{"max_msg_fds":2,"shiny_new_thing":{"x":1}},"z":0})";
    p.insert(p.end(), json.begin(), json.end());
    p.push_back(0);
    auto r = request(fd.get(), Command::version, p);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
    // And without any JSON on a second connection.
    UniqueFd fd2;
    fd.reset();
    fd2 = connect_raw();
    auto r2 = request(fd2.get(), Command::version, std::vector<uint8_t>{0, 0, 2, 0});
    ASSERT_TRUE(r2);
    EXPECT_FALSE(r2->header.is_error());
}

TEST_F(VfioUserServerTest, VersionMalformed) {
    UniqueFd fd = connect_raw();
    std::vector<uint8_t> p = {0, 0, 2, 0, '{', 'x', 0};
    expect_error_reply(fd.get(), Command::version, p, EINVAL);
    p = {0, 0, 2, 0, '{', '}'};  // not NUL-terminated
    expect_error_reply(fd.get(), Command::version, p, EINVAL);
    expect_error_reply(fd.get(), Command::version, std::vector<uint8_t>{0, 0}, EINVAL);
    // A VERSION with fds.
    UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
    int fds[1] = {ev.get()};
    expect_error_reply(fd.get(), Command::version, encode_version({}), EINVAL, fds);
    // Still negotiable afterwards.
    auto r = request(fd.get(), Command::version, encode_version({}));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
}

TEST_F(VfioUserServerTest, CommandBeforeVersionIsRefused) {
    UniqueFd fd = connect_raw();
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(0, 7, 4), EINVAL);
    auto r = request(fd.get(), Command::version, encode_version({}));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
    expect_alive(fd.get());
}

// ---- Happy paths -------------------------------------------------------------------------------

TEST_F(VfioUserServerTest, DeviceGetInfo) {
    UniqueFd fd = connect_negotiated();
    auto r = request(fd.get(), Command::device_get_info, encode_device_info({}));
    ASSERT_TRUE(r);
    auto d = decode_device_info(r->payload);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->argsz, 16u);
    EXPECT_EQ(d->flags, 3u);  // PCI | RESET
    EXPECT_EQ(d->num_regions, 9u);
    EXPECT_EQ(d->num_irqs, 5u);
    DeviceInfo small;
    small.argsz = 8;
    expect_error_reply(fd.get(), Command::device_get_info, encode_device_info(small), EINVAL);
}

TEST_F(VfioUserServerTest, RegionInfo) {
    UniqueFd fd = connect_negotiated();
    auto info = [&](uint32_t index) {
        auto r = request(fd.get(), Command::device_get_region_info,
                         encode_region_info_request(index, 32));
        EXPECT_TRUE(r && !r->header.is_error());
        EXPECT_TRUE(r->fds.empty());
        auto i = decode_region_info_reply(r->payload);
        EXPECT_TRUE(i);
        return *i;
    };
    auto config = info(7);
    EXPECT_EQ(config.size, 256u);
    EXPECT_EQ(config.flags, kRegionFlagRead | kRegionFlagWrite);
    EXPECT_EQ(config.argsz, 32u);
    auto bar0 = info(0);
    EXPECT_EQ(bar0.size, 1u << 20);
    EXPECT_EQ(bar0.flags, kRegionFlagRead | kRegionFlagWrite);
    auto bar1 = info(1);  // edu has BAR0 only
    EXPECT_EQ(bar1.size, 0u);
    EXPECT_EQ(bar1.flags, 0u);
    auto vga = info(8);
    EXPECT_EQ(vga.size, 0u);
    expect_error_reply(fd.get(), Command::device_get_region_info, encode_region_info_request(9, 32),
                       EINVAL);
    expect_error_reply(fd.get(), Command::device_get_region_info, encode_region_info_request(0, 16),
                       EINVAL);
    expect_alive(fd.get());
}

TEST_F(VfioUserServerTest, RegionIoFdsAndIrqInfo) {
    UniqueFd fd = connect_negotiated();
    RegionIoFds io;
    io.index = 0;
    auto r = request(fd.get(), Command::device_get_region_io_fds, encode_region_io_fds(io));
    ASSERT_TRUE(r && !r->header.is_error());
    EXPECT_EQ(r->payload.size(), 16u);
    auto irq = [&](uint32_t index) {
        IrqInfo i;
        i.index = index;
        auto rr = request(fd.get(), Command::device_get_irq_info, encode_irq_info(i));
        EXPECT_TRUE(rr && !rr->header.is_error());
        return *decode_irq_info(rr->payload);
    };
    EXPECT_EQ(irq(kIrqIndexIntx).count, 1u);
    EXPECT_NE(irq(kIrqIndexIntx).flags & kIrqInfoFlagEventfd, 0u);
    EXPECT_EQ(irq(kIrqIndexMsi).count, 1u);  // edu: MSI with 1 vector
    EXPECT_EQ(irq(kIrqIndexMsix).count, 0u);
    EXPECT_EQ(irq(kIrqIndexErr).count, 0u);
    EXPECT_EQ(irq(kIrqIndexReq).count, 0u);
    IrqInfo bad;
    bad.index = 5;
    expect_error_reply(fd.get(), Command::device_get_irq_info, encode_irq_info(bad), EINVAL);
}

TEST_F(VfioUserServerTest, ConfigReadGivesEduIds) {
    UniqueFd fd = connect_negotiated();
    EXPECT_EQ(read32(fd.get(), 7, 0), 0x11e81234u);
    // An unaligned config access is served (the notes reject none; config space is bytes).
    auto d = region_read(fd.get(), 7, 1, 2);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, (std::vector<uint8_t>{0x12, 0xe8}));
    // count 0: a header-only reply.
    auto r = request(fd.get(), Command::region_read, encode_region_access(0, 7, 0));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
    EXPECT_EQ(r->header.msg_size, 16u);
}

TEST_F(VfioUserServerTest, Bar0LivenessWriteReadsBackInverted) {
    UniqueFd fd = connect_negotiated();
    EXPECT_EQ(read32(fd.get(), 0, 0), 0x010000edu);
    write32(fd.get(), 0, 4, 0x12345678);
    EXPECT_EQ(read32(fd.get(), 0, 4), ~0x12345678u);
}

TEST_F(VfioUserServerTest, DeviceResetRestoresPowerOnState) {
    UniqueFd fd = connect_negotiated();
    write32(fd.get(), 0, 4, 0x12345678);
    auto r = request(fd.get(), Command::device_reset, {});
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
    EXPECT_EQ(read32(fd.get(), 0, 4), 0u);  // edu reads ~liveness; reset clears it to 0
}

TEST_F(VfioUserServerTest, DmaMapMemfdZeroCopy) {
    UniqueFd fd = connect_negotiated();
    UniqueFd mem(::memfd_create("guest-ram", MFD_CLOEXEC));
    ASSERT_EQ(0, ::ftruncate(mem.get(), 0x10000));
    auto* ram = static_cast<uint8_t*>(
        ::mmap(nullptr, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(), 0));
    ASSERT_NE(ram, MAP_FAILED);
    for (int i = 0; i < 16; ++i) ram[0x1000 + i] = static_cast<uint8_t>(0xa0 + i);
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x10000;
    int fds[1] = {mem.get()};
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m), fds);
    ASSERT_TRUE(r);
    ASSERT_FALSE(r->header.is_error()) << r->header.error_no;
    EXPECT_EQ(r->header.msg_size, 16u);
    // Mapping the same thing again is idempotent.
    r = request(fd.get(), Command::dma_map, encode_dma_map(m), fds);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());

    // RAM 0x101000 → EDU 0x40000, then EDU 0x40000 → RAM 0x102000.
    bus_master(fd.get(), true);
    start_dma(fd.get(), 0x101000, 0x40000, 16, 1);
    start_dma(fd.get(), 0x40000, 0x102000, 16, 3);
    expect_dma_done(fd.get());
    for (int i = 0; i < 16; ++i) EXPECT_EQ(ram[0x2000 + i], 0xa0 + i) << i;

    DmaUnmap u;
    u.addr = 0x100000;
    u.size = 0x10000;
    r = request(fd.get(), Command::dma_unmap, encode_dma_unmap(u));
    ASSERT_TRUE(r);
    ASSERT_FALSE(r->header.is_error());
    EXPECT_EQ(r->payload.size(), 24u);
    // Unmapped: edu's DMA now fails and writes nothing.
    std::memset(ram + 0x2000, 0, 16);
    write_bytes(fd.get(), 0, 0x98, le64(3));
    expect_dma_done(fd.get());
    EXPECT_EQ(ram[0x2000], 0);
    ::munmap(ram, 0x10000);
}

TEST_F(VfioUserServerTest, DmaMapErrors) {
    UniqueFd fd = connect_negotiated();
    UniqueFd mem(::memfd_create("guest-ram", MFD_CLOEXEC));
    ASSERT_EQ(0, ::ftruncate(mem.get(), 0x4000));
    int one[1] = {mem.get()};
    int two[2] = {mem.get(), mem.get()};
    DmaMap m;
    m.addr = 0;
    m.size = 0x4000;
    expect_error_reply(fd.get(), Command::dma_map, encode_dma_map(m), EINVAL, two);
    m.size = 0x8000;  // past the end of the memfd: would SIGBUS
    expect_error_reply(fd.get(), Command::dma_map, encode_dma_map(m), EINVAL, one);
    m.size = 0x4000;
    m.flags |= kDmaMapFlagMmap;  // MMAP without an fd
    expect_error_reply(fd.get(), Command::dma_map, encode_dma_map(m), EINVAL);
    m.flags = 3;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m), one);
    ASSERT_TRUE(r && !r->header.is_error());
    // Spec, DMA_MAP: "A command to map over an existing region must be failed by the server
    // with EEXIST"; only an identical map again is accepted.
    m.addr = 0x2000;  // overlaps
    expect_error_reply(fd.get(), Command::dma_map, encode_dma_map(m), EEXIST, one);
    m.addr = 0;
    m.offset = 0x1000;  // same range, different offset
    m.size = 0x3000;
    expect_error_reply(fd.get(), Command::dma_map, encode_dma_map(m), EEXIST, one);
    m.offset = 0;
    m.size = 0x4000;
    m.flags = kDmaMapFlagRead;  // same range, other rights
    expect_error_reply(fd.get(), Command::dma_map, encode_dma_map(m), EEXIST, one);
    m.flags = 3;
    // Spec, DMA_UNMAP: the range must match a mapping exactly; ENOENT (as libvfio-user).
    DmaUnmap u;
    u.addr = 0x1000;
    u.size = 0x1000;  // inside a mapping, not one
    expect_error_reply(fd.get(), Command::dma_unmap, encode_dma_unmap(u), ENOENT);
    u.addr = 0x10000;  // nothing there
    expect_error_reply(fd.get(), Command::dma_unmap, encode_dma_unmap(u), ENOENT);
    u.addr = u.size = 0;
    u.flags = kDmaUnmapFlagAll;
    r = request(fd.get(), Command::dma_unmap, encode_dma_unmap(u));
    ASSERT_TRUE(r && !r->header.is_error());
    auto short_map = encode_dma_map(m);
    short_map.resize(24);
    expect_error_reply(fd.get(), Command::dma_map, short_map, EINVAL);
    expect_alive(fd.get());
}

// QEMU answers DMA only from its main loop, while the vCPU that wrote the DMA command waits
// for the reply: the reply must come first, the DMA request after it, and requests the client
// sends while the server waits for the DMA reply are served (a status read during DMA).
TEST_F(VfioUserServerTest, DmaByMessageComesAfterTheReplyAndRequestsAreServedMeanwhile) {
    UniqueFd fd = connect_negotiated();
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    bus_master(fd.get(), true);
    // The command write's reply arrives first: write_bytes receives it as the next message.
    start_dma(fd.get(), 0x100010, 0x40000, 8, 1);
    Message dma = expect_dma_request(fd.get(), Command::dma_read);
    auto a = decode_dma_access(Command::dma_read, false, dma.payload, 1u << 20);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->addr, 0x100010u);
    EXPECT_EQ(a->count, 8u);
    // The device is busy with our DMA: its registers still answer, the transfer shows running,
    // and a write to a DMA register is ignored (edu.c) but answered.
    EXPECT_EQ(read32(fd.get(), 0, 0x98) & 1, 1u);
    EXPECT_EQ(read32(fd.get(), 0, 0x00), 0x010000edu);
    write_bytes(fd.get(), 0, 0x80, le64(0x100800));
    EXPECT_EQ(read32(fd.get(), 0, 0x80), 0x100010u);
    const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7, 8};
    ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header),
                             as_bytes(encode_dma_access(0x100010, 8, data))));
    expect_dma_done(fd.get());
    // The EDU buffer now holds the bytes (edu has no window onto it): copy them back out and
    // check what the server's DMA_WRITE carries.
    start_dma(fd.get(), 0x40000, 0x100020, 8, 3);
    dma = expect_dma_request(fd.get(), Command::dma_write);
    a = decode_dma_access(Command::dma_write, false, dma.payload, 1u << 20);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->addr, 0x100020u);
    EXPECT_EQ(a->data, data);
    // QEMU's client answers DMA_WRITE with the bare header (the spec echoes addr and count,
    // as the twin socket test does): accepted as done, edu refuses nothing.
    testing::internal::CaptureStderr();
    ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header)));
    expect_dma_done(fd.get());
    const std::string log = testing::internal::GetCapturedStderr();
    EXPECT_EQ(log.find("DMA refused"), std::string::npos) << log;
    expect_alive(fd.get());
}

// QEMU 10.2's VERSION capabilities, as its client sends them (hw/vfio-user/proxy.c caps_json;
// the client offers version 0.0).
std::vector<uint8_t> qemu_version_payload() {
    const std::string json =
        R"({"capabilities":{"migration":{"pgsize":4096,"max_bitmap_size":268435456},)"
        R"("max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,)"
        R"("write_multiple":true}})";
    std::vector<uint8_t> p = {0, 0, 0, 0};
    p.insert(p.end(), json.begin(), json.end());
    p.push_back(0);
    return p;
}

// QEMU's client lays DMA_READ/DMA_WRITE out as VFIOUserDMARW (u64 addr, u32 count, data at
// payload offset 12, every message 32 + N bytes). With the default (auto) layout the server
// recognises QEMU by "write_multiple" and speaks that layout: the edu DMA round trip that
// came back shifted by 4 bytes (and a refused DMA_READ reply) before.
TEST_F(VfioUserServerTest, QemuClientGetsDmaInQemuLayout) {
    testing::internal::CaptureStderr();
    const log::Level saved = log::level();
    log::set_level(log::Level::info);
    UniqueFd fd = connect_raw();
    auto v = request(fd.get(), Command::version, qemu_version_payload());
    ASSERT_TRUE(v && !v->header.is_error());
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    bus_master(fd.get(), true);

    // RAM -> edu: the server's DMA_READ is 32 bytes: addr, u32 count, 4 zero bytes.
    start_dma(fd.get(), 0x100010, 0x40000, 8, 1);
    Message dma = expect_dma_request(fd.get(), Command::dma_read);
    EXPECT_EQ(dma.header.msg_size, 32u);
    EXPECT_EQ(dma.payload,
              (std::vector<uint8_t>{0x10, 0, 0x10, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0}));
    // QEMU's reply: msg_size 8 + 32, the data at payload offset 12, 4 stray bytes after it.
    const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<uint8_t> reply = {0x10, 0, 0x10, 0, 0, 0, 0, 0, 8, 0, 0, 0};
    reply.insert(reply.end(), data.begin(), data.end());
    reply.insert(reply.end(), {0xee, 0xee, 0xee, 0xee});
    ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header), as_bytes(reply)));
    expect_dma_done(fd.get());

    // edu -> RAM: the server's DMA_WRITE is 8 + 32 bytes with the data at payload offset 12,
    // which is where QEMU reads it (pci_dma_write of &msg->data).
    start_dma(fd.get(), 0x40000, 0x100020, 8, 3);
    dma = expect_dma_request(fd.get(), Command::dma_write);
    EXPECT_EQ(dma.header.msg_size, 40u);
    std::vector<uint8_t> expect = {0x20, 0, 0x10, 0, 0, 0, 0, 0, 8, 0, 0, 0};
    expect.insert(expect.end(), data.begin(), data.end());
    expect.insert(expect.end(), {0, 0, 0, 0});
    EXPECT_EQ(dma.payload, expect);
    // QEMU answers a DMA_WRITE with the bare header.
    ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header)));
    expect_dma_done(fd.get());
    expect_alive(fd.get());
    const std::string log = testing::internal::GetCapturedStderr();
    log::set_level(saved);
    EXPECT_NE(log.find("edu: DMA_READ/DMA_WRITE in the qemu layout (auto: the client offered "
                       "\"write_multiple\", which only QEMU's client sends)"),
              std::string::npos)
        << log;
    EXPECT_EQ(log.find("DMA refused"), std::string::npos) << log;
    EXPECT_EQ(log.find("→ error"), std::string::npos) << log;
}

// The spec layout for a client that shows no sign of being QEMU's, logged as such.
TEST_F(VfioUserServerTest, OtherClientsGetDmaInSpecLayout) {
    testing::internal::CaptureStderr();
    const log::Level saved = log::level();
    log::set_level(log::Level::info);
    UniqueFd fd = connect_negotiated();
    log::set_level(saved);
    const std::string log = testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("edu: DMA_READ/DMA_WRITE in the spec layout (auto: no sign of QEMU's "
                       "client)"),
              std::string::npos)
        << log;
}

TEST(VfioUserServerDmaLayout, SettingParsesAndChoosesPerClient) {
    EXPECT_EQ(parse_dma_layout_setting("auto").value(), DmaLayoutSetting::automatic);
    EXPECT_EQ(parse_dma_layout_setting("spec").value(), DmaLayoutSetting::spec);
    EXPECT_EQ(parse_dma_layout_setting("qemu").value(), DmaLayoutSetting::qemu);
    auto bad = parse_dma_layout_setting("QEMU");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "DMA layout 'QEMU': expected auto, spec or qemu");
    EXPECT_EQ(bad.error().sys_errno, EINVAL);
    for (auto s : {DmaLayoutSetting::automatic, DmaLayoutSetting::spec, DmaLayoutSetting::qemu})
        EXPECT_EQ(parse_dma_layout_setting(dma_layout_setting_name(s)).value(), s);

    Capabilities qemu;
    qemu.write_multiple = true;
    Capabilities qemu_false;  // the key is the tell, not its value
    qemu_false.write_multiple = false;
    const Capabilities other;
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::automatic, qemu).layout, DmaLayout::qemu);
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::automatic, qemu_false).layout, DmaLayout::qemu);
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::automatic, other).layout, DmaLayout::spec);
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::spec, qemu).layout, DmaLayout::spec);
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::spec, qemu).reason, "set to spec");
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::qemu, other).layout, DmaLayout::qemu);
    EXPECT_EQ(choose_dma_layout(DmaLayoutSetting::qemu, other).reason, "set to qemu");
}

// --dma-layout qemu: QEMU's layout for a client that did not say it is QEMU's.
class VfioUserServerQemuLayoutTest : public VfioUserServerTest {
  protected:
    void configure(VfioUserServerSettings& s) override { s.dma_layout = DmaLayoutSetting::qemu; }
};

TEST_F(VfioUserServerQemuLayoutTest, ForcedQemuLayoutForAnyClient) {
    UniqueFd fd = connect_negotiated();
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    bus_master(fd.get(), true);
    start_dma(fd.get(), 0x100040, 0x40000, 4, 1);
    Message dma = expect_dma_request(fd.get(), Command::dma_read);
    auto a = decode_dma_access(DmaLayout::qemu, Command::dma_read, false, dma.payload, 1u << 20);
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_EQ(a->addr, 0x100040u);
    EXPECT_EQ(a->count, 4u);
    // The reply in QEMU's layout completes the transfer.
    ASSERT_TRUE(
        send_message(fd.get(), reply_header(dma.header),
                     as_bytes(encode_dma_access(DmaLayout::qemu, 0x100040, 4, le32(0xc0de)))));
    expect_dma_done(fd.get());
    expect_alive(fd.get());
}

// Spec, VERSION "twin_socket": the server hands over one end of a socketpair as fd_index 0
// and sends its DMA requests there; the request socket carries only requests and replies.
TEST_F(VfioUserServerTest, TwinSocketCarriesTheServersDmaRequests) {
    UniqueFd fd = connect_raw();
    Version v;
    v.caps.twin_socket_supported = true;
    auto r = request(fd.get(), Command::version, encode_version(v));
    ASSERT_TRUE(r && !r->header.is_error());
    auto back = decode_version(r->payload);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_TRUE(back->caps.twin_socket_supported);
    ASSERT_EQ(back->caps.twin_socket_fd_index, 0u);
    ASSERT_EQ(r->fds.size(), 1u);
    UniqueFd twin_end = std::move(r->fds[0]);  // ours before r is reused
    const int twin = twin_end.get();

    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    bus_master(fd.get(), true);
    start_dma(fd.get(), 0x100010, 0x40000, 4, 1);
    Message dma = expect_dma_request(twin, Command::dma_read);
    // Meanwhile the request socket serves requests as before.
    EXPECT_EQ(read32(fd.get(), 0, 0x98) & 1, 1u);
    const std::vector<uint8_t> data = {9, 8, 7, 6};
    ASSERT_TRUE(send_message(twin, reply_header(dma.header),
                             as_bytes(encode_dma_access(0x100010, 4, data))));
    expect_dma_done(fd.get());
    start_dma(fd.get(), 0x40000, 0x100040, 4, 3);
    dma = expect_dma_request(twin, Command::dma_write);
    auto a = decode_dma_access(Command::dma_write, false, dma.payload, 1u << 20);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->data, data);
    ASSERT_TRUE(
        send_message(twin, reply_header(dma.header), as_bytes(encode_dma_access(0x100040, 4))));
    expect_dma_done(fd.get());
    // Nothing but replies ever came on the request socket (each read matched its request).
    pollfd p{fd.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0);
}

TEST_F(VfioUserServerTest, NoTwinSocketWithoutFdsToCarryIt) {
    UniqueFd fd = connect_raw();
    Version v;
    v.caps.twin_socket_supported = true;
    v.caps.max_msg_fds = 0;
    auto r = request(fd.get(), Command::version, encode_version(v));
    ASSERT_TRUE(r && !r->header.is_error());
    auto back = decode_version(r->payload);
    ASSERT_TRUE(back);
    EXPECT_FALSE(back->caps.twin_socket_supported);
    EXPECT_FALSE(back->caps.twin_socket_fd_index);
    EXPECT_TRUE(r->fds.empty());
}

// A client that keeps its DMA reply back and sends a command on the twin socket instead
// breaks the protocol: the connection goes.
TEST_F(VfioUserServerTest, CommandOnTheTwinSocketDropsTheConnection) {
    UniqueFd fd = connect_raw();
    Version v;
    v.caps.twin_socket_supported = true;
    auto r = request(fd.get(), Command::version, encode_version(v));
    ASSERT_TRUE(r && r->fds.size() == 1);
    UniqueFd twin = std::move(r->fds[0]);
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    bus_master(fd.get(), true);
    start_dma(fd.get(), 0x100010, 0x40000, 4, 1);
    expect_dma_request(twin.get(), Command::dma_read);
    Header h;
    h.msg_id = 1;
    h.cmd = static_cast<uint16_t>(Command::region_read);
    ASSERT_TRUE(send_message(twin.get(), h, as_bytes(encode_region_access(0, 0, 4))));
    EXPECT_TRUE(closed_by_peer(fd.get()));
}

// Bus Master Enable clear (the power-on state): edu's DMA is refused by the server, nothing
// reaches guest memory, and edu still signals completion (its documented behaviour).
TEST_F(VfioUserServerTest, EduDmaIsRefusedWhileBusMasteringIsOff) {
    UniqueFd fd = connect_negotiated();
    UniqueFd mem(::memfd_create("guest-ram", MFD_CLOEXEC));
    ASSERT_EQ(0, ::ftruncate(mem.get(), 0x1000));
    auto* ram = static_cast<uint8_t*>(
        ::mmap(nullptr, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(), 0));
    ASSERT_NE(ram, MAP_FAILED);
    ram[0x10] = 0x3C;
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    int fds[1] = {mem.get()};
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m), fds);
    ASSERT_TRUE(r && !r->header.is_error());
    // RAM → EDU, then EDU → RAM 0x100100: with mastering off neither moves a byte.
    start_dma(fd.get(), 0x100010, 0x40000, 1, 1);
    start_dma(fd.get(), 0x40000, 0x100100, 1, 3 | 4);
    expect_dma_done(fd.get());
    EXPECT_EQ(ram[0x100], 0);
    EXPECT_EQ(read32(fd.get(), 0, 0x24), 0x100u);  // completion signalled all the same
    bus_master(fd.get(), true);
    start_dma(fd.get(), 0x100010, 0x40000, 1, 1);
    start_dma(fd.get(), 0x40000, 0x100100, 1, 3);
    expect_dma_done(fd.get());
    EXPECT_EQ(ram[0x100], 0x3C);
    ::munmap(ram, 0x1000);
}

TEST_F(VfioUserServerTest, MsiEventfdFiresOnEduRaise) {
    UniqueFd fd = connect_negotiated();
    UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    set_irq_eventfd(fd.get(), kIrqIndexMsi, ev.get());
    write32(fd.get(), 0, 0x60, 1);  // raise
    ASSERT_TRUE(readable(ev.get(), kTimeoutMs));
    uint64_t n = 0;
    ASSERT_EQ(::read(ev.get(), &n, 8), 8);
    EXPECT_EQ(n, 1u);
    // Masked: no signal until unmasked, then the pending one arrives.
    IrqSet mask;
    mask.flags = kIrqSetDataNone | kIrqSetActionMask;
    mask.index = kIrqIndexMsi;
    mask.count = 1;
    auto r = request(fd.get(), Command::device_set_irqs, encode_irq_set(mask));
    ASSERT_TRUE(r && !r->header.is_error());
    write32(fd.get(), 0, 0x60, 2);
    EXPECT_FALSE(readable(ev.get(), 0));
    mask.flags = kIrqSetDataNone | kIrqSetActionUnmask;
    r = request(fd.get(), Command::device_set_irqs, encode_irq_set(mask));
    ASSERT_TRUE(r && !r->header.is_error());
    EXPECT_TRUE(readable(ev.get(), kTimeoutMs));
    // Disabling MSI (count 0) brings the device back to INTx: no MSI signal any more.
    ASSERT_EQ(::read(ev.get(), &n, 8), 8);
    IrqSet off;
    off.flags = kIrqSetDataNone | kIrqSetActionTrigger;
    off.index = kIrqIndexMsi;
    r = request(fd.get(), Command::device_set_irqs, encode_irq_set(off));
    ASSERT_TRUE(r && !r->header.is_error());
    write32(fd.get(), 0, 0x60, 4);
    EXPECT_FALSE(readable(ev.get(), 0));
}

TEST_F(VfioUserServerTest, IntxEventfdAutomaskAndUnmaskResample) {
    UniqueFd fd = connect_negotiated();
    UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    set_irq_eventfd(fd.get(), kIrqIndexIntx, ev.get());
    write32(fd.get(), 0, 0x60, 1);  // raise: line asserted
    ASSERT_TRUE(readable(ev.get(), kTimeoutMs));
    uint64_t n;
    ASSERT_EQ(::read(ev.get(), &n, 8), 8);
    // Auto-masked: the line stays asserted but nothing more until the unmask...
    write32(fd.get(), 0, 0x60, 2);
    EXPECT_FALSE(readable(ev.get(), 0));
    IrqSet unmask;
    unmask.flags = kIrqSetDataNone | kIrqSetActionUnmask;
    unmask.index = kIrqIndexIntx;
    unmask.count = 1;
    auto r = request(fd.get(), Command::device_set_irqs, encode_irq_set(unmask));
    ASSERT_TRUE(r && !r->header.is_error());
    // ...which resamples: still asserted, so signalled again.
    ASSERT_TRUE(readable(ev.get(), kTimeoutMs));
    ASSERT_EQ(::read(ev.get(), &n, 8), 8);
    // Acknowledge everything: the line drops; an unmask now signals nothing.
    write32(fd.get(), 0, 0x64, 3);
    r = request(fd.get(), Command::device_set_irqs, encode_irq_set(unmask));
    ASSERT_TRUE(r && !r->header.is_error());
    EXPECT_FALSE(readable(ev.get(), 50));

    // The resample eventfd: writing it is an unmask.
    UniqueFd resample(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    unmask.flags = kIrqSetDataEventfd | kIrqSetActionUnmask;
    int fds[1] = {resample.get()};
    r = request(fd.get(), Command::device_set_irqs, encode_irq_set(unmask), fds);
    ASSERT_TRUE(r && !r->header.is_error());
    write32(fd.get(), 0, 0x60, 1);
    ASSERT_TRUE(readable(ev.get(), kTimeoutMs));
    ASSERT_EQ(::read(ev.get(), &n, 8), 8);
    uint64_t one = 1;
    ASSERT_EQ(::write(resample.get(), &one, 8), 8);
    EXPECT_TRUE(readable(ev.get(), kTimeoutMs));
}

TEST_F(VfioUserServerTest, SetIrqsErrors) {
    UniqueFd fd = connect_negotiated();
    UniqueFd e1(::eventfd(0, EFD_CLOEXEC)), e2(::eventfd(0, EFD_CLOEXEC));
    int two[2] = {e1.get(), e2.get()};
    IrqSet s;
    s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger;
    s.index = kIrqIndexMsi;
    s.count = 1;
    expect_error_reply(fd.get(), Command::device_set_irqs, encode_irq_set(s), EINVAL, two);
    s.start = 1;  // edu has one MSI vector
    expect_error_reply(fd.get(), Command::device_set_irqs, encode_irq_set(s), EINVAL,
                       std::span<const int>(two, 1));
    s.start = 0;
    s.flags = kIrqSetDataNone | kIrqSetActionTrigger | kIrqSetActionMask;
    expect_error_reply(fd.get(), Command::device_set_irqs, encode_irq_set(s), EINVAL);
    s.flags = kIrqSetDataBool | kIrqSetActionTrigger;  // no bool bytes
    expect_error_reply(fd.get(), Command::device_set_irqs, encode_irq_set(s), EINVAL);
    s.flags = kIrqSetDataNone | kIrqSetActionTrigger;
    s.index = kIrqIndexErr;  // 0 ERR irqs
    expect_error_reply(fd.get(), Command::device_set_irqs, encode_irq_set(s), EINVAL);
    expect_alive(fd.get());
}

// ---- Framing the server must take: batched and split requests -----------------------------------

TEST_F(VfioUserServerTest, TwoRequestsInOneWriteGetTwoReplies) {
    UniqueFd fd = connect_negotiated();
    std::vector<uint8_t> wire;
    for (uint16_t id : {201, 202}) {
        Header h;
        h.msg_id = id;
        h.cmd = static_cast<uint16_t>(Command::region_read);
        h.msg_size = 32;
        auto head = encode_header(h);
        auto body = encode_region_access(0, 7, 4);  // config: the edu ids
        wire.insert(wire.end(), head.begin(), head.end());
        wire.insert(wire.end(), body.begin(), body.end());
    }
    ASSERT_TRUE(send_raw(fd.get(), wire));
    for (uint16_t id : {201, 202}) {
        Header sent;
        sent.msg_id = id;
        sent.cmd = static_cast<uint16_t>(Command::region_read);
        auto r = receive(fd.get(), sent);
        ASSERT_TRUE(r) << r.error().message;
        auto a = decode_region_access(Command::region_read, true, r->payload, 1u << 20);
        ASSERT_TRUE(a) << a.error().message;
        EXPECT_EQ(a->data, le32(0x11e81234u));
    }
    expect_alive(fd.get());
}

TEST_F(VfioUserServerTest, RequestInPiecesSlowerThanTheBusyWaitIsAssembled) {
    UniqueFd fd = connect_negotiated();
    expect_alive(fd.get());  // the server is in its busy wait now
    Header h;
    h.msg_id = 300;
    h.cmd = static_cast<uint16_t>(Command::region_read);
    h.msg_size = 32;
    auto head = encode_header(h);
    auto body = encode_region_access(0, 7, 4);
    std::vector<uint8_t> wire(head.begin(), head.end());
    wire.insert(wire.end(), body.begin(), body.end());
    // Three pieces 120 ms apart: longer than the server's 50 ms busy wait, well inside its
    // 500 ms io_timeout_ms.
    for (size_t at : {size_t{0}, size_t{10}, size_t{20}}) {
        if (at > 0) std::this_thread::sleep_for(std::chrono::milliseconds(120));
        const size_t n = at == 20 ? wire.size() - 20 : 10;
        ASSERT_TRUE(send_raw(fd.get(), std::span(wire).subspan(at, n)));
    }
    auto r = receive(fd.get(), h);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_FALSE(r->header.is_error());
    expect_alive(fd.get());
}

// ---- Malformed ---------------------------------------------------------------------------------

TEST_F(VfioUserServerTest, ShortHeaderClosesConnection) {
    UniqueFd fd = connect_negotiated();
    const uint8_t half[8] = {1, 0, 9, 0, 32, 0, 0, 0};
    ASSERT_TRUE(send_raw(fd.get(), half));
    ::shutdown(fd.get(), SHUT_WR);
    EXPECT_TRUE(closed_by_peer(fd.get()));
    UniqueFd again = connect_negotiated();
    expect_alive(again.get());
}

TEST_F(VfioUserServerTest, MsgSizeBelowHeaderClosesConnection) {
    UniqueFd fd = connect_negotiated();
    Header h;
    h.cmd = 9;
    h.msg_size = 12;
    auto b = encode_header(h);
    ASSERT_TRUE(send_raw(fd.get(), b));
    EXPECT_TRUE(closed_by_peer(fd.get()));
    UniqueFd again = connect_negotiated();
    expect_alive(again.get());
}

TEST_F(VfioUserServerTest, OversizedMsgSizeClosesConnection) {
    UniqueFd fd = connect_negotiated();
    Header h;
    h.cmd = 10;
    h.msg_size = kServerMaxMsgSize + 1;
    auto b = encode_header(h);
    ASSERT_TRUE(send_raw(fd.get(), b));
    EXPECT_TRUE(closed_by_peer(fd.get()));
    UniqueFd again = connect_negotiated();
    expect_alive(again.get());
}

TEST_F(VfioUserServerTest, ShortBodyTimesOutAndClosesConnection) {
    UniqueFd fd = connect_negotiated();
    Header h;
    h.cmd = 9;
    h.msg_size = 32;
    auto b = encode_header(h);
    ASSERT_TRUE(send_raw(fd.get(), b));  // and no body: the server gives up after 500 ms
    EXPECT_TRUE(closed_by_peer(fd.get()));
    UniqueFd again = connect_negotiated();
    expect_alive(again.get());
}

TEST_F(VfioUserServerTest, MissingPayloadIsEinval) {
    UniqueFd fd = connect_negotiated();
    expect_error_reply(fd.get(), Command::device_get_info, {}, EINVAL);
    expect_error_reply(fd.get(), Command::region_read, std::vector<uint8_t>(8), EINVAL);
    expect_alive(fd.get());
}

TEST_F(VfioUserServerTest, BadRegionIndexAndOutOfBounds) {
    UniqueFd fd = connect_negotiated();
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(0, 9, 4), EINVAL);
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(0, 1, 4),
                       EINVAL);  // absent BAR1
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(254, 7, 4),
                       EINVAL);  // past the end of config space
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(~uint64_t{0} - 1, 0, 4),
                       EINVAL);  // wraps
    expect_error_reply(fd.get(), Command::region_read, encode_region_access((1u << 20) - 2, 0, 4),
                       EINVAL);
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(0, 0, 1048577), EINVAL);
    const std::vector<uint8_t> two = {1, 2};
    expect_error_reply(fd.get(), Command::region_write, encode_region_access(0, 0, 4, two),
                       EINVAL);  // count/data mismatch
    expect_alive(fd.get());
}

// A model that does its DMA inside the register write instead of deferring it: BAR0 offset 0
// takes a guest address and reads 4 bytes from there at once; reading offset 0 gives them.
class InRequestDmaModel final : public DeviceModel {
  public:
    InRequestDmaModel() {
        spec_.name = "inrequest";
        spec_.header.vendor_id = 0x1234;
        spec_.header.device_id = 0x0001;
        spec_.bars[0] = sdk::BarSpec{pci::BarKind::mem32, 4096, false};
    }
    const sdk::DeviceSpec& spec() const override { return spec_; }
    uint64_t bar_read(int, uint64_t, unsigned) override { return value_; }
    void bar_write(int, uint64_t, unsigned, uint64_t address) override {
        uint8_t b[4] = {};
        value_ = services_->dma_read(address, b)
                     ? static_cast<uint32_t>(b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24)
                     : 0xdeadu;
    }
    void reset() override { value_ = 0; }

  private:
    sdk::DeviceSpec spec_;
    uint32_t value_ = 0;
};

class VfioUserServerInRequestDmaTest : public VfioUserServerTest {
  protected:
    Result<std::unique_ptr<DeviceModel>> make_model() override {
        return std::unique_ptr<DeviceModel>(std::make_unique<InRequestDmaModel>());
    }
};

// Works with a client that serves DMA while it waits for its reply (potemkin's): the DMA
// request comes before the write's reply. Logged once per connection: QEMU deadlocks on it.
TEST_F(VfioUserServerInRequestDmaTest, DmaInsideARequestWorksAndIsLoggedOnce) {
    UniqueFd fd = connect_negotiated();
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    write_bytes(fd.get(), 7, pci::reg::kCommand, {pci::command::kBusMaster, 0});
    testing::internal::CaptureStderr();
    for (uint32_t i = 0; i < 2; ++i) {
        Header h;
        h.msg_id = ++msg_id_;
        h.cmd = static_cast<uint16_t>(Command::region_write);
        ASSERT_TRUE(
            send_message(fd.get(), h, as_bytes(encode_region_access(0, 0, 4, le32(0x100040 + i)))));
        Message dma = expect_dma_request(fd.get(), Command::dma_read);
        auto a = decode_dma_access(Command::dma_read, false, dma.payload, 1u << 20);
        ASSERT_TRUE(a);
        EXPECT_EQ(a->addr, 0x100040u + i);
        ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header),
                                 as_bytes(encode_dma_access(a->addr, 4, le32(0xabc0 + i)))));
        auto rep = receive(fd.get(), h);
        ASSERT_TRUE(rep) << rep.error().message;
        EXPECT_FALSE(rep->header.is_error());
        EXPECT_EQ(read32(fd.get(), 0, 0), 0xabc0u + i);
    }
    const std::string log = testing::internal::GetCapturedStderr();
    const auto first = log.find("deadlocks");
    EXPECT_NE(first, std::string::npos) << log;
    EXPECT_EQ(log.find("deadlocks", first + 1), std::string::npos) << "logged twice: " << log;
}

// A request served during a DMA wait that itself does DMA by message would wait inside the
// wait: refused (EBUSY), the device answers, and the outer DMA completes.
TEST_F(VfioUserServerInRequestDmaTest, DmaFromARequestServedDuringADmaWaitIsRefused) {
    UniqueFd fd = connect_negotiated();
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    write_bytes(fd.get(), 7, pci::reg::kCommand, {pci::command::kBusMaster, 0});
    Header outer;
    outer.msg_id = ++msg_id_;
    outer.cmd = static_cast<uint16_t>(Command::region_write);
    ASSERT_TRUE(
        send_message(fd.get(), outer, as_bytes(encode_region_access(0, 0, 4, le32(0x100100)))));
    Message dma = expect_dma_request(fd.get(), Command::dma_read);
    // While the server waits: a second write starting DMA, then a read of the result.
    write_bytes(fd.get(), 0, 0, le32(0x100200));
    EXPECT_EQ(read32(fd.get(), 0, 0), 0xdeadu);
    ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header),
                             as_bytes(encode_dma_access(0x100100, 4, le32(0x600d)))));
    auto rep = receive(fd.get(), outer);
    ASSERT_TRUE(rep) << rep.error().message;
    EXPECT_FALSE(rep->header.is_error());
    EXPECT_EQ(read32(fd.get(), 0, 0), 0x600du);
}

// A DMA_UNMAP served during a DMA wait changes the table the DMA was resolved against: the
// server stays sound (the rest of the transfer still goes to the client, which answers).
TEST_F(VfioUserServerTest, DmaUnmapDuringADmaWaitIsServed) {
    UniqueFd fd = connect_negotiated();
    DmaMap m;
    m.addr = 0x100000;
    m.size = 0x1000;
    auto r = request(fd.get(), Command::dma_map, encode_dma_map(m));
    ASSERT_TRUE(r && !r->header.is_error());
    bus_master(fd.get(), true);
    start_dma(fd.get(), 0x100000, 0x40000, 16, 1);
    Message dma = expect_dma_request(fd.get(), Command::dma_read);
    DmaUnmap u;
    u.addr = 0x100000;
    u.size = 0x1000;
    r = request(fd.get(), Command::dma_unmap, encode_dma_unmap(u));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->header.is_error());
    ASSERT_TRUE(send_message(fd.get(), reply_header(dma.header),
                             as_bytes(encode_dma_access(0x100000, 16, std::vector<uint8_t>(16)))));
    expect_dma_done(fd.get());
    // Unmapped now: the next DMA is refused without a message.
    start_dma(fd.get(), 0x100000, 0x40000, 16, 1);
    expect_dma_done(fd.get());
    expect_alive(fd.get());
}

// The log line of a refused request names the command and msg_id once.
TEST_F(VfioUserServerTest, ErrorLogNamesTheRequestOnce) {
    UniqueFd fd = connect_negotiated();
    testing::internal::CaptureStderr();
    expect_error_reply(fd.get(), static_cast<Command>(99), std::vector<uint8_t>(16), EINVAL);
    expect_error_reply(fd.get(), Command::region_read, {}, EINVAL);  // no payload
    const std::string log = testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("bad command 99"), std::string::npos) << log;
    EXPECT_NE(log.find("REGION_READ (msg_id"), std::string::npos) << log;
    for (const char* twice : {"): cmd 99 (msg_id", "): REGION_READ (msg_id", "edu: edu:"})
        EXPECT_EQ(log.find(twice), std::string::npos) << twice << " in: " << log;
}

TEST_F(VfioUserServerTest, UnknownCommands) {
    UniqueFd fd = connect_negotiated();
    for (uint16_t cmd : {uint16_t{0}, uint16_t{14}, uint16_t{15}, uint16_t{16}, uint16_t{17},
                         uint16_t{99}, uint16_t{0xffff}})
        expect_error_reply(fd.get(), static_cast<Command>(cmd), std::vector<uint8_t>(16), EINVAL);
    // Server-to-client commands sent the wrong way.
    expect_error_reply(fd.get(), Command::dma_read, encode_dma_access(0, 4), EINVAL);
    expect_alive(fd.get());
}

TEST_F(VfioUserServerTest, TooManyFds) {
    UniqueFd fd = connect_negotiated();
    std::vector<UniqueFd> evs;
    std::vector<int> raw;
    for (int i = 0; i < 9; ++i) {
        evs.emplace_back(::eventfd(0, EFD_CLOEXEC));
        raw.push_back(evs.back().get());
    }
    IrqSet s;
    s.flags = kIrqSetDataEventfd | kIrqSetActionTrigger;
    s.index = kIrqIndexMsi;
    s.count = 9;
    expect_error_reply(fd.get(), Command::device_set_irqs, encode_irq_set(s), EINVAL, raw);
    // A command that takes no fds.
    expect_error_reply(fd.get(), Command::region_read, encode_region_access(0, 7, 4), EINVAL,
                       std::span<const int>(raw).first(1));
    expect_alive(fd.get());
}

TEST_F(VfioUserServerTest, NoReplyFlag) {
    UniqueFd fd = connect_negotiated();
    Header h;
    h.msg_id = 500;
    h.cmd = static_cast<uint16_t>(Command::region_write);
    h.flags = kFlagNoReply;
    ASSERT_TRUE(send_message(fd.get(), h, as_bytes(encode_region_access(4, 0, 4, le32(7)))));
    // A bad one with NO_REPLY: no error reply either.
    h.msg_id = 501;
    h.cmd = static_cast<uint16_t>(Command::region_read);
    ASSERT_TRUE(send_message(fd.get(), h, as_bytes(encode_region_access(0, 42, 4))));
    // The next reply is for the next request: nothing came for 500 and 501.
    EXPECT_EQ(read32(fd.get(), 0, 4), ~7u);
}

TEST_F(VfioUserServerTest, WrongMessageType) {
    UniqueFd fd = connect_negotiated();
    Header h;
    h.msg_id = 77;
    h.cmd = static_cast<uint16_t>(Command::region_read);
    h.flags = kTypeReply;
    ASSERT_TRUE(send_message(fd.get(), h, as_bytes(encode_region_access(0, 7, 4))));
    RecvOptions o;
    o.timeout_ms = kTimeoutMs;
    auto r = recv_message(fd.get(), o);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header.msg_id, 77);
    EXPECT_EQ(r->header.flags, 0x21u);
    EXPECT_EQ(r->header.error_no, static_cast<uint32_t>(EINVAL));
    expect_alive(fd.get());
}

// ---- Disconnect
// ----------------------------------------------------------------------------------

TEST_F(VfioUserServerTest, ReconnectKeepsDeviceStateAndDropsClientResources) {
    UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    {
        UniqueFd fd = connect_negotiated();
        write32(fd.get(), 0, 4, 0xcafe0000);
        set_irq_eventfd(fd.get(), kIrqIndexMsi, ev.get());
    }
    UniqueFd fd = connect_negotiated();
    EXPECT_EQ(read32(fd.get(), 0, 4), ~0xcafe0000u);
    // The old client's MSI eventfd is gone and the device is back in INTx mode.
    write32(fd.get(), 0, 0x60, 1);
    EXPECT_FALSE(readable(ev.get(), 0));
    write32(fd.get(), 0, 0x64, 1);
}

}  // namespace
}  // namespace potemkin::vfio_user
