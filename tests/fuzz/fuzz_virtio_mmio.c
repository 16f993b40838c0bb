/* Fuzz target: the virtio-mmio register file and status machine (virtio/mmio.c) with a
 * virtio-blk device behind it (virtio/blk.c on memfd backing files), as a hostile guest drives
 * them. The input is a stream of operations: MMIO reads and writes of any offset, size (1, 2, 4,
 * 8) and value; pokes into guest RAM; two shortcuts a driver would take (the whole
 * initialization sequence, one request chain put on the queue); queue notifications (through
 * the notify eventfd, as KVM's ioeventfd); the device's timers and io_uring completions firing;
 * and PATCH /drives on the running device. The first byte picks the drive (Sync, read-only,
 * Async, rate-limited). Besides the sanitizers, the target checks that reads fill exactly the
 * bytes asked for, that the status register only ever holds a state of the driver's
 * sequence (spec 3.1.1) and that the register page is never stale. Guest RAM is two guarded regions
 * with a gap between them. */
#define _GNU_SOURCE /* memfd_create */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../virtio/blk.h"
#include "../../virtio/mmio.h"
#include "fuzz_input.h"
#include "guest_ram.h"

#define RAM0_GPA  0x0ULL
#define RAM0_SIZE 0x8000ULL
#define RAM1_GPA  0xa000ULL /* a hole at [0x8000, 0xa000) */
#define RAM1_SIZE 0x8000ULL
#define SECTORS   16 /* backing file A; B has twice as many */
#define NDRIVES   4
#define MAX_OPS   256

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum op {
    OP_WRITE32,   /* reg/4, u32: an aligned register write */
    OP_READ,      /* off u16, size: any read */
    OP_WRITE,     /* off u16, size, value: any write */
    OP_POKE,      /* gpa u16, len, bytes: the guest writes its RAM */
    OP_INIT,      /* features, qsize, desc u16, avail u16, used u16: the driver's set-up */
    OP_REQUEST,   /* type, sector, len u16, segs, hdr u16, data u16, status u16 */
    OP_NOTIFY,    /* value: QueueNotify write, then the event loop runs */
    OP_EVENT,     /* which: a device fd became readable */
    OP_PATCH,     /* what: PATCH /drives (file, buckets) */
    OP_STATUS,    /* value: a Status write */
    OP_CHECK_INT, /* read InterruptStatus, acknowledge it */
    OP_QUIESCE,   /* the VM is paused for a snapshot: nothing in flight afterwards */
    OP_COUNT
};

static struct guest_mem mem;
static uint8_t *ram0, *ram1;
static struct vblk *drives[NDRIVES];
static struct vm_drive cfgs[NDRIVES];
static char path_a[64], path_b[64];
static int irq_efd, notify_efd;
static struct vmmio_dev t;
static struct vm_stats stats;
static struct vblk *blk;
static unsigned drive_idx;
static bool swapped[NDRIVES];
static uint16_t next_desc;

static int memfd_file(char *path, size_t len, unsigned sectors)
{
    int fd = memfd_create("fuzz-blk", 0);
    if (fd < 0 || ftruncate(fd, (off_t)sectors * VBLK_SECTOR) < 0)
        abort();
    snprintf(path, len, "/proc/self/fd/%d", fd);
    return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    (void)argc, (void)argv;
    log_level = LOG_ERROR; /* NEEDS_RESET and refused transitions are expected here */
    ram0 = guest_ram_add(&mem, RAM0_GPA, RAM0_SIZE);
    ram1 = guest_ram_add(&mem, RAM1_GPA, RAM1_SIZE);
    memfd_file(path_a, sizeof(path_a), SECTORS);
    memfd_file(path_b, sizeof(path_b), 2 * SECTORS);
    irq_efd = eventfd(0, EFD_NONBLOCK);
    notify_efd = eventfd(0, EFD_NONBLOCK);
    if (irq_efd < 0 || notify_efd < 0)
        abort();
    for (unsigned i = 0; i < NDRIVES; i++) {
        struct vm_drive *d = &cfgs[i];
        snprintf(d->id, sizeof(d->id), "d%u", i);
        d->path = path_a;
        d->writeback = i != 1;
        d->read_only = i == 1;
        d->async = i == 2;
        if (i == 3) { /* small buckets: requests wait for the timer */
            d->bw = (struct vm_bucket){.size = 4096, .refill_time_ms = 100};
            d->ops = (struct vm_bucket){.size = 2, .one_time_burst = 1, .refill_time_ms = 10};
        }
        drives[i] = vblk_create(d, &stats, err, sizeof(err));
        if (!drives[i] && !d->async) {
            fprintf(stderr, "fuzz_virtio_mmio: %s\n", err);
            abort();
        }
        if (!drives[i]) /* no io_uring here: its inputs run on drive 0 */
            fprintf(stderr, "fuzz_virtio_mmio: no Async drive: %s\n", err);
    }
    return 0;
}

