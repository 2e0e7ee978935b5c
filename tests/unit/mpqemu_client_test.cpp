// The mpqemu client against a fake remote written in the test, on a real socketpair: a thread
// that behaves like QEMU's x-remote (config space with sizable BARs, BAR accesses decoded from
// the BAR values it was given, and any access that decodes to nothing or reaches past config
// offset 252 is fatal, as in QEMU). Every frame the client sends is recorded and checked.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <thread>

#include "../support/alloc_counter.hpp"
#include "mpqemu/client.hpp"
#include "mpqemu/protocol.hpp"
#include "mpqemu/qemu_process.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin {
namespace {

namespace mq = mpqemu;
using namespace std::chrono_literals;

struct Frame {
    mq::Cmd cmd = mq::Cmd::ret;
    mq::ConfData conf;
    mq::BarAccess bar;
    mq::SyncSysmem sysmem;
    size_t fds = 0;
};

class FakeRemote {
  public:
    // What the fake device has: BAR0 mem64 16 KiB, BAR2 I/O 32 bytes, BAR3 mem32 prefetchable
    // 4 KiB, a 64 KiB ROM.
    static constexpr uint64_t kBar0Size = 16 * 1024, kBar2Size = 32, kBar3Size = 4096,
                              kRomSize = 64 * 1024;

