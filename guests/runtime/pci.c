/* PCI configuration mechanism #1, enumeration of bus 0, BAR sizing, resource assignment,
 * INTx routing, capabilities, MSI and MSI-X. */
#include <potemkin/console.h>
#include <potemkin/cpu.h>
#include <potemkin/io.h>
#include <potemkin/mmio.h>
#include <potemkin/pci.h>
#include <potemkin/pic.h>

/* PIRQ A-D → PIC lines (the i440FX/PIIX3 routing the VMM wires, docs/guest-abi.md). */
static const uint8_t pirq_lines[4] = {10, 10, 11, 11};

static struct pci_dev devs[PCI_MAX_DEVICES];
static unsigned ndevs;
static uint64_t mmio_next = PCI_MMIO_WINDOW_BASE;
static uint32_t io_next = PCI_IO_WINDOW_BASE;

/* ---- configuration mechanism #1 ------------------------------------------------------- */

static uint32_t cfg_address(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    return 0x80000000u | ((bus & 0xffu) << 16) | ((dev & 0x1fu) << 11) | ((fn & 7u) << 8) |
           (off & 0xfcu);
}

/* The address/data pair must not be split by an interrupt handler that also uses it. */
uint8_t pci_cfg_read8(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    if (pci_access_mode() == PCI_ACCESS_ECAM) return pci_ecam_read8(bus, dev, fn, off);
    uint32_t f = irq_save();
    outl(PCI_CONFIG_ADDRESS, cfg_address(bus, dev, fn, off));
    uint8_t v = inb(PCI_CONFIG_DATA + (off & 3));
    irq_restore(f);
    return v;
}

uint16_t pci_cfg_read16(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    if (pci_access_mode() == PCI_ACCESS_ECAM) return pci_ecam_read16(bus, dev, fn, off);
    uint32_t f = irq_save();
    outl(PCI_CONFIG_ADDRESS, cfg_address(bus, dev, fn, off));
    uint16_t v = inw(PCI_CONFIG_DATA + (off & 2));
    irq_restore(f);
    return v;
}

uint32_t pci_cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    if (pci_access_mode() == PCI_ACCESS_ECAM) return pci_ecam_read32(bus, dev, fn, off);
    uint32_t f = irq_save();
    outl(PCI_CONFIG_ADDRESS, cfg_address(bus, dev, fn, off));
    uint32_t v = inl(PCI_CONFIG_DATA);
    irq_restore(f);
    return v;
}

void pci_cfg_write8(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint8_t v) {
    if (pci_access_mode() == PCI_ACCESS_ECAM) {
        pci_ecam_write8(bus, dev, fn, off, v);
        return;
    }
    uint32_t f = irq_save();
    outl(PCI_CONFIG_ADDRESS, cfg_address(bus, dev, fn, off));
    outb(PCI_CONFIG_DATA + (off & 3), v);
    irq_restore(f);
}

void pci_cfg_write16(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint16_t v) {
    if (pci_access_mode() == PCI_ACCESS_ECAM) {
        pci_ecam_write16(bus, dev, fn, off, v);
        return;
    }
    uint32_t f = irq_save();
    outl(PCI_CONFIG_ADDRESS, cfg_address(bus, dev, fn, off));
    outw(PCI_CONFIG_DATA + (off & 2), v);
    irq_restore(f);
}

void pci_cfg_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v) {
    if (pci_access_mode() == PCI_ACCESS_ECAM) {
        pci_ecam_write32(bus, dev, fn, off, v);
        return;
    }
    uint32_t f = irq_save();
    outl(PCI_CONFIG_ADDRESS, cfg_address(bus, dev, fn, off));
    outl(PCI_CONFIG_DATA, v);
    irq_restore(f);
}

