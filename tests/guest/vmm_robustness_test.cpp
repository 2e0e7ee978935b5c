// What the VMM does when a guest misbehaves: a clear report and a distinct status, no crash.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "guest_runner.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

// A flat binary written as a minimal ELF, so each test states its guest code exactly.
std::string write_elf(const std::string& name, const std::vector<uint8_t>& code) {
    std::string path = ::testing::TempDir() + "/" + name + ".elf";
    std::vector<uint8_t> f(0x54, 0);
    auto put32 = [&](size_t off, uint32_t v) {
        for (int i = 0; i < 4; ++i) f[off + i] = uint8_t(v >> (8 * i));
    };
    auto put16 = [&](size_t off, uint16_t v) {
        f[off] = uint8_t(v);
        f[off + 1] = uint8_t(v >> 8);
    };
    const char ident[] = {0x7f, 'E', 'L', 'F', 1, 1, 1};
    std::copy(ident, ident + 7, f.begin());
    put16(16, 2);         // ET_EXEC
    put16(18, 3);         // EM_386
    put32(20, 1);         // version
    put32(24, 0x100000);  // entry
    put32(28, 0x34);      // phoff
    put16(40, 0x34);      // ehsize
    put16(42, 0x20);      // phentsize
    put16(44, 1);         // phnum
    put32(0x34 + 0, 1);   // PT_LOAD
    put32(0x34 + 4, 0x54);
    put32(0x34 + 8, 0x100000);
    put32(0x34 + 12, 0x100000);
    put32(0x34 + 16, uint32_t(code.size()));
    put32(0x34 + 20, uint32_t(code.size()));
    put32(0x34 + 24, 7);
    f.insert(f.end(), code.begin(), code.end());
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(f.data()), long(f.size()));
    return path;
}

GuestRun run_code(const std::string& name, const std::vector<uint8_t>& code,
                  int timeout_ms = 10000) {
    std::string path = write_elf(name, code);
    std::string xml = "<vm><memory>16</memory><guest file=\"" + path + "\"/></vm>";
    GuestRun out;
    auto doc = vm::ConfigDocument::load_string(xml, "t.xml");
    auto cfg = vm::parse_vm_config(*doc);
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.timeout = std::chrono::milliseconds(timeout_ms);
    s.console = [&out](std::string_view t) { out.console.append(t); };
    auto m = machine::Machine::create(std::move(s));
    if (!m) {
        out.message = m.error().message;
        return out;
    }
    auto r = (*m)->run();
    out.outcome = r.outcome;
    out.status = r.process_status();
    out.message = r.message;
    return out;
}

}  // namespace

TEST(VmmRobustness, ExitPortEndsTheRunWithTheGuestsValue) {
    // mov eax, 0x1234_5603; out 0xf4, eax; hlt
    auto r = run_code("exit", {0xb8, 0x03, 0x56, 0x34, 0x12, 0xe7, 0xf4, 0xf4});
    EXPECT_EQ(r.outcome, RunOutcome::exited) << r.message;
    EXPECT_EQ(r.status, 3);
}

TEST(VmmRobustness, DivideErrorWithoutIdtEndsWithAFaultReport) {
    // xor ecx, ecx; div ecx
    auto r = run_code("de", {0x31, 0xc9, 0xf7, 0xf1});
    EXPECT_EQ(r.outcome, RunOutcome::fault);
    EXPECT_EQ(r.status, 126);
    EXPECT_NE(r.message.find("vector 0"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("eip=00100002"), std::string::npos) << r.message;
}

TEST(VmmRobustness, InvalidOpcodeWithoutIdtEndsWithAFaultReport) {
    auto r = run_code("ud", {0x90, 0x0f, 0x0b});  // nop; ud2
    EXPECT_EQ(r.outcome, RunOutcome::fault);
    EXPECT_NE(r.message.find("#UD"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("eip=00100001"), std::string::npos) << r.message;
}

TEST(VmmRobustness, HaltWithInterruptsOffEndsTheRun) {
    auto r = run_code("cli_hlt", {0xfa, 0xf4});  // cli; hlt
    EXPECT_EQ(r.outcome, RunOutcome::halted) << r.message;
    EXPECT_EQ(r.status, 125);
}

TEST(VmmRobustness, EndlessLoopEndsAtTheTimeout) {
    auto r = run_code("spin", {0xeb, 0xfe}, 300);  // jmp .
    EXPECT_EQ(r.outcome, RunOutcome::timeout) << r.message;
    EXPECT_EQ(r.status, 124);
}

TEST(VmmRobustness, ExecutingOutsideRamIsReported) {
    // mov eax, 0xe0000000; jmp eax
    auto r = run_code("jmp_void", {0xb8, 0x00, 0x00, 0x00, 0xe0, 0xff, 0xe0});
    EXPECT_EQ(r.outcome, RunOutcome::fault) << r.message;
    EXPECT_NE(r.message.find("0xe0000000"), std::string::npos) << r.message;
}

TEST(VmmRobustness, UnassignedMemoryReadsAllOnes) {
    // mov eax, [0xe0000000]; out 0xf4, eax  -> status 0xff
    auto r = run_code("unassigned", {0xa1, 0x00, 0x00, 0x00, 0xe0, 0xe7, 0xf4, 0xf4});
    EXPECT_EQ(r.outcome, RunOutcome::exited) << r.message;
    EXPECT_EQ(r.status, 0xff);
}

TEST(VmmRobustness, MissingGuestFileIsAConfigError) {
    std::string xml = "<vm><memory>16</memory><guest file=\"/nonexistent/x.elf\"/></vm>";
    auto doc = vm::ConfigDocument::load_string(xml, "t.xml");
    auto cfg = vm::parse_vm_config(*doc);
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    auto m = machine::Machine::create(std::move(s));
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message.find("/nonexistent/x.elf"), std::string::npos);
}
