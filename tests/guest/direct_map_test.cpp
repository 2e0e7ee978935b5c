// Sparse-mmap areas mapped straight into the guest (docs/pci-front.md, "Direct mapping"):
// multibar's BAR2 is mappable shared memory. A flat guest places BAR2, reads and writes it in
// loops, moves it and turns decode off. No access may trap (PciFront counts them), the guest's
// write must land in the device's memory (read back through the device afterwards), the old
// address must read all-ones after the move and the new one the same memory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "devices/pci_front.hpp"
#include "flat_elf.hpp"
#include "guest_runner.hpp"
#include "server_process.hpp"

using namespace potemkin;
using namespace potemkin::testing;

namespace {

constexpr uint32_t kSlot = 4;
constexpr uint32_t kBarA = 0xE000'0000, kBarB = 0xD000'0000;
constexpr uint32_t kResults = 0x20'0000;  // guest RAM where the guest stores what it read
constexpr uint32_t kLoops = 20000;

class Code {
  public:
    void imm32(uint32_t v) {
        for (int i = 0; i < 4; ++i) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void bytes(std::initializer_list<uint8_t> l) { b_.insert(b_.end(), l); }
    // Configuration mechanism #1: dword `value` to register `reg` of 00:kSlot.0.
    void config_write(uint32_t reg, uint32_t value) {
        bytes({0xBA}), imm32(0xCF8);                               // mov edx, 0xcf8
        bytes({0xB8}), imm32(0x8000'0000u | (kSlot << 11) | reg);  // mov eax, address
        bytes({0xEF});                                             // out dx, eax
        bytes({0xBA}), imm32(0xCFC);                               // mov edx, 0xcfc
        bytes({0xB8}), imm32(value);                               // mov eax, value
        bytes({0xEF});                                             // out dx, eax
    }
    void copy(uint32_t from, uint32_t to) {
        bytes({0xA1}), imm32(from);  // mov eax, [from]
        bytes({0xA3}), imm32(to);    // mov [to], eax
    }
    void store(uint32_t to, uint32_t value) {
        bytes({0xC7, 0x05}), imm32(to), imm32(value);  // mov dword [to], value
    }
    void read_loop(uint32_t at, uint32_t n) {
        bytes({0xB9}), imm32(n);    // mov ecx, n
        bytes({0xA1}), imm32(at);   // L: mov eax, [at]
        bytes({0x49, 0x75, 0xF8});  // dec ecx; jnz L
    }
    void write_loop(uint32_t at, uint32_t n) {
        bytes({0xB9}), imm32(n);         // mov ecx, n
        bytes({0x89, 0x0D}), imm32(at);  // L: mov [at], ecx
        bytes({0x49, 0x75, 0xF7});       // dec ecx; jnz L
    }
    void exit() {
        bytes({0xBA}), imm32(0xF4);  // mov edx, 0xf4
        bytes({0x31, 0xC0, 0xEF});   // xor eax, eax; out dx, eax
        bytes({0xF4, 0xEB, 0xFD});   // hlt; jmp $-1
    }
    const std::vector<uint8_t>& code() const { return b_; }

  private:
    std::vector<uint8_t> b_;
};

std::vector<uint8_t> guest_code() {
    Code c;
    c.config_write(0x18, kBarA);  // BAR2 low
    c.config_write(0x1C, 0);      // BAR2 high
    c.config_write(0x04, 0x2);    // memory decode on
    c.copy(kBarA, kResults + 0x00);
    c.store(kBarA + 0x10, 0x1234'5678);
    c.read_loop(kBarA + 0x10, kLoops);
    c.write_loop(kBarA + 0x20, kLoops);  // leaves 1 there
    // Move BAR2 with decode on: low half, then high half.
    c.config_write(0x18, kBarB);
    c.config_write(0x1C, 0);
    c.copy(kBarB + 0x10, kResults + 0x04);
    c.copy(kBarA + 0x10, kResults + 0x08);
    c.copy(kBarB + 0x20, kResults + 0x0C);
    c.config_write(0x04, 0);  // decode off
    c.copy(kBarB + 0x10, kResults + 0x10);
    c.exit();
    return c.code();
}

void run_direct_map_guest(const std::string& hostdev, bool direct = true) {
    const std::string elf = "/tmp/potemkin-directmap-" + std::to_string(::getpid()) + ".elf";
    ASSERT_TRUE(write_flat_elf(elf, guest_code())) << elf;
    GuestVm g{.guest_file = elf,
              .devices_xml = R"(<device class="PCI" id="pci0"/>)"
                             R"(<device class="PCI_FRONT" id="mb0" bus="pci0" hostdev=")" +
                             hostdev + R"(" slot="4"/>)"};
    auto doc = vm::ConfigDocument::load_string(vm_xml(g), "test.xml");
    ASSERT_TRUE(doc) << doc.error().message;
    auto cfg = vm::parse_vm_config(*doc);
    ASSERT_TRUE(cfg) << cfg.error().message;
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.engine = test_engine();
    s.timeout = std::chrono::milliseconds(30000);
    auto m = machine::Machine::create(std::move(s));
    ASSERT_TRUE(m) << m.error().message;
    auto r = (*m)->run();
    ::unlink(elf.c_str());
    ASSERT_EQ(r.outcome, machine::RunOutcome::exited) << r.message;

    uint32_t res[5] = {};
    ASSERT_TRUE(
        (*m)->memory().read(Gpa(kResults), std::span(reinterpret_cast<uint8_t*>(res), sizeof res)));
    EXPECT_EQ(res[0], 0x5eed0000u);   // the pattern, offset 0
    EXPECT_EQ(res[1], 0x1234'5678u);  // moved: the new address shows the same memory
    EXPECT_EQ(res[2], 0xFFFF'FFFFu);  // the old address is unassigned
    EXPECT_EQ(res[3], 1u);            // the last write of the write loop
    EXPECT_EQ(res[4], 0xFFFF'FFFFu);  // decode off: unmapped

    auto* front = (*m)->devices().find_as<devices::PciFront>("mb0");
    ASSERT_NE(front, nullptr);
    EXPECT_FALSE(front->direct_base(2));
    if (!direct) {
        EXPECT_GT(front->trapped_accesses(), 2 * kLoops);
        return;
    }
    // Tens of thousands of accesses, none of which trapped.
    EXPECT_EQ(front->trapped_accesses(), 0u);
    // Zero copy: the guest's writes are in the device's memory.
    auto h = front->bar_handler(2);
    EXPECT_EQ(h.read(0x10, 4), 0x1234'5678u);
    EXPECT_EQ(h.read(0x20, 4), 1u);
    EXPECT_EQ(front->trapped_accesses(), 2u);
}

}  // namespace

TEST(DirectMap, InprocBarAccessesDoNotTrapAndFollowTheBar) {
    run_direct_map_guest("inproc:multibar");
}

TEST(DirectMap, VfioUserBarAccessesDoNotTrapAndFollowTheBar) {
    const std::string sock = "/tmp/potemkin-vfu-directmap-" + std::to_string(::getpid()) + ".sock";
    ServerProcess server(sock, "multibar");
    ASSERT_TRUE(server.start());
    run_direct_map_guest("vfio-user:" + sock);
}

TEST(DirectMap, WithoutMmapEveryAccessTraps) {
    // multibar?mmap=0: the same guest with every BAR2 access forwarded; the same results.
    run_direct_map_guest("inproc:multibar?mmap=0", false);
}
