/* virtio-blk (spec 5.2): a file-backed block device with one queue. Requests run on the event
 * loop, either synchronously (preadv/pwritev) or through the io_uring engine (blk_uring.c) with
 * completions arriving on an eventfd; a token-bucket rate limiter holds requests back (never
 * drops them) and wakes the device with a timerfd. PATCH /drives swaps the backing file and the
 * buckets of a running device (vblk_update). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "virtio.h"

#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO      5
#define VIRTIO_BLK_F_FLUSH   9
/* Data segments per request (config seg_max): a 1 MiB request is then one chain, not one per
 * page, and with the header and status byte it still fits a 128-entry queue (as QEMU). */
#define SEG_MAX 126

struct vblk {
    struct vm_drive cfg;
    int fd;
    uint64_t capacity; /* sectors */
    char id[VIRTIO_BLK_ID_BYTES];
    struct vmmio_dev *t;    /* set at activation */
    struct vm_stats *stats; /* may be NULL */
    struct tbucket bw, ops;
    int timer_fd; /* the rate limiter's wake-up */
    bool throttled, has_pending;
    int hold_fd; /* the end of an interrupt-moderation round */
    struct irqmod mod;
    unsigned round_found;  /* requests popped during this round */
    struct vq_chain chain; /* the chain being handled (kept while it waits) */
    struct vblk_req req;
    struct uring_eng eng; /* Async engine (eng.on) */
};

/* ---- the device ------------------------------------------------------------------------- */

static uint64_t features(void *dev)
{
    const struct vblk *b = dev;
    uint64_t f = 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX |
                 1ULL << VIRTIO_BLK_F_SEG_MAX;
    if (b->cfg.read_only)
        f |= 1ULL << VIRTIO_BLK_F_RO;
    if (b->cfg.writeback)
        f |= 1ULL << VIRTIO_BLK_F_FLUSH;
    return f;
}

/* Config space (spec 5.2.4): capacity in 512-byte sectors, size_max (not offered), seg_max. */
static void config_read(void *dev, uint64_t off, uint8_t *data, uint32_t len)
{
    const struct vblk *b = dev;
    uint8_t cfg[16] = {0};
    uint32_t seg_max = SEG_MAX;
    memcpy(cfg, &b->capacity, 8);
    memcpy(cfg + 12, &seg_max, 4);
    if (off < sizeof(cfg) && len <= sizeof(cfg) - off)
        memcpy(data, cfg + off, len);
}

