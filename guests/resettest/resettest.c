/* VM reset (docs/guest-abi.md, "VM reset"): the first boot programs edu (BAR0, decode, MSI,
 * liveness and factorial registers), leaves marks in RAM, and resets the VM through the reset
 * control register 0xcf9. The boot after it sees reset_count 1 in the boot-info block, guest RAM
 * cleared and the image reloaded, edu's BAR unassigned with decode and MSI off, and edu's
 * registers back at their reset values: the device itself was reset (vfio-user: DEVICE_RESET
 * reached the server process).
 *
 * Command line (optional): loop (reset on every boot: the VMM must stop it), resets=N (reset
 * until reset_count is N, default 1). Exit 0 iff every check passed. */
#include <potemkin/edu.h>
#include <potemkin/runtime.h>

#define MARK_ADDRESS 0x00400000u /* RAM outside the image */
#define MARK_VALUE 0x5eed1e55u

static uint32_t data_mark = 7; /* .data: back to 7 when the image is reloaded */

static uintptr_t edu_mmio;
static unsigned edu_line;
static volatile unsigned deliveries;

/* Acknowledges in edu on the second delivery only: the first EOI must bring it back. */
static void on_edu_intx(struct int_frame* f) {
    (void)f;
    if (++deliveries >= 2)
        mmio_write32(edu_mmio + EDU_REG_IRQ_ACK, mmio_read32(edu_mmio + EDU_REG_IRQ_STATUS));
    pic_eoi(edu_line);
}

/* The edu function on bus 0, found without touching its registers: 0 if absent. */
static unsigned find_edu_slot(void) {
    for (unsigned dev = 1; dev < 32; dev++)
        if (pci_cfg_read32(0, dev, 0, PCI_VENDOR_ID) ==
            ((uint32_t)EDU_DEVICE_ID << 16 | EDU_VENDOR_ID))
            return dev;
    return 0;
}

static void first_boot(void) {
    pci_enumerate();
    CHECK_EQ(pci_assign_resources(), 0, "pci_assign_resources");
    struct pci_dev* edu = pci_find(EDU_VENDOR_ID, EDU_DEVICE_ID);
    CHECK(edu != 0, "edu not found");
    if (!edu) return;
    uintptr_t mmio = (uintptr_t)edu->bars[0].base;
    printf("edu at %02x:%02x.%u, BAR0 0x%x\n", edu->bus, edu->dev, edu->fn, (unsigned)mmio);
    CHECK(mmio != 0, "edu BAR0 assigned");
    mmio_write32(mmio + EDU_REG_LIVENESS, 0x12345678u);
    CHECK_EQ(mmio_read32(mmio + EDU_REG_LIVENESS), ~0x12345678u, "edu liveness");
    mmio_write32(mmio + EDU_REG_FACTORIAL, 5);
    CHECK_EQ(mmio_read32(mmio + EDU_REG_FACTORIAL), 120, "edu 5!");
    CHECK_EQ(pci_msi_enable(edu, 0xfee00000u, 0x40), 0, "MSI enabled");
    CHECK(pci_command(edu) & PCI_COMMAND_MEMORY, "memory decode on");

    *(volatile uint32_t*)MARK_ADDRESS = MARK_VALUE;
    data_mark = 42;
}

static void after_reset(void) {
    CHECK_EQ(*(volatile uint32_t*)MARK_ADDRESS, 0, "RAM outside the image is cleared");
    CHECK_EQ(data_mark, 7, "the image is reloaded (.data back to its initial value)");
    unsigned slot = find_edu_slot();
    CHECK(slot != 0, "edu not found after the reset");
    if (!slot) return;
    /* Before anything writes them: the power-on state the reset left. */
    CHECK_EQ(pci_cfg_read32(0, slot, 0, PCI_BAR0), 0, "edu BAR0 unassigned after the reset");
    CHECK_EQ(pci_cfg_read16(0, slot, 0, PCI_COMMAND), 0, "edu command register 0");
    pci_enumerate();
    struct pci_dev* edu = pci_find_slot(slot, 0);
    unsigned msi = edu ? pci_cap_find(edu, PCI_CAP_ID_MSI) : 0;
    CHECK(msi != 0, "edu MSI capability");
    if (msi)
        CHECK(!(pci_read16(edu, msi + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE),
              "MSI disabled after the reset");
    CHECK_EQ(pci_assign_resources(), 0, "pci_assign_resources after the reset");
    uintptr_t mmio = edu ? (uintptr_t)edu->bars[0].base : 0;
    CHECK(mmio != 0, "edu BAR0 assigned again");
    if (!mmio) return;
    CHECK_EQ(mmio_read32(mmio + EDU_REG_ID), EDU_ID_VALUE, "edu id after the reset");
    /* The device's own state, which only its reset (DEVICE_RESET over vfio-user) clears. */
    CHECK_EQ(mmio_read32(mmio + EDU_REG_LIVENESS), 0, "edu liveness back at its reset value");
    CHECK_EQ(mmio_read32(mmio + EDU_REG_FACTORIAL), 0, "edu factorial back at its reset value");
    mmio_write32(mmio + EDU_REG_FACTORIAL, 6);
    CHECK_EQ(mmio_read32(mmio + EDU_REG_FACTORIAL), 720, "edu works after the reset");

    /* MSI was on before the reset: the device must be back in INTx mode, with EOIs resampling
     * it (the first delivery is not acknowledged in edu, so it comes again). */
    edu_mmio = mmio;
    edu_line = pci_intx_line(edu->dev, edu->irq_pin);
    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);
    irq_register(pic_vector(edu_line), on_edu_intx);
    pic_unmask(edu_line);
    deliveries = 0;
    mmio_write32(mmio + EDU_REG_IRQ_RAISE, 0x1);
    sti();
    for (uint32_t i = 0; i < 20000000u && deliveries < 2; i++) cpu_relax();
    for (uint32_t i = 0; i < 2000000u; i++) cpu_relax();
    cli();
    CHECK_EQ(deliveries, 2, "INTx after the reset: delivered, EOId, delivered again, acked");
}

int main(void) {
    const struct potemkin_boot_info* bi = boot_info();
    unsigned resets = boot_reset_count();
    printf("resettest: boot-info version %u, reset_count %u\n", bi->version, resets);
    CHECK_EQ(bi->version, POTEMKIN_BOOT_VERSION, "boot-info version");

    if (cmdline_has("loop")) {
        puts("resetting again (loop)");
        vm_reset();
        puts("the reset did not happen");
        return 3;
    }
    unsigned wanted = (unsigned)cmdline_int("resets", 1);
    if (resets == 0)
        first_boot();
    else
        after_reset();
    if (resets < wanted) {
        if (checks_failed()) return checks_finish(); /* do not hide a failure behind a reset */
        printf("resetting the VM (reset %u of %u)\n", resets + 1, wanted);
        vm_reset();
        puts("the reset did not happen");
        return 3;
    }
    CHECK_EQ(resets, wanted, "reset_count");
    return checks_finish();
}
