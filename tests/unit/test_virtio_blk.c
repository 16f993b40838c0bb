/* virtio-blk (virtio/blk.c) through the mmio transport over fake guest memory and a temporary
 * backing file: request parsing, bounds, read-only, GET_ID, FLUSH, both engines, the block
 * counters, swapping the backing file and the buckets of a running device (PATCH /drives), the
 * io_uring restrictions, the NEEDS_RESET log limit. Request parsing alone and the token
 * bucket: test_virtio_blk_req.c. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../virtio/blk.h"
#include "../../virtio/mmio.h"
#include "../../virtio/virtio.h"

#define RAM   0x40000ULL
#define DESC  0x1000ULL
#define AVAIL 0x2000ULL
#define USED  0x3000ULL
#define HDR   0x4000ULL /* request headers, 16 bytes each */
#define STAT  0x5000ULL /* status bytes */
#define DATA  0x10000ULL
#define QSIZE 16
#define DISK  (64 * 512)

static uint8_t ram[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct vmmio_dev t;
static struct vblk *blk;
static char path[64], path2[64];
static uint16_t next_avail, next_desc;
static struct vm_stats stats;

static void wr(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

static uint32_t rd(uint64_t off)
{
    uint32_t v;
    vmmio_read(&t, off, (uint8_t *)&v, 4);
    return v;
}

/* A temporary backing file of sectors sectors, sector i filled with (i ^ xor) & 0xff. */
static void make_file(char *p, unsigned sectors, uint8_t xor)
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

/* The driver's initialization (spec 3.1.1). */
static void driver_init(void)
{
    next_avail = next_desc = 0;
    memset(ram + AVAIL, 0, 0x3000);
    wr(0x70, 1);
    wr(0x70, 3);
    wr(0x24, 1);
    wr(0x20, 1);
    wr(0x70, 0xb);
    wr(0x30, 0);
    wr(0x38, QSIZE);
    wr(0x80, DESC);
    wr(0x90, AVAIL);
    wr(0xa0, USED);
    wr(0x44, 1);
    wr(0x70, 0xf);
    assert_int_equal(rd(0x70), 0xf);
}

static void start(struct vm_drive *d)
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

static int stop(void **state)
{
    (void)state;
    vmmio_destroy(&t);
    vblk_ops.destroy(blk);
    unlink(path);
    if (path2[0])
        unlink(path2);
    return 0;
}

static uint16_t desc(uint64_t addr, uint32_t len, uint16_t flags)
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

/* Queues one request with a 16-byte header, one data buffer and a status byte. */
static uint16_t request(uint32_t type, uint64_t sector, uint64_t data, uint32_t len, bool write)
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

static uint16_t used_idx(void)
{
    uint16_t v;
    memcpy(&v, ram + USED + 2, 2);
    return v;
}

/* The device's fd number which. */
static int dev_fd(unsigned which)
{
    struct virtio_fd fds[VIRTIO_MAX_DEV_FDS];
    assert_int_equal(vblk_ops.fds(blk, fds), VBLK_NFDS);
    return fds[which].fd;
}

/* Notifies and, for the async engine, waits (bounded) for every completion. */
static void kick(uint16_t want)
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

/* PATCH /drives as the registry does it: the new file opened first, swapped under the lock. */
static int update(const struct vm_drive *d, const char *p, const struct vm_bucket *bw,
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

static uint8_t status(uint16_t n)
{
    return ram[STAT + n % QSIZE];
}

static void file_bytes(uint64_t off, uint8_t *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

/* GET_ID's answer at DATA is Firecracker's: decimal st_dev, st_rdev, st_ino of the backing
 * file run together, the first 20 bytes, zero-padded. */
static void expect_disk_id(const char *file)
{
    struct stat st;
    char want[64] = {0};
    assert_int_equal(stat(file, &st), 0);
    snprintf(want, sizeof(want), "%llu%llu%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_rdev, (unsigned long long)st.st_ino);
    memset(want + VIRTIO_BLK_ID_BYTES, 0, sizeof(want) - VIRTIO_BLK_ID_BYTES);
    assert_memory_equal(ram + DATA, want, VIRTIO_BLK_ID_BYTES);
}

/* Both engines: state points at the drive's async flag. */
static void read_write(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "d", .async = async, .writeback = true};
    start(&d);
    uint8_t cap[8];
    vmmio_read(&t, 0x100, cap, 8);
    uint64_t c;
    memcpy(&c, cap, 8);
    assert_int_equal(c, DISK / 512);
    uint32_t seg_max;
    vmmio_read(&t, 0x10c, (uint8_t *)&seg_max, 4);
    assert_int_equal(seg_max, 126);
    /* Read sectors 3..4. */
    uint16_t r = request(VIRTIO_BLK_T_IN, 3, DATA, 1024, false);
    kick(1);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 3);
    assert_int_equal(ram[DATA + 1023], 4);
    uint32_t len;
    memcpy(&len, ram + USED + 8, 4);
    assert_int_equal(len, 1025);
    /* Write sector 7. */
    memset(ram + DATA, 0xab, 512);
    r = request(VIRTIO_BLK_T_OUT, 7, DATA, 512, true);
    uint16_t f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(3);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(status(f), VIRTIO_BLK_S_OK);
    uint8_t buf[514];
    file_bytes(7 * 512 - 1, buf, sizeof(buf));
    assert_int_equal(buf[0], 6);
    assert_int_equal(buf[1], 0xab);
    assert_int_equal(buf[512], 0xab);
    assert_int_equal(buf[513], 8);
    /* Past the end, not a sector multiple, unknown type. */
    uint16_t e1 = request(VIRTIO_BLK_T_IN, DISK / 512 - 1, DATA, 1024, false);
    uint16_t e2 = request(VIRTIO_BLK_T_OUT, 0, DATA, 100, true);
    uint16_t e3 = request(99, 0, 0, 0, false);
    uint16_t e4 = request(VIRTIO_BLK_T_IN, UINT64_MAX, DATA, 512, false);
    kick(7);
    assert_int_equal(status(e1), VIRTIO_BLK_S_IOERR);
    assert_int_equal(status(e2), VIRTIO_BLK_S_IOERR);
    assert_int_equal(status(e3), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(status(e4), VIRTIO_BLK_S_IOERR);
    /* GET_ID: 20 bytes, not NUL-terminated when full. */
    memset(ram + DATA, 0, 32);
    uint16_t g = request(VIRTIO_BLK_T_GET_ID, 0, DATA, 20, false);
    kick(8);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    expect_disk_id(path);
    assert_int_equal(rd(0x70), 0xf);
    /* Counters: successful I/O only, bytes actually done; the four bad requests are invalid. */
    assert_int_equal(stats.block_read_count, 1);
    assert_int_equal(stats.block_read_bytes, 1024);
    assert_int_equal(stats.block_write_count, 1);
    assert_int_equal(stats.block_write_bytes, 512);
    assert_int_equal(stats.block_flush_count, 1);
    assert_int_equal(stats.block_invalid_reqs, 4);
}

static void read_only(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "ro", .read_only = true};
    start(&d);
    wr(0x14, 0);
    assert_true(rd(0x10) & (1u << 5));  /* VIRTIO_BLK_F_RO */
    assert_false(rd(0x10) & (1u << 9)); /* no FLUSH without Writeback */
    memset(ram + DATA, 0xcd, 512);
    uint16_t r = request(VIRTIO_BLK_T_OUT, 1, DATA, 512, true);
    kick(1);
    assert_int_equal(status(r), VIRTIO_BLK_S_IOERR);
    uint8_t b;
    file_bytes(512, &b, 1);
    assert_int_equal(b, 1);
}

static void short_chains_get_no_status(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "s"};
    start(&d);
    /* A header-only chain has no status byte: returned with length 0, device still fine. */
    uint16_t head = desc(HDR, 16, 0);
    memcpy(ram + AVAIL + 4, &head, 2);
    next_avail = 1;
    memcpy(ram + AVAIL + 2, &next_avail, 2);
    kick(1);
    uint32_t len;
    memcpy(&len, ram + USED + 8, 4);
    assert_int_equal(len, 0);
    assert_int_equal(rd(0x70), 0xf);
    /* A malformed ring: NEEDS_RESET. */
    next_avail = 200;
    memcpy(ram + AVAIL + 2, &next_avail, 2);
    vmmio_notify(&t, 0);
    assert_int_equal(rd(0x70), 0x4f);
}

static uint64_t capacity(void)
{
    uint64_t c;
    vmmio_read(&t, 0x100, (uint8_t *)&c, 8);
    return c;
}

/* PATCH /drives/{id} with a new path_on_host: reads come from the new file, capacity and GET_ID
 * follow it, the driver gets a config-change interrupt and a new config generation; a path
 * that cannot be used changes nothing. */
static void swap_backing_file(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "d", .async = async};
    char err[256];
    start(&d);
    make_file(path2, 2 * DISK / 512, 0xc0);
    uint32_t gen = rd(0xfc);
    assert_int_equal(rd(0x60) & 2, 0);
    int ret = update(&d, path2, NULL, NULL, err, sizeof(err));
    assert_int_equal(ret, 0);
    assert_int_equal(capacity(), 2 * DISK / 512);
    assert_int_equal(rd(0xfc), gen + 1);
    assert_int_equal(rd(0x60) & 2, 2); /* VIRTIO_MMIO_INT_CONFIG */
    /* Sector 100 lies past the old end: it comes from the new file. */
    uint16_t r = request(VIRTIO_BLK_T_IN, 100, DATA, 1024, false);
    memset(ram + DATA + 0x1000, 0, 32);
    uint16_t g = request(VIRTIO_BLK_T_GET_ID, 0, DATA + 0x1000, 20, false);
    kick(2);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 100 ^ 0xc0);
    assert_int_equal(ram[DATA + 1023], 101 ^ 0xc0);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    memmove(ram + DATA, ram + DATA + 0x1000, 20);
    expect_disk_id(path2);
    /* Unusable paths: an error, and the drive keeps the file it had. */
    assert_true(update(&d, "/nonexistent/ember", NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/nonexistent/ember"));
    assert_true(update(&d, "/tmp", NULL, NULL, err, sizeof(err)) < 0);
    /* A FIFO is refused without blocking in open() (no writer: a blocking open would hang;
     * the alarm turns such a hang into a failure). */
    char fifo[64];
    snprintf(fifo, sizeof(fifo), "/tmp/ember-test-fifo-%d", (int)getpid());
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    assert_true(update(&d, fifo, NULL, NULL, err, sizeof(err)) < 0);
    alarm(0);
    unlink(fifo);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(capacity(), 2 * DISK / 512);
    assert_int_equal(rd(0xfc), gen + 1);
    r = request(VIRTIO_BLK_T_IN, 120, DATA, 512, false);
    kick(3);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 120 ^ 0xc0);
    /* Writes go to the new file too. */
    memset(ram + DATA, 0x5e, 512);
    r = request(VIRTIO_BLK_T_OUT, 127, DATA, 512, true);
    kick(4);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    int fd = open(path2, O_RDONLY);
    uint8_t b = 0;
    assert_int_equal(pread(fd, &b, 1, 127 * 512), 1);
    close(fd);
    assert_int_equal(b, 0x5e);
    assert_int_equal(rd(0x70), 0xf);
}

/* New buckets replace the old ones at once: a request the old ops bucket holds back (one
 * operation per 100 s) goes ahead when PATCH disables the limiter, without waiting for the
 * timer. */
static void update_buckets(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "rl", .ops = {.size = 1, .refill_time_ms = 100000}};
    char err[256];
    start(&d);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, 1, DATA + 512, 512, false);
    vmmio_notify(&t, 0);
    assert_int_equal(used_idx(), 1); /* the second one waits for a token */
    struct vm_bucket off = {0};
    assert_int_equal(update(&d, NULL, NULL, &off, err, sizeof(err)), 0);
    assert_int_equal(used_idx(), 2);
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 1);
}

