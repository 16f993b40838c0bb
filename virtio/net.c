/* virtio-net (spec 5.1): one rx and one tx queue on a host TAP device opened with a 12-byte
 * vnet header, so the guest's checksum and segmentation offloads pass through to the host
 * kernel. Everything runs on the event loop: the TAP is watched for EPOLLIN while the guest has
 * room for frames, and for EPOLLOUT only while its send queue is full; token buckets hold frames
 * back (never drop them) and a timerfd resumes them; each queue may hold its interrupt for
 * rounds of the guest's turnaround (irqmod.c, below). Every op runs under the transport's lock.
 *
 * Back-pressure: a frame read from the TAP that the rx queue cannot take stays in the device's
 * buffer, the TAP is no longer watched (its own queue fills, then the host drops), and the
 * driver's next rx kick resumes. A tx frame the TAP refuses with EAGAIN goes back to the ring
 * and tx stops until the TAP is writable.
 *
 * The TAP is non-blocking: its reads and writes never wait, so they run under the transport's
 * lock (no vmmio_unlocked); TUNSETOFFLOAD too, on the loop, never on a vCPU. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "blk.h" /* vblk_iov_slice */
#include "net.h"

#define RX_BUDGET  64 /* frames per wake-up: the loop's other fds get their turn */
#define LOG_NS     (10 * 1000000000ULL)
#define CONFIG_LEN 8 /* mac, status (spec 5.1.4) */

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
    bool tx_found_none;       /* the last tx_run found the ring empty at once */
    bool rx_pending;          /* rx_buf holds a frame the rx queue has not taken yet */
    size_t rx_len;            /* its length, header included */
    uint64_t timer_due;       /* when the rate timer fires (0: disarmed) */
    uint32_t watch;           /* what the loop watches the TAP for */
    struct ratelog err_log;   /* TAP errors */
    struct vnet_hold hold[2]; /* interrupt moderation, per queue (VNET_QUEUE_RX, _TX) */
    struct vq_chain first, chain;
    uint8_t rx_buf[VNET_BUF_MAX];
};

static bool has(const struct vnet *n, unsigned bit)
{
    return n->acked >> bit & 1;
}

static uint64_t features(void *dev)
{
    const struct vnet *n = dev;
    uint64_t f = 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX |
                 1ULL << VIRTIO_NET_F_CSUM | 1ULL << VIRTIO_NET_F_GUEST_CSUM |
                 1ULL << VIRTIO_NET_F_GUEST_TSO4 | 1ULL << VIRTIO_NET_F_GUEST_TSO6 |
                 1ULL << VIRTIO_NET_F_HOST_TSO4 | 1ULL << VIRTIO_NET_F_HOST_TSO6 |
                 1ULL << VIRTIO_NET_F_MRG_RXBUF | 1ULL << VIRTIO_NET_F_STATUS;
    if (n->st.has_mac)
        f |= 1ULL << VIRTIO_NET_F_MAC;
    if (n->ufo)
        f |= 1ULL << VIRTIO_NET_F_GUEST_UFO | 1ULL << VIRTIO_NET_F_HOST_UFO;
    return f;
}

/* Config space (spec 5.1.4): mac (zero without VIRTIO_NET_F_MAC), status: the link is up. */
static void config_read(void *dev, uint64_t off, uint8_t *data, uint32_t len)
{
    const struct vnet *n = dev;
    uint8_t cfg[CONFIG_LEN] = {0};
    if (n->st.has_mac)
        memcpy(cfg, n->st.mac, 6);
    cfg[6] = VIRTIO_NET_S_LINK_UP;
    memcpy(data, cfg + off, len); /* inside config_size: the transport checked */
}

static void tap_error(struct vnet *n, const char *what, int err)
{
    uint64_t dropped;
    if (err == EBADFD || err == ENXIO || err == ENODEV)
        n->dead = true; /* the interface is gone: the device stays, without a backend */
    if (ratelog_allow(&n->err_log, clock_ns(), LOG_NS, &dropped))
        log_warn("net %s: TAP %s %s: %s%s (%llu more not logged)", n->cfg.id, n->cfg.host_dev_name,
                 what, strerror(err), n->dead ? "; the interface no longer carries frames" : "",
                 (unsigned long long)dropped);
}

