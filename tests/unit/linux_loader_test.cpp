// The Linux boot-protocol loader (machine/linux_loader.hpp) on synthetic bzImages: the setup
// header it accepts and what it rejects, where kernel, command line, initrd and boot_params
// land, the e820 map, the entry state; and the <guest kernel=...> configuration.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "machine/linux_loader.hpp"
#include "vm/config.hpp"

using namespace potemkin;
using namespace potemkin::machine;

namespace {

template <typename T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof v);
}
template <typename T>
T get(const std::vector<uint8_t>& b, size_t off) {
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}

// A bzImage as a 6.1 kernel's build writes its header: 4 setup sectors, protocol 2.15, loaded
// high at 1 MiB, relocatable, init_size 32 MiB; the protected-mode part is `pm_bytes` of 0xcc.
std::vector<uint8_t> bzimage(size_t pm_bytes = 0x2000, uint32_t init_size = 32u << 20) {
    std::vector<uint8_t> b(5 * 512 + pm_bytes, 0);
    b[0x1f1] = 4;
    put<uint16_t>(b, 0x1fe, 0xaa55);
    b[0x201] = 0x6a;  // header up to 0x26c
    put<uint32_t>(b, 0x202, 0x53726448);
    put<uint16_t>(b, 0x206, 0x020f);
    b[0x211] = 0x01;
    put<uint32_t>(b, 0x214, 0x100000);
    put<uint32_t>(b, 0x22c, 0x7fffffff);
    put<uint32_t>(b, 0x230, 0x200000);
    b[0x234] = 1;
    put<uint32_t>(b, 0x238, 2047);
    put<uint64_t>(b, 0x258, 0x1000000);
    put<uint32_t>(b, 0x260, init_size);
    std::memset(b.data() + 5 * 512, 0xcc, pm_bytes);
    return b;
}

class LinuxLoader : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/potemkin-linux-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir); }
    std::string write(const std::string& name, const std::vector<uint8_t>& bytes) {
        const std::string path = dir + "/" + name;
        std::ofstream(path, std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes.data()),
                   static_cast<std::streamsize>(bytes.size()));
        return path;
    }
    std::unique_ptr<vm::GuestMemory> ram(uint64_t mib) {
        auto m = vm::GuestMemory::create({{Gpa(0), mib << 20}});
        EXPECT_TRUE(m) << m.error().message;
        return std::move(*m);
    }
    std::string dir;
};

TEST(BzImage, ParsesTheSetupHeader) {
    auto img = bzimage();
    auto h = parse_bzimage(img, "k");
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->protocol, 0x020f);
    EXPECT_EQ(h->setup_sectors, 4u);
    EXPECT_EQ(h->kernel_offset, 5u * 512);
    EXPECT_EQ(h->code32_start, 0x100000u);
    EXPECT_EQ(h->header_end, 0x26cu);
    EXPECT_TRUE(h->relocatable);
    EXPECT_EQ(h->init_size, 32u << 20);
}

TEST(BzImage, RejectsWhatIsNotAKernelNamingTheField) {
    auto img = bzimage();
    put<uint16_t>(img, 0x1fe, 0);
    EXPECT_NE(parse_bzimage(img, "k").error().message.find("0xaa55"), std::string::npos);
    img = bzimage();
    put<uint32_t>(img, 0x202, 0);
    EXPECT_NE(parse_bzimage(img, "k").error().message.find("HdrS"), std::string::npos);
    img = bzimage();
    put<uint16_t>(img, 0x206, 0x0204);
    EXPECT_NE(parse_bzimage(img, "k").error().message.find("boot protocol 2.04"),
              std::string::npos);
    img = bzimage();
    img[0x211] = 0;
    EXPECT_NE(parse_bzimage(img, "k").error().message.find("zImage"), std::string::npos);
    img = bzimage();
    img[0x1f1] = 200;  // setup sectors past the end of the file
    EXPECT_NE(parse_bzimage(img, "k").error().message.find("setup sectors"), std::string::npos);
    EXPECT_NE(parse_bzimage(std::vector<uint8_t>(100), "k").error().message.find("too short"),
              std::string::npos);
}

