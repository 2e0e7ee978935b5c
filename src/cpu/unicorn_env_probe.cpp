#include "cpu/unicorn_env_probe.hpp"

#include <unicorn/unicorn.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/log.hpp"

namespace potemkin::cpu {
namespace {

std::vector<uint8_t> snapshot(uc_engine* uc, uc_context* ctx) {
    std::vector<uint8_t> bytes(uc_context_size(uc));
    uc_context_save(uc, ctx);
    std::memcpy(bytes.data(), ctx, bytes.size());
    return bytes;
}

int32_t int_at(const std::vector<uint8_t>& b, size_t off) {
    int32_t v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}

UnicornEnvOffsets probe() {
    UnicornEnvOffsets out;
    uc_engine* uc = nullptr;
    if (uc_open(UC_ARCH_X86, UC_MODE_32, &uc) != UC_ERR_OK) return out;
    // 0x00: xor ecx,ecx; div ecx            -> #DE (vector 0, no error code)
    // 0x10: mov ax,0x23; mov ds,ax           -> #GP(0x20): selector beyond the empty GDT
    const uint8_t de[] = {0x31, 0xc9, 0xf7, 0xf1};
    const uint8_t gp[] = {0x66, 0xb8, 0x23, 0x00, 0x8e, 0xd8};
    uc_context* ctx = nullptr;
    uc_hook h;
    auto on_intr = +[](uc_engine* u, uint32_t, void*) { uc_emu_stop(u); };
    if (uc_mem_map(uc, 0, 0x1000, UC_PROT_ALL) == UC_ERR_OK &&
        uc_mem_write(uc, 0x0, de, sizeof de) == UC_ERR_OK &&
        uc_mem_write(uc, 0x10, gp, sizeof gp) == UC_ERR_OK &&
        uc_hook_add(uc, &h, UC_HOOK_INTR, reinterpret_cast<void*>(on_intr), nullptr, 1, 0) ==
            UC_ERR_OK &&
        uc_context_alloc(uc, &ctx) == UC_ERR_OK) {
        uint32_t esp = 0xff0;
        uc_reg_write(uc, UC_X86_REG_ESP, &esp);
        auto fresh = snapshot(uc, ctx);
        uc_emu_start(uc, 0x0, 0x4, 0, 0);
        auto after_de = snapshot(uc, ctx);
        std::memcpy(ctx, fresh.data(), fresh.size());
        uc_context_restore(uc, ctx);
        uc_emu_start(uc, 0x10, 0x16, 0, 0);
        auto after_gp = snapshot(uc, ctx);
        std::vector<size_t> old_hits, code_hits;
        for (size_t off = 0; off + 4 <= fresh.size(); off += 4) {
            if (int_at(fresh, off) == -1 && int_at(after_de, off) == 0 &&
                int_at(after_gp, off) == 13)
                old_hits.push_back(off);
            if (int_at(fresh, off) == 0 && int_at(after_de, off) == 0 &&
                int_at(after_gp, off) == 0x20)
                code_hits.push_back(off);
        }
        if (old_hits.size() == 1) out.old_exception = old_hits[0];
        if (code_hits.size() == 1) out.error_code = code_hits[0];
    }
    if (ctx) uc_context_free(ctx);
    uc_close(uc);
    if (!out.old_exception)
        log::warn(
            "unicorn: could not locate old_exception; a second #DE/#GP/#PF will double-fault");
    if (!out.error_code) log::warn("unicorn: could not locate error_code; exceptions push 0");
    return out;
}

}  // namespace

const UnicornEnvOffsets& unicorn_env_offsets() {
    static const UnicornEnvOffsets offsets = probe();
    return offsets;
}

}  // namespace potemkin::cpu
