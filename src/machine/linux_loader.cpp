#include "machine/linux_loader.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/file.hpp"

namespace potemkin::machine {

namespace {

// boot_params offsets (arch/x86/include/uapi/asm/bootparam.h; boot.rst "zero page").
constexpr size_t kE820Entries = 0x1e8;
constexpr size_t kSetupHeader = 0x1f1;
constexpr size_t kE820Table = 0x2d0;
constexpr size_t kE820MaxEntries = 128;
// Setup header fields, as offsets in the file and in boot_params alike.
constexpr size_t kBootFlag = 0x1fe, kJump = 0x200, kMagic = 0x202, kVersion = 0x206,
                 kTypeOfLoader = 0x210, kLoadflags = 0x211, kCode32Start = 0x214,
                 kRamdiskImage = 0x218, kRamdiskSize = 0x21c, kHeapEndPtr = 0x224,
                 kCmdLinePtr = 0x228, kInitrdAddrMax = 0x22c, kKernelAlignment = 0x230,
                 kRelocatable = 0x234, kCmdlineSize = 0x238, kPrefAddress = 0x258,
                 kInitSize = 0x260;
constexpr uint8_t kLoadedHigh = 0x01, kCanUseHeap = 0x80;
// The kernel decompresses itself here at the lowest (CONFIG_PHYSICAL_START's usual value); it
// then needs init_size bytes from there.
constexpr uint64_t kLowestRunAddress = 16ull << 20;

enum E820Type : uint32_t { kRam = 1, kReserved = 2 };

template <typename T>
T get(std::span<const uint8_t> b, size_t off) {
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}
template <typename T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof v);
}

}  // namespace

Result<BzImageHeader> parse_bzimage(std::span<const uint8_t> image, std::string_view what) {
    if (image.size() < 0x1000) return failf("{}: too short to be a bzImage", what);
    if (get<uint16_t>(image, kBootFlag) != 0xaa55)
        return failf("{}: no boot flag 0xaa55 at 0x1fe: not a Linux kernel image", what);
    if (get<uint32_t>(image, kMagic) != 0x53726448)  // "HdrS"
        return failf(
            "{}: no \"HdrS\" setup header at 0x202: a kernel older than boot "
            "protocol 2.00, or not a kernel",
            what);
    BzImageHeader h;
    h.protocol = get<uint16_t>(image, kVersion);
    // 2.06: cmdline_size; 2.10: init_size and pref_address, which the loader relies on.
    if (h.protocol < 0x020a)
        return failf("{}: boot protocol {}.{:02}; at least 2.10 is needed (Linux 2.6.31+)", what,
                     h.protocol >> 8, h.protocol & 0xff);
    h.setup_sectors = image[kSetupHeader] == 0 ? 4 : image[kSetupHeader];
    h.loadflags = image[kLoadflags];
    if (!(h.loadflags & kLoadedHigh))
        return failf("{}: a zImage (loaded low); only bzImages are supported", what);
    h.code32_start = get<uint32_t>(image, kCode32Start);
    h.initrd_addr_max = get<uint32_t>(image, kInitrdAddrMax);
    h.kernel_alignment = get<uint32_t>(image, kKernelAlignment);
    h.relocatable = image[kRelocatable] != 0;
    h.cmdline_size = get<uint32_t>(image, kCmdlineSize);
    h.pref_address = get<uint64_t>(image, kPrefAddress);
    h.init_size = get<uint32_t>(image, kInitSize);
    h.header_end = kMagic + image[kJump + 1];
    h.kernel_offset = (h.setup_sectors + 1) * 512;
    if (h.header_end > 0x1000 || h.header_end <= kInitSize)
        return failf("{}: setup header length {:#x} (byte 0x201) is implausible", what,
                     h.header_end - kMagic);
    if (h.kernel_offset >= image.size())
        return failf("{}: {} setup sectors (0x1f1) leave no kernel in a {}-byte file", what,
                     h.setup_sectors, image.size());
    return h;
}