    FakeRemote() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        client_end.reset(sv[0]);
        sock_.reset(sv[1]);
        cfg_.fill(0);
        put(0x00, 0x1b36, 2);
        put(0x02, 0x0010, 2);
        put(0x08, 0x01080202, 4);
        put(0x3d, 1, 1);
        put(0xFC, 0xA1B2C3D4, 4);
        put(0x10, 0x4, 4);  // mem64
        put(0x18, 0x1, 4);  // I/O
        put(0x1C, 0x8, 4);  // mem32 prefetchable
        thread_ = std::thread([this] { run(); });
    }
    ~FakeRemote() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }

    std::vector<Frame> frames() {
        std::lock_guard lk(mu_);
        return frames_;
    }
    size_t count() {
        std::lock_guard lk(mu_);
        return frames_.size();
    }
    std::string fatal() {
        std::lock_guard lk(mu_);
        return fatal_;
    }
    uint32_t cfg(uint32_t off, int len) {
        std::lock_guard lk(mu_);
        return get(off, len);
    }
    int irqfd() {
        std::lock_guard lk(mu_);
        return irq_.get();
    }
    int resamplefd() {
        std::lock_guard lk(mu_);
        return resample_.get();
    }
    // Closes the connection the next time it is idle.
    void die() { die_ = true; }
    // Answers the next request with this command instead of RET.
    void answer_wrongly() { wrong_ = true; }

    UniqueFd client_end;

  private:
    void put(uint32_t off, uint32_t v, int len) {
        for (int i = 0; i < len; ++i) cfg_[off + i] = static_cast<uint8_t>(v >> (8 * i));
    }
    uint32_t get(uint32_t off, int len) const {
        uint32_t v = 0;
        for (int i = 0; i < len; ++i) v |= uint32_t{cfg_[off + i]} << (8 * i);
        return v;
    }
    uint32_t bar_value(int i) const { return get(0x10 + 4 * i, 4); }
    // Which BAR [addr, addr+size) hits in the given space, as QEMU's address_space_rw would
    // find it: only with decode enabled, and only wholly inside one BAR.
    bool decodes(uint64_t addr, uint32_t size, bool memory) const {
        const uint16_t cmd = static_cast<uint16_t>(get(0x04, 2));
        struct B {
            uint64_t base, size;
            bool mem;
        };
        std::vector<B> bars;
        bars.push_back({(uint64_t{bar_value(1)} << 32) | (bar_value(0) & ~0xFu), kBar0Size, true});
        bars.push_back({bar_value(2) & ~3u, kBar2Size, false});
        bars.push_back({bar_value(3) & ~0xFu, kBar3Size, true});
        if ((get(0x30, 4) & 1) != 0) bars.push_back({get(0x30, 4) & ~0x7FFu, kRomSize, true});
        for (const auto& b : bars) {
            if (b.mem != memory) continue;
            if (memory && (cmd & 2) == 0) continue;
            if (!memory && (cmd & 1) == 0) continue;
            if (addr >= b.base && addr + size <= b.base + b.size) return true;
        }
        return false;
    }
    void config_write(uint32_t off, uint32_t val, int len) {
        for (int i = 0; i < len; ++i) {
            const uint32_t o = off + i;
            uint8_t byte = static_cast<uint8_t>(val >> (8 * i));
            const uint32_t dword = o & ~3u;
            uint32_t mask = 0xFFFFFFFF;
            if (dword == 0x10) mask = static_cast<uint32_t>(~(kBar0Size - 1) | 0xF);
            if (dword == 0x14) mask = 0xFFFFFFFF;
            if (dword == 0x18) mask = static_cast<uint32_t>(~(kBar2Size - 1) | 0x3);
            if (dword == 0x1C) mask = static_cast<uint32_t>(~(kBar3Size - 1) | 0xF);
            if (dword == 0x20 || dword == 0x24) mask = 0;
            if (dword == 0x30) mask = static_cast<uint32_t>(~(kRomSize - 1) | 1);
            if (dword == 0x00 || dword == 0x08) mask = 0;
            const uint8_t m = static_cast<uint8_t>(mask >> (8 * (o & 3)));
            uint8_t keep = cfg_[o];
            // BAR type bits are read-only.
            if (dword >= 0x10 && dword <= 0x1C && (o & 3) == 0) {
                const uint8_t ro = dword == 0x18 ? 0x3 : 0xF;
                byte = static_cast<uint8_t>((byte & ~ro) | (keep & ro));
            }
            cfg_[o] = static_cast<uint8_t>((keep & ~m) | (byte & m));
        }
    }

    void run() {
        while (!stop_) {
            pollfd p{sock_.get(), POLLIN, 0};
            if (::poll(&p, 1, 10) <= 0) {
                if (die_) {
                    std::lock_guard lk(mu_);
                    sock_.reset();
                    return;
                }
                continue;
            }
            auto m = mq::recv_message(sock_.get(), {.timeout_ms = 1000});
            if (!m) return;
            std::lock_guard lk(mu_);
            Frame f;
            f.cmd = m->cmd;
            f.fds = m->fds.size();
            uint64_t reply = 0;
            bool answer = true;
            switch (m->cmd) {
                case mq::Cmd::sync_sysmem:
                    f.sysmem = *mq::decode_sysmem(*m);
                    answer = false;
                    break;
                case mq::Cmd::set_irqfd:
                    irq_ = std::move(m->fds[0]);
                    resample_ = std::move(m->fds[1]);
                    answer = false;
                    break;
                case mq::Cmd::pci_cfgread:
                case mq::Cmd::pci_cfgwrite: {
                    f.conf = *mq::decode_conf(*m);
                    if (f.conf.addr + 4 > 256) {
                        fatal_ = "config offset out of range";
                        frames_.push_back(f);
                        sock_.reset();  // QEMU's remote exits
                        return;
                    }
                    if (m->cmd == mq::Cmd::pci_cfgread)
                        reply = get(f.conf.addr, f.conf.len);
                    else
                        config_write(f.conf.addr, f.conf.val, f.conf.len);
                    break;
                }
                case mq::Cmd::bar_read:
                case mq::Cmd::bar_write:
                    f.bar = *mq::decode_bar(*m);
                    if (!decodes(f.bar.addr, f.bar.size, f.bar.memory)) {
                        fatal_ = fmt::format("bad address {:#x}", f.bar.addr);
                        frames_.push_back(f);
                        sock_.reset();
                        return;
                    }
                    // Writing 0xFEED raises INTx before the reply, as a device whose register
                    // write completes something does.
                    if (m->cmd == mq::Cmd::bar_write && f.bar.val == 0xFEED && irq_) {
                        const uint64_t one = 1;
                        (void)!::write(irq_.get(), &one, 8);
                    }
                    // Reads return the address's low bytes: easy to check per chunk.
                    if (m->cmd == mq::Cmd::bar_read)
                        reply = f.bar.size == 8 ? f.bar.addr * 0x0101 : f.bar.addr & 0xFFFFFFFF;
                    break;
                case mq::Cmd::device_reset:
                    for (uint32_t o = 0x04; o < 0x06; ++o) cfg_[o] = 0;
                    for (uint32_t o = 0x10; o < 0x34; ++o)
                        if (o < 0x28 || o >= 0x30) cfg_[o] &= (o & 3) == 0 ? 0xF : 0;
                    cfg_[0x18] = 1;
                    cfg_[0x30] = 0;
                    break;
                case mq::Cmd::ret:
                    break;
            }
            frames_.push_back(f);
            if (!answer) continue;
            if (wrong_) {
                wrong_ = false;
                (void)mq::send_message(sock_.get(), mq::Cmd::device_reset);
                continue;
            }
            if (m->cmd == mq::Cmd::device_reset) {
                (void)mq::send_message(sock_.get(), mq::Cmd::ret);  // size 0, as QEMU
            } else {
                (void)mq::send_message(sock_.get(), mq::Cmd::ret, mq::encode_ret(reply));
            }
        }
    }

    UniqueFd sock_;
    std::array<uint8_t, 256> cfg_{};
    std::mutex mu_;
    std::vector<Frame> frames_;
    std::string fatal_;
    UniqueFd irq_, resample_;
    std::atomic<bool> stop_{false}, die_{false}, wrong_{false};
    std::thread thread_;
};

