/* Register layout of the VMM's TEST_DEVICE (docs/test-device.md). */
#ifndef POTEMKIN_TEST_DEVICE_H
#define POTEMKIN_TEST_DEVICE_H

#define TD_DEFAULT_PORT 0x700u
#define TD_DEFAULT_MMIO 0xd0000000u
#define TD_MAGIC 0x54534554u /* "TEST" */

/* MMIO page offsets */
#define TD_MMIO_SCRATCH 0x000u /* 0x000-0x7ff, 1/2/4/8 bytes */
#define TD_MMIO_SCRATCH_SIZE 0x800u
#define TD_MMIO_MAGIC 0x800u
#define TD_MMIO_IRQ_PULSE 0x808u /* write line number: assert then deassert */
#define TD_MMIO_IRQ_LEVEL 0x80cu /* bits 7:0 line, bit 8 level */
#define TD_MMIO_MSI_ADDR_LO 0x810u
#define TD_MMIO_MSI_ADDR_HI 0x814u
#define TD_MMIO_MSI_DATA 0x818u     /* writing sends the message */
#define TD_MMIO_ACCESS_COUNT 0x820u /* 8 bytes */

/* Port offsets */
#define TD_PORT_SCRATCH 0x0u /* 0x0-0x7, 1/2/4 bytes */
#define TD_PORT_SCRATCH_SIZE 8u
#define TD_PORT_MAGIC 0x8u

#endif