/* Has the loop watch the TAP for what the device can take now. */
static void rewatch(struct vnet *n, struct vmmio_dev *t)
{
    uint32_t w = 0;
    if (vmmio_running(t) && !n->dead) {
        if (!n->rx_pending && !n->rx_throttled)
            w |= EPOLLIN;
        if (n->tx_blocked)
            w |= EPOLLOUT;
    }
    if (w != n->watch) {
        vmmio_watch(t, VNET_FD_TAP, w);
        n->watch = w;
    }
}

/* TUNSETOFFLOAD for what the driver acknowledged, once on the loop after activate: the TAP
 * then hands over only frames the driver can take. */
static void apply_offload(struct vnet *n)
{
    if (!n->offload_pending)
        return;
    n->offload_pending = false;
    if (n->is_tap &&
        ioctl(n->tap_fd, TUNSETOFFLOAD, (unsigned long)vnet_tun_offload(n->acked)) < 0) {
        STAT_ADD(n->stats, net_activate_fails, 1);
        tap_error(n, "TUNSETOFFLOAD", errno);
    }
}

static void arm_timer(struct vnet *n, uint64_t ns)
{
    uint64_t due = ns ? clock_ns() + ns : 0;
    if (ns && n->timer_due && n->timer_due <= due)
        return; /* an earlier wake-up serves this one too */
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    if (n->timer_fd >= 0 && timerfd_settime(n->timer_fd, 0, &its, NULL) < 0)
        log_warn("net %s: timerfd: %s", n->cfg.id, strerror(errno));
    n->timer_due = due;
}

/* Charges a frame of len bytes. Returns 0, or the nanoseconds to wait (nothing charged). */
static uint64_t charge(struct tbucket *bw, struct tbucket *ops, uint64_t len)
{
    uint64_t wait = tb_consume(bw, len);
    if (wait)
        return wait;
    wait = tb_consume(ops, 1);
    if (wait)
        tb_refund(bw, len);
    return wait;
}

/* ---- rx: TAP → guest -------------------------------------------------------------------- */

/* Puts rx_buf into the rx queue: one chain, or with MRG_RXBUF as many as it takes (num_buffers
 * in the header). Returns 1 if the frame is done (delivered, or dropped and counted), 0 if the
 * queue has no room for it yet (the chains popped are back in the ring), -EINVAL for a chain
 * that cannot be an rx buffer. */
static int rx_try(struct vnet *n, struct vmmio_dev *t)
{
    struct vq *q = vmmio_queue(t, VNET_QUEUE_RX);
    uint16_t heads[VQ_MAX_SIZE];
    uint32_t lens[VQ_MAX_SIZE];
    uint64_t done = 0;
    unsigned used = 0;
    bool mrg = has(n, VIRTIO_NET_F_MRG_RXBUF);

    while (done < n->rx_len) {
        struct vq_chain *c = used ? &n->chain : &n->first;
        int ret = used < q->st.size ? vq_pop(q, vmmio_mem(t), c) : 0;
        if (ret < 0)
            return ret;
        if (ret == 0) {
            for (unsigned i = 0; i < used; i++)
                vq_unpop(q);
            return 0;
        }
        /* Device-readable buffers in an rx chain are ignored; the writable part must hold the
         * header (the first chain) or something. */
        if (c->in_len < (used ? 1 : VNET_HDR_LEN))
            return -EINVAL;
        const struct iovec *w = c->iov + c->nout;
        unsigned nw = c->niov - c->nout;
        uint64_t take = n->rx_len - done < c->in_len ? n->rx_len - done : c->in_len;
        if (!used)
            vnet_iov_copy_out(w, nw, VNET_HDR_LEN, n->rx_buf + VNET_HDR_LEN, take - VNET_HDR_LEN);
        else
            vnet_iov_copy_out(w, nw, 0, n->rx_buf + done, take);
        heads[used] = c->head;
        lens[used++] = (uint32_t)take;
        done += take;
        if (!mrg && done < n->rx_len) { /* a buffer too small for the frame: dropped */
            vq_unpop(q);
            STAT_ADD(n->stats, net_rx_fails, 1);
            return 1;
        }
    }
    struct vnet_hdr h;
    uint8_t raw[VNET_HDR_LEN];
    vnet_hdr_read(n->rx_buf, &h);
    h.num_buffers = (uint16_t)used; /* 1 without MRG_RXBUF (spec 5.1.6.4) */
    vnet_hdr_write(&h, raw);
    vnet_iov_copy_out(n->first.iov + n->first.nout, n->first.niov - n->first.nout, 0, raw,
                      VNET_HDR_LEN);
    for (unsigned i = 0; i < used; i++)
        vq_push(q, heads[i], lens[i]);
    STAT_ADD(n->stats, net_rx_bytes, n->rx_len - VNET_HDR_LEN);
    STAT_ADD(n->stats, net_rx_packets, 1);
    return 1;
}

