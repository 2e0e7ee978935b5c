/* PCI end to end: enumerates bus 0 through configuration mechanism #1, sizes and assigns
 * BARs as a BIOS would, prints an lspci-like listing, then drives the projected devices:
 *
 *   - the i440FX host bridge at 00:00.0 (8086:1237); absent slots read 0xffff;
 *   - QEMU's edu device (1234:11e8, required): id, liveness, factorial, DMA both ways,
 *     INTx through the PIC (routed line, level-triggered), MSI through the local APIC,
 *     factorial and DMA completion interrupts, BAR relocation, memory decode off/on;
 *   - potemkin's multibar test model (optional; skipped with a message when absent): I/O,
 *     MEM32 and MEM64 BARs, the expansion ROM, MSI-X.
 *
 * Command line (optional): edu_dma=N, the bytes of the DMA round trip (default and at most
 * 4096; QEMU 7.2's own edu, passed through by VFIO, aborts on a 4096-byte DMA).
 *
 * Waiting for an interrupt spins with interrupts enabled for a bounded number of iterations
 * (never hlt: a lost interrupt would end the VM instead of failing a check).
 * Exit 0 iff every check passed. */
#include <potemkin/edu.h>
#include <potemkin/runtime.h>

#include "pcitest.h"

#define WAIT_SPINS 5000000u  /* for something that should arrive */
#define SETTLE_SPINS 100000u /* for something that should not */

static struct pci_dev* edu;
static uintptr_t edu_mmio;
static unsigned edu_line;

static volatile unsigned intx_count, msi_count;
static volatile uint32_t last_irq_status;

/* ---- helpers -------------------------------------------------------------------------- */

bool wait_for(volatile unsigned* counter, unsigned target) {
    sti();
    for (uint32_t i = 0; i < WAIT_SPINS && *counter < target; i++) cpu_relax();
    cli();
    return *counter >= target;
}

void settle(void) {
    sti();
    for (uint32_t i = 0; i < SETTLE_SPINS; i++) cpu_relax();
    cli();
}

static uint32_t edu_read(unsigned reg) {
    return mmio_read32(edu_mmio + reg);
}
static void edu_write(unsigned reg, uint32_t v) {
    mmio_write32(edu_mmio + reg, v);
}

/* Acknowledges whatever the device raised; returns it. */
static uint32_t edu_take_irq(void) {
    uint32_t st = edu_read(EDU_REG_IRQ_STATUS);
    edu_write(EDU_REG_IRQ_ACK, st);
    last_irq_status = st;
    return st;
}

static void on_edu_intx(struct int_frame* f) {
    (void)f;
    edu_take_irq();
    intx_count++;
    pic_eoi(edu_line); /* after the ack: the level line has dropped, no re-trigger */
}

static void on_edu_msi(struct int_frame* f) {
    (void)f;
    edu_take_irq();
    msi_count++;
    lapic_eoi();
}

static bool wait_not_computing(void) {
    for (uint32_t i = 0; i < 1000000u; i++)
        if (!(edu_read(EDU_REG_STATUS) & EDU_STATUS_COMPUTING)) return true;
    return false;
}

static uint32_t edu_factorial(uint32_t n) {
    edu_write(EDU_REG_FACTORIAL, n);
    CHECK(wait_not_computing(), "factorial of %u never finished", n);
    return edu_read(EDU_REG_FACTORIAL);
}

static bool edu_dma(uint32_t src, uint32_t dst, uint32_t count, uint32_t cmd) {
    edu_write(EDU_REG_DMA_SRC, src);
    edu_write(EDU_REG_DMA_DST, dst);
    edu_write(EDU_REG_DMA_COUNT, count);
    edu_write(EDU_REG_DMA_CMD, cmd | EDU_DMA_START);
    /* QEMU's own edu (passed through) finishes a DMA 100 ms later by its clock; with its BAR
     * mapped into the guest a read takes ~0.1 us, so the bound is generous. */
    for (uint32_t i = 0; i < 50000000u; i++)
        if (!(edu_read(EDU_REG_DMA_CMD) & EDU_DMA_START)) return true;
    return false;
}

/* ---- bus-level checks ----------------------------------------------------------------- */

