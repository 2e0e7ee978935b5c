// `potemkin serve edu --mpqemu-fd N` at the wire level: the test plays QEMU's x-pci-proxy-dev
// on the other end of the socketpair, with the codec of mpqemu/protocol.hpp (checked
// against QEMU itself by linux_guest_test.cpp).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "mpqemu/protocol.hpp"
#include "server_process.hpp"

namespace {

using namespace potemkin;
namespace mq = potemkin::mpqemu;
using potemkin::testing::MpqemuServerProcess;

constexpr uint64_t kAllOnes = ~uint64_t{0};
constexpr uint64_t kBar0 = 0xfe000000;

class MpqemuServerTest : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_TRUE(server_.start()); }

    uint64_t ret() {
        auto m = mq::recv_message(server_.sock(), {.timeout_ms = 10000});
        EXPECT_TRUE(m) << (m ? "" : m.error().message) << "\nserver log:\n" << server_.log();
        if (!m) return kAllOnes - 1;
        auto v = mq::decode_ret(*m);
        EXPECT_TRUE(v) << (v ? "" : v.error().message);
        EXPECT_EQ(m->payload.size(), mq::kRetSize);
        return v ? *v : kAllOnes - 1;
    }
    uint64_t cfg_read(uint32_t addr, int len) {
        auto p = mq::encode_conf({addr, 0, len});
        EXPECT_TRUE(mq::send_message(server_.sock(), mq::Cmd::pci_cfgread, p));
        return ret();
    }
    uint64_t cfg_write(uint32_t addr, uint32_t val, int len) {
        auto p = mq::encode_conf({addr, val, len});
        EXPECT_TRUE(mq::send_message(server_.sock(), mq::Cmd::pci_cfgwrite, p));
        return ret();
    }
    uint64_t bar_read(uint64_t addr, uint32_t size, bool memory = true) {
        auto p = mq::encode_bar({addr, 0, size, memory});
        EXPECT_TRUE(mq::send_message(server_.sock(), mq::Cmd::bar_read, p));
        return ret();
    }
    uint64_t bar_write(uint64_t addr, uint64_t val, uint32_t size, bool memory = true) {
        auto p = mq::encode_bar({addr, val, size, memory});
        EXPECT_TRUE(mq::send_message(server_.sock(), mq::Cmd::bar_write, p));
        return ret();
    }
    // BAR0 at kBar0 with memory decoding on, as the firmware leaves it.
    void program_bar0() {
        EXPECT_EQ(cfg_write(0x10, static_cast<uint32_t>(kBar0), 4), 0u);
        EXPECT_EQ(cfg_write(0x04, 0x0006, 2), 0u);  // COMMAND: memory space, bus master
    }
    void sync_sysmem(const std::vector<mq::SysmemEntry>& entries, const std::vector<int>& fds) {
        auto p = mq::encode_sysmem({entries});
        ASSERT_TRUE(mq::send_message(server_.sock(), mq::Cmd::sync_sysmem, p, fds));
    }
    // Exit status of a server that must have ended by itself.
    int exit_code() {
        auto st = server_.wait_exit();
        EXPECT_TRUE(st.has_value()) << "the server did not exit";
        if (!st) return -1;
        EXPECT_TRUE(WIFEXITED(*st)) << "killed by signal " << WTERMSIG(*st);
        return WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    }
    bool peer_closed() {
        pollfd p{server_.sock(), POLLIN, 0};
        if (::poll(&p, 1, 10000) != 1) return false;
        char c;
        return ::recv(server_.sock(), &c, 1, 0) == 0;
    }

    MpqemuServerProcess server_{"edu"};
};

// A memfd of `size` bytes, mapped here too.
struct Memfd {
    explicit Memfd(size_t n) : size(n) {
        fd = ::memfd_create("mpqemu-test-ram", MFD_CLOEXEC);
        EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(n)), 0);
        host = static_cast<uint8_t*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    }
    ~Memfd() {
        ::munmap(host, size);
        ::close(fd);
    }
    int fd = -1;
    size_t size = 0;
    uint8_t* host = nullptr;
};

bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
}

uint64_t drain(int efd) {
    uint64_t v = 0;
    return ::read(efd, &v, sizeof v) == sizeof v ? v : 0;
}

