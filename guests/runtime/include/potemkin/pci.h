/* PCI on bus 0 through configuration mechanism #1 (ports 0xcf8/0xcfc), and what a BIOS and
 * an OS do with it: enumeration, BAR sizing, resource assignment, INTx routing, capability
 * lookup, MSI and MSI-X programming.
 *
 * Typical use:
 *     pci_enumerate();            finds and sizes every function on bus 0
 *     pci_assign_resources();     BARs, ROMs, decode + bus master, interrupt line, ELCR
 *     pci_print_all();            lspci-like listing
 *     struct pci_dev* d = pci_find(0x1234, 0x11e8);
 *
 * Resource windows (docs/guest-abi.md): memory BARs and ROMs from 0xc0000000 (up to
 * 0xfec00000), I/O BARs from 0xc000 (up to 0xffff); every resource naturally aligned.
 * INTx: PIRQ A-D reach PIC lines 10, 10, 11, 11; a function in slot S using pin P (1 = INTA)
 * is on PIRQ (S + P - 1) % 4. The lines used are switched to level triggering in the ELCR.
 *
 * Not handled: buses other than 0, PCI-to-PCI bridges' windows (a bridge is listed, its
 * BARs are sized and assigned like a type 0 function's, nothing behind it is scanned). */
#ifndef POTEMKIN_PCI_H
#define POTEMKIN_PCI_H

#include <stdbool.h>
#include <stdint.h>

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

/* Type 0 header offsets (PCI Local Bus Specification 3.0, 6.1). */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09 /* then subclass 0x0a, class 0x0b */
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_ROM_ADDRESS 0x30
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d

#define PCI_COMMAND_IO 0x0001u
#define PCI_COMMAND_MEMORY 0x0002u
#define PCI_COMMAND_MASTER 0x0004u
#define PCI_COMMAND_INTX_DISABLE 0x0400u

#define PCI_STATUS_INTERRUPT 0x0008u
#define PCI_STATUS_CAP_LIST 0x0010u

#define PCI_HEADER_MULTI_FUNCTION 0x80u

#define PCI_ROM_ENABLE 0x1u
#define PCI_ROM_ADDRESS_MASK 0xfffff800u

#define PCI_CAP_ID_PM 0x01
#define PCI_CAP_ID_MSI 0x05
#define PCI_CAP_ID_MSIX 0x11

/* MSI capability (6.8.1): offsets from the capability. */
#define PCI_MSI_FLAGS 0x02
#define PCI_MSI_FLAGS_ENABLE 0x0001u
#define PCI_MSI_FLAGS_QSIZE 0x0070u /* multiple message enable */
#define PCI_MSI_FLAGS_64BIT 0x0080u
#define PCI_MSI_FLAGS_MASKBIT 0x0100u
#define PCI_MSI_ADDRESS_LO 0x04
#define PCI_MSI_ADDRESS_HI 0x08 /* 64-bit layout only */
#define PCI_MSI_DATA_32 0x08
#define PCI_MSI_DATA_64 0x0c
#define PCI_MSI_MASK_32 0x0c
#define PCI_MSI_MASK_64 0x10

/* MSI-X capability (6.8.2). */
#define PCI_MSIX_FLAGS 0x02
#define PCI_MSIX_FLAGS_QSIZE 0x07ffu
#define PCI_MSIX_FLAGS_MASKALL 0x4000u
#define PCI_MSIX_FLAGS_ENABLE 0x8000u
#define PCI_MSIX_TABLE 0x04 /* BIR in bits 2:0, offset above */
#define PCI_MSIX_PBA 0x08
#define PCI_MSIX_ENTRY_SIZE 16
#define PCI_MSIX_ENTRY_ADDR_LO 0x0
#define PCI_MSIX_ENTRY_ADDR_HI 0x4
#define PCI_MSIX_ENTRY_DATA 0x8
#define PCI_MSIX_ENTRY_CTRL 0xc
#define PCI_MSIX_ENTRY_CTRL_MASKBIT 0x1u

/* Resource windows of pci_assign_resources(). */
#define PCI_MMIO_WINDOW_BASE 0xc0000000u
#define PCI_MMIO_WINDOW_END 0xfec00000u /* exclusive */
#define PCI_IO_WINDOW_BASE 0xc000u
#define PCI_IO_WINDOW_END 0x10000u /* exclusive */