class Events final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool asserted) override { level = asserted; }
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return fail("no"); }
    void disconnected(std::string_view text) override {
        ++disconnects;
        why = std::string(text);
    }
    void reconnected() override { ++reconnects; }
    bool level = false;
    int disconnects = 0, reconnects = 0;
    std::string why;
};

struct Fixture {
    FakeRemote remote;
    Events events;
    std::unique_ptr<vm::GuestMemory> mem;
    std::unique_ptr<mpqemu::MpqemuClient> client;

    explicit Fixture(bool with_memory = true) {
        if (with_memory) {
            auto m = vm::GuestMemory::create({{Gpa{0}, 1u << 20}, {Gpa{0x200000}, 1u << 20}});
            EXPECT_TRUE(m);
            mem = std::move(*m);
        }
        mpqemu::MpqemuClientSettings s;
        s.socket = std::move(remote.client_end);
        s.label = "mpqemu-fd:test";
        s.timeout = 2000ms;
        s.events = &events;
        s.memory = mem.get();
        auto c = mpqemu::MpqemuClient::open(std::move(s));
        EXPECT_TRUE(c) << c.error().message;
        if (c) client = std::move(*c);
    }
};

uint64_t read_bar(hostdev::HostDevice& d, uint32_t bar, uint64_t off, size_t n, bool expect_ok) {
    uint8_t b[8] = {};
    auto r = d.region_read(bar, off, std::span(b, n));
    EXPECT_EQ(static_cast<bool>(r), expect_ok) << (r ? "" : r.error().message);
    uint64_t v = 0;
    std::memcpy(&v, b, n);
    return v;
}

template <typename F>
bool eventually(mpqemu::MpqemuClient& c, F cond) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
        c.poll_events();
        if (cond()) return true;
        std::this_thread::sleep_for(1ms);
    }
    return false;
}

