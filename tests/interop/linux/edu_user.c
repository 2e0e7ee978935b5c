// The Linux interop guest's test program (tests/interop/linux_guest_test.cpp): runs as root in
// a busybox initramfs under QEMU, with `potemkin serve edu --mpqemu-fd` plugged in through
// x-pci-proxy-dev. Everything happens from user space, because under TCG the proxy delivers no
// interrupts (docs/interop-serve.md): the device is found in sysfs, BAR0 is mmap'ed through
// resource0, and DMA targets pinned pages whose physical address /proc/self/pagemap gives.
// Registers: QEMU's docs/specs/edu.rst.
//
// Prints one "edu_user: ..." line per step on the console (ttyS0) and ends QEMU through
// isa-debug-exit at port 0xf4: 0x2a when every check passed (QEMU exits (0x2a << 1) | 1 = 85),
// 0x01 otherwise (exit 3).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_BAR0_SIZE 0x100000u
#define EDU_ID 0x00
#define EDU_LIVENESS 0x04
#define EDU_FACTORIAL 0x08
#define EDU_STATUS 0x20
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_COUNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_BUFFER 0x40000u
#define EDU_DMA_MASK ((UINT64_C(1) << 28) - 1)
#define DMA_RUN 0x1
#define DMA_TO_RAM 0x2

#define IORESOURCE_IO 0x100
#define IORESOURCE_MEM 0x200

#define EXIT_PORT 0xf4
#define EXIT_PASS 0x2a
#define EXIT_FAIL 0x01

#define POLL_LIMIT 1000000

static int failures;

static void check(int ok, const char* what) {
    printf("edu_user: %s: %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) ++failures;
}

static void finish(void) {
    printf("edu_user: %s (%d failures)\n", failures == 0 ? "PASS" : "FAIL", failures);
    fflush(stdout);
    if (ioperm(EXIT_PORT, 4, 1) != 0) {
        printf("edu_user: ioperm: %s\n", strerror(errno));
        exit(1);
    }
    outl(failures == 0 ? EXIT_PASS : EXIT_FAIL, EXIT_PORT);
    exit(1);  // not reached: QEMU is gone
}

static int read_hex_file(const char* dir, const char* name, unsigned long* out) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE* f = fopen(path, "r");
    if (!f) return -1;
    int n = fscanf(f, "%lx", out);
    fclose(f);
    return n == 1 ? 0 : -1;
}

// The sysfs directory of the first edu function, or NULL.
static const char* find_edu(void) {
    static char found[512];
    DIR* d = opendir("/sys/bus/pci/devices");
    if (!d) return NULL;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char dir[512];
        snprintf(dir, sizeof dir, "/sys/bus/pci/devices/%s", e->d_name);
        unsigned long vendor = 0, device = 0;
        if (read_hex_file(dir, "vendor", &vendor) == 0 &&
            read_hex_file(dir, "device", &device) == 0 && vendor == EDU_VENDOR &&
            device == EDU_DEVICE) {
            snprintf(found, sizeof found, "%s", dir);
            closedir(d);
            return found;
        }
    }
    closedir(d);
    return NULL;
}

static uint32_t rd32(volatile uint8_t* bar, unsigned off) {
    return *(volatile uint32_t*)(bar + off);
}
static void wr32(volatile uint8_t* bar, unsigned off, uint32_t v) {
    *(volatile uint32_t*)(bar + off) = v;
}
static uint64_t rd64(volatile uint8_t* bar, unsigned off) {
    return *(volatile uint64_t*)(bar + off);
}
static void wr64(volatile uint8_t* bar, unsigned off, uint64_t v) {
    *(volatile uint64_t*)(bar + off) = v;
}

// Physical address of a locked page of ours, from /proc/self/pagemap (bits 0-54 PFN, bit 63
// present); 0 on failure.
static uint64_t physical_address(void* page) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) return 0;
    uint64_t entry = 0;
    off_t at = (off_t)((uintptr_t)page / 4096) * 8;
    ssize_t n = pread(fd, &entry, sizeof entry, at);
    close(fd);
    if (n != sizeof entry || !(entry >> 63)) return 0;
    return (entry & ((UINT64_C(1) << 55) - 1)) * 4096;
}

static int wait_dma(volatile uint8_t* bar) {
    for (int i = 0; i < POLL_LIMIT; ++i)
        if ((rd64(bar, EDU_DMA_CMD) & DMA_RUN) == 0) return 1;
    return 0;
}