Result<cpu::BootState> load_linux(const LinuxBootSettings& settings, vm::GuestMemory& memory) {
    POTEMKIN_TRY_ASSIGN(
        auto kernel, read_regular_file(settings.kernel,
                                       {.max_bytes = kMaxLinuxFileBytes, .what = "Linux kernel"}));
    POTEMKIN_TRY_ASSIGN(BzImageHeader h, parse_bzimage(kernel, settings.kernel));
    const uint64_t ram = memory.total_size();
    if (!memory.contains(Gpa(0), ram))
        return failf("Linux guests need RAM from physical 0 up (the e820 map says so)");

    // The protected-mode kernel goes to code32_start (1 MiB); it runs from max(16 MiB, where
    // it was loaded) and needs init_size bytes there.
    const std::span<const uint8_t> pm(kernel.data() + h.kernel_offset,
                                      kernel.size() - h.kernel_offset);
    if (h.code32_start != kLinuxKernelBase)
        return failf("{}: code32_start is {:#x}; this loader puts the kernel at {:#x}",
                     settings.kernel, h.code32_start, kLinuxKernelBase);
    const uint64_t kernel_needs =
        std::max(kLowestRunAddress, kLinuxKernelBase + pm.size()) + h.init_size;
    if (kernel_needs > ram)
        return failf(
            "{}: the kernel needs guest RAM up to {} MiB (init_size {:#x} above 16 MiB);"
            " <memory> gives {} MiB",
            settings.kernel, (kernel_needs + (1 << 20) - 1) >> 20, h.init_size, ram >> 20);
    POTEMKIN_TRY(memory.write(Gpa(kLinuxKernelBase), pm));

    std::vector<uint8_t> params(0x1000, 0);
    std::memcpy(params.data() + kSetupHeader, kernel.data() + kSetupHeader,
                h.header_end - kSetupHeader);
    params[kTypeOfLoader] = 0xff;  // "undefined" boot loader
    params[kLoadflags] = static_cast<uint8_t>(h.loadflags | kCanUseHeap);
    // The real-mode heap lives in the setup code's segment, which is not used here; the
    // field only has to be plausible.
    put<uint16_t>(params, kHeapEndPtr, 0xfe00);

    if (settings.cmdline.size() > h.cmdline_size)
        return failf("{}: the command line is {} bytes; this kernel takes at most {}",
                     settings.kernel, settings.cmdline.size(), h.cmdline_size);
    std::vector<uint8_t> cmd(settings.cmdline.begin(), settings.cmdline.end());
    cmd.push_back(0);
    POTEMKIN_TRY(memory.write(Gpa(kLinuxCmdline), cmd));
    put<uint32_t>(params, kCmdLinePtr, static_cast<uint32_t>(kLinuxCmdline));

    if (!settings.initrd.empty()) {
        POTEMKIN_TRY_ASSIGN(auto initrd,
                            read_regular_file(settings.initrd,
                                              {.max_bytes = kMaxLinuxFileBytes, .what = "initrd"}));
        // As high as the kernel allows, page-aligned, above everything the kernel uses.
        const uint64_t top = std::min<uint64_t>(ram, uint64_t{h.initrd_addr_max} + 1);
        const uint64_t at = (top - std::min<uint64_t>(top, initrd.size())) & ~0xfffull;
        if (initrd.size() > top || at < kernel_needs)
            return failf(
                "{}: a {}-byte initrd does not fit between the kernel (up to {:#x}) and "
                "the top of RAM ({:#x}); give the VM more <memory>",
                settings.initrd, initrd.size(), kernel_needs, top);
        POTEMKIN_TRY(memory.write(Gpa(at), initrd));
        put<uint32_t>(params, kRamdiskImage, static_cast<uint32_t>(at));
        put<uint32_t>(params, kRamdiskSize, static_cast<uint32_t>(initrd.size()));
    }

    // The e820 map a PC BIOS would report: conventional memory below the EBDA, the BIOS area
    // reserved, RAM from 1 MiB up. Nothing above RAM is listed: the PCI hole is not RAM.
    struct E820 {
        uint64_t addr, size;
        uint32_t type;
    };
    const E820 map[] = {{0, 0x9fc00, kRam},
                        {0x9fc00, 0x400, kReserved},
                        {0xf0000, 0x10000, kReserved},
                        {0x100000, ram - 0x100000, kRam}};
    static_assert(std::size(map) <= kE820MaxEntries);
    for (size_t i = 0; i < std::size(map); ++i) {
        put<uint64_t>(params, kE820Table + i * 20, map[i].addr);
        put<uint64_t>(params, kE820Table + i * 20 + 8, map[i].size);
        put<uint32_t>(params, kE820Table + i * 20 + 16, map[i].type);
    }
    params[kE820Entries] = static_cast<uint8_t>(std::size(map));
    POTEMKIN_TRY(memory.write(Gpa(kLinuxBootParams), params));

    // __BOOT_CS (0x10) and __BOOT_DS (0x18): flat 4 GiB, 32-bit, ring 0.
    const uint64_t gdt[4] = {0, 0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull};
    POTEMKIN_TRY(memory.write_obj(Gpa(kLinuxGdtBase), gdt));
    cpu::BootState s;
    s.gdt = {static_cast<uint32_t>(kLinuxGdtBase), sizeof gdt - 1};
    s.regs.cs = 0x10;
    s.regs.ds = s.regs.es = s.regs.fs = s.regs.gs = s.regs.ss = 0x18;
    s.regs.eip = h.code32_start;
    s.regs.esi = static_cast<uint32_t>(kLinuxBootParams);
    s.regs.eflags = 0x2;
    return s;
}

}  // namespace potemkin::machine
