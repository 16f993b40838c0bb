/* The virtio-blk unit tests' fake guest and driver (blk_harness.h). */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../virtio/blk_dev.h"
#include "blk_harness.h"

uint8_t ram[RAM] __attribute__((aligned(4096)));
struct guest_mem mem;
struct vmmio_dev t;
struct vblk *blk;
char path[64], path2[64];
uint16_t next_avail, next_desc;
struct vm_stats stats;

void wr(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

uint32_t rd(uint64_t off)
{
    uint32_t v;
    vmmio_read(&t, off, (uint8_t *)&v, 4);
    return v;
}

void make_file(char *p, unsigned sectors, uint8_t xor)
{
    strcpy(p, "/tmp/ember-test-blk-XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    uint8_t buf[512];
    for (unsigned i = 0; i < sectors; i++) {
        memset(buf, (uint8_t)(i ^ xor), sizeof(buf));
        assert_int_equal(write(fd, buf, sizeof(buf)), sizeof(buf));
    }
    close(fd);
}

void driver_negotiate(void)
{
    next_avail = next_desc = 0;
    memset(ram + AVAIL, 0, 0x3000);
    wr(0x70, 1);
    wr(0x70, 3);
    wr(0x24, 1);
    wr(0x20, 1);
    wr(0x70, 0xb);
}

void driver_ready(void)
{
    wr(0x30, 0);
    wr(0x38, QSIZE);
    wr(0x80, DESC);
    wr(0x90, AVAIL);
    wr(0xa0, USED);
    wr(0x44, 1);
    wr(0x70, 0xf);
    assert_int_equal(rd(0x70), 0xf);
}

void driver_init(void)
{
    driver_negotiate();
    driver_ready();
}

void start(struct vm_drive *d)
{
    char err[256];
    memset(ram, 0, sizeof(ram));
    memset(&stats, 0, sizeof(stats));
    path2[0] = 0;
    mem = (struct guest_mem){.nregions = 1};
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = ram};
    make_file(path, DISK / 512, 0);
    d->path = path;
    blk = vblk_create(d, &stats, err, sizeof(err));
    assert_non_null(blk);
    assert_int_equal(vmmio_init(&t, &vblk_ops, blk, &mem, 0), 0);
    driver_init();
}

int stop(void **state)
{
    (void)state;
    vmmio_destroy(&t);
    vblk_ops.destroy(blk);
    unlink(path);
    if (path2[0])
        unlink(path2);
    return 0;
}

uint16_t desc(uint64_t addr, uint32_t len, uint16_t flags)
{
    uint16_t i = next_desc++ % QSIZE;
    uint16_t next = (uint16_t)((i + 1) % QSIZE);
    uint8_t *d = ram + DESC + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
    return i;
}

uint16_t request(uint32_t type, uint64_t sector, uint64_t data, uint32_t len, bool write)
{
    uint16_t n = next_avail;
    uint64_t hdr = HDR + 16 * (n % QSIZE);
    memcpy(ram + hdr, &type, 4);
    memset(ram + hdr + 4, 0, 4);
    memcpy(ram + hdr + 8, &sector, 8);
    ram[STAT + n % QSIZE] = 0xee;
    uint16_t head = desc(hdr, 16, VRING_DESC_F_NEXT);
    if (len)
        desc(data, len, VRING_DESC_F_NEXT | (write ? 0 : VRING_DESC_F_WRITE));
    desc(STAT + n % QSIZE, 1, VRING_DESC_F_WRITE);
    memcpy(ram + AVAIL + 4 + 2 * (n % QSIZE), &head, 2);
    next_avail++;
    memcpy(ram + AVAIL + 2, &next_avail, 2);
    return n;
}

uint16_t used_idx(void)
{
    uint16_t v;
    memcpy(&v, ram + USED + 2, 2);
    return v;
}

int dev_fd(unsigned which)
{
    struct virtio_fd fds[VIRTIO_MAX_DEV_FDS];
    assert_int_equal(vblk_ops.fds(blk, fds), VBLK_NFDS);
    return fds[which].fd;
}

void kick(uint16_t want)
{
    vmmio_notify(&t, 0);
    unsigned which = dev_fd(VBLK_FD_RING) >= 0 ? VBLK_FD_RING : VBLK_FD_THROTTLE;
    for (int tries = 0; used_idx() != want && tries < 100; tries++) { /* a bound, not a timing */
        struct pollfd p = {.fd = dev_fd(which), .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            vmmio_event(&t, which);
    }
    assert_int_equal(used_idx(), want);
}

int patch_drive(const struct vm_drive *d, const char *p, const struct vm_bucket *bw,
                const struct vm_bucket *ops, char *err, size_t errlen)
{
    struct vblk_backing bk = {.fd = -1};
    struct vblk_update u = {.path = p, .bw = bw, .ops = ops};
    if (p) {
        int ret = vblk_open_backing(d, p, &bk, err, errlen);
        if (ret)
            return ret;
        u.backing = &bk;
    }
    int ret = vmmio_update(&t, &u, err, errlen);
    if (bk.fd >= 0)
        close(bk.fd);
    return ret;
}

uint8_t status(uint16_t n)
{
    return ram[STAT + n % QSIZE];
}

void file_bytes(uint64_t off, uint8_t *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

void expect_disk_id(const char *file)
{
    struct stat st;
    char want[64] = {0};
    assert_int_equal(stat(file, &st), 0);
    snprintf(want, sizeof(want), "%llu%llu%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_rdev, (unsigned long long)st.st_ino);
    memset(want + VIRTIO_BLK_ID_BYTES, 0, sizeof(want) - VIRTIO_BLK_ID_BYTES);
    assert_memory_equal(ram + DATA, want, VIRTIO_BLK_ID_BYTES);
}

uint64_t capacity(void)
{
    uint64_t c;
    vmmio_read(&t, 0x100, (uint8_t *)&c, 8);
    return c;
}

int backing_to_pipe(bool async, int p[2])
{
    int good = dup(blk->fd);
    assert_true(good >= 0);
    assert_int_equal(pipe(p), 0);
    backing_set(async, p[0]);
    return good;
}

void backing_set(bool async, int fd)
{
    char err[256];
    if (async)
        assert_int_equal(uring_set_file(&blk->eng, fd, err, sizeof(err)), 0);
    else
        assert_true(dup2(fd, blk->fd) == blk->fd);
}