static void dma_test(volatile uint8_t* bar) {
    uint8_t* src = aligned_alloc(4096, 4096);
    uint8_t* dst = aligned_alloc(4096, 4096);
    if (!src || !dst || mlock(src, 4096) != 0 || mlock(dst, 4096) != 0) {
        printf("edu_user: DMA buffers: %s\n", strerror(errno));
        ++failures;
        return;
    }
    for (int i = 0; i < 4096; ++i) {
        src[i] = (uint8_t)(i * 7 + 3);
        dst[i] = 0;
    }
    uint64_t psrc = physical_address(src), pdst = physical_address(dst);
    printf("edu_user: DMA pages at physical 0x%" PRIx64 " and 0x%" PRIx64 "\n", psrc, pdst);
    check(psrc != 0 && pdst != 0, "pagemap gives physical addresses");
    check((psrc | pdst) + 4095 <= EDU_DMA_MASK, "pages inside edu's 28-bit DMA mask");
    if (psrc == 0 || pdst == 0) return;

    // RAM → edu buffer.
    wr64(bar, EDU_DMA_SRC, psrc);
    wr64(bar, EDU_DMA_DST, EDU_DMA_BUFFER);
    wr64(bar, EDU_DMA_COUNT, 4096);
    wr64(bar, EDU_DMA_CMD, DMA_RUN);
    check(wait_dma(bar), "DMA RAM -> edu completes (polled)");
    // edu buffer → another page.
    wr64(bar, EDU_DMA_SRC, EDU_DMA_BUFFER);
    wr64(bar, EDU_DMA_DST, pdst);
    wr64(bar, EDU_DMA_COUNT, 4096);
    wr64(bar, EDU_DMA_CMD, DMA_RUN | DMA_TO_RAM);
    check(wait_dma(bar), "DMA edu -> RAM completes (polled)");
    int same = memcmp(src, dst, 4096) == 0;
    printf("edu_user: DMA round trip of 4096 bytes: first bytes %02x %02x %02x, last %02x\n",
           dst[0], dst[1], dst[2], dst[4095]);
    check(same, "DMA data came back intact");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("edu_user: start\n");
    const char* dir = find_edu();
    if (!dir) {
        printf("edu_user: no PCI function 1234:11e8 in /sys/bus/pci/devices\n");
        ++failures;
        finish();
    }
    printf("edu_user: found %s\n", dir);

    // BAR0 as the kernel sees it: "start end flags" lines, one per resource.
    char path[600];
    snprintf(path, sizeof path, "%s/resource", dir);
    FILE* f = fopen(path, "r");
    unsigned long long start = 0, end = 0, flags = 0;
    if (!f || fscanf(f, "%llx %llx %llx", &start, &end, &flags) != 3) {
        printf("edu_user: cannot read %s\n", path);
        ++failures;
        finish();
    }
    fclose(f);
    printf("edu_user: BAR0 0x%llx-0x%llx flags 0x%llx\n", start, end, flags);
    check(start != 0 && end - start + 1 == EDU_BAR0_SIZE, "BAR0 is 1 MiB");
    check((flags & IORESOURCE_MEM) && !(flags & IORESOURCE_IO), "BAR0 is memory");
    snprintf(path, sizeof path, "%s/resource0", dir);
    struct stat st;
    check(stat(path, &st) == 0 && st.st_size == EDU_BAR0_SIZE, "resource0 file is 1 MiB");

    // Memory decoding on (harmless when the firmware already enabled it).
    snprintf(path, sizeof path, "%s/enable", dir);
    f = fopen(path, "w");
    if (f) {
        fputs("1", f);
        fclose(f);
    }

    // Bus mastering on, as a driver's pci_set_master() does: the device may not DMA without
    // it (the server refuses). "enable" turns on decoding only.
    snprintf(path, sizeof path, "%s/config", dir);
    int cfg = open(path, O_RDWR);
    uint16_t command = 0;
    int mastering = cfg >= 0 && pread(cfg, &command, 2, 4) == 2;
    command |= 0x4;  // PCI_COMMAND_MASTER
    mastering = mastering && pwrite(cfg, &command, 2, 4) == 2;
    if (cfg >= 0) close(cfg);
    check(mastering, "bus mastering on");

    snprintf(path, sizeof path, "%s/resource0", dir);
    int fd = open(path, O_RDWR | O_SYNC);
    volatile uint8_t* bar = MAP_FAILED;
    if (fd >= 0) bar = mmap(NULL, EDU_BAR0_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED) {
        printf("edu_user: mmap %s: %s\n", path, strerror(errno));
        ++failures;
        finish();
    }

    uint32_t id = rd32(bar, EDU_ID);
    printf("edu_user: identification 0x%08x\n", id);
    check(id == 0x010000ed, "identification register");
    wr32(bar, EDU_LIVENESS, 0x12345678);
    uint32_t live = rd32(bar, EDU_LIVENESS);
    printf("edu_user: liveness 0x12345678 -> 0x%08x\n", live);
    check(live == (uint32_t)~0x12345678u, "liveness register inverts");

    wr32(bar, EDU_FACTORIAL, 10);
    int done = 0;
    for (int i = 0; i < POLL_LIMIT && !done; ++i) done = (rd32(bar, EDU_STATUS) & 1) == 0;
    uint32_t fact = rd32(bar, EDU_FACTORIAL);
    printf("edu_user: factorial 10! = %u\n", fact);
    check(done && fact == 3628800, "factorial");

    dma_test(bar);
    finish();
    return 0;
}