uint8_t pci_read8(const struct pci_dev* d, unsigned off) {
    return pci_cfg_read8(d->bus, d->dev, d->fn, off);
}
uint16_t pci_read16(const struct pci_dev* d, unsigned off) {
    return pci_cfg_read16(d->bus, d->dev, d->fn, off);
}
uint32_t pci_read32(const struct pci_dev* d, unsigned off) {
    return pci_cfg_read32(d->bus, d->dev, d->fn, off);
}
void pci_write8(const struct pci_dev* d, unsigned off, uint8_t v) {
    pci_cfg_write8(d->bus, d->dev, d->fn, off, v);
}
void pci_write16(const struct pci_dev* d, unsigned off, uint16_t v) {
    pci_cfg_write16(d->bus, d->dev, d->fn, off, v);
}
void pci_write32(const struct pci_dev* d, unsigned off, uint32_t v) {
    pci_cfg_write32(d->bus, d->dev, d->fn, off, v);
}

uint16_t pci_command(const struct pci_dev* d) {
    return pci_read16(d, PCI_COMMAND);
}
void pci_set_command(const struct pci_dev* d, uint16_t cmd) {
    pci_write16(d, PCI_COMMAND, cmd);
}
uint16_t pci_command_update(const struct pci_dev* d, uint16_t set, uint16_t clear) {
    uint16_t old = pci_command(d);
    pci_set_command(d, (uint16_t)((old | set) & ~clear));
    return old;
}

/* ---- BAR sizing ----------------------------------------------------------------------- */

static unsigned bar_count(const struct pci_dev* d) {
    switch (d->header_type & 0x7f) {
        case 0:
            return 6;
        case 1:
            return 2; /* PCI-to-PCI bridge */
        default:
            return 0;
    }
}

static unsigned rom_offset(const struct pci_dev* d) {
    return (d->header_type & 0x7f) == 1 ? 0x38 : PCI_ROM_ADDRESS;
}

/* Writes v to a BAR register, returns what reads back, restores the original. */
static uint32_t probe(const struct pci_dev* d, unsigned off, uint32_t v, uint32_t* orig) {
    *orig = pci_read32(d, off);
    pci_write32(d, off, v);
    uint32_t got = pci_read32(d, off);
    pci_write32(d, off, *orig);
    return got;
}

void pci_size_bars(struct pci_dev* d) {
    for (unsigned i = 0; i < 6; i++) d->bars[i] = (struct pci_bar){0, 0, false, false, false};
    d->rom_base = d->rom_size = 0;
    if ((d->header_type & 0x7f) > 1) return;

    /* As an OS does: no decoding while a BAR holds a sizing pattern. */
    uint16_t cmd = pci_command(d);
    pci_set_command(d, (uint16_t)(cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY)));

    unsigned n = bar_count(d);
    for (unsigned i = 0; i < n; i++) {
        unsigned off = PCI_BAR0 + 4 * i;
        uint32_t orig;
        uint32_t got = probe(d, off, 0xffffffffu, &orig);
        struct pci_bar* b = &d->bars[i];
        if (got == 0) continue; /* not implemented */
        if (got & 1) {
            uint32_t mask = got & ~3u;
            if (!(mask & 0xffff0000u)) /* 16-bit decoder: upper bits hardwired to 0 */
                mask |= 0xffff0000u;
            b->is_io = true;
            b->size = mask ? (uint32_t)(~mask + 1) : 0;
            b->base = orig & ~3u;
            continue;
        }
        unsigned type = (got >> 1) & 3;
        b->prefetch = (got & 8) != 0;
        if (type == 2 && i + 1 < n) {
            uint32_t orig_hi;
            uint32_t got_hi = probe(d, off + 4, 0xffffffffu, &orig_hi);
            uint64_t mask = ((uint64_t)got_hi << 32) | (got & ~0xfu);
            b->is_64 = true;
            b->size = mask ? ~mask + 1 : 0;
            b->base = ((uint64_t)orig_hi << 32) | (orig & ~0xfu);
            i++; /* the upper half stays zeroed */
            continue;
        }
        uint32_t mask = got & ~0xfu;
        b->size = mask ? (uint32_t)(~mask + 1) : 0;
        b->base = orig & ~0xfu;
    }

    uint32_t orig;
    uint32_t got = probe(d, rom_offset(d), PCI_ROM_ADDRESS_MASK, &orig);
    uint32_t mask = got & PCI_ROM_ADDRESS_MASK;
    if (mask) {
        d->rom_size = ~mask + 1;
        d->rom_base = orig & PCI_ROM_ADDRESS_MASK;
    }

    pci_set_command(d, cmd);
}

