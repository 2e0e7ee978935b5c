/* nvme: a bare-metal NVMe driver as a potemkin guest (docs/nvme-guest.md).
 *
 * Finds the first NVM Express function (class 010802h) on bus 0, assigns resources as a
 * BIOS would, resets and enables the controller, identifies it and namespace NSID, creates
 * one I/O queue pair and READs a range of blocks into RAM by DMA, then reports model,
 * serial, firmware, namespace geometry and an FNV-1a 32 checksum of the data. Each step
 * prints PASS or FAIL; exit 0 iff all passed.
 *
 * Command line (all optional):
 *   mode=irq|poll       completions by INTx interrupt (default) or by polling the phase tag
 *   nsid=N              namespace (default 1)
 *   lba=N blocks=N      range to read (default: from 0, the whole namespace, at most 4 MiB)
 *   offset=N            where the data starts in its first page (default 512, so that even
 *                       8 blocks of 512 bytes cross a page boundary; multiple of 4)
 *   expect_sum=0xH      the checksum the data must have
 *   expect_serial=S     the serial number the controller must report
 *   pattern=lba         every block must hold its LBA as a little-endian u64, then bytes
 *                       (LBA * 13 + offset) & 0xff for offsets 8 .. block size - 1
 * Exit status: 0 all checks passed, 1 a check failed, 2 no NVMe function, 3 bad command line. */
#include <potemkin/runtime.h>

#include "clock.h"
#include "nvme_ctrl.h"
#include "spurious.h"

#define MAX_READ_BYTES (4u << 20) /* default range cap, and the buffer limit */
#define MAX_CHUNK_BYTES (256u << 10)
#define FNV_OFFSET 0x811c9dc5u
#define FNV_PRIME 0x01000193u

static struct nvme_ctrl ctrl;

/* ---- reporting -------------------------------------------------------------------------- */

static __attribute__((format(printf, 4, 5))) int step(int ok, int line, const char* name,
                                                      const char* fmt, ...) {
    if (ok) {
        printf("PASS: %s\n", name);
        return check_record(1, __FILE__, line, "%s", name);
    }
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return check_record(0, __FILE__, line, "%s: %s", name, detail);
}
#define STEP(ok, name, ...) step(!!(ok), __LINE__, name, __VA_ARGS__)

