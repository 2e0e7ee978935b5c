/* Memory-mapped I/O accessors (paging is off: physical address == pointer value).
 *
 * 8/16/32-bit accessors are exactly one access of that width, compiled as a single mov.
 *
 * 64-bit accessors are NOT a single access: a 32-bit guest built without SSE/MMX/x87 has
 * no plain 8-byte load/store, so mmio_read64/mmio_write64 do two 32-bit accesses, the low
 * dword (addr) first, then the high dword (addr + 4). A device sees two 4-byte accesses. */
#ifndef POTEMKIN_MMIO_H
#define POTEMKIN_MMIO_H

#include <stdint.h>

static inline uint8_t mmio_read8(uintptr_t addr) {
    uint8_t v;
    __asm__ volatile("movb %1, %0" : "=q"(v) : "m"(*(volatile uint8_t*)addr) : "memory");
    return v;
}
static inline uint16_t mmio_read16(uintptr_t addr) {
    uint16_t v;
    __asm__ volatile("movw %1, %0" : "=r"(v) : "m"(*(volatile uint16_t*)addr) : "memory");
    return v;
}
static inline uint32_t mmio_read32(uintptr_t addr) {
    uint32_t v;
    __asm__ volatile("movl %1, %0" : "=r"(v) : "m"(*(volatile uint32_t*)addr) : "memory");
    return v;
}
/* Two 32-bit reads: low dword, then high dword. */
static inline uint64_t mmio_read64(uintptr_t addr) {
    uint32_t lo = mmio_read32(addr);
    uint32_t hi = mmio_read32(addr + 4);
    return ((uint64_t)hi << 32) | lo;
}

static inline void mmio_write8(uintptr_t addr, uint8_t v) {
    __asm__ volatile("movb %1, %0" : "=m"(*(volatile uint8_t*)addr) : "iq"(v) : "memory");
}
static inline void mmio_write16(uintptr_t addr, uint16_t v) {
    __asm__ volatile("movw %1, %0" : "=m"(*(volatile uint16_t*)addr) : "ir"(v) : "memory");
}
static inline void mmio_write32(uintptr_t addr, uint32_t v) {
    __asm__ volatile("movl %1, %0" : "=m"(*(volatile uint32_t*)addr) : "ir"(v) : "memory");
}
/* Two 32-bit writes: low dword, then high dword. */
static inline void mmio_write64(uintptr_t addr, uint64_t v) {
    mmio_write32(addr, (uint32_t)v);
    mmio_write32(addr + 4, (uint32_t)(v >> 32));
}

#endif