TEST_F(MpqemuServerTest, ConfigIdsAndBarSizing) {
    EXPECT_EQ(cfg_read(0x00, 2), 0x1234u);
    EXPECT_EQ(cfg_read(0x02, 2), 0x11e8u);
    EXPECT_EQ(cfg_read(0x00, 4), 0x11e81234u);
    EXPECT_EQ(cfg_read(0x0a, 2), 0x00ffu);  // class: others
    EXPECT_EQ(cfg_read(0x2e, 2), 0x1100u);  // subsystem id
    EXPECT_EQ(cfg_read(0x3d, 1), 1u);       // INTA#
    // The proxy's probe, BARs 0..6 (it writes the CardBus CIS pointer too).
    for (uint32_t i = 0; i <= 6; ++i) {
        const uint32_t off = 0x10 + 4 * i;
        const uint64_t orig = cfg_read(off, 4);
        EXPECT_EQ(cfg_write(off, 0xffffffff, 4), 0u);
        const uint64_t v = cfg_read(off, 4);
        if (i == 0)
            EXPECT_EQ(v, 0xfff00000u);  // 1 MiB, 32-bit, non-prefetchable memory
        else
            EXPECT_EQ(v, 0u) << "BAR" << i;
        EXPECT_EQ(cfg_write(off, static_cast<uint32_t>(orig), 4), 0u);
    }
    EXPECT_EQ(cfg_read(0x10, 4), 0u);
    // Out of the 256-byte space: all-ones, and the server goes on.
    EXPECT_EQ(cfg_read(0xfe, 4), kAllOnes);
    EXPECT_EQ(cfg_read(0x100, 1), kAllOnes);
    EXPECT_EQ(cfg_read(0x00, 2), 0x1234u);
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
}

TEST_F(MpqemuServerTest, BarAccessAtAbsoluteAddresses) {
    EXPECT_EQ(cfg_write(0x10, static_cast<uint32_t>(kBar0), 4), 0u);
    // Programmed but memory decoding off: nothing decodes.
    EXPECT_EQ(bar_read(kBar0, 4), kAllOnes);
    EXPECT_EQ(cfg_write(0x04, 0x0002, 2), 0u);
    EXPECT_EQ(bar_read(kBar0, 4), 0x010000edu);  // edu identification
    EXPECT_EQ(bar_write(kBar0 + 0x04, 0x12345678, 4), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x04, 4), 0xedcba987u);
    EXPECT_EQ(bar_write(kBar0 + 0x08, 5, 4), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x08, 4), 120u);
    // 8-byte access, as a guest's 64-bit mov arrives.
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x0123456789abcdefULL, 8), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x80, 8), 0x0123456789abcdefULL);
    // The same address in I/O space decodes to nothing.
    EXPECT_EQ(bar_read(kBar0, 4, false), kAllOnes);
    // The last bytes of BAR0, and one access running past its end.
    EXPECT_EQ(bar_read(kBar0 + 0xffffc, 4), 0xffffffffu);  // unlisted register
    EXPECT_EQ(bar_read(kBar0 + 0xffffe, 4), kAllOnes);
    // Moving the BAR moves the decode.
    EXPECT_EQ(cfg_write(0x10, 0xfd000000, 4), 0u);
    EXPECT_EQ(bar_read(kBar0, 4), kAllOnes);
    EXPECT_EQ(bar_read(0xfd000000, 4), 0x010000edu);
    EXPECT_EQ(bar_read(0xfd000008, 4), 120u);
}

// multibar: an I/O BAR, a 64-bit BAR above 4 GiB and the expansion ROM, decoded from the
// absolute addresses the proxy sends.
class MpqemuMultibarTest : public MpqemuServerTest {
  protected:
    MpqemuMultibarTest() { server_.set_model("multibar"); }
};

