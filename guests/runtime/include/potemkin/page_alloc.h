/* Page allocator for DMA buffers and the like. Paging is off, so the returned pointer is
 * also the buffer's physical address.
 *
 * A bump allocator: pages come from _end (the end of the guest image) upward, bounded by
 * the boot info's ram_size and by 0xc0000000. page_free() is a NO-OP: memory is never
 * reused. Safe to call from several vCPUs (atomic bump); the zeroing is done by the
 * caller's vCPU. */
#ifndef POTEMKIN_PAGE_ALLOC_H
#define POTEMKIN_PAGE_ALLOC_H

#include <stdint.h>

#define PAGE_SIZE 4096u

/* npages zeroed, 4 KiB-aligned, contiguous pages; NULL if RAM is exhausted or npages == 0. */
void* page_alloc(unsigned npages);
/* Does nothing (bump allocator). */
void page_free(void* p, unsigned npages);
/* Physical address of a runtime pointer (identity, paging is off). */
static inline uintptr_t virt_to_phys(const void* p) {
    return (uintptr_t)p;
}
/* Bytes still available to page_alloc. */
uint32_t page_alloc_remaining(void);

#endif