/* ---- enumeration ---------------------------------------------------------------------- */

static void read_function(struct pci_dev* d, unsigned dev, unsigned fn) {
    d->bus = 0;
    d->dev = (uint8_t)dev;
    d->fn = (uint8_t)fn;
    d->vendor = pci_read16(d, PCI_VENDOR_ID);
    d->device = pci_read16(d, PCI_DEVICE_ID);
    uint32_t cr = pci_read32(d, PCI_REVISION_ID);
    d->rev = (uint8_t)cr;
    d->class = cr >> 8;
    d->header_type = pci_read8(d, PCI_HEADER_TYPE);
    d->irq_pin = pci_read8(d, PCI_INTERRUPT_PIN);
    d->irq_line = pci_read8(d, PCI_INTERRUPT_LINE);
    pci_size_bars(d);
}

unsigned pci_enumerate(void) {
    ndevs = 0;
    for (unsigned dev = 0; dev < 32; dev++) {
        if (pci_cfg_read16(0, dev, 0, PCI_VENDOR_ID) == 0xffff) continue;
        unsigned nfn =
            (pci_cfg_read8(0, dev, 0, PCI_HEADER_TYPE) & PCI_HEADER_MULTI_FUNCTION) ? 8 : 1;
        for (unsigned fn = 0; fn < nfn; fn++) {
            if (pci_cfg_read16(0, dev, fn, PCI_VENDOR_ID) == 0xffff) continue;
            if (ndevs == PCI_MAX_DEVICES) {
                printf("pci: more than %u functions, ignoring 00:%02x.%u\n", PCI_MAX_DEVICES, dev,
                       fn);
                continue;
            }
            read_function(&devs[ndevs++], dev, fn);
        }
    }
    return ndevs;
}

unsigned pci_dev_count(void) {
    return ndevs;
}
struct pci_dev* pci_dev_get(unsigned i) {
    return i < ndevs ? &devs[i] : 0;
}

struct pci_dev* pci_find(uint16_t vendor, uint16_t device) {
    for (unsigned i = 0; i < ndevs; i++)
        if (devs[i].vendor == vendor && devs[i].device == device) return &devs[i];
    return 0;
}

struct pci_dev* pci_find_slot(unsigned dev, unsigned fn) {
    for (unsigned i = 0; i < ndevs; i++)
        if (devs[i].dev == dev && devs[i].fn == fn) return &devs[i];
    return 0;
}

/* ---- resource assignment -------------------------------------------------------------- */

unsigned pci_intx_line(unsigned slot, unsigned pin) {
    if (pin < 1 || pin > 4) return 0xff;
    return pirq_lines[(slot + pin - 1) % 4];
}

static uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) & ~(a - 1);
}

uint32_t pci_alloc_mmio(uint64_t size) {
    if (size == 0 || (size & (size - 1))) return 0;
    uint64_t base = align_up(mmio_next, size);
    /* The ECAM window sits inside the memory window (docs/guest-abi.md): skip it. */
    uint64_t ecam = pci_ecam_base(), ecam_end = ecam + pci_ecam_size();
    if (ecam && base < ecam_end && ecam < base + size) base = align_up(ecam_end, size);
    if (base + size > PCI_MMIO_WINDOW_END) return 0;
    mmio_next = base + size;
    return (uint32_t)base;
}

uint32_t pci_alloc_io(uint32_t size) {
    if (size == 0 || (size & (size - 1))) return 0;
    uint32_t base = (uint32_t)align_up(io_next, size);
    if (base + size > PCI_IO_WINDOW_END) return 0;
    io_next = base + size;
    return base;
}

/* Writes the BAR registers only (the caller owns the command register). A 64-bit BAR gets
 * its high dword written explicitly, last. */
