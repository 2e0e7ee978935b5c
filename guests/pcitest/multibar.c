/* pcitest's checks of potemkin's multibar test model (src/models/multibar.hpp): one BAR of
 * every kind (I/O, MEM32, MEM64 prefetchable), an expansion ROM, INTx, MSI with per-vector
 * masking and MSI-X with its table and PBA in BAR1. Skipped when the device is absent. */
#include "pcitest.h"

#define MB_VENDOR_ID 0x1b36
#define MB_DEVICE_ID 0xff01
#define MB_ID 0x7261626du /* "mbar" */
#define MB_VERSION 0x00010000u
#define MB_SEED 0x5eed0000u /* BAR2 dword at offset X reads X ^ seed until written */

/* BAR0 (I/O) */
#define MB_IO_ID 0x00
#define MB_IO_VERSION 0x04
#define MB_IO_SCRATCH 0x08 /* 0x08-0x1f */
/* BAR1 (MEM32) */
#define MB_REG_ID 0x000
#define MB_REG_DOORBELL 0x004
#define MB_REG_IRQ_STATUS 0x008
#define MB_REG_IRQ_ACK 0x00c
#define MB_REG_DOORBELL_COUNT 0x010
#define MB_SCRATCH 0x100 /* 0x100-0x7ff */
#define MB_MSIX_TABLE 0x800
#define MB_MSIX_PBA 0xc00
#define MB_VECTORS 4

#define MB_MSI_VECTOR 0x68 /* 0x68-0x6b with 4 vectors */

static struct pci_dev* mb;
static uint16_t io;
static uintptr_t mem, mem64;
static unsigned mb_line;
static volatile unsigned intx_count, msi_count[MB_VECTORS], msix_count[MB_VECTORS];
static volatile uint32_t last_status;

static void on_intx(struct int_frame* f) {
    (void)f;
    uint32_t st = mmio_read32(mem + MB_REG_IRQ_STATUS);
    mmio_write32(mem + MB_REG_IRQ_ACK, st);
    last_status = st;
    intx_count++;
    pic_eoi(mb_line);
}

static void on_msi(struct int_frame* f) {
    unsigned i = f->vector - MB_MSI_VECTOR;
    if (i < MB_VECTORS) msi_count[i]++;
    lapic_eoi();
}

static void on_msix(struct int_frame* f) {
    unsigned i = f->vector - MSIX_VECTOR_BASE;
    if (i < MB_VECTORS) msix_count[i]++;
    lapic_eoi();
}

static void ring(unsigned n) {
    mmio_write32(mem + MB_REG_DOORBELL, n);
}

