// The mpqemu wire codec (src/hostdev/mpqemu/protocol): every rule of QEMU's mpqemu_msg_valid(),
// payload layouts, round trips over a real socketpair with fds, and malformed frames.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mpqemu/protocol.hpp"

namespace potemkin {
namespace {

namespace mq = mpqemu;

struct Pair {
    UniqueFd a, b;
    Pair() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
};

UniqueFd efd() {
    return UniqueFd(::eventfd(0, EFD_CLOEXEC));
}

mq::Message msg(mq::Cmd cmd, size_t size, size_t nfds) {
    mq::Message m;
    m.cmd = cmd;
    m.payload.resize(size);
    for (size_t i = 0; i < nfds; ++i) m.fds.push_back(efd());
    return m;
}

std::vector<uint8_t> header(int32_t cmd, uint64_t size) {
    std::vector<uint8_t> h(mq::kHeaderSize, 0);
    std::memcpy(&h[0], &cmd, 4);
    std::memcpy(&h[8], &size, 8);
    return h;
}

TEST(MpqemuProtocol, ValidateAcceptsWhatQemuAccepts) {
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::sync_sysmem, 192, 1)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::sync_sysmem, 192, 7)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::pci_cfgread, 12, 0)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::pci_cfgwrite, 12, 0)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::bar_read, 24, 0)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::bar_write, 24, 0)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::set_irqfd, 0, 2)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::device_reset, 0, 0)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::ret, 8, 0)));
    EXPECT_TRUE(mq::validate(msg(mq::Cmd::ret, 0, 0)));  // QEMU's DEVICE_RESET reply
}

TEST(MpqemuProtocol, ValidateRejectsEachRule) {
    auto rejects = [](mq::Message m, const char* word) {
        auto r = mq::validate(m);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().sys_errno, EPROTO);
        EXPECT_NE(r.error().message.find(word), std::string::npos) << r.error().message;
    };
    mq::Message bad_cmd;
    bad_cmd.cmd = static_cast<mq::Cmd>(8);
    rejects(std::move(bad_cmd), "not a command");
    mq::Message neg_cmd;
    neg_cmd.cmd = static_cast<mq::Cmd>(-1);
    rejects(std::move(neg_cmd), "not a command");
    rejects(msg(mq::Cmd::sync_sysmem, 192, 8), "at most 7");  // num_fds < 8
    rejects(msg(mq::Cmd::sync_sysmem, 192, 0), "no fds");
    rejects(msg(mq::Cmd::sync_sysmem, 191, 1), "size 191");
    rejects(msg(mq::Cmd::pci_cfgread, 11, 0), "size 11");
    rejects(msg(mq::Cmd::pci_cfgwrite, 13, 0), "size 13");
    rejects(msg(mq::Cmd::bar_read, 23, 0), "size 23");
    rejects(msg(mq::Cmd::bar_write, 24, 1), "carries fds");
    rejects(msg(mq::Cmd::set_irqfd, 8, 2), "must be 0");
    rejects(msg(mq::Cmd::set_irqfd, 0, 1), "must be 2");
    rejects(msg(mq::Cmd::set_irqfd, 0, 3), "must be 2");
    rejects(msg(mq::Cmd::ret, 4, 0), "size 4");
    // Every fd must be open (fcntl F_GETFL).
    mq::Message closed = msg(mq::Cmd::set_irqfd, 0, 1);
    closed.fds.emplace_back(1 << 24);  // above any fd limit: never open
    rejects(std::move(closed), "not open");
}

TEST(MpqemuProtocol, PayloadLayouts) {
    const auto c = mq::encode_conf({0x3c, 0xAABBCCDD, 2});
    EXPECT_EQ(c[0], 0x3c);
    EXPECT_EQ(c[4], 0xDD);
    EXPECT_EQ(c[7], 0xAA);
    EXPECT_EQ(c[8], 2);
    const auto b = mq::encode_bar({0x1122334455667788, 0x99, 8, false});
    EXPECT_EQ(b[0], 0x88);
    EXPECT_EQ(b[7], 0x11);
    EXPECT_EQ(b[8], 0x99);
    EXPECT_EQ(b[16], 8);
    EXPECT_EQ(b[20], 0);
    EXPECT_EQ(mq::encode_bar({0, 0, 4, true})[20], 1);
    mq::SyncSysmem s;
    s.entries = {{0x0, 0xc0000, 0}, {0x100000, 0xff00000, 0x100000}};
    const auto y = mq::encode_sysmem(s);
    uint64_t v;
    std::memcpy(&v, &y[8], 8);
    EXPECT_EQ(v, 0x100000u);  // gpas[1]
    std::memcpy(&v, &y[64 + 8], 8);
    EXPECT_EQ(v, 0xff00000u);  // sizes[1]
    std::memcpy(&v, &y[128 + 8], 8);
    EXPECT_EQ(v, 0x100000u);  // offsets[1]
}