/* virtio_drive_update finds drives by id; an unknown id is -ENOENT. */
/* Quiesce (a snapshot's pause): a request waiting for tokens goes back to the ring and is
 * popped again later; requests in flight on the Async engine are answered; nothing is held. */
static void quiesce_leaves_nothing_in_flight(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "q", .async = async, .ops = {.size = 1, .refill_time_ms = 100000}};
    char err[256];
    start(&d);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, 1, DATA + 512, 512, false);
    vmmio_notify(&t, 0);
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(used_idx(), 1);                /* the first answered (in flight: waited for) */
    assert_int_equal(t.queues[0].st.last_avail, 1); /* the second is back in the ring */
    assert_int_equal(status(0), VIRTIO_BLK_S_OK);
    assert_int_equal(rd(0x60) & VIRTIO_INT_USED, VIRTIO_INT_USED);
    struct vm_bucket off = {0};
    assert_int_equal(update(&d, NULL, NULL, &off, err, sizeof(err)), 0);
    kick(2); /* the second was given back, and is taken again */
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 1);
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(used_idx(), 2);
}

/* A snapshot of a quiesced drive restored onto a fresh device on the same file: the request
 * given back to the ring is answered there. Saving before quiesce, a changed disk size and
 * requests in flight in the state are refused. */
