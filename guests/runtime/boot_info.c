/* Boot-info block and command-line parsing. */
#include <potemkin/boot_info.h>
#include <potemkin/io.h>
#include <potemkin/string.h>
#include <stdbool.h>

extern const struct potemkin_boot_info* __potemkin_boot_info; /* set by _start */

const struct potemkin_boot_info* boot_info(void) {
    return __potemkin_boot_info;
}

unsigned boot_reset_count(void) {
    const struct potemkin_boot_info* bi = __potemkin_boot_info;
    if (!bi || bi->magic != POTEMKIN_BOOT_MAGIC || bi->version < 2) return 0;
    return bi->reset_count;
}

void vm_reset(void) {
    outb(0xcf9, 0x02); /* hard reset selected */
    outb(0xcf9, 0x06); /* ... and started */
    /* The VMM resets once the current instruction is done; give it time, then give up. */
    for (volatile unsigned i = 0; i < 1000000u; i++) __asm__ volatile("pause");
}

const char* cmdline(void) {
    const struct potemkin_boot_info* bi = __potemkin_boot_info;
    if (!bi || bi->magic != POTEMKIN_BOOT_MAGIC || !bi->cmdline) return "";
    return (const char*)(uintptr_t)bi->cmdline;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Start of the value of "key=" (or of the end of a bare "key"), NULL if absent. */
static const char* find_token(const char* key, bool* has_value) {
    size_t klen = strlen(key);
    const char* p = cmdline();
    while (*p) {
        while (is_space(*p)) p++;
        if (!*p) break;
        if (strncmp(p, key, klen) == 0) {
            char next = p[klen];
            if (next == '=') {
                *has_value = true;
                return p + klen + 1;
            }
            if (next == '\0' || is_space(next)) {
                *has_value = false;
                return p + klen;
            }
        }
        while (*p && !is_space(*p)) p++;
    }
    return 0;
}

static bool parse_number(const char* p, unsigned* out, bool* negative) {
    *negative = false;
    if (*p == '-') {
        *negative = true;
        p++;
    } else if (*p == '+') {
        p++;
    }
    unsigned v = 0;
    int digits = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
        for (;; p++, digits++) {
            char c = *p;
            unsigned d;
            if (c >= '0' && c <= '9')
                d = (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                d = (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                d = (unsigned)(c - 'A' + 10);
            else
                break;
            v = v * 16 + d;
        }
    } else {
        for (; *p >= '0' && *p <= '9'; p++, digits++) v = v * 10 + (unsigned)(*p - '0');
    }
    if (!digits || (*p && !is_space(*p))) return false;
    *out = v;
    return true;
}

int cmdline_int(const char* key, int fallback) {
    bool has_value, negative;
    unsigned v;
    const char* p = find_token(key, &has_value);
    if (!p || !has_value || !parse_number(p, &v, &negative)) return fallback;
    return negative ? -(int)v : (int)v;
}

unsigned cmdline_uint(const char* key, unsigned fallback) {
    bool has_value, negative;
    unsigned v;
    const char* p = find_token(key, &has_value);
    if (!p || !has_value || !parse_number(p, &v, &negative) || negative) return fallback;
    return v;
}

int cmdline_has(const char* key) {
    bool has_value;
    return find_token(key, &has_value) != 0;
}
