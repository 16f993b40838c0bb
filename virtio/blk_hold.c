/* virtio-blk's interrupts: one per wake-up that answered something, held for rounds of the
 * guest's measured turnaround while the ring is polled without kicks (irqmod.c decides;
 * virtio/README.md "Interrupt moderation"), or, on the Async engine, awaiting the requests
 * still in flight so that one interrupt covers their completions too. */
#include "blk_dev.h"

/* The longest an await holds an answer back for the requests still in flight, and how long
 * when the guest's turnaround is not measured yet. On a page-cache file an io-wq worker
 * completes a request within tens of microseconds of the one before it. */
#define AWAIT_MAX_NS     100000ULL
#define AWAIT_DEFAULT_NS 50000ULL

void vblk_signal_used(struct vblk *b, struct vmmio_dev *t, uint64_t now)
{
    irqmod_signalled(&b->mod, now);
    b->unsignalled = 0;
    vmmio_used(t, 0);
}

/* Async: answers were pushed while other requests are in flight. Returns true if the interrupt
 * waits for them (the await timer armed), false if it goes out now. */
static bool await_start(struct vblk *b)
{
    if (!b->eng.on || !b->eng.inflight)
        return false;
    if (b->await_skip) {
        b->await_skip--;
        return false;
    }
    uint64_t ns = irqmod_round_ns(&b->mod);
    b->awaiting = true;
    b->await_base = b->unsignalled;
    vblk_arm(b, b->hold_fd, !ns ? AWAIT_DEFAULT_NS : ns > AWAIT_MAX_NS ? AWAIT_MAX_NS : ns);
    return true;
}

/* Ends an await: by its timer (timed_out) or because nothing is in flight any more. An await
 * whose timer fired before any completion joined it only added latency (a slow disk): the next
 * 1, 2, 4, ... IRQMOD_MAX_BACKOFF answers go out at once. */
static void await_stop(struct vblk *b, bool timed_out)
{
    if (!timed_out)
        vblk_arm(b, b->hold_fd, 0);
    b->awaiting = false;
    if (timed_out && b->unsignalled == b->await_base) {
        b->await_backoff = b->await_backoff ? b->await_backoff * 2 : 1;
        if (b->await_backoff > IRQMOD_MAX_BACKOFF)
            b->await_backoff = IRQMOD_MAX_BACKOFF;
        b->await_skip = b->await_backoff;
    } else {
        b->await_backoff = 0;
    }
}

int vblk_await_end(struct vblk *b, struct vmmio_dev *t)
{
    await_stop(b, true);
    vblk_signal_used(b, t, clock_ns());
    return 0;
}

/* Runs the queue, then raises one interrupt for everything answered, including `done` requests
 * the caller already answered, or holds it (an await or irqmod.c). Returns 0 or -EINVAL. */
int vblk_run_queue(struct vblk *b, struct vmmio_dev *t, unsigned done)
{
    unsigned popped = 0;
    int ret = vblk_drain(b, t, &done, &popped);
    if (ret == VBLK_DRAIN_RESET)
        return 0;
    if (b->mod.holding) {
        b->round_found += popped; /* answered when the hold ends */
        return ret;
    }
    if (!popped && !done && !b->awaiting)
        return ret;
    uint64_t now = clock_ns(); /* one clock read per wake-up that did something */
    if (popped)
        irqmod_arrived(&b->mod, now);
    if (b->awaiting) {
        if (!ret && b->eng.inflight)
            return ret; /* more completions to come */
        await_stop(b, false);
        vblk_signal_used(b, t, now);
        return ret;
    }
    if (!b->unsignalled)
        return ret; /* Async: requests only queued, nothing answered to signal yet */
    if (!ret && await_start(b))
        return ret;
    if (!ret && irqmod_start(&b->mod)) {
        vq_set_quiet(vmmio_queue(t, 0), true);
        b->round_found = 0;
        vblk_arm(b, b->hold_fd, irqmod_round_ns(&b->mod));
    } else {
        vblk_signal_used(b, t, now);
    }
    return ret;
}

/* A moderation round ended: poll the ring, then hold on or raise the interrupt. */
int vblk_hold_round(struct vblk *b, struct vmmio_dev *t)
{
    unsigned done = 0;
    int ret = vblk_drain(b, t, &done, &b->round_found);
    if (ret == VBLK_DRAIN_RESET)
        return 0;
    if (ret < 0)
        irqmod_reset(&b->mod); /* the device is failing: no more rounds */
    bool more = irqmod_round(&b->mod, b->round_found);
    b->round_found = 0;
    if (!ret && more) {
        vblk_arm(b, b->hold_fd, irqmod_round_ns(&b->mod));
        return 0;
    }
    vq_set_quiet(vmmio_queue(t, 0), false);
    if (!ret) { /* re-arms the kicks; what slipped in meanwhile joins this interrupt */
        unsigned popped = 0;
        ret = vblk_drain(b, t, &done, &popped);
        if (ret == VBLK_DRAIN_RESET)
            return 0;
    }
    vblk_signal_used(b, t, clock_ns());
    return ret;
}

/* Ends a hold or an await without an interrupt (reset, failure). */
void vblk_hold_cancel(struct vblk *b)
{
    vblk_arm(b, b->hold_fd, 0);
    irqmod_reset(&b->mod);
    b->round_found = 0;
    b->awaiting = false;
    b->await_backoff = b->await_skip = 0;
}