static void save_restore(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "s", .async = async, .ops = {.size = 1, .refill_time_ms = 100000}};
    struct vmmio_state s;
    struct vq_state q[VIRTIO_MAX_QUEUES];
    struct vblk_state bs, bad;
    char err[256];
    start(&d);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, 5, DATA + 512, 512, false);
    vmmio_notify(&t, 0);
    assert_int_equal(vmmio_save(&t, &s, q, &bs), -EBUSY); /* one waits for tokens */
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(vmmio_save(&t, &s, q, &bs), 0);
    assert_int_equal(bs.capacity, DISK / 512);
    vmmio_destroy(&t);
    vblk_ops.destroy(blk);
    d.ops = (struct vm_bucket){0};
    blk = vblk_create(&d, &stats, err, sizeof(err));
    assert_non_null(blk);
    assert_int_equal(vmmio_init(&t, &vblk_ops, blk, &mem, 0), 0);
    bad = (struct vblk_state){.capacity = bs.capacity + 1};
    assert_int_equal(vmmio_restore(&t, &s, q, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "sectors"));
    struct vq_state popped[VIRTIO_MAX_QUEUES];
    memcpy(popped, q, sizeof(popped));
    popped[0].last_avail++;
    assert_int_equal(vmmio_restore(&t, &s, popped, &bs, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "in flight"));
    assert_int_equal(rd(0x70), 0);
    assert_int_equal(vmmio_restore(&t, &s, q, &bs, err, sizeof(err)), 0);
    assert_int_equal(rd(0x70), 0xf);
    kick(2);
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 5);
}