static void write_bar(struct pci_dev* d, unsigned bar, uint64_t base) {
    if (bar == PCI_ROM_BAR) {
        unsigned off = rom_offset(d);
        uint32_t keep = pci_read32(d, off) & PCI_ROM_ENABLE;
        pci_write32(d, off, ((uint32_t)base & PCI_ROM_ADDRESS_MASK) | keep);
        d->rom_base = (uint32_t)base;
        return;
    }
    unsigned off = PCI_BAR0 + 4 * bar;
    pci_write32(d, off, (uint32_t)base);
    if (d->bars[bar].is_64) pci_write32(d, off + 4, (uint32_t)(base >> 32));
    d->bars[bar].base = base;
}

void pci_set_bar(struct pci_dev* d, unsigned bar, uint64_t base) {
    uint16_t off_bits = (bar < 6 && d->bars[bar].is_io) ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    uint16_t cmd = pci_command_update(d, 0, off_bits);
    write_bar(d, bar, base);
    pci_set_command(d, cmd);
}

void pci_rom_enable(const struct pci_dev* d, bool enable) {
    unsigned off = rom_offset(d);
    uint32_t v = pci_read32(d, off);
    pci_write32(d, off, enable ? (v | PCI_ROM_ENABLE) : (v & ~PCI_ROM_ENABLE));
}

struct resource {
    struct pci_dev* d;
    uint8_t bar; /* 0-5, PCI_ROM_BAR */
    bool is_io;
    uint64_t size;
};

int pci_assign_resources(void) {
    static struct resource res[PCI_MAX_DEVICES * 7];
    unsigned nres = 0;
    int rc = 0;

    for (unsigned i = 0; i < ndevs; i++) {
        struct pci_dev* d = &devs[i];
        for (unsigned b = 0; b < 6; b++)
            if (d->bars[b].size)
                res[nres++] = (struct resource){d, (uint8_t)b, d->bars[b].is_io, d->bars[b].size};
        if (d->rom_size) res[nres++] = (struct resource){d, PCI_ROM_BAR, false, d->rom_size};
    }
    /* Largest first (stable insertion sort: equal sizes keep bus order), so natural alignment
     * wastes nothing. */
    for (unsigned i = 1; i < nres; i++) {
        struct resource r = res[i];
        unsigned j = i;
        while (j > 0 && res[j - 1].size < r.size) {
            res[j] = res[j - 1];
            j--;
        }
        res[j] = r;
    }

    /* Decode stays off while BARs move. */
    uint16_t saved_cmd[PCI_MAX_DEVICES];
    for (unsigned i = 0; i < ndevs; i++)
        saved_cmd[i] = pci_command_update(&devs[i], 0, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);

    uint16_t want[PCI_MAX_DEVICES] = {0};
    for (unsigned i = 0; i < nres; i++) {
        struct resource* r = &res[i];
        uint64_t base;
        if (r->is_io) {
            base = r->size <= 0x10000u ? pci_alloc_io((uint32_t)r->size) : 0;
        } else {
            /* 64-bit BARs: a firmware would place them above 4 GiB when the engine can reach
             * that space. potemkin's engine is 32-bit flat (no PAE/long mode), so they go in the
             * same window below 4 GiB; write_bar still programs the high dword (0). */
            base = r->size <= (PCI_MMIO_WINDOW_END - PCI_MMIO_WINDOW_BASE) ? pci_alloc_mmio(r->size)
                                                                           : 0;
        }
        if (!base) {
            printf("pci: no room for %02x:%02x.%u %s%u (size 0x%llx)\n", r->d->bus, r->d->dev,
                   r->d->fn, r->bar == PCI_ROM_BAR ? "ROM" : "BAR",
                   r->bar == PCI_ROM_BAR ? 0 : r->bar, (unsigned long long)r->size);
            rc = -1;
            continue;
        }
        write_bar(r->d, r->bar, base);
        want[r->d - devs] |= r->is_io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    }

    for (unsigned i = 0; i < ndevs; i++) {
        struct pci_dev* d = &devs[i];
        if ((d->class >> 8) == 0x0600) { /* host bridge: left as the platform set it */
            pci_set_command(d, saved_cmd[i]);
            continue;
        }
        pci_set_command(d, (uint16_t)((saved_cmd[i] & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY)) |
                                      want[i] | PCI_COMMAND_MASTER));
        if (d->irq_pin >= 1 && d->irq_pin <= 4) {
            unsigned line = pci_intx_line(d->dev, d->irq_pin);
            pci_write8(d, PCI_INTERRUPT_LINE, (uint8_t)line);
            d->irq_line = (uint8_t)line;
            pic_set_level(line, true); /* PCI INTx is level-triggered, active low, shareable */
        }
    }
    return rc;
}

