/* The guest's EOI reaches a projected device (docs/interrupts.md, "EOI notification"): edu's
 * INTx is a level-triggered PIC line; an interrupt the handler EOIs without acknowledging it in
 * the device is delivered again (the device still asserts, and is resampled at the EOI), and
 * once the handler acknowledges in edu (INTR_ACK) before its EOI, no further delivery comes.
 *
 * Over vfio-user this is end to end: the server masks INTx when it signals it and only an
 * unmask (sent on the EOI) lets it signal again, and the client holds the line until the EOI.
 *
 * Command line (optional): redeliver=N, how many deliveries the handler lets through without
 * acknowledging (default 3). Exit 0 iff every check passed. */
#include <potemkin/edu.h>
#include <potemkin/runtime.h>

#define WAIT_SPINS 20000000u  /* for something that should arrive */
#define SETTLE_SPINS 2000000u /* for something that should not */

static struct pci_dev* edu;
static uintptr_t edu_mmio;
static unsigned edu_line;

static volatile unsigned deliveries;
/* The handler acknowledges in the device on delivery number ack_on (0: on the first). */
static volatile unsigned ack_on;
static volatile uint32_t status_seen[16];
/* Acknowledge only the lowest cause the handler finds, not all of them. */
static volatile bool ack_lowest_only;

static uint32_t edu_read(unsigned reg) {
    return mmio_read32(edu_mmio + reg);
}
static void edu_write(unsigned reg, uint32_t v) {
    mmio_write32(edu_mmio + reg, v);
}

static void on_edu_intx(struct int_frame* f) {
    (void)f;
    unsigned n = ++deliveries;
    uint32_t st = edu_read(EDU_REG_IRQ_STATUS);
    if (n <= 16) status_seen[n - 1] = st;
    if (n >= ack_on) /* the device lowers its line once no cause is left */
        edu_write(EDU_REG_IRQ_ACK, ack_lowest_only ? (st & -st) : st);
    pic_eoi(edu_line); /* without the ack above, the line is still asserted */
}

static bool wait_for(unsigned target) {
    sti();
    for (uint32_t i = 0; i < WAIT_SPINS && deliveries < target; i++) cpu_relax();
    cli();
    return deliveries >= target;
}

static void settle(void) {
    sti();
    for (uint32_t i = 0; i < SETTLE_SPINS; i++) cpu_relax();
    cli();
}

/* Raise `bits` in edu and let the handler acknowledge only on delivery `ack_at`. */
static void raise_and_count(uint32_t bits, unsigned ack_at) {
    deliveries = 0;
    ack_on = ack_at;
    for (unsigned i = 0; i < 16; i++) status_seen[i] = 0;
    edu_write(EDU_REG_IRQ_RAISE, bits);
    CHECK(wait_for(ack_at), "%u deliveries expected, %u came", ack_at, deliveries);
    settle();
    CHECK_EQ(deliveries, ack_at, "deliveries once the handler acknowledged in edu");
    for (unsigned i = 0; i < ack_at && i < 16; i++)
        CHECK(status_seen[i] == bits, "delivery %u saw irq status 0x%x, expected 0x%x", i + 1,
              status_seen[i], bits);
    CHECK_EQ(edu_read(EDU_REG_IRQ_STATUS), 0, "edu irq status after the ack");
    CHECK(!(pci_read16(edu, PCI_STATUS) & PCI_STATUS_INTERRUPT),
          "config status: interrupt status bit clear after the ack and EOI");
    CHECK_EQ(pic_read_isr(), 0, "nothing left in service");
}

int main(void) {
    puts("eoitest: the guest's EOI resamples a projected device's level-triggered INTx");
    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);
    pci_enumerate();
    CHECK_EQ(pci_assign_resources(), 0, "pci_assign_resources");
    edu = pci_find(EDU_VENDOR_ID, EDU_DEVICE_ID);
    CHECK(edu != 0, "edu (%04x:%04x) not found on bus 0", EDU_VENDOR_ID, EDU_DEVICE_ID);
    if (!edu) return checks_finish();
    edu_mmio = (uintptr_t)edu->bars[0].base;
    edu_line = pci_intx_line(edu->dev, edu->irq_pin);
    printf("edu at %02x:%02x.%u, INTx on PIC line %u (level)\n", edu->bus, edu->dev, edu->fn,
           edu_line);
    irq_register(pic_vector(edu_line), on_edu_intx);
    pic_unmask(edu_line);

    unsigned redeliver = (unsigned)cmdline_int("redeliver", 3);
    printf("-- EOI without acknowledging: delivered again, %u times in all\n", redeliver);
    raise_and_count(0x11, redeliver);
    printf("   %u deliveries\n", deliveries);

    puts("-- acknowledged before the EOI: delivered once");
    raise_and_count(0x22, 1);

    puts("-- the line stays quiet afterwards");
    deliveries = 0;
    settle();
    CHECK_EQ(deliveries, 0, "deliveries with nothing raised");

    puts("-- two causes acknowledged one per interrupt: delivered twice");
    deliveries = 0;
    ack_on = 1;
    ack_lowest_only = true;
    edu_write(EDU_REG_IRQ_RAISE, 0x6);
    CHECK(wait_for(2), "the cause left after the first ack is delivered after the EOI");
    settle();
    ack_lowest_only = false;
    CHECK_EQ(deliveries, 2, "deliveries for two causes");
    CHECK_EQ(status_seen[0], 0x6, "first delivery: both causes");
    CHECK_EQ(status_seen[1], 0x4, "second delivery: the one left");
    CHECK_EQ(edu_read(EDU_REG_IRQ_STATUS), 0, "edu irq status after both acks");

    cli();
    return checks_finish();
}
