/* QEMU's "edu" educational PCI device (QEMU docs/specs/edu.rst), as potemkin projects it
 * with hostdev="inproc:edu". In potemkin the factorial and DMA complete synchronously: the
 * result (and the interrupt, if requested) is there when the triggering write returns. */
#ifndef POTEMKIN_EDU_H
#define POTEMKIN_EDU_H

#define EDU_VENDOR_ID 0x1234
#define EDU_DEVICE_ID 0x11e8
#define EDU_BAR0_SIZE 0x100000u /* BAR0: 1 MiB MMIO */

/* BAR0 registers. Below 0x80 only 32-bit accesses; from 0x80 32 or 64-bit. */
#define EDU_REG_ID 0x00         /* RO 0x010000ed: major 1, minor 0, 0xed */
#define EDU_REG_LIVENESS 0x04   /* RW: reads the bitwise inverse of the last value written */
#define EDU_REG_FACTORIAL 0x08  /* RW: write n, read n! once status bit 0 clears */
#define EDU_REG_STATUS 0x20     /* bit 0 computing (RO), bit 7 raise an interrupt after factorial */
#define EDU_REG_IRQ_STATUS 0x24 /* RO: the raised interrupt causes (ORed) */
#define EDU_REG_IRQ_RAISE 0x60  /* WO: ORs the value into irq status and raises the interrupt */
#define EDU_REG_IRQ_ACK 0x64    /* WO: clears those bits; the interrupt drops when none is left */
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_COUNT 0x90
#define EDU_REG_DMA_CMD 0x98

#define EDU_ID_VALUE 0x010000edu
#define EDU_STATUS_COMPUTING 0x01u
#define EDU_STATUS_IRQ_FACT 0x80u

#define EDU_IRQ_FACT 0x00000001u /* irq status after a factorial with EDU_STATUS_IRQ_FACT */
#define EDU_IRQ_DMA 0x00000100u  /* irq status after a DMA with EDU_DMA_IRQ */

#define EDU_DMA_START 0x1u
#define EDU_DMA_TO_RAM 0x2u /* direction: 1 = EDU buffer → RAM, 0 = RAM → EDU buffer */
#define EDU_DMA_IRQ 0x4u    /* raise EDU_IRQ_DMA when done */

#define EDU_DMA_BUFFER 0x40000u /* the device's buffer, in the device's DMA address space */
#define EDU_DMA_BUFFER_SIZE 0x1000u

#endif
