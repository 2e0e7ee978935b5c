/* vfukill: a guest that keeps reading edu's ID register while the test kills the device
 * server behind it and starts it again (tests/guest/vfio_user_guest_test.cpp). It prints
 * "phase 1" once it has read the ID, "all-ones" when the device is gone (a projected device
 * whose server died reads all-ones, like a surprise-removed PCI function), and "id again" when
 * a new server answers, then exits 0. Bounded: each phase gives up after a number of reads,
 * and the VM's own timeout bounds the whole run. */
#include <potemkin/edu.h>
#include <potemkin/runtime.h>

#define MAX_READS 200000000u

static uint32_t edu_mmio;

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
    puts("vfukill: done");
    return 0;
}
