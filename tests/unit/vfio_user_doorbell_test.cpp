// Doorbells (sdk::DoorbellSpec) over vfio-user, and the client's posted writes against the real
// server: the multibar model served by a VfioUserServer on a thread, reached by a raw socket
// client (the DEVICE_GET_REGION_IO_FDS reply, byte for byte) and by the vfio-user client (a
// doorbell write becomes an eventfd write, no REGION_WRITE message; a read after posted writes
// sees them).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/bytes.hpp"
#include "hostdev/host_device.hpp"
#include "models/multibar.hpp"
#include "sdk/model_server.hpp"
#include "unix_socket.hpp"
#include "vfio_user/client.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/server.hpp"
#include "vfio_user/socket.hpp"

namespace potemkin {
namespace {

namespace vu = vfio_user;

std::span<const uint8_t> bytes(const std::vector<uint8_t>& v) {
    return {v.data(), v.size()};
}

class NoEvents final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return failf("no RAM"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return failf("no RAM"); }
    void disconnected(std::string_view) override {}
    void reconnected() override {}
};

class DoorbellServer : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/potemkin-door-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = dir_ + "/multibar.sock";
        vu::VfioUserServerSettings s;
        s.socket_path = path_;
        s.label = "multibar";
        // BAR2 not mappable: a device with a mappable BAR gets no posted writes (that has its
        // own test below).
        models::MultibarSettings mb;
        mb.mmap = mappable_bar2();
        auto server = vu::VfioUserServer::create(std::make_unique<models::Multibar>(mb), s);
        ASSERT_TRUE(server) << server.error().message;
        server_ = std::move(server).value();
        thread_ = std::thread([this] { EXPECT_TRUE(server_->run()); });
    }
    virtual bool mappable_bar2() const { return false; }
    void TearDown() override {
        if (server_) server_->stop();
        if (thread_.joinable()) thread_.join();
        server_.reset();
        std::filesystem::remove_all(dir_);
    }

    UniqueFd connect_raw() { return test_support::connect_unix(path_); }
    Result<vu::Message> request(int fd, vu::Command cmd, const std::vector<uint8_t>& payload) {
        vu::Header h;
        h.msg_id = ++id_;
        h.cmd = static_cast<uint16_t>(cmd);
        POTEMKIN_TRY(vu::send_message(fd, h, bytes(payload)));
        return vu::recv_message(fd, {.max_fds = 16, .timeout_ms = 2000});
    }
    Result<std::unique_ptr<vu::VfioUserClient>> open_client(bool posted = true) {
        vu::VfioUserClientSettings s;
        s.socket_path = path_;
        s.events = &events_;
        s.posted_writes = posted;
        // Doorbells and posting as messages: plain vfio-user (with the fast path, writes go
        // through its queue instead; tests/guest/vfio_user_fast_path_test.cpp).
        s.fast_path = false;
        return vu::VfioUserClient::open(std::move(s));
    }

    std::string dir_, path_;
    std::unique_ptr<vu::VfioUserServer> server_;
    std::thread thread_;
    uint16_t id_ = 0;
    NoEvents events_;
};

