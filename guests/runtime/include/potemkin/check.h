/* Minimal assertion helpers for test guests.
 *
 *   CHECK(x == 3, "x is %d", x);        prints "FAIL: file:line: x is 5" when false
 *   CHECK_EQ(got, expected, "what");    prints both values (as 64-bit hex) when different
 *   return checks_finish();             prints "checks: N passed, M failed"; 0 iff M == 0
 */
#ifndef POTEMKIN_CHECK_H
#define POTEMKIN_CHECK_H

#include <stdint.h>

/* Records one check; prints the FAIL line when ok is 0. Returns ok. */
int check_record(int ok, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
int check_record_eq(uint64_t got, uint64_t expected, const char* file, int line, const char* what);

#define CHECK(cond, fmt, ...) check_record(!!(cond), __FILE__, __LINE__, fmt, ##__VA_ARGS__)
#define CHECK_EQ(got, expected, what) \
    check_record_eq((uint64_t)(got), (uint64_t)(expected), __FILE__, __LINE__, what)

unsigned checks_passed(void);
unsigned checks_failed(void);
/* Prints "checks: N passed, M failed"; returns 0 if nothing failed, 1 otherwise. */
int checks_finish(void);

#endif
