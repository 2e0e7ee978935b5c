/* PCI Express configuration through ECAM (docs/guest-abi.md, "ECAM"): the guest switches the
 * runtime's configuration accesses to the ECAM window announced in the boot-info block,
 * enumerates bus 0 and assigns resources through it, then checks potemkin's multibar model
 * in its PCIe form (multibar?pcie=1, src/models/multibar.hpp):
 *
 *   - every function's first dword reads the same through ECAM and mechanism #1;
 *   - the PCI Express capability (Endpoint, Max_Payload_Size 256 supported, 8 GT/s x4);
 *   - the extended capability chain from 0x100: AER, Device Serial Number, Vendor-Specific,
 *     then the end (printed as "ext [offset] id vN" lines for the host test);
 *   - RO, RW and RW1C bits per byte: Device Control/Status, the AER masks, the VSEC's RO,
 *     RW and RW1C registers, the read-only extended headers;
 *   - a BAR moved by configuration writes through ECAM, the device answering at the new
 *     address and not at the old one;
 *   - master abort through ECAM: an empty slot, a bus the window covers but no device is on
 *     (with ecam_size of 2 MiB or more); an unaligned access arrives in aligned pieces.
 *
 * A conventional function (edu, when present) reads all-ones at 0x100: it has 256 bytes.
 * With "bench" on the command line it then times BENCH_READS dword reads of multibar's
 * vendor/device register through mechanism #1 (outl + inl) and through ECAM (one load), in
 * TSC cycles per read.
 * Exit 0 iff every check passed. */
#include <potemkin/runtime.h>

#define MB_VENDOR_ID 0x1b36
#define MB_DEVICE_ID 0xff01
#define MB_ID 0x7261626du
#define MB_SERIAL_LO 0x00000001u
#define MB_SERIAL_HI 0x1b36ff01u
#define MB_VSEC_W1C_RESET 0xa5a5a5a5u

#define PCI_CAP_ID_EXP 0x10
#define EXP_DEVCAP 0x04
#define EXP_DEVCTL 0x08
#define EXP_DEVSTA 0x0a
#define EXP_LNKCAP 0x0c
#define EXP_LNKSTA 0x12
#define EXT_AER 0x0001
#define EXT_DSN 0x0003
#define EXT_VSEC 0x000b

#define BENCH_READS_LOG2 14
#define BENCH_READS (1u << BENCH_READS_LOG2)

static struct pci_dev* mb;

static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

/* Cycles per configuration read with the current access mode (a power-of-two count: a shift,
 * since a freestanding 32-bit guest has no 64-bit division). */
static uint32_t time_reads(void) {
    uint32_t sum = 0;
    uint64_t t0 = rdtsc();
    for (unsigned i = 0; i < BENCH_READS; i++) sum += pci_read32(mb, 0);
    uint64_t t1 = rdtsc();
    CHECK_EQ(sum, (uint32_t)(BENCH_READS * ((uint32_t)MB_DEVICE_ID << 16 | MB_VENDOR_ID)),
             "bench reads");
    return (uint32_t)((t1 - t0) >> BENCH_READS_LOG2);
}

static void bench(void) {
    pci_set_access(PCI_ACCESS_PORTS);
    uint32_t ports = time_reads();
    pci_set_access(PCI_ACCESS_ECAM);
    uint32_t ecam = time_reads();
    printf("bench: %u config dword reads: mechanism #1 %u cycles/read, ECAM %u cycles/read\n",
           BENCH_READS, (unsigned)ports, (unsigned)ecam);
}

static uint32_t rd32(unsigned off) {
    return pci_read32(mb, off);
}

static void check_header_agrees(void) {
    for (unsigned i = 0; i < pci_dev_count(); i++) {
        struct pci_dev* d = pci_dev_get(i);
        pci_set_access(PCI_ACCESS_PORTS);
        uint32_t ports = pci_cfg_read32(d->bus, d->dev, d->fn, 0);
        pci_set_access(PCI_ACCESS_ECAM);
        uint32_t ecam = pci_cfg_read32(d->bus, d->dev, d->fn, 0);
        CHECK(ports == ecam, "%02x:%02x.%x: dword 0 is %08x through ports, %08x through ECAM",
              d->bus, d->dev, d->fn, ports, ecam);
    }
}

