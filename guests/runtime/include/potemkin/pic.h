/* 8259A PIC pair (ports 0x20/0x21 and 0xa0/0xa1) and the ELCR (0x4d0/0x4d1).
 * Lines 0-7 are on the master, 8-15 on the slave (cascaded on master line 2). */
#ifndef POTEMKIN_PIC_H
#define POTEMKIN_PIC_H

#include <stdbool.h>

#define PIC_DEFAULT_MASTER_BASE 0x20
#define PIC_DEFAULT_SLAVE_BASE 0x28

/* ICW1-4 on both chips (edge, cascade on IRQ 2, 8086 mode, normal EOI); all 16 lines
 * masked afterwards. Bases must be multiples of 8. */
void pic_init(unsigned master_base, unsigned slave_base);
/* The vector a line is delivered on after pic_init. */
unsigned pic_vector(unsigned line);
/* Unmasking a slave line (8-15) also unmasks the cascade line 2 on the master. */
void pic_unmask(unsigned line);
void pic_mask(unsigned line);
/* Non-specific EOI: to the slave then the master for lines >= 8, else to the master. */
void pic_eoi(unsigned line);
/* ELCR: level (true) or edge (false) triggering for line. */
void pic_set_level(unsigned line, bool level);
/* Reads the in-service (ISR) / request (IRR) registers, slave in bits 15:8 (OCW3). */
unsigned pic_read_isr(void);
unsigned pic_read_irr(void);

#endif
