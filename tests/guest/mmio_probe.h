/* What the guest-side virtio-mmio probes share (vq_corrupt.c, net_hostile.c): a device's
 * register window mapped from /dev/mem, NPAGES locked pages of our own for rings and buffers
 * with their guest-physical addresses (/proc/self/pagemap), and split-ring descriptors.
 *
 * The includer defines NPAGES (pages to allocate) and P_DESC (the page holding the descriptor
 * table set_desc writes) before including this file; it is one translation unit's private
 * part (static), never a library. */
#ifndef EMBER_TESTS_GUEST_MMIO_PROBE_H
#define EMBER_TESTS_GUEST_MMIO_PROBE_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE         4096
#define VIRTIO_MAGIC 0x74726976 /* "virt" */

static volatile uint32_t *regs;
static uint8_t *pages;
static uint64_t phys[NPAGES];

static void reg_write(unsigned off, uint32_t v)
{
    regs[off / 4] = v;
    __sync_synchronize();
}

static uint32_t reg_read(unsigned off)
{
    __sync_synchronize();
    return regs[off / 4];
}

static uint8_t *page(unsigned i)
{
    return pages + (size_t)i * PAGE;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = page(P_DESC) + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

/* Each page's guest-physical address, from the pagemap (present, non-zero frame). Returns 0
 * or -errno. */
static int physical_addresses(void)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0)
        return -errno;
    for (unsigned i = 0; i < NPAGES; i++) {
        uint64_t e;
        off_t off = (off_t)((uintptr_t)page(i) / PAGE * sizeof(e));
        if (pread(fd, &e, sizeof(e), off) != sizeof(e) || !(e >> 63) || !(e & ((1ULL << 55) - 1))) {
            close(fd);
            return -EIO;
        }
        phys[i] = (e & ((1ULL << 55) - 1)) * PAGE;
    }
    close(fd);
    return 0;
}

/* probe_open(argc, argv, name, device_id): `name BASE`: maps the virtio-mmio (version 2)
 * window at BASE (a number, as strtoull reads it) and checks it holds a device of device_id,
 * then allocates and locks the pages and finds their addresses. Prints why to stderr, prefixed
 * with name. Returns 0, or the probe's exit code (2: usage, 1: cannot). */
static int probe_open(int argc, char **argv, const char *name, uint32_t device_id)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s BASE\n", name);
        return 2;
    }
    const char *base_arg = argv[1];
    char *end;
    errno = 0;
    uint64_t base = strtoull(base_arg, &end, 0);
    if (errno || end == base_arg || *end || base % PAGE) {
        fprintf(stderr, "%s: BASE %s is not a page-aligned address\n", name, base_arg);
        return 1;
    }
    int fd = open("/dev/mem", O_RDWR | O_SYNC);
    if (fd < 0) {
        fprintf(stderr, "%s: /dev/mem: %s\n", name, strerror(errno));
        return 1;
    }
    regs = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    close(fd); /* the mapping stays */
    pages = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
    if (regs == MAP_FAILED || pages == MAP_FAILED) {
        fprintf(stderr, "%s: mmap: %s\n", name, strerror(errno));
        return 1;
    }
    if (reg_read(0) != VIRTIO_MAGIC || reg_read(4) != 2 || reg_read(8) != device_id) {
        fprintf(stderr, "%s: no virtio device %u at %#llx\n", name, device_id,
                (unsigned long long)base);
        return 1;
    }
    memset(pages, 0, (size_t)NPAGES * PAGE);
    if (physical_addresses()) {
        fprintf(stderr, "%s: cannot read /proc/self/pagemap\n", name);
        return 1;
    }
    return 0;
}

/* The driver's initialization up to FEATURES_OK (virtio spec 3.1.1): reset, ACKNOWLEDGE,
 * DRIVER, VIRTIO_F_VERSION_1 and the low feature word feat0. Returns 0 or -1 (refused). */
static int probe_features(uint32_t feat0)
{
    reg_write(0x70, 0);
    reg_write(0x70, 1);
    reg_write(0x70, 3);
    reg_write(0x24, 1);
    reg_write(0x20, 1); /* VIRTIO_F_VERSION_1 */
    reg_write(0x24, 0);
    reg_write(0x20, feat0);
    reg_write(0x70, 0xb);
    return reg_read(0x70) == 0xb ? 0 : -1;
}

/* Queue q of size entries on our pages desc, avail and used, made ready. */
static void probe_queue(unsigned q, uint32_t size, unsigned desc, unsigned avail, unsigned used)
{
    reg_write(0x30, q);
    reg_write(0x38, size);
    reg_write(0x80, (uint32_t)phys[desc]);
    reg_write(0x84, (uint32_t)(phys[desc] >> 32));
    reg_write(0x90, (uint32_t)phys[avail]);
    reg_write(0x94, (uint32_t)(phys[avail] >> 32));
    reg_write(0xa0, (uint32_t)phys[used]);
    reg_write(0xa4, (uint32_t)(phys[used] >> 32));
    reg_write(0x44, 1);
}

/* DRIVER_OK. Returns 0 or -1 (the device did not take it). */
static int probe_driver_ok(void)
{
    reg_write(0x70, 0xf);
    return reg_read(0x70) == 0xf ? 0 : -1;
}

#endif
