/* Local APIC at 0xfee00000 (each vCPU sees its own) and MSI message helpers. */
#ifndef POTEMKIN_LAPIC_H
#define POTEMKIN_LAPIC_H

#include <stdint.h>

#define LAPIC_BASE 0xfee00000u
#define LAPIC_REG_ID 0x020
#define LAPIC_REG_VERSION 0x030
#define LAPIC_REG_TPR 0x080
#define LAPIC_REG_EOI 0x0b0
#define LAPIC_REG_SVR 0x0f0
#define LAPIC_SVR_ENABLE 0x100u

uint32_t lapic_read(unsigned reg);
void lapic_write(unsigned reg, uint32_t value);
/* Software-enables the LAPIC: SVR = 0x100 | spurious_vector. */
void lapic_enable(unsigned spurious_vector);
void lapic_eoi(void);
/* APIC ID (ID register bits 31:24). */
unsigned lapic_id(void);
void lapic_set_tpr(unsigned priority);

/* MSI address for a fixed-destination, physical-mode message to apic_id. */
static inline uint32_t msi_address(unsigned apic_id) {
    return 0xfee00000u | ((uint32_t)apic_id << 12);
}
/* MSI data: vector, fixed delivery, edge. */
static inline uint32_t msi_data(unsigned vector) {
    return vector & 0xffu;
}

#endif
