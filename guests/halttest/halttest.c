/* hlt wake-ups: with the PIT at 1000 Hz on IRQ 0 (the only unmasked line), sti_hlt() five
 * times; each return must follow at least one timer interrupt. Never does cli; hlt (that
 * would end the VM with status 125). Exit 0 iff every check passed. */
#include <potemkin/runtime.h>

static volatile unsigned ticks;

static void on_timer(struct int_frame* f) {
    (void)f;
    ticks++;
    pic_eoi(0);
}

int main(void) {
    puts("halttest: sti; hlt woken by the PIT at 1000 Hz");
    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);
    irq_register(pic_vector(0), on_timer);
    pit_start_periodic(1000);
    pic_unmask(0);

    for (unsigned i = 1; i <= 5; i++) {
        cli();
        unsigned before = ticks;
        sti_hlt();
        cli();
        unsigned after = ticks;
        printf("wake-up %u: ticks %u -> %u\n", i, before, after);
        CHECK(after > before, "wake-up %u without a timer interrupt (ticks %u)", i, after);
    }

    /* halting until a given tick count also works (each hlt ends at one interrupt) */
    unsigned target = ticks + 20, halts = 0;
    while (ticks < target) {
        sti_hlt();
        halts++;
    }
    cli();
    printf("20 more ticks took %u halts\n", halts);
    CHECK(halts >= 1 && halts <= 20, "20 ticks took %u halts, expected 1..20", halts);

    pit_stop();
    pic_mask(0);
    return checks_finish();
}
