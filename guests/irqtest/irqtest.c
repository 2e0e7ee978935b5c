/* Interrupt delivery through the PIC pair and the local APIC, driven by TEST_DEVICE's
 * IRQ-line and MSI registers (docs/test-device.md).
 *
 * Waiting: the PIT runs at 1000 Hz on IRQ 0 as a clock; waits spin with interrupts enabled
 * and end when the expected interrupts arrived, when the clock says the time is up, or after
 * a fixed number of spins (so a broken PIT or LAPIC cannot hang the test). No hlt is used
 * while waiting for an interrupt that may never come (it would end the VM).
 * Command line (optional): td_mmio=0xd0000000. Exit 0 iff every check passed. */
#include <potemkin/runtime.h>
#include <potemkin/test_device.h>

#define SPINS_PER_MS 200000u
#define WAIT_MS 100u  /* for something that should arrive */
#define SETTLE_MS 10u /* for something that should not */

#define LEVEL_LINE 11 /* on the slave */
#define SLAVE_EDGE_LINE 10

static uintptr_t td;
static volatile unsigned ticks;
static volatile unsigned line_count[16];
static volatile unsigned vec_count[256];
static volatile unsigned order[16];
static volatile unsigned order_len;
/* level-line handler: deasserts the line on its level_deassert_after-th run since the
 * last reset of level_runs (earlier runs EOI with the line still asserted) */
static volatile unsigned level_deassert_after = 1;
static volatile unsigned level_runs;

static void log_order(unsigned what) {
    if (order_len < 16) order[order_len] = what;
    order_len++;
}

static void pulse(unsigned line) {
    mmio_write32(td + TD_MMIO_IRQ_PULSE, line);
}
static void drive(unsigned line, bool asserted) {
    mmio_write32(td + TD_MMIO_IRQ_LEVEL, (line & 0xff) | (asserted ? 0x100u : 0));
}
static void send_msi(uint32_t addr, uint32_t data) {
    mmio_write32(td + TD_MMIO_MSI_ADDR_LO, addr);
    mmio_write32(td + TD_MMIO_MSI_ADDR_HI, 0);
    mmio_write32(td + TD_MMIO_MSI_DATA, data);
}

static void on_timer(struct int_frame* f) {
    (void)f;
    ticks++;
    pic_eoi(0);
}

static void on_pic_line(struct int_frame* f) {
    unsigned v = f->vector;
    unsigned line = v >= pic_vector(8) ? v - pic_vector(8) + 8 : v - pic_vector(0);
    line_count[line]++;
    log_order(line);
    if (line == LEVEL_LINE && ++level_runs >= level_deassert_after)
        drive(LEVEL_LINE, false); /* deassert before EOI, or it fires again */
    pic_eoi(line);
}

static void on_msi(struct int_frame* f) {
    vec_count[f->vector]++;
    log_order(f->vector);
    lapic_eoi();
}

/* Waits with interrupts enabled until *counter >= target or ms milliseconds passed. */
static bool wait_for(volatile unsigned* counter, unsigned target, unsigned ms) {
    sti();
    unsigned start = ticks;
    for (uint32_t spins = 0; spins < ms * SPINS_PER_MS; spins++) {
        if (*counter >= target) return true;
        if (ticks - start > ms) break;
        cpu_relax();
    }
    return *counter >= target;
}

static void settle(void) {
    static volatile unsigned never;
    wait_for(&never, 1, SETTLE_MS);
}

static void reset_order(void) {
    order_len = 0;
    for (unsigned i = 0; i < 16; i++) order[i] = 0;
}

static void test_timer_clock(void) {
    puts("-- PIT clock (IRQ 0)");
    bool ok = wait_for(&ticks, 5, 50);
    CHECK(ok, "no PIT ticks: waits fall back to spin counts");
}

