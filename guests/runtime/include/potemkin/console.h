/* Debug console on port 0xe9 (each byte appears on `potemkin run`'s stdout).
 *
 * printf conversions: %d %i %u %x %X %o %p %s %c %%; flags '-' and '0'; width (number or *);
 * precision for %s only (".N"/".*"); length modifiers hh h l ll z j (64-bit with ll/j,
 * printed without libgcc). Not reentrant-safe between vCPUs: output may interleave. */
#ifndef POTEMKIN_CONSOLE_H
#define POTEMKIN_CONSOLE_H

#include <stdarg.h>
#include <stddef.h>

#define DEBUG_CONSOLE_PORT 0xe9

int putchar(int c);
/* Writes s and a newline, like C's puts. */
int puts(const char* s);
/* Writes s without a newline. */
void console_write(const char* s, size_t len);

int printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char* fmt, va_list ap);
/* Formats into buf (always NUL-terminated if size > 0); returns the untruncated length. */
int snprintf(char* buf, size_t size, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap);

#endif
