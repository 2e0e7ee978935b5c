/* vfukill: a guest that keeps reading edu's ID register while the test kills the device
 * server behind it and starts it again (tests/guest/vfio_user_guest_test.cpp). It prints
 * "phase 1" once it has read the ID, "all-ones" when the device is gone (a projected device
 * whose server died reads all-ones, like a surprise-removed PCI function), and "id again" when
 * a new server answers, then exits 0. Bounded: each phase gives up after a number of reads,
 * and the VM's own timeout bounds the whole run.
 *
 * With potemkin's multibar on the bus as well (its server killed and restarted with edu's),
 * BAR2, which is the server's memory mapped straight into the guest, must follow the server:
 * before the kill a write through BAR2 shows in the model's trapped BAR2 window (BAR1 0x014/
 * 0x018); after the restart BAR2 shows the new server's power-on memory, not what was written
 * to the old one, and a write through BAR2 shows in the new server's window. */
#include <potemkin/edu.h>
#include <potemkin/runtime.h>

#define MAX_READS 200000000u

#define MB_VENDOR_ID 0x1b36
#define MB_DEVICE_ID 0xff01
#define MB_ID 0x7261626du
#define MB_SEED 0x5eed0000u /* BAR2 dword at offset X reads X ^ seed until written */
#define MB_REG_ID 0x000
#define MB_REG_BAR2_WINDOW 0x014
#define MB_REG_BAR2_PEEK 0x018

static uint32_t edu_mmio;
static uint32_t mb_mmio, mb_mem64;

/* BAR2's dword at `offset` as the multibar model sees it (a trapped register). */
static uint32_t mb_peek(uint32_t offset) {
    mmio_write32(mb_mmio + MB_REG_BAR2_WINDOW, offset);
    return mmio_read32(mb_mmio + MB_REG_BAR2_PEEK);
}

static uint32_t read_id(void) {
    return mmio_read32(edu_mmio + EDU_REG_ID);
}

/* Reads until the ID is (or is not) `value`; returns false when MAX_READS ran out. */
static bool wait_id(uint32_t value, bool equal) {
    for (uint32_t i = 0; i < MAX_READS; i++) {
        uint32_t v = read_id();
        if ((v == value) == equal) return true;
        cpu_relax();
    }
    return false;
}

int main(void) {
    puts("vfukill: reading edu's ID while its server is killed and restarted");
    pci_enumerate();
    pci_assign_resources();
    struct pci_dev* edu = pci_find(EDU_VENDOR_ID, EDU_DEVICE_ID);
    if (!edu) {
        puts("vfukill: no edu on bus 0");
        return 1;
    }
    edu_mmio = (uint32_t)edu->bars[0].base;
    if (read_id() != EDU_ID_VALUE) {
        printf("vfukill: edu ID reads 0x%08x\n", read_id());
        return 2;
    }
    struct pci_dev* mb = pci_find(MB_VENDOR_ID, MB_DEVICE_ID);
    if (mb) {
        mb_mmio = (uint32_t)mb->bars[1].base;
        mb_mem64 = (uint32_t)mb->bars[2].base;
        mmio_write32(mb_mem64 + 0x100, 0xdeadbeefu);
        uint32_t seen = mb_peek(0x100);
        if (seen != 0xdeadbeefu) {
            printf("vfukill: multibar's server sees 0x%08x behind a BAR2 write\n", seen);
            return 6;
        }
        puts("multibar: a BAR2 write reaches the server");
    }
    puts("phase 1");
    if (!wait_id(0xffffffffu, true)) {
        puts("vfukill: the device never went away");
        return 3;
    }
    puts("all-ones");
    if (!wait_id(EDU_ID_VALUE, true)) {
        printf("vfukill: the device never came back (reads 0x%08x)\n", read_id());
        return 4;
    }
    puts("id again");
    /* The device works, not just its ID: liveness inverts what was written. */
    mmio_write32(edu_mmio + EDU_REG_LIVENESS, 0x12345678u);
    uint32_t live = mmio_read32(edu_mmio + EDU_REG_LIVENESS);
    if (live != ~0x12345678u) {
        printf("vfukill: liveness reads 0x%08x\n", live);
        return 5;
    }
    if (mb) {
        uint32_t i = 0;
        while (mmio_read32(mb_mmio + MB_REG_ID) != MB_ID && i < MAX_READS) i++;
        if (i == MAX_READS) {
            puts("vfukill: multibar never came back");
            return 7;
        }
        /* A new server process: its BAR2 memory is at power-on, the old write is not there. */
        uint32_t old = mmio_read32(mb_mem64 + 0x100);
        if (old != (0x100u ^ MB_SEED)) {
            printf("vfukill: BAR2 reads 0x%08x: still the old server's memory\n", old);
            return 8;
        }
        mmio_write32(mb_mem64 + 0x200, 0xcafef00du);
        uint32_t seen = mb_peek(0x200);
        if (seen != 0xcafef00du) {
            printf("vfukill: the new server sees 0x%08x behind a BAR2 write\n", seen);
            return 9;
        }
        puts("multibar: a BAR2 write reaches the new server");
    }
    puts("vfukill: done");
    return 0;
}
