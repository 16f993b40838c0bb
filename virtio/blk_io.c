/* virtio-blk's request path: a popped chain is parsed and checked (blk_req.c), charged to the
 * rate limiter (a request short of tokens waits, kept, until a timerfd fires) and either
 * answered at once (GET_ID, a FLUSH without writeback, a bad request) or queued on an engine:
 * the Sync batch (blk_sync.c) or the io_uring ring (blk_uring.c). The I/O runs with the
 * transport's lock released (vmmio_unlocked); the answers go to the used ring under the lock,
 * unless the driver reset the device meanwhile. */
#include <errno.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>

#include "blk_dev.h"

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

static void complete(struct vblk *b, struct vmmio_dev *t, uint16_t head, uint8_t *status, uint8_t s,
                     uint32_t used)
{
    b->unsignalled++;
    if (status) {
        *status = s;
        used++;
    }
    vq_push(vmmio_queue(t, 0), head, used);
}

void vblk_flush_failed(struct vblk *b)
{
    if (!b->st.flush_failed)
        log_warn("drive %s: a FLUSH failed: every later FLUSH fails until the device is reset "
                 "or its file replaced (PATCH /drives)",
                 b->cfg.id);
    b->st.flush_failed = true;
}

/* An io_uring completion (uring_done_fn). One queued before the last reset belongs to rings
 * the driver has taken back: it is dropped. FSYNCs run unordered, so the latch is checked when
 * one completes, not only when it is queued. */
void vblk_async_done(void *ctx, const struct uring_op *op, bool ok)
{
    struct vblk_done *d = ctx;
    if (op->tag != d->b->gen)
        return;
    if (op->type == VIRTIO_BLK_T_FLUSH && !ok)
        vblk_flush_failed(d->b);
    if (op->type == VIRTIO_BLK_T_FLUSH && d->b->st.flush_failed)
        ok = false;
    uint8_t s = ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    account(d->b, op->type, op->len, s);
    complete(d->b, d->t, op->head, op->status, s,
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
void vblk_arm(const struct vblk *b, int fd, uint64_t ns)
{
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    if (fd >= 0 && timerfd_settime(fd, 0, &its, NULL) < 0)
        log_warn("drive %s: timerfd: %s", b->cfg.id, strerror(errno));
}

static void throttle(struct vblk *b, uint64_t ns)
{
    b->throttled = true;
    vblk_arm(b, b->timer_fd, ns);
}

void vblk_unthrottle(struct vblk *b)
{
    vblk_arm(b, b->timer_fd, 0);
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
        complete(b, t, b->chain.head, r->status, VIRTIO_BLK_S_IOERR, 0);
        return H_DONE;
    }
    uint8_t s = vblk_check(r, b->st.capacity, b->cfg.read_only);
    if (s != VIRTIO_BLK_S_OK) {
        STAT_ADD(b->stats, block_invalid_reqs, 1);
        complete(b, t, b->chain.head, r->status, s, 0);
        return H_DONE;
    }
    if (r->type == VIRTIO_BLK_T_FLUSH && b->cfg.writeback && b->st.flush_failed) {
        complete(b, t, b->chain.head, r->status, VIRTIO_BLK_S_IOERR, 0); /* latched: no sync */
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
    complete(b, t, b->chain.head, r->status, VIRTIO_BLK_S_OK, used);
    return H_DONE;
}

/* The I/O of a vblk_drain, without the transport's lock: the Sync batch, the Async submission. */
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
    if (b->batch.flush_failed)
        vblk_flush_failed(b);
    for (unsigned i = 0; i < n; i++) {
        const struct sync_req *s = &b->batch.r[i];
        account(b, s->type, s->len, s->s);
        complete(b, t, s->head, s->status, s->s,
                 s->type == VIRTIO_BLK_T_IN && s->s == VIRTIO_BLK_S_OK ? (uint32_t)s->len : 0);
    }
    b->batch.n = b->batch.niov = 0;
    return n;
}

/* Runs the queue until it is empty, throttled or out of async slots, adding the requests it
 * popped to *popped and those it answered to *answered; the I/O runs in batches without the
 * transport's lock (vmmio_unlocked). After each batch the ring is looked at again: what the
 * driver added while the I/O ran joins this wake-up (and its interrupt) instead of costing a
 * kick, a wake-up and an interrupt of its own. Returns 0, VBLK_DRAIN_RESET or -EINVAL. */
int vblk_drain(struct vblk *b, struct vmmio_dev *t, unsigned *answered, unsigned *popped)
{
    struct vq *q = vmmio_queue(t, 0);
    struct vblk_done d = {b, t};
    int ret = 0, h;

    for (;;) {
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
                *answered += uring_reap(&b->eng, vblk_async_done, &d);
            break;
        }
        /* One submit for what this pass queued, and the Sync I/O, unlocked. */
        b->queued = 0;
        b->batch.flush_failed = b->st.flush_failed; /* read under the lock: reset clears it */
        if (vmmio_unlocked(t, run_io, b)) {
            b->batch.n = b->batch.niov = 0;
            return VBLK_DRAIN_RESET;
        }
        *answered += answer_batch(b, t);
        /* Page-cache hits complete inside the submit: answer them now (the ring fd only
         * reports later completions). */
        if (b->eng.on)
            *answered += uring_reap(&b->eng, vblk_async_done, &d);
        if (ret < 0 || h == H_WAIT || b->throttled)
            break; /* broken ring, out of tokens or io_uring slots: nothing more to take now */
    }
    return ret < 0 ? ret : 0;
}