static void test_enumeration(void) {
    puts("-- enumerating bus 0 (configuration mechanism #1)");
    unsigned n = pci_enumerate();
    printf("found %u function(s)\n", n);
    CHECK(n >= 2, "expected the host bridge and edu at least, found %u functions", n);

    puts("-- host bridge at 00:00.0");
    CHECK_EQ(pci_cfg_read16(0, 0, 0, PCI_VENDOR_ID), 0x8086, "00:00.0 vendor");
    CHECK_EQ(pci_cfg_read16(0, 0, 0, PCI_DEVICE_ID), 0x1237, "00:00.0 device (i440FX)");
    CHECK_EQ(pci_cfg_read32(0, 0, 0, PCI_VENDOR_ID), 0x12378086u, "00:00.0 dword 0");
    CHECK_EQ(pci_cfg_read8(0, 0, 0, 0x0b), 0x06, "00:00.0 base class (bridge)");
    CHECK_EQ(pci_cfg_read8(0, 0, 0, 0x0a), 0x00, "00:00.0 subclass (host bridge)");
    CHECK(pci_find_slot(0, 0) && pci_find_slot(0, 0)->vendor == 0x8086,
          "enumeration did not list 00:00.0");

    puts("-- absent slots read all-ones");
    unsigned absent = 0;
    for (unsigned dev = 0; dev < 32; dev++) {
        if (pci_find_slot(dev, 0)) continue;
        absent++;
        CHECK_EQ(pci_cfg_read16(0, dev, 0, PCI_VENDOR_ID), 0xffff, "absent slot vendor ID");
        CHECK_EQ(pci_cfg_read32(0, dev, 0, PCI_VENDOR_ID), 0xffffffffu, "absent slot dword 0");
        CHECK_EQ(pci_cfg_read8(0, dev, 0, PCI_HEADER_TYPE), 0xff, "absent slot header type");
    }
    printf("%u empty slot(s) read 0xffff\n", absent);
    CHECK(absent >= 20, "only %u empty slots", absent);
    /* writes to an absent function go nowhere */
    pci_cfg_write32(0, 31, 0, PCI_BAR0, 0x12345678u);
    if (!pci_find_slot(31, 0))
        CHECK_EQ(pci_cfg_read32(0, 31, 0, PCI_BAR0), 0xffffffffu, "absent slot after a write");
    /* a bus other than 0 has nothing */
    CHECK_EQ(pci_cfg_read16(1, 0, 0, PCI_VENDOR_ID), 0xffff, "bus 1 slot 0 vendor ID");
    /* the address register reads back what was written */
    outl(PCI_CONFIG_ADDRESS, 0x80001808u);
    CHECK_EQ(inl(PCI_CONFIG_ADDRESS), 0x80001808u, "0xcf8 reads back");
}

static void test_edu_header(void) {
    puts("-- edu header, BAR sizing, capabilities");
    CHECK_EQ(edu->class >> 8, 0x00ff, "edu class (00ff)");
    CHECK(edu->header_type == 0, "edu header type 0x%02x", edu->header_type);
    CHECK_EQ(pci_cfg_read16(0, edu->dev, 1, PCI_VENDOR_ID), 0xffff,
             "function 1 of the single-function edu is absent");
    CHECK_EQ(edu->bars[0].size, EDU_BAR0_SIZE, "edu BAR0 size");
    CHECK(!edu->bars[0].is_io && !edu->bars[0].is_64, "edu BAR0 is mem32 (%s)",
          pci_bar_kind(edu, 0));
    for (unsigned b = 1; b < 6; b++)
        CHECK(edu->bars[b].size == 0, "edu BAR%u implemented (size 0x%llx)", b,
              (unsigned long long)edu->bars[b].size);
    CHECK_EQ(edu->irq_pin, 1, "edu interrupt pin (INTA)");
    CHECK(pci_read16(edu, PCI_STATUS) & PCI_STATUS_CAP_LIST, "edu status: capabilities list");
    unsigned msi = pci_cap_find(edu, PCI_CAP_ID_MSI);
    CHECK(msi >= 0x40, "edu MSI capability at 0x%x", msi);
    if (msi) {
        uint16_t flags = pci_read16(edu, msi + PCI_MSI_FLAGS);
        printf("edu MSI capability at 0x%02x, control 0x%04x (%s-bit)\n", msi, flags,
               flags & PCI_MSI_FLAGS_64BIT ? "64" : "32");
        CHECK_EQ((flags >> 1) & 7, 0, "edu MSI multiple message capable (1 vector)");
        CHECK_EQ(flags & PCI_MSI_FLAGS_ENABLE, 0, "edu MSI disabled at reset");
    }
    /* sizing left BAR0 as it was (unassigned) */
    CHECK_EQ(pci_read32(edu, PCI_BAR0) & ~0xfu, 0, "edu BAR0 after sizing");
}

