#include "machine/elf_loader.hpp"

#include <elf.h>

#include <cstring>
#include <vector>

#include "common/file.hpp"

namespace potemkin::machine {

Result<LoadedImage> load_elf32(const std::string& path, vm::GuestMemory& memory) {
    // Bounded: a guest image larger than the biggest guest RAM cannot be loaded anyway, and
    // /dev/zero or a FIFO must not be read until memory runs out.
    POTEMKIN_TRY_ASSIGN(auto file, read_regular_file(path, {.max_bytes = kMaxGuestImageBytes,
                                                            .what = "guest image"}));
    Elf32_Ehdr eh;
    if (file.size() < sizeof eh) return failf("{}: too short to be an ELF file", path);
    std::memcpy(&eh, file.data(), sizeof eh);
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return failf("{}: not an ELF file", path);
    if (eh.e_ident[EI_CLASS] != ELFCLASS32 || eh.e_machine != EM_386)
        return failf("{}: not a 32-bit x86 ELF file (guests are built with -m32)", path);
    if (eh.e_type != ET_EXEC) return failf("{}: not an executable (ELF type {})", path, eh.e_type);
    if (eh.e_phentsize != sizeof(Elf32_Phdr) ||
        eh.e_phoff + static_cast<uint64_t>(eh.e_phnum) * sizeof(Elf32_Phdr) > file.size())
        return failf("{}: program headers lie outside the file", path);

    LoadedImage img;
    img.entry = eh.e_entry;
    img.lowest = ~0ull;
    bool any = false;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        Elf32_Phdr ph;
        std::memcpy(&ph, file.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
        if (ph.p_filesz > ph.p_memsz ||
            static_cast<uint64_t>(ph.p_offset) + ph.p_filesz > file.size())
            return failf("{}: segment {} has inconsistent sizes", path, i);
        Gpa at(ph.p_paddr);
        if (!memory.contains(at, ph.p_memsz))
            return failf("{}: segment {} ({:#x}-{:#x}) does not fit in guest RAM", path, i,
                         ph.p_paddr, static_cast<uint64_t>(ph.p_paddr) + ph.p_memsz - 1);
        POTEMKIN_TRY(
            memory.write(at, std::span<const uint8_t>(file.data() + ph.p_offset, ph.p_filesz)));
        POTEMKIN_TRY(memory.fill(at + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz));
        img.lowest = std::min<uint64_t>(img.lowest, ph.p_paddr);
        img.highest =
            std::max<uint64_t>(img.highest, static_cast<uint64_t>(ph.p_paddr) + ph.p_memsz);
        any = true;
    }
    if (!any) return failf("{}: no loadable segments", path);
    if (!memory.contains(Gpa(img.entry), 1))
        return failf("{}: entry point {:#x} is outside guest RAM", path, img.entry);
    return img;
}

}  // namespace potemkin::machine
