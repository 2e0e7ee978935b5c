/* NVM Express register, queue-entry and command layouts used by the nvme guest.
 * Reference: NVM Express Base Specification, revision 1.4 (sections cited per group). */
#ifndef NVME_SPEC_H
#define NVME_SPEC_H

#include <stdint.h>

/* PCI class code of an NVM Express I/O controller (base 01h, sub 08h, prog-if 02h). */
#define NVME_PCI_CLASS 0x010802u

/* ---- controller registers in BAR0 (3.1) ---------------------------------------------- */
#define NVME_REG_CAP 0x00   /* 64-bit controller capabilities */
#define NVME_REG_VS 0x08    /* version */
#define NVME_REG_INTMS 0x0c /* interrupt mask set (pin-based and single MSI only) */
#define NVME_REG_INTMC 0x10 /* interrupt mask clear */
#define NVME_REG_CC 0x14    /* controller configuration */
#define NVME_REG_CSTS 0x1c  /* controller status */
#define NVME_REG_AQA 0x24   /* admin queue attributes */
#define NVME_REG_ASQ 0x28   /* 64-bit admin submission queue base */
#define NVME_REG_ACQ 0x30   /* 64-bit admin completion queue base */
#define NVME_REG_DOORBELLS 0x1000

/* CAP fields (3.1.1) */
#define NVME_CAP_MQES(cap) ((unsigned)((cap)&0xffff))         /* max entries per queue, 0's based */
#define NVME_CAP_CQR(cap) ((unsigned)(((cap) >> 16) & 1))     /* contiguous queues required */
#define NVME_CAP_TO(cap) ((unsigned)(((cap) >> 24) & 0xff))   /* ready timeout, 500 ms units */
#define NVME_CAP_DSTRD(cap) ((unsigned)(((cap) >> 32) & 0xf)) /* doorbell stride 4 << n */
#define NVME_CAP_CSS(cap) ((unsigned)(((cap) >> 37) & 0xff))  /* command sets, bit 0 NVM */
#define NVME_CAP_MPSMIN(cap) ((unsigned)(((cap) >> 48) & 0xf)) /* 2 ^ (12 + n) bytes */
#define NVME_CAP_MPSMAX(cap) ((unsigned)(((cap) >> 52) & 0xf))

/* CC fields (3.1.5) */
#define NVME_CC_EN 0x1u
#define NVME_CC_CSS_NVM (0u << 4)
#define NVME_CC_MPS(n) ((uint32_t)(n) << 7) /* memory page size 2 ^ (12 + n) */
#define NVME_CC_AMS_RR (0u << 11)           /* round robin arbitration */
#define NVME_CC_SHN_MASK (3u << 14)
#define NVME_CC_SHN_NORMAL (1u << 14)
#define NVME_CC_IOSQES(n) ((uint32_t)(n) << 16) /* 2 ^ n bytes per SQ entry */
#define NVME_CC_IOCQES(n) ((uint32_t)(n) << 20) /* 2 ^ n bytes per CQ entry */

/* CSTS fields (3.1.6) */
#define NVME_CSTS_RDY 0x1u
#define NVME_CSTS_CFS 0x2u /* controller fatal status */
#define NVME_CSTS_SHST_MASK (3u << 2)
#define NVME_CSTS_SHST_DONE (2u << 2) /* shutdown processing complete */

/* ---- queues (4.2, 4.6) ------------------------------------------------------------------ */
#define NVME_SQE_SIZE 64 /* 2 ^ 6, what CC.IOSQES = 6 selects */
#define NVME_CQE_SIZE 16 /* 2 ^ 4, what CC.IOCQES = 4 selects */
#define NVME_SQES_LOG2 6
#define NVME_CQES_LOG2 4

/* Submission queue entry: 16 dwords (4.2). DW0 opcode 7:0, CID 31:16; DW1 NSID;
 * DW6-7 PRP entry 1; DW8-9 PRP entry 2; DW10-15 command specific. */
struct nvme_sqe {
    uint32_t dw[16];
};
#define NVME_SQE_DW0(opcode, cid) ((uint32_t)(opcode) | ((uint32_t)(cid) << 16))

