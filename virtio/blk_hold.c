/* virtio-blk's interrupts: one per wake-up that answered something, or held for rounds of
 * the guest's measured turnaround while the ring is polled without kicks (irqmod.c decides;
 * virtio/README.md "Interrupt moderation"). */
#include "blk_dev.h"

void vblk_signal_used(struct vblk *b, struct vmmio_dev *t, uint64_t now)
{
    irqmod_signalled(&b->mod, now);
    vmmio_used(t, 0);
}

/* Runs the queue, then raises one interrupt for everything answered, including `done` requests
 * the caller already answered, or holds it (irqmod.c). Returns 0 or -EINVAL. */
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

/* Ends a hold without an interrupt (reset, failure). */
void vblk_hold_cancel(struct vblk *b)
{
    vblk_arm(b, b->hold_fd, 0);
    irqmod_reset(&b->mod);
    b->round_found = 0;
}