/* Copies an Identify ASCII field without its trailing spaces (and NULs). */
static void ascii_field(char* out, const uint8_t* id, unsigned off, unsigned len) {
    unsigned n = len;
    while (n && (id[off + n - 1] == ' ' || id[off + n - 1] == 0)) n--;
    for (unsigned i = 0; i < n; i++) {
        uint8_t ch = id[off + i];
        out[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    out[n] = 0;
}

static uint16_t get16(const uint8_t* p, unsigned off) {
    return (uint16_t)(p[off] | (p[off + 1] << 8));
}
static uint32_t get32(const uint8_t* p, unsigned off) {
    return (uint32_t)get16(p, off) | ((uint32_t)get16(p, off + 2) << 16);
}
static uint64_t get64(const uint8_t* p, unsigned off) {
    return (uint64_t)get32(p, off) | ((uint64_t)get32(p, off + 4) << 32);
}

/* ---- command line ----------------------------------------------------------------------- */

/* Value of the token "key=VALUE" into out (NUL-terminated); false if absent or too long. */
static bool cmdline_word(const char* key, char* out, unsigned size) {
    unsigned klen = strlen(key);
    const char* p = cmdline();
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        const char* tok = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if ((unsigned)(p - tok) > klen && strncmp(tok, key, klen) == 0 && tok[klen] == '=') {
            unsigned n = (unsigned)(p - tok) - klen - 1;
            if (n + 1 > size) return false;
            memcpy(out, tok + klen + 1, n);
            out[n] = 0;
            return true;
        }
    }
    return false;
}

struct options {
    bool use_irq;
    uint32_t nsid;
    uint32_t lba;
    uint32_t blocks; /* 0: default */
    uint32_t offset;
    bool has_sum;
    uint32_t expect_sum;
    bool has_serial;
    char expect_serial[NVME_IDCTRL_SN_LEN + 1];
    bool pattern_lba;
};

static bool parse_options(struct options* o) {
    char word[32];
    memset(o, 0, sizeof *o);
    o->use_irq = true;
    if (cmdline_word("mode", word, sizeof word)) {
        if (strcmp(word, "poll") == 0) {
            o->use_irq = false;
        } else if (strcmp(word, "irq") != 0) {
            printf("nvme: mode=%s: expected irq or poll\n", word);
            return false;
        }
    }
    o->nsid = cmdline_uint("nsid", 1);
    o->lba = cmdline_uint("lba", 0);
    o->blocks = cmdline_uint("blocks", 0);
    o->offset = cmdline_uint("offset", 512);
    if (o->offset >= PAGE_SIZE || (o->offset & 3)) {
        printf("nvme: offset=%u: needs a multiple of 4 below %u\n", o->offset, PAGE_SIZE);
        return false;
    }
    o->has_sum = cmdline_has("expect_sum");
    o->expect_sum = cmdline_uint("expect_sum", 0);
    if (o->has_sum && cmdline_uint("expect_sum", 1) != o->expect_sum) {
        puts("nvme: expect_sum needs a number (decimal or 0x...)");
        return false;
    }
    if (cmdline_has("expect_serial") &&
        !(o->has_serial =
              cmdline_word("expect_serial", o->expect_serial, sizeof o->expect_serial))) {
        printf("nvme: expect_serial needs a value of at most %u characters\n", NVME_IDCTRL_SN_LEN);
        return false;
    }
    if (cmdline_word("pattern", word, sizeof word)) {
        if (strcmp(word, "lba") != 0) {
            printf("nvme: pattern=%s: only pattern=lba is known\n", word);
            return false;
        }
        o->pattern_lba = true;
    }
    return true;
}

/* ---- data checks ------------------------------------------------------------------------ */

static uint32_t fnv1a32(const uint8_t* p, uint32_t len) {
    uint32_t h = FNV_OFFSET;
    for (uint32_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint8_t pattern_byte(uint64_t lba, uint32_t offset) {
    return (uint8_t)((uint32_t)lba * 13u + offset);
}

/* Blocks whose contents differ from pattern=lba; prints the first few. */
static uint32_t verify_pattern(const uint8_t* data, uint64_t first_lba, uint32_t blocks,
                               uint32_t bs) {
    uint32_t bad = 0;
    for (uint32_t b = 0; b < blocks; b++) {
        const uint8_t* blk = data + b * bs;
        uint64_t lba = first_lba + b;
        uint64_t tag = get64(blk, 0);
        uint32_t off = 8;
        bool ok = tag == lba;
        while (ok && off < bs && blk[off] == pattern_byte(lba, off)) off++;
        if (ok && off == bs) continue;
        if (bad < 4) {
            if (tag != lba)
                printf("nvme: block %llu starts with 0x%016llx instead of its LBA\n",
                       (unsigned long long)lba, (unsigned long long)tag);
            else
                printf("nvme: block %llu byte %u is 0x%02x, expected 0x%02x\n",
                       (unsigned long long)lba, off, blk[off], pattern_byte(lba, off));
        }
        bad++;
    }
    return bad;
}

/* ---- steps ------------------------------------------------------------------------------ */

struct namespace_info {
    uint64_t size, capacity, used;
    uint32_t block_size;
    unsigned format, formats;
};

static bool identify_controller(const struct options* o, uint32_t* max_transfer) {
    uint8_t* id = page_alloc(1);
    if (!id) return STEP(0, "Identify Controller", "out of memory");
    memset(id, 0xa5, PAGE_SIZE); /* shows a transfer that did not happen */
    if (!STEP(nvme_identify(&ctrl, NVME_CNS_CONTROLLER, 0, id) == 0, "Identify Controller", "%s",
              ctrl.error))
        return false;

    char mn[NVME_IDCTRL_MN_LEN + 1], sn[NVME_IDCTRL_SN_LEN + 1], fr[NVME_IDCTRL_FR_LEN + 1];
    ascii_field(mn, id, NVME_IDCTRL_MN, NVME_IDCTRL_MN_LEN);
    ascii_field(sn, id, NVME_IDCTRL_SN, NVME_IDCTRL_SN_LEN);
    ascii_field(fr, id, NVME_IDCTRL_FR, NVME_IDCTRL_FR_LEN);
    uint32_t ver = get32(id, NVME_IDCTRL_VER), nn = get32(id, NVME_IDCTRL_NN);
    uint8_t mdts = id[NVME_IDCTRL_MDTS], sqes = id[NVME_IDCTRL_SQES], cqes = id[NVME_IDCTRL_CQES];
    printf("model number: \"%s\"\n", mn);
    printf("serial number: \"%s\"\n", sn);
    printf("firmware revision: \"%s\"\n", fr);
    printf(
        "nvme: VID %04x SSVID %04x, controller ID %u, version %u.%u.%u, %u namespace(s), "
        "MDTS %u, SQES 0x%02x, CQES 0x%02x\n",
        get16(id, NVME_IDCTRL_VID), get16(id, NVME_IDCTRL_SSVID), get16(id, NVME_IDCTRL_CNTLID),
        ver >> 16, (ver >> 8) & 0xff, ver & 0xff, nn, mdts, sqes, cqes);

    STEP(get16(id, NVME_IDCTRL_VID) == ctrl.pci->vendor, "Identify: VID is the PCI vendor ID",
         "VID 0x%04x, PCI vendor 0x%04x", get16(id, NVME_IDCTRL_VID), ctrl.pci->vendor);
    STEP((sqes & 0xf) <= NVME_SQES_LOG2 && (sqes >> 4) >= NVME_SQES_LOG2 &&
             (cqes & 0xf) <= NVME_CQES_LOG2 && (cqes >> 4) >= NVME_CQES_LOG2,
         "Identify: 64-byte SQ and 16-byte CQ entries allowed", "SQES 0x%02x CQES 0x%02x", sqes,
         cqes);
    STEP(nn >= o->nsid, "Identify: namespace in range", "NN %u, NSID %u", nn, o->nsid);
    if (o->has_serial)
        STEP(strcmp(sn, o->expect_serial) == 0, "serial number as expected",
             "\"%s\", expected \"%s\"", sn, o->expect_serial);

    /* MDTS is in units of the minimum memory page size (4 KiB here); 0 = no limit */
    *max_transfer = MAX_CHUNK_BYTES;
    if (mdts && mdts < 7 && (4096u << mdts) < *max_transfer) *max_transfer = 4096u << mdts;
    return true;
}

static bool identify_namespace(uint32_t nsid, struct namespace_info* ns) {
    uint8_t* id = page_alloc(1);
    if (!id) return STEP(0, "Identify Namespace", "out of memory");
    memset(id, 0xa5, PAGE_SIZE);
    if (!STEP(nvme_identify(&ctrl, NVME_CNS_NAMESPACE, nsid, id) == 0, "Identify Namespace", "%s",
              ctrl.error))
        return false;
    ns->size = get64(id, NVME_IDNS_NSZE);
    ns->capacity = get64(id, NVME_IDNS_NCAP);
    ns->used = get64(id, NVME_IDNS_NUSE);
    ns->formats = id[NVME_IDNS_NLBAF] + 1u;
    ns->format = id[NVME_IDNS_FLBAS] & 0xf;
    uint32_t lbaf = get32(id, NVME_IDNS_LBAF + 4 * ns->format);
    unsigned lbads = (lbaf >> 16) & 0xff, ms = lbaf & 0xffff;
    ns->block_size = lbads < 32 ? 1u << lbads : 0;
    printf(
        "namespace %u: %llu blocks of %u bytes (%llu KiB), capacity %llu, used %llu, "
        "LBA format %u of %u (metadata %u bytes)\n",
        nsid, (unsigned long long)ns->size, ns->block_size,
        (unsigned long long)((ns->size * ns->block_size) >> 10), (unsigned long long)ns->capacity,
        (unsigned long long)ns->used, ns->format, ns->formats, ms);
    if (!STEP(ns->size > 0, "namespace is not empty", "NSZE 0 (inactive namespace?)")) return false;
    return STEP(lbads >= 9 && lbads <= 12 && ms == 0,
                "namespace block size 512..4096 bytes without metadata",
                "LBADS %u, metadata size %u", lbads, ms);
}

struct read_stats {
    unsigned commands, prp1_only, prp2_page, prp_list;
};

/* Reads blocks from lba into data in chunks: one block first (PRP1 only), then 8 blocks
 * (which cross a page boundary when data does not start a page: PRP1 with an offset +
 * PRP2), then chunks of max_transfer (PRP lists), so every data-pointer form is used. */
static bool read_range(uint32_t nsid, uint64_t lba, uint32_t blocks, uint32_t bs,
                       uint32_t max_transfer, uint8_t* data, struct read_stats* st) {
    uint64_t* prp_list = page_alloc(1);
    if (!prp_list) return STEP(0, "READ", "out of memory for the PRP list");
    uint32_t max_blocks = max_transfer / bs ? max_transfer / bs : 1;
    uint32_t done = 0;
    while (done < blocks) {
        uint32_t n = st->commands == 0 ? 1 : st->commands == 1 ? 8 : max_blocks;
        if (n > max_blocks) n = max_blocks;
        if (n > blocks - done) n = blocks - done;
        uintptr_t buf = virt_to_phys(data) + done * bs;
        uint32_t len = n * bs, first = PAGE_SIZE - (uint32_t)(buf & (PAGE_SIZE - 1));
        if (len <= first)
            st->prp1_only++;
        else if (len - first <= PAGE_SIZE)
            st->prp2_page++;
        else
            st->prp_list++;
        struct nvme_completion cpl;
        if (nvme_read(&ctrl, nsid, lba + done, n, bs, buf, prp_list, &cpl))
            return STEP(0, "READ", "LBA %llu +%u: %s", (unsigned long long)(lba + done), n,
                        ctrl.error);
        st->commands++;
        if (cpl.status)
            return STEP(0, "READ", "LBA %llu +%u: %s", (unsigned long long)(lba + done), n,
                        nvme_status_text(cpl.status));
        done += n;
    }
    return true;
}

/* A READ past the end must fail with LBA Out of Range (NVM command set 6.9 / 4.6.1.2.1). */
static void read_out_of_range(uint32_t nsid, const struct namespace_info* ns, uint8_t* page) {
    struct nvme_completion cpl;
    if (nvme_read(&ctrl, nsid, ns->size, 1, ns->block_size, virt_to_phys(page), 0, &cpl)) {
        STEP(0, "READ past the end is rejected", "%s", ctrl.error);
        return;
    }
    STEP(NVME_STATUS_SCT(cpl.status) == 0 && NVME_STATUS_SC(cpl.status) == NVME_SC_LBA_OUT_OF_RANGE,
         "READ past the end is rejected (LBA Out of Range)", "status %s",
         nvme_status_text(cpl.status));
}

static int run(const struct options* o) {
    printf("-- mode %s, namespace %u\n", o->use_irq ? "irq" : "poll", o->nsid);
    pci_enumerate();
    if (pci_assign_resources() != 0) puts("nvme: some PCI resources could not be assigned");
    struct pci_dev* pci = 0;
    for (unsigned i = 0; i < pci_dev_count() && !pci; i++)
        if (pci_dev_get(i)->class == NVME_PCI_CLASS) pci = pci_dev_get(i);
    if (!pci) {
        puts("nvme: no NVM Express function (class 010802) on bus 0");
        pci_print_all();
        return 2;
    }
    pci_print(pci);

    if (!STEP(nvme_probe(&ctrl, pci, o->use_irq) == 0, "controller registers", "%s", ctrl.error))
        return checks_finish();
    uint64_t cap = ctrl.cap;
    printf(
        "nvme: CAP 0x%08x%08x: MQES %u, CQR %u, DSTRD %u (doorbell stride %u bytes), TO %u "
        "(%u ms), MPSMIN %u, MPSMAX %u, CSS 0x%02x; VS %u.%u.%u\n",
        (unsigned)(cap >> 32), (unsigned)cap, NVME_CAP_MQES(cap), NVME_CAP_CQR(cap),
        NVME_CAP_DSTRD(cap), ctrl.doorbell_stride, NVME_CAP_TO(cap), ctrl.ready_timeout_ms,
        NVME_CAP_MPSMIN(cap), NVME_CAP_MPSMAX(cap), NVME_CAP_CSS(cap), ctrl.vs >> 16,
        (ctrl.vs >> 8) & 0xff, ctrl.vs & 0xff);
    if (o->use_irq)
        printf("nvme: INTx pin %c on PIC line %u (vector 0x%02x)\n", '@' + pci->irq_pin,
               ctrl.irq_line, pic_vector(ctrl.irq_line));
    if (!STEP(nvme_reset(&ctrl) == 0, "controller reset (CC.EN = 0, CSTS.RDY = 0)", "%s",
              ctrl.error))
        return checks_finish();
    if (!STEP(nvme_enable(&ctrl) == 0, "controller enabled (admin queues, CSTS.RDY = 1)", "%s",
              ctrl.error))
        return checks_finish();

    uint32_t max_transfer = MAX_CHUNK_BYTES;
    if (!identify_controller(o, &max_transfer)) return checks_finish();
    struct namespace_info ns = {0};
    if (!identify_namespace(o->nsid, &ns)) return checks_finish();

    uint32_t queues = 0;
    if (STEP(nvme_set_queue_count(&ctrl, &queues) == 0, "Set Features (Number of Queues)", "%s",
             ctrl.error))
        printf("nvme: %u submission and %u completion queue(s) allocated\n", (queues & 0xffff) + 1,
               (queues >> 16) + 1);
    if (!STEP(nvme_create_io_queues(&ctrl) == 0, "I/O queue pair created", "%s", ctrl.error))
        return checks_finish();
    printf("nvme: I/O queue 1, %u entries, interrupts %s\n", ctrl.io.depth,
           o->use_irq ? "enabled (vector 0)" : "disabled");

    /* the range */
    uint32_t bs = ns.block_size;
    uint64_t blocks = o->blocks;
    if (!blocks) {
        blocks = ns.size > o->lba ? ns.size - o->lba : 0;
        if (blocks > MAX_READ_BYTES / bs) blocks = MAX_READ_BYTES / bs;
    }
    bool range_ok =
        STEP(blocks > 0 && (uint64_t)o->lba + blocks <= ns.size && blocks * bs <= MAX_READ_BYTES,
             "range within the namespace and the buffer limit",
             "LBA %u + %llu blocks of %u bytes; namespace %llu blocks, limit %u bytes", o->lba,
             (unsigned long long)blocks, bs, (unsigned long long)ns.size, MAX_READ_BYTES);
    if (range_ok) {
        uint32_t nblocks = (uint32_t)blocks, bytes = nblocks * bs;
        uint8_t* pages = page_alloc((o->offset + bytes + PAGE_SIZE - 1) / PAGE_SIZE);
        if (!STEP(pages != 0, "data buffer", "out of memory for %u bytes", bytes))
            return checks_finish();
        uint8_t* data = pages + o->offset;
        memset(data, 0xa5, bytes); /* blocks the device did not write stand out */
        struct read_stats st = {0};
        printf(
            "-- READ LBA %u..%u (%u blocks, %u bytes) into 0x%08x, at most %u bytes per "
            "command\n",
            o->lba, o->lba + nblocks - 1, nblocks, bytes, (unsigned)virt_to_phys(data),
            max_transfer);
        if (read_range(o->nsid, o->lba, nblocks, bs, max_transfer, data, &st)) {
            STEP(1, "READ", "-");
            printf("nvme: %u READ commands: %u PRP1 only, %u PRP1+PRP2, %u PRP list\n", st.commands,
                   st.prp1_only, st.prp2_page, st.prp_list);
            uint32_t sum = fnv1a32(data, bytes);
            printf("checksum: fnv1a32 0x%08x over %u bytes\n", sum, bytes);
            if (o->has_sum)
                STEP(sum == o->expect_sum, "checksum as expected", "0x%08x, expected 0x%08x", sum,
                     o->expect_sum);
            if (o->pattern_lba) {
                uint32_t bad = verify_pattern(data, o->lba, nblocks, bs);
                STEP(bad == 0, "pattern=lba: every block holds its LBA and pattern",
                     "%u of %u blocks differ", bad, nblocks);
                if (!bad) printf("nvme: pattern verified in %u blocks\n", nblocks);
            }
        }
        read_out_of_range(o->nsid, &ns, pages);
    }

    STEP(nvme_delete_io_queues(&ctrl) == 0, "I/O queue pair deleted", "%s", ctrl.error);
    STEP(nvme_shutdown(&ctrl) == 0, "normal shutdown (CSTS.SHST = 10b)", "%s", ctrl.error);

    unsigned total = ctrl.irq_completions + ctrl.poll_completions;
    printf(
        "completions: %u, by interrupt %u, by polling %u; interrupts %u (found nothing %u); "
        "spurious PIC interrupts %u\n",
        total, ctrl.irq_completions, ctrl.poll_completions, ctrl.irqs, ctrl.spurious_irqs,
        spurious_count());
    if (o->use_irq) {
        STEP(ctrl.irq_completions == total && ctrl.missed_irqs == 0 && !ctrl.irq_masked_storm,
             "every completion signalled by INTx",
             "%u of %u by interrupt (%u missed; line masked after an interrupt storm: %s)",
             ctrl.irq_completions, total, ctrl.missed_irqs, ctrl.irq_masked_storm ? "yes" : "no");
    }
    return checks_finish();
}

int main(void) {
    puts("nvme: NVM Express driver guest");
    struct options o;
    if (!parse_options(&o)) return 3;
    idt_init();
    pic_init(PIC_DEFAULT_MASTER_BASE, PIC_DEFAULT_SLAVE_BASE);
    spurious_install();
    clock_start();
    int status = run(&o);
    cli();
    clock_stop();
    return status;
}