#define PCI_MAX_DEVICES 64
#define PCI_ROM_BAR 6 /* index used for the expansion ROM by pci_set_bar / pci_bar_kind */

struct pci_bar {
    uint64_t base; /* assigned address (0: unassigned) */
    uint64_t size; /* 0: not implemented */
    bool is_io;
    bool is_64; /* occupies this slot and the next */
    bool prefetch;
};

struct pci_dev {
    uint8_t bus, dev, fn;
    uint16_t vendor, device;
    uint32_t class; /* 24 bits: class << 16 | subclass << 8 | prog-if */
    uint8_t rev;
    uint8_t header_type;    /* as read, including the multi-function bit 7 */
    uint8_t irq_pin;        /* 0 none, 1..4 INTA..INTD */
    uint8_t irq_line;       /* 0xff until assigned */
    struct pci_bar bars[6]; /* the upper slot of a 64-bit pair has size 0 */
    uint32_t rom_base, rom_size;
};

/* ---- ECAM (PCI Express enhanced configuration access, docs/guest-abi.md) --------------- */
/* The window the VMM announces in the boot-info block (version 3); 0 when there is none. */
uint32_t pci_ecam_base(void);
uint32_t pci_ecam_size(void);
/* Configuration access through ECAM: base + (bus << 20 | dev << 15 | fn << 12 | off), offsets
 * 0-0xfff, accesses naturally aligned. Reads return all-ones (writes do nothing) when there is
 * no window or the bus is outside it. */
uint8_t pci_ecam_read8(unsigned bus, unsigned dev, unsigned fn, unsigned off);
uint16_t pci_ecam_read16(unsigned bus, unsigned dev, unsigned fn, unsigned off);
uint32_t pci_ecam_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off);
void pci_ecam_write8(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint8_t v);
void pci_ecam_write16(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint16_t v);
void pci_ecam_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v);

/* Which mechanism pci_cfg_* (and everything built on them: enumeration, resource assignment,
 * pci_set_bar, capabilities) use. PCI_ACCESS_PORTS (mechanism #1) is the default;
 * pci_set_access(PCI_ACCESS_ECAM) returns -1 and changes nothing when there is no window. */
enum pci_access { PCI_ACCESS_PORTS, PCI_ACCESS_ECAM };
int pci_set_access(enum pci_access mode);
enum pci_access pci_access_mode(void);

/* Extended capabilities (from 0x100; needs ECAM): offset of the first one with id, 0 if none
 * (walked defensively: at most 1024 entries, pointers below 0x100 end it). */
unsigned pci_ext_cap_find(const struct pci_dev* d, uint16_t id);

/* Configuration mechanism #1 (or ECAM, see pci_set_access). With mechanism #1 offsets are
 * within the 256-byte space; 16-bit accesses must be 2-byte aligned and 32-bit accesses
 * 4-byte aligned (the low offset bits select the byte lanes of 0xcfc-0xcff). */
uint8_t pci_cfg_read8(unsigned bus, unsigned dev, unsigned fn, unsigned off);
uint16_t pci_cfg_read16(unsigned bus, unsigned dev, unsigned fn, unsigned off);
uint32_t pci_cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off);
void pci_cfg_write8(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint8_t v);
void pci_cfg_write16(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint16_t v);
void pci_cfg_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v);

/* The same on a found function. */
uint8_t pci_read8(const struct pci_dev* d, unsigned off);
uint16_t pci_read16(const struct pci_dev* d, unsigned off);
uint32_t pci_read32(const struct pci_dev* d, unsigned off);
void pci_write8(const struct pci_dev* d, unsigned off, uint8_t v);
void pci_write16(const struct pci_dev* d, unsigned off, uint16_t v);
void pci_write32(const struct pci_dev* d, unsigned off, uint32_t v);

/* Scans the 32 slots of bus 0 (functions 1-7 of multi-function devices too), reads each
 * function's header and sizes its BARs and ROM (decode is switched off in the command
 * register while a BAR holds all-ones, then the BAR and command are restored). Forgets any
 * earlier scan. Returns the number of functions found (at most PCI_MAX_DEVICES). */
unsigned pci_enumerate(void);
unsigned pci_dev_count(void);
/* i-th function of the last scan (bus/slot/function order), NULL past the end. */
struct pci_dev* pci_dev_get(unsigned i);
/* First function with these IDs, NULL if none. */
struct pci_dev* pci_find(uint16_t vendor, uint16_t device);
/* The function at dev.fn on bus 0, NULL if none. */
struct pci_dev* pci_find_slot(unsigned dev, unsigned fn);

