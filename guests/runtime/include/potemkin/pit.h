/* 8254 PIT channel 0 (ports 0x40, 0x43), which drives IRQ 0. */
#ifndef POTEMKIN_PIT_H
#define POTEMKIN_PIT_H

#define PIT_INPUT_HZ 1193182u

/* Mode 2 (rate generator), lo/hi byte, divisor 1193182 / hz (clamped to 1..65536).
 * Does not touch the PIC: unmask line 0 yourself. */
void pit_start_periodic(unsigned hz);
/* Reprograms channel 0 to mode 0 without writing a count, which stops it counting:
 * no further IRQ 0 edges. */
void pit_stop(void);

#endif
