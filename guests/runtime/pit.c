/* 8254 PIT channel 0. */
#include <potemkin/io.h>
#include <potemkin/pit.h>

#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define PIT_CH0_LOHI_MODE2 0x34 /* channel 0, lo/hi byte, mode 2, binary */
#define PIT_CH0_LOHI_MODE0 0x30 /* channel 0, lo/hi byte, mode 0, binary */

void pit_start_periodic(unsigned hz) {
    unsigned divisor = hz ? PIT_INPUT_HZ / hz : 65536;
    if (divisor < 1) divisor = 1;
    if (divisor > 65536) divisor = 65536;
    /* 65536 is written as 0 */
    outb(PIT_CMD, PIT_CH0_LOHI_MODE2);
    outb(PIT_CH0, (uint8_t)divisor);
    outb(PIT_CH0, (uint8_t)(divisor >> 8));
}

void pit_stop(void) {
    /* A control word alone puts the counter in mode 0 waiting for a count: it stops. */
    outb(PIT_CMD, PIT_CH0_LOHI_MODE0);
}