TEST(MpqemuClient, OpenSendsSysmemIrqfdThenProbesAndProgramsBars) {
    Fixture f;
    ASSERT_TRUE(f.client);
    const auto fr = f.remote.frames();
    ASSERT_GE(fr.size(), 3u);
    // Guest RAM first: one entry per region, one fd per entry.
    EXPECT_EQ(fr[0].cmd, mq::Cmd::sync_sysmem);
    EXPECT_EQ(fr[0].fds, 2u);
    ASSERT_EQ(fr[0].sysmem.entries.size(), 2u);
    EXPECT_EQ(fr[0].sysmem.entries[0].gpa, 0u);
    EXPECT_EQ(fr[0].sysmem.entries[0].size, 1u << 20);
    EXPECT_EQ(fr[0].sysmem.entries[1].gpa, 0x200000u);
    EXPECT_EQ(fr[0].sysmem.entries[1].offset, static_cast<int64_t>(f.mem->regions()[1].fd_offset));
    EXPECT_EQ(fr[1].cmd, mq::Cmd::set_irqfd);
    EXPECT_EQ(fr[1].fds, 2u);
    // Decode off, then the sizing sequence for BAR0 (read, all-ones, read, restore).
    EXPECT_EQ(fr[2].cmd, mq::Cmd::pci_cfgwrite);
    EXPECT_EQ(fr[2].conf.addr, 0x04u);
    EXPECT_EQ(fr[2].conf.val, 0u);
    const std::vector<std::pair<mq::Cmd, uint32_t>> sizing = {{mq::Cmd::pci_cfgread, 0},
                                                              {mq::Cmd::pci_cfgwrite, 0xFFFFFFFF},
                                                              {mq::Cmd::pci_cfgread, 0},
                                                              {mq::Cmd::pci_cfgwrite, 0x4}};
    for (size_t i = 0; i < sizing.size(); ++i) {
        EXPECT_EQ(fr[3 + i].cmd, sizing[i].first) << i;
        EXPECT_EQ(fr[3 + i].conf.addr, 0x10u) << i;
        EXPECT_EQ(fr[3 + i].conf.len, 4) << i;
        if (sizing[i].first == mq::Cmd::pci_cfgwrite) {
            EXPECT_EQ(fr[3 + i].conf.val, sizing[i].second);
        }
    }
    // The ROM is sized with 0xFFFFF800.
    bool rom_sized = false;
    for (const auto& x : fr)
        if (x.cmd == mq::Cmd::pci_cfgwrite && x.conf.addr == 0x30 && x.conf.val == 0xFFFFF800)
            rom_sized = true;
    EXPECT_TRUE(rom_sized);
    // Nothing ever reached past offset 252, nothing fatal happened.
    for (const auto& x : fr)
        if (x.cmd == mq::Cmd::pci_cfgread || x.cmd == mq::Cmd::pci_cfgwrite) {
            EXPECT_LE(x.conf.addr + 4, 256u);
        }
    EXPECT_EQ(f.remote.fatal(), "");

    // Region info from the probe.
    auto r0 = f.client->region_info(0);
    ASSERT_TRUE(r0);
    EXPECT_EQ(r0->bar_kind, pci::BarKind::mem64);
    EXPECT_EQ(r0->size, FakeRemote::kBar0Size);
    EXPECT_FALSE(r0->prefetchable);
    EXPECT_FALSE(f.client->region_info(1)->present());
    EXPECT_EQ(f.client->region_info(2)->bar_kind, pci::BarKind::io);
    EXPECT_EQ(f.client->region_info(2)->size, FakeRemote::kBar2Size);
    EXPECT_EQ(f.client->region_info(3)->bar_kind, pci::BarKind::mem32);
    EXPECT_TRUE(f.client->region_info(3)->prefetchable);
    EXPECT_FALSE(f.client->region_info(4)->present());
    EXPECT_EQ(f.client->region_info(6)->bar_kind, pci::BarKind::rom);
    EXPECT_EQ(f.client->region_info(6)->size, FakeRemote::kRomSize);
    EXPECT_FALSE(f.client->region_info(6)->writable);
    EXPECT_EQ(f.client->region_info(7)->bar_kind, std::nullopt);
    EXPECT_EQ(f.client->region_info(7)->size, 256u);
    EXPECT_FALSE(f.client->region_info(8));

    // The private layout as programmed: naturally aligned, memory above RAM from 0xE0000000,
    // I/O from 0xC000, decode on.
    const auto b0 = f.client->bar(0), b2 = f.client->bar(2), b3 = f.client->bar(3),
               rom = f.client->bar(6);
    EXPECT_GE(b0.base, 0xE0000000u);
    EXPECT_EQ(b0.base % b0.size, 0u);
    EXPECT_EQ(b3.base % b3.size, 0u);
    EXPECT_EQ(rom.base % rom.size, 0u);
    EXPECT_EQ(b2.base, 0xC000u);
    // 32-bit BARs (and the ROM) are placed before the 64-bit one, so they stay below 4 GiB.
    EXPECT_GT(b0.base, b3.base);
    EXPECT_GT(b0.base, rom.base);
    EXPECT_EQ(f.remote.cfg(0x10, 4) & ~0xFu, static_cast<uint32_t>(b0.base));
    EXPECT_EQ(f.remote.cfg(0x14, 4), static_cast<uint32_t>(b0.base >> 32));
    EXPECT_EQ(f.remote.cfg(0x18, 4) & ~3u, b2.base);
    EXPECT_EQ(f.remote.cfg(0x1C, 4) & ~0xFu, b3.base);
    EXPECT_EQ(f.remote.cfg(0x30, 4), static_cast<uint32_t>(rom.base) | 1u);
    EXPECT_EQ(f.remote.cfg(0x04, 2), 0x3u);

    auto info = f.client->info();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->num_regions, 8u);
    EXPECT_EQ(info->num_irqs, 1u);
    EXPECT_TRUE(info->reset_supported);
}

