/* The boot-info block the VMM writes at physical 0x2000 (docs/guest-abi.md). */
#ifndef POTEMKIN_BOOT_INFO_H
#define POTEMKIN_BOOT_INFO_H

#include <stdint.h>

#define POTEMKIN_BOOT_MAGIC 0x4e4b5450u /* "PTKN" */
#define POTEMKIN_BOOT_VERSION 3u        /* 2: reset_count (reserved, 0, in version 1); 3: ECAM */

struct potemkin_boot_info {
    uint32_t magic;
    uint32_t version;
    uint32_t cpu_count;
    uint32_t reset_count; /* VM resets before this boot: 0 on the first boot */
    uint64_t ram_size;
    uint32_t cmdline;     /* physical address of a NUL-terminated string */
    uint32_t cmdline_len; /* without the NUL */
    uint32_t ecam_base;   /* version 3: the PCI bus's ECAM window, 0 when there is none */
    uint32_t ecam_size;   /* bytes: 1 MiB per bus */
} __attribute__((packed));

/* The block _start received in EBX (valid in main() and after). */
const struct potemkin_boot_info* boot_info(void);
/* VM resets before this boot (0 on the first boot, and when the block is missing). */
unsigned boot_reset_count(void);
/* Resets the VM the way a PC's firmware does: hard reset through the reset control register
 * (0x06 to port 0xcf9; needs a PCI bus). Returns only if the reset did not happen. */
void vm_reset(void);
/* The command line; "" when the block is missing or has a bad magic. */
const char* cmdline(void);
/* Value of the first whitespace-separated token "key=NUMBER" on the command line:
 * decimal (optionally negative) or 0x-prefixed hex. fallback if absent or malformed. */
int cmdline_int(const char* key, int fallback);
/* Same, unsigned (for addresses such as 0xd0000000). */
unsigned cmdline_uint(const char* key, unsigned fallback);
/* 1 if the bare word or "key=..." token is present on the command line, else 0. */
int cmdline_has(const char* key);

#endif
