/* Test-assertion counters. */
#include <potemkin/check.h>
#include <potemkin/console.h>
#include <stdarg.h>

static volatile unsigned passed, failed;

int check_record(int ok, const char* file, int line, const char* fmt, ...) {
    if (ok) {
        passed++;
        return 1;
    }
    failed++;
    printf("FAIL: %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    return 0;
}

int check_record_eq(uint64_t got, uint64_t expected, const char* file, int line, const char* what) {
    return check_record(got == expected, file, line, "%s: got 0x%llx, expected 0x%llx", what, got,
                        expected);
}

unsigned checks_passed(void) {
    return passed;
}
unsigned checks_failed(void) {
    return failed;
}

int checks_finish(void) {
    printf("checks: %u passed, %u failed\n", passed, failed);
    return failed ? 1 : 0;
}