/* ---- printing ------------------------------------------------------------------------- */

const char* pci_bar_kind(const struct pci_dev* d, unsigned bar) {
    if (bar == PCI_ROM_BAR) return "rom";
    const struct pci_bar* b = &d->bars[bar];
    if (b->is_io) return "io";
    if (b->is_64) return b->prefetch ? "mem64 pf" : "mem64";
    return b->prefetch ? "mem32 pf" : "mem32";
}

void pci_print(const struct pci_dev* d) {
    printf("%02x:%02x.%u %04x: %04x:%04x (rev %02x)", d->bus, d->dev, d->fn, d->class >> 8,
           d->vendor, d->device, d->rev);
    if (d->irq_pin >= 1 && d->irq_pin <= 4)
        printf(" irq %u pin %c", d->irq_line, 'A' + d->irq_pin - 1);
    putchar('\n');
    for (unsigned b = 0; b < 6; b++) {
        const struct pci_bar* r = &d->bars[b];
        if (!r->size) continue;
        printf("  BAR%u: %s 0x%0*llx [size 0x%llx]\n", b, pci_bar_kind(d, b), r->is_io ? 4 : 8,
               (unsigned long long)r->base, (unsigned long long)r->size);
    }
    if (d->rom_size) printf("  ROM:  rom 0x%08x [size 0x%x]\n", d->rom_base, d->rom_size);
}

void pci_print_all(void) {
    for (unsigned i = 0; i < ndevs; i++) pci_print(&devs[i]);
}

/* ---- capabilities --------------------------------------------------------------------- */

unsigned pci_cap_find(const struct pci_dev* d, uint8_t cap_id) {
    if (!(pci_read16(d, PCI_STATUS) & PCI_STATUS_CAP_LIST)) return 0;
    unsigned ptr = pci_read8(d, PCI_CAPABILITY_LIST) & 0xfc;
    for (unsigned n = 0; n < 48 && ptr >= 0x40; n++) {
        if (pci_read8(d, ptr) == cap_id) return ptr;
        ptr = pci_read8(d, ptr + 1) & 0xfc;
    }
    return 0;
}

int pci_msi_enable(const struct pci_dev* d, uint32_t address, uint16_t data) {
    unsigned cap = pci_cap_find(d, PCI_CAP_ID_MSI);
    if (!cap) return -1;
    uint16_t flags = pci_read16(d, cap + PCI_MSI_FLAGS);
    bool is64 = (flags & PCI_MSI_FLAGS_64BIT) != 0;
    pci_write32(d, cap + PCI_MSI_ADDRESS_LO, address);
    if (is64) {
        pci_write32(d, cap + PCI_MSI_ADDRESS_HI, 0);
        pci_write16(d, cap + PCI_MSI_DATA_64, data);
    } else {
        pci_write16(d, cap + PCI_MSI_DATA_32, data);
    }
    if (flags & PCI_MSI_FLAGS_MASKBIT) {
        unsigned moff = cap + (is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32);
        pci_write32(d, moff, pci_read32(d, moff) & ~1u);
    }
    flags = (uint16_t)((flags & ~PCI_MSI_FLAGS_QSIZE) | PCI_MSI_FLAGS_ENABLE);
    pci_write16(d, cap + PCI_MSI_FLAGS, flags);
    pci_command_update(d, PCI_COMMAND_INTX_DISABLE, 0);
    return 0;
}

