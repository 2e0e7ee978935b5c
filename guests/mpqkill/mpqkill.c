/* mpqkill: a guest that keeps reading the NVMe version register of QEMU's nvme, projected by
 * PCI_FRONT over mpqemu (hostdev="qemu:nvme,..."), while the test SIGKILLs the QEMU process
 * (tests/interop/mpqemu_client_interop_test.cpp). It prints "phase 1" once VS reads 1.4.0,
 * then "all-ones" when BAR0 and the forwarded config bytes read all-ones (a device whose
 * process died looks surprise-removed), and exits 0. Bounded: the wait gives up after a number
 * of reads, and the VM's own timeout bounds the whole run. */
#include <potemkin/runtime.h>

#define NVME_VENDOR_ID 0x1b36
#define NVME_DEVICE_ID 0x0010
#define NVME_REG_VS 0x08
#define NVME_VS_1_4 0x00010400u
#define MAX_READS 200000000u

int main(void) {
    puts("mpqkill: reading nvme's VS while its QEMU is killed");
    pci_enumerate();
    pci_assign_resources();
    struct pci_dev* d = pci_find(NVME_VENDOR_ID, NVME_DEVICE_ID);
    if (!d) {
        puts("mpqkill: no nvme on bus 0");
        return 1;
    }
    if (d->bars[0].base == 0 || d->bars[0].base >= 0x100000000ull) {
        puts("mpqkill: BAR0 is not assigned below 4 GiB");
        return 2;
    }
    uint32_t vs_addr = (uint32_t)d->bars[0].base + NVME_REG_VS;
    uint32_t vs = mmio_read32(vs_addr);
    if (vs != NVME_VS_1_4) {
        printf("mpqkill: VS reads 0x%08x\n", vs);
        return 3;
    }
    puts("phase 1");
    uint32_t i = 0;
    for (; i < MAX_READS; i++) {
        if (mmio_read32(vs_addr) == 0xffffffffu) break;
        cpu_relax();
    }
    if (i == MAX_READS) {
        puts("mpqkill: the device never went away");
        return 4;
    }
    puts("all-ones");
    uint32_t id = pci_read32(d, 0x00);
    if (id != 0xffffffffu) {
        printf("mpqkill: the vendor/device dword reads 0x%08x\n", id);
        return 5;
    }
    mmio_write32(vs_addr, 0); /* dropped, must not fault */
    puts("mpqkill: done");
    return 0;
}
