// Writes raw 32-bit code as a minimal ELF executable (one PT_LOAD at `base`, entry at `base`),
// so a test or benchmark can state its guest instruction by instruction.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace potemkin::testing {

// False when the file could not be written.
[[nodiscard]] inline bool write_flat_elf(const std::string& path, const std::vector<uint8_t>& code,
                                         uint32_t base = 0x100000) {
    std::vector<uint8_t> f(0x54, 0);
    auto put32 = [&](size_t off, uint32_t v) {
        for (int i = 0; i < 4; ++i) f[off + i] = uint8_t(v >> (8 * i));
    };
    auto put16 = [&](size_t off, uint16_t v) {
        f[off] = uint8_t(v);
        f[off + 1] = uint8_t(v >> 8);
    };
    const uint8_t ident[] = {0x7f, 'E', 'L', 'F', 1 /*32-bit*/, 1 /*LE*/, 1 /*version*/};
    std::copy(ident, ident + sizeof ident, f.begin());
    put16(16, 2);     // ET_EXEC
    put16(18, 3);     // EM_386
    put32(20, 1);     // EV_CURRENT
    put32(24, base);  // e_entry
    put32(28, 0x34);  // e_phoff
    put16(40, 0x34);  // e_ehsize
    put16(42, 0x20);  // e_phentsize
    put16(44, 1);     // e_phnum
    put32(0x34, 1);   // PT_LOAD
    put32(0x38, 0x54);
    put32(0x3c, base);
    put32(0x40, base);
    put32(0x44, uint32_t(code.size()));
    put32(0x48, uint32_t(code.size()));
    put32(0x4c, 7);  // RWX
    f.insert(f.end(), code.begin(), code.end());
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
    out.close();
    return static_cast<bool>(out);
}

}  // namespace potemkin::testing