/* rx_try until it has an answer: a driver adding buffers while the device gave up on them
 * (vq_kick_on_more) may not kick, so the device looks again. Each retry sees more chains. */
static int rx_deliver(struct vnet *n, struct vmmio_dev *t)
{
    for (;;) {
        int ret = rx_try(n, t);
        if (ret)
            return ret;
        if (!vq_kick_on_more(vmmio_queue(t, VNET_QUEUE_RX)))
            return 0;
    }
}

/* Moves frames from the TAP into the rx queue until the TAP is empty, the queue full, the
 * bucket empty or RX_BUDGET frames went, adding the frames delivered to *done; no interrupt
 * (the caller's: moderated). Returns 0 or -EINVAL. */
static int rx_run(struct vnet *n, struct vmmio_dev *t, unsigned *done)
{
    int ret = 0;

    for (unsigned budget = RX_BUDGET; budget && !n->rx_throttled; budget--) {
        if (!n->rx_pending) {
            if (n->dead)
                break;
            ssize_t got = read(n->tap_fd, n->rx_buf, sizeof(n->rx_buf));
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                if (errno != EAGAIN) {
                    STAT_ADD(n->stats, net_rx_fails, 1);
                    STAT_ADD(n->stats, net_tap_read_fails, 1);
                    tap_error(n, "read", errno);
                }
                break;
            }
            if ((size_t)got < VNET_HDR_LEN + VNET_ETH_MIN) {
                STAT_ADD(n->stats, net_rx_fails, 1);
                continue;
            }
            STAT_ADD(n->stats, net_rx_count, 1);
            n->rx_len = (size_t)got;
            n->rx_pending = true;
        }
        uint64_t len = n->rx_len - VNET_HDR_LEN;
        uint64_t wait = charge(&n->rx_bw, &n->rx_ops, len);
        if (wait) {
            n->rx_throttled = true;
            STAT_ADD(n->stats, net_rx_rate_limiter_throttled, 1);
            arm_timer(n, wait);
            break;
        }
        ret = rx_deliver(n, t);
        if (ret <= 0) {
            tb_refund(&n->rx_bw, len);
            tb_refund(&n->rx_ops, 1);
            if (ret == 0)
                STAT_ADD(n->stats, net_no_rx_avail_buffer, 1);
            break;
        }
        n->rx_pending = false;
        (*done)++;
    }
    rewatch(n, t);
    return ret < 0 ? ret : 0;
}

/* ---- tx: guest → TAP -------------------------------------------------------------------- */

/* Sends chain c. Returns 1 if it is done (sent, or dropped and counted), 0 if it must wait
 * (given back to the ring: tokens or EAGAIN). */