TEST(MpqemuClient, MemoryBarsGoAboveGuestRam) {
    FakeRemote remote;
    Events events;
    auto mem = vm::GuestMemory::create({{Gpa{0xF000'0000}, 1u << 20}});
    ASSERT_TRUE(mem);
    mpqemu::MpqemuClientSettings s;
    s.socket = std::move(remote.client_end);
    s.events = &events;
    s.memory = mem->get();
    s.mem_base = 0xE000'0000;
    auto c = mpqemu::MpqemuClient::open(std::move(s));
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_GE((*c)->bar(0).base, 0xF010'0000u);
    // The 32-bit BAR3 and ROM still fit below 4 GiB.
    EXPECT_LT((*c)->bar(3).base + (*c)->bar(3).size, 1ull << 32);
}

TEST(MpqemuClient, BarAccessesUseAbsoluteAddressesAndNaturalSizes) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    const uint64_t b0 = c.bar(0).base;
    size_t before = f.remote.count();
    EXPECT_EQ(read_bar(c, 0, 0x10, 4, true), (b0 + 0x10) & 0xFFFFFFFF);
    EXPECT_EQ(read_bar(c, 0, 0x18, 8, true), (b0 + 0x18) * 0x0101);
    auto fr = f.remote.frames();
    ASSERT_EQ(fr.size(), before + 2);
    EXPECT_EQ(fr[before].cmd, mq::Cmd::bar_read);
    EXPECT_EQ(fr[before].bar.addr, b0 + 0x10);
    EXPECT_EQ(fr[before].bar.size, 4u);
    EXPECT_TRUE(fr[before].bar.memory);
    EXPECT_EQ(fr[before + 1].bar.size, 8u);

    // A bulk write at an odd offset splits into aligned 1/2/4/8-byte pieces.
    before = f.remote.count();
    std::vector<uint8_t> data(21);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i + 1);
    ASSERT_TRUE(c.region_write(0, 0x101, data));
    fr = f.remote.frames();
    uint64_t at = b0 + 0x101;
    size_t total = 0;
    for (size_t i = before; i < fr.size(); ++i) {
        EXPECT_EQ(fr[i].cmd, mq::Cmd::bar_write);
        EXPECT_EQ(fr[i].bar.addr, at);
        EXPECT_EQ(fr[i].bar.addr % fr[i].bar.size, 0u);
        EXPECT_EQ(fr[i].bar.val & 0xFF, data[at - b0 - 0x101]);
        at += fr[i].bar.size;
        total += fr[i].bar.size;
    }
    EXPECT_EQ(total, data.size());

    // I/O BAR: port addresses, memory=false, at most 4 bytes.
    before = f.remote.count();
    EXPECT_EQ(read_bar(c, 2, 0x8, 8, true) & 0xFFFFFFFF, c.bar(2).base + 0x8);
    fr = f.remote.frames();
    ASSERT_EQ(fr.size(), before + 2);
    EXPECT_FALSE(fr[before].bar.memory);
    EXPECT_EQ(fr[before].bar.addr, c.bar(2).base + 0x8);
    EXPECT_EQ(fr[before].bar.size, 4u);

    // ROM reads go to the ROM BAR; ROM writes fail locally.
    before = f.remote.count();
    EXPECT_EQ(read_bar(c, 6, 0x40, 4, true), (c.bar(6).base + 0x40) & 0xFFFFFFFF);
    uint8_t w[4] = {};
    EXPECT_FALSE(c.region_write(6, 0, w));
    EXPECT_EQ(f.remote.count(), before + 1);
    EXPECT_EQ(f.remote.fatal(), "");
}

TEST(MpqemuClient, OutOfRangeAccessesNeverReachTheRemote) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    const size_t before = f.remote.count();
    EXPECT_EQ(read_bar(c, 0, FakeRemote::kBar0Size, 4, false), 0xFFFFFFFFu);
    EXPECT_EQ(read_bar(c, 0, FakeRemote::kBar0Size - 2, 4, false), 0xFFFFFFFFu);
    EXPECT_EQ(read_bar(c, 0, ~0ull - 1, 4, false), 0xFFFFFFFFu);
    EXPECT_EQ(read_bar(c, 1, 0, 4, false), 0xFFFFFFFFu);  // upper half of BAR0
    EXPECT_EQ(read_bar(c, 4, 0, 4, false), 0xFFFFFFFFu);  // absent
    EXPECT_EQ(read_bar(c, 9, 0, 4, false), 0xFFFFFFFFu);
    uint8_t w[4] = {};
    EXPECT_FALSE(c.region_write(2, FakeRemote::kBar2Size, w));
    EXPECT_FALSE(c.region_write(5, 0, w));
    std::vector<uint8_t> cfg(4);
    EXPECT_FALSE(c.config_read(0x100, cfg));
    EXPECT_FALSE(c.config_read(0xFE, cfg));  // crosses 256
    EXPECT_FALSE(c.config_write(0x100, cfg));
    EXPECT_FALSE(c.config_write(0xFD, std::span(cfg.data(), 1)));  // would need offset+4 > 256
    EXPECT_EQ(f.remote.count(), before);
    EXPECT_EQ(f.remote.fatal(), "");
    EXPECT_TRUE(c.connected());
    // 0xFD-0xFF come from the dword at 0xFC.
    std::vector<uint8_t> tail(3);
    ASSERT_TRUE(c.config_read(0xFD, tail));
    EXPECT_EQ(tail, (std::vector<uint8_t>{0xC3, 0xB2, 0xA1}));
    EXPECT_EQ(f.remote.frames().back().conf.addr, 0xFCu);
    // The whole 256 bytes read in dwords, with nothing past 252.
    std::vector<uint8_t> all(256);
    ASSERT_TRUE(c.config_read(0, all));
    EXPECT_EQ(all[0], 0x36);
    EXPECT_EQ(all[0xFF], 0xA1);
    EXPECT_EQ(f.remote.fatal(), "");
}

TEST(MpqemuClient, ConfigWritesKeepDecodeAndSkipBarRegisters) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    const uint32_t bar0 = f.remote.cfg(0x10, 4);
    const size_t before = f.remote.count();
    // The guest's BAR writes (PCI_FRONT never sends them; guarded anyway).
    const uint32_t ones = 0xFFFFFFFF;
    EXPECT_TRUE(c.config_write(0x10, std::span(reinterpret_cast<const uint8_t*>(&ones), 4)));
    EXPECT_TRUE(c.config_write(0x30, std::span(reinterpret_cast<const uint8_t*>(&ones), 4)));
    EXPECT_EQ(f.remote.count(), before);
    EXPECT_EQ(f.remote.cfg(0x10, 4), bar0);
    // Bus master with decode off in the guest: decode stays on in the remote.
    const uint8_t cmd[2] = {0x04, 0x04};  // bus master, interrupt disable
    ASSERT_TRUE(c.config_write(0x04, cmd));
    EXPECT_EQ(f.remote.cfg(0x04, 2), 0x0407u);
    const uint8_t off[2] = {0, 0};
    ASSERT_TRUE(c.config_write(0x04, off));
    EXPECT_EQ(f.remote.cfg(0x04, 2), 0x0003u);
    // A write spanning a BAR register and its neighbours forwards only the neighbours.
    const uint8_t span8[8] = {1, 2, 3, 4, 5, 6, 7, 8};  // 0x0C..0x13
    const size_t n0 = f.remote.count();
    ASSERT_TRUE(c.config_write(0x0C, span8));
    const auto fr = f.remote.frames();
    for (size_t i = n0; i < fr.size(); ++i) EXPECT_LT(fr[i].conf.addr, 0x10u);
    EXPECT_EQ(f.remote.cfg(0x10, 4), bar0);
}

TEST(MpqemuClient, IntxThroughIrqfdAndResample) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    const uint64_t one = 1;
    ASSERT_GE(f.remote.irqfd(), 0);
    ASSERT_EQ(::write(f.remote.irqfd(), &one, 8), 8);
    ASSERT_TRUE(eventually(c, [&] { return f.events.level; }));
    // EOI: the line drops and the remote is asked to resample.
    ASSERT_TRUE(c.ack_intx());
    EXPECT_FALSE(f.events.level);
    pollfd p{f.remote.resamplefd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 1000), 1);
    uint64_t v = 0;
    ASSERT_EQ(::read(f.remote.resamplefd(), &v, 8), 8);
    // The remote's line is still up: it fires again, the line is asserted again.
    ASSERT_EQ(::write(f.remote.irqfd(), &one, 8), 8);
    ASSERT_TRUE(eventually(c, [&] { return f.events.level; }));
    // A guest write is no acknowledgement: only the EOI (ack_intx) drops the line.
    uint8_t w[4] = {};
    ASSERT_TRUE(c.region_write(0, 0, w));
    EXPECT_TRUE(f.events.level);
    EXPECT_EQ(::poll(&p, 1, 0), 0);  // no resample asked
    // An EOI after the device lowered its line: dropped, resample asked, no new irqfd.
    ASSERT_TRUE(c.ack_intx());
    EXPECT_FALSE(f.events.level);
    ASSERT_EQ(::poll(&p, 1, 1000), 1);
    ASSERT_EQ(::read(f.remote.resamplefd(), &v, 8), 8);
    // An interrupt a write itself raises is delivered before the write returns.
    const uint32_t feed = 0xFEED;
    ASSERT_TRUE(c.region_write(3, 0, std::span(reinterpret_cast<const uint8_t*>(&feed), 4)));
    EXPECT_TRUE(f.events.level);
    // MSI cannot be enabled on x-remote.
    EXPECT_FALSE(c.set_irqs(hostdev::IrqKind::msix, 4));
    EXPECT_TRUE(c.set_irqs(hostdev::IrqKind::intx, 1));
}

