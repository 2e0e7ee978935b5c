/* PCI Express enhanced configuration access (ECAM): the memory window the VMM announces in the
 * boot-info block (docs/guest-abi.md), and the extended capability walk. */
#include <potemkin/boot_info.h>
#include <potemkin/mmio.h>
#include <potemkin/pci.h>

static enum pci_access access_mode = PCI_ACCESS_PORTS;

uint32_t pci_ecam_base(void) {
    const struct potemkin_boot_info* bi = boot_info();
    if (!bi || bi->magic != POTEMKIN_BOOT_MAGIC || bi->version < 3) return 0;
    return bi->ecam_base;
}

uint32_t pci_ecam_size(void) {
    return pci_ecam_base() ? boot_info()->ecam_size : 0;
}

/* The address of a register, 0 when the window does not cover the bus. */
static uint32_t ecam_address(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    uint32_t base = pci_ecam_base();
    uint32_t rel =
        ((bus & 0xffu) << 20) | ((dev & 0x1fu) << 15) | ((fn & 7u) << 12) | (off & 0xfffu);
    if (!base || rel >= pci_ecam_size()) return 0;
    return base + rel;
}

uint8_t pci_ecam_read8(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    uint32_t a = ecam_address(bus, dev, fn, off);
    return a ? mmio_read8(a) : 0xff;
}
uint16_t pci_ecam_read16(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    uint32_t a = ecam_address(bus, dev, fn, off);
    return a ? mmio_read16(a) : 0xffff;
}
uint32_t pci_ecam_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    uint32_t a = ecam_address(bus, dev, fn, off);
    return a ? mmio_read32(a) : 0xffffffffu;
}
void pci_ecam_write8(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint8_t v) {
    uint32_t a = ecam_address(bus, dev, fn, off);
    if (a) mmio_write8(a, v);
}
void pci_ecam_write16(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint16_t v) {
    uint32_t a = ecam_address(bus, dev, fn, off);
    if (a) mmio_write16(a, v);
}
void pci_ecam_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v) {
    uint32_t a = ecam_address(bus, dev, fn, off);
    if (a) mmio_write32(a, v);
}

int pci_set_access(enum pci_access mode) {
    if (mode == PCI_ACCESS_ECAM && !pci_ecam_base()) return -1;
    access_mode = mode;
    return 0;
}

enum pci_access pci_access_mode(void) {
    return access_mode;
}

unsigned pci_ext_cap_find(const struct pci_dev* d, uint16_t id) {
    unsigned off = 0x100;
    for (unsigned n = 0; n < 1024 && off >= 0x100 && off < 0x1000; n++) {
        uint32_t h = pci_ecam_read32(d->bus, d->dev, d->fn, off);
        if (h == 0 || h == 0xffffffffu) return 0;
        if ((h & 0xffffu) == id) return off;
        off = (h >> 20) & 0xffcu;
    }
    return 0;
}