static void check_express_capability(void) {
    unsigned cap = pci_cap_find(mb, PCI_CAP_ID_EXP);
    CHECK(cap != 0, "no PCI Express capability");
    if (!cap) return;
    uint16_t flags = pci_read16(mb, cap + 2);
    printf("express [%02x] version %u type %u devcap %08x lnkcap %08x lnksta %04x\n", cap,
           flags & 0xf, (flags >> 4) & 0xf, rd32(cap + EXP_DEVCAP), rd32(cap + EXP_LNKCAP),
           pci_read16(mb, cap + EXP_LNKSTA));
    CHECK_EQ(flags & 0xf, 2, "PCIe capability version");
    CHECK_EQ((flags >> 4) & 0xf, 0, "device/port type Endpoint");
    CHECK_EQ(rd32(cap + EXP_DEVCAP) & 0x7, 1, "Max_Payload_Size Supported 256");
    CHECK_EQ(pci_read16(mb, cap + EXP_LNKSTA) & 0x3ff, 0x43, "link up at 8 GT/s x4");

    /* Device Control: RW bits 0x79ff, reset value 0x2810; byte writes touch one byte. */
    CHECK_EQ(pci_read16(mb, cap + EXP_DEVCTL), 0x2810, "Device Control reset value");
    pci_write16(mb, cap + EXP_DEVCTL, 0xffff);
    CHECK_EQ(pci_read16(mb, cap + EXP_DEVCTL), 0x79ff, "Device Control writable bits");
    pci_write8(mb, cap + EXP_DEVCTL + 1, 0x00);
    CHECK_EQ(pci_read16(mb, cap + EXP_DEVCTL), 0x00ff, "Device Control high byte alone");
    pci_write16(mb, cap + EXP_DEVCTL, 0x2810);
    /* Device Capabilities are read-only; Device Status error bits are RW1C (a 1 cannot set). */
    uint32_t devcap = rd32(cap + EXP_DEVCAP);
    pci_write32(mb, cap + EXP_DEVCAP, ~devcap);
    CHECK_EQ(rd32(cap + EXP_DEVCAP), devcap, "Device Capabilities read-only");
    pci_write16(mb, cap + EXP_DEVSTA, 0xffff);
    CHECK_EQ(pci_read16(mb, cap + EXP_DEVSTA), 0, "Device Status: writing 1s sets nothing");
}

static void check_extended_chain(void) {
    static const uint16_t want[] = {EXT_AER, EXT_DSN, EXT_VSEC};
    unsigned n = 0, off = 0x100;
    while (off && n < 16) {
        uint32_t h = rd32(off);
        printf("ext [%03x] %04x v%u\n", off, h & 0xffff, (h >> 16) & 0xf);
        if (n < 3) CHECK_EQ(h & 0xffff, want[n], "extended capability in chain order");
        n++;
        off = (h >> 20) & 0xffc;
        CHECK(off == 0 || off >= 0x100, "next pointer %x below 0x100", off);
    }
    CHECK_EQ(n, 3, "extended capabilities");

    /* Headers are read-only. */
    uint32_t h = rd32(0x100);
    pci_write32(mb, 0x100, 0);
    CHECK_EQ(rd32(0x100), h, "extended header read-only");

    unsigned dsn = pci_ext_cap_find(mb, EXT_DSN);
    CHECK(dsn != 0, "no Device Serial Number");
    if (dsn) {
        printf("serial %08x%08x\n", rd32(dsn + 8), rd32(dsn + 4));
        CHECK_EQ(rd32(dsn + 4), MB_SERIAL_LO, "serial low dword");
        CHECK_EQ(rd32(dsn + 8), MB_SERIAL_HI, "serial high dword");
        pci_write32(mb, dsn + 4, 0);
        CHECK_EQ(rd32(dsn + 4), MB_SERIAL_LO, "serial read-only");
    }

    unsigned aer = pci_ext_cap_find(mb, EXT_AER);
    CHECK(aer != 0, "no AER");
    if (aer) {
        pci_write32(mb, aer + 0x08, 0xffffffffu);
        CHECK_EQ(rd32(aer + 0x08), 0x001ff010u, "AER uncorrectable mask writable bits");
        pci_write32(mb, aer + 0x08, 0);
        CHECK_EQ(rd32(aer + 0x0c), 0x00062010u, "AER severity default");
        pci_write32(mb, aer + 0x04, 0xffffffffu);
        CHECK_EQ(rd32(aer + 0x04), 0, "AER uncorrectable status: 1s set nothing");
        CHECK_EQ(rd32(aer + 0x14), 0x00002000u, "AER correctable mask default");
    }

    unsigned vsec = pci_ext_cap_find(mb, EXT_VSEC);
    CHECK(vsec != 0, "no vendor-specific capability");
    if (vsec) {
        CHECK_EQ(rd32(vsec + 4), 0x01410001u, "VSEC header: ID 1, revision 1, 20 bytes");
        pci_write32(mb, vsec + 8, 0);
        CHECK_EQ(rd32(vsec + 8), MB_ID, "VSEC RO register");
        pci_write32(mb, vsec + 0xc, 0x12345678u);
        pci_write8(mb, vsec + 0xe, 0xab);
        CHECK_EQ(rd32(vsec + 0xc), 0x12ab5678u, "VSEC RW register, byte write");
        CHECK_EQ(rd32(vsec + 0x10), MB_VSEC_W1C_RESET, "VSEC RW1C reset value");
        pci_write32(mb, vsec + 0x10, 0x0000000fu);
        CHECK_EQ(rd32(vsec + 0x10), 0xa5a5a5a0u, "VSEC RW1C: written 1s clear");
        pci_write8(mb, vsec + 0x13, 0xff);
        CHECK_EQ(rd32(vsec + 0x10), 0x00a5a5a0u, "VSEC RW1C: byte write clears one byte");
        pci_write32(mb, vsec + 0x10, 0);
        CHECK_EQ(rd32(vsec + 0x10), 0x00a5a5a0u, "VSEC RW1C: 0s change nothing");
    }
    CHECK_EQ(rd32(0x800), 0, "unclaimed extended space reads 0");
}