TEST_F(DoorbellServer, RegionIoFdsReplyListsTheModelsDoorbellsWithTheirEventfds) {
    UniqueFd fd = connect_raw();
    vu::Version v;
    v.caps.max_msg_fds = 8;  // room for the four doorbell fds
    auto ver = request(fd.get(), vu::Command::version, vu::encode_version(v));
    ASSERT_TRUE(ver && !ver->header.is_error());

    // Room for all: the 16-byte head, four 40-byte entries (BAR1 0x4, size 4, DATAMATCH 0..3,
    // fd_index 0..3) and four eventfds.
    vu::RegionIoFds q;
    q.argsz = 16 + 40 * 8;
    q.index = 1;
    auto r = request(fd.get(), vu::Command::device_get_region_io_fds, vu::encode_region_io_fds(q));
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_FALSE(r->header.is_error());
    ASSERT_EQ(r->payload.size(), 16u + 4 * 40);
    EXPECT_EQ(load_le(std::span(r->payload).subspan(0, 4)), 16u + 4 * 40);  // argsz
    EXPECT_EQ(load_le(std::span(r->payload).subspan(4, 4)), 0u);            // flags
    EXPECT_EQ(load_le(std::span(r->payload).subspan(8, 4)), 1u);            // index
    EXPECT_EQ(load_le(std::span(r->payload).subspan(12, 4)), 4u);           // count
    for (uint32_t i = 0; i < 4; ++i) {
        auto e = std::span(r->payload).subspan(16 + 40 * i, 40);
        EXPECT_EQ(load_le(e.subspan(0, 8)), 4u);   // offset: the doorbell register
        EXPECT_EQ(load_le(e.subspan(8, 8)), 4u);   // size
        EXPECT_EQ(load_le(e.subspan(16, 4)), i);   // fd_index
        EXPECT_EQ(load_le(e.subspan(20, 4)), 0u);  // type IOEVENTFD
        EXPECT_EQ(load_le(e.subspan(24, 4)), 1u);  // flags DATAMATCH
        EXPECT_EQ(load_le(e.subspan(28, 4)), 0u);  // padding
        EXPECT_EQ(load_le(e.subspan(32, 8)), i);   // datamatch: the vector
    }
    ASSERT_EQ(r->fds.size(), 4u);
    // They are eventfds the server watches: ringing the one for vector 2 counts a doorbell.
    const uint64_t one = 1;
    ASSERT_EQ(::write(r->fds[2].get(), &one, sizeof one), 8);
    for (int i = 0; i < 200 && server_->doorbell_rings() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto count = request(fd.get(), vu::Command::region_read,
                         vu::encode_region_access(models::Multibar::kRegDoorbellCount, 1, 4));
    ASSERT_TRUE(count && !count->header.is_error());
    auto a = vu::decode_region_access(vu::Command::region_read, true, count->payload, 1 << 20);
    ASSERT_TRUE(a);
    EXPECT_EQ(load_le(a->data), 1u);

    // Too small: the head alone, with the size needed and the count; no fds.
    q.argsz = 16;
    auto small =
        request(fd.get(), vu::Command::device_get_region_io_fds, vu::encode_region_io_fds(q));
    ASSERT_TRUE(small && !small->header.is_error());
    ASSERT_EQ(small->payload.size(), 16u);
    auto head = vu::decode_region_io_fds_reply(small->payload);
    ASSERT_TRUE(head);
    EXPECT_EQ(head->head.argsz, 16u + 4 * 40);
    EXPECT_EQ(head->head.count, 4u);
    EXPECT_TRUE(head->entries.empty());
    EXPECT_TRUE(small->fds.empty());

    // A BAR without doorbells: none.
    q.argsz = 16 + 40 * 8;
    q.index = 0;
    auto none =
        request(fd.get(), vu::Command::device_get_region_io_fds, vu::encode_region_io_fds(q));
    ASSERT_TRUE(none && !none->header.is_error());
    auto n = vu::decode_region_io_fds_reply(none->payload);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->head.count, 0u);
    EXPECT_TRUE(none->fds.empty());
}