static void wr32(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

static void mmio_read(uint64_t off, uint32_t len)
{
    uint8_t buf[16];
    memset(buf, 0xa5, sizeof(buf));
    vmmio_read(&t, off, buf, len);
    for (unsigned i = len; i < sizeof(buf); i++)
        if (buf[i] != 0xa5) /* wrote past the access */
            abort();
    if (off == 0 && len == 4 && memcmp(buf, "virt", 4))
        abort();
}

/* Status holds a prefix of ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, plus maybe FAILED and
 * NEEDS_RESET; the device runs only after DRIVER_OK. The register page, which a guest reads
 * without an exit, shows the state after every operation. */
static void check_status(void)
{
    pthread_mutex_lock(&t.lock);
    bool current = vmmio_regs_current(&t);
    pthread_mutex_unlock(&t.lock);
    if (!current)
        abort();
    uint32_t s = t.st.status & ~(uint32_t)(VIRTIO_STATUS_FAILED | VIRTIO_STATUS_NEEDS_RESET);
    if (s != 0 && s != 1 && s != 3 && s != 0xb && s != 0xf)
        abort();
    if (t.st.activated && !(t.st.status & VIRTIO_STATUS_DRIVER_OK))
        abort();
}

static void poke(struct input *in)
{
    uint16_t gpa = in16(in);
    uint8_t len = in8(in);
    uint8_t *p = gm_ptr(&mem, gpa, len);
    for (unsigned i = 0; i < len; i++) {
        uint8_t b = in8(in);
        if (p)
            p[i] = b;
    }
}

/* The driver's initialization (spec 3.1.1). f: bit 0 no EVENT_IDX, 1 an unoffered feature, 2 no
 * VERSION_1, 3 queue 1 (absent), 4 used ring above 4 GiB, 5 FLUSH, 6 RO, 7 SEG_MAX. */
static void driver_init(struct input *in)
{
    uint8_t f = in8(in);
    uint8_t qsize = in8(in);
    uint16_t desc = in16(in), avail = in16(in), used = in16(in);
    uint32_t lo = 0;

    if (!(f & 1))
        lo |= 1U << VIRTIO_F_RING_EVENT_IDX;
    if (f & 2)
        lo |= 1U << 0;
    if (f & 32)
        lo |= 1U << 9;
    if (f & 64)
        lo |= 1U << 5;
    if (f & 128)
        lo |= 1U << 2;
    wr32(0x70, 0);
    wr32(0x70, 1);
    wr32(0x70, 3);
    wr32(0x24, 0);
    wr32(0x20, lo);
    wr32(0x24, 1);
    wr32(0x20, f & 4 ? 0 : 1); /* VIRTIO_F_VERSION_1 */
    wr32(0x70, 0xb);
    wr32(0x30, f & 8 ? 1 : 0);
    wr32(0x38, qsize ? 1U << (qsize % 9) : 256);
    wr32(0x80, desc & ~15u);
    wr32(0x84, 0);
    wr32(0x90, avail & ~1u);
    wr32(0x94, 0);
    wr32(0xa0, used & ~3u);
    wr32(0xa4, f & 16 ? 1 : 0);
    wr32(0x44, 1);
    wr32(0x70, 0xf);
    next_desc = 0;
}

static void put_desc(const struct vq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags)
{
    uint16_t next = (uint16_t)((i + 1) % q->st.size);
    uint8_t *d = q->desc + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

/* One request chain: header, segs data buffers splitting len, status byte; then published. */
static void request(struct input *in)
{
    static const uint32_t types[] = {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH,
                                     VIRTIO_BLK_T_GET_ID, 3};
    uint8_t type = in8(in), sector = in8(in);
    uint16_t len = in16(in);
    uint8_t segs = in8(in) % 4;
    uint16_t hdr = in16(in), data = in16(in), status = in16(in);
    struct vq *q = &t.queues[0];

    if (!q->st.active || !q->st.size)
        return;
    uint8_t h[16] = {0};
    uint32_t ty = types[type % 5];
    uint64_t sec = sector;
    memcpy(h, &ty, 4);
    memcpy(h + 8, &sec, 8);
    gm_write(&mem, hdr, h, sizeof(h));
    bool dev_writes = ty == VIRTIO_BLK_T_IN || ty == VIRTIO_BLK_T_GET_ID;
    uint16_t head = next_desc % q->st.size;
    put_desc(q, next_desc++ % q->st.size, hdr, 16, VRING_DESC_F_NEXT);
    uint32_t off = 0;
    for (unsigned s = 0; s < segs; s++) {
        uint32_t part = s + 1 == segs ? len - off : len / segs;
        put_desc(q, next_desc++ % q->st.size, (uint64_t)data + off, part,
                 VRING_DESC_F_NEXT | (dev_writes ? VRING_DESC_F_WRITE : 0));
        off += part;
    }
    put_desc(q, next_desc++ % q->st.size, status, 1, type & 0x80 ? 0 : VRING_DESC_F_WRITE);
    uint16_t idx;
    memcpy(&idx, q->avail + 2, 2);
    memcpy(q->avail + 4 + 2 * (idx % q->st.size), &head, 2);
    idx++;
    memcpy(q->avail + 2, &idx, 2);
}

static void drain_efd(int fd)
{
    uint64_t n;
    if (read(fd, &n, sizeof(n)) < 0) {
        /* nothing was signalled */
    }
}

/* The event loop: KVM's ioeventfd caught a QueueNotify of queue 0 (any other value reaches
 * the register file), or a device fd is readable. */
static void notify(uint8_t v)
{
    uint32_t q = v % 4 == 3 ? v : v % 2;
    if (q == 0)
        vmmio_notify(&t, 0);
    else
        wr32(0x50, q);
    if (v & 0x80) /* the loop ran again with nothing new */
        vmmio_notify(&t, v & 1);
}

static int dev_fd(unsigned which)
{
    struct virtio_fd fds[VIRTIO_MAX_DEV_FDS];
    unsigned n = vblk_ops.fds(blk, fds);
    return which < n ? fds[which].fd : -1;
}

static void event(uint8_t which)
{
    which %= VBLK_NFDS;
    if (dev_fd(which) >= 0)
        vmmio_event(&t, which);
}

/* PATCH /drives as virtio/registry.c does it: the new file opened, then swapped in. */
static int update(const char *path, const struct vm_bucket *bw, const struct vm_bucket *ops)
{
    char err[256];
    struct vblk_backing bk = {.fd = -1};
    struct vblk_update u = {.path = path, .bw = bw, .ops = ops};
    if (path) {
        int ret = vblk_open_backing(&cfgs[drive_idx], path, &bk, err, sizeof(err));
        if (ret)
            return ret;
        u.backing = &bk;
    }
    int ret = vmmio_update(&t, &u, err, sizeof(err));
    if (bk.fd >= 0)
        close(bk.fd);
    return ret;
}

static void patch(uint8_t what)
{
    static const struct vm_bucket bw = {.size = 1024, .refill_time_ms = 50};
    static const struct vm_bucket ops = {.size = 1, .refill_time_ms = 1};
    static const struct vm_bucket off;
    const char *path = NULL;

    switch (what % 4) {
    case 1:
        path = swapped[drive_idx] ? path_a : path_b;
        break;
    case 2:
        path = "/nonexistent/fuzz-blk";
        break;
    case 3:
        path = "/dev/null"; /* not a regular file */
        break;
    default:
        break;
    }
    int ret = update(path, what & 4 ? (what & 8 ? &off : &bw) : NULL,
                     what & 16 ? (what & 32 ? &off : &ops) : NULL);
    if (ret == 0 && what % 4 == 1)
        swapped[drive_idx] = !swapped[drive_idx];
    if (ret < 0 && what % 4 < 2)
        abort(); /* a good file or no file at all cannot fail */
}

static void run_op(struct input *in)
{
    static const uint32_t sizes[] = {1, 2, 4, 8};
    uint8_t op = in8(in) % OP_COUNT;
    uint64_t v64;
    uint32_t v;

    switch (op) {
    case OP_WRITE32:
        v = in8(in) * 4u;
        wr32(v, in32(in));
        break;
    case OP_READ:
        v = in16(in) & 0xfff;
        mmio_read(v, sizes[in8(in) & 3]);
        break;
    case OP_WRITE: {
        uint64_t off = in16(in) & 0xfff;
        uint32_t len = sizes[in8(in) & 3];
        v64 = in32(in);
        v64 |= (uint64_t)in32(in) << 32;
        vmmio_write(&t, off, (const uint8_t *)&v64, len);
        break;
    }
    case OP_POKE:
        poke(in);
        break;
    case OP_INIT:
        driver_init(in);
        break;
    case OP_REQUEST:
        request(in);
        break;
    case OP_NOTIFY:
        notify(in8(in));
        break;
    case OP_EVENT:
        event(in8(in));
        break;
    case OP_PATCH:
        patch(in8(in));
        break;
    case OP_STATUS:
        wr32(0x70, in8(in));
        break;
    case OP_QUIESCE:
        if (vmmio_quiesce(&t))
            abort();
        break;
    default:
        vmmio_read(&t, 0x60, (uint8_t *)&v, 4);
        if (v & ~(uint32_t)(VIRTIO_INT_USED | VIRTIO_INT_CONFIG))
            abort();
        wr32(0x64, v);
        break;
    }
    check_status();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};

    drive_idx = in8(&in) % NDRIVES;
    blk = drives[drive_idx] ? drives[drive_idx] : drives[0];
    if (!drives[drive_idx])
        drive_idx = 0;
    memset(ram0, 0, RAM0_SIZE);
    memset(ram1, 0, RAM1_SIZE);
    memset(&stats, 0, sizeof(stats));
    if (vmmio_init(&t, &vblk_ops, blk, &mem, drive_idx))
        abort();
    t.irq_fd = irq_efd;
    t.notify_fd[0] = notify_efd;
    /* The same device as new: back on file A, the configured buckets, nothing pending. */
    const struct vm_drive *c = &cfgs[drive_idx];
    if (update(swapped[drive_idx] ? path_a : NULL, &c->bw, &c->ops))
        abort();
    swapped[drive_idx] = false;
    vblk_ops.reset(blk, &t);
    next_desc = 0;

    for (unsigned i = 0; i < MAX_OPS && in.left; i++)
        run_op(&in);

    wr32(0x70, 0); /* the driver's reset: in-flight I/O is dropped by the event loop */
    if (t.st.status || t.st.activated)
        abort();
    /* Nothing may stay in flight into this RAM: quiesce waits for it. */
    if (vmmio_quiesce(&t))
        abort();
    drain_efd(irq_efd);
    drain_efd(notify_efd);
    t.irq_fd = -1;
    t.notify_fd[0] = -1;
    vmmio_destroy(&t);
    return 0;
}
