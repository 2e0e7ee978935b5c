/* A device overwrites code the guest has already run (TEST_DEVICE's DMA, docs/test-device.md).
 * The next call must run the new code: the VMM drops the stale translation after DMA
 * (UNICORN.md gotcha 10). */
#include <potemkin/runtime.h>
#include <potemkin/test_device.h>

__attribute__((noipa, aligned(16))) int patched(void) {
    return 1;
}
/* Called through a volatile pointer so the compiler cannot assume what it returns. */
static int (*volatile call_patched)(void) = patched;

int main(void) {
    int before = 0;
    for (int i = 0; i < 1000; ++i) before += call_patched(); /* translated and cached by now */
    CHECK(before == 1000, "patched() returned %d in total before the DMA", before);

    /* mov eax, 2; ret */
    static const uint8_t code[] = {0xb8, 0x02, 0x00, 0x00, 0x00, 0xc3};
    for (unsigned i = 0; i < sizeof code; ++i) mmio_write8(TD_DEFAULT_MMIO + i, code[i]);
    mmio_write32(TD_DEFAULT_MMIO + 0x830, (uint32_t)(uintptr_t)&patched);
    mmio_write32(TD_DEFAULT_MMIO + 0x834, sizeof code);
    mmio_write32(TD_DEFAULT_MMIO + 0x838, 1); /* go: scratch[0..len) -> guest memory */

    int after = call_patched();
    CHECK(after == 2, "patched() returned %d after the device rewrote it, expected 2", after);
    printf("dmacode: before %d, after %d\n", before / 1000, after);
    return checks_finish();
}