// The guest's doorbell write reaches the model as a ring, with no REGION_WRITE message; a value
// no doorbell matches is an ordinary (posted) write.
TEST_F(DoorbellServer, ClientRingsADoorbellThroughItsIoeventfdWithoutAMessage) {
    auto c = open_client();
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ((*c)->stats().ioeventfds, 4u);
    // Requests are counted by the server as they are served; a read is ordered after what came
    // before it on the socket, so the counts are settled once it returns.
    std::array<uint8_t, 4> buf{};
    ASSERT_TRUE((*c)->region_read(1, models::Multibar::kRegDoorbellCount, buf));
    const uint64_t before = server_->stats().requests;

    const std::array<uint8_t, 4> ring2{2, 0, 0, 0};
    ASSERT_TRUE((*c)->region_write(1, models::Multibar::kRegDoorbell, ring2));
    EXPECT_EQ((*c)->stats().ioeventfd_writes, 1u);
    for (int i = 0; i < 400 && server_->doorbell_rings() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(server_->doorbell_rings(), 1u);
    ASSERT_TRUE((*c)->region_read(1, models::Multibar::kRegDoorbellCount, buf));
    EXPECT_EQ(load_le(buf), 1u);
    EXPECT_EQ(server_->stats().requests, before + 1);  // the read alone: no REGION_WRITE

    const std::array<uint8_t, 4> ring9{9, 0, 0, 0};  // no doorbell for vector 9
    ASSERT_TRUE((*c)->region_write(1, models::Multibar::kRegDoorbell, ring9));
    EXPECT_EQ((*c)->stats().ioeventfd_writes, 1u);
    ASSERT_TRUE((*c)->region_read(1, models::Multibar::kRegDoorbellCount, buf));
    EXPECT_EQ(load_le(buf), 2u);
    EXPECT_EQ(server_->stats().requests, before + 3);
    EXPECT_EQ(server_->doorbell_rings(), 1u);
}

TEST_F(DoorbellServer, ClientWithoutIoeventfdsSendsDoorbellWritesAsMessages) {
    vu::VfioUserClientSettings s;
    s.socket_path = path_;
    s.events = &events_;
    s.ioeventfds = false;
    s.fast_path = false;
    auto c = vu::VfioUserClient::open(std::move(s));
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ((*c)->stats().ioeventfds, 0u);
    const std::array<uint8_t, 4> ring1{1, 0, 0, 0};
    ASSERT_TRUE((*c)->region_write(1, models::Multibar::kRegDoorbell, ring1));
    std::array<uint8_t, 4> buf{};
    ASSERT_TRUE((*c)->region_read(1, models::Multibar::kRegDoorbellCount, buf));
    EXPECT_EQ(load_le(buf), 1u);
    EXPECT_EQ(server_->doorbell_rings(), 0u);
}

// Reads are not posted and travel the same stream: they see every posted write before them.
TEST_F(DoorbellServer, ReadAfterPostedWritesReturnsWhatTheyWrote) {
    auto c = open_client();
    ASSERT_TRUE(c) << c.error().message;
    for (uint32_t i = 0; i < 64; ++i) {
        std::array<uint8_t, 8> v{};
        store_le(v, 0x1122334455667700ull + i);
        ASSERT_TRUE((*c)->region_write(1, 0x100 + 8 * (i % 16), v));
    }
    for (uint32_t i = 48; i < 64; ++i) {
        std::array<uint8_t, 8> v{};
        ASSERT_TRUE((*c)->region_read(1, 0x100 + 8 * (i % 16), v));
        EXPECT_EQ(load_le(v), 0x1122334455667700ull + i);
    }
    EXPECT_EQ((*c)->stats().posted.sent, 64u);
}

class DoorbellServerWithMappedBar : public DoorbellServer {
  protected:
    bool mappable_bar2() const override { return true; }
};

// QEMU's rule: a guest read through a mapped BAR would not wait behind writes posted on the
// socket, so a device with a mappable BAR gets none; doorbells still ring through ioeventfds.
TEST_F(DoorbellServerWithMappedBar, WritesAreNotPostedToADeviceWithAMappableBar) {
    auto c = open_client();
    ASSERT_TRUE(c) << c.error().message;
    const std::array<uint8_t, 4> v{1, 2, 3, 4};
    ASSERT_TRUE((*c)->region_write(1, 0x100, v));
    EXPECT_EQ((*c)->stats().posted.sent, 0u);
    const std::array<uint8_t, 4> ring0{0, 0, 0, 0};
    ASSERT_TRUE((*c)->region_write(1, models::Multibar::kRegDoorbell, ring0));
    EXPECT_EQ((*c)->stats().ioeventfd_writes, 1u);
}

TEST_F(DoorbellServer, PostedWritePastTheEndOfABarFailsAtTheClient) {
    auto c = open_client();
    ASSERT_TRUE(c) << c.error().message;
    const std::array<uint8_t, 4> v{1, 2, 3, 4};
    auto r = (*c)->region_write(1, 0x1000 - 2, v);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("runs past its end"), std::string::npos) << r.error().message;
    EXPECT_EQ((*c)->stats().posted.sent, 0u);
}

