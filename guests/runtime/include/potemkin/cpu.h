/* Interrupt-flag and halt helpers. */
#ifndef POTEMKIN_CPU_H
#define POTEMKIN_CPU_H

#include <stdint.h>

static inline void cli(void) {
    __asm__ volatile("cli" ::: "memory");
}
static inline void sti(void) {
    __asm__ volatile("sti" ::: "memory");
}
static inline void hlt(void) {
    __asm__ volatile("hlt" ::: "memory");
}
static inline void cpu_relax(void) {
    __asm__ volatile("pause" ::: "memory");
}

/* sti immediately followed by hlt: the sti shadow keeps an interrupt from being taken
 * between the two, so a wake-up that is already pending cannot be lost. Returns with
 * interrupts ENABLED, after the interrupt that woke the CPU has been handled. */
static inline void sti_hlt(void) {
    __asm__ volatile("sti\n\thlt" ::: "memory");
}

static inline uint32_t read_eflags(void) {
    uint32_t f;
    __asm__ volatile("pushfl\n\tpopl %0" : "=r"(f) : : "memory");
    return f;
}
#define EFLAGS_IF 0x200u

/* Saves the interrupt flag and disables interrupts; irq_restore puts it back. */
static inline uint32_t irq_save(void) {
    uint32_t f = read_eflags();
    cli();
    return f;
}
static inline void irq_restore(uint32_t flags) {
    if (flags & EFLAGS_IF) sti();
}

/* cli; hlt forever. On potemkin, a vCPU parked like this counts as halted for good. */
__attribute__((noreturn)) static inline void halt_forever(void) {
    for (;;) __asm__ volatile("cli\n\thlt" ::: "memory");
}

#endif
