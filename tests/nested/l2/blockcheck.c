// Reads a block device in L2 and checks the pattern the nested harness wrote into the outer
// QEMU's nvme image (tests/nested/run-nested.sh, pattern=lba): each 512-byte block starts with
// its LBA (little-endian u64), then byte i is (LBA * 13 + i) & 0xff. Reads through the page
// cache-bypassing O_DIRECT path so every block really comes from the device.
// Usage: blockcheck DEVICE [BLOCKS]   (default 2048, the 1 MiB image)
// Exit status 0 when every block matches; 1 otherwise.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 512u

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: blockcheck DEVICE [BLOCKS]\n");
        return 1;
    }
    const unsigned blocks = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 2048u;
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    const size_t chunk = 64u * 1024u;
    uint8_t* buf = NULL;
    if (posix_memalign((void**)&buf, 4096, chunk) != 0) {
        fprintf(stderr, "blockcheck: no memory\n");
        return 1;
    }
    unsigned bad = 0;
    for (uint64_t lba = 0; lba < blocks;) {
        const size_t want = (blocks - lba) * BLOCK < chunk ? (blocks - lba) * BLOCK : chunk;
        ssize_t n = pread(fd, buf, want, (off_t)(lba * BLOCK));
        if (n != (ssize_t)want) {
            fprintf(stderr, "blockcheck: read at LBA %llu: %s\n", (unsigned long long)lba,
                    n < 0 ? strerror(errno) : "short read");
            return 1;
        }
        for (size_t b = 0; b < want / BLOCK; b++, lba++) {
            const uint8_t* p = buf + b * BLOCK;
            uint64_t stored;
            memcpy(&stored, p, sizeof stored);
            int ok = stored == lba;
            for (unsigned i = 8; ok && i < BLOCK; i++) ok = p[i] == (uint8_t)(lba * 13u + i);
            if (!ok && bad++ < 5)
                fprintf(stderr, "blockcheck: LBA %llu does not hold its pattern\n",
                        (unsigned long long)lba);
        }
    }
    if (close(fd) != 0) perror("close");
    printf("blockcheck: %u of %u blocks hold their pattern\n", blocks - bad, blocks);
    return bad == 0 ? 0 : 1;
}
