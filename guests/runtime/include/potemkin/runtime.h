/* Everything in the potemkin guest runtime. Guests define int main(void) (vCPU 0; its
 * return value becomes the exit status) and may define void ap_main(unsigned index)
 * (other vCPUs; the weak default parks them with cli; hlt). */
#ifndef POTEMKIN_RUNTIME_H
#define POTEMKIN_RUNTIME_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <potemkin/boot_info.h>
#include <potemkin/check.h>
#include <potemkin/console.h>
#include <potemkin/cpu.h>
#include <potemkin/exit.h>
#include <potemkin/idt.h>
#include <potemkin/io.h>
#include <potemkin/lapic.h>
#include <potemkin/mmio.h>
#include <potemkin/page_alloc.h>
#include <potemkin/pci.h>
#include <potemkin/pic.h>
#include <potemkin/pit.h>
#include <potemkin/string.h>

int main(void);
/* Runs on vCPUs != 0 once vCPU 0 has cleared .bss and stored the boot info. */
void ap_main(unsigned index);

#endif