/* The Sync batch: requests until the iovec pool is full (then 0: run the batch first), their
 * I/O in order. */
static void sync_batch_fills(void **state)
{
    static struct sync_batch bt;
    struct vblk_req r = {.type = VIRTIO_BLK_T_IN, .sector = 2, .len = 512, .niov = 100};
    uint8_t st;
    (void)state;
    for (unsigned i = 0; i < r.niov; i++)
        r.iov[i] = (struct iovec){ram + DATA + 512 * (i % 2), i == 0 ? 512 : 0};
    r.status = &st;
    memset(&bt, 0, sizeof(bt));
    assert_int_equal(sync_add(&bt, &r, 7), 1);
    assert_int_equal(sync_add(&bt, &r, 8), 1);
    assert_int_equal(sync_add(&bt, &r, 9), 0); /* 300 iovecs > VQ_MAX_SIZE */
    assert_int_equal(bt.n, 2);
    make_file(path, 4, 0x10);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    sync_run(&bt, fd);
    close(fd);
    unlink(path);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_OK);
    assert_int_equal(bt.r[1].head, 8);
    assert_int_equal(bt.r[1].s, VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 2 ^ 0x10);
    memset(&bt, 0, sizeof(bt));
    r.sector = 4; /* past the end of the file (now empty): a short read */
    assert_int_equal(sync_add(&bt, &r, 7), 1);
    fd = open(path, O_CREAT | O_RDONLY, 0600);
    sync_run(&bt, fd);
    close(fd);
    unlink(path);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_IOERR);
}

static void *notify_thread(void *arg)
{
    (void)arg;
    vmmio_notify(&t, 0);
    return NULL;
}

/* A vCPU's register accesses during the I/O (a Status read, then maybe a reset). */
static uint32_t vcpu_status;
static int vcpu_done = -1;

static void *vcpu_thread(void *arg)
{
    uint64_t one = 1;
    vcpu_status = rd(0x70);
    if (*(bool *)arg)
        wr(0x70, 0);
    assert_int_equal(write(vcpu_done, &one, sizeof(one)), sizeof(one));
    return NULL;
}

#define SLOW_GPA 0x100000ULL /* a guest page that userfaultfd keeps missing */