TEST_F(MpqemuMultibarTest, IoMem64AndRomBars) {
    EXPECT_EQ(cfg_read(0x00, 4), 0xff011b36u);
    EXPECT_EQ(cfg_write(0x10, 0xc000, 4), 0u);        // BAR0: I/O ports 0xc000..0xc01f
    EXPECT_EQ(cfg_write(0x18, 0x00000000, 4), 0u);    // BAR2 low
    EXPECT_EQ(cfg_write(0x1c, 0x00000008, 4), 0u);    // BAR2 high: 0x8_0000_0000
    EXPECT_EQ(cfg_write(0x30, 0xfebff001, 4), 0u);    // ROM at 0xfebff000, enabled
    EXPECT_EQ(bar_read(0xc000, 4, false), kAllOnes);  // decoding still off
    EXPECT_EQ(cfg_write(0x04, 0x0003, 2), 0u);        // I/O and memory space
    EXPECT_EQ(bar_read(0xc000, 4, false), 0x7261626du);
    EXPECT_EQ(bar_read(0xc000, 4, true), kAllOnes);  // not a memory address
    EXPECT_EQ(bar_write(0xc008, 0xa5, 1, false), 0u);
    EXPECT_EQ(bar_read(0xc008, 1, false), 0xa5u);
    EXPECT_EQ(bar_read(0x800000010ULL, 4), 0x5eed0010u);
    EXPECT_EQ(bar_read(0x800000010ULL, 8), 0x5eed00145eed0010ULL);
    EXPECT_EQ(bar_write(0x8000fff00ULL, 0x1122334455667788ULL, 8), 0u);
    EXPECT_EQ(bar_read(0x8000fff00ULL, 8), 0x1122334455667788ULL);
    EXPECT_EQ(bar_read(0x000000010ULL, 4), kAllOnes);  // the low half alone is not the BAR
    EXPECT_EQ(bar_read(0xfebff000, 2), 0xaa55u);       // ROM signature
    EXPECT_EQ(bar_write(0xfebff000, 0, 2), kAllOnes);  // the ROM is read-only
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
}

// multibar?pcie=1 over mpqemu: the wire's configuration space is 256 bytes (QEMU's proxy is a
// conventional device), so the PCI Express capability is there but the extended space is not.
class MpqemuPcieTest : public MpqemuServerTest {
  protected:
    MpqemuPcieTest() {
        server_.set_model("multibar");
        server_.set_extra({"--param", "pcie=1"});
    }
};

TEST_F(MpqemuPcieTest, ExtendedSpaceIsNotServed) {
    EXPECT_EQ(cfg_read(0x00, 4), 0xff011b36u);
    bool express = false;
    for (uint64_t p = cfg_read(0x34, 1) & 0xfc, n = 0; p >= 0x40 && n < 48; ++n) {
        express = express || cfg_read(static_cast<uint32_t>(p), 1) == 0x10;
        p = cfg_read(static_cast<uint32_t>(p) + 1, 1) & 0xfc;
    }
    EXPECT_TRUE(express) << "no PCI Express capability in the first 256 bytes";
    EXPECT_EQ(cfg_read(0xfc, 4), 0u);         // the last dword still answers
    EXPECT_EQ(cfg_read(0x100, 4), kAllOnes);  // the AER header is beyond the wire's space
    EXPECT_EQ(cfg_write(0x110, 0xffffffff, 4), kAllOnes);
    EXPECT_NE(server_.log().find("runs past the 256-byte configuration space"), std::string::npos)
        << server_.log();
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
}

TEST_F(MpqemuServerTest, AddressDecodingToNothingReadsAllOnesAndLogsOnce) {
    program_bar0();
    EXPECT_EQ(bar_read(0x1000, 4), kAllOnes);
    EXPECT_EQ(bar_write(0x2000, 1, 4), kAllOnes);
    EXPECT_EQ(bar_read(0xffffffffffffff00ULL, 8), kAllOnes);
    // Still serving.
    EXPECT_EQ(bar_read(kBar0, 4), 0x010000edu);
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
    const std::string log = server_.log();
    size_t n = 0;
    for (size_t at = log.find("decodes to no BAR"); at != std::string::npos;
         at = log.find("decodes to no BAR", at + 1))
        ++n;
    EXPECT_EQ(n, 1u) << log;
}