TEST(MpqemuClient, ResetWaitsForRetAndReprograms) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    const uint32_t bar0 = f.remote.cfg(0x10, 4);
    const size_t before = f.remote.count();
    ASSERT_TRUE(c.reset());
    const auto fr = f.remote.frames();
    ASSERT_GT(fr.size(), before + 1);
    EXPECT_EQ(fr[before].cmd, mq::Cmd::device_reset);
    EXPECT_EQ(f.remote.cfg(0x10, 4), bar0);
    EXPECT_EQ(f.remote.cfg(0x04, 2), 0x3u);
    EXPECT_EQ(read_bar(c, 0, 0, 4, true), c.bar(0).base & 0xFFFFFFFF);
    EXPECT_EQ(f.remote.fatal(), "");
}

TEST(MpqemuClient, NoMemoryMeansNoSysmem) {
    Fixture f(false);
    ASSERT_TRUE(f.client);
    const auto fr = f.remote.frames();
    ASSERT_FALSE(fr.empty());
    EXPECT_EQ(fr[0].cmd, mq::Cmd::set_irqfd);
}

TEST(MpqemuClient, ClosedRemoteReadsAllOnes) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    f.remote.die();
    ASSERT_TRUE(eventually(c, [&] { return f.events.disconnects > 0; }));
    EXPECT_EQ(f.events.disconnects, 1);
    EXPECT_NE(f.events.why.find("mpqemu-fd:test"), std::string::npos) << f.events.why;
    EXPECT_FALSE(c.connected());
    EXPECT_EQ(read_bar(c, 0, 0, 4, false), 0xFFFFFFFFu);
    std::vector<uint8_t> cfg(2);
    EXPECT_FALSE(c.config_read(0, cfg));
    EXPECT_EQ(cfg, (std::vector<uint8_t>{0xFF, 0xFF}));
    uint8_t w[4] = {};
    EXPECT_FALSE(c.region_write(0, 0, w));
    EXPECT_FALSE(c.reset());
    c.poll_events();
    EXPECT_EQ(f.events.disconnects, 1);
}

