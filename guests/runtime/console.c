/* Debug console (port 0xe9) and a small printf. 64-bit numbers are converted with
 * x86 divl (64/32 -> 32 in two steps), so no libgcc __udivdi3/__umoddi3 is needed. */
#include <potemkin/console.h>
#include <potemkin/io.h>
#include <potemkin/string.h>
#include <stdbool.h>
#include <stdint.h>

int putchar(int c) {
    outb(DEBUG_CONSOLE_PORT, (uint8_t)c);
    return (unsigned char)c;
}

void console_write(const char* s, size_t len) {
    for (size_t i = 0; i < len; i++) outb(DEBUG_CONSOLE_PORT, (uint8_t)s[i]);
}

int puts(const char* s) {
    console_write(s, strlen(s));
    putchar('\n');
    return 0;
}

/* n / d with the remainder in *rem, for d != 0, using two 64/32 divl steps (the high
 * step's remainder < d, so the low step cannot overflow). */
static uint64_t divmod64_32(uint64_t n, uint32_t d, uint32_t* rem) {
    uint32_t hi = (uint32_t)(n >> 32), lo = (uint32_t)n;
    uint32_t qhi = 0, r = 0, qlo;
    if (hi) {
        __asm__("divl %[d]" : "=a"(qhi), "=d"(r) : "a"(hi), "d"(0u), [d] "rm"(d));
    }
    __asm__("divl %[d]" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), [d] "rm"(d));
    *rem = r;
    return ((uint64_t)qhi << 32) | qlo;
}

struct sink {
    char* buf; /* NULL: console */
    size_t size;
    size_t len; /* characters produced so far (even past size) */
};

static void emit(struct sink* s, char c) {
    if (!s->buf)
        putchar(c);
    else if (s->len + 1 < s->size)
        s->buf[s->len] = c;
    s->len++;
}

static void emit_padding(struct sink* s, char c, int n) {
    while (n-- > 0) emit(s, c);
}

static int format(struct sink* out, const char* fmt, va_list ap) {
    static const char lower[] = "0123456789abcdef";
    static const char upper[] = "0123456789ABCDEF";

    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(out, *fmt);
            continue;
        }
        fmt++;
        bool left = false, zero = false, plus = false, space = false, alt = false;
        for (;; fmt++) {
            if (*fmt == '-')
                left = true;
            else if (*fmt == '0')
                zero = true;
            else if (*fmt == '+')
                plus = true;
            else if (*fmt == ' ')
                space = true;
            else if (*fmt == '#')
                alt = true;
            else
                break;
        }
        int width = 0;
        if (*fmt == '*') {
            width = va_arg(ap, int);
            if (width < 0) {
                left = true;
                width = -width;
            }
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        }
        int precision = -1;
        if (*fmt == '.') {
            fmt++;
            precision = 0;
            if (*fmt == '*') {
                precision = va_arg(ap, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9') precision = precision * 10 + (*fmt++ - '0');
            }
        }
        int longs = 0; /* 0: int, 2: 64-bit */
        int shorts = 0;
        for (;; fmt++) {
            if (*fmt == 'l')
                longs++;
            else if (*fmt == 'j')
                longs = 2;
            else if (*fmt == 'h')
                shorts++;
            else if (*fmt == 'z' || *fmt == 't')
                ; /* size_t/ptrdiff_t are 32-bit */
            else
                break;
        }
        if (left) zero = false;

        char c = *fmt;
        if (!c) break;
        if (c == 'c') {
            if (!left) emit_padding(out, ' ', width - 1);
            emit(out, (char)va_arg(ap, int));
            if (left) emit_padding(out, ' ', width - 1);
            continue;
        }
        if (c == 's') {
            const char* s = va_arg(ap, const char*);
            if (!s) s = "(null)";
            int n = 0;
            while (s[n] && (precision < 0 || n < precision)) n++;
            if (!left) emit_padding(out, ' ', width - n);
            for (int i = 0; i < n; i++) emit(out, s[i]);
            if (left) emit_padding(out, ' ', width - n);
            continue;
        }
        if (c == '%') {
            emit(out, '%');
            continue;
        }

        uint64_t v;
        bool negative = false;
        unsigned base = 10;
        const char* digits = lower;
        const char* prefix = "";
        switch (c) {
            case 'd':
            case 'i': {
                int64_t sv;
                if (longs >= 2)
                    sv = va_arg(ap, long long);
                else if (longs == 1)
                    sv = va_arg(ap, long);
                else
                    sv = va_arg(ap, int);
                if (shorts == 1)
                    sv = (short)sv;
                else if (shorts >= 2)
                    sv = (signed char)sv;
                negative = sv < 0;
                v = negative ? (uint64_t)0 - (uint64_t)sv : (uint64_t)sv;
                if (negative)
                    prefix = "-";
                else if (plus)
                    prefix = "+";
                else if (space)
                    prefix = " ";
                break;
            }
            case 'u':
            case 'x':
            case 'X':
            case 'o':
                if (longs >= 2)
                    v = va_arg(ap, unsigned long long);
                else if (longs == 1)
                    v = va_arg(ap, unsigned long);
                else
                    v = va_arg(ap, unsigned int);
                if (shorts == 1)
                    v = (unsigned short)v;
                else if (shorts >= 2)
                    v = (unsigned char)v;
                if (c == 'x' || c == 'X') {
                    base = 16;
                    digits = c == 'X' ? upper : lower;
                    if (alt && v) prefix = c == 'X' ? "0X" : "0x";
                } else if (c == 'o') {
                    base = 8;
                    if (alt) prefix = "0";
                }
                break;
            case 'p':
                v = (uintptr_t)va_arg(ap, void*);
                base = 16;
                prefix = "0x";
                zero = true;
                if (width < 10) width = 10;
                left = false;
                break;
            default:
                /* unknown conversion: print it literally */
                emit(out, '%');
                emit(out, c);
                continue;
        }

        char tmp[24];
        int n = 0;
        do {
            uint32_t r;
            if (base == 16) {
                r = (uint32_t)v & 15;
                v >>= 4;
            } else if (base == 8) {
                r = (uint32_t)v & 7;
                v >>= 3;
            } else {
                v = divmod64_32(v, 10, &r);
            }
            tmp[n++] = digits[r];
        } while (v);

        int plen = (int)strlen(prefix);
        int pad = width - n - plen;
        if (!left && !zero) emit_padding(out, ' ', pad);
        for (int i = 0; i < plen; i++) emit(out, prefix[i]);
        if (!left && zero) emit_padding(out, '0', pad);
        while (n) emit(out, tmp[--n]);
        if (left) emit_padding(out, ' ', pad);
    }
    return (int)out->len;
}

int vprintf(const char* fmt, va_list ap) {
    struct sink s = {0, 0, 0};
    return format(&s, fmt, ap);
}

int printf(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap) {
    char dummy;
    struct sink s = {size ? buf : &dummy, size, 0};
    int n = format(&s, fmt, ap);
    if (size) buf[s.len < size ? s.len : size - 1] = '\0';
    return n;
}

int snprintf(char* buf, size_t size, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