TEST_F(LinuxLoader, LoadsKernelCommandLineInitrdAndBootParams) {
    auto img = bzimage();
    std::vector<uint8_t> initrd(10000, 0x5a);
    LinuxBootSettings s{write("bzImage", img), write("initrd", initrd), "console=ttyS0 quiet"};
    auto mem = ram(128);
    auto st = load_linux(s, *mem);
    ASSERT_TRUE(st) << st.error().message;

    // The 32-bit boot protocol's entry state.
    EXPECT_EQ(st->regs.eip, 0x100000u);
    EXPECT_EQ(st->regs.esi, kLinuxBootParams);
    EXPECT_EQ(st->regs.cs, 0x10);
    EXPECT_EQ(st->regs.ds, 0x18);
    EXPECT_EQ(st->regs.ss, 0x18);
    EXPECT_EQ(st->regs.eflags & 0x200, 0u);  // interrupts off
    EXPECT_EQ(st->gdt.base, kLinuxGdtBase);
    EXPECT_EQ(*mem->read_obj<uint64_t>(Gpa(kLinuxGdtBase + 0x10)), 0x00cf9a000000ffffull);
    EXPECT_EQ(*mem->read_obj<uint64_t>(Gpa(kLinuxGdtBase + 0x18)), 0x00cf92000000ffffull);

    EXPECT_EQ(*mem->read_obj<uint8_t>(Gpa(0x100000)), 0xcc);  // the protected-mode kernel
    EXPECT_EQ(*mem->read_obj<uint8_t>(Gpa(0x100000 + 0x1fff)), 0xcc);

    std::vector<uint8_t> zp(0x1000);
    ASSERT_TRUE(mem->read(Gpa(kLinuxBootParams), zp));
    EXPECT_EQ(get<uint32_t>(zp, 0x202), 0x53726448u);  // setup header copied
    EXPECT_EQ(zp[0x210], 0xff);                        // type_of_loader
    EXPECT_EQ(zp[0x211] & 0x81, 0x81);                 // LOADED_HIGH | CAN_USE_HEAP
    EXPECT_EQ(get<uint32_t>(zp, 0x228), kLinuxCmdline);
    std::vector<uint8_t> cmd(20);
    ASSERT_TRUE(mem->read(Gpa(kLinuxCmdline), cmd));
    EXPECT_EQ(std::string(reinterpret_cast<char*>(cmd.data())), "console=ttyS0 quiet");

    // The initrd at the top of RAM, page-aligned, intact.
    const uint32_t at = get<uint32_t>(zp, 0x218);
    EXPECT_EQ(get<uint32_t>(zp, 0x21c), 10000u);
    EXPECT_EQ(at % 4096, 0u);
    EXPECT_LE(at + 10000u, 128u << 20);
    EXPECT_GT(at + 10000u + 4096u, 128u << 20);
    std::vector<uint8_t> back(10000);
    ASSERT_TRUE(mem->read(Gpa(at), back));
    EXPECT_EQ(back, initrd);

    // e820: low RAM, the BIOS areas reserved, RAM from 1 MiB to the end.
    ASSERT_EQ(zp[0x1e8], 4);
    auto entry = [&](int i) {
        return std::tuple(get<uint64_t>(zp, 0x2d0 + i * 20), get<uint64_t>(zp, 0x2d8 + i * 20),
                          get<uint32_t>(zp, 0x2e0 + i * 20));
    };
    EXPECT_EQ(entry(0), std::tuple(0ull, 0x9fc00ull, 1u));
    EXPECT_EQ(std::get<2>(entry(1)), 2u);
    EXPECT_EQ(std::get<2>(entry(2)), 2u);
    EXPECT_EQ(entry(3), std::tuple(0x100000ull, (128ull << 20) - 0x100000, 1u));
}

TEST_F(LinuxLoader, TooLittleRamOrTooLongACommandLineIsAClearError) {
    LinuxBootSettings s{write("bzImage", bzimage(0x2000, 64u << 20)), "", ""};
    auto small = ram(64);
    auto r = load_linux(s, *small);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("needs guest RAM up to 80 MiB"), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("bzImage"), std::string::npos);

    s.cmdline.assign(3000, 'x');
    auto big = ram(128);
    r = load_linux(s, *big);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("at most 2047"), std::string::npos) << r.error().message;

    // An initrd that cannot sit above the kernel's working area.
    s.cmdline.clear();
    s.initrd = write("initrd", std::vector<uint8_t>(60u << 20, 1));
    auto tight = ram(100);
    r = load_linux(s, *tight);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("does not fit"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("initrd"), std::string::npos);
}

TEST_F(LinuxLoader, AnElfIsNotAKernel) {
    std::vector<uint8_t> elf(8192, 0);
    std::memcpy(elf.data(),
                "\x7f"
                "ELF",
                4);
    LinuxBootSettings s{write("guest.elf", elf), "", ""};
    auto mem = ram(128);
    auto r = load_linux(s, *mem);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("guest.elf: no boot flag"), std::string::npos)
        << r.error().message;
}

vm::VmConfig parse_ok(const std::string& xml) {
    auto doc = vm::ConfigDocument::load_string(xml, "vm.xml");
    EXPECT_TRUE(doc);
    auto cfg = vm::parse_vm_config(*doc);
    EXPECT_TRUE(cfg) << cfg.error().message;
    return cfg ? *cfg : vm::VmConfig{};
}
std::string parse_error(const std::string& xml) {
    auto doc = vm::ConfigDocument::load_string(xml, "vm.xml");
    if (!doc) return doc.error().message;
    auto cfg = vm::parse_vm_config(*doc);
    return cfg ? "(no error)" : cfg.error().message;
}

TEST(LinuxGuestConfig, KernelInitrdAndCmdline) {
    auto cfg = parse_ok(
        "<vm class=\"PC\"><memory>256</memory>\n"
        "<guest kernel=\"vmlinuz\" initrd=\"initrd.gz\" cmdline=\"console=ttyS0\"/></vm>");
    EXPECT_EQ(cfg.linux_kernel, "vmlinuz");
    EXPECT_EQ(cfg.linux_initrd, "initrd.gz");
    EXPECT_EQ(cfg.cmdline, "console=ttyS0");
    EXPECT_TRUE(cfg.guest_file.empty());
}

TEST(LinuxGuestConfig, MistakesNameTheAttribute) {
    EXPECT_NE(parse_error("<vm class=\"PC\"><memory>256</memory>\n"
                          "<guest kernel=\"k\" file=\"g.elf\"/></vm>")
                  .find("vm.xml:2: <guest>: attribute 'file'"),
              std::string::npos);
    EXPECT_NE(parse_error("<vm class=\"PC\"><memory>256</memory>\n"
                          "<guest file=\"g.elf\" initrd=\"i\"/></vm>")
                  .find("initrd needs kernel="),
              std::string::npos);
    EXPECT_NE(parse_error("<vm class=\"PC\"><memory>256</memory><cores count=\"2\"/>\n"
                          "<guest kernel=\"k\"/></vm>")
                  .find("one vCPU"),
              std::string::npos);
}

}  // namespace
