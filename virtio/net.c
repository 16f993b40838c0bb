/* virtio-net (spec 5.1): one rx and one tx queue on a host TAP device opened with a 12-byte
 * vnet header, so the guest's checksum and segmentation offloads pass through to the host
 * kernel. This file: the ops, the set-up and interrupt moderation; the data paths are in
 * net_io.c. Everything runs on the event loop: the TAP is watched for EPOLLIN while the guest has
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

#include "net_dev.h"

#define CONFIG_LEN 8 /* mac, status (spec 5.1.4) */

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

/* TUNSETOFFLOAD for what the driver acknowledged, once on the loop after activate: the TAP
 * then hands over only frames the driver can take. */
static void apply_offload(struct vnet *n)
{
    if (!n->offload_pending)
        return;
    n->offload_pending = false;
    if (n->is_tap && ioctl(n->tap_fd, TUNSETOFFLOAD, (unsigned long)vnet_tun_offload(n->acked)) < 0)
        vnet_tap_error(n, "TUNSETOFFLOAD", errno);
}

/* ---- interrupt moderation (irqmod.c), per queue, as virtio-blk ----------------------------
 * tx: after answering frames the device may hold the interrupt for a round while kicks are
 * suppressed (vq_set_quiet) and the ring is polled at the round's end; rx: it may hold the
 * interrupt while the TAP keeps delivering, and raises it at once when the guest's buffers run
 * out (the driver refills only when told). A queue's turnaround is measured from its interrupt
 * to the next frames it carries. */

static int run_q(struct vnet *n, struct vmmio_dev *t, unsigned qi, unsigned *done)
{
    return qi == VNET_QUEUE_TX ? vnet_tx_run(n, t, done) : vnet_rx_run(n, t, done);
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
        ret = vnet_tx_run(n, t, &done);
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
    apply_offload(n);
    return run(n, t, qi); /* rx: the driver added buffers, a held frame may fit now */
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
    vnet_arm_timer(n, 0);
    hold_cancel(n, VNET_QUEUE_RX);
    hold_cancel(n, VNET_QUEUE_TX);
}

static int event(void *dev, struct vmmio_dev *t, unsigned which)
{
    struct vnet *n = dev;
    uint64_t v;

    if (which != VNET_FD_TAP) {
        int fd = which == VNET_FD_RATE ? n->timer_fd : n->hold[which - VNET_FD_HOLD_RX].fd;
        if (read(fd, &v, sizeof(v)) < 0) {
            /* spurious wake-up */
        }
    }
    if (which == VNET_FD_RATE) {
        n->timer_due = 0;
        n->rx_throttled = n->tx_throttled = false;
    }
    if (!vmmio_running(t)) {
        if (which == VNET_FD_HOLD_RX || which == VNET_FD_HOLD_TX)
            hold_cancel(n, which - VNET_FD_HOLD_RX);
        vnet_rewatch(n, t);
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
    vnet_arm_timer(n, 0); /* what waits is charged again against the new buckets */
    n->rx_throttled = n->tx_throttled = false;
    if (!vmmio_running(t)) {
        vnet_rewatch(n, t);
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