static void check_bar_move(void) {
    uintptr_t mem = (uintptr_t)mb->bars[1].base;
    CHECK(mem != 0, "BAR1 not assigned");
    if (!mem) return;
    CHECK_EQ(mmio_read32(mem), MB_ID, "BAR1 id at the assigned address");
    uint32_t to = pci_alloc_mmio(mb->bars[1].size);
    CHECK(to != 0, "no room to move BAR1");
    if (!to) return;
    printf("moving BAR1 0x%08x -> 0x%08x through ECAM\n", (unsigned)mem, to);
    pci_set_bar(mb, 1, to);
    CHECK_EQ(rd32(PCI_BAR0 + 4) & ~0xfu, to, "BAR1 reads the new address");
    CHECK_EQ(mmio_read32(to), MB_ID, "BAR1 id at the new address");
    CHECK_EQ(mmio_read32(mem), 0xffffffffu, "the old address reads all-ones");
}

static void check_master_abort(void) {
    uint32_t base = pci_ecam_base();
    CHECK_EQ(pci_ecam_read32(0, 31, 0, 0), 0xffffffffu, "empty slot 31 through ECAM");
    /* A dword that crosses a dword boundary: the window refuses it whole (all-ones, KVM hands
     * it over as one access), but Unicorn splits unaligned MMIO into aligned pieces first, and
     * each piece is a configuration read of its own. */
    uintptr_t fn = base + (mb->dev << 15);
    uint32_t odd = mmio_read32(fn + 2);
    uint32_t pieces = mmio_read16(fn + 2) | (uint32_t)mmio_read16(fn + 4) << 16;
    CHECK(odd == 0xffffffffu || odd == pieces, "unaligned dword read %08x (pieces %08x)", odd,
          pieces);
    if (pci_ecam_size() >= (2u << 20)) {
        uintptr_t bus1 = base + (1u << 20);
        mmio_write32(bus1 + 4, 0x7);
        CHECK_EQ(mmio_read32(bus1), 0xffffffffu, "bus 1 (no devices) reads all-ones");
        printf("bus 1 inside the window reads all-ones\n");
    }
}

int main(void) {
    printf("pcietest: ECAM at 0x%08x, %u MiB\n", pci_ecam_base(), pci_ecam_size() >> 20);
    if (pci_set_access(PCI_ACCESS_ECAM) != 0) {
        printf("pcietest: no ECAM window in the boot-info block\n");
        return 3;
    }
    unsigned n = pci_enumerate();
    printf("pcietest: found %u function(s) through ECAM\n", n);
    CHECK(n >= 2, "found %u functions", n);
    CHECK_EQ(pci_assign_resources(), 0, "resources assigned through ECAM");
    pci_print_all();
    check_header_agrees();
    struct pci_dev* edu = pci_find(0x1234, 0x11e8);
    if (edu) CHECK_EQ(pci_read32(edu, 0x100), 0xffffffffu, "a 256-byte function at 0x100");
    mb = pci_find(MB_VENDOR_ID, MB_DEVICE_ID);
    CHECK(mb != 0, "multibar not found");
    if (mb) {
        check_express_capability();
        check_extended_chain();
        check_bar_move();
        check_master_abort();
        if (cmdline_has("bench")) bench();
    }
    return checks_finish();
}