// A respawned remote gets the whole setup again, the guest's command bits and the config bytes
// the guest wrote (not BARs, not status), in the order written.
TEST(MpqemuClient, RespawnSetsUpTheNewRemoteAndReplaysConfig) {
    FakeRemote first;
    Events events;
    auto mem = vm::GuestMemory::create({{Gpa{0}, 1u << 20}});
    ASSERT_TRUE(mem);
    std::vector<std::unique_ptr<FakeRemote>> later;
    std::mutex later_mu;
    mpqemu::MpqemuClientSettings s;
    s.socket = std::move(first.client_end);
    s.label = "mpqemu-fd:respawn";
    s.events = &events;
    s.memory = mem->get();
    s.respawn_interval = 1ms;
    s.respawn = [&]() -> Result<std::pair<UniqueFd, std::unique_ptr<mpqemu::QemuProcess>>> {
        auto r = std::make_unique<FakeRemote>();
        UniqueFd fd = std::move(r->client_end);
        std::lock_guard lk(later_mu);
        later.push_back(std::move(r));
        return std::make_pair(std::move(fd), std::unique_ptr<mpqemu::QemuProcess>());
    };
    auto c = mpqemu::MpqemuClient::open(std::move(s));
    ASSERT_TRUE(c) << c.error().message;
    auto& client = **c;
    const uint8_t cmd[2] = {0x04, 0x00};
    ASSERT_TRUE(client.config_write(0x04, cmd));
    const uint8_t cls = 0x10, status[2] = {0xFF, 0xFF};
    ASSERT_TRUE(client.config_write(0x0C, std::span(&cls, 1)));
    ASSERT_TRUE(client.config_write(0x06, status));
    const uint32_t bar0 = first.cfg(0x10, 4);
    first.die();
    ASSERT_TRUE(eventually(client, [&] { return events.reconnects > 0; }));
    EXPECT_EQ(events.disconnects, 1);
    EXPECT_EQ(client.respawns(), 1u);
    std::lock_guard lk(later_mu);
    ASSERT_EQ(later.size(), 1u);
    FakeRemote& fresh = *later[0];
    const auto fr = fresh.frames();
    ASSERT_GE(fr.size(), 2u);
    EXPECT_EQ(fr[0].cmd, mq::Cmd::sync_sysmem);
    EXPECT_EQ(fr[1].cmd, mq::Cmd::set_irqfd);
    EXPECT_EQ(fresh.cfg(0x10, 4), bar0);
    EXPECT_EQ(fresh.cfg(0x04, 2), 0x0007u);
    EXPECT_EQ(fresh.cfg(0x0C, 1), 0x10u);
    for (const auto& x : fr) {
        if (x.cmd == mq::Cmd::pci_cfgwrite) {
            EXPECT_NE(x.conf.addr, 0x06u) << "status replayed";
        }
    }
    EXPECT_EQ(read_bar(client, 0, 0, 4, true), client.bar(0).base & 0xFFFFFFFF);
    client.close();
}

