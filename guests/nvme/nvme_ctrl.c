/* NVMe controller driver (see nvme_ctrl.h). Section numbers refer to the NVM Express Base
 * Specification 1.4. Everything runs on vCPU 0 with interrupts disabled except while
 * waiting (clock_wait_tick), so the interrupt handler and the polling path never run
 * concurrently. */
#include "nvme_ctrl.h"

#include <potemkin/runtime.h>
#include <stdarg.h>

#include "clock.h"

#define MEM_PAGE 4096u /* CC.MPS = 0 */

/* The controller whose interrupt handler is installed (the handler gets no context). */
static struct nvme_ctrl* irq_ctrl;

static __attribute__((format(printf, 2, 3))) int fail(struct nvme_ctrl* c, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t reg_read32(const struct nvme_ctrl* c, unsigned off) {
    return mmio_read32(c->regs + off);
}
static void reg_write32(const struct nvme_ctrl* c, unsigned off, uint32_t v) {
    mmio_write32(c->regs + off, v);
}
/* 64-bit registers as two dword accesses, low first (3.1: 64-bit registers may be
 * accessed as two 32-bit accesses). */
static void reg_write64(const struct nvme_ctrl* c, unsigned off, uint64_t v) {
    mmio_write64(c->regs + off, v);
}

const char* nvme_status_text(uint16_t status) {
    static char buf[48];
    snprintf(buf, sizeof buf, "SCT %u SC 0x%02x%s", NVME_STATUS_SCT(status), NVME_STATUS_SC(status),
             NVME_STATUS_DNR(status) ? " (DNR)" : "");
    return buf;
}

/* ---- queues ----------------------------------------------------------------------------- */

/* Doorbells (3.1.24/3.1.25): SQ y tail at 1000h + (2y) * stride, CQ y head at
 * 1000h + (2y + 1) * stride. */
static int queue_init(struct nvme_ctrl* c, struct nvme_queue* q, uint16_t id, uint16_t depth) {
    memset(q, 0, sizeof *q);
    q->id = id;
    q->depth = depth;
    q->sq = page_alloc(1);
    q->cq = page_alloc(1);
    if (!q->sq || !q->cq) return fail(c, "out of memory for queue %u", id);
    q->sq_doorbell = c->regs + NVME_REG_DOORBELLS + (2u * id) * c->doorbell_stride;
    q->cq_doorbell = c->regs + NVME_REG_DOORBELLS + (2u * id + 1) * c->doorbell_stride;
    q->phase = 1; /* the controller posts the first pass with phase 1 (4.6) */
    return 0;
}

/* Consumes every new entry of q's completion queue (phase tag flipped relative to the last
 * pass), records it by CID, then writes the CQ head doorbell once. Returns the count. */
static unsigned queue_reap(struct nvme_ctrl* c, struct nvme_queue* q, bool by_irq) {
    if (!q->cq) return 0;
    unsigned n = 0;
    for (;;) {
        volatile uint32_t* e = (volatile uint32_t*)(q->cq + (uint32_t)q->cq_head * NVME_CQE_SIZE);
        uint32_t dw3 = e[3];
        if (NVME_CQE_PHASE(dw3) != q->phase) break;
        __asm__ volatile("" ::: "memory"); /* DW3 (phase) before the other dwords */
        struct nvme_completion cpl = {
            .dw0 = e[0],
            .status = NVME_CQE_STATUS(dw3),
            .cid = NVME_CQE_CID(dw3),
            .sq_head = (uint16_t)(e[2] & 0xffff),
            .by_irq = by_irq,
        };
        unsigned slot = cpl.cid % q->depth;
        q->done[slot] = cpl;
        q->done_valid[slot] = true;
        if (++q->cq_head == q->depth) {
            q->cq_head = 0;
            q->phase ^= 1;
        }
        n++;
    }
    if (n) {
        mmio_write32(q->cq_doorbell, q->cq_head);
        if (by_irq)
            c->irq_completions += n;
        else
            c->poll_completions += n;
    }
    return n;
}

/* The consumed completion for cid, if there is one (then forgotten). */
static bool queue_take(struct nvme_queue* q, uint16_t cid, struct nvme_completion* out) {
    unsigned slot = cid % q->depth;
    if (!q->done_valid[slot] || q->done[slot].cid != cid) return false;
    *out = q->done[slot];
    q->done_valid[slot] = false;
    return true;
}

static void on_intx(struct int_frame* f) {
    (void)f;
    struct nvme_ctrl* c = irq_ctrl;
    c->irqs++;
    unsigned n = queue_reap(c, &c->admin, true);
    if (c->io_created) n += queue_reap(c, &c->io, true);
    if (!n && ++c->spurious_irqs >= NVME_SPURIOUS_LIMIT && !c->irq_masked_storm) {
        /* a level that never drops would keep the CPU in this handler for good */
        c->irq_masked_storm = true;
        pic_mask(c->irq_line);
    }
    /* after the doorbell: the device has dropped its level (the CQs are empty) */
    pic_eoi(c->irq_line);
}

/* Polling is used in poll mode, and in interrupt mode once an interrupt went missing. */
static bool polling(const struct nvme_ctrl* c) {
    return !c->use_irq || c->missed_irqs > 0 || c->irq_masked_storm;
}

static int submit_and_wait(struct nvme_ctrl* c, struct nvme_queue* q, struct nvme_sqe* cmd,
                           struct nvme_completion* out) {
    uint16_t cid = q->next_cid;
    q->next_cid = (uint16_t)((q->next_cid + 1) & 0x7fff);
    cmd->dw[0] = (cmd->dw[0] & 0xffffu) | ((uint32_t)cid << 16);
    q->done_valid[cid % q->depth] = false;

    volatile uint32_t* slot = (volatile uint32_t*)(q->sq + (uint32_t)q->sq_tail * NVME_SQE_SIZE);
    for (unsigned i = 0; i < 16; i++) slot[i] = cmd->dw[i];
    __asm__ volatile("" ::: "memory"); /* the entry is in memory before the doorbell (x86 TSO) */
    if (++q->sq_tail == q->depth) q->sq_tail = 0;
    mmio_write32(q->sq_doorbell, q->sq_tail);

    uint32_t start = clock_ms();
    bool irq_wait = !polling(c);
    for (;;) {
        if (queue_take(q, cid, out)) return 0;
        if (polling(c) && queue_reap(c, q, false)) continue;
        uint32_t waited = clock_ms() - start;
        if (irq_wait && waited >= NVME_IRQ_WAIT_MS) {
            /* no interrupt: is the completion there all the same? */
            irq_wait = false;
            uint16_t st_before = pci_read16(c->pci, PCI_STATUS);
            unsigned irr_before = pic_read_irr(), isr_before = pic_read_isr();
            if (queue_reap(c, q, false) && queue_take(q, cid, out)) {
                c->missed_irqs++;
                /* what the function and the PIC saw, to tell where the interrupt got lost */
                printf(
                    "nvme: no interrupt within %u ms for queue %u command %u, but it "
                    "completed (PCI status 0x%04x, PIC IRR 0x%04x ISR 0x%04x before the "
                    "doorbell): polling from now on\n",
                    NVME_IRQ_WAIT_MS, q->id, cid, st_before, irr_before, isr_before);
                return 0;
            }
        }
        if (waited >= NVME_COMMAND_TIMEOUT_MS) {
            uint32_t csts = reg_read32(c, NVME_REG_CSTS);
            return fail(c,
                        "queue %u command %u (opcode 0x%02x) did not complete within %u ms "
                        "(CSTS 0x%08x, %u interrupts so far)",
                        q->id, cid, cmd->dw[0] & 0xff, NVME_COMMAND_TIMEOUT_MS, csts, c->irqs);
        }
        clock_wait_tick();
    }
}

int nvme_admin(struct nvme_ctrl* c, struct nvme_sqe* cmd, struct nvme_completion* out) {
    return submit_and_wait(c, &c->admin, cmd, out);
}

int nvme_io(struct nvme_ctrl* c, struct nvme_sqe* cmd, struct nvme_completion* out) {
    if (!c->io_created) return fail(c, "no I/O queue");
    return submit_and_wait(c, &c->io, cmd, out);
}

/* ---- controller state ------------------------------------------------------------------- */

/* Waits until (CSTS & mask) == value; fails on CFS (unless waiting for it), all-ones (no
 * device) or after timeout_ms. */
static int wait_csts(struct nvme_ctrl* c, uint32_t mask, uint32_t value, uint32_t timeout_ms,
                     const char* what) {
    uint32_t start = clock_ms();
    for (;;) {
        uint32_t csts = reg_read32(c, NVME_REG_CSTS);
        if (csts == 0xffffffffu)
            return fail(c, "CSTS reads all-ones while waiting for %s: the controller is gone",
                        what);
        if ((csts & mask) == value) return 0;
        if (csts & NVME_CSTS_CFS)
            return fail(c, "controller fatal status (CSTS 0x%08x) while waiting for %s", csts,
                        what);
        if (clock_ms() - start >= timeout_ms)
            return fail(c, "timed out after %u ms waiting for %s (CSTS 0x%08x, CC 0x%08x)",
                        timeout_ms, what, csts, reg_read32(c, NVME_REG_CC));
        clock_wait_tick();
    }
}

int nvme_probe(struct nvme_ctrl* c, struct pci_dev* pci, bool use_irq) {
    memset(c, 0, sizeof *c);
    c->pci = pci;
    c->use_irq = use_irq;
    const struct pci_bar* bar = &pci->bars[0];
    if (!bar->size || bar->is_io || !bar->base)
        return fail(c, "BAR0 is not an assigned memory BAR (size 0x%llx, base 0x%llx)",
                    (unsigned long long)bar->size, (unsigned long long)bar->base);
    if (bar->base + bar->size > 0x100000000ull)
        return fail(c, "BAR0 at 0x%llx is above 4 GiB", (unsigned long long)bar->base);
    if (bar->size < 0x2000)
        return fail(c, "BAR0 size 0x%llx is too small for registers and doorbells",
                    (unsigned long long)bar->size);
    c->regs = (uintptr_t)bar->base;
    uint16_t cmd = pci_command(pci);
    if ((cmd & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) !=
        (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))
        return fail(c, "PCI command 0x%04x: memory decode or bus master is off", cmd);

    c->cap = mmio_read64(c->regs + NVME_REG_CAP);
    c->vs = reg_read32(c, NVME_REG_VS);
    if (c->cap == ~0ull) return fail(c, "CAP reads all-ones: BAR0 does not decode");
    c->doorbell_stride = 4u << NVME_CAP_DSTRD(c->cap);
    /* CAP.TO is the worst case for CSTS.RDY to follow CC.EN (3.1.1); 0 would be a device
     * bug, give it 500 ms then */
    unsigned to = NVME_CAP_TO(c->cap);
    c->ready_timeout_ms = (to ? to : 1) * 500u;
    if (!(NVME_CAP_CSS(c->cap) & 1))
        return fail(c, "CAP.CSS 0x%02x: the NVM command set is not supported",
                    NVME_CAP_CSS(c->cap));
    if (NVME_CAP_MPSMIN(c->cap) != 0)
        return fail(c, "CAP.MPSMIN %u: 4 KiB memory pages are not supported",
                    NVME_CAP_MPSMIN(c->cap));
    if (bar->size < NVME_REG_DOORBELLS + 4u * c->doorbell_stride)
        return fail(c, "BAR0 size 0x%llx has no room for the doorbells of queue 1 (stride %u)",
                    (unsigned long long)bar->size, c->doorbell_stride);

    uint16_t depth = NVME_QUEUE_DEPTH;
    if (NVME_CAP_MQES(c->cap) + 1u < depth) depth = (uint16_t)(NVME_CAP_MQES(c->cap) + 1u);
    if (depth < 2) return fail(c, "CAP.MQES %u: queues too small", NVME_CAP_MQES(c->cap));
    if (queue_init(c, &c->admin, 0, depth) || queue_init(c, &c->io, 1, depth)) return -1;

    if (use_irq) {
        c->irq_line = pci_read8(pci, PCI_INTERRUPT_LINE);
        if (!pci->irq_pin || c->irq_line >= 16)
            return fail(c, "no usable INTx: interrupt pin %u, line %u", pci->irq_pin, c->irq_line);
    }
    return 0;
}

int nvme_reset(struct nvme_ctrl* c) {
    /* 7.6.1: CC.EN = 0, then CSTS.RDY = 0 */
    uint32_t cc = reg_read32(c, NVME_REG_CC);
    if (cc & NVME_CC_EN) reg_write32(c, NVME_REG_CC, cc & ~NVME_CC_EN);
    if (wait_csts(c, NVME_CSTS_RDY, 0, c->ready_timeout_ms, "CSTS.RDY = 0 after CC.EN = 0"))
        return -1;
    return 0;
}

int nvme_enable(struct nvme_ctrl* c) {
    uint16_t depth = c->admin.depth;
    /* admin queue (3.1.8-3.1.10): sizes are 0's based */
    reg_write32(c, NVME_REG_AQA, (uint32_t)(depth - 1) | ((uint32_t)(depth - 1) << 16));
    reg_write64(c, NVME_REG_ASQ, virt_to_phys((const void*)c->admin.sq));
    reg_write64(c, NVME_REG_ACQ, virt_to_phys((const void*)c->admin.cq));

    if (c->use_irq) {
        irq_ctrl = c;
        irq_register(pic_vector(c->irq_line), on_intx);
        pci_command_update(c->pci, 0, PCI_COMMAND_INTX_DISABLE);
        pic_unmask(c->irq_line);
    }

    uint32_t cc = NVME_CC_CSS_NVM | NVME_CC_MPS(0) | NVME_CC_AMS_RR |
                  NVME_CC_IOSQES(NVME_SQES_LOG2) | NVME_CC_IOCQES(NVME_CQES_LOG2);
    reg_write32(c, NVME_REG_CC, cc);
    reg_write32(c, NVME_REG_CC, cc | NVME_CC_EN);
    if (wait_csts(c, NVME_CSTS_RDY, NVME_CSTS_RDY, c->ready_timeout_ms,
                  "CSTS.RDY = 1 after CC.EN = 1"))
        return -1;

    /* pin-based interrupts are masked per vector with INTMS/INTMC (3.1.3, 3.1.4) */
    reg_write32(c, c->use_irq ? NVME_REG_INTMC : NVME_REG_INTMS, 1u);
    return 0;
}

/* ---- admin commands ------------------------------------------------------------------- */

void nvme_set_prps(struct nvme_sqe* cmd, uintptr_t buf, uint32_t len, uint64_t* prp_list) {
    uint64_t prp1 = buf, prp2 = 0;
    uint32_t first = MEM_PAGE - (uint32_t)(buf & (MEM_PAGE - 1));
    if (len > first) {
        uint32_t rest = len - first;
        uintptr_t next = (buf & ~(uintptr_t)(MEM_PAGE - 1)) + MEM_PAGE;
        if (rest <= MEM_PAGE) {
            prp2 = next; /* the second (and last) page */
        } else {
            unsigned pages = (rest + MEM_PAGE - 1) / MEM_PAGE;
            for (unsigned i = 0; i < pages; i++) prp_list[i] = next + (uintptr_t)i * MEM_PAGE;
            prp2 = virt_to_phys(prp_list);
        }
    }
    cmd->dw[6] = (uint32_t)prp1;
    cmd->dw[7] = (uint32_t)(prp1 >> 32);
    cmd->dw[8] = (uint32_t)prp2;
    cmd->dw[9] = (uint32_t)(prp2 >> 32);
}

static int admin_expect_success(struct nvme_ctrl* c, struct nvme_sqe* cmd,
                                struct nvme_completion* out, const char* what) {
    if (nvme_admin(c, cmd, out)) return -1;
    if (out->status) return fail(c, "%s failed: %s", what, nvme_status_text(out->status));
    return 0;
}

int nvme_identify(struct nvme_ctrl* c, unsigned cns, uint32_t nsid, void* page) {
    struct nvme_sqe cmd = {0};
    struct nvme_completion cpl;
    cmd.dw[0] = NVME_SQE_DW0(NVME_ADMIN_IDENTIFY, 0);
    cmd.dw[1] = nsid;
    nvme_set_prps(&cmd, virt_to_phys(page), 4096, 0);
    cmd.dw[10] = cns & 0xff;
    char what[48];
    snprintf(what, sizeof what, "Identify CNS %u NSID %u", cns, nsid);
    return admin_expect_success(c, &cmd, &cpl, what);
}

int nvme_set_queue_count(struct nvme_ctrl* c, uint32_t* allocated) {
    struct nvme_sqe cmd = {0};
    struct nvme_completion cpl;
    cmd.dw[0] = NVME_SQE_DW0(NVME_ADMIN_SET_FEATURES, 0);
    cmd.dw[10] = NVME_FEAT_NUM_QUEUES;
    cmd.dw[11] = 0; /* one SQ, one CQ (0's based) */
    if (admin_expect_success(c, &cmd, &cpl, "Set Features (Number of Queues)")) return -1;
    *allocated = cpl.dw0;
    return 0;
}

int nvme_create_io_queues(struct nvme_ctrl* c) {
    struct nvme_queue* q = &c->io;
    struct nvme_completion cpl;
    uint32_t size_id = ((uint32_t)(q->depth - 1) << 16) | q->id;

    struct nvme_sqe cmd = {0};
    cmd.dw[0] = NVME_SQE_DW0(NVME_ADMIN_CREATE_IO_CQ, 0);
    nvme_set_prps(&cmd, virt_to_phys((const void*)q->cq), 4096, 0);
    cmd.dw[10] = size_id;
    /* interrupt vector 0 (the only one with pin-based interrupts) */
    cmd.dw[11] = NVME_CQ_FLAGS_PC | (c->use_irq ? NVME_CQ_FLAGS_IEN : 0);
    if (admin_expect_success(c, &cmd, &cpl, "Create I/O Completion Queue 1")) return -1;
    c->io_created = true; /* the handler may look at it from now on */

    memset(&cmd, 0, sizeof cmd);
    cmd.dw[0] = NVME_SQE_DW0(NVME_ADMIN_CREATE_IO_SQ, 0);
    nvme_set_prps(&cmd, virt_to_phys((const void*)q->sq), 4096, 0);
    cmd.dw[10] = size_id;
    cmd.dw[11] = ((uint32_t)q->id << 16) | NVME_SQ_FLAGS_PC; /* bound to CQ 1 */
    return admin_expect_success(c, &cmd, &cpl, "Create I/O Submission Queue 1");
}

int nvme_delete_io_queues(struct nvme_ctrl* c) {
    struct nvme_completion cpl;
    struct nvme_sqe cmd = {0};
    cmd.dw[0] = NVME_SQE_DW0(NVME_ADMIN_DELETE_IO_SQ, 0);
    cmd.dw[10] = c->io.id;
    if (admin_expect_success(c, &cmd, &cpl, "Delete I/O Submission Queue 1")) return -1;
    memset(&cmd, 0, sizeof cmd);
    cmd.dw[0] = NVME_SQE_DW0(NVME_ADMIN_DELETE_IO_CQ, 0);
    cmd.dw[10] = c->io.id;
    if (admin_expect_success(c, &cmd, &cpl, "Delete I/O Completion Queue 1")) return -1;
    c->io_created = false;
    return 0;
}

int nvme_shutdown(struct nvme_ctrl* c) {
    uint32_t cc = reg_read32(c, NVME_REG_CC);
    reg_write32(c, NVME_REG_CC, (cc & ~NVME_CC_SHN_MASK) | NVME_CC_SHN_NORMAL);
    return wait_csts(c, NVME_CSTS_SHST_MASK, NVME_CSTS_SHST_DONE, NVME_COMMAND_TIMEOUT_MS,
                     "CSTS.SHST = 10b (shutdown complete)");
}

/* ---- I/O ---------------------------------------------------------------------------------- */

int nvme_read(struct nvme_ctrl* c, uint32_t nsid, uint64_t slba, uint32_t nblocks,
              uint32_t block_size, uintptr_t buf, uint64_t* prp_list, struct nvme_completion* out) {
    if (!nblocks || nblocks > 0x10000u) return fail(c, "READ of %u blocks", nblocks);
    struct nvme_sqe cmd = {0};
    cmd.dw[0] = NVME_SQE_DW0(NVME_CMD_READ, 0);
    cmd.dw[1] = nsid;
    nvme_set_prps(&cmd, buf, nblocks * block_size, prp_list);
    cmd.dw[10] = (uint32_t)slba;
    cmd.dw[11] = (uint32_t)(slba >> 32);
    cmd.dw[12] = (nblocks - 1) & 0xffff;
    return nvme_io(c, &cmd, out);
}
