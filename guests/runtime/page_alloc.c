/* Bump page allocator from _end upward (page_free is a no-op). */
#include <potemkin/boot_info.h>
#include <potemkin/page_alloc.h>
#include <potemkin/string.h>
#include <stdbool.h>
#include <stdint.h>

extern char _end[];

#define RAM_CEILING 0xc0000000u

static uint32_t next_page; /* 0 until first use */

static uint32_t limit(void) {
    const struct potemkin_boot_info* bi = boot_info();
    uint64_t top = bi ? bi->ram_size : 0;
    if (top > RAM_CEILING) top = RAM_CEILING;
    return (uint32_t)top & ~(PAGE_SIZE - 1);
}

static uint32_t first_free(void) {
    return ((uint32_t)(uintptr_t)_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
}

void* page_alloc(unsigned npages) {
    if (npages == 0) return 0;
    uint32_t top = limit();
    uint32_t cur = __atomic_load_n(&next_page, __ATOMIC_RELAXED);
    uint32_t start;
    for (;;) {
        start = cur ? cur : first_free();
        if (start >= top || npages > (top - start) / PAGE_SIZE) return 0;
        uint32_t end = start + npages * PAGE_SIZE;
        if (__atomic_compare_exchange_n(&next_page, &cur, end, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            break;
    }
    void* p = (void*)(uintptr_t)start;
    memset(p, 0, npages * PAGE_SIZE);
    return p;
}

void page_free(void* p, unsigned npages) {
    (void)p;
    (void)npages;
}

uint32_t page_alloc_remaining(void) {
    uint32_t top = limit();
    uint32_t cur = __atomic_load_n(&next_page, __ATOMIC_RELAXED);
    if (!cur) cur = first_free();
    return cur < top ? top - cur : 0;
}
