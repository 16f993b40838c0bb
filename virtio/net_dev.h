/* virtio-net's device struct, shared by the ops and moderation (net.c) and the data paths
 * (net_io.c); private to those two files. Every function here runs under the transport's lock,
 * on the event loop. */
#ifndef EMBER_VIRTIO_NET_DEV_H
#define EMBER_VIRTIO_NET_DEV_H

#include "../vmm/vmm.h"
#include "device.h"
#include "net.h"

/* A queue's interrupt moderation (irqmod.c): the round's timerfd and what the round found. */
struct vnet_hold {
    struct irqmod mod;
    int fd;
    unsigned found;
};

struct vnet {
    struct vnet_state st;
    struct vm_net cfg;
    int tap_fd, timer_fd;
    bool is_tap; /* TUNSETOFFLOAD applies (not on a unit test's stand-in) */
    bool ufo;    /* the TAP takes TUN_F_UFO: GUEST_UFO and HOST_UFO offered */
    struct vm_stats *stats;
    uint64_t acked;       /* the driver's features, from activate */
    bool offload_pending; /* TUNSETOFFLOAD to do on the loop (activate is on a vCPU) */
    bool dead;            /* the TAP failed for good (its interface is gone) */
    struct tbucket rx_bw, rx_ops, tx_bw, tx_ops;
    bool rx_throttled, tx_throttled;
    bool tx_blocked;          /* the TAP said EAGAIN: tx waits for EPOLLOUT */
    bool rx_pending;          /* rx_buf holds a frame the rx queue has not taken yet */
    size_t rx_len;            /* its length, header included */
    uint64_t timer_due;       /* when the rate timer fires (0: disarmed) */
    uint32_t watch;           /* what the loop watches the TAP for */
    struct ratelog err_log;   /* TAP errors */
    struct vnet_hold hold[2]; /* interrupt moderation, per queue (VNET_QUEUE_RX, _TX) */
    struct vq_chain first, chain;
    uint8_t rx_buf[VNET_BUF_MAX];
};

static inline bool has(const struct vnet *n, unsigned bit)
{
    return n->acked >> bit & 1;
}

/* vnet_tap_error(n, what, err): counts nothing (the caller does), logs at most every 10 s, and
 * marks the TAP dead when err says its interface is gone. */
void vnet_tap_error(struct vnet *n, const char *what, int err);
/* vnet_rewatch(n, t): has the loop watch the TAP for what the device can take now. */
void vnet_rewatch(struct vnet *n, struct vmmio_dev *t);
/* vnet_arm_timer(n, ns): the rate limiters' timer fires in ns (0: disarmed); an earlier
 * wake-up already armed serves a later one. */
void vnet_arm_timer(struct vnet *n, uint64_t ns);
/* vnet_rx_run(n, t, done): moves frames from the TAP into the rx queue until the TAP is empty,
 * the queue full, the bucket empty or a budget of frames went, adding the frames delivered to
 * *done; no interrupt (the caller's: moderated). Returns 0 or -EINVAL. */
int vnet_rx_run(struct vnet *n, struct vmmio_dev *t, unsigned *done);
/* vnet_tx_run(n, t, done): sends until the ring is empty, the bucket empty or the TAP full,
 * adding the chains answered to *done; no interrupt. Returns 0 or -EINVAL. */
int vnet_tx_run(struct vnet *n, struct vmmio_dev *t, unsigned *done);

#endif