static void test_edge(void) {
    puts("-- edge IRQ 5, unmasked, IF=1");
    pic_unmask(5);
    pulse(5);
    CHECK(wait_for(&line_count[5], 1, WAIT_MS), "IRQ 5 pulse not delivered");
    settle();
    CHECK_EQ(line_count[5], 1, "IRQ 5 handler runs exactly once per pulse");

    puts("-- edge IRQ 5 masked, then unmasked");
    pic_mask(5);
    pulse(5);
    settle();
    CHECK_EQ(line_count[5], 1, "masked IRQ 5 not delivered");
    cli();
    CHECK((pic_read_irr() >> 5) & 1, "IRQ 5 latched in IRR while masked (IRR=0x%04x)",
          pic_read_irr());
    pic_unmask(5);
    CHECK(wait_for(&line_count[5], 2, WAIT_MS), "latched IRQ 5 not delivered after unmask");
    settle();
    CHECK_EQ(line_count[5], 2, "IRQ 5 count after unmask");
    CHECK_EQ(pic_read_isr(), 0, "nothing in service after EOIs");

    puts("-- edge IRQ 10 (slave, cascade)");
    pic_unmask(SLAVE_EDGE_LINE);
    pulse(SLAVE_EDGE_LINE);
    CHECK(wait_for(&line_count[SLAVE_EDGE_LINE], 1, WAIT_MS), "IRQ 10 pulse not delivered");
    settle();
    CHECK_EQ(line_count[SLAVE_EDGE_LINE], 1, "IRQ 10 handler runs once");
    CHECK_EQ(pic_read_isr(), 0, "nothing in service after slave EOI");
}

static void test_level(void) {
    puts("-- level IRQ 11 (ELCR)");
    pic_set_level(LEVEL_LINE, true);
    CHECK((inb(0x4d1) >> (LEVEL_LINE - 8)) & 1, "ELCR bit for line 11 reads back as level");
    pic_unmask(LEVEL_LINE);

    level_deassert_after = 1;
    level_runs = 0;
    drive(LEVEL_LINE, true);
    CHECK(wait_for(&line_count[LEVEL_LINE], 1, WAIT_MS), "asserted level IRQ 11 not delivered");
    settle();
    CHECK_EQ(line_count[LEVEL_LINE], 1, "level IRQ 11 once when the handler deasserts");

    puts("-- level IRQ 11 fires again while still asserted after EOI");
    level_deassert_after = 3; /* first two runs EOI with the line still high */
    level_runs = 0;
    drive(LEVEL_LINE, true);
    CHECK(wait_for(&level_runs, 3, WAIT_MS), "level IRQ 11 did not re-fire (%u runs)", level_runs);
    settle();
    CHECK_EQ(level_runs, 3, "level IRQ 11 runs until deasserted");

    puts("-- level IRQ 11 asserted while masked");
    level_deassert_after = 1;
    level_runs = 0;
    pic_mask(LEVEL_LINE);
    unsigned before = line_count[LEVEL_LINE];
    drive(LEVEL_LINE, true);
    settle();
    CHECK_EQ(line_count[LEVEL_LINE], before, "masked level IRQ 11 not delivered");
    pic_unmask(LEVEL_LINE);
    CHECK(wait_for(&line_count[LEVEL_LINE], before + 1, WAIT_MS),
          "level IRQ 11 not delivered after unmask");
    settle();
    CHECK_EQ(line_count[LEVEL_LINE], before + 1, "level IRQ 11 once after unmask");

    puts("-- level IRQ 11 asserted then deasserted while masked: nothing");
    pic_mask(LEVEL_LINE);
    before = line_count[LEVEL_LINE];
    drive(LEVEL_LINE, true);
    drive(LEVEL_LINE, false);
    pic_unmask(LEVEL_LINE);
    settle();
    CHECK_EQ(line_count[LEVEL_LINE], before, "deasserted level line not delivered");
    pic_mask(LEVEL_LINE);
}