/* A Sync read whose data buffer is a guest page that is not there yet (userfaultfd): preadv
 * waits in the kernel until the test supplies the page, as a slow disk would keep it. A vCPU's
 * register access meanwhile does not wait for it (item 7 of issue 12; 2 s bound a wedge, they
 * are no timing); after a reset meanwhile the answer is dropped. */
static void slow_sync_read(void **state)
{
    bool reset = *(bool *)*state;
    struct vm_drive d = {.id = "slow"};
    start(&d);
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0)
        skip(); /* no userfaultfd on this host */
    struct uffdio_api api = {.api = UFFD_API};
    assert_int_equal(ioctl(uffd, UFFDIO_API, &api), 0);
    uint8_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(page != MAP_FAILED);
    struct uffdio_register reg = {.range = {(uintptr_t)page, 4096},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    assert_int_equal(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
    mem.regions[1] = (struct gm_region){.gpa = SLOW_GPA, .size = 4096, .host = page};
    mem.nregions = 2;
    uint16_t r = request(VIRTIO_BLK_T_IN, 3, SLOW_GPA, 512, false);

    pthread_t io, vcpu;
    vcpu_done = eventfd(0, 0);
    assert_int_equal(pthread_create(&io, NULL, notify_thread, NULL), 0);
    struct pollfd p = {.fd = uffd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 2000), 1); /* the read waits for the page */
    struct uffd_msg msg;
    assert_int_equal(read(uffd, &msg, sizeof(msg)), sizeof(msg));
    assert_int_equal(msg.event, UFFD_EVENT_PAGEFAULT);
    assert_int_equal(pthread_create(&vcpu, NULL, vcpu_thread, &reset), 0);
    struct pollfd v = {.fd = vcpu_done, .events = POLLIN};
    bool answered = poll(&v, 1, 2000) == 1;
    struct uffdio_zeropage z = {.range = {(uintptr_t)page, 4096}};
    assert_int_equal(ioctl(uffd, UFFDIO_ZEROPAGE, &z), 0); /* the page arrives, preadv ends */
    pthread_join(io, NULL);
    pthread_join(vcpu, NULL);
    close(vcpu_done);
    close(uffd);
    assert_true(answered);
    assert_int_equal(vcpu_status, 0xf);
    assert_int_equal(page[0], 3); /* the read itself ran */
    assert_int_equal(used_idx(), reset ? 0 : 1);
    assert_int_equal(status(r), reset ? 0xee : VIRTIO_BLK_S_OK);
    mem.nregions = 1;
    munmap(page, 4096);
}

static void drive_update_by_id(void **state)
{
    (void)state;
    static struct vm_config cfg; /* large: paths */
    char err[256], cmdline[256] = "";
    memset(&cfg, 0, sizeof(cfg));
    cfg.ndrives = 2;
    cfg.drives[0] = (struct vm_drive){.id = "a"};
    cfg.drives[1] = (struct vm_drive){.id = "b", .root = true, .read_only = true};
    make_file(path, 8, 0);
    make_file(path2, 16, 0);
    cfg.drives[0].path = path;
    cfg.drives[1].path = path;
    struct virtio_devs *v = virtio_open(&cfg, &mem, NULL, err, sizeof(err));
    assert_non_null(v);
    /* One device per drive on consecutive slots; the root drive is announced as /dev/vda. */
    assert_int_equal(virtio_boot_args(&cfg, cmdline, sizeof(cmdline)), 0);
    assert_int_equal(virtio_cmdline(v, cmdline, sizeof(cmdline)), 0);
    assert_string_equal(cmdline, " root=/dev/vda ro virtio_mmio.device=4K@0xc0001000:5"
                                 " virtio_mmio.device=4K@0xc0002000:6");
    char shorter[40] = "";
    assert_int_equal(virtio_cmdline(v, shorter, sizeof(shorter)), -ENAMETOOLONG);
    struct vm_drive unknown = {.id = "c"};
    assert_int_equal(virtio_drive_update(v, &unknown, path2, NULL, NULL, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "no drive with id c"));
    assert_int_equal(virtio_drive_update(v, &cfg.drives[0], path2, NULL, NULL, err, sizeof(err)),
                     0);
    assert_true(virtio_drive_update(v, &cfg.drives[1], "/nonexistent", NULL, NULL, err,
                                    sizeof(err)) < 0);
    virtio_destroy(v);
    unlink(path);
    unlink(path2);
}

