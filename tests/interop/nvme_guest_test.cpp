// The nvme guest (guests/nvme, docs/nvme-guest.md) against QEMU's own NVMe controller: QEMU
// hosts `-device nvme` in an `-machine x-remote` process, potemkin projects it into the VM
// through hostdev="qemu:nvme,drive=IMAGE,serial=S" (the mpqemu client), and the bare-metal
// driver resets and enables the controller, identifies it and namespace 1, creates an I/O
// queue pair and READs blocks of a raw image this test wrote with a known pattern. The test
// checks what the guest reports against what it put in: the serial number, the FNV-1a 32
// checksum of the bytes, and (pattern=lba) every block's contents.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../guest/guest_runner.hpp"

using namespace potemkin;
using namespace potemkin::testing;
using machine::RunOutcome;

namespace {

constexpr uint32_t kBlockSize = 512;  // QEMU's nvme default logical block size
constexpr uint32_t kBlocks = 2048;    // a 1 MiB image

// The guest's pattern=lba: each block starts with its LBA (little-endian u64), then byte i
// is (LBA * 13 + i) & 0xff.
std::vector<uint8_t> pattern_image(uint32_t blocks) {
    std::vector<uint8_t> img(size_t{blocks} * kBlockSize);
    for (uint32_t lba = 0; lba < blocks; lba++) {
        uint8_t* b = img.data() + size_t{lba} * kBlockSize;
        for (int i = 0; i < 8; i++) b[i] = static_cast<uint8_t>(uint64_t{lba} >> (8 * i));
        for (uint32_t i = 8; i < kBlockSize; i++) b[i] = static_cast<uint8_t>(lba * 13u + i);
    }
    return img;
}

uint32_t fnv1a32(const uint8_t* p, size_t n) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

std::string hex32(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
}

bool has(const GuestRun& r, const std::string& text) {
    return r.console.find(text) != std::string::npos;
}

class NvmeGuest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = std::filesystem::path(POTEMKIN_BINARY_DIR) / "tmp" /
               ("nvme-guest-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir_);
        image_ = pattern_image(kBlocks);
        image_path_ = (dir_ / "disk.raw").string();
        std::ofstream(image_path_, std::ios::binary)
            .write(reinterpret_cast<const char*>(image_.data()),
                   static_cast<std::streamsize>(image_.size()));
    }
    void TearDown() override {
        std::error_code ec;
        if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
    }

    // by_file_id: the image is a <file> of the VM configuration and drive= names its id.
    GuestRun run(const std::string& serial, const std::string& cmdline,
                 bool by_file_id = false) const {
        const std::string devices =
            R"(<device class="PCI" id="pci0"/>
    <device class="PCI_FRONT" id="nvme0" bus="pci0" slot="4" hostdev="qemu:nvme,drive=)" +
            (by_file_id ? std::string("disk0") : image_path_) + ",serial=" + serial +
            "?qemu=" + POTEMKIN_QEMU + R"("/>)";
        const std::string files =
            by_file_id ? R"(<file id="disk0" filename=")" + image_path_ + R"("/>)" : "";
        return run_guest({.guest = "nvme",
                          .devices_xml = devices,
                          .files_xml = files,
                          .cmdline = cmdline,
                          .timeout_ms = 120000});
    }

    uint32_t sum(uint32_t lba, uint32_t blocks) const {
        return fnv1a32(image_.data() + size_t{lba} * kBlockSize, size_t{blocks} * kBlockSize);
    }

    std::filesystem::path dir_;
    std::vector<uint8_t> image_;
    std::string image_path_;
};