static void test_priority(void) {
    puts("-- PIC priority: IRQ 7 and IRQ 4 pending with IF=0, IRQ 4 first");
    pic_unmask(4);
    pic_unmask(7);
    cli();
    unsigned c4 = line_count[4], c7 = line_count[7];
    reset_order();
    pulse(7);
    pulse(4);
    unsigned irr = pic_read_irr();
    CHECK((irr & 0x90) == 0x90, "IRQ 4 and 7 pending in IRR (IRR=0x%04x)", irr);
    CHECK_EQ(order_len, 0, "nothing delivered with IF=0");
    CHECK(wait_for(&line_count[7], c7 + 1, WAIT_MS), "IRQ 7 not delivered");
    CHECK_EQ(line_count[4], c4 + 1, "IRQ 4 delivered once");
    CHECK_EQ(order_len, 2, "two interrupts delivered");
    CHECK(order[0] == 4 && order[1] == 7, "order was %u, %u; expected 4, 7", order[0], order[1]);
    cli();
    pic_mask(4);
    pic_mask(7);
}

static void test_msi(void) {
    puts("-- MSI to LAPIC 0, vector 0x50");
    cli();
    lapic_enable(0xff);
    lapic_set_tpr(0);
    printf("LAPIC id %u, version 0x%x\n", lapic_id(), lapic_read(LAPIC_REG_VERSION));
    CHECK(lapic_read(LAPIC_REG_SVR) & LAPIC_SVR_ENABLE, "LAPIC SVR enable bit reads back");
    sti();
    send_msi(msi_address(0), msi_data(0x50));
    CHECK(wait_for(&vec_count[0x50], 1, WAIT_MS), "MSI vector 0x50 not delivered");
    settle();
    CHECK_EQ(vec_count[0x50], 1, "MSI vector 0x50 delivered once");

    puts("-- two MSIs with IF=0: higher vector first");
    cli();
    reset_order();
    send_msi(msi_address(0), msi_data(0x51));
    send_msi(msi_address(0), msi_data(0x61));
    CHECK_EQ(order_len, 0, "no MSI delivered with IF=0");
    CHECK(wait_for(&vec_count[0x51], 1, WAIT_MS), "MSI vector 0x51 not delivered");
    CHECK_EQ(vec_count[0x61], 1, "MSI vector 0x61 delivered once");
    CHECK(order[0] == 0x61 && order[1] == 0x51, "MSI order 0x%x, 0x%x; expected 0x61, 0x51",
          order[0], order[1]);

    puts("-- TPR 0x60 holds back vector 0x55 until lowered");
    lapic_set_tpr(0x60);
    send_msi(msi_address(0), msi_data(0x55));
    settle();
    CHECK_EQ(vec_count[0x55], 0, "vector 0x55 blocked by TPR 0x60");
    lapic_set_tpr(0);
    CHECK(wait_for(&vec_count[0x55], 1, WAIT_MS), "vector 0x55 not delivered after TPR 0");
    cli();
}

int main(void) {
    td = cmdline_uint("td_mmio", TD_DEFAULT_MMIO);
    printf("irqtest: TEST_DEVICE mmio at 0x%08x\n", (unsigned)td);
    if (mmio_read32(td + TD_MMIO_MAGIC) != TD_MAGIC) {
        printf("no TEST_DEVICE at 0x%08x\n", (unsigned)td);
        return 2;
    }

    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);
    for (unsigned line = 1; line < 16; line++) irq_register(pic_vector(line), on_pic_line);
    irq_register(pic_vector(0), on_timer);
    irq_register(0x50, on_msi);
    irq_register(0x51, on_msi);
    irq_register(0x55, on_msi);
    irq_register(0x61, on_msi);

    pit_start_periodic(1000);
    pic_unmask(0);

    test_timer_clock();
    test_edge();
    test_level();
    test_priority();
    test_msi();

    cli();
    pit_stop();
    pic_mask(0);
    printf("%u timer ticks during the test\n", ticks);
    return checks_finish();
}
