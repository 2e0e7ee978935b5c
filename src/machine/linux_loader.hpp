// Boots a Linux kernel the way a boot loader does: the x86 32-bit boot protocol
// (Documentation/arch/x86/boot.rst, "32-bit boot protocol") from a bzImage, with the setup
// header copied into a zeroed boot_params ("zero page"), the command line, an initrd and an
// e820 memory map built from guest RAM. The kernel's own real-mode setup code is not run (no
// BIOS here); the protected-mode kernel is entered directly.
//
// Guest-physical layout (docs/linux-guest.md):
//   0x1000   GDT: null, null, 0x10 flat code, 0x18 flat data (__BOOT_CS, __BOOT_DS)
//   0x7000   boot_params (one page)
//   0x20000  command line
//   0x100000 protected-mode kernel (code32_start); it decompresses itself above 16 MiB
//   top of RAM (below initrd_addr_max): the initrd, page-aligned
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/result.hpp"
#include "cpu/cpu_engine.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::machine {

// What the loader reads from a bzImage's setup header (boot.rst, "The Real-Mode Kernel
// Header"); offsets are from the start of the file.
struct BzImageHeader {
    uint16_t protocol = 0;          // 0x206, e.g. 0x020f
    unsigned setup_sectors = 0;     // 0x1f1 (0 means 4)
    uint8_t loadflags = 0;          // 0x211
    uint32_t code32_start = 0;      // 0x214
    uint32_t initrd_addr_max = 0;   // 0x22c
    uint32_t kernel_alignment = 0;  // 0x230
    bool relocatable = false;       // 0x234
    uint32_t cmdline_size = 0;      // 0x238 (without the NUL)
    uint64_t pref_address = 0;      // 0x258
    uint32_t init_size = 0;         // 0x260: memory the kernel needs from where it runs
    size_t header_end = 0;          // 0x202 + the byte at 0x201: the header part to copy
    size_t kernel_offset = 0;       // where the protected-mode kernel starts in the file
};

// Errors name `what` (the file) and the field that is wrong.
Result<BzImageHeader> parse_bzimage(std::span<const uint8_t> image, std::string_view what);

struct LinuxBootSettings {
    std::string kernel;   // bzImage path
    std::string initrd;   // optional
    std::string cmdline;  // the kernel's command line
};

// The kernel's 32-bit entry: CS=0x10, DS=ES=SS=0x18, ESI = boot_params, interrupts off.
inline constexpr uint64_t kLinuxGdtBase = 0x1000;
inline constexpr uint64_t kLinuxBootParams = 0x7000;
inline constexpr uint64_t kLinuxCmdline = 0x20000;
inline constexpr uint64_t kLinuxKernelBase = 0x100000;
// The largest kernel and initrd read (guest RAM is at most 3 GiB).
inline constexpr uint64_t kMaxLinuxFileBytes = 1ull << 30;

// Loads kernel, initrd and boot_params into `memory` (RAM from physical 0) and returns the
// bootstrap processor's entry state. Errors name the file and what does not fit.
Result<cpu::BootState> load_linux(const LinuxBootSettings& settings, vm::GuestMemory& memory);

}  // namespace potemkin::machine