TEST_F(MpqemuServerTest, SysmemResendsCloseTheOldFdsAndDmaUsesTheLatest) {
    Memfd ram(2 << 20);
    program_bar0();
    EXPECT_EQ(cfg_read(0, 2), 0x1234u);
    const int base_fds = server_.open_fds();
    ASSERT_GT(base_fds, 0);
    // As QEMU does: the same memfd as two distinct fds, two sections; then many re-sends.
    int peak = 0;
    for (int i = 0; i < 40; ++i) {
        const int a = ::dup(ram.fd), b = ::dup(ram.fd);
        sync_sysmem({{0x0, 0xc0000, 0x0}, {0x100000, 0x100000, 0x100000}}, {a, b});
        ::close(a);
        ::close(b);
        EXPECT_EQ(cfg_read(0, 2), 0x1234u);  // SYNC_SYSMEM has no reply: order by a request
        peak = std::max(peak, server_.open_fds());
    }
    // The server keeps no fd of a mapped set (the mappings hold the memory).
    EXPECT_LE(peak, base_fds + 2);

    // DMA RAM → edu → RAM through the latest mapping, across both sections.
    for (int i = 0; i < 4096; ++i) ram.host[0x10000 + i] = static_cast<uint8_t>(i * 13 + 1);
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x10000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x88, 0x40000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x90, 4096, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x98, 1, 8), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x98, 8) & 1, 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x40000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x88, 0x123000, 8), 0u);  // gpa 0x123000 = fd offset 0x123000
    EXPECT_EQ(bar_write(kBar0 + 0x98, 3, 8), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x98, 8) & 1, 0u);  // the DMA runs after the write's reply
    EXPECT_EQ(std::memcmp(ram.host + 0x10000, ram.host + 0x123000, 4096), 0);

    // A re-send with a different layout replaces the old one: gpa 0x10000 is now fd offset
    // 0x190000.
    {
        const int a = ::dup(ram.fd);
        sync_sysmem({{0x0, 0x80000, 0x180000}}, {a});
        ::close(a);
    }
    std::memset(ram.host + 0x190000, 0x5a, 16);
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x10000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x88, 0x40000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x90, 16, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x98, 1, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x40000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x88, 0x20000, 8), 0u);  // → fd offset 0x1a0000
    EXPECT_EQ(bar_write(kBar0 + 0x98, 3, 8), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x98, 8) & 1, 0u);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(ram.host[0x1a0000 + i], 0x5a) << i;
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
}

TEST_F(MpqemuServerTest, DmaOutsideEveryMappingFailsCleanly) {
    Memfd ram(1 << 20);
    program_bar0();
    // Before any SYNC_SYSMEM: no guest memory at all.
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x1000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x88, 0x40000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x90, 64, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x98, 1, 8), 0u);
    const int a = ::dup(ram.fd);
    sync_sysmem({{0x0, 0x80000, 0x0}}, {a});
    ::close(a);
    // Starting outside, and starting inside but running off the end.
    for (uint64_t src : {uint64_t{0x90000}, uint64_t{0x7ffc0}}) {
        EXPECT_EQ(bar_write(kBar0 + 0x80, src, 8), 0u);
        EXPECT_EQ(bar_write(kBar0 + 0x98, 1, 8), 0u);
    }
    // An entry claiming more than its file holds is refused as a whole.
    const int b = ::dup(ram.fd);
    sync_sysmem({{0x0, 0x200000, 0x0}}, {b});
    ::close(b);
    EXPECT_EQ(bar_write(kBar0 + 0x80, 0x1000, 8), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x98, 1, 8), 0u);
    EXPECT_EQ(bar_read(kBar0, 4), 0x010000edu);
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
    const std::string log = server_.log();
    EXPECT_NE(log.find("outside the guest memory QEMU shared"), std::string::npos) << log;
    EXPECT_NE(log.find("runs past the end of its file"), std::string::npos) << log;
}