TEST_F(NvmeGuest, PollModeReadsTheWholeImage) {
    const uint32_t expected = sum(0, kBlocks);
    auto r = run("pk-poll-1",
                 "mode=poll pattern=lba expect_serial=pk-poll-1 expect_sum=" + hex32(expected));
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    EXPECT_TRUE(has(r, "serial number: \"pk-poll-1\"")) << describe(r);
    EXPECT_TRUE(has(r, "model number: \"QEMU NVMe Ctrl\"")) << describe(r);
    EXPECT_TRUE(has(r, "namespace 1: 2048 blocks of 512 bytes")) << describe(r);
    EXPECT_TRUE(has(r, "checksum: fnv1a32 " + hex32(expected) + " over 1048576 bytes"))
        << describe(r);
    EXPECT_TRUE(has(r, "pattern verified in 2048 blocks")) << describe(r);
    // every data-pointer form was used: PRP1 alone, PRP1 + PRP2, a PRP list
    EXPECT_TRUE(has(r, "READ commands: 1 PRP1 only, 1 PRP1+PRP2, 4 PRP list")) << describe(r);
    EXPECT_TRUE(has(r, "by interrupt 0, by polling")) << describe(r);
}

TEST_F(NvmeGuest, PollModeReadsARangeAcrossAPageBoundary) {
    // 8 blocks from LBA 100 at offset 512 in the buffer: they straddle two pages
    const uint32_t expected = sum(100, 8);
    auto r = run("pk-range", "mode=poll lba=100 blocks=8 pattern=lba expect_sum=" + hex32(expected),
                 /*by_file_id=*/true);
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, "serial number: \"pk-range\"")) << describe(r);
    EXPECT_TRUE(has(r, "checksum: fnv1a32 " + hex32(expected) + " over 4096 bytes")) << describe(r);
    EXPECT_TRUE(has(r, "READ commands: 1 PRP1 only, 1 PRP1+PRP2, 0 PRP list")) << describe(r);
    EXPECT_TRUE(has(r, "pattern verified in 8 blocks")) << describe(r);
}

TEST_F(NvmeGuest, WrongExpectationsFailTheGuest) {
    const uint32_t wrong = sum(0, 16) ^ 1;
    auto r =
        run("pk-real", "mode=poll blocks=16 expect_serial=pk-other expect_sum=" + hex32(wrong));
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has(r, "FAIL: ")) << describe(r);
    EXPECT_TRUE(has(r, "serial number as expected: \"pk-real\", expected \"pk-other\""))
        << describe(r);
    EXPECT_TRUE(has(r, "checksum as expected: " + hex32(sum(0, 16)) + ", expected " + hex32(wrong)))
        << describe(r);
    EXPECT_TRUE(has(r, " 2 failed")) << describe(r);
}

// Completions by INTx: the level interrupt travels irqfd → potemkin's PIC; the guest's
// handler consumes the CQ and rings its head doorbell (the device drops the level), then
// EOIs (with the eoi-reset work, the EOI reaches HostDevice::ack_intx and the resamplefd).
// The guest counts completions that arrived by interrupt and fails unless all did.
TEST_F(NvmeGuest, IrqModeCompletesEveryCommandByInterrupt) {
    const uint32_t expected = sum(0, kBlocks);
    auto r = run("pk-irq-1",
                 "mode=irq pattern=lba expect_serial=pk-irq-1 expect_sum=" + hex32(expected));
    ASSERT_EQ(r.outcome, RunOutcome::exited) << describe(r);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has(r, " 0 failed")) << describe(r);
    EXPECT_TRUE(has(r, "serial number: \"pk-irq-1\"")) << describe(r);
    EXPECT_TRUE(has(r, "checksum: fnv1a32 " + hex32(expected) + " over 1048576 bytes"))
        << describe(r);
    EXPECT_TRUE(has(r, "PASS: every completion signalled by INTx")) << describe(r);
    EXPECT_TRUE(has(r, ", by polling 0;")) << describe(r);
    EXPECT_FALSE(has(r, "no interrupt within")) << describe(r);
    // The line is lowered only by the handler's acknowledgement or the EOI, never between
    // the PIC's request and the CPU's acknowledge (which the 8259A answers with a spurious
    // vector).
    EXPECT_TRUE(has(r, "spurious PIC interrupts 0")) << describe(r);
}

}  // namespace