static int tx_one(struct vnet *n, struct vmmio_dev *t, const struct vq_chain *c)
{
    struct vq *q = vmmio_queue(t, VNET_QUEUE_TX);
    uint8_t head[VNET_HDR_LEN + VNET_ETH_MIN];
    struct vnet_hdr h;

    /* The header is copied once and checked; the frame goes from guest memory to the TAP. */
    uint64_t got = vnet_iov_copy_in(c->iov, c->nout, head, sizeof(head));
    uint64_t flen = c->out_len >= VNET_HDR_LEN ? c->out_len - VNET_HDR_LEN : 0;
    if (got >= VNET_HDR_LEN)
        vnet_hdr_read(head, &h);
    if (got < sizeof(head) || vnet_tx_check(&h, flen, n->acked)) {
        STAT_ADD(n->stats, net_tx_malformed_frames, 1);
        vq_push(q, c->head, 0);
        return 1;
    }
    if (n->dead) {
        STAT_ADD(n->stats, net_tx_fails, 1);
        vq_push(q, c->head, 0);
        return 1;
    }
    /* Counted, not dropped (as Firecracker): a source MAC other than the configured one. */
    if (n->st.has_mac && memcmp(head + VNET_HDR_LEN + 6, n->st.mac, 6) != 0)
        STAT_ADD(n->stats, net_tx_spoofed_mac_count, 1);
    uint64_t wait = charge(&n->tx_bw, &n->tx_ops, flen);
    if (wait) {
        vq_unpop(q);
        n->tx_throttled = true;
        STAT_ADD(n->stats, net_tx_rate_limiter_throttled, 1);
        arm_timer(n, wait);
        return 0;
    }
    struct iovec iov[VQ_MAX_SIZE + 1];
    iov[0] = (struct iovec){head, VNET_HDR_LEN};
    unsigned k = vblk_iov_slice(c->iov, c->nout, VNET_HDR_LEN, flen, iov + 1);
    ssize_t w;
    do
        w = writev(n->tap_fd, iov, (int)k + 1);
    while (w < 0 && errno == EINTR);
    if (w < 0 && errno == EAGAIN) {
        tb_refund(&n->tx_bw, flen);
        tb_refund(&n->tx_ops, 1);
        vq_unpop(q);
        n->tx_blocked = true;
        return 0;
    }
    if (w < 0) {
        STAT_ADD(n->stats, net_tx_fails, 1);
        STAT_ADD(n->stats, net_tap_write_fails, 1);
        tap_error(n, "write", errno);
    } else {
        STAT_ADD(n->stats, net_tx_count, 1);
        STAT_ADD(n->stats, net_tx_bytes, flen);
        STAT_ADD(n->stats, net_tx_packets, 1);
    }
    vq_push(q, c->head, 0);
    return 1;
}

/* Sends until the ring is empty, the bucket empty or the TAP full, adding the chains answered
 * to *done; no interrupt (the caller's: moderated). Returns 0 or -EINVAL. */
static int tx_run(struct vnet *n, struct vmmio_dev *t, unsigned *done)
{
    struct vq *q = vmmio_queue(t, VNET_QUEUE_TX);
    int ret = 0;

    n->tx_found_none = false;
    for (bool first = true; !n->tx_blocked && !n->tx_throttled; first = false) {
        ret = vq_pop(q, vmmio_mem(t), &n->chain);
        n->tx_found_none = first && ret == 0;
        if (ret <= 0)
            break;
        if (!tx_one(n, t, &n->chain)) {
            STAT_ADD(n->stats, net_tx_remaining_reqs_count, 1); /* it waits in the ring */
            break;
        }
        (*done)++;
    }
    rewatch(n, t);
    return ret < 0 ? ret : 0;
}

/* ---- interrupt moderation (irqmod.c), per queue, as virtio-blk ----------------------------
 * tx: after answering frames the device may hold the interrupt for a round while kicks are
 * suppressed (vq_set_quiet) and the ring is polled at the round's end; rx: it may hold the
 * interrupt while the TAP keeps delivering, and raises it at once when the guest's buffers run
 * out (the driver refills only when told). A queue's turnaround is measured from its interrupt
 * to the next frames it carries. */

