// The fast path's queues (vfio_user/fast_path.hpp) over one area in this process: the two ends
// talk, and each refuses what a hostile peer can write into the shared page (counts out of
// their window, a ticket that is not the one due, statuses and sizes out of range, a header
// that is not ours, an fd that is not a sealed memfd).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "vfio_user/fast_path.hpp"
#include "vfio_user/protocol.hpp"

namespace potemkin {
namespace {

namespace fp = vfio_user::fast_path;

struct Page {
    alignas(64) std::array<uint8_t, fp::kAreaSize> bytes{};
    uint64_t& word(size_t offset) { return *reinterpret_cast<uint64_t*>(bytes.data() + offset); }
    uint8_t* slot(uint64_t n) {
        return bytes.data() + fp::kSlotsOffset + (n % fp::kSlots) * fp::kSlotSize;
    }
};
constexpr size_t kHead = fp::kLine, kTail = 2 * fp::kLine, kSleeping = 2 * fp::kLine + 8;

fp::Access read_of(uint32_t region, uint64_t offset, uint32_t size) {
    fp::Access a;
    a.op = fp::Op::read;
    a.region = region;
    a.offset = offset;
    a.size = size;
    return a;
}

TEST(FastPathQueue, ClientAndServerExchangeAccessesInOrder) {
    Page page;
    fp::ClientQueue client(page.bytes.data());
    fp::ServerQueue server(page.bytes.data());
    fp::Access w;
    w.op = fp::Op::posted_write;
    w.region = 1;
    w.offset = 0x10;
    w.size = 4;
    w.data = {1, 2, 3, 4};
    uint64_t t0 = 0, t1 = 0;
    EXPECT_FALSE(client.publish(w, t0));  // the server is not asleep
    EXPECT_FALSE(client.publish(read_of(0, 4, 4), t1));
    EXPECT_EQ(t1, 1u);

    auto n0 = server.next();
    ASSERT_TRUE(n0);
    ASSERT_TRUE(n0->present);
    EXPECT_FALSE(n0->invalid);
    EXPECT_EQ(n0->access.op, fp::Op::posted_write);
    EXPECT_EQ(n0->access.offset, 0x10u);
    EXPECT_EQ(n0->access.data[3], 4);
    EXPECT_FALSE(server.complete(n0->ticket, 0, {}));
    auto n1 = server.next();
    ASSERT_TRUE(n1 && n1->present);
    EXPECT_EQ(n1->access.op, fp::Op::read);
    const std::array<uint8_t, 4> value{0xaa, 0xbb, 0xcc, 0xdd};
    EXPECT_FALSE(server.complete(n1->ticket, 0, value));
    auto none = server.next();
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->present);

    auto done = client.poll_completed();
    ASSERT_TRUE(done);
    EXPECT_EQ(*done, 2u);
    auto ans = client.answer(t1, 4);
    ASSERT_TRUE(ans) << ans.error().message;
    EXPECT_EQ(ans->status, 0);
    EXPECT_EQ(ans->data[0], 0xaa);
    EXPECT_EQ(ans->data[3], 0xdd);
}

TEST(FastPathQueue, SleepAndWakeFlagsMeetInTheMiddle) {
    Page page;
    fp::ClientQueue client(page.bytes.data());
    fp::ServerQueue server(page.bytes.data());
    EXPECT_TRUE(server.sleep_unless_work());  // nothing queued: asleep
    uint64_t t = 0;
    EXPECT_TRUE(client.publish(read_of(0, 0, 4), t));  // finds it asleep: kicks
    server.wake();
    EXPECT_FALSE(server.sleep_unless_work());  // work queued: stays awake
    client.set_waiting(true);
    auto n = server.next();
    ASSERT_TRUE(n && n->present);
    EXPECT_TRUE(server.complete(n->ticket, 0, {}));  // the client blocks: answer eventfd
}

TEST(FastPathQueue, ClientRefusesACompletionCountOutsideItsWindow) {
    Page page;
    fp::ClientQueue client(page.bytes.data());
    uint64_t t = 0;
    client.publish(read_of(0, 0, 4), t);
    page.word(kTail) = 5;  // more than was published
    auto r = client.poll_completed();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, EPROTO);
    EXPECT_NE(r.error().message.find("completion count 5"), std::string::npos) << r.error().message;
    page.word(kTail) = 1;
    ASSERT_TRUE(client.poll_completed());
    page.word(kTail) = 0;  // going backwards
    EXPECT_FALSE(client.poll_completed());
}

TEST(FastPathQueue, ClientRefusesAnAnswerForAnotherAccessOrWithABadStatus) {
    Page page;
    fp::ClientQueue client(page.bytes.data());
    uint64_t t = 0;
    client.publish(read_of(0, 0, 4), t);
    // A server that moved the tail without answering: the slot still holds the client's mark.
    page.word(kTail) = 1;
    ASSERT_TRUE(client.poll_completed());
    auto r = client.answer(t, 4);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, EPROTO);
    // The right ticket, a status no errno has.
    *reinterpret_cast<uint64_t*>(page.slot(0) + 24) = 0;
    *reinterpret_cast<uint64_t*>(page.slot(0) + 16) = uint64_t{999999} << 32;
    r = client.answer(t, 4);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("status 999999"), std::string::npos) << r.error().message;
    // An errno is passed on.
    *reinterpret_cast<uint64_t*>(page.slot(0) + 16) = uint64_t{EINVAL} << 32;
    r = client.answer(t, 4);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, EINVAL);
}

