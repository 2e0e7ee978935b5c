/* Self-test of the guest runtime: printf formatting (through snprintf), 64-bit decimal
 * conversion, string functions, the page allocator and command-line parsing.
 * For the command-line checks run it with cmdline="a=12 b=0x1F c=-5 d=zz flag"; without
 * "a=" on the command line they are skipped. Exit 0 iff every check passed. */
#include <potemkin/runtime.h>

extern char _end[];

#define FMT(expected, ...)                                                                         \
    do {                                                                                           \
        char buf_[96];                                                                             \
        int n_ = snprintf(buf_, sizeof buf_, __VA_ARGS__);                                         \
        CHECK(strcmp(buf_, expected) == 0 && n_ == (int)strlen(expected),                          \
              "snprintf(%s) gave \"%s\" (%d), expected \"%s\"", #__VA_ARGS__, buf_, n_, expected); \
    } while (0)

static void test_printf(void) {
    puts("-- printf");
    FMT("42 -42 0 2147483647 -2147483648", "%d %i %d %d %d", 42, -42, 0, 2147483647,
        (int)0x80000000u);
    FMT("4294967295 ffffffff FFFFFFFF", "%u %x %X", 0xffffffffu, 0xffffffffu, 0xffffffffu);
    FMT("[   7] [7   ] [0007] [-007]", "[%4d] [%-4d] [%04d] [%04d]", 7, 7, 7, -7);
    FMT("0x00102000", "%p", (void*)0x102000);
    FMT("a|hello|  hi|hi  |%", "%c|%s|%4s|%-4s|%%", 'a', "hello", "hi", "hi");
    FMT("18446744073709551615", "%llu", 0xffffffffffffffffull);
    FMT("-9223372036854775808", "%lld", (long long)0x8000000000000000ull);
    FMT("123456789012345678", "%llu", 123456789012345678ull);
    FMT("fedcba9876543210 0000000100000000", "%llx %016llx", 0xfedcba9876543210ull, 0x100000000ull);
    FMT("10000000000", "%llu", 10000000000ull);
    FMT("4294967296", "%llu", 0x100000000ull);
    FMT("123 abc", "%lu %lx", 123ul, 0xabcul);
    static const char* volatile null_string = 0; /* volatile: gcc warns about a literal NULL */
    FMT("(null)", "%s", null_string);
    FMT("abc", "%.3s", "abcdef");
    char small[4];
    int n = snprintf(small, sizeof small, "%s", "truncated");
    CHECK(n == 9 && strcmp(small, "tru") == 0, "snprintf truncation: \"%s\" %d", small, n);
}

static void test_string(void) {
    puts("-- string functions");
    char a[16] = "0123456789";
    memmove(a + 2, a, 8);
    CHECK(memcmp(a, "0101234567", 10) == 0, "memmove up: %s", a);
    memmove(a, a + 2, 8);
    CHECK(memcmp(a, "0123456767", 10) == 0, "memmove down: %s", a);
    memset(a, 'x', 3);
    CHECK(memcmp(a, "xxx3", 4) == 0, "memset");
    memcpy(a, "hey", 4);
    CHECK(strcmp(a, "hey") == 0 && strlen(a) == 3, "memcpy/strcmp/strlen");
    CHECK(strncmp("abcd", "abce", 3) == 0 && strncmp("abcd", "abce", 4) < 0, "strncmp");
    CHECK(strchr("hello", 'l') && *strchr("hello", 'l') == 'l' && !strchr("hello", 'z'), "strchr");
}

static void test_page_alloc(void) {
    puts("-- page allocator");
    const struct potemkin_boot_info* bi = boot_info();
    uint32_t remaining = page_alloc_remaining();
    printf("%u KiB free above _end (%p)\n", remaining / 1024, (void*)_end);
    uint8_t* p = page_alloc(2);
    uint8_t* q = page_alloc(1);
    CHECK(p && q, "page_alloc returned NULL");
    if (!p || !q) return;
    CHECK(((uintptr_t)p & 0xfff) == 0 && ((uintptr_t)q & 0xfff) == 0, "pages 4 KiB-aligned");
    CHECK((uintptr_t)p >= (uintptr_t)_end, "pages above _end");
    CHECK((uintptr_t)q >= (uintptr_t)p + 2 * PAGE_SIZE, "allocations do not overlap");
    CHECK((uint64_t)(uintptr_t)q + PAGE_SIZE <= bi->ram_size, "pages inside RAM");
    bool zero = true;
    for (unsigned i = 0; i < 2 * PAGE_SIZE; i++) zero = zero && p[i] == 0;
    CHECK(zero, "pages zeroed");
    p[0] = 1;
    p[2 * PAGE_SIZE - 1] = 2;
    CHECK(q[0] == 0, "writing one allocation leaves the next alone");
    CHECK(page_alloc(0) == 0, "page_alloc(0) is NULL");
    CHECK(page_alloc(0x100000) == 0, "4 GiB allocation fails");
    CHECK_EQ(page_alloc_remaining(), remaining - 3 * PAGE_SIZE, "remaining after 3 pages");
}

static void test_cmdline(void) {
    printf("-- command line \"%s\"\n", cmdline());
    if (!cmdline_has("a")) {
        puts("(no a=... on the command line: skipped)");
        return;
    }
    CHECK_EQ(cmdline_int("a", 0), 12, "a=12");
    CHECK_EQ(cmdline_int("b", 0), 0x1f, "b=0x1F");
    CHECK_EQ(cmdline_int("c", 0), (uint64_t)(int64_t)-5, "c=-5");
    CHECK_EQ(cmdline_int("d", 99), 99, "d=zz falls back");
    CHECK_EQ(cmdline_int("missing", 3), 3, "missing key falls back");
    CHECK_EQ(cmdline_int("fla", 4), 4, "prefix of a key does not match");
    CHECK(cmdline_has("flag") && !cmdline_has("fl"), "cmdline_has");
    CHECK_EQ(cmdline_uint("b", 0), 0x1f, "cmdline_uint");
}

int main(void) {
    puts("rttest: guest runtime self-test");
    test_printf();
    test_string();
    test_page_alloc();
    test_cmdline();
    return checks_finish();
}
