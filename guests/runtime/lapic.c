/* Local APIC register helpers. */
#include <potemkin/lapic.h>
#include <potemkin/mmio.h>

uint32_t lapic_read(unsigned reg) {
    return mmio_read32(LAPIC_BASE + reg);
}
void lapic_write(unsigned reg, uint32_t value) {
    mmio_write32(LAPIC_BASE + reg, value);
}

void lapic_enable(unsigned spurious_vector) {
    lapic_write(LAPIC_REG_SVR, LAPIC_SVR_ENABLE | (spurious_vector & 0xff));
}

void lapic_eoi(void) {
    lapic_write(LAPIC_REG_EOI, 0);
}
unsigned lapic_id(void) {
    return lapic_read(LAPIC_REG_ID) >> 24;
}
void lapic_set_tpr(unsigned priority) {
    lapic_write(LAPIC_REG_TPR, priority & 0xff);
}
