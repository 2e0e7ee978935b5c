/* Spurious 8259A interrupts (see spurious.h). */
#include "spurious.h"

#include <potemkin/runtime.h>

static volatile unsigned count;

static void on_line7(struct int_frame* f) {
    (void)f;
    if (pic_read_isr() & (1u << 7)) {
        pic_eoi(7); /* a real request */
        return;
    }
    count++;
}

static void on_line15(struct int_frame* f) {
    (void)f;
    if (pic_read_isr() & (1u << 15)) {
        pic_eoi(15);
        return;
    }
    count++;
    pic_eoi(2); /* the master delivered cascade line 2 */
}

void spurious_install(void) {
    irq_register(pic_vector(7), on_line7);
    irq_register(pic_vector(15), on_line15);
}

unsigned spurious_count(void) {
    return count;
}
