/* Shared between pcitest.c and multibar.c. */
#ifndef PCITEST_H
#define PCITEST_H

#include <potemkin/runtime.h>

#define MSI_VECTOR 0x60
#define MSIX_VECTOR_BASE 0x70 /* 0x70-0x77 */
#define SPURIOUS_VECTOR 0xff

/* Spins with interrupts enabled until *counter >= target (bounded); returns with IF=0. */
bool wait_for(volatile unsigned* counter, unsigned target);
/* Spins a while with interrupts enabled, for things that should NOT arrive. */
void settle(void);

/* The multibar checks; prints a skip message when the device is absent. Needs the LAPIC
 * software-enabled (the edu MSI test does it). */
void test_multibar(void);

#endif
