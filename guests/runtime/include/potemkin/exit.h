/* Ending the VM through the exit port 0xf4. */
#ifndef POTEMKIN_EXIT_H
#define POTEMKIN_EXIT_H

#define EXIT_PORT 0xf4

/* Writes status to port 0xf4 (32-bit outl); `potemkin run` exits with status & 0xff.
 * Keep statuses below 64 (the VMM uses 124-126). Never returns (halts if the write did
 * not end the VM). */
__attribute__((noreturn)) void exit(int status);

#endif
