/* virtio-net's data paths (net.c has the ops, interrupt moderation and set-up): rx from the
 * TAP into the guest's buffers, one chain or merged ones; tx from the guest's chains to the TAP
 * in one writev each; the token buckets on both and the TAP's failures. Back-pressure, never a
 * drop: a frame the rx queue has no room for stays in the device and the TAP is no longer
 * watched until the driver adds buffers; a tx chain the TAP refuses (EAGAIN) or the bucket holds
 * back goes back to the ring. */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "blk.h" /* vblk_iov_slice */
#include "net_dev.h"

#define RX_BUDGET 64 /* frames per wake-up: the loop's other fds get their turn */
#define LOG_NS    (10 * 1000000000ULL)

void vnet_tap_error(struct vnet *n, const char *what, int err)
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
void vnet_rewatch(struct vnet *n, struct vmmio_dev *t)
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

void vnet_arm_timer(struct vnet *n, uint64_t ns)
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
int vnet_rx_run(struct vnet *n, struct vmmio_dev *t, unsigned *done)
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
                    vnet_tap_error(n, "read", errno);
                }
                break;
            }
            if ((size_t)got < VNET_HDR_LEN + VNET_ETH_MIN) {
                STAT_ADD(n->stats, net_rx_fails, 1);
                continue;
            }
            n->rx_len = (size_t)got;
            n->rx_pending = true;
        }
        uint64_t len = n->rx_len - VNET_HDR_LEN;
        uint64_t wait = charge(&n->rx_bw, &n->rx_ops, len);
        if (wait) {
            n->rx_throttled = true;
            STAT_ADD(n->stats, net_rx_rate_limiter_throttled, 1);
            vnet_arm_timer(n, wait);
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
    vnet_rewatch(n, t);
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
    uint64_t wait = charge(&n->tx_bw, &n->tx_ops, flen);
    if (wait) {
        vq_unpop(q);
        n->tx_throttled = true;
        STAT_ADD(n->stats, net_tx_rate_limiter_throttled, 1);
        vnet_arm_timer(n, wait);
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
        vnet_tap_error(n, "write", errno);
    } else {
        STAT_ADD(n->stats, net_tx_bytes, flen);
        STAT_ADD(n->stats, net_tx_packets, 1);
    }
    vq_push(q, c->head, 0);
    return 1;
}

/* Sends until the ring is empty, the bucket empty or the TAP full, adding the chains answered
 * to *done; no interrupt (the caller's: moderated). Returns 0 or -EINVAL. */
int vnet_tx_run(struct vnet *n, struct vmmio_dev *t, unsigned *done)
{
    struct vq *q = vmmio_queue(t, VNET_QUEUE_TX);
    int ret = 0;

    while (!n->tx_blocked && !n->tx_throttled) {
        ret = vq_pop(q, vmmio_mem(t), &n->chain);
        if (ret <= 0)
            break;
        if (!tx_one(n, t, &n->chain))
            break;
        (*done)++;
    }
    vnet_rewatch(n, t);
    return ret < 0 ? ret : 0;
}