static uint8_t sync_rw(struct vblk *b, struct vblk_req *r)
{
    struct iovec *iov = r->iov;
    unsigned n = r->niov;
    off_t off = (off_t)(r->sector * VBLK_SECTOR);
    uint64_t left = r->len;

    while (left) {
        ssize_t got = r->type == VIRTIO_BLK_T_IN ? preadv(b->fd, iov, (int)n, off)
                                                 : pwritev(b->fd, iov, (int)n, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return VIRTIO_BLK_S_IOERR;
        left -= (uint64_t)got;
        off += got;
        vblk_iov_advance(&iov, &n, (size_t)got);
    }
    return VIRTIO_BLK_S_OK;
}

/* Counts a request that completed (Firecracker's block metrics: only successful I/O counts). */
static void account(struct vblk *b, uint32_t type, uint64_t len, uint8_t s)
{
    if (s != VIRTIO_BLK_S_OK)
        return;
    switch (type) {
    case VIRTIO_BLK_T_IN:
        STAT_ADD(b->stats, block_read_count, 1);
        STAT_ADD(b->stats, block_read_bytes, len);
        break;
    case VIRTIO_BLK_T_OUT:
        STAT_ADD(b->stats, block_write_count, 1);
        STAT_ADD(b->stats, block_write_bytes, len);
        break;
    case VIRTIO_BLK_T_FLUSH:
        STAT_ADD(b->stats, block_flush_count, 1);
        break;
    default:
        break;
    }
}

static void complete(struct vblk *b, uint16_t head, uint8_t *status, uint8_t s, uint32_t used)
{
    if (status) {
        *status = s;
        used++;
    }
    vq_push(&b->t->queues[0], head, used);
}

/* An io_uring completion (uring_done_fn). */
static void async_done(void *ctx, const struct uring_op *op, bool ok)
{
    struct vblk *b = ctx;
    uint8_t s = ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    account(b, op->type, op->len, s);
    complete(b, op->head, op->status, s, ok && op->type == VIRTIO_BLK_T_IN ? (uint32_t)op->len : 0);
}

/* Charges the rate limiter. Returns 0, or the nanoseconds to wait (nothing charged). */
static uint64_t charge(struct vblk *b, const struct vblk_req *r)
{
    uint64_t bytes = r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_OUT ? r->len : 0;
    uint64_t wait = tb_consume(&b->bw, bytes);
    if (wait)
        return wait;
    wait = tb_consume(&b->ops, 1);
    if (wait)
        tb_refund(&b->bw, bytes);
    return wait;
}

/* Arms a one-shot timerfd ns from now (0 disarms it). */
static void arm(const struct vblk *b, int fd, uint64_t ns)
{
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    if (fd >= 0 && timerfd_settime(fd, 0, &its, NULL) < 0)
        log_warn("drive %s: timerfd: %s", b->cfg.id, strerror(errno));
}

static void throttle(struct vblk *b, uint64_t ns)
{
    b->throttled = true;
    arm(b, b->timer_fd, ns);
}

static void unthrottle(struct vblk *b)
{
    arm(b, b->timer_fd, 0);
    b->throttled = false;
}

/* Handles one request of b->chain. Returns 1 if done, 0 if it must wait (kept pending). */
static int handle(struct vblk *b)
{
    struct vblk_req *r = &b->req;
    uint32_t used = 0;

    if (vblk_parse(&b->chain, r) < 0) {
        STAT_ADD(b->stats, block_invalid_reqs, 1);
        complete(b, b->chain.head, r->status, VIRTIO_BLK_S_IOERR, 0);
        return 1;
    }
    uint8_t s = vblk_check(r, b->capacity, b->cfg.read_only);
    if (s != VIRTIO_BLK_S_OK) {
        STAT_ADD(b->stats, block_invalid_reqs, 1);
        complete(b, b->chain.head, r->status, s, 0);
        return 1;
    }
    uint64_t wait = charge(b, r);
    if (wait) {
        throttle(b, wait);
        return 0;
    }
    bool io = r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_OUT ||
              (r->type == VIRTIO_BLK_T_FLUSH && b->cfg.writeback);
    if (io && b->eng.on) {
        if (uring_queue(&b->eng, r, b->chain.head))
            return 1;
        tb_refund(&b->bw, r->type == VIRTIO_BLK_T_FLUSH ? 0 : r->len);
        tb_refund(&b->ops, 1);
        return 0; /* retried when a completion frees a slot */
    }
    switch (r->type) {
    case VIRTIO_BLK_T_IN:
        s = sync_rw(b, r);
        used = s == VIRTIO_BLK_S_OK ? (uint32_t)r->len : 0;
        break;
    case VIRTIO_BLK_T_OUT:
        s = sync_rw(b, r);
        break;
    case VIRTIO_BLK_T_FLUSH: /* spec 5.2.6.2; without Writeback caching there is nothing to do */
        s = b->cfg.writeback && fdatasync(b->fd) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
        break;
    default: /* GET_ID */
        used = (uint32_t)vblk_iov_fill(r->iov, r->niov, b->id, sizeof(b->id));
        break;
    }
    account(b, r->type, r->len, s);
    complete(b, b->chain.head, r->status, s, used);
    return 1;
}

/* Runs the queue until it is empty, throttled or out of async slots, adding the requests it
 * popped to *popped and those it answered to *answered. Returns 0 or -EINVAL. */
static int drain(struct vblk *b, unsigned *answered, unsigned *popped)
{
    struct vq *q = &b->t->queues[0];
    int ret = 0;

    while (!b->throttled) {
        if (!b->has_pending) {
            ret = vq_pop(q, b->t->mem, &b->chain);
            if (ret <= 0)
                break;
            b->has_pending = true;
            (*popped)++;
        }
        if (!handle(b))
            break;
        b->has_pending = false;
        (*answered)++;
    }
    if (b->eng.on && b->eng.inflight) {
        /* One submit for the whole drain of the queue. Page-cache hits complete inside it:
         * answer them now (the ring fd only reports later completions). */
        uring_submit(&b->eng);
        *answered += uring_reap(&b->eng, async_done, b);
    }
    return ret < 0 ? ret : 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void signal_used(struct vblk *b, uint64_t now)
{
    irqmod_signalled(&b->mod, now);
    vmmio_used(b->t, 0);
}

/* Runs the queue, then raises one interrupt for everything answered, including `done` requests
 * the caller already answered, or holds it (irqmod.c). Returns 0 or -EINVAL. */
static int run_queue(struct vblk *b, unsigned done)
{
    unsigned popped = 0;
    int ret = drain(b, &done, &popped);
    if (b->mod.holding) {
        b->round_found += popped; /* answered when the hold ends */
        return ret;
    }
    if (!popped && !done)
        return ret;
    uint64_t now = now_ns(); /* one clock read per wake-up that did something */
    if (popped)
        irqmod_arrived(&b->mod, now);
    if (!done)
        return ret;
    if (!ret && irqmod_start(&b->mod)) {
        vq_set_quiet(&b->t->queues[0], true);
        b->round_found = 0;
        arm(b, b->hold_fd, irqmod_round_ns(&b->mod));
    } else {
        signal_used(b, now);
    }
    return ret;
}

/* A moderation round ended: poll the ring, then hold on or raise the interrupt. */
static int hold_round(struct vblk *b)
{
    unsigned done = 0;
    int ret = drain(b, &done, &b->round_found);
    if (ret < 0)
        irqmod_reset(&b->mod); /* the device is failing: no more rounds */
    bool more = irqmod_round(&b->mod, b->round_found);
    b->round_found = 0;
    if (!ret && more) {
        arm(b, b->hold_fd, irqmod_round_ns(&b->mod));
        return 0;
    }
    vq_set_quiet(&b->t->queues[0], false);
    if (!ret) { /* re-arms the kicks; what slipped in meanwhile joins this interrupt */
        unsigned popped = 0;
        ret = drain(b, &done, &popped);
    }
    signal_used(b, now_ns());
    return ret;
}

/* Ends a hold without an interrupt (reset, failure). */
static void hold_cancel(struct vblk *b)
{
    arm(b, b->hold_fd, 0);
    irqmod_reset(&b->mod);
    b->round_found = 0;
}

static int process_queue(void *dev, struct vmmio_dev *t, unsigned qi)
{
    (void)t;
    (void)qi;
    return run_queue(dev, 0);
}

void vblk_bind(struct vblk *b, struct vmmio_dev *t, struct vm_stats *stats)
{
    b->t = t;
    b->stats = stats;
}

static void reset(void *dev)
{
    struct vblk *b = dev;
    /* In-flight requests point into buffers the driver is taking back: wait for them. */
    if (b->eng.on)
        uring_drain(&b->eng, NULL, NULL);
    unthrottle(b);
    hold_cancel(b);
    b->has_pending = false;
}

static bool running(const struct vmmio_dev *t)
{
    return t && t->activated && !(t->status & VIRTIO_STATUS_NEEDS_RESET);
}

void vblk_event(struct vblk *b, unsigned which)
{
    struct vmmio_dev *t = b->t;
    uint64_t v;
    if (which >= 1 && read(which == 1 ? b->timer_fd : b->hold_fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    if (which == 2) {
        if (!running(t))
            hold_cancel(b);
        else if (b->mod.holding && hold_round(b) < 0)
            vmmio_fail(t);
        pthread_mutex_unlock(&t->lock);
        return;
    }
    /* The ring is watched level-triggered: its completions are always taken off, answered only
     * while the device runs (otherwise the driver is about to reset it). */
    unsigned reaped = 0;
    if (which == 0 && b->eng.on)
        reaped = uring_reap(&b->eng, running(t) ? async_done : NULL, b);
    if (running(t)) {
        if (which == 1)
            b->throttled = false;
        if (run_queue(b, reaped) < 0) /* one interrupt for the reaped and the new answers */
            vmmio_fail(t);
    }
    pthread_mutex_unlock(&t->lock);
}

void vblk_fds(const struct vblk *b, int fds[VBLK_NFDS])
{
    fds[0] = uring_fd(&b->eng);
    fds[1] = b->timer_fd;
    fds[2] = b->hold_fd;
}

const char *vblk_id(const struct vblk *b)
{
    return b->cfg.id;
}

/* Opens a backing file as the drive's mode says and reads its size and identity.
 * Returns the fd, or -errno with a reason in err. */
static int open_backing(const struct vm_drive *cfg, const char *path, uint64_t *sectors,
                        char id[VIRTIO_BLK_ID_BYTES], char *err, size_t errlen)
{
    struct stat st;
    /* O_NONBLOCK: a FIFO put at the path must not block the event loop in open(); cleared
     * again for the file we keep (io_uring would fail page-cache misses with EAGAIN). */
    int fd = open(path, (cfg->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errf(err, errlen, -errno, "drive %s: %s: %s", cfg->id, path, strerror(errno));
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        close(fd);
        return errf(err, errlen, -EINVAL, "drive %s: %s: not a regular file", cfg->id, path);
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, -e, "drive %s: %s: %s", cfg->id, path, strerror(e));
    }
    *sectors = (uint64_t)size / VBLK_SECTOR;
    vblk_disk_id(&st, id);
    return fd;
}

/* Swaps the backing file (vblk_update). Returns 0 or -errno (the old file kept). */
static int swap_file(struct vblk *b, const char *path, char *err, size_t errlen)
{
    uint64_t sectors;
    char id[VIRTIO_BLK_ID_BYTES];
    if (strlen(path) >= sizeof(b->cfg.path))
        return errf(err, errlen, -ENAMETOOLONG, "drive %s: path too long", b->cfg.id);
    int fd = open_backing(&b->cfg, path, &sectors, id, err, errlen);
    if (fd < 0)
        return fd;
    if (b->eng.on) {
        /* Requests already submitted finish on the old file and are answered first. */
        if (uring_drain(&b->eng, running(b->t) ? async_done : NULL, b) && running(b->t))
            vmmio_used(b->t, 0);
        int ret = uring_set_file(&b->eng, fd, err, errlen);
        if (ret < 0) {
            close(fd);
            return ret;
        }
    }
    close(b->fd);
    b->fd = fd;
    b->capacity = sectors;
    memcpy(b->id, id, sizeof(id));
    snprintf(b->cfg.path, sizeof(b->cfg.path), "%s", path);
    if (b->t) { /* spec 4.2.2: a config change bumps the generation and interrupts */
        b->t->config_generation++;
        if (b->t->activated)
            vmmio_signal(b->t, VIRTIO_INT_CONFIG);
    }
    return 0;
}

int vblk_update(struct vblk *b, const char *path, const struct vm_bucket *bw,
                const struct vm_bucket *ops, char *err, size_t errlen)
{
    if (path) {
        int ret = swap_file(b, path, err, errlen);
        if (ret < 0)
            return ret;
    }
    if (bw) {
        b->cfg.bw = *bw;
        tb_init(&b->bw, bw);
    }
    if (ops) {
        b->cfg.ops = *ops;
        tb_init(&b->ops, ops);
    }
    if (bw || ops)
        unthrottle(b); /* a waiting request is charged again against the new buckets */
    if (running(b->t) && run_queue(b, 0) < 0)
        vmmio_fail(b->t);
    return 0;
}

struct vblk *vblk_create(const struct vm_drive *cfg, char *err, size_t errlen)
{
    struct vblk *b = calloc(1, sizeof(*b));
    if (!b) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->timer_fd = b->hold_fd = -1;
    b->fd = open_backing(cfg, cfg->path, &b->capacity, b->id, err, errlen);
    if (b->fd < 0)
        goto fail;
    tb_init(&b->bw, &cfg->bw);
    tb_init(&b->ops, &cfg->ops);
    b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    b->hold_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (b->timer_fd < 0 || b->hold_fd < 0) {
        errf(err, errlen, -errno, "timerfd: %s", strerror(errno));
        goto fail;
    }
    if (cfg->async) {
        char why[200];
        int ret = uring_open(&b->eng, b->fd, why, sizeof(why));
        if (ret < 0) {
            errf(err, errlen, ret, "drive %s: %s", cfg->id, why);
            goto fail;
        }
    }
    return b;
fail:
    vblk_destroy(b);
    return NULL;
}

void vblk_destroy(struct vblk *b)
{
    if (!b)
        return;
    uring_close(&b->eng);
    if (b->fd >= 0)
        close(b->fd);
    if (b->timer_fd >= 0)
        close(b->timer_fd);
    if (b->hold_fd >= 0)
        close(b->hold_fd);
    free(b);
}

const struct virtio_dev_ops vblk_ops = {
        .device_id = 2,
        .nqueues = 1,
        .features = features,
        .config_read = config_read,
        .process_queue = process_queue,
        .reset = reset,
};