// The guest access path (a BAR read or write) costs the exchange and nothing else: counted on
// this thread only (the fake remote allocates freely).
TEST(MpqemuClient, GuestAccessesMakeNoHeapAllocation) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    uint8_t b[4] = {1, 2, 3, 4};
    ASSERT_TRUE(c.region_read(0, 0, b));  // the reused reply buffer has its size from now on
    ASSERT_TRUE(c.region_write(0, 4, b));
    bool all_ok = true;
    size_t allocations = 0;
    {
        testing::CountAllocations counting;
        for (int i = 0; i < 100; ++i) {
            all_ok = static_cast<bool>(c.region_read(0, 0, b)) && all_ok;
            all_ok = static_cast<bool>(c.region_write(0, 4, b)) && all_ok;
            all_ok = static_cast<bool>(c.region_read(2, 0, std::span(b, 2))) && all_ok;
        }
        allocations = counting.count();
    }
    EXPECT_TRUE(all_ok);
    EXPECT_EQ(allocations, 0u);
    EXPECT_EQ(f.remote.fatal(), "");
}

TEST(MpqemuClient, AnythingButRetLosesTheConnection) {
    Fixture f;
    ASSERT_TRUE(f.client);
    auto& c = *f.client;
    f.remote.answer_wrongly();
    EXPECT_EQ(read_bar(c, 0, 0, 4, false), 0xFFFFFFFFu);
    EXPECT_FALSE(c.connected());
    c.poll_events();
    EXPECT_EQ(f.events.disconnects, 1);
}

TEST(MpqemuClient, QemuDeviceUrlParsing) {
    auto s = mpqemu::parse_qemu_device("nvme,drive=disk.raw,serial=pk1,num_queues=4");
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->device, "nvme");
    EXPECT_EQ(s->drive, "disk.raw");
    ASSERT_EQ(s->props.size(), 2u);
    EXPECT_EQ(s->props[0], (std::pair<std::string, std::string>{"serial", "pk1"}));
    EXPECT_TRUE(mpqemu::parse_qemu_device("e1000"));
    EXPECT_FALSE(mpqemu::parse_qemu_device(",serial=1"));
    EXPECT_FALSE(mpqemu::parse_qemu_device("nvme,,serial=1"));
    EXPECT_FALSE(mpqemu::parse_qemu_device("nvme,serial"));
    EXPECT_FALSE(mpqemu::parse_qemu_device("nvme,id=x"));
    EXPECT_FALSE(mpqemu::parse_qemu_device("nvme,drive="));
    EXPECT_FALSE(mpqemu::parse_qemu_device("nvme,serial=1,serial=2"));
    EXPECT_FALSE(mpqemu::parse_qemu_device("drive=x"));
}

TEST(MpqemuClient, QemuCommandLine) {
    mpqemu::QemuLaunchSettings q;
    q.device = "nvme";
    q.drive = "/tmp/a,b.raw";
    q.device_props = {{"serial", "pk1"}};
    const auto argv = mpqemu::qemu_remote_command(q, 3, "/tmp/q.sock");
    std::string joined;
    for (const auto& a : argv) joined += a + " ";
    EXPECT_EQ(joined,
              "qemu-system-x86_64 -machine x-remote -nodefaults -display none -monitor none "
              "-serial none -drive file=/tmp/a,,b.raw,if=none,id=drive0,format=raw -device "
              "nvme,id=dev0,drive=drive0,serial=pk1 -object "
              "x-remote-object,id=robj0,devid=dev0,fd=3 -qmp "
              "unix:/tmp/q.sock,server=on,wait=off ");
}

TEST(MpqemuClient, TransportsAreRegisteredWithTheirParameters) {
    hostdev::TransportRegistry r;
    ASSERT_TRUE(mpqemu::register_mpqemu_transports(r));
    const auto schemes = r.schemes();
    EXPECT_NE(std::find(schemes.begin(), schemes.end(), "qemu"), schemes.end());
    EXPECT_NE(std::find(schemes.begin(), schemes.end(), "mpqemu-fd"), schemes.end());
    Events events;
    hostdev::OpenContext ctx;
    ctx.events = &events;
    auto bad = r.open("mpqemu-fd:abc", ctx);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("abc"), std::string::npos);
    bad = r.open("qemu:nvme?bogus=1", ctx);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("bogus"), std::string::npos);
    bad = r.open("qemu:nvme,drive=/no/such/disk.raw", ctx);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("/no/such/disk.raw"), std::string::npos);
    // mpqemu-fd over a fake remote: the fd is duplicated, the caller keeps its own.
    FakeRemote remote;
    const int fd = remote.client_end.get();
    auto dev = r.open("mpqemu-fd:" + std::to_string(fd) + "?timeout_ms=2000", ctx);
    ASSERT_TRUE(dev) << dev.error().message;
    EXPECT_EQ((*dev)->info()->name, "mpqemu-fd:" + std::to_string(fd));
    (*dev)->close();
    EXPECT_GE(::fcntl(fd, F_GETFD), 0);
}

}  // namespace
}  // namespace potemkin