static void test_assignment(void) {
    puts("-- assigning resources (memory from 0xc0000000, I/O from 0xc000)");
    CHECK_EQ(pci_assign_resources(), 0, "pci_assign_resources");
    puts("-- listing");
    pci_print_all();

    edu_mmio = (uintptr_t)edu->bars[0].base;
    CHECK(edu_mmio >= PCI_MMIO_WINDOW_BASE && (edu_mmio & (EDU_BAR0_SIZE - 1)) == 0,
          "edu BAR0 at 0x%08x", (unsigned)edu_mmio);
    CHECK_EQ(pci_read32(edu, PCI_BAR0) & ~0xfu, edu_mmio, "edu BAR0 register");
    uint16_t cmd = pci_command(edu);
    CHECK((cmd & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) ==
              (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER),
          "edu command 0x%04x: memory decode and bus master", cmd);
    edu_line = pci_intx_line(edu->dev, edu->irq_pin);
    CHECK_EQ(pci_read8(edu, PCI_INTERRUPT_LINE), edu_line, "edu interrupt line register");
    CHECK((inb(edu_line < 8 ? 0x4d0 : 0x4d1) >> (edu_line & 7)) & 1,
          "ELCR: line %u level-triggered", edu_line);
    /* every assigned range is naturally aligned and nothing overlaps */
    for (unsigned i = 0; i < pci_dev_count(); i++) {
        const struct pci_dev* a = pci_dev_get(i);
        for (unsigned b = 0; b < 6; b++) {
            const struct pci_bar* r = &a->bars[b];
            if (!r->size) continue;
            CHECK(r->base && !(r->base & (r->size - 1)), "%02x:%02x.%u BAR%u at 0x%llx size 0x%llx",
                  a->bus, a->dev, a->fn, b, (unsigned long long)r->base,
                  (unsigned long long)r->size);
        }
    }
}

/* ---- edu ------------------------------------------------------------------------------ */

static void test_edu_registers(void) {
    puts("-- edu registers: id, liveness, factorial");
    CHECK_EQ(edu_read(EDU_REG_ID), EDU_ID_VALUE, "edu id register");
    static const uint32_t values[] = {0x12345678u, 0, 0xffffffffu, 0xa5a5a5a5u};
    for (unsigned i = 0; i < sizeof values / sizeof values[0]; i++) {
        edu_write(EDU_REG_LIVENESS, values[i]);
        CHECK_EQ(edu_read(EDU_REG_LIVENESS), ~values[i], "edu liveness reads ~value");
    }
    uint32_t f5 = edu_factorial(5), f10 = edu_factorial(10);
    printf("edu: 5! = %u, 10! = %u\n", f5, f10);
    CHECK_EQ(f5, 120, "edu 5!");
    CHECK_EQ(f10, 3628800, "edu 10!");
    CHECK_EQ(edu_read(EDU_REG_IRQ_STATUS), 0, "no interrupt raised without status bit 7");
}

