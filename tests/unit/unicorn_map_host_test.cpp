// CpuEngine::map_host / unmap_host on the Unicorn engine: host memory mapped straight into
// guest-physical space is read and written without any I/O callback, over pages that were
// lazily mapped as MMIO before; after unmap_host the range traps again and reads all-ones;
// mapping from inside an I/O callback works for the very next instruction.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "cpu/cpu_engine.hpp"
#include "cpu/engine_factory.hpp"

using namespace potemkin;
using namespace potemkin::cpu;

namespace {

constexpr uint32_t kDev = 0x8000'0000, kDev2 = 0x9000'0000;

struct PageDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
};
using Pages = std::unique_ptr<uint8_t, PageDeleter>;
Pages pages(size_t n) {
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, n));
    std::memset(p, 0, n);
    return Pages(p);
}

struct Io final : CpuIo {
    uint64_t mmio_accesses = 0;
    std::function<void()> on_out;
    uint32_t port_in(uint16_t, unsigned) override { return 0xFFFF'FFFF; }
    void port_out(uint16_t, unsigned, uint32_t) override {
        if (on_out) on_out();
    }
    uint64_t mmio_read(uint64_t, unsigned) override {
        ++mmio_accesses;
        return ~0ull;
    }
    void mmio_write(uint64_t, unsigned, uint64_t) override { ++mmio_accesses; }
};

struct Asm {
    std::vector<uint8_t> b;
    void imm32(uint32_t v) {
        for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void copy(uint32_t from, uint32_t to) {
        b.push_back(0xA1), imm32(from);  // mov eax, [from]
        b.push_back(0xA3), imm32(to);    // mov [to], eax
    }
    void store(uint32_t to, uint32_t v) {
        b.push_back(0xC7), b.push_back(0x05), imm32(to), imm32(v);  // mov dword [to], v
    }
    void out() { b.insert(b.end(), {0xE6, 0x80}); }  // out 0x80, al
    void hlt() { b.push_back(0xF4); }
};

// Code at 0x1000, a flat GDT at 0x500, 32-bit protected mode at the code.
Result<void> boot(CpuEngine& e, uint8_t* ram, const Asm& code) {
    std::memcpy(ram + 0x1000, code.b.data(), code.b.size());
    const uint64_t gdt[3] = {0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull};
    std::memcpy(ram + 0x500, gdt, sizeof gdt);
    BootState s;
    s.gdt = {0x500, sizeof gdt - 1};
    s.regs.cs = 0x08;
    s.regs.ds = s.regs.es = s.regs.fs = s.regs.gs = s.regs.ss = 0x10;
    s.regs.eip = 0x1000;
    s.regs.esp = 0x8000;
    return e.set_boot_state(s);
}

uint32_t u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

}  // namespace

TEST(UnicornMapHost, MappedMemoryIsAccessedWithoutExitsAndUnmapTrapsAgain) {
    constexpr size_t kRam = 1 << 20;
    auto ram = pages(kRam);
    auto dev = pages(4096);
    auto dev2 = pages(4096);
    uint32_t v = 0xCAFE'BABE;
    std::memcpy(dev.get(), &v, 4);
    v = 0x600D'F00D;
    std::memcpy(dev2.get(), &v, 4);

    Io io;
    std::atomic<bool> kick{false};
    EngineSettings es;
    es.io = &io;
    es.kick = &kick;
    auto engine = create_engine("unicorn", es);
    ASSERT_TRUE(engine) << engine.error().message;
    CpuEngine& e = **engine;
    ASSERT_TRUE(e.map_ram(Gpa(0), kRam, ram.get()));

    Asm a;
    a.copy(kDev, 0x100);  // unassigned: a lazily mapped MMIO page, all-ones
    a.hlt();
    a.copy(kDev, 0x104);  // mapped now
    a.store(kDev + 4, 0x1122'3344);
    a.hlt();
    a.copy(kDev, 0x108);  // unmapped again
    a.out();              // the I/O callback maps dev2
    a.copy(kDev2, 0x10C);
    a.hlt();
    ASSERT_TRUE(boot(e, ram.get(), a));

    ASSERT_EQ(e.run().reason, ExitReason::halted);
    EXPECT_EQ(u32(ram.get() + 0x100), 0xFFFF'FFFFu);
    EXPECT_EQ(io.mmio_accesses, 1u);

    ASSERT_TRUE(e.map_host(Gpa(kDev), 4096, dev.get()));
    EXPECT_FALSE(e.map_host(Gpa(kDev), 4096, dev.get()));        // overlaps
    EXPECT_FALSE(e.map_host(Gpa(kDev2 + 1), 4096, dev2.get()));  // not page-aligned
    ASSERT_EQ(e.run().reason, ExitReason::halted);
    EXPECT_EQ(u32(ram.get() + 0x104), 0xCAFE'BABEu);
    EXPECT_EQ(u32(dev.get() + 4), 0x1122'3344u);  // the guest's write is in host memory
    EXPECT_EQ(io.mmio_accesses, 1u);              // and nothing exited

    ASSERT_TRUE(e.unmap_host(Gpa(kDev), 4096));
    EXPECT_FALSE(e.unmap_host(Gpa(kDev), 4096));  // not mapped any more
    io.on_out = [&] { ASSERT_TRUE(e.map_host(Gpa(kDev2), 4096, dev2.get())); };
    ASSERT_EQ(e.run().reason, ExitReason::halted);
    EXPECT_EQ(u32(ram.get() + 0x108), 0xFFFF'FFFFu);
    EXPECT_EQ(io.mmio_accesses, 2u);
    EXPECT_EQ(u32(ram.get() + 0x10C), 0x600D'F00Du);  // mapped inside the OUT callback
}

// A guest probing address space page by page (issue 11: every touched page used to become its
// own Unicorn mapping; accesses slowed down as they piled up and at about 4,000 Unicorn
// asserted and aborted the VMM). Every access reaches the bus at its own address, and a direct
// mapping carved out of the merged MMIO leaves the MMIO on both sides working.
TEST(UnicornMapHost, ProbingThousandsOfUnassignedPagesStaysMmio) {
    constexpr size_t kRam = 1 << 20;
    constexpr uint32_t kPages = 6000;
    auto ram = pages(kRam);
    auto dev = pages(4096);
    const uint32_t v = 0x5EED'5EED;
    std::memcpy(dev.get(), &v, 4);

    struct Recorder final : CpuIo {
        std::vector<uint64_t> reads;
        uint32_t port_in(uint16_t, unsigned) override { return 0xFFFF'FFFF; }
        void port_out(uint16_t, unsigned, uint32_t) override {}
        uint64_t mmio_read(uint64_t addr, unsigned) override {
            reads.push_back(addr);
            return ~0ull;
        }
        void mmio_write(uint64_t, unsigned, uint64_t) override {}
    } io;
    std::atomic<bool> kick{false};
    EngineSettings es;
    es.io = &io;
    es.kick = &kick;
    auto engine = create_engine("unicorn", es);
    ASSERT_TRUE(engine) << engine.error().message;
    CpuEngine& e = **engine;
    ASSERT_TRUE(e.map_ram(Gpa(0), kRam, ram.get()));

    // ebx = kDev + 8; ecx = kPages; do { eax = [ebx]; ebx += 4096 } while (--ecx); hlt
    Asm a;
    a.b.push_back(0xBB), a.imm32(kDev + 8);
    a.b.push_back(0xB9), a.imm32(kPages);
    a.b.insert(a.b.end(), {0x8B, 0x03});                 // mov eax, [ebx]
    a.b.insert(a.b.end(), {0x81, 0xC3}), a.imm32(4096);  // add ebx, 4096
    a.b.insert(a.b.end(), {0x49, 0x75, 0xF5});           // dec ecx; jnz -11
    a.hlt();
    // Then: the direct page, and the pages on either side of it.
    a.copy(kDev + 0x10'0000, 0x100);
    a.copy(kDev + 0x0F'F000, 0x104);
    a.copy(kDev + 0x10'1000, 0x108);
    a.hlt();
    ASSERT_TRUE(boot(e, ram.get(), a));

    ASSERT_EQ(e.run().reason, ExitReason::halted);
    ASSERT_EQ(io.reads.size(), kPages);
    for (uint32_t i = 0; i < kPages; ++i)
        ASSERT_EQ(io.reads[i], kDev + 8 + uint64_t{i} * 4096) << "read " << i;

    io.reads.clear();
    ASSERT_TRUE(e.map_host(Gpa(kDev + 0x10'0000), 4096, dev.get()));
    ASSERT_EQ(e.run().reason, ExitReason::halted);
    EXPECT_EQ(u32(ram.get() + 0x100), 0x5EED'5EEDu);
    EXPECT_EQ(u32(ram.get() + 0x104), 0xFFFF'FFFFu);
    EXPECT_EQ(u32(ram.get() + 0x108), 0xFFFF'FFFFu);
    EXPECT_EQ(io.reads, (std::vector<uint64_t>{kDev + 0x0F'F000, kDev + 0x10'1000}));
}