/* Sizes one BAR (0-5) or the ROM (PCI_ROM_BAR) of a function; fills the pci_dev fields. */
void pci_size_bars(struct pci_dev* d);

/* What a BIOS does: assigns every sized BAR and ROM of every function found, largest first,
 * naturally aligned (memory from PCI_MMIO_WINDOW_BASE, I/O from PCI_IO_WINDOW_BASE), leaves
 * ROMs disabled, enables I/O and/or memory decode as needed plus bus mastering, writes the
 * interrupt-line register and makes the lines used level-triggered in the ELCR. The host
 * bridge (class 0x0600) keeps its command register. Returns 0, or -1 if a window ran out
 * (the resources that did not fit stay unassigned, and their decode is not enabled). */
int pci_assign_resources(void);
/* Free space after what pci_assign_resources handed out (naturally aligned); 0 when the
 * window is exhausted. For relocating a BAR. */
uint32_t pci_alloc_mmio(uint64_t size);
uint32_t pci_alloc_io(uint32_t size);

/* The PIC line a function's INTx pin reaches (0xff when the pin is 0). */
unsigned pci_intx_line(unsigned slot, unsigned pin);

/* Command register helpers. */
uint16_t pci_command(const struct pci_dev* d);
void pci_set_command(const struct pci_dev* d, uint16_t cmd);
/* Sets then clears bits; returns the previous value. */
uint16_t pci_command_update(const struct pci_dev* d, uint16_t set, uint16_t clear);

/* Moves BAR bar (0-5, or PCI_ROM_BAR) to base the way an OS does: memory (or I/O) decode
 * off, the BAR (both halves of a 64-bit BAR, high dword last) written, the command register
 * restored. The ROM keeps its enable bit. Updates d. */
void pci_set_bar(struct pci_dev* d, unsigned bar, uint64_t base);
/* Sets or clears the ROM BAR's enable bit (memory decode must also be on for it to decode). */
void pci_rom_enable(const struct pci_dev* d, bool enable);

/* "mem32", "mem64", "io", "mem64 pf" ... for printing. */
const char* pci_bar_kind(const struct pci_dev* d, unsigned bar);
/* lspci-like: "00:03.0 00ff: 1234:11e8 (rev 10) irq 11 pin A", then one line per BAR/ROM,
 * e.g. "  BAR0: mem32 0xc0000000 [size 0x100000]". */
void pci_print(const struct pci_dev* d);
void pci_print_all(void);

/* Offset of the first capability with id cap_id, 0 if none (the list is walked defensively:
 * at most 48 entries, pointers below 0x40 end it). */
unsigned pci_cap_find(const struct pci_dev* d, uint8_t cap_id);

/* MSI: programs address (64-bit layout: high dword 0) and data, one vector (MME 0), unmasks
 * vector 0 when per-vector masking exists, sets the enable bit, and sets the command
 * register's INTx-disable bit as an OS does. Returns 0, or -1 without an MSI capability. */
int pci_msi_enable(const struct pci_dev* d, uint32_t address, uint16_t data);
/* Clears the MSI enable bit and the INTx-disable bit. */
void pci_msi_disable(const struct pci_dev* d);

/* MSI-X. pci_msix_enable sets enable with the function mask ON (entries can then be
 * programmed without firing) and INTx disable; returns the table size, or -1 without an
 * MSI-X capability or when the table's BAR is not assigned. */
int pci_msix_enable(const struct pci_dev* d);
void pci_msix_disable(const struct pci_dev* d);
/* Clears (mask = false) or sets the function mask. */
void pci_msix_function_mask(const struct pci_dev* d, bool mask);
/* Address of the table / PBA in the guest's physical space (0 if unassigned). */
uintptr_t pci_msix_table(const struct pci_dev* d);
uintptr_t pci_msix_pba(const struct pci_dev* d);
/* Writes entry's address (high dword 0) and data; leaves its mask bit as it is. */
void pci_msix_set_entry(const struct pci_dev* d, unsigned entry, uint32_t address, uint32_t data);
void pci_msix_mask(const struct pci_dev* d, unsigned entry, bool mask);
/* The entry's pending bit in the PBA. */
bool pci_msix_pending(const struct pci_dev* d, unsigned entry);

#endif