TEST(RegionIoFdsCodec, RoundTripAndAWiderEntryStride) {
    const std::vector<vu::SubRegionIoFd> entries = {{.offset = 0x10,
                                                     .size = 4,
                                                     .fd_index = 0,
                                                     .flags = vu::kIoeventfdFlagDatamatch,
                                                     .datamatch = 7},
                                                    {.offset = 0x20, .size = 0, .fd_index = 1}};
    bool fits = false;
    auto wire = vu::encode_region_io_fds_reply(3, entries, 1000, &fits);
    EXPECT_TRUE(fits);
    auto back = vu::decode_region_io_fds_reply(wire);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->head.argsz, 16u + 80);
    EXPECT_EQ(back->head.index, 3u);
    EXPECT_EQ(back->entries, entries);

    // The spec lets entries grow: the stride is (payload - 16) / count, read 40 bytes of each.
    std::vector<uint8_t> wide(wire.begin(), wire.begin() + 16);
    for (int i = 0; i < 2; ++i) {
        wide.insert(wide.end(), wire.begin() + 16 + 40 * i, wire.begin() + 16 + 40 * (i + 1));
        wide.insert(wide.end(), 8, 0xee);
    }
    auto w = vu::decode_region_io_fds_reply(wide);
    ASSERT_TRUE(w) << w.error().message;
    EXPECT_EQ(w->entries, entries);

    // Entries that cannot be 40 bytes each are refused.
    std::vector<uint8_t> short_body(wire.begin(), wire.begin() + 16 + 50);
    auto bad = vu::decode_region_io_fds_reply(short_body);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("DEVICE_GET_REGION_IO_FDS reply"), std::string::npos);
}

TEST(DoorbellSpec, ModelServerRejectsDoorbellsOutsideTheirBar) {
    class Bad final : public sdk::DeviceModel {
      public:
        explicit Bad(sdk::DoorbellSpec d) {
            spec_.name = "bad";
            spec_.bars[0] = sdk::BarSpec{pci::BarKind::mem32, 4096, false};
            spec_.doorbells.push_back(d);
        }
        const sdk::DeviceSpec& spec() const override { return spec_; }
        uint64_t bar_read(int, uint64_t, unsigned) override { return 0; }
        void bar_write(int, uint64_t, unsigned, uint64_t) override {}
        void reset() override {}
        sdk::DeviceSpec spec_;
    };
    auto make = [](sdk::DoorbellSpec d) {
        return sdk::ModelServer::create(std::make_unique<Bad>(d), nullptr);
    };
    EXPECT_TRUE(make({0, 0x40, 4, std::nullopt}));
    auto bar = make({2, 0, 4, std::nullopt});
    ASSERT_FALSE(bar);
    EXPECT_NE(bar.error().message.find("BAR2 is not implemented"), std::string::npos);
    EXPECT_FALSE(make({0, 0x1000, 4, std::nullopt}));  // past the end
    EXPECT_FALSE(make({0, 0x42, 4, std::nullopt}));    // misaligned
    EXPECT_FALSE(make({0, 0x40, 3, std::nullopt}));    // no such width
    EXPECT_FALSE(make({0, 0x40, 1, 0x100}));           // datamatch wider than the register
}

}  // namespace
}  // namespace potemkin
