// sdk::GuestRam (a device server's view of a client's RAM) and the vm::RamTable under it and
// under vm::GuestMemory.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sdk/guest_ram.hpp"
#include "vm/ram_table.hpp"

using namespace potemkin;
using sdk::GuestRam;

namespace {

struct Row {
    Gpa base;
    uint64_t size = 0;
    uint8_t* host = nullptr;
};

// A memfd of `size` bytes; the test maps it too to see what the server's copies did.
struct Memfd {
    explicit Memfd(size_t n) : size(n) {
        fd = ::memfd_create("guest-ram-test", MFD_CLOEXEC);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(n)), 0);
        void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        EXPECT_NE(p, MAP_FAILED);
        host = static_cast<uint8_t*>(p);
    }
    ~Memfd() {
        EXPECT_EQ(::munmap(host, size), 0);
        EXPECT_EQ(::close(fd), 0);
    }
    UniqueFd dup() const { return UniqueFd(::dup(fd)); }
    int fd = -1;
    size_t size = 0;
    uint8_t* host = nullptr;
};

GuestRam::Share share(uint64_t base, uint64_t size, uint64_t offset,
                      GuestRam::Backing backing = GuestRam::Backing::mmap) {
    GuestRam::Share s;
    s.base = Gpa(base);
    s.size = size;
    s.fd_offset = offset;
    s.backing = backing;
    return s;
}

}  // namespace

TEST(RamTable, FindNeedsTheWholeRangeInOneRowAndAtWalksAcrossRows) {
    vm::RamTable<Row> t;
    static uint8_t a[0x1000], b[0x1000];
    ASSERT_EQ(t.slot(Gpa(0x1000), 0x1000).overlaps, nullptr);
    t.insert(t.slot(Gpa(0x1000), 0x1000), Row{Gpa(0x1000), 0x1000, b});
    t.insert(t.slot(Gpa(0), 0x1000), Row{Gpa(0), 0x1000, a});
    EXPECT_EQ(t.regions()[0].base, Gpa(0));  // kept sorted
    EXPECT_EQ(t.find(Gpa(0xffc), 4), &t.regions()[0]);
    EXPECT_EQ(t.find(Gpa(0xffe), 4), nullptr);           // spans two rows
    EXPECT_EQ(t.find(Gpa(0x2000), 0), &t.regions()[1]);  // empty range at the end
    EXPECT_EQ(t.find(Gpa(0x2000), 1), nullptr);
    EXPECT_EQ(t.at(Gpa(0x1fff)), &t.regions()[1]);
    EXPECT_NE(t.slot(Gpa(0x800), 0x1000).overlaps, nullptr);
    EXPECT_NE(t.slot(Gpa(0x1fff), 0x10).overlaps, nullptr);
    EXPECT_EQ(t.slot(Gpa(0x2000), 0x10).overlaps, nullptr);

    uint8_t buf[8] = {};
    size_t rows = 0;
    const size_t done =
        t.walk(Gpa(0xffc), std::span<uint8_t>(buf), [&](const Row&, uint64_t, auto) {
            ++rows;
            return true;
        });
    EXPECT_EQ(done, 8u);
    EXPECT_EQ(rows, 2u);
    EXPECT_EQ(t.walk(Gpa(0x1ffc), std::span<uint8_t>(buf),
                     [](const Row&, uint64_t, auto) { return true; }),
              4u);                              // runs off the end
    EXPECT_FALSE(t.erase(Gpa(0x1000), 0x800));  // not the exact row
    EXPECT_TRUE(t.erase(Gpa(0x1000), 0x1000));
    EXPECT_EQ(t.size(), 1u);
}

TEST(GuestRam, CopiesAcrossAdjacentRangesOfDifferentFiles) {
    Memfd f1(0x2000), f2(0x2000);
    GuestRam ram;
    ASSERT_TRUE(ram.add(share(0x10000, 0x1000, 0x1000), f1.dup()));
    ASSERT_TRUE(ram.add(share(0x11000, 0x1000, 0x0), f2.dup()));
    std::vector<uint8_t> out(16);
    for (int i = 0; i < 16; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(i + 1);
    ASSERT_TRUE(ram.access(Gpa(0x10ff8), out, true));
    EXPECT_EQ(f1.host[0x1ff8], 1);
    EXPECT_EQ(f2.host[0x7], 16);
    std::vector<uint8_t> in(16);
    ASSERT_TRUE(ram.access(Gpa(0x10ff8), in, false));
    EXPECT_EQ(in, out);
}

TEST(GuestRam, AccessOutsideEveryRangeIsAnErrorNamingTheAddress) {
    Memfd f(0x1000);
    GuestRam ram;
    ASSERT_TRUE(ram.add(share(0x0, 0x1000, 0), f.dup()));
    std::vector<uint8_t> buf(8);
    auto r = ram.access(Gpa(0xffc), buf, false);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("0x1000"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("not mapped"), std::string::npos) << r.error().message;
    EXPECT_FALSE(ram.access(Gpa(~uint64_t{0} - 3), buf, false));  // wraps
}

TEST(GuestRam, ReadOnlyRangeRefusesWrites) {
    Memfd f(0x1000);
    GuestRam ram;
    auto s = share(0x0, 0x1000, 0);
    s.writable = false;
    ASSERT_TRUE(ram.add(s, f.dup()));
    std::vector<uint8_t> buf(4);
    EXPECT_TRUE(ram.access(Gpa(0), buf, false));
    auto r = ram.access(Gpa(0), buf, true);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("not writable"), std::string::npos) << r.error().message;
}