static void test_edu_dma(void) {
    unsigned len = cmdline_uint("edu_dma", PAGE_SIZE);
    if (len == 0 || len > PAGE_SIZE) len = PAGE_SIZE;
    printf("-- edu DMA: RAM -> EDU buffer -> RAM (%u bytes)\n", len);
    uint8_t* src = page_alloc(1);
    uint8_t* dst = page_alloc(1);
    CHECK(src && dst, "page_alloc for DMA buffers");
    if (!src || !dst) return;
    for (unsigned i = 0; i < PAGE_SIZE; i++) src[i] = (uint8_t)(i * 7 + (i >> 8) + 0x3c);
    memset(dst, 0xee, PAGE_SIZE);

    CHECK(edu_dma((uint32_t)virt_to_phys(src), EDU_DMA_BUFFER, len, 0),
          "DMA RAM -> EDU did not complete");
    CHECK(edu_dma(EDU_DMA_BUFFER, (uint32_t)virt_to_phys(dst), len, EDU_DMA_TO_RAM),
          "DMA EDU -> RAM did not complete");
    int diff = memcmp(src, dst, len);
    CHECK(diff == 0, "DMA round trip differs (first bytes %02x %02x %02x %02x)", dst[0], dst[1],
          dst[2], dst[3]);
    if (diff == 0) printf("edu: %u bytes went to the device and came back intact\n", len);
    for (unsigned i = len; i < PAGE_SIZE; i++)
        if (dst[i] != 0xee) {
            CHECK(0, "the DMA of %u bytes wrote byte %u", len, i);
            break;
        }

    /* a partial transfer into the middle of the page leaves the rest alone */
    memset(dst, 0, PAGE_SIZE);
    CHECK(edu_dma(EDU_DMA_BUFFER + 16, (uint32_t)virt_to_phys(dst) + 256, 64, EDU_DMA_TO_RAM),
          "partial DMA did not complete");
    CHECK(memcmp(dst + 256, src + 16, 64) == 0, "partial DMA contents");
    CHECK(dst[255] == 0 && dst[256 + 64] == 0, "partial DMA wrote outside its range");
}

static void expect_irq(volatile unsigned* counter, const char* what, uint32_t expected_status) {
    unsigned before = *counter;
    bool ok = wait_for(counter, before + 1);
    CHECK(ok, "%s: interrupt not delivered", what);
    if (!ok) {
        edu_take_irq(); /* leave the device quiet for what follows */
        return;
    }
    settle();
    CHECK(*counter == before + 1, "%s: handler ran %u times, expected once", what,
          *counter - before);
    CHECK(last_irq_status == expected_status, "%s: irq status 0x%x, expected 0x%x", what,
          last_irq_status, expected_status);
    CHECK_EQ(edu_read(EDU_REG_IRQ_STATUS), 0, "irq status after the handler's ack");
}

static void irq_sources(volatile unsigned* counter, const char* mode) {
    char what[64];
    snprintf(what, sizeof what, "%s raise 0x2a", mode);
    edu_write(EDU_REG_IRQ_RAISE, 0x2a);
    expect_irq(counter, what, 0x2a);

    snprintf(what, sizeof what, "%s factorial", mode);
    edu_write(EDU_REG_STATUS, EDU_STATUS_IRQ_FACT);
    edu_write(EDU_REG_FACTORIAL, 6);
    expect_irq(counter, what, EDU_IRQ_FACT);
    CHECK(wait_not_computing() && edu_read(EDU_REG_FACTORIAL) == 720, "%s: 6! = %u", mode,
          edu_read(EDU_REG_FACTORIAL));
    edu_write(EDU_REG_STATUS, 0);

    snprintf(what, sizeof what, "%s DMA done", mode);
    uint8_t* buf = page_alloc(1);
    if (buf) {
        CHECK(
            edu_dma(EDU_DMA_BUFFER, (uint32_t)virt_to_phys(buf), 128, EDU_DMA_TO_RAM | EDU_DMA_IRQ),
            "%s: DMA did not complete", mode);
        expect_irq(counter, what, EDU_IRQ_DMA);
    }
}

static void test_edu_intx(void) {
    printf("-- edu INTx: pin A of slot %u -> PIRQ%c -> PIC line %u (vector 0x%x)\n", edu->dev,
           'A' + (edu->dev + edu->irq_pin - 1) % 4, edu_line, pic_vector(edu_line));
    irq_register(pic_vector(edu_line), on_edu_intx);
    pic_unmask(edu_line);

    /* with IF=0 the request waits; the function reports it in its status register */
    edu_write(EDU_REG_IRQ_RAISE, 0x2a);
    CHECK(pci_read16(edu, PCI_STATUS) & PCI_STATUS_INTERRUPT,
          "config status: interrupt status bit while INTx asserted");
    expect_irq(&intx_count, "INTx raise 0x2a", 0x2a);
    CHECK(!(pci_read16(edu, PCI_STATUS) & PCI_STATUS_INTERRUPT),
          "config status: interrupt status bit clear after the ack");

    irq_sources(&intx_count, "INTx");

    puts("-- edu INTx disable (command bit 10) holds the interrupt back");
    pci_command_update(edu, PCI_COMMAND_INTX_DISABLE, 0);
    unsigned before = intx_count;
    edu_write(EDU_REG_IRQ_RAISE, 0x5);
    settle();
    CHECK_EQ(intx_count, before, "INTx delivered while disabled in the command register");
    pci_command_update(edu, 0, PCI_COMMAND_INTX_DISABLE);
    expect_irq(&intx_count, "INTx after re-enabling", 0x5);
}

