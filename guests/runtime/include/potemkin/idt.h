/* Interrupt descriptor table: 256 interrupt gates (IF cleared on entry, selector 0x08),
 * one assembly stub per vector, and a C dispatcher calling the registered handler. */
#ifndef POTEMKIN_IDT_H
#define POTEMKIN_IDT_H

#include <stdint.h>

/* What the common stub leaves on the stack, lowest address first. Handlers may modify it:
 * the general registers (except esp) and eip/cs/eflags are restored from it on return
 * (popal; iret). */
struct int_frame {
    uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax; /* pushal order; esp is not restored */
    uint32_t vector;
    uint32_t error_code;      /* 0 for vectors where the CPU pushes none */
    uint32_t eip, cs, eflags; /* pushed by the CPU (ring 0 -> ring 0: no ss/esp) */
};

typedef void (*irq_handler_t)(struct int_frame* frame);

/* Vectors for which the CPU pushes an error code: 8, 10-14, 17. */
#define VEC_DE 0 /* divide error */
#define VEC_DB 1
#define VEC_NMI 2
#define VEC_BP 3 /* int3 */
#define VEC_OF 4
#define VEC_BR 5
#define VEC_UD 6 /* invalid opcode (ud2) */
#define VEC_NM 7
#define VEC_DF 8
#define VEC_TS 10
#define VEC_NP 11
#define VEC_SS 12
#define VEC_GP 13
#define VEC_PF 14
#define VEC_MF 16
#define VEC_AC 17

/* Fills all 256 gates and loads the IDT on this vCPU (lidt). Handlers registered before
 * are kept. */
void idt_init(void);
/* lidt of the already-filled IDT: for other vCPUs after vCPU 0 called idt_init(). */
void idt_load(void);

/* Installs handler for vector (NULL removes it); returns the previous handler. A vector
 * without a handler prints "unhandled interrupt: vector ..., error code ..., EIP ..." and
 * exits with status 99. */
irq_handler_t irq_register(unsigned vector, irq_handler_t handler);

#define UNHANDLED_INTERRUPT_STATUS 99

#endif
