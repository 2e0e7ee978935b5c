/* A minimal NVMe controller driver (NVM Express Base Specification 1.4): reset and enable,
 * one admin queue pair, one I/O queue pair, commands issued one at a time.
 *
 * Completions arrive either by pin-based interrupt (INTx through the PIC; the handler
 * consumes the completion queue entries, rings the CQ head doorbell so the device drops
 * its level, then EOIs) or by polling the completion queues' phase tags. In interrupt mode
 * a command whose interrupt does not come within NVME_IRQ_WAIT_MS is looked for by
 * polling; when found, the driver notes the missing interrupt and polls from then on, so a
 * broken interrupt path costs one wait and shows in the counters instead of hanging.
 *
 * Every function returning int gives 0 on success and -1 on failure, with ctrl->error
 * describing what failed. */
#ifndef NVME_CTRL_H
#define NVME_CTRL_H

#include <potemkin/pci.h>
#include <stdbool.h>
#include <stdint.h>

#include "nvme_spec.h"

#define NVME_QUEUE_DEPTH 16   /* entries per queue (lower if CAP.MQES says so) */
#define NVME_IRQ_WAIT_MS 5000 /* interrupt mode: then look at the queue ourselves */
#define NVME_COMMAND_TIMEOUT_MS 20000
#define NVME_SPURIOUS_LIMIT 10000 /* interrupts that found nothing before the line is masked */

struct nvme_completion {
    uint32_t dw0;    /* command specific */
    uint16_t status; /* status field (SC, SCT, DNR...), 0 = success */
    uint16_t cid;
    uint16_t sq_head;
    bool by_irq; /* consumed by the interrupt handler */
};

struct nvme_queue {
    uint16_t id;
    uint16_t depth;
    volatile uint8_t* sq; /* depth * 64 bytes, page aligned */
    volatile uint8_t* cq; /* depth * 16 bytes, page aligned */
    uintptr_t sq_doorbell, cq_doorbell;
    uint16_t sq_tail, cq_head;
    uint8_t phase; /* phase tag of entries not consumed yet */
    uint16_t next_cid;
    /* consumed completions by cid % depth; one command is in flight at a time */
    struct nvme_completion done[NVME_QUEUE_DEPTH];
    bool done_valid[NVME_QUEUE_DEPTH];
};

struct nvme_ctrl {
    struct pci_dev* pci;
    uintptr_t regs; /* BAR0 */
    uint64_t cap;
    uint32_t vs;
    unsigned doorbell_stride; /* bytes: 4 << CAP.DSTRD */
    uint32_t ready_timeout_ms;
    bool use_irq;
    unsigned irq_line; /* PIC line (interrupt mode) */
    struct nvme_queue admin, io;
    bool io_created;

    /* counters */
    volatile unsigned irqs;            /* handler invocations */
    volatile unsigned irq_completions; /* completions the handler consumed */
    volatile unsigned spurious_irqs;   /* invocations that found nothing */
    unsigned poll_completions;         /* completions found by polling */
    unsigned missed_irqs;              /* interrupt mode: completions found only by polling */
    bool irq_masked_storm;             /* the handler masked the line after too many spurious */

    char error[160];
};

/* Checks BAR0 and the command register, reads CAP and VS (doorbell stride, ready timeout,
 * queue depth), allocates the queue memory, and in interrupt mode reads the interrupt line
 * the BIOS-like assignment wrote. Touches no controller register other than CAP/VS. */
int nvme_probe(struct nvme_ctrl* c, struct pci_dev* pci, bool use_irq);
/* CC.EN = 0 (if set), then waits CSTS.RDY = 0 for up to CAP.TO. */
int nvme_reset(struct nvme_ctrl* c);
/* Admin queues (AQA, ASQ, ACQ), then CC.EN = 1 with IOSQES 6, IOCQES 4, 4 KiB pages,
 * NVM command set, round robin; waits CSTS.RDY = 1 for up to CAP.TO. In interrupt mode
 * installs the INTx handler on the interrupt line and unmasks it (PIC, INTMC); otherwise
 * masks vector 0 with INTMS. */
int nvme_enable(struct nvme_ctrl* c);

/* Submits cmd (its CID is filled in) on the admin or I/O queue and waits for its
 * completion (into *out). Fails on timeout only: a command status != 0 is returned in
 * out->status for the caller to judge. */
int nvme_admin(struct nvme_ctrl* c, struct nvme_sqe* cmd, struct nvme_completion* out);
int nvme_io(struct nvme_ctrl* c, struct nvme_sqe* cmd, struct nvme_completion* out);

/* Identify into a 4 KiB page-aligned buffer. Fails on a non-zero status too. */
int nvme_identify(struct nvme_ctrl* c, unsigned cns, uint32_t nsid, void* page);
/* Set Features / Number of Queues for one I/O queue pair; *allocated gets DW0. */
int nvme_set_queue_count(struct nvme_ctrl* c, uint32_t* allocated);
/* Creates I/O CQ 1 (physically contiguous, interrupts enabled on vector 0 in interrupt
 * mode) and I/O SQ 1 bound to it. */
int nvme_create_io_queues(struct nvme_ctrl* c);
/* Deletes I/O SQ 1 then CQ 1. */
int nvme_delete_io_queues(struct nvme_ctrl* c);
/* Normal shutdown: CC.SHN = 01b, waits CSTS.SHST = 10b. */
int nvme_shutdown(struct nvme_ctrl* c);

/* Describes the data pointer of a transfer of len bytes at buf (dword aligned, physically
 * contiguous) with memory pages of 4 KiB: PRP1 = buf; PRP2 unused, the second page, or
 * prp_list (a zeroed-or-not page the caller owns) filled with the pages after the first.
 * At most 512 list entries (no list chaining): len <= 2 MiB. */
void nvme_set_prps(struct nvme_sqe* cmd, uintptr_t buf, uint32_t len, uint64_t* prp_list);

/* READ (NVM opcode 02h) of nblocks from slba of nsid into buf with block_size bytes per
 * block; prp_list as for nvme_set_prps. *out as for nvme_io. */
int nvme_read(struct nvme_ctrl* c, uint32_t nsid, uint64_t slba, uint32_t nblocks,
              uint32_t block_size, uintptr_t buf, uint64_t* prp_list, struct nvme_completion* out);

/* "SCT 0 SC 0x80 (DNR)" and the like, for messages. */
const char* nvme_status_text(uint16_t status);

#endif
