/* Spurious 8259A interrupts. When a level-triggered request drops between the PIC raising
 * INT and the CPU's acknowledge, the PIC answers with its lowest-priority vector (line 7 on
 * the master, line 15 on the slave) without setting the in-service bit. This happens
 * legitimately when a device lowers INTx just as it was being delivered, so a driver using
 * level INTx must tolerate it: these handlers count it and send only the EOIs the PICs
 * expect (none for the master's, the master's for the slave's, since the master did
 * service cascade line 2). A real request on line 7 or 15 is EOIed normally. */
#ifndef NVME_SPURIOUS_H
#define NVME_SPURIOUS_H

/* Registers the handlers for the vectors of lines 7 and 15 (after pic_init). */
void spurious_install(void);
/* Spurious interrupts seen so far. */
unsigned spurious_count(void);

#endif
