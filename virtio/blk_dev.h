/* virtio-blk's insides, shared by its files: blk.c (the ops: activation, reset, events,
 * snapshot state, create/destroy), blk_io.c (the request path: parsing, the rate limiter, the
 * Sync batch and the Async submission, answers), blk_hold.c (interrupts and their moderation)
 * and blk_update.c (PATCH /drives). Not for other directories: registry.c and the tests use
 * blk.h. */
#ifndef EMBER_VIRTIO_BLK_DEV_H
#define EMBER_VIRTIO_BLK_DEV_H

#include "blk.h"

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
    /* st.flush_failed: a FLUSH failed, every later FLUSH fails too, until a reset or a new file
     * (F13). Linux reports a writeback error to one fsync and then forgets it, so a retried
     * FLUSH would succeed although the dirty pages it should have written may be gone (QEMU
     * latches it the same way). */
    int hold_fd; /* the end of an interrupt-moderation round or of an await */
    struct irqmod mod;
    unsigned unsignalled; /* answers pushed since the last interrupt */
    /* Async: answers wait for the requests still in flight (one interrupt for the batch), at
     * most one await round; after an await the timer ended with requests still out (a slow
     * disk), the next await_skip answers are signalled at once (backoff 1, 2, 4, ...). */
    bool awaiting;
    unsigned await_base; /* unsignalled when the await started */
    unsigned await_backoff, await_skip;
    unsigned round_found;  /* requests popped during this round */
    struct vq_chain chain; /* the chain being handled (kept while it waits) */
    struct vblk_req req;
    struct uring_eng eng;    /* Async engine (eng.on) */
    unsigned queued;         /* Async requests queued, not submitted yet */
    struct sync_batch batch; /* Sync engine: requests whose I/O runs without the lock */
};

/* Where an io_uring completion is answered. */
struct vblk_done {
    struct vblk *b;
    struct vmmio_dev *t;
};

/* The request path (blk_io.c). */
/* vblk_async_done: an io_uring completion (uring_done_fn, ctx a struct vblk_done). */
void vblk_async_done(void *ctx, const struct uring_op *op, bool ok);
/* vblk_arm(b, fd, ns): arms the one-shot timerfd fd ns from now (0 disarms it). */
void vblk_arm(const struct vblk *b, int fd, uint64_t ns);
/* vblk_flush_failed(b): a FLUSH (or the sync before a file swap) failed: latches it and logs
 * it once. */
void vblk_flush_failed(struct vblk *b);
/* vblk_unthrottle(b): the rate limiter's wait is over (timer disarmed). */
void vblk_unthrottle(struct vblk *b);
/* vblk_drain returns this when the driver reset the device while the I/O ran: the caller
 * stops, the answers were dropped (the chains belong to rings the driver has taken back). */
#define VBLK_DRAIN_RESET 1
/* vblk_drain(b, t, answered, popped): runs the queue until it is empty, throttled or out of
 * io_uring slots, adding the requests it popped to *popped and those it answered to *answered.
 * Returns 0, VBLK_DRAIN_RESET or -EINVAL (a broken ring). */
int vblk_drain(struct vblk *b, struct vmmio_dev *t, unsigned *answered, unsigned *popped);

/* Interrupts (blk_hold.c). */
/* vblk_signal_used(b, t, now): raises the used-buffer interrupt now. */
void vblk_signal_used(struct vblk *b, struct vmmio_dev *t, uint64_t now);
/* vblk_run_queue(b, t, done): runs the queue, then raises one interrupt for everything answered
 * (done: answered by the caller already) or holds it. Returns 0 or -EINVAL. */
int vblk_run_queue(struct vblk *b, struct vmmio_dev *t, unsigned done);
/* vblk_hold_round(b, t): a moderation round ended: polls the ring, holds on or raises the
 * interrupt. Returns 0 or -EINVAL. */
int vblk_hold_round(struct vblk *b, struct vmmio_dev *t);
/* vblk_await_end(b, t): an await's timer fired: raises the interrupt. Returns 0. */
int vblk_await_end(struct vblk *b, struct vmmio_dev *t);
/* vblk_hold_cancel(b): ends a hold or an await without an interrupt (reset, failure). */
void vblk_hold_cancel(struct vblk *b);

/* PATCH /drives (blk_update.c): the update op (arg a struct vblk_update). Returns 0 or -errno
 * with a reason in err. */
int vblk_update_op(void *dev, struct vmmio_dev *t, const void *arg, char *err, size_t errlen);

#endif