static int run_q(struct vnet *n, struct vmmio_dev *t, unsigned qi, unsigned *done)
{
    return qi == VNET_QUEUE_TX ? tx_run(n, t, done) : rx_run(n, t, done);
}

static void arm_hold(struct vnet *n, unsigned qi, uint64_t ns)
{
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    if (n->hold[qi].fd >= 0 && timerfd_settime(n->hold[qi].fd, 0, &its, NULL) < 0)
        log_warn("net %s: timerfd: %s", n->cfg.id, strerror(errno));
}

static void signal_q(struct vnet *n, struct vmmio_dev *t, unsigned qi, uint64_t now)
{
    irqmod_signalled(&n->hold[qi].mod, now);
    vmmio_used(t, qi);
}

/* Ends queue qi's hold (if any) without an interrupt: reset, failure. */
static void hold_cancel(struct vnet *n, unsigned qi)
{
    arm_hold(n, qi, 0);
    irqmod_reset(&n->hold[qi].mod);
    n->hold[qi].found = 0;
}

/* Ends queue qi's hold now with its interrupt: kicks re-armed (tx: the ring is run once more,
 * so what slipped in meanwhile joins this interrupt). Returns 0 or -EINVAL. */
static int hold_end(struct vnet *n, struct vmmio_dev *t, unsigned qi)
{
    unsigned done = 0;
    int ret = 0;
    arm_hold(n, qi, 0);
    irqmod_end(&n->hold[qi].mod);
    n->hold[qi].found = 0;
    if (qi == VNET_QUEUE_TX) {
        vq_set_quiet(vmmio_queue(t, qi), false);
        ret = tx_run(n, t, &done);
    }
    signal_q(n, t, qi, clock_ns());
    return ret;
}

/* Runs queue qi (a kick, the TAP, a timer), then raises one interrupt for what it answered or
 * holds it. Returns 0 or -EINVAL. */
static int run(struct vnet *n, struct vmmio_dev *t, unsigned qi)
{
    struct vnet_hold *h = &n->hold[qi];
    unsigned done = 0;
    int ret = run_q(n, t, qi, &done);

    if (h->mod.holding) {
        h->found += done;
        if (ret < 0) {
            hold_cancel(n, qi);
            return ret;
        }
        return qi == VNET_QUEUE_RX && n->rx_pending ? hold_end(n, t, qi) : 0;
    }
    if (!done)
        return ret;
    uint64_t now = clock_ns(); /* one clock read per wake-up that carried frames */
    irqmod_arrived(&h->mod, now);
    if (!ret && !(qi == VNET_QUEUE_RX && n->rx_pending) && irqmod_start(&h->mod)) {
        if (qi == VNET_QUEUE_TX)
            vq_set_quiet(vmmio_queue(t, qi), true);
        h->found = 0;
        arm_hold(n, qi, irqmod_round_ns(&h->mod));
    } else {
        signal_q(n, t, qi, now);
    }
    return ret;
}

/* Queue qi's round ended: poll it, then hold on or raise the interrupt. Returns 0 or -EINVAL. */
static int hold_round(struct vnet *n, struct vmmio_dev *t, unsigned qi)
{
    struct vnet_hold *h = &n->hold[qi];
    unsigned done = 0;
    int ret = run_q(n, t, qi, &done);
    if (ret < 0) {
        hold_cancel(n, qi); /* the device is failing: no more rounds */
        return ret;
    }
    bool more = irqmod_round(&h->mod, h->found + done);
    h->found = 0;
    if (more && !(qi == VNET_QUEUE_RX && n->rx_pending)) {
        arm_hold(n, qi, irqmod_round_ns(&h->mod));
        return 0;
    }
    return hold_end(n, t, qi);
}

/* Both directions, tx first (frames the TAP refused wait for the same wake-up as rx). */
static int run_both(struct vnet *n, struct vmmio_dev *t)
{
    int ret = run(n, t, VNET_QUEUE_TX);
    return ret ? ret : run(n, t, VNET_QUEUE_RX);
}

