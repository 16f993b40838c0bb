/* virtio-blk (spec 5.2): a file-backed block device with one queue. Requests run on the event
 * loop, either synchronously (preadv/pwritev in batches, blk_sync.c) or through the io_uring
 * engine (blk_uring.c) with completions arriving on an eventfd; the I/O itself runs with the
 * transport's lock released (vmmio_unlocked), so a vCPU never waits for the disk. A token-bucket
 * rate limiter holds requests back (never drops them) and wakes the device with a timerfd. PATCH
 * /drives swaps the backing file and the buckets of a running device (the update op). Every op runs
 * under the transport's lock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "blk.h"

#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO      5
#define VIRTIO_BLK_F_FLUSH   9
/* Data segments per request (config seg_max): a 1 MiB request is then one chain, not one per
 * page, and with the header and status byte it still fits a 128-entry queue (as QEMU). */
#define SEG_MAX 126

struct vblk {
    struct vblk_state st;
    struct vm_drive cfg;
    int fd;
    char id[VIRTIO_BLK_ID_BYTES];
    struct vm_stats *stats; /* may be NULL */
    uint32_t gen;           /* reset generation: completions of an older one are dropped */
    struct tbucket bw, ops;
    int timer_fd; /* the rate limiter's wake-up */
    bool throttled, has_pending;
    int hold_fd; /* the end of an interrupt-moderation round */
    struct irqmod mod;
    unsigned round_found;  /* requests popped during this round */
    struct vq_chain chain; /* the chain being handled (kept while it waits) */
    struct vblk_req req;
    struct uring_eng eng;    /* Async engine (eng.on) */
    unsigned queued;         /* Async requests queued, not submitted yet */
    struct sync_batch batch; /* Sync engine: requests whose I/O runs without the lock */
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
    memcpy(cfg, &b->st.capacity, 8);
    memcpy(cfg + 12, &seg_max, 4);
    memcpy(data, cfg + off, len); /* inside config_size: the transport checked */
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

static void complete(struct vmmio_dev *t, uint16_t head, uint8_t *status, uint8_t s, uint32_t used)
{
    if (status) {
        *status = s;
        used++;
    }
    vq_push(vmmio_queue(t, 0), head, used);
}

/* Where an io_uring completion is answered. */
struct done_ctx {
    struct vblk *b;
    struct vmmio_dev *t;
};

/* An io_uring completion (uring_done_fn). One queued before the last reset belongs to rings
 * the driver has taken back: it is dropped. */
static void async_done(void *ctx, const struct uring_op *op, bool ok)
{
    struct done_ctx *d = ctx;
    uint8_t s = ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    if (op->tag != d->b->gen)
        return;
    account(d->b, op->type, op->len, s);
    complete(d->t, op->head, op->status, s,
             ok && op->type == VIRTIO_BLK_T_IN ? (uint32_t)op->len : 0);
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

/* What handle() did with a request. */
enum { H_DONE, H_WAIT, H_QUEUED, H_FULL };

/* Handles one request of b->chain. Returns H_DONE (answered), H_WAIT (kept pending: tokens or
 * an io_uring slot), H_QUEUED (its I/O queued on the engine) or H_FULL (kept pending: the Sync
 * batch is full, run it first). */
static int handle(struct vblk *b, struct vmmio_dev *t)
{
    struct vblk_req *r = &b->req;
    uint32_t used = 0;

    if (vblk_parse(&b->chain, r) < 0) {
        STAT_ADD(b->stats, block_invalid_reqs, 1);
        complete(t, b->chain.head, r->status, VIRTIO_BLK_S_IOERR, 0);
        return H_DONE;
    }
    uint8_t s = vblk_check(r, b->st.capacity, b->cfg.read_only);
    if (s != VIRTIO_BLK_S_OK) {
        STAT_ADD(b->stats, block_invalid_reqs, 1);
        complete(t, b->chain.head, r->status, s, 0);
        return H_DONE;
    }
    uint64_t wait = charge(b, r);
    if (wait) {
        throttle(b, wait);
        return H_WAIT;
    }
    /* FLUSH without Writeback caching has nothing to do (spec 5.2.6.2). */
    bool io = r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_OUT ||
              (r->type == VIRTIO_BLK_T_FLUSH && b->cfg.writeback);
    if (io) {
        if (b->eng.on ? uring_queue(&b->eng, r, b->chain.head, b->gen)
                      : sync_add(&b->batch, r, b->chain.head)) {
            b->queued += b->eng.on;
            return H_QUEUED;
        }
        tb_refund(&b->bw, r->type == VIRTIO_BLK_T_FLUSH ? 0 : r->len);
        tb_refund(&b->ops, 1);
        return b->eng.on ? H_WAIT : H_FULL; /* retried after a completion, or the batch */
    }
    if (r->type == VIRTIO_BLK_T_GET_ID)
        used = (uint32_t)vblk_iov_fill(r->iov, r->niov, b->id, sizeof(b->id));
    account(b, r->type, r->len, VIRTIO_BLK_S_OK);
    complete(t, b->chain.head, r->status, VIRTIO_BLK_S_OK, used);
    return H_DONE;
}

/* The I/O of a drain, without the transport's lock: the Sync batch, the Async submission. */
static void run_io(void *ctx)
{
    struct vblk *b = ctx;
    sync_run(&b->batch, b->fd);
    if (b->eng.on)
        uring_submit(&b->eng);
}

/* Answers the Sync batch once its I/O ran. Returns how many. */
static unsigned answer_batch(struct vblk *b, struct vmmio_dev *t)
{
    unsigned n = b->batch.n;
    for (unsigned i = 0; i < n; i++) {
        const struct sync_req *s = &b->batch.r[i];
        account(b, s->type, s->len, s->s);
        complete(t, s->head, s->status, s->s,
                 s->type == VIRTIO_BLK_T_IN && s->s == VIRTIO_BLK_S_OK ? (uint32_t)s->len : 0);
    }
    b->batch.n = b->batch.niov = 0;
    return n;
}

/* drain() returns this when the driver reset the device while the I/O ran: the caller stops,
 * the answers were dropped (the chains belong to rings the driver has taken back). */
#define DRAIN_RESET 1

/* Runs the queue until it is empty, throttled or out of async slots, adding the requests it
 * popped to *popped and those it answered to *answered; the I/O runs in batches without the
 * transport's lock (vmmio_unlocked). Returns 0, DRAIN_RESET or -EINVAL. */
static int drain(struct vblk *b, struct vmmio_dev *t, unsigned *answered, unsigned *popped)
{
    struct vq *q = vmmio_queue(t, 0);
    struct done_ctx d = {b, t};
    int ret = 0, h;

    do {
        h = H_DONE;
        while (!b->throttled) {
            if (!b->has_pending) {
                ret = vq_pop(q, vmmio_mem(t), &b->chain);
                if (ret <= 0)
                    break;
                b->has_pending = true;
                (*popped)++;
            }
            h = handle(b, t);
            if (h == H_WAIT || h == H_FULL)
                break;
            b->has_pending = false;
            if (h == H_DONE || b->eng.on) /* Async: counted when queued */
                (*answered)++;
        }
        if (!b->batch.n && !b->queued) {
            if (b->eng.on && b->eng.inflight)
                *answered += uring_reap(&b->eng, async_done, &d);
            break;
        }
        /* One submit for the whole drain of the queue, and the Sync I/O, unlocked. */
        b->queued = 0;
        if (vmmio_unlocked(t, run_io, b)) {
            b->batch.n = b->batch.niov = 0;
            return DRAIN_RESET;
        }
        *answered += answer_batch(b, t);
        /* Page-cache hits complete inside the submit: answer them now (the ring fd only
         * reports later completions). */
        if (b->eng.on)
            *answered += uring_reap(&b->eng, async_done, &d);
    } while (h == H_FULL);
    return ret < 0 ? ret : 0;
}

static void signal_used(struct vblk *b, struct vmmio_dev *t, uint64_t now)
{
    irqmod_signalled(&b->mod, now);
    vmmio_used(t, 0);
}

/* Runs the queue, then raises one interrupt for everything answered, including `done` requests
 * the caller already answered, or holds it (irqmod.c). Returns 0 or -EINVAL. */
static int run_queue(struct vblk *b, struct vmmio_dev *t, unsigned done)
{
    unsigned popped = 0;
    int ret = drain(b, t, &done, &popped);
    if (ret == DRAIN_RESET)
        return 0;
    if (b->mod.holding) {
        b->round_found += popped; /* answered when the hold ends */
        return ret;
    }
    if (!popped && !done)
        return ret;
    uint64_t now = clock_ns(); /* one clock read per wake-up that did something */
    if (popped)
        irqmod_arrived(&b->mod, now);
    if (!done)
        return ret;
    if (!ret && irqmod_start(&b->mod)) {
        vq_set_quiet(vmmio_queue(t, 0), true);
        b->round_found = 0;
        arm(b, b->hold_fd, irqmod_round_ns(&b->mod));
    } else {
        signal_used(b, t, now);
    }
    return ret;
}

/* A moderation round ended: poll the ring, then hold on or raise the interrupt. */
static int hold_round(struct vblk *b, struct vmmio_dev *t)
{
    unsigned done = 0;
    int ret = drain(b, t, &done, &b->round_found);
    if (ret == DRAIN_RESET)
        return 0;
    if (ret < 0)
        irqmod_reset(&b->mod); /* the device is failing: no more rounds */
    bool more = irqmod_round(&b->mod, b->round_found);
    b->round_found = 0;
    if (!ret && more) {
        arm(b, b->hold_fd, irqmod_round_ns(&b->mod));
        return 0;
    }
    vq_set_quiet(vmmio_queue(t, 0), false);
    if (!ret) { /* re-arms the kicks; what slipped in meanwhile joins this interrupt */
        unsigned popped = 0;
        ret = drain(b, t, &done, &popped);
        if (ret == DRAIN_RESET)
            return 0;
    }
    signal_used(b, t, clock_ns());
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
    (void)qi;
    return run_queue(dev, t, 0);
}

/* On the vCPU thread that wrote Status 0: no I/O and no waiting. Requests still in flight on
 * the Async engine finish on the event loop and are dropped there (async_done: older
 * generation); until then their buffers may still be written, as with any DMA the device had
 * started before the reset. */
static void reset(void *dev, struct vmmio_dev *t)
{
    struct vblk *b = dev;
    (void)t;
    b->gen++;
    unthrottle(b);
    hold_cancel(b);
    b->has_pending = false;
}

static int event(void *dev, struct vmmio_dev *t, unsigned which)
{
    struct vblk *b = dev;
    struct done_ctx d = {b, t};
    uint64_t v;

    if (which != VBLK_FD_RING &&
        read(which == VBLK_FD_THROTTLE ? b->timer_fd : b->hold_fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
    if (which == VBLK_FD_HOLD) {
        if (!vmmio_running(t)) {
            hold_cancel(b);
            return 0;
        }
        return b->mod.holding ? hold_round(b, t) : 0;
    }
    /* The ring is watched level-triggered: its completions are always taken off, answered only
     * while the device runs (otherwise the driver is about to reset it). */
    unsigned reaped = 0;
    if (which == VBLK_FD_RING && b->eng.on)
        reaped = uring_reap(&b->eng, vmmio_running(t) ? async_done : NULL, &d);
    if (!vmmio_running(t))
        return 0;
    if (which == VBLK_FD_THROTTLE)
        b->throttled = false;
    return run_queue(b, t, reaped); /* one interrupt for the reaped and the new answers */
}

/* Nothing in flight afterwards: Async requests finish and are answered (dropped after a reset),
 * a request waiting for tokens or a ring slot goes back to the ring (popped again after a
 * restore), and a held interrupt is raised now. */
static int quiesce(void *dev, struct vmmio_dev *t)
{
    struct vblk *b = dev;
    struct done_ctx d = {b, t};
    bool run = vmmio_running(t);
    unsigned answered = b->eng.on ? uring_drain(&b->eng, run ? async_done : NULL, &d) : 0;

    if (b->has_pending) {
        vq_unpop(vmmio_queue(t, 0));
        b->has_pending = false;
    }
    unthrottle(b);
    bool held = b->mod.holding;
    hold_cancel(b);
    if (run && held)
        vq_set_quiet(vmmio_queue(t, 0), false);
    if (run && (held || answered))
        signal_used(b, t, clock_ns());
    return 0;
}

/* Only after quiesce: nothing in flight, no chain held, no interrupt held back. */
static int save(const void *dev, struct vmmio_dev *t, void *state)
{
    const struct vblk *b = dev;
    (void)t;
    if (b->has_pending || b->eng.inflight || b->mod.holding || b->throttled)
        return -EBUSY;
    memcpy(state, &b->st, sizeof(b->st));
    return 0;
}

/* The transport and its queue are restored already; the device starts with nothing in flight
 * (as quiesce left it) and its runtime state fresh. */
static int restore(void *dev, struct vmmio_dev *t, const void *state, char *err, size_t errlen)
{
    struct vblk *b = dev;
    struct vblk_state st;
    const struct vq_state *q = &vmmio_queue(t, 0)->st;

    memcpy(&st, state, sizeof(st));
    if (st.capacity != b->st.capacity)
        return errf(err, errlen, -EINVAL,
                    "drive %s: the snapshot's disk has %llu sectors, its file now %llu", b->cfg.id,
                    (unsigned long long)st.capacity, (unsigned long long)b->st.capacity);
    if (q->active && q->last_avail != q->next_used)
        return errf(err, errlen, -EINVAL, "drive %s: requests in flight in a snapshot", b->cfg.id);
    reset(b, t);
    return 0;
}

static unsigned fds(const void *dev, struct virtio_fd out[VIRTIO_MAX_DEV_FDS])
{
    const struct vblk *b = dev;
    out[VBLK_FD_RING] = (struct virtio_fd){uring_fd(&b->eng), EPOLLIN};
    out[VBLK_FD_THROTTLE] = (struct virtio_fd){b->timer_fd, EPOLLIN};
    out[VBLK_FD_HOLD] = (struct virtio_fd){b->hold_fd, EPOLLIN};
    return VBLK_NFDS;
}

int vblk_open_backing(const struct vm_drive *cfg, const char *path, struct vblk_backing *bk,
                      char *err, size_t errlen)
{
    struct stat st;
    /* O_NONBLOCK: a FIFO put at the path must not block the event loop in open(); cleared
     * again for the file we keep (io_uring would fail page-cache misses with EAGAIN). */
    int fd = sc_open(path, (cfg->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
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
    bk->fd = fd;
    bk->sectors = (uint64_t)size / VBLK_SECTOR;
    vblk_disk_id(&st, bk->id);
    return 0;
}

static void wait_io(void *ctx)
{
    uring_wait(&((struct vblk *)ctx)->eng);
}

/* Swaps the backing file (the update op). Returns 0 or -errno (the old file kept). */
static int swap_file(struct vblk *b, struct vmmio_dev *t, struct vblk_backing *bk, const char *path,
                     char *err, size_t errlen)
{
    struct done_ctx d = {b, t};
    if (b->eng.on) {
        /* Requests already submitted finish on the old file (waited for without the lock) and
         * are answered first. */
        vmmio_unlocked(t, wait_io, b);
        if (uring_drain(&b->eng, vmmio_running(t) ? async_done : NULL, &d) && vmmio_running(t))
            vmmio_used(t, 0);
        int ret = uring_set_file(&b->eng, bk->fd, err, errlen);
        if (ret < 0)
            return ret;
    }
    close(b->fd);
    b->fd = bk->fd;
    bk->fd = -1;
    b->st.capacity = bk->sectors;
    memcpy(b->id, bk->id, sizeof(b->id));
    log_debug("drive %s: now on %s", b->cfg.id, path);
    vmmio_config_changed(t); /* spec 4.2.2: generation bumped, config-change interrupt */
    return 0;
}

static int update(void *dev, struct vmmio_dev *t, const void *arg, char *err, size_t errlen)
{
    struct vblk *b = dev;
    const struct vblk_update *u = arg;

    if (u->backing) {
        int ret = swap_file(b, t, u->backing, u->path ? u->path : "", err, errlen);
        if (ret < 0)
            return ret;
    }
    if (u->bw) {
        b->cfg.bw = *u->bw;
        tb_init(&b->bw, u->bw);
    }
    if (u->ops) {
        b->cfg.ops = *u->ops;
        tb_init(&b->ops, u->ops);
    }
    if (u->bw || u->ops)
        unthrottle(b); /* a waiting request is charged again against the new buckets */
    if (vmmio_running(t) && run_queue(b, t, 0) < 0)
        vmmio_fail(t);
    return 0;
}

static void destroy(void *dev);

struct vblk *vblk_create(const struct vm_drive *cfg, struct vm_stats *stats, char *err,
                         size_t errlen)
{
    struct vblk *b = calloc(1, sizeof(*b));
    struct vblk_backing bk;
    if (!b) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->cfg.path = NULL; /* the configuration's string: only its fd is kept */
    b->stats = stats;
    b->fd = b->timer_fd = b->hold_fd = -1;
    if (vblk_open_backing(cfg, cfg->path, &bk, err, errlen) < 0)
        goto fail;
    b->fd = bk.fd;
    b->st.capacity = bk.sectors;
    memcpy(b->id, bk.id, sizeof(b->id));
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
    destroy(b);
    return NULL;
}

static void destroy(void *dev)
{
    struct vblk *b = dev;
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
        .name = "block",
        .device_id = VIRTIO_ID_BLOCK,
        .nqueues = 1,
        .queue_max = VQ_MAX_SIZE,
        .config_size = 16, /* capacity, size_max, seg_max (spec 5.2.4) */
        .features = features,
        .config_read = config_read,
        .process_queue = process_queue,
        .reset = reset,
        .fds = fds,
        .event = event,
        .quiesce = quiesce,
        .state_size = sizeof(struct vblk_state),
        .save = save,
        .restore = restore,
        .update = update,
        .destroy = destroy,
};