TEST(MpqemuProtocol, DecodersCheckValues) {
    mq::Message m = msg(mq::Cmd::pci_cfgread, 0, 0);
    auto p = mq::encode_conf({0x10, 0, 3});
    m.payload.assign(p.begin(), p.end());
    EXPECT_FALSE(mq::decode_conf(m));
    p = mq::encode_conf({0x10, 0, 4});
    m.payload.assign(p.begin(), p.end());
    ASSERT_TRUE(mq::decode_conf(m));
    EXPECT_EQ(mq::decode_conf(m)->addr, 0x10u);

    mq::Message bm = msg(mq::Cmd::bar_read, 0, 0);
    for (uint32_t size : {0u, 3u, 16u}) {
        auto e = mq::encode_bar({0x1000, 0, size, true});
        bm.payload.assign(e.begin(), e.end());
        EXPECT_FALSE(mq::decode_bar(bm)) << size;
    }
    auto e = mq::encode_bar({0x1000, 5, 8, false});
    bm.payload.assign(e.begin(), e.end());
    auto a = mq::decode_bar(bm);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->addr, 0x1000u);
    EXPECT_EQ(a->val, 5u);
    EXPECT_FALSE(a->memory);

    mq::Message sm = msg(mq::Cmd::sync_sysmem, 0, 2);
    mq::SyncSysmem s;
    s.entries = {{0x0, 0x1000, 0}, {0x2000, 0, 0}};
    auto y = mq::encode_sysmem(s);
    sm.payload.assign(y.begin(), y.end());
    EXPECT_FALSE(mq::decode_sysmem(sm));  // entry 1 has size 0
    s.entries[1] = {~0ull - 10, 0x1000, 0};
    y = mq::encode_sysmem(s);
    sm.payload.assign(y.begin(), y.end());
    EXPECT_FALSE(mq::decode_sysmem(sm));  // wraps
    s.entries[1] = {0x2000, 0x1000, -4096};
    y = mq::encode_sysmem(s);
    sm.payload.assign(y.begin(), y.end());
    EXPECT_FALSE(mq::decode_sysmem(sm));  // negative offset
    s.entries[1] = {0x2000, 0x1000, 4096};
    y = mq::encode_sysmem(s);
    sm.payload.assign(y.begin(), y.end());
    auto d = mq::decode_sysmem(sm);
    ASSERT_TRUE(d);
    ASSERT_EQ(d->entries.size(), 2u);  // as many entries as fds
    EXPECT_EQ(d->entries[1].offset, 4096);

    mq::Message r = msg(mq::Cmd::ret, 0, 0);
    EXPECT_EQ(*mq::decode_ret(r), 0u);
    auto rv = mq::encode_ret(0xFFFF'FFFF'FFFF'FFFFull);
    r.payload.assign(rv.begin(), rv.end());
    EXPECT_EQ(*mq::decode_ret(r), ~0ull);
    r.cmd = mq::Cmd::bar_read;
    EXPECT_FALSE(mq::decode_ret(r));
}

TEST(MpqemuProtocol, RoundTripWithFds) {
    Pair p;
    const auto conf = mq::encode_conf({0x04, 0x0406, 2});
    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::pci_cfgwrite, conf));
    auto m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(m->cmd, mq::Cmd::pci_cfgwrite);
    EXPECT_EQ(mq::decode_conf(*m)->val, 0x0406u);

    UniqueFd e1 = efd(), e2 = efd();
    const int fds[2] = {e1.get(), e2.get()};
    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::set_irqfd, {}, fds));
    m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
    ASSERT_TRUE(m) << m.error().message;
    ASSERT_EQ(m->fds.size(), 2u);
    // The received fd is the same eventfd: a write on it is seen on ours.
    const uint64_t one = 1;
    ASSERT_EQ(::write(m->fds[0].get(), &one, 8), 8);
    uint64_t got = 0;
    ASSERT_EQ(::read(e1.get(), &got, 8), 8);
    EXPECT_EQ(got, 1u);
    EXPECT_NE(::fcntl(m->fds[1].get(), F_GETFD) & FD_CLOEXEC, 0);  // received close-on-exec

    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::device_reset));
    m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
    ASSERT_TRUE(m);
    EXPECT_EQ(m->cmd, mq::Cmd::device_reset);
    EXPECT_TRUE(m->payload.empty());
}