TEST(GuestRam, IdenticalAddIsANoOpAndOverlapsAreRefused) {
    Memfd f(0x2000);
    GuestRam ram(2);
    ASSERT_TRUE(ram.add(share(0x0, 0x1000, 0), f.dup()));
    EXPECT_TRUE(ram.add(share(0x0, 0x1000, 0), f.dup()));
    EXPECT_EQ(ram.size(), 1u);
    auto r = ram.add(share(0x0, 0x1000, 0x1000), f.dup());  // same range, other offset
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("overlaps"), std::string::npos) << r.error().message;
    EXPECT_FALSE(ram.add(share(0x800, 0x1000, 0), f.dup()));
    ASSERT_TRUE(ram.add(share(0x1000, 0x1000, 0x1000), f.dup()));
    EXPECT_FALSE(ram.add(share(0x4000, 0x1000, 0), f.dup()));  // max_ranges 2
    EXPECT_FALSE(ram.remove(Gpa(0x1000), 0x800));
    EXPECT_TRUE(ram.remove(Gpa(0x1000), 0x1000));
    EXPECT_EQ(ram.size(), 1u);
}

TEST(GuestRam, RangePastTheEndOfItsFileIsRefused) {
    Memfd f(0x1000);
    GuestRam ram;
    auto r = ram.add(share(0x0, 0x2000, 0), f.dup());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("runs past the end of its file"), std::string::npos);
    EXPECT_FALSE(ram.add(share(0x0, 0x1000, 0x800), f.dup()));
    EXPECT_EQ(ram.size(), 0u);
}

TEST(GuestRam, ReplaceThatFailsLeavesNoRange) {
    Memfd f(0x1000);
    GuestRam ram;
    ASSERT_TRUE(ram.add(share(0x0, 0x1000, 0), f.dup()));
    std::vector<GuestRam::Share> set = {share(0x0, 0x1000, 0), share(0x1000, 0x2000, 0)};
    std::vector<UniqueFd> fds;
    fds.push_back(f.dup());
    fds.push_back(f.dup());
    auto r = ram.replace(set, std::move(fds));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("entry 1"), std::string::npos) << r.error().message;
    EXPECT_EQ(ram.size(), 0u);
}

TEST(GuestRam, FileIoAndMessageRangesAreReachedTheirWay) {
    Memfd f(0x2000);
    GuestRam ram;
    ASSERT_TRUE(ram.add(share(0x0, 0x1000, 0x1000, GuestRam::Backing::file_io), f.dup()));
    ASSERT_TRUE(ram.add(share(0x1000, 0x1000, 0, GuestRam::Backing::message), UniqueFd()));
    std::vector<uint8_t> buf(8, 0xab);
    ASSERT_TRUE(ram.access(Gpa(0x10), buf, true));
    EXPECT_EQ(f.host[0x1010], 0xab);
    // Across into the message range: without a handler that piece fails; with one, it goes
    // there with its own address.
    EXPECT_FALSE(ram.access(Gpa(0xffc), buf, false));
    std::vector<std::pair<uint64_t, size_t>> messages;
    auto r = ram.access(Gpa(0xffc), buf, false, [&](Gpa at, std::span<uint8_t> piece, bool) {
        messages.emplace_back(at.value, piece.size());
        return ok();
    });
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(messages.size(), 1u);
    EXPECT_EQ(messages[0].first, 0x1000u);
    EXPECT_EQ(messages[0].second, 4u);
}

// Issue 11: a client that shrinks its RAM file after DMA_MAP used to kill the server with
// SIGBUS on the next DMA. Now the DMA past the new end fails with an error, the rest works.
TEST(GuestRam, AFileShrunkAfterSharingFailsTheDmaPastItsEndAndNothingDies) {
    Memfd f(0x4000);
    GuestRam ram;
    ASSERT_TRUE(ram.add(share(0x10000, 0x4000, 0), f.dup()));
    std::vector<uint8_t> buf(8, 0x5A);
    ASSERT_TRUE(ram.access(Gpa(0x13000), buf, true));
    ASSERT_EQ(::ftruncate(f.fd, 0x1000), 0);

    auto r = ram.access(Gpa(0x13000), buf, false);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("shrank the file"), std::string::npos) << r.error().message;
    EXPECT_FALSE(ram.access(Gpa(0x12000), buf, true));
    // Below the new end the file is still there and shared.
    std::fill(buf.begin(), buf.end(), uint8_t{0x5A});
    ASSERT_TRUE(ram.access(Gpa(0x10000), buf, true));
    EXPECT_EQ(f.host[0], 0x5A);
}

// A SIGBUS outside every watched mapping keeps its meaning: the process dies of it (by the
// signal, or under ASan by its report, which the guard chains to).
TEST(ShrinkGuardDeathTest, AFaultOutsideWatchedMappingsStillKills) {
    Memfd watched(0x1000);
    GuestRam ram;  // installs the handler and watches its own mapping
    ASSERT_TRUE(ram.add(share(0x10000, 0x1000, 0), watched.dup()));
    EXPECT_DEATH(
        {
            Memfd other(0x2000);
            if (::ftruncate(other.fd, 0) != 0) std::abort();
            volatile uint8_t v = other.host[0x1000];
            (void)v;
            std::exit(0);
        },
        "");
}