TEST(FastPathQueue, ServerRefusesAPublishCountOutsideItsWindow) {
    Page page;
    fp::ServerQueue server(page.bytes.data());
    page.word(kHead) = fp::kSlots + 1;  // more than the slots hold
    auto r = server.next();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, EPROTO);
    page.word(kHead) = ~uint64_t{0};
    EXPECT_FALSE(server.next());
}

TEST(FastPathQueue, ServerMarksAccessesWithABadOpOrSizeInvalid) {
    Page page;
    fp::ServerQueue server(page.bytes.data());
    *reinterpret_cast<uint64_t*>(page.slot(0)) = 77;                     // op 77
    *reinterpret_cast<uint64_t*>(page.slot(0) + 16) = 4;                 // size 4
    *reinterpret_cast<uint64_t*>(page.slot(1)) = 1;                      // read
    *reinterpret_cast<uint64_t*>(page.slot(1) + 16) = fp::kMaxData + 1;  // too big
    *reinterpret_cast<uint64_t*>(page.slot(2)) = 2;                      // write
    *reinterpret_cast<uint64_t*>(page.slot(2) + 16) = 0;                 // of nothing
    page.word(kHead) = 3;
    for (int i = 0; i < 3; ++i) {
        auto n = server.next();
        ASSERT_TRUE(n);
        ASSERT_TRUE(n->present);
        EXPECT_TRUE(n->invalid) << i;
        server.complete(n->ticket, EINVAL, {});
    }
    EXPECT_EQ(server.completed(), 3u);
    EXPECT_EQ(page.word(kSleeping), 0u);
}

TEST(FastPathQueue, AreaFromTheServerIsCheckedBeforeUse) {
    auto area = fp::Area::create();
    ASSERT_TRUE(area) << area.error().message;
    UniqueFd copy(::dup(area->fd()));
    auto adopted = fp::Area::adopt(std::move(copy));
    ASSERT_TRUE(adopted) << adopted.error().message;

    // Not sealed against shrinking: a server could make our mapping fault.
    UniqueFd plain(::memfd_create("not-sealed", MFD_CLOEXEC));
    ASSERT_TRUE(plain);
    ASSERT_EQ(::ftruncate(plain.get(), fp::kAreaSize), 0);
    auto r = fp::Area::adopt(std::move(plain));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("not sealed"), std::string::npos) << r.error().message;

    // Not a memfd at all.
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    UniqueFd w(p[1]);
    EXPECT_FALSE(fp::Area::adopt(UniqueFd(p[0])));

    // Sealed, but another header.
    UniqueFd other(::memfd_create("other", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    ASSERT_TRUE(other);
    ASSERT_EQ(::ftruncate(other.get(), fp::kAreaSize), 0);
    ASSERT_EQ(::fcntl(other.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
    r = fp::Area::adopt(std::move(other));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("header"), std::string::npos) << r.error().message;
}

// The capability in VERSION: ours round-trips; a malformed or foreign "potemkin" object means
// "not offered", never an error; other peers' unknown keys are ignored.
TEST(FastPathCapability, RoundTripsAndAnythingElseIsNotOffered) {
    vfio_user::Capabilities c;
    c.fast_path_version = fp::kVersion;
    c.fast_path_fd_index = 2;
    auto back = vfio_user::parse_capabilities_json(vfio_user::capabilities_json(c));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->fast_path_version, fp::kVersion);
    EXPECT_EQ(back->fast_path_fd_index, 2u);

    for (const char* json : {
             R"({"capabilities":{"potemkin":"yes"}})",
             R"({"capabilities":{"potemkin":{"fast_path":true}}})",
             R"({"capabilities":{"potemkin":{"fast_path":{"version":"1"}}}})",
             R"({"capabilities":{"potemkin":{"fast_path":{"version":-1}}}})",
             R"({"capabilities":{"someone_else":{"fast_path":{"version":1}}}})",
         }) {
        auto r = vfio_user::parse_capabilities_json(json);
        ASSERT_TRUE(r) << json << ": " << r.error().message;
        EXPECT_FALSE(r->fast_path_version) << json;
    }
    auto bad_index = vfio_user::parse_capabilities_json(
        R"({"capabilities":{"potemkin":{"fast_path":{"version":1,"fd_index":99999}}}})");
    ASSERT_TRUE(bad_index);
    EXPECT_EQ(bad_index->fast_path_version, 1u);
    EXPECT_FALSE(bad_index->fast_path_fd_index);  // the client then finds no fds: plain path
}

}  // namespace
}  // namespace potemkin