TEST(MpqemuProtocol, ReplyReadWithItsHeader) {
    Pair p;
    timeval tv{1, 0};
    ASSERT_EQ(::setsockopt(p.b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    mq::RecvOptions o;
    o.rcvtimeo = true;
    o.timeout_ms = 1000;
    o.read_ahead = mq::kRetSize;
    // An 8-byte RET and an empty RET (QEMU's DEVICE_RESET reply), each in one recvmsg.
    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::ret, mq::encode_ret(0x1234)));
    auto r = mq::recv_message(p.b.get(), o);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*mq::decode_ret(*r), 0x1234u);
    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::ret));
    r = mq::recv_message(p.b.get(), o);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*mq::decode_ret(*r), 0u);
    // The header split from its payload is still one frame.
    const auto h = header(1, 8);
    ASSERT_TRUE(mq::send_raw(p.a.get(), std::span(h).first(10)));
    std::vector<uint8_t> rest(h.begin() + 10, h.end());
    for (uint8_t b : mq::encode_ret(7)) rest.push_back(b);
    ASSERT_TRUE(mq::send_raw(p.a.get(), rest));
    r = mq::recv_message(p.b.get(), o);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*mq::decode_ret(*r), 7u);
    // Nothing queued: SO_RCVTIMEO expires as ETIMEDOUT.
    o.timeout_ms = 100;
    tv = {0, 100'000};
    ASSERT_EQ(::setsockopt(p.b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    r = mq::recv_message(p.b.get(), o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, ETIMEDOUT);
    // A peer that sends something after an empty RET broke the promise read_ahead relies on.
    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::ret));
    ASSERT_TRUE(mq::send_message(p.a.get(), mq::Cmd::ret, mq::encode_ret(1)));
    r = mq::recv_message(p.b.get(), o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, EPROTO);
}

TEST(MpqemuProtocol, MalformedFrames) {
    {
        Pair p;  // size above the union
        ASSERT_TRUE(mq::send_raw(p.a.get(), header(3, 193)));
        auto m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
        ASSERT_FALSE(m);
        EXPECT_EQ(m.error().sys_errno, EPROTO);
    }
    {
        Pair p;  // a valid frame header whose payload has the wrong size for the command
        auto h = header(3, 8);
        h.resize(h.size() + 8);
        ASSERT_TRUE(mq::send_raw(p.a.get(), h));
        auto m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
        ASSERT_FALSE(m);
        EXPECT_EQ(m.error().sys_errno, EPROTO);
    }
    {
        Pair p;  // unknown command
        ASSERT_TRUE(mq::send_raw(p.a.get(), header(9, 0)));
        auto m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
        ASSERT_FALSE(m);
        EXPECT_EQ(m.error().sys_errno, EPROTO);
    }
    {
        Pair p;  // 17 fds: more than the receiver makes room for
        std::vector<UniqueFd> owned;
        std::vector<int> fds;
        for (int i = 0; i < 17; ++i) {
            owned.push_back(efd());
            fds.push_back(owned.back().get());
        }
        auto h = header(0, 192);
        h.resize(h.size() + 192);
        auto sent = mq::send_raw(p.a.get(), h, fds);
        if (sent) {
            auto m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
            ASSERT_FALSE(m);
            EXPECT_EQ(m.error().sys_errno, EPROTO);
        }
    }
    {
        Pair p;  // a truncated payload, then the peer closes
        auto h = header(3, 12);
        h.resize(h.size() + 4);
        ASSERT_TRUE(mq::send_raw(p.a.get(), h));
        p.a.reset();
        auto m = mq::recv_message(p.b.get(), {.timeout_ms = 1000});
        ASSERT_FALSE(m);
        EXPECT_EQ(m.error().sys_errno, ECONNRESET);
    }
    {
        Pair p;  // nothing arrives
        auto m = mq::recv_message(p.b.get(), {.timeout_ms = 20});
        ASSERT_FALSE(m);
        EXPECT_EQ(m.error().sys_errno, ETIMEDOUT);
    }
    {
        Pair p;  // the peer is gone: sending is an error, never SIGPIPE
        p.b.reset();
        const auto conf = mq::encode_conf({0, 0, 4});
        auto r = mq::send_message(p.a.get(), mq::Cmd::pci_cfgread, conf);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().sys_errno, EPIPE);
    }
    {
        Pair p;  // the sender refuses payloads above 192 bytes
        std::vector<uint8_t> big(193);
        EXPECT_FALSE(mq::send_message(p.a.get(), mq::Cmd::sync_sysmem, big));
    }
}

}  // namespace
}  // namespace potemkin