/* ---- ops -------------------------------------------------------------------------------- */

/* On the vCPU thread: no I/O. TUNSETOFFLOAD waits for the loop (apply_offload). */
static int activate(void *dev, struct vmmio_dev *t)
{
    struct vnet *n = dev;
    n->acked = vmmio_features(t);
    n->offload_pending = true;
    return 0;
}

static int process_queue(void *dev, struct vmmio_dev *t, unsigned qi)
{
    struct vnet *n = dev;
    if (qi == VNET_QUEUE_RX)
        STAT_ADD(n->stats, net_rx_queue_event_count, 1);
    else
        STAT_ADD(n->stats, net_tx_queue_event_count, 1);
    apply_offload(n);
    int ret = run(n, t, qi); /* rx: the driver added buffers, a held frame may fit now */
    if (qi == VNET_QUEUE_TX && n->tx_found_none)
        STAT_ADD(n->stats, net_no_tx_avail_buffer, 1); /* a kick with nothing to send */
    return ret;
}

/* Config space is read-only (mac, status): a driver's write is dropped and counted. */
static void config_write(void *dev, uint64_t off, const uint8_t *data, uint32_t len)
{
    struct vnet *n = dev;
    (void)off, (void)data, (void)len;
    STAT_ADD(n->stats, net_cfg_fails, 1);
}

/* On the vCPU thread: no I/O besides disarming the timers; the loop's watch of the TAP is
 * corrected at the next event (rewatch: nothing while not running). */
static void reset(void *dev, struct vmmio_dev *t)
{
    struct vnet *n = dev;
    (void)t;
    n->acked = 0;
    n->offload_pending = false;
    n->rx_pending = n->tx_blocked = n->rx_throttled = n->tx_throttled = false;
    arm_timer(n, 0);
    hold_cancel(n, VNET_QUEUE_RX);
    hold_cancel(n, VNET_QUEUE_TX);
}

static int event_run(struct vnet *n, struct vmmio_dev *t, unsigned which)
{
    uint64_t v;

    if (which != VNET_FD_TAP) {
        int fd = which == VNET_FD_RATE ? n->timer_fd : n->hold[which - VNET_FD_HOLD_RX].fd;
        if (read(fd, &v, sizeof(v)) < 0) {
            /* spurious wake-up */
        }
    }
    if (which == VNET_FD_RATE) {
        if (n->rx_throttled)
            STAT_ADD(n->stats, net_rx_event_rate_limiter_count, 1);
        if (n->tx_throttled)
            STAT_ADD(n->stats, net_tx_rate_limiter_event_count, 1);
        n->timer_due = 0;
        n->rx_throttled = n->tx_throttled = false;
    } else if (which == VNET_FD_TAP) {
        STAT_ADD(n->stats, net_rx_tap_event_count, 1);
    }
    if (!vmmio_running(t)) {
        if (which == VNET_FD_HOLD_RX || which == VNET_FD_HOLD_TX)
            hold_cancel(n, which - VNET_FD_HOLD_RX);
        rewatch(n, t);
        return 0;
    }
    apply_offload(n);
    if (which == VNET_FD_HOLD_RX || which == VNET_FD_HOLD_TX) {
        unsigned qi = which == VNET_FD_HOLD_RX ? VNET_QUEUE_RX : VNET_QUEUE_TX;
        return n->hold[qi].mod.holding ? hold_round(n, t, qi) : 0;
    }
    if (which == VNET_FD_TAP)
        n->tx_blocked = false; /* writable, or not: the next EAGAIN says so */
    return run_both(n, t);
}

static int event(void *dev, struct vmmio_dev *t, unsigned which)
{
    struct vnet *n = dev;
    int ret = event_run(n, t, which);
    if (ret < 0)
        STAT_ADD(n->stats, net_event_fails, 1);
    return ret;
}

