/* The demo guest: greets, shows the boot info, then waits for 10 PIT ticks (100 Hz)
 * halting between them, and exits 0. */
#include <potemkin/runtime.h>

static volatile unsigned ticks;

static void on_timer(struct int_frame* f) {
    (void)f;
    ticks++;
    pic_eoi(0);
}

int main(void) {
    puts("hello from potemkin guest");

    const struct potemkin_boot_info* bi = boot_info();
    if (!bi || bi->magic != POTEMKIN_BOOT_MAGIC) {
        printf("boot info missing or bad magic (at %p)\n", (const void*)bi);
        return 1;
    }
    printf("boot info v%u: memory %llu MiB (%llu bytes), %u cpu(s), command line \"%s\"\n",
           bi->version, bi->ram_size >> 20, bi->ram_size, bi->cpu_count, cmdline());

    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);
    irq_register(pic_vector(0), on_timer);
    pit_start_periodic(100);
    pic_unmask(0);

    while (ticks < 10) sti_hlt();
    cli();
    pit_stop();
    pic_mask(0);

    printf("%u timer ticks\n", ticks);
    return 0;
}