TEST_F(MpqemuServerTest, IntxThroughIrqfdAndResample) {
    const int irqfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const int resample = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_TRUE(mq::send_message(server_.sock(), mq::Cmd::set_irqfd, {},
                                 std::vector<int>{irqfd, resample}));
    program_bar0();
    auto sync = [&] { EXPECT_EQ(cfg_read(0, 2), 0x1234u); };
    auto resample_now = [&] {
        const uint64_t one = 1;
        ASSERT_EQ(::write(resample, &one, sizeof one), 8);
        sync();  // the resamplefd was ready before this request: handled first
    };
    EXPECT_FALSE(readable(irqfd));
    // edu: raise interrupt status bit 0 → INTx 0→1 → one irqfd write.
    EXPECT_EQ(bar_write(kBar0 + 0x60, 1, 4), 0u);
    EXPECT_EQ(drain(irqfd), 1u);
    // A second raise while the line is high is no new edge.
    EXPECT_EQ(bar_write(kBar0 + 0x60, 2, 4), 0u);
    EXPECT_FALSE(readable(irqfd));
    // EOI while still asserted: the irqfd fires again.
    resample_now();
    EXPECT_EQ(drain(irqfd), 1u);
    // Acknowledge everything: the line drops; a resample now fires nothing.
    EXPECT_EQ(bar_write(kBar0 + 0x64, 3, 4), 0u);
    resample_now();
    EXPECT_FALSE(readable(irqfd));
    // COMMAND.Interrupt Disable masks the line.
    EXPECT_EQ(cfg_write(0x04, 0x0402, 2), 0u);
    EXPECT_EQ(bar_write(kBar0 + 0x60, 1, 4), 0u);
    EXPECT_FALSE(readable(irqfd));
    EXPECT_EQ(cfg_read(0x06, 2) & 0x08, 0x08u);  // status: interrupt pending
    EXPECT_EQ(cfg_write(0x04, 0x0002, 2), 0u);
    EXPECT_EQ(drain(irqfd), 1u);
    ::close(irqfd);
    ::close(resample);
}

TEST_F(MpqemuServerTest, ResamplefdThatIsNoEventfdIsDroppedNotSpunOn) {
    const int irqfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_TRUE(
        mq::send_message(server_.sock(), mq::Cmd::set_irqfd, {}, std::vector<int>{irqfd, sv[0]}));
    ::close(sv[0]);
    ::close(sv[1]);  // the "resamplefd" is now at EOF: readable forever
    EXPECT_EQ(cfg_read(0, 2), 0x1234u);
    program_bar0();
    EXPECT_EQ(bar_write(kBar0 + 0x60, 1, 4), 0u);
    EXPECT_EQ(drain(irqfd), 1u);  // INTx itself still works
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
    EXPECT_NE(server_.log().find("resamplefd is unreadable (end of file)"), std::string::npos)
        << server_.log();
    ::close(irqfd);
}

TEST_F(MpqemuServerTest, DeviceResetRestoresPowerOnState) {
    program_bar0();
    EXPECT_EQ(bar_write(kBar0 + 0x04, 1, 4), 0u);
    EXPECT_EQ(bar_read(kBar0 + 0x04, 4), 0xfffffffeu);
    ASSERT_TRUE(mq::send_message(server_.sock(), mq::Cmd::device_reset));
    EXPECT_EQ(ret(), 0u);
    EXPECT_EQ(cfg_read(0x10, 4), 0u);
    EXPECT_EQ(cfg_read(0x04, 2), 0u);
    EXPECT_EQ(bar_read(kBar0, 4), kAllOnes);  // BAR gone with the reset
    program_bar0();
    EXPECT_EQ(bar_read(kBar0 + 0x04, 4), 0u);  // liveness back to its reset value
}

TEST_F(MpqemuServerTest, SigtermExitsCleanly) {
    EXPECT_EQ(cfg_read(0, 2), 0x1234u);
    server_.signal(SIGTERM);
    EXPECT_EQ(exit_code(), 0);
}

// ---- Malformed frames: the connection closes, the process exits 1 naming the field -----------

struct Malformed {
    const char* name;
    std::vector<uint8_t> bytes;
    int fds;               // eventfds attached
    const char* expected;  // in the server's log
};

// Test names in ctest's list instead of the object's bytes.
void PrintTo(const Malformed& m, std::ostream* os) {
    *os << m.name;
}

std::vector<uint8_t> frame(int32_t cmd, uint64_t size, std::vector<uint8_t> payload = {}) {
    std::vector<uint8_t> b(16 + payload.size());
    std::memcpy(&b[0], &cmd, 4);
    std::memcpy(&b[8], &size, 8);
    if (!payload.empty()) std::memcpy(&b[16], payload.data(), payload.size());
    return b;
}