/* Afterwards no interrupt is held (raised now, kicks re-armed) and no chain is held popped:
 * tx chains that wait are back in the ring, and rx chains are only ever popped and answered in
 * one go. A frame read from the TAP that the rx queue had no room for stays in the device (a
 * snapshot does not keep it: a lost frame); the rate limiter's timer goes on. */
static int quiesce(void *dev, struct vmmio_dev *t)
{
    struct vnet *n = dev;
    int ret = 0;
    for (unsigned qi = 0; qi < 2; qi++) {
        if (!n->hold[qi].mod.holding)
            continue;
        if (vmmio_running(t)) {
            int r = hold_end(n, t, qi);
            ret = ret ? ret : r;
        } else {
            hold_cancel(n, qi);
        }
    }
    return ret;
}

/* Only after quiesce: no interrupt held back. */
static int save(const void *dev, struct vmmio_dev *t, void *state)
{
    const struct vnet *n = dev;
    (void)t;
    if (n->hold[VNET_QUEUE_RX].mod.holding || n->hold[VNET_QUEUE_TX].mod.holding)
        return -EBUSY;
    memcpy(state, &n->st, sizeof(n->st));
    return 0;
}

/* The transport and its queues are restored (and checked) already: the device takes the
 * guest's MAC, the features the driver had acknowledged (TUNSETOFFLOAD at the first wake-up)
 * and starts with nothing held, rate budgets and moderation measurements afresh. The loader
 * then runs every queue once (vmm/snapshot_load.c): a kick sent before the snapshot died with
 * the old process. */
static int restore(void *dev, struct vmmio_dev *t, const void *state, char *err, size_t errlen)
{
    struct vnet *n = dev;
    struct vnet_state st;
    memcpy(&st, state, sizeof(st));
    if (st.has_mac > 1 || st.pad)
        return errf(err, errlen, -EINVAL, "net %s: a malformed device state", n->cfg.id);
    reset(n, t);
    n->st = st;
    tb_init(&n->rx_bw, &n->cfg.rx_bw);
    tb_init(&n->rx_ops, &n->cfg.rx_ops);
    tb_init(&n->tx_bw, &n->cfg.tx_bw);
    tb_init(&n->tx_ops, &n->cfg.tx_ops);
    if (vmmio_running(t))
        activate(n, t);
    return 0;
}

static int update(void *dev, struct vmmio_dev *t, const void *arg, char *err, size_t errlen)
{
    struct vnet *n = dev;
    const struct vnet_update *u = arg;
    (void)err, (void)errlen;

    if (u->rx_bw)
        n->cfg.rx_bw = *u->rx_bw, tb_init(&n->rx_bw, u->rx_bw);
    if (u->rx_ops)
        n->cfg.rx_ops = *u->rx_ops, tb_init(&n->rx_ops, u->rx_ops);
    if (u->tx_bw)
        n->cfg.tx_bw = *u->tx_bw, tb_init(&n->tx_bw, u->tx_bw);
    if (u->tx_ops)
        n->cfg.tx_ops = *u->tx_ops, tb_init(&n->tx_ops, u->tx_ops);
    arm_timer(n, 0); /* what waits is charged again against the new buckets */
    n->rx_throttled = n->tx_throttled = false;
    if (!vmmio_running(t)) {
        rewatch(n, t);
        return 0;
    }
    if (run_both(n, t) < 0)
        vmmio_fail(t);
    return 0;
}

static unsigned fds(const void *dev, struct virtio_fd out[VIRTIO_MAX_DEV_FDS])
{
    const struct vnet *n = dev;
    out[VNET_FD_TAP] = (struct virtio_fd){n->tap_fd, EPOLLIN};
    out[VNET_FD_RATE] = (struct virtio_fd){n->timer_fd, EPOLLIN};
    out[VNET_FD_HOLD_RX] = (struct virtio_fd){n->hold[VNET_QUEUE_RX].fd, EPOLLIN};
    out[VNET_FD_HOLD_TX] = (struct virtio_fd){n->hold[VNET_QUEUE_TX].fd, EPOLLIN};
    return VNET_NFDS;
}

