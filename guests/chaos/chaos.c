/* chaos: a guest that keeps using edu while the test kills, restarts, stops and continues the
 * device server behind it (tests/guest/fault_injection_test.cpp, docs/hostile.md). Each round
 * writes a value to edu's liveness register and reads it back inverted, and reads the ID
 * register: every value read must be the right one or all-ones (the device gone); anything
 * else is a wrong value, which is what a client mixing up replies across a reconnect would
 * produce. It prints "chaos: up N" each time the device answers again after being gone (N
 * counts from 1 at the start) and "chaos: gone N" each time it stops answering, and exits when
 * the test writes a non-zero word to the mailbox at physical 0x3000 (unused by the guest ABI),
 * printing the counts. Exit 0 iff no value was wrong. Bounded by the VM's timeout. */
#include <potemkin/edu.h>
#include <potemkin/runtime.h>

int main(void) {
    volatile uint32_t* stop = (volatile uint32_t*)0x3000;
    pci_enumerate();
    pci_assign_resources();
    struct pci_dev* edu = pci_find(EDU_VENDOR_ID, EDU_DEVICE_ID);
    if (!edu) {
        puts("chaos: no edu on bus 0");
        return 2;
    }
    uintptr_t mmio = (uintptr_t)edu->bars[0].base;
    unsigned ups = 0, gones = 0;
    uint32_t good = 0, all_ones = 0, wrong = 0;
    bool up = false;
    /* What the liveness register may legitimately hold besides ~x (see below): the value
     * written before x, the last one read back right, and the one written just after it (the
     * write a stopped server takes when it continues). */
    uint32_t prev = 0xffffffffu, last_good = 0xffffffffu, after_good = 0xffffffffu;
    bool after_good_next = false;
    for (uint32_t x = 1; *stop == 0; prev = x, x = x * 1664525u + 1013904223u) {
        if (x == 0 || x == 0xffffffffu) continue; /* ~x must differ from all-ones and x */
        if (after_good_next) {
            after_good = x;
            after_good_next = false;
        }
        mmio_write32(mmio + EDU_REG_LIVENESS, x);
        uint32_t v = mmio_read32(mmio + EDU_REG_LIVENESS);
        uint32_t id = mmio_read32(mmio + EDU_REG_ID);
        bool ok = v == ~x && id == EDU_ID_VALUE;
        bool gone = v == 0xffffffffu && id == 0xffffffffu;
        if (ok) {
            good++;
            last_good = x;
            after_good_next = true;
            if (!up) {
                up = true;
                printf("chaos: up %u\n", ++ups);
            }
        } else if (gone) {
            all_ones++;
            if (up) {
                up = false;
                printf("chaos: gone %u\n", ++gones);
            }
        } else {
            /* The device may go or come back between the write and the reads: the write then
             * went to the dead server, or the stopped one never took it, and the liveness
             * register still holds what it held before: the previous value, the last value it
             * took before it went away (or the write in flight then), or its power-on 0 in a
             * restarted server. An engine that stops only between translation blocks
             * (Unicorn) never shows this; one that exits on every access (KVM) does. A reply
             * mixed up across a reconnect shows anything else: the ID in the liveness
             * register, a liveness value in the ID, a value never written. */
            bool id_ok = id == EDU_ID_VALUE || id == 0xffffffffu;
            bool v_ok = v == ~x || v == 0xffffffffu || v == ~prev || v == ~last_good ||
                        v == ~after_good || v == 0;
            if (!id_ok || !v_ok) {
                wrong++;
                printf("chaos: wrong value: liveness %08x (wrote %08x) id %08x\n", v, x, id);
            }
        }
    }
    printf("chaos: done: %u ups, %u gones, %u good, %u all-ones, %u wrong\n", ups, gones, good,
           all_ones, wrong);
    return wrong == 0 ? 0 : 1;
}
