/* A hostile guest (docs/hostile.md): with a fixed seed, random configuration writes to every
 * PCI function (BARs, ROM BAR, command register, capabilities), random MMIO reads and writes of
 * every size over the whole PCI memory window, and random port I/O over the PCI I/O window.
 * Half of the accesses aim at what the functions decode at that moment (so the devices see
 * them), the rest anywhere in the windows. It never turns bus mastering on (random DMA would
 * overwrite this guest, which proves nothing about the VMM) and keeps off the ports that end
 * or reset the VM, the interrupt controllers and the timer.
 *
 * Every value read is folded into a checksum that the guest prints at the end: the same seed
 * against the same devices must give the same checksum whichever transport carries them
 * (tests/guest/hostile_guest_test.cpp). Command line: seed=N rounds=N. Exit 0. */
#include <potemkin/runtime.h>

static uint32_t rng_state;

static uint32_t rnd(void) {
    /* xorshift32: deterministic, no state outside this file. */
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

static uint32_t checksum = 2166136261u; /* FNV-1a over every byte read */
static unsigned reads;

static void fold(uint64_t v, unsigned size) {
    for (unsigned i = 0; i < size; i++) {
        checksum ^= (uint8_t)(v >> (8 * i));
        checksum *= 16777619u;
    }
    reads++;
}

static const unsigned sizes[4] = {1, 2, 4, 8};

/* A function's command register may be anything but bus master. */
static uint32_t tame(unsigned off, unsigned size, uint32_t v) {
    if (off <= 4 && off + size > 4) v &= ~((uint32_t)PCI_COMMAND_MASTER << (8 * (4 - off)));
    return v;
}

static void config_round(void) {
    unsigned n = pci_dev_count();
    if (n == 0) return;
    struct pci_dev* d = pci_dev_get(rnd() % n);
    if (d->bus == 0 && d->dev == 0) return; /* the host bridge: not what is tested here */
    unsigned size = sizes[rnd() % 3];
    unsigned off = (rnd() % 256) & ~(size - 1);
    /* BARs, the ROM BAR and the command register get most of the writes. */
    if (rnd() % 2) off = (rnd() % 2) ? 0x10 + 4 * (rnd() % 6) : (rnd() % 2 ? 0x30 : 0x04);
    if (rnd() % 2) {
        uint32_t v = tame(off, size, rnd());
        if (size == 1) pci_write8(d, off, (uint8_t)v);
        if (size == 2) pci_write16(d, off, (uint16_t)v);
        if (size == 4) pci_write32(d, off, v);
    } else {
        if (size == 1) fold(pci_read8(d, off), 1);
        if (size == 2) fold(pci_read16(d, off), 2);
        if (size == 4) fold(pci_read32(d, off), 4);
    }
}

/* A memory address: inside a BAR or ROM as assigned (whether or not the random configuration
 * writes since left it there), or anywhere in the window. */
static uintptr_t mmio_target(unsigned size) {
    unsigned n = pci_dev_count();
    if (n > 0 && rnd() % 4 != 0) {
        const struct pci_dev* d = pci_dev_get(rnd() % n);
        unsigned which = rnd() % 7;
        uint64_t base = which < 6 ? d->bars[which].base : d->rom_base;
        uint64_t span = which < 6 ? d->bars[which].size : d->rom_size;
        bool memory = which == 6 || !d->bars[which].is_io;
        if (memory && base >= PCI_MMIO_WINDOW_BASE && span >= 8 &&
            base + span <= PCI_MMIO_WINDOW_END)
            return (uintptr_t)((uint32_t)base + rnd() % (uint32_t)span) & ~(uintptr_t)(size - 1);
    }
    uint32_t span = PCI_MMIO_WINDOW_END - PCI_MMIO_WINDOW_BASE;
    return (PCI_MMIO_WINDOW_BASE + rnd() % span) & ~(uintptr_t)(size - 1);
}

static void mmio_round(void) {
    unsigned size = sizes[rnd() % 4];
    uintptr_t a = mmio_target(size);
    if (rnd() % 2) {
        uint64_t v = ((uint64_t)rnd() << 32) | rnd();
        if (size == 1) mmio_write8(a, (uint8_t)v);
        if (size == 2) mmio_write16(a, (uint16_t)v);
        if (size == 4) mmio_write32(a, (uint32_t)v);
        if (size == 8) mmio_write64(a, v);
    } else {
        if (size == 1) fold(mmio_read8(a), 1);
        if (size == 2) fold(mmio_read16(a), 2);
        if (size == 4) fold(mmio_read32(a), 4);
        if (size == 8) fold(mmio_read64(a), 8);
    }
}

static void port_round(void) {
    unsigned size = sizes[rnd() % 3];
    unsigned n = pci_dev_count();
    const struct pci_dev* d = n > 0 ? pci_dev_get(rnd() % n) : 0;
    const struct pci_bar* bar = d ? &d->bars[rnd() % 6] : 0;
    uint16_t port =
        (uint16_t)((PCI_IO_WINDOW_BASE + rnd() % (PCI_IO_WINDOW_END - PCI_IO_WINDOW_BASE)) &
                   ~(size - 1));
    if (bar && bar->is_io && bar->size >= 4 && rnd() % 4 != 0)
        port = (uint16_t)(((uint32_t)bar->base + rnd() % (uint32_t)bar->size) & ~(size - 1));
    if (rnd() % 2) {
        uint32_t v = rnd();
        if (size == 1) outb(port, (uint8_t)v);
        if (size == 2) outw(port, (uint16_t)v);
        if (size == 4) outl(port, v);
    } else {
        if (size == 1) fold(inb(port), 1);
        if (size == 2) fold(inw(port), 2);
        if (size == 4) fold(inl(port), 4);
    }
}

int main(void) {
    rng_state = cmdline_uint("seed", 1) | 1u;
    unsigned rounds = cmdline_uint("rounds", 20000);
    pci_enumerate();
    pci_assign_resources();
    for (unsigned k = 0; k < pci_dev_count(); k++) {
        const struct pci_dev* d = pci_dev_get(k);
        printf("hostile: %02x.%x %04x:%04x", d->dev, d->fn, d->vendor, d->device);
        for (unsigned b = 0; b < 6; b++)
            if (d->bars[b].size)
                printf(" bar%u %x+%x", b, (uint32_t)d->bars[b].base, (uint32_t)d->bars[b].size);
        printf("\n");
    }
    for (unsigned i = 0; i < rounds; i++) {
        /* Now and then, what a BIOS would set up again, so that the devices decode much of
         * the time between random configuration writes. */
        if (i % 64 == 0) {
            pci_assign_resources();
            for (unsigned k = 0; k < pci_dev_count(); k++) {
                struct pci_dev* d = pci_dev_get(k);
                if (d->dev != 0) pci_command_update(d, 0, PCI_COMMAND_MASTER);
            }
        }
        unsigned kind = rnd() % 10;
        if (kind < 2)
            config_round();
        else if (kind < 8)
            mmio_round();
        else
            port_round();
    }
    printf("hostile: %u rounds, %u reads, checksum %08x\n", rounds, reads, checksum);
    return 0;
}