static void test_header(void) {
    puts("-- multibar: header and BAR sizing");
    CHECK_EQ(mb->class >> 8, 0x00ff, "multibar class");
    CHECK_EQ(mb->irq_pin, 1, "multibar interrupt pin");
    CHECK(mb->bars[0].is_io && mb->bars[0].size == 32, "BAR0: %s size 0x%llx, expected io 0x20",
          pci_bar_kind(mb, 0), (unsigned long long)mb->bars[0].size);
    CHECK(!mb->bars[1].is_io && !mb->bars[1].is_64 && !mb->bars[1].prefetch &&
              mb->bars[1].size == 0x1000,
          "BAR1: %s size 0x%llx, expected mem32 0x1000", pci_bar_kind(mb, 1),
          (unsigned long long)mb->bars[1].size);
    CHECK(!mb->bars[2].is_io && mb->bars[2].is_64 && mb->bars[2].prefetch &&
              mb->bars[2].size == 0x100000,
          "BAR2: %s size 0x%llx, expected mem64 pf 0x100000", pci_bar_kind(mb, 2),
          (unsigned long long)mb->bars[2].size);
    CHECK(mb->bars[3].size == 0 && mb->bars[4].size == 0 && mb->bars[5].size == 0,
          "BAR3-5 should be the upper half of BAR2 and unimplemented");
    CHECK_EQ(mb->rom_size, 0x1000, "expansion ROM size");
    CHECK_EQ(pci_read32(mb, PCI_BAR0 + 12), 0, "BAR3 (upper half of BAR2) programmed to 0");

    unsigned msi = pci_cap_find(mb, PCI_CAP_ID_MSI), msix = pci_cap_find(mb, PCI_CAP_ID_MSIX);
    CHECK(msi != 0, "multibar MSI capability");
    CHECK(msix != 0, "multibar MSI-X capability");
    if (msi) {
        uint16_t fl = pci_read16(mb, msi + PCI_MSI_FLAGS);
        CHECK(fl & PCI_MSI_FLAGS_64BIT, "MSI 64-bit (control 0x%04x)", fl);
        CHECK(fl & PCI_MSI_FLAGS_MASKBIT, "MSI per-vector masking (control 0x%04x)", fl);
        CHECK_EQ((fl >> 1) & 7, 2, "MSI multiple message capable (4 vectors)");
    }
    if (msix) {
        CHECK_EQ((pci_read16(mb, msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE) + 1, MB_VECTORS,
                 "MSI-X table size");
        CHECK_EQ(pci_read32(mb, msix + PCI_MSIX_TABLE), MB_MSIX_TABLE | 1,
                 "MSI-X table BIR/offset");
        CHECK_EQ(pci_read32(mb, msix + PCI_MSIX_PBA), MB_MSIX_PBA | 1, "MSI-X PBA BIR/offset");
    }
    uint16_t cmd = pci_command(mb);
    CHECK((cmd & 7) == 7, "command 0x%04x: I/O, memory, bus master enabled", cmd);
}

static void test_bars(void) {
    printf("-- multibar: I/O BAR at 0x%04x\n", io);
    CHECK_EQ(inl(io + MB_IO_ID), MB_ID, "I/O id (inl)");
    CHECK_EQ(inw(io + MB_IO_ID + 2), MB_ID >> 16, "I/O id (inw)");
    CHECK_EQ(inb(io + MB_IO_ID), MB_ID & 0xff, "I/O id (inb)");
    CHECK_EQ(inl(io + MB_IO_VERSION), MB_VERSION, "I/O version");
    outl(io + MB_IO_ID, 0);
    CHECK_EQ(inl(io + MB_IO_ID), MB_ID, "I/O id is read-only");
    outl(io + MB_IO_SCRATCH, 0x11223344u);
    outw(io + 0x1c, 0xbeef);
    outb(io + 0x1f, 0x5a);
    CHECK_EQ(inl(io + MB_IO_SCRATCH), 0x11223344u, "I/O scratch dword");
    CHECK_EQ(inl(io + 0x1c), 0x5a00beefu, "I/O scratch word + byte");
    CHECK_EQ(inb(io + MB_IO_SCRATCH + 1), 0x33, "I/O scratch byte read");

    puts("-- multibar: I/O decode off reads all-ones");
    pci_command_update(mb, 0, PCI_COMMAND_IO);
    CHECK_EQ(inl(io + MB_IO_ID), 0xffffffffu, "I/O id with I/O decode off");
    pci_command_update(mb, PCI_COMMAND_IO, 0);
    CHECK_EQ(inl(io + MB_IO_ID), MB_ID, "I/O id with I/O decode back on");

    printf("-- multibar: MEM32 BAR at 0x%08x\n", (unsigned)mem);
    CHECK_EQ(mmio_read32(mem + MB_REG_ID), MB_ID, "MEM32 id");
    mmio_write64(mem + MB_SCRATCH, 0x0102030405060708ull);
    mmio_write8(mem + 0x7ff, 0x99);
    CHECK_EQ(mmio_read64(mem + MB_SCRATCH), 0x0102030405060708ull, "MEM32 scratch 64-bit");
    CHECK_EQ(mmio_read16(mem + MB_SCRATCH + 2), 0x0506, "MEM32 scratch 16-bit");
    CHECK_EQ(mmio_read8(mem + 0x7ff), 0x99, "MEM32 scratch last byte");
    CHECK_EQ(mmio_read32(mem + 0x400), 0, "MEM32 untouched scratch");

    printf("-- multibar: MEM64 BAR at 0x%08x (high dword %08x)\n", (unsigned)mem64,
           pci_read32(mb, PCI_BAR0 + 12));
    static const uint32_t offs[] = {0, 4, 0x1000, 0x80000, 0xffffc};
    for (unsigned i = 0; i < sizeof offs / sizeof offs[0]; i++)
        CHECK(mmio_read32(mem64 + offs[i]) == (offs[i] ^ MB_SEED),
              "MEM64 pattern at 0x%x: 0x%08x, expected 0x%08x", offs[i],
              mmio_read32(mem64 + offs[i]), offs[i] ^ MB_SEED);
    mmio_write32(mem64 + 0x10, 0xcafef00du);
    CHECK_EQ(mmio_read32(mem64 + 0x10), 0xcafef00du, "MEM64 write/read");
    CHECK_EQ(mmio_read8(mem64 + 0x13), 0xca, "MEM64 byte read");

    uint32_t to = pci_alloc_mmio(mb->bars[2].size);
    printf("-- multibar: MEM64 BAR relocation 0x%08x -> 0x%08x (both dwords rewritten)\n",
           (unsigned)mem64, to);
    if (to) {
        uintptr_t old = mem64;
        pci_set_bar(mb, 2, to);
        mem64 = to;
        CHECK_EQ(pci_read32(mb, PCI_BAR0 + 8) & ~0xfu, to, "BAR2 low dword after relocation");
        CHECK_EQ(pci_read32(mb, PCI_BAR0 + 12), 0, "BAR3 high dword after relocation");
        CHECK_EQ(mmio_read32(mem64 + 0x10), 0xcafef00du, "MEM64 contents at the new address");
        CHECK_EQ(mmio_read32(mem64 + 0x80000), 0x80000u ^ MB_SEED,
                 "MEM64 pattern at the new address");
        CHECK_EQ(mmio_read32(old + 0x10), 0xffffffffu, "old MEM64 address reads all-ones");
    }
}

static void test_rom(void) {
    printf("-- multibar: expansion ROM at 0x%08x\n", mb->rom_base);
    uintptr_t rom = mb->rom_base;
    CHECK(rom != 0, "ROM not assigned");
    if (!rom) return;
    CHECK_EQ(mmio_read32(rom), 0xffffffffu, "ROM disabled reads all-ones");
    pci_rom_enable(mb, true);
    CHECK(pci_read32(mb, PCI_ROM_ADDRESS) & PCI_ROM_ENABLE, "ROM enable bit reads back");
    uint8_t b0 = mmio_read8(rom), b1 = mmio_read8(rom + 1), b2 = mmio_read8(rom + 2);
    CHECK(b0 == 0x55 && b1 == 0xaa, "ROM signature %02x %02x, expected 55 aa", b0, b1);
    CHECK_EQ(b2, 8, "ROM size byte (512-byte units)");
    char s[32];
    for (unsigned i = 0; i < sizeof s - 1; i++) s[i] = (char)mmio_read8(rom + 0x20 + i);
    s[sizeof s - 1] = 0;
    CHECK(strncmp(s, "potemkin multibar option ROM", 28) == 0, "ROM string \"%s\"", s);
    printf("ROM: %02x %02x, %u x 512 bytes, \"%s\"\n", b0, b1, b2, s);
    mmio_write32(rom, 0);
    CHECK_EQ(mmio_read16(rom), 0xaa55, "ROM is read-only");
    pci_command_update(mb, 0, PCI_COMMAND_MEMORY);
    CHECK_EQ(mmio_read32(rom), 0xffffffffu, "enabled ROM with memory decode off reads all-ones");
    pci_command_update(mb, PCI_COMMAND_MEMORY, 0);
    pci_rom_enable(mb, false);
    CHECK_EQ(mmio_read32(rom), 0xffffffffu, "ROM disabled again reads all-ones");
}

static void expect(volatile unsigned* counter, unsigned before, const char* what) {
    CHECK(wait_for(counter, before + 1), "%s: not delivered", what);
    settle();
    CHECK(*counter == before + 1, "%s: delivered %u times, expected once", what, *counter - before);
}

static void test_intx(void) {
    mb_line = pci_intx_line(mb->dev, mb->irq_pin);
    printf("-- multibar: INTx on PIC line %u, doorbell 3\n", mb_line);
    CHECK_EQ(pci_read8(mb, PCI_INTERRUPT_LINE), mb_line, "interrupt line register");
    irq_handler_t prev = irq_register(pic_vector(mb_line), on_intx);
    pic_unmask(mb_line);
    uint32_t doorbells = mmio_read32(mem + MB_REG_DOORBELL_COUNT);
    ring(3);
    expect(&intx_count, 0, "multibar INTx doorbell 3");
    CHECK_EQ(last_status, 1u << 3, "multibar irq status in the handler");
    CHECK_EQ(mmio_read32(mem + MB_REG_IRQ_STATUS), 0, "multibar irq status after ack");
    CHECK_EQ(mmio_read32(mem + MB_REG_DOORBELL_COUNT), doorbells + 1, "doorbell count");
    irq_register(pic_vector(mb_line), prev);
    if (!prev) pic_mask(mb_line);
}

static void test_msi(void) {
    printf("-- multibar: MSI vector 0x%x, per-vector mask\n", MB_MSI_VECTOR);
    for (unsigned i = 0; i < MB_VECTORS; i++) irq_register(MB_MSI_VECTOR + i, on_msi);
    CHECK_EQ(pci_msi_enable(mb, msi_address(lapic_id()), (uint16_t)msi_data(MB_MSI_VECTOR)), 0,
             "pci_msi_enable");
    unsigned cap = pci_cap_find(mb, PCI_CAP_ID_MSI);
    unsigned intx_before = intx_count;
    ring(0);
    expect(&msi_count[0], 0, "multibar MSI vector 0");

    /* masked: held as pending; delivered on unmask */
    pci_write32(mb, cap + PCI_MSI_MASK_64, 1);
    ring(0);
    settle();
    CHECK_EQ(msi_count[0], 1, "masked MSI not delivered");
    CHECK_EQ(pci_read32(mb, cap + PCI_MSI_MASK_64 + 4) & 1, 1, "MSI pending bit while masked");
    pci_write32(mb, cap + PCI_MSI_MASK_64, 0);
    expect(&msi_count[0], 1, "multibar MSI after unmask");
    CHECK_EQ(pci_read32(mb, cap + PCI_MSI_MASK_64 + 4) & 1, 0, "MSI pending bit after delivery");
    CHECK_EQ(intx_count, intx_before, "no INTx while MSI is enabled");
    pci_msi_disable(mb);
}

static void test_msix(void) {
    puts("-- multibar: MSI-X, 4 vectors through the table in BAR1");
    for (unsigned i = 0; i < MB_VECTORS; i++) irq_register(MSIX_VECTOR_BASE + i, on_msix);
    int n = pci_msix_enable(mb);
    CHECK_EQ(n, MB_VECTORS, "pci_msix_enable table size");
    if (n != MB_VECTORS) return;
    CHECK_EQ(pci_msix_table(mb), mem + MB_MSIX_TABLE, "MSI-X table address");
    CHECK_EQ(pci_msix_pba(mb), mem + MB_MSIX_PBA, "MSI-X PBA address");
    for (unsigned i = 0; i < MB_VECTORS; i++) {
        uintptr_t e = pci_msix_table(mb) + i * PCI_MSIX_ENTRY_SIZE;
        CHECK_EQ(mmio_read32(e + PCI_MSIX_ENTRY_CTRL), 1, "MSI-X entry masked at reset");
        pci_msix_set_entry(mb, i, msi_address(lapic_id()), msi_data(MSIX_VECTOR_BASE + i));
        CHECK_EQ(mmio_read32(e + PCI_MSIX_ENTRY_DATA), MSIX_VECTOR_BASE + i, "MSI-X entry data");
        pci_msix_mask(mb, i, false);
    }
    /* function mask still on: the doorbell leaves a pending bit */
    ring(1);
    settle();
    CHECK_EQ(msix_count[1], 0, "MSI-X delivered under the function mask");
    CHECK(pci_msix_pending(mb, 1), "MSI-X PBA bit 1 while function-masked");
    pci_msix_function_mask(mb, false);
    expect(&msix_count[1], 0, "MSI-X vector 1 after clearing the function mask");
    CHECK(!pci_msix_pending(mb, 1), "MSI-X PBA bit 1 cleared after delivery");

    for (unsigned i = 0; i < MB_VECTORS; i++) {
        char what[40];
        snprintf(what, sizeof what, "MSI-X doorbell %u", i);
        unsigned before = msix_count[i];
        ring(i);
        expect(&msix_count[i], before, what);
    }

    /* entry mask */
    unsigned before = msix_count[2];
    pci_msix_mask(mb, 2, true);
    ring(2);
    settle();
    CHECK_EQ(msix_count[2], before, "masked MSI-X entry 2 not delivered");
    CHECK(pci_msix_pending(mb, 2), "MSI-X PBA bit 2 while masked");
    pci_msix_mask(mb, 2, false);
    expect(&msix_count[2], before, "MSI-X entry 2 after unmask");
    pci_msix_disable(mb);
}

void test_multibar(void) {
    mb = pci_find(MB_VENDOR_ID, MB_DEVICE_ID);
    if (!mb) {
        printf("-- multibar (%04x:%04x) not present: skipping multibar checks\n", MB_VENDOR_ID,
               MB_DEVICE_ID);
        return;
    }
    printf("-- multibar at %02x:%02x.%u\n", mb->bus, mb->dev, mb->fn);
    io = (uint16_t)mb->bars[0].base;
    mem = (uintptr_t)mb->bars[1].base;
    mem64 = (uintptr_t)mb->bars[2].base;
    test_header();
    if (!io || !mem || !mem64) {
        CHECK(0, "multibar BARs not assigned (io 0x%x mem 0x%x mem64 0x%x)", io, (unsigned)mem,
              (unsigned)mem64);
        return;
    }
    test_bars();
    test_rom();
    test_intx();
    test_msi();
    test_msix();
}