void pci_msi_disable(const struct pci_dev* d) {
    unsigned cap = pci_cap_find(d, PCI_CAP_ID_MSI);
    if (cap) {
        uint16_t flags = pci_read16(d, cap + PCI_MSI_FLAGS);
        pci_write16(d, cap + PCI_MSI_FLAGS, (uint16_t)(flags & ~PCI_MSI_FLAGS_ENABLE));
    }
    pci_command_update(d, 0, PCI_COMMAND_INTX_DISABLE);
}

static uintptr_t msix_region(const struct pci_dev* d, unsigned reg) {
    unsigned cap = pci_cap_find(d, PCI_CAP_ID_MSIX);
    if (!cap) return 0;
    uint32_t v = pci_read32(d, cap + reg);
    unsigned bir = v & 7;
    if (bir > 5 || !d->bars[bir].size || !d->bars[bir].base || d->bars[bir].is_io) return 0;
    return (uintptr_t)d->bars[bir].base + (v & ~7u);
}

uintptr_t pci_msix_table(const struct pci_dev* d) {
    return msix_region(d, PCI_MSIX_TABLE);
}
uintptr_t pci_msix_pba(const struct pci_dev* d) {
    return msix_region(d, PCI_MSIX_PBA);
}

int pci_msix_enable(const struct pci_dev* d) {
    unsigned cap = pci_cap_find(d, PCI_CAP_ID_MSIX);
    if (!cap || !pci_msix_table(d)) return -1;
    uint16_t flags = pci_read16(d, cap + PCI_MSIX_FLAGS);
    pci_write16(d, cap + PCI_MSIX_FLAGS,
                (uint16_t)(flags | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL));
    pci_command_update(d, PCI_COMMAND_INTX_DISABLE, 0);
    return (int)(flags & PCI_MSIX_FLAGS_QSIZE) + 1;
}

void pci_msix_disable(const struct pci_dev* d) {
    unsigned cap = pci_cap_find(d, PCI_CAP_ID_MSIX);
    if (cap) {
        uint16_t flags = pci_read16(d, cap + PCI_MSIX_FLAGS);
        pci_write16(d, cap + PCI_MSIX_FLAGS,
                    (uint16_t)(flags & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)));
    }
    pci_command_update(d, 0, PCI_COMMAND_INTX_DISABLE);
}

void pci_msix_function_mask(const struct pci_dev* d, bool mask) {
    unsigned cap = pci_cap_find(d, PCI_CAP_ID_MSIX);
    if (!cap) return;
    uint16_t flags = pci_read16(d, cap + PCI_MSIX_FLAGS);
    flags = mask ? (uint16_t)(flags | PCI_MSIX_FLAGS_MASKALL)
                 : (uint16_t)(flags & ~PCI_MSIX_FLAGS_MASKALL);
    pci_write16(d, cap + PCI_MSIX_FLAGS, flags);
}

void pci_msix_set_entry(const struct pci_dev* d, unsigned entry, uint32_t address, uint32_t data) {
    uintptr_t e = pci_msix_table(d) + entry * PCI_MSIX_ENTRY_SIZE;
    mmio_write32(e + PCI_MSIX_ENTRY_ADDR_LO, address);
    mmio_write32(e + PCI_MSIX_ENTRY_ADDR_HI, 0);
    mmio_write32(e + PCI_MSIX_ENTRY_DATA, data);
}

void pci_msix_mask(const struct pci_dev* d, unsigned entry, bool mask) {
    uintptr_t c = pci_msix_table(d) + entry * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_CTRL;
    uint32_t v = mmio_read32(c);
    mmio_write32(c, mask ? (v | PCI_MSIX_ENTRY_CTRL_MASKBIT) : (v & ~PCI_MSIX_ENTRY_CTRL_MASKBIT));
}

bool pci_msix_pending(const struct pci_dev* d, unsigned entry) {
    uintptr_t pba = pci_msix_pba(d);
    return (mmio_read32(pba + (entry / 32) * 4) >> (entry % 32)) & 1;
}
