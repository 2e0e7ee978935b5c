#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm/guest_memory.hpp"

using namespace potemkin;
using namespace potemkin::vm;

TEST(GuestMemory, ReadWriteWithinRegions) {
    auto m = GuestMemory::create({{Gpa(0), 0x10000}, {Gpa(0x1'0000'0000ull), 0x2000}});
    ASSERT_TRUE(m) << m.error().message;
    auto& mem = **m;
    EXPECT_EQ(mem.total_size(), 0x12000u);
    ASSERT_TRUE(mem.write_obj<uint32_t>(Gpa(0xfffc), 0x12345678));
    EXPECT_EQ(*mem.read_obj<uint32_t>(Gpa(0xfffc)), 0x12345678u);
    ASSERT_TRUE(mem.write_obj<uint64_t>(Gpa(0x1'0000'1ff8ull), 42));
    EXPECT_EQ(*mem.read_obj<uint64_t>(Gpa(0x1'0000'1ff8ull)), 42u);
}

TEST(GuestMemory, AccessOutsideRamIsAnErrorNamingTheAddress) {
    auto m = GuestMemory::create({{Gpa(0), 0x10000}});
    ASSERT_TRUE(m);
    auto& mem = **m;
    auto r = mem.read_obj<uint32_t>(Gpa(0xfffe));  // straddles the end
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("0xfffe"), std::string::npos);
    EXPECT_FALSE(mem.write_obj<uint8_t>(Gpa(0x10000), 1));
    EXPECT_FALSE(mem.span(Gpa(~0ull - 2), 8));  // would wrap
    EXPECT_FALSE(mem.fill(Gpa(0x8000), 0, 0x9000));
    EXPECT_TRUE(mem.span(Gpa(0), 0x10000));
}

TEST(GuestMemory, RangesSpanningTwoRegionsAreRejected) {
    auto m = GuestMemory::create({{Gpa(0), 0x1000}, {Gpa(0x1000), 0x1000}});
    ASSERT_TRUE(m);
    EXPECT_FALSE((*m)->read_obj<uint32_t>(Gpa(0xffe)));
    EXPECT_TRUE((*m)->read_obj<uint32_t>(Gpa(0x1000)));
}

TEST(GuestMemory, BadLayoutsAreRejected) {
    EXPECT_FALSE(GuestMemory::create({}));
    EXPECT_FALSE(GuestMemory::create({{Gpa(0), 0x1234}}));
    EXPECT_FALSE(GuestMemory::create({{Gpa(0x10), 0x1000}}));
    EXPECT_FALSE(GuestMemory::create({{Gpa(0), 0x2000}, {Gpa(0x1000), 0x1000}}));
}

// The memfd is what device processes map: a second mapping sees the guest's bytes.
TEST(GuestMemory, MemfdIsSharedWithOtherMappings) {
    auto m = GuestMemory::create({{Gpa(0), 0x4000}, {Gpa(0x100000), 0x1000}});
    ASSERT_TRUE(m);
    auto& mem = **m;
    ASSERT_TRUE(mem.write_obj<uint32_t>(Gpa(0x100010), 0xcafef00d));
    const RamRegion* r = mem.find(Gpa(0x100000));
    ASSERT_NE(r, nullptr);
    void* p =
        mmap(nullptr, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, mem.fd(), long(r->fd_offset));
    ASSERT_NE(p, MAP_FAILED);
    EXPECT_EQ(static_cast<uint32_t*>(p)[4], 0xcafef00du);
    static_cast<uint32_t*>(p)[5] = 0x600dd00d;  // a device writes through its own mapping
    EXPECT_EQ(*mem.read_obj<uint32_t>(Gpa(0x100014)), 0x600dd00du);
    munmap(p, 0x1000);
}

TEST(GuestMemory, WriteObserverSeesDmaWrites) {
    auto m = GuestMemory::create({{Gpa(0), 0x4000}});
    ASSERT_TRUE(m);
    std::vector<std::pair<uint64_t, uint64_t>> seen;
    (*m)->set_write_observer([&](Gpa a, uint64_t n) { seen.emplace_back(a.value, n); });
    uint8_t buf[16] = {};
    ASSERT_TRUE((*m)->write(Gpa(0x100), buf));
    ASSERT_TRUE((*m)->fill(Gpa(0x200), 0xff, 32));
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0], std::make_pair(uint64_t(0x100), uint64_t(16)));
    EXPECT_EQ(seen[1], std::make_pair(uint64_t(0x200), uint64_t(32)));
}