static void destroy(void *dev)
{
    struct vnet *n = dev;
    if (!n)
        return;
    if (n->tap_fd >= 0)
        close(n->tap_fd);
    if (n->timer_fd >= 0)
        close(n->timer_fd);
    for (unsigned qi = 0; qi < 2; qi++)
        if (n->hold[qi].fd >= 0)
            close(n->hold[qi].fd);
    free(n);
}

int vnet_tap_open(const char *name, char *err, size_t errlen)
{
    struct ifreq ifr = {0};
    int hdr = VNET_HDR_LEN;

    if (strlen(name) >= IFNAMSIZ)
        return errf(err, errlen, -EINVAL, "Invalid TAP name %.32s: too long.", name);
    /* TUNSETIFF would create a missing interface (with CAP_NET_ADMIN): it must exist. */
    if (!if_nametoindex(name))
        return errf(err, errlen, -ENODEV,
                    "Open tap device failed: no network interface named %s on the host.", name);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, -errno, "Open tap device failed: /dev/net/tun: %s",
                    strerror(errno));
    memcpy(ifr.ifr_name, name, strlen(name));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, -e, "Open tap device failed: %s: %s (a TAP device, not in use?)",
                    name, strerror(e));
    }
    return fd;
}

struct vnet *vnet_create_fd(const struct vm_net *cfg, int fd, struct vm_stats *stats, char *err,
                            size_t errlen)
{
    struct vnet *n = calloc(1, sizeof(*n));
    struct ifreq ifr;
    if (!n) {
        close(fd);
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    n->timer_fd = n->hold[0].fd = n->hold[1].fd = -1;
    n->cfg = *cfg;
    n->st.has_mac = cfg->has_mac;
    memcpy(n->st.mac, cfg->mac, sizeof(n->st.mac));
    n->stats = stats;
    n->tap_fd = fd;
    n->is_tap = ioctl(fd, TUNGETIFF, &ifr) == 0;
    /* UFO where the TAP allows it: newer kernels refuse TUN_F_UFO (or drop it), so it is
     * probed, and the TAP is left without offloads until the driver's features are known. */
    if (n->is_tap && ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_UFO)) == 0)
        n->ufo = true;
    if (n->is_tap && ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
        errf(err, errlen, -errno, "TUNSETOFFLOAD: %s", strerror(errno));
        destroy(n);
        return NULL;
    }
    n->watch = EPOLLIN; /* as registered (fds) */
    tb_init(&n->rx_bw, &cfg->rx_bw);
    tb_init(&n->rx_ops, &cfg->rx_ops);
    tb_init(&n->tx_bw, &cfg->tx_bw);
    tb_init(&n->tx_ops, &cfg->tx_ops);
    n->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    for (unsigned qi = 0; qi < 2; qi++)
        n->hold[qi].fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (n->timer_fd < 0 || n->hold[0].fd < 0 || n->hold[1].fd < 0) {
        errf(err, errlen, -errno, "timerfd: %s", strerror(errno));
        destroy(n);
        return NULL;
    }
    return n;
}

struct vnet *vnet_create(const struct vm_net *cfg, struct vm_stats *stats, char *err, size_t errlen)
{
    int fd = vnet_tap_open(cfg->host_dev_name, err, errlen);
    return fd < 0 ? NULL : vnet_create_fd(cfg, fd, stats, err, errlen);
}

const struct virtio_dev_ops vnet_ops = {
        .name = "net",
        .device_id = VIRTIO_ID_NET,
        .nqueues = 2, /* rx, tx: one pair (no VIRTIO_NET_F_MQ) */
        .queue_max = VQ_MAX_SIZE,
        .config_size = CONFIG_LEN,
        .features = features,
        .config_read = config_read,
        .config_write = config_write,
        .activate = activate,
        .process_queue = process_queue,
        .reset = reset,
        .fds = fds,
        .event = event,
        .quiesce = quiesce,
        .state_size = sizeof(struct vnet_state),
        .save = save,
        .restore = restore,
        .update = update,
        .destroy = destroy,
};