static void test_edu_msi(void) {
    printf("-- edu MSI: vector 0x%x to LAPIC %u\n", MSI_VECTOR, lapic_id());
    irq_register(MSI_VECTOR, on_edu_msi);
    lapic_enable(SPURIOUS_VECTOR);
    lapic_set_tpr(0);
    CHECK_EQ(pci_msi_enable(edu, msi_address(lapic_id()), (uint16_t)msi_data(MSI_VECTOR)), 0,
             "pci_msi_enable");
    unsigned cap = pci_cap_find(edu, PCI_CAP_ID_MSI);
    if (cap)
        CHECK(pci_read16(edu, cap + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE,
              "MSI enable bit reads back");
    unsigned intx_before = intx_count;
    irq_sources(&msi_count, "MSI");
    CHECK_EQ(intx_count, intx_before, "no INTx while MSI is enabled");

    puts("-- edu MSI disabled again: back to INTx");
    pci_msi_disable(edu);
    unsigned msi_before = msi_count;
    edu_write(EDU_REG_IRQ_RAISE, 0x77);
    expect_irq(&intx_count, "INTx after MSI disable", 0x77);
    CHECK_EQ(msi_count, msi_before, "no MSI after disabling it");
}

static void test_edu_relocation(void) {
    uint32_t old = (uint32_t)edu->bars[0].base;
    uint32_t to = pci_alloc_mmio(EDU_BAR0_SIZE);
    printf("-- edu BAR0 relocation 0x%08x -> 0x%08x\n", old, to);
    CHECK(to != 0, "no room to relocate edu");
    if (!to) return;
    pci_set_bar(edu, 0, to);
    CHECK_EQ(pci_read32(edu, PCI_BAR0) & ~0xfu, to, "edu BAR0 register after relocation");
    CHECK(pci_command(edu) & PCI_COMMAND_MEMORY, "memory decode back on after relocation");
    CHECK_EQ(mmio_read32(to + EDU_REG_ID), EDU_ID_VALUE, "edu id at the new address");
    CHECK_EQ(mmio_read32(old + EDU_REG_ID), 0xffffffffu, "old address reads all-ones");
    edu_mmio = to;
    edu_write(EDU_REG_LIVENESS, 0x0badf00du);
    CHECK_EQ(edu_read(EDU_REG_LIVENESS), ~0x0badf00du, "edu liveness at the new address");
    CHECK_EQ(edu_factorial(7), 5040, "edu 7! at the new address");

    puts("-- edu memory decode off: BAR reads all-ones");
    pci_command_update(edu, 0, PCI_COMMAND_MEMORY);
    CHECK_EQ(edu_read(EDU_REG_ID), 0xffffffffu, "edu id with memory decode off");
    edu_write(EDU_REG_LIVENESS, 1); /* goes nowhere */
    pci_command_update(edu, PCI_COMMAND_MEMORY, 0);
    CHECK_EQ(edu_read(EDU_REG_ID), EDU_ID_VALUE, "edu id with memory decode back on");
    CHECK_EQ(edu_read(EDU_REG_LIVENESS), ~0x0badf00du,
             "a write while decode was off did not reach the device");
}

int main(void) {
    puts("pcitest: PCI enumeration, resource assignment and projected devices");
    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);

    test_enumeration();
    edu = pci_find(EDU_VENDOR_ID, EDU_DEVICE_ID);
    CHECK(edu != 0, "edu (%04x:%04x) not found on bus 0", EDU_VENDOR_ID, EDU_DEVICE_ID);
    if (!edu) {
        pci_print_all();
        return checks_finish();
    }
    printf("edu at %02x:%02x.%u\n", edu->bus, edu->dev, edu->fn);
    test_edu_header();
    test_assignment();
    test_edu_registers();
    test_edu_dma();
    test_edu_intx();
    test_edu_msi();
    test_edu_relocation();
    test_multibar();

    cli();
    return checks_finish();
}
