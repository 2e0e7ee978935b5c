/* A millisecond clock for timeouts: PIT channel 0 at 1 kHz, counted by the IRQ 0 handler.
 * The count only advances while interrupts are enabled, so waits use clock_wait_tick()
 * (sti; hlt), which sleeps until the next interrupt of any source. */
#ifndef NVME_CLOCK_H
#define NVME_CLOCK_H

#include <stdint.h>

/* Registers the IRQ 0 handler, starts the PIT and unmasks line 0. Needs idt_init and
 * pic_init first. */
void clock_start(void);
void clock_stop(void);
/* Milliseconds since clock_start (a late VM gets one tick for several periods, so this
 * may run slow: timeouts err on the long side). */
uint32_t clock_ms(void);
/* Enables interrupts, halts until the next one (at most about 1 ms), disables them again. */
void clock_wait_tick(void);

#endif