/* A drive whose file cannot be opened fails the whole set with its reason (nothing leaks). */
static void registry_bad_drive(void **state)
{
    (void)state;
    static struct vm_config cfg;
    char err[256];
    memset(&cfg, 0, sizeof(cfg));
    cfg.ndrives = 1;
    cfg.drives[0] = (struct vm_drive){.id = "x", .path = "/nonexistent/disk"};
    assert_null(virtio_open(&cfg, &mem, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/disk"));
}

static void uring_done(void *ctx, const struct uring_op *op, bool ok)
{
    (void)op;
    *(int *)ctx += ok ? 1 : 100;
}

/* The Async engine's ring runs READV/WRITEV/FSYNC on its registered file and nothing else:
 * another opcode, a plain fd, or a new registration is refused by the kernel. */
static void uring_restricted(void **state)
{
    (void)state;
    struct uring_eng e;
    char err[256];
    uint8_t buf[512];
    make_file(path, 4, 0x33);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(uring_open(&e, fd, err, sizeof(err)), 0);
    /* Allowed: a read of the registered file through the engine. */
    struct vblk_req r = {.type = VIRTIO_BLK_T_IN, .sector = 2, .len = 512, .niov = 1};
    r.iov[0] = (struct iovec){buf, sizeof(buf)};
    int done = 0;
    assert_int_equal(uring_queue(&e, &r, 0, 0), 1);
    assert_int_equal(uring_drain(&e, uring_done, &done), 1);
    assert_int_equal(done, 1);
    assert_int_equal(buf[0], 2 ^ 0x33);
    /* Refused: NOP, and a read of a plain (unregistered) fd. */
    for (int i = 0; i < 2; i++) { /* one at a time: a refused SQE ends the submission */
        struct io_uring_cqe *cqe;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&e.ring);
        if (i == 0)
            io_uring_prep_nop(sqe);
        else
            io_uring_prep_read(sqe, fd, buf, sizeof(buf), 0);
        io_uring_sqe_set_data64(sqe, 1000);
        assert_int_equal(io_uring_submit(&e.ring), 1);
        assert_int_equal(io_uring_wait_cqe(&e.ring, &cqe), 0);
        assert_int_equal(cqe->res, -EACCES);
        io_uring_cqe_seen(&e.ring, cqe);
    }
    assert_int_equal(io_uring_register_files_update(&e.ring, 0, &fd, 1), 1); /* allowed */
    assert_int_equal(io_uring_register_buffers(&e.ring, &r.iov[0], 1), -EACCES);
    assert_int_equal(io_uring_unregister_files(&e.ring), -EACCES);
    uring_close(&e);
    close(fd);
    unlink(path);
}

/* The NEEDS_RESET line: at most one per interval, with the count of lines left out. */
/* Interrupts signalled through t.irq_fd since the last call. */
static uint64_t interrupts(void)
{
    uint64_t n = 0;
    if (read(t.irq_fd, &n, sizeof(n)) != sizeof(n))
        return 0;
    return n;
}

/* Waits (bounded) for the moderation round to end and runs it. Returns false if none ended. */
static bool end_of_round(int timeout_ms)
{
    struct pollfd p = {.fd = dev_fd(VBLK_FD_HOLD), .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) /* a round is at most IRQMOD_MAX_ROUND_NS */
        return false;
    vmmio_event(&t, VBLK_FD_HOLD);
    return true;
}

/* Interrupt moderation through the device: the first answer interrupts at once (nothing
 * measured yet); once the guest's turnaround is known, an answer holds the interrupt while the
 * ring is polled without kicks (VRING_USED_F_NO_NOTIFY), a request put in without a kick is
 * found and answered, and one interrupt covers both when a round finds nothing more. A reset
 * in the middle of a hold cancels it: no interrupt afterwards. */
static void interrupt_moderation(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "m"};
    start(&d);
    t.irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(t.irq_fd >= 0);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    kick(1);
    assert_int_equal(interrupts(), 1);
    /* The turnaround is measured: the next answer is held. (A test preempted for over 2 ms
     * looks like an idle guest and measures nothing: then try again, a bounded number.) */
    uint16_t r1, n = 1;
    uint64_t irqs = 1;
    for (int i = 0; i < 5 && irqs; i++) {
        r1 = request(VIRTIO_BLK_T_IN, 1, DATA, 512, false);
        kick(++n);
        assert_int_equal(status(r1), VIRTIO_BLK_S_OK);
        irqs = interrupts();
    }
    assert_int_equal(irqs, 0);
    assert_int_equal(ram[USED] & 1, 1);                                /* kicks suppressed */
    uint16_t r2 = request(VIRTIO_BLK_T_IN, 2, DATA + 512, 512, false); /* no kick */
    int rounds = 0;
    while (interrupts() == 0 && rounds < 2 + IRQMOD_MAX_ROUNDS)
        rounds += end_of_round(1000);
    assert_int_equal(used_idx(), n + 1);
    assert_int_equal(status(r2), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 2);
    assert_true(rounds >= 2 && rounds <= IRQMOD_MAX_ROUNDS); /* found r2, then nothing */
    assert_int_equal(ram[USED] & 1, 0);                      /* kicks re-armed */
    /* A reset during a hold: the round's timer is disarmed, no interrupt comes. */
    request(VIRTIO_BLK_T_IN, 3, DATA, 512, false);
    kick(n + 2);
    assert_int_equal(interrupts(), 0);
    wr(0x70, 0);
    assert_false(end_of_round(50));
    assert_int_equal(interrupts(), 0);
    close(t.irq_fd);
    t.irq_fd = -1;
}

