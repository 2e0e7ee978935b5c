/* Millisecond clock on PIT channel 0 (see clock.h). */
#include "clock.h"

#include <potemkin/runtime.h>

static volatile uint32_t ticks;

static void on_tick(struct int_frame* f) {
    (void)f;
    ticks++;
    pic_eoi(0);
}

void clock_start(void) {
    irq_register(pic_vector(0), on_tick);
    pit_start_periodic(1000);
    pic_unmask(0);
}

void clock_stop(void) {
    pit_stop();
    pic_mask(0);
}

uint32_t clock_ms(void) {
    return ticks;
}

void clock_wait_tick(void) {
    sti_hlt();
    cli();
}
