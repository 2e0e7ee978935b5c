// String port I/O (REP OUTS / REP INS with a count above 1), which KVM hands over as one exit
// carrying every element (kvm_run io.count) and Unicorn as one hook call per element: the same
// bytes must reach the devices and come back into guest memory on every engine.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flat_elf.hpp"
#include "guest_runner.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

constexpr uint32_t kBase = 0x100000;
constexpr uint32_t kText = kBase + 0x100;    // the string REP OUTSB prints
constexpr uint32_t kBuffer = kBase + 0x200;  // where REP INSW / INSD store
constexpr uint16_t kMagicPort = 0x708;       // TEST_DEVICE port 0x700 + 8 reads "TEST"
const std::string kText1 = "rep-outsb-ok\n";

void imm32(std::vector<uint8_t>& c, uint32_t v) {
    for (int i = 0; i < 4; ++i) c.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// mov esi, from; mov ecx, n; mov edx, 0xe9; rep outsb
void print(std::vector<uint8_t>& c, uint32_t from, uint32_t n) {
    c.push_back(0xBE), imm32(c, from);
    c.push_back(0xB9), imm32(c, n);
    c.push_back(0xBA), imm32(c, 0xE9);
    c.insert(c.end(), {0xF3, 0x6E});
}

std::vector<uint8_t> guest_code() {
    std::vector<uint8_t> c = {0xFC};  // cld
    print(c, kText, static_cast<uint32_t>(kText1.size()));
    // Four 16-bit reads of the magic port: "TE" four times.
    c.push_back(0xBF), imm32(c, kBuffer);  // mov edi, buffer
    c.push_back(0xB9), imm32(c, 4);        // mov ecx, 4
    c.push_back(0xBA), imm32(c, kMagicPort);
    c.insert(c.end(), {0xF3, 0x66, 0x6D});  // rep insw
    // Then two 32-bit reads: "TEST" twice, right after (EDI moved on by 8).
    c.push_back(0xB9), imm32(c, 2);
    c.insert(c.end(), {0xF3, 0x6D});                                             // rep insd
    c.insert(c.end(), {0xC6, 0x05}), imm32(c, kBuffer + 16), c.push_back('\n');  // newline
    print(c, kBuffer, 17);
    c.push_back(0xBA), imm32(c, 0xF4);
    c.insert(c.end(), {0x31, 0xC0, 0xEF, 0xF4});  // xor eax, eax; out dx, eax; hlt
    c.resize(kText - kBase, 0x90);
    c.insert(c.end(), kText1.begin(), kText1.end());
    return c;
}

}  // namespace

TEST(StringIo, RepOutsAndRepInsMoveEveryElement) {
    const std::string path = ::testing::TempDir() + "/string-io.elf";
    ASSERT_TRUE(write_flat_elf(path, guest_code(), kBase)) << path;
    auto r = run_guest(
        {.guest_file = path,
         .devices_xml = R"(<device class="TEST_DEVICE" id="t0" port="0x700" mmio="0xd0000000"/>)",
         .memory_mib = 16,
         .timeout_ms = 10000});
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.console, kText1 + "TETETETETESTTEST\n") << describe(r);
}