std::vector<uint8_t> conf(uint32_t addr, int32_t len) {
    auto p = mq::encode_conf({addr, 0, len});
    return {p.begin(), p.end()};
}

std::vector<uint8_t> bar(uint64_t addr, uint32_t size) {
    auto p = mq::encode_bar({addr, 0, size, true});
    return {p.begin(), p.end()};
}

class MpqemuMalformedTest : public MpqemuServerTest,
                            public ::testing::WithParamInterface<Malformed> {};

TEST_P(MpqemuMalformedTest, ClosesTheConnection) {
    const Malformed& m = GetParam();
    EXPECT_EQ(cfg_read(0, 2), 0x1234u);
    std::vector<int> fds;
    for (int i = 0; i < m.fds; ++i) fds.push_back(::eventfd(0, EFD_CLOEXEC));
    ASSERT_TRUE(mq::send_raw(server_.sock(), m.bytes, fds));
    for (int fd : fds) ::close(fd);
    EXPECT_TRUE(peer_closed());
    EXPECT_EQ(exit_code(), 1);
    const std::string log = server_.log();
    EXPECT_NE(log.find("dropping the proxy"), std::string::npos) << log;
    EXPECT_NE(log.find(m.expected), std::string::npos) << log;
}

INSTANTIATE_TEST_SUITE_P(
    Frames, MpqemuMalformedTest,
    ::testing::Values(
        Malformed{"CmdMax", frame(8, 0), 0, "cmd 8 is not a command"},
        Malformed{"CmdNegative", frame(-1, 0), 0, "cmd -1 is not a command"},
        Malformed{"Oversized", frame(3, 193), 0, "size 193 exceeds 192"},
        Malformed{"HugeSize", frame(3, uint64_t{1} << 40), 0, "exceeds 192"},
        Malformed{"CfgReadPayloadSize", frame(3, 8, std::vector<uint8_t>(8)), 0,
                  "PCI_CFGREAD: size 8 (must be 12)"},
        Malformed{"CfgLen3", frame(3, 12, conf(0, 3)), 0, "len 3 (must be 1, 2 or 4)"},
        Malformed{"BarPayloadSize", frame(5, 12, std::vector<uint8_t>(12)), 0,
                  "BAR_READ: size 12 (must be 24)"},
        Malformed{"BarAccessSize3", frame(5, 24, bar(0xfe000000, 3)), 0,
                  "access size 3 (must be 1, 2, 4 or 8)"},
        Malformed{"BarWithFd", frame(4, 24, bar(0xfe000000, 4)), 1, "BAR_WRITE: carries fds"},
        Malformed{"IrqfdOneFd", frame(6, 0), 1, "SET_IRQFD: 1 fds (must be 2)"},
        Malformed{"IrqfdPayload", frame(6, 8, std::vector<uint8_t>(8)), 2,
                  "SET_IRQFD: size 8 (must be 0)"},
        Malformed{"SysmemNoFds", frame(0, 192, std::vector<uint8_t>(192)), 0,
                  "SYNC_SYSMEM: no fds"},
        Malformed{"SysmemShort", frame(0, 64, std::vector<uint8_t>(64)), 1,
                  "SYNC_SYSMEM: size 64 (must be 192)"},
        Malformed{"EightFds", frame(0, 192, std::vector<uint8_t>(192)), 8,
                  "8 fds, at most 7 allowed"},
        Malformed{"RetFromProxy", frame(1, 8, std::vector<uint8_t>(8)), 0,
                  "RET: a reply, the proxy never sends one"}),
    [](const ::testing::TestParamInfo<Malformed>& p) { return std::string(p.param.name); });

TEST_F(MpqemuServerTest, TruncatedFrameThenEofExitsCleanly) {
    EXPECT_EQ(cfg_read(0, 2), 0x1234u);
    // Half a header, then QEMU goes away.
    auto f = frame(3, 12, conf(0, 2));
    ASSERT_TRUE(mq::send_raw(server_.sock(), std::span<const uint8_t>(f).first(8)));
    server_.close_socket();
    EXPECT_EQ(exit_code(), 0);
}

}  // namespace
