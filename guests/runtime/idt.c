/* IDT setup and the C side of interrupt dispatch (stubs are in isr_stubs.S). */
#include <potemkin/console.h>
#include <potemkin/exit.h>
#include <potemkin/idt.h>
#include <stdint.h>

struct idt_gate {
    uint16_t offset_lo;
    uint16_t selector;
    uint8_t zero;
    uint8_t type_attr; /* 0x8e: present, DPL 0, 32-bit interrupt gate */
    uint16_t offset_hi;
} __attribute__((packed));

struct idt_pointer {
    uint16_t limit;
    uint32_t base;
} __attribute__((packed));

#define KERNEL_CS 0x08
#define GATE_INTERRUPT32 0x8e

extern const uint32_t __isr_stub_table[256];

static struct idt_gate idt[256] __attribute__((aligned(8)));
static volatile irq_handler_t handlers[256];

void idt_load(void) {
    struct idt_pointer p = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" : : "m"(p) : "memory");
}

void idt_init(void) {
    for (unsigned v = 0; v < 256; v++) {
        uint32_t a = __isr_stub_table[v];
        idt[v].offset_lo = (uint16_t)a;
        idt[v].selector = KERNEL_CS;
        idt[v].zero = 0;
        idt[v].type_attr = GATE_INTERRUPT32;
        idt[v].offset_hi = (uint16_t)(a >> 16);
    }
    idt_load();
}

irq_handler_t irq_register(unsigned vector, irq_handler_t handler) {
    if (vector > 255) return 0;
    irq_handler_t old = handlers[vector];
    handlers[vector] = handler;
    return old;
}

void __int_dispatch(struct int_frame* f);
void __int_dispatch(struct int_frame* f) {
    irq_handler_t h = handlers[f->vector & 0xff];
    if (h) {
        h(f);
        return;
    }
    printf(
        "unhandled interrupt: vector %u (0x%02x), error code 0x%x, EIP 0x%08x, CS 0x%x, "
        "EFLAGS 0x%08x\n",
        f->vector, f->vector, f->error_code, f->eip, f->cs, f->eflags);
    printf("  eax=%08x ebx=%08x ecx=%08x edx=%08x esi=%08x edi=%08x ebp=%08x\n", f->eax, f->ebx,
           f->ecx, f->edx, f->esi, f->edi, f->ebp);
    exit(UNHANDLED_INTERRUPT_STATUS);
}