/* Completion queue entry DW2: SQ head pointer 15:0, SQ identifier 31:16.
 * DW3: command identifier 15:0, phase tag 16, status field 31:17 (4.6.1). */
#define NVME_CQE_CID(dw3) ((uint16_t)((dw3)&0xffff))
#define NVME_CQE_PHASE(dw3) (((dw3) >> 16) & 1)
#define NVME_CQE_STATUS(dw3) ((uint16_t)((dw3) >> 17)) /* SC 7:0, SCT 10:8, CRD, M, DNR 14 */
#define NVME_STATUS_SC(st) ((unsigned)((st)&0xff))
#define NVME_STATUS_SCT(st) ((unsigned)(((st) >> 8) & 0x7))
#define NVME_STATUS_DNR(st) ((unsigned)(((st) >> 14) & 1))

/* Generic command status values (SCT 0, 4.6.1.2.1) */
#define NVME_SC_SUCCESS 0x00
#define NVME_SC_LBA_OUT_OF_RANGE 0x80

/* ---- admin commands (5) ------------------------------------------------------------------ */
#define NVME_ADMIN_DELETE_IO_SQ 0x00
#define NVME_ADMIN_CREATE_IO_SQ 0x01
#define NVME_ADMIN_DELETE_IO_CQ 0x04
#define NVME_ADMIN_CREATE_IO_CQ 0x05
#define NVME_ADMIN_IDENTIFY 0x06
#define NVME_ADMIN_SET_FEATURES 0x09

/* Create I/O Completion Queue CDW11 (5.3): interrupt vector 31:16, IEN 1, PC 0. */
#define NVME_CQ_FLAGS_PC 0x1u
#define NVME_CQ_FLAGS_IEN 0x2u
/* Create I/O Submission Queue CDW11 (5.4): CQID 31:16, QPRIO 2:1, PC 0. */
#define NVME_SQ_FLAGS_PC 0x1u

/* Identify CNS values (5.15.1) */
#define NVME_CNS_NAMESPACE 0x00
#define NVME_CNS_CONTROLLER 0x01

/* Identify Controller data structure offsets (5.15.2.2, figure 247) */
#define NVME_IDCTRL_VID 0   /* u16 PCI vendor ID */
#define NVME_IDCTRL_SSVID 2 /* u16 PCI subsystem vendor ID */
#define NVME_IDCTRL_SN 4    /* 20 ASCII bytes, space padded */
#define NVME_IDCTRL_SN_LEN 20
#define NVME_IDCTRL_MN 24 /* 40 ASCII bytes */
#define NVME_IDCTRL_MN_LEN 40
#define NVME_IDCTRL_FR 64 /* 8 ASCII bytes */
#define NVME_IDCTRL_FR_LEN 8
#define NVME_IDCTRL_MDTS 77   /* u8: max transfer 2 ^ n minimum pages, 0 = no limit */
#define NVME_IDCTRL_CNTLID 78 /* u16 */
#define NVME_IDCTRL_VER 80    /* u32, same layout as VS */
#define NVME_IDCTRL_SQES 512  /* u8: max log2 7:4, required log2 3:0 */
#define NVME_IDCTRL_CQES 513
#define NVME_IDCTRL_NN 516 /* u32 number of namespaces */

/* Identify Namespace data structure offsets (5.15.2.1, figure 245) */
#define NVME_IDNS_NSZE 0   /* u64 size in logical blocks */
#define NVME_IDNS_NCAP 8   /* u64 capacity */
#define NVME_IDNS_NUSE 16  /* u64 utilisation */
#define NVME_IDNS_NLBAF 25 /* u8 number of LBA formats, 0's based */
#define NVME_IDNS_FLBAS 26 /* u8: bits 3:0 the format in use */
#define NVME_IDNS_LBAF 128 /* 16 x u32: MS 15:0, LBADS 23:16, RP 25:24 */

/* Features (5.21.1) */
#define NVME_FEAT_NUM_QUEUES 0x07 /* CDW11/DW0: NSQR 15:0, NCQR 31:16, 0's based */

/* ---- NVM command set (6) ---------------------------------------------------------------- */
#define NVME_CMD_READ 0x02 /* CDW10-11 SLBA, CDW12 NLB 15:0 (0's based) */

#endif