static void fail_log_limit(void **state)
{
    (void)state;
    struct ratelog r = {0};
    uint64_t n = 99, s = 1000000000ULL;
    assert_true(ratelog_allow(&r, 5 * s, 10 * s, &n));
    assert_int_equal(n, 0);
    for (int i = 0; i < 1000; i++)
        assert_false(ratelog_allow(&r, 5 * s + (uint64_t)i * 1000000ULL, 10 * s, &n));
    assert_false(ratelog_allow(&r, 15 * s - 1, 10 * s, &n));
    assert_true(ratelog_allow(&r, 15 * s, 10 * s, &n));
    assert_int_equal(n, 1001);
    assert_true(ratelog_allow(&r, 40 * s, 10 * s, &n));
    assert_int_equal(n, 0);
    /* Through the transport: each break is counted, each goes through the limiter. */
    struct vm_drive d = {.id = "f"};
    start(&d);
    for (int i = 0; i < 3; i++) {
        uint16_t leap = 200;
        memcpy(ram + AVAIL + 2, &leap, 2);
        vmmio_notify(&t, 0);
        assert_int_equal(rd(0x70), 0x4f);
        wr(0x70, 0); /* reset */
        driver_init();
    }
    assert_int_equal(t.fail_count, 3);
    assert_true(t.fail_log.used);
}

int main(void)
{
    static bool sync_engine = false, async_engine = true, no_reset = false, with_reset = true;
    const struct CMUnitTest tests[] = {
            {"sync_engine", read_write, NULL, stop, &sync_engine},
            {"async_engine", read_write, NULL, stop, &async_engine},
            cmocka_unit_test_teardown(read_only, stop),
            cmocka_unit_test_teardown(short_chains_get_no_status, stop),
            {"swap_file_sync", swap_backing_file, NULL, stop, &sync_engine},
            {"swap_file_async", swap_backing_file, NULL, stop, &async_engine},
            cmocka_unit_test_teardown(update_buckets, stop),
            {"quiesce_sync", quiesce_leaves_nothing_in_flight, NULL, stop, &sync_engine},
            {"quiesce_async", quiesce_leaves_nothing_in_flight, NULL, stop, &async_engine},
            {"slow_sync_read", slow_sync_read, NULL, stop, &no_reset},
            {"slow_sync_read_reset", slow_sync_read, NULL, stop, &with_reset},
            {"save_restore_sync", save_restore, NULL, stop, &sync_engine},
            {"save_restore_async", save_restore, NULL, stop, &async_engine},
            cmocka_unit_test(drive_update_by_id),
            cmocka_unit_test(sync_batch_fills),
            cmocka_unit_test(registry_bad_drive),
            cmocka_unit_test(uring_restricted),
            cmocka_unit_test_teardown(fail_log_limit, stop),
            cmocka_unit_test_teardown(interrupt_moderation, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
