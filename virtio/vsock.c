/* virtio-vsock (spec 5.10): three queues (rx, tx, event), stream sockets only, the host side
 * Firecracker's hybrid Unix sockets (vsock_conn.c). The tx queue carries the guest's packets,
 * each handled at once (a connection's data goes to its host socket or waits in its 64 KiB
 * buffer, which the credit the guest was given bounds: a guest that overruns it is reset). The
 * rx queue (vsock_rx.c) carries what connections owe the guest. The event queue carries
 * TRANSPORT_RESET after a restore. This file: tx, the event queue, the ops.
 *
 * Everything runs on the event loop under the transport's lock; sockets are non-blocking.
 * A driver's reset (vCPU thread, no I/O) only marks the connections for closing and arms the
 * timer; the loop closes them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "blk.h" /* vblk_iov_slice */
#include "net.h" /* vnet_iov_copy_in/out */
#include "vsock_dev.h"

#define CONFIG_LEN  8   /* guest_cid (spec 5.10.4) */
#define TX_BUDGET   256 /* guest packets per wake-up */
#define POLL_EVENTS 64  /* host socket events per wake-up (the rest: at the next) */
/* The fd limit a full table wants: 1023 host sockets besides the rest of the VMM's fds (the
 * jailer's default no-file limit). */
#define NOFILE_WANTED 2048

static uint64_t features(void *dev)
{
    (void)dev;
    return 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX;
}

static void config_read(void *dev, uint64_t off, uint8_t *data, uint32_t len)
{
    const struct vsock *v = dev;
    uint8_t cfg[CONFIG_LEN];
    for (unsigned i = 0; i < CONFIG_LEN; i++)
        cfg[i] = (uint8_t)(v->st.guest_cid >> (8 * i));
    memcpy(data, cfg + off, len); /* inside config_size: the transport checked */
}

/* Arms the timer for ns from now (0: disarmed), unless it is armed for then already. */
static void arm_timer(struct vsock *v, uint64_t ns)
{
    uint64_t due = ns ? clock_ns() + ns : 0;
    if (due == v->timer_due || (ns && v->timer_due && v->timer_due <= due))
        return;
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    if (timerfd_settime(v->timer_fd, 0, &its, NULL) < 0)
        log_warn("vsock %s: timerfd: %s", v->cfg.uds_path, strerror(errno));
    v->timer_due = due;
}

/* After every op: the timer for the earliest deadline, or at once for work left over. */
static void schedule(struct vsock *v)
{
    if (v->reset_pending || v->kick_pending || v->more) {
        arm_timer(v, 1);
        return;
    }
    uint64_t now = clock_ns();
    uint64_t next = v->reset_unacked && v->gate_until != UINT64_MAX ? v->gate_until : 0;
    for (unsigned i = 0; i < VSOCK_CONNS_MAX && v->ndeadlines; i++)
        if (v->conns[i].state != VC_FREE && v->conns[i].deadline &&
            (!next || v->conns[i].deadline < next))
            next = v->conns[i].deadline;
    if (!next && v->timer_due) {
        arm_timer(v, 0);
        return;
    }
    if (next)
        arm_timer(v, next > now ? next - now : 1);
}

/* ---- tx: the guest's packets -------------------------------------------------------------- */

/* A guest connecting to host port h->dst_port: joined to <uds_path>_<port>, or reset. */
static void guest_connect(struct vsock *v, const struct vsock_hdr *h)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", v->cfg.uds_path, h->dst_port);
    int fd = -1;
    if (n > 0 && (size_t)n < sizeof(sa.sun_path))
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* Non-blocking: a listener with a full backlog (EAGAIN) is refused as an absent one. */
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    struct vconn *c = fd >= 0 ? vc_new(v, fd, VC_OPEN, h->dst_port, h->src_port) : NULL;
    if (!c) {
        vc_rst(v, h->dst_port, h->src_port);
        return;
    }
    c->peer_buf_alloc = h->buf_alloc;
    c->peer_fwd_cnt = h->fwd_cnt;
    c->pending |= VP_RESPONSE;
    vc_ready(v, c);
    vc_rearm(v, c);
}

/* A packet for connection c (known, its credit fields taken). */
static void conn_op(struct vsock *v, struct vconn *c, const struct vsock_hdr *h,
                    const struct vq_chain *ch)
{
    struct iovec iov[VQ_MAX_SIZE];

    switch (h->op) {
    case VSOCK_OP_RESPONSE:
        if (c->state != VC_CONNECTING)
            break;
        vc_set_deadline(v, c, 0);
        if (vc_open(v, c) == 0)
            vc_flush(v, c);
        return;
    case VSOCK_OP_RST: /* the guest ended it (or had no listener for a host client) */
        vc_kill(v, c, false);
        return;
    case VSOCK_OP_SHUTDOWN:
        if (c->state != VC_OPEN)
            break;
        vc_guest_shutdown(v, c, h->flags);
        return;
    case VSOCK_OP_RW:
        if (c->state != VC_OPEN || c->peer_shut & VSOCK_SHUTDOWN_SEND)
            break;
        if (h->len) {
            unsigned k = vblk_iov_slice(ch->iov, ch->nout, VSOCK_HDR_LEN, h->len, iov);
            vc_to_host(v, c, iov, k, h->len);
        }
        return;
    case VSOCK_OP_CREDIT_UPDATE:
        return;
    case VSOCK_OP_CREDIT_REQUEST:
        c->pending |= VP_CREDIT_UPDATE;
        vc_ready(v, c);
        return;
    default: /* REQUEST for a connection that exists */
        break;
    }
    vc_kill(v, c, true); /* an op the connection's state does not allow */
}

static void tx_packet(struct vsock *v, const struct vq_chain *ch)
{
    uint8_t raw[VSOCK_HDR_LEN];
    struct vsock_hdr h;

    if (vnet_iov_copy_in(ch->iov, ch->nout, raw, sizeof(raw)) < sizeof(raw)) {
        STAT_ADD(v->stats, vsock_tx_malformed_packets, 1);
        return;
    }
    vsock_hdr_read(raw, &h); /* copied once: the guest may rewrite its buffer meanwhile */
    enum vsock_verdict verdict = vsock_check(&h, v->st.guest_cid, ch->out_len - VSOCK_HDR_LEN);
    if (verdict == VSOCK_DROP) {
        STAT_ADD(v->stats, vsock_tx_malformed_packets, 1);
        return;
    }
    struct vconn *c = vc_find(v, h.dst_port, h.src_port);
    if (verdict == VSOCK_RESET || (!c && h.op != VSOCK_OP_REQUEST)) {
        if (c)
            vc_kill(v, c, true);
        else if (h.op != VSOCK_OP_RST)
            vc_rst(v, h.dst_port, h.src_port);
        return;
    }
    if (!c) {
        guest_connect(v, &h);
        return;
    }
    c->peer_buf_alloc = h.buf_alloc;
    c->peer_fwd_cnt = h.fwd_cnt;
    conn_op(v, c, &h, ch);
    if (c->state == VC_OPEN && c->readable &&
        vsock_peer_free(c->peer_buf_alloc, c->peer_fwd_cnt, c->rx_cnt)) {
        c->credit_asked = false;
        vc_ready(v, c);
    }
    if (c->state == VC_OPEN)
        vc_rearm(v, c);
}

static int tx_run(struct vsock *v, struct vmmio_dev *t)
{
    struct vq *q = vmmio_queue(t, VSOCK_QUEUE_TX);
    unsigned done = 0;
    int ret = 0;

    while (done < TX_BUDGET && (ret = vq_pop(q, vmmio_mem(t), &v->chain)) > 0) {
        uint16_t head = v->chain.head;
        tx_packet(v, &v->chain);
        vq_push(q, head, 0);
        done++;
    }
    if (done)
        vmmio_used(t, VSOCK_QUEUE_TX);
    if (done == TX_BUDGET)
        v->more = true; /* the ring was not seen empty: kicks stay off until it is */
    return ret < 0 ? ret : 0;
}

/* ---- the event queue -------------------------------------------------------------------- */

static int ev_run(struct vsock *v, struct vmmio_dev *t)
{
    struct vq *q = vmmio_queue(t, VSOCK_QUEUE_EV);
    if (!v->event_pending)
        return 0;
    int ret = vq_pop(q, vmmio_mem(t), &v->chain);
    if (ret <= 0)
        return ret; /* none: the driver's next buffer on this queue kicks */
    uint8_t id[4] = {VSOCK_EVENT_TRANSPORT_RESET, 0, 0, 0};
    if (v->chain.in_len < sizeof(id))
        return -EINVAL;
    vnet_iov_copy_out(v->chain.iov + v->chain.nout, v->chain.niov - v->chain.nout, 0, id,
                      sizeof(id));
    /* The driver re-posts the buffer once it has handled the event: that kick opens the gate.
     * The index is read before the push, so that no re-post can be taken for the baseline. */
    v->reset_avail = vq_avail_idx(q);
    vq_push(q, v->chain.head, sizeof(id));
    v->event_pending = false;
    vq_kick_on_more(q);
    vmmio_used(t, VSOCK_QUEUE_EV);
    return 0;
}

/* Opens the gate a restore closed once the driver re-posted the event buffer or the time is
 * up: the waiting host clients' lines are read from now, each with its 2 s. */
static void gate_check(struct vsock *v, struct vmmio_dev *t)
{
    if (!v->reset_unacked)
        return;
    uint64_t now = clock_ns();
    bool acked =
            !v->event_pending && vq_avail_idx(vmmio_queue(t, VSOCK_QUEUE_EV)) != v->reset_avail;
    if (!acked && now < v->gate_until)
        return;
    v->reset_unacked = false;
    for (unsigned i = 0; i < VSOCK_CONNS_MAX; i++) {
        struct vconn *c = &v->conns[i];
        if (c->state != VC_LINE)
            continue;
        vc_set_deadline(v, c, now + VSOCK_TIMEOUT_NS);
        vc_rearm(v, c);
    }
}

/* ---- ops -------------------------------------------------------------------------------- */

static int activate(void *dev, struct vmmio_dev *t)
{
    (void)dev, (void)t; /* the listener already runs; host clients are taken from now on */
    return 0;
}

/* The work a reset left for the loop: closing the connections. */
static void settle(struct vsock *v)
{
    if (!v->reset_pending)
        return;
    v->reset_pending = false;
    vc_kill_all(v);
}

/* Every queue once: the event, the guest's packets, then the answers. */
static int run_all(struct vsock *v, struct vmmio_dev *t)
{
    int ret = ev_run(v, t);
    if (!ret)
        ret = tx_run(v, t);
    if (!ret)
        ret = vs_rx_run(v, t);
    return ret;
}

static int process_queue(void *dev, struct vmmio_dev *t, unsigned qi)
{
    struct vsock *v = dev;
    int ret;
    settle(v);
    if (qi == VSOCK_QUEUE_TX) {
        ret = tx_run(v, t);
        if (!ret)
            ret = vs_rx_run(v, t);
    } else if (qi == VSOCK_QUEUE_RX) {
        ret = vs_rx_run(v, t);
    } else {
        ret = ev_run(v, t);
    }
    gate_check(v, t);
    schedule(v);
    return ret;
}

/* vCPU thread: no I/O; the loop closes the connections (settle) at the timer. */
static void reset(void *dev, struct vmmio_dev *t)
{
    struct vsock *v = dev;
    (void)t;
    v->reset_pending = true;
    v->event_pending = v->kick_pending = v->more = v->reset_unacked = false;
    arm_timer(v, 1);
}

static int event(void *dev, struct vmmio_dev *t, unsigned which)
{
    struct vsock *v = dev;
    bool running = vmmio_running(t);
    int ret = 0;

    settle(v);
    if (which == VSOCK_FD_TIMER) {
        uint64_t n;
        if (read(v->timer_fd, &n, sizeof(n)) < 0) {
            /* spurious wake-up */
        }
        v->timer_due = 0;
        if (v->ndeadlines)
            vc_deadlines(v, clock_ns());
        if (running && v->kick_pending) {
            v->kick_pending = false;
            ret = run_all(v, t);
        } else if (running) {
            ret = tx_run(v, t);
            if (!ret)
                ret = vs_rx_run(v, t);
        }
    } else {
        struct epoll_event evs[POLL_EVENTS];
        int n = epoll_wait(v->ep_fd, evs, POLL_EVENTS, 0);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) {
                vc_accept(v, running);
                continue;
            }
            struct vconn *c = &v->conns[evs[i].data.u64 - 1];
            if (c->state != VC_FREE)
                vc_host_event(v, c, evs[i].events);
        }
        if (running)
            ret = vs_rx_run(v, t);
    }
    gate_check(v, t);
    schedule(v);
    return ret;
}

/* The gate's time counts from the resume (a VM loaded paused has not run meanwhile). */
static void resumed(void *dev, struct vmmio_dev *t)
{
    struct vsock *v = dev;
    (void)t;
    if (!v->reset_unacked)
        return;
    v->gate_until = clock_ns() + VSOCK_RESET_GATE_NS;
    schedule(v);
}

/* Nothing is held popped or in flight between ops: a snapshot can be taken at any time. */
static int quiesce(void *dev, struct vmmio_dev *t)
{
    (void)dev, (void)t;
    return 0;
}

static int save(const void *dev, struct vmmio_dev *t, void *state)
{
    const struct vsock *v = dev;
    (void)t;
    memcpy(state, &v->st, sizeof(v->st));
    return 0;
}

/* The transport and queues are restored already. Connections do not survive a snapshot: the
 * guest is told with TRANSPORT_RESET (it drops its connections, keeps its listeners and
 * re-reads its CID), and every queue is run once at the first wake-up, so that what the guest
 * queued before the snapshot is answered (Firecracker #4736, #5969). Host clients that come
 * before the driver handled the reset wait for it (gate_check): their connections would be
 * reset with the old ones. */
static int restore(void *dev, struct vmmio_dev *t, const void *state, char *err, size_t errlen)
{
    struct vsock *v = dev;
    struct vsock_state st;
    memcpy(&st, state, sizeof(st));
    if (st.guest_cid < 3 || st.guest_cid >= UINT32_MAX || st.pad ||
        st.next_port < VSOCK_HOST_PORT_FIRST || st.next_port >= VSOCK_HOST_PORT_END)
        return errf(err, errlen, -EINVAL, "vsock: a malformed device state (guest CID %llu)",
                    (unsigned long long)st.guest_cid);
    if (st.guest_cid != v->cfg.guest_cid) /* the configuration section says which CID */
        return errf(err, errlen, -EINVAL,
                    "vsock: the device state's guest CID %llu is not the configured %u",
                    (unsigned long long)st.guest_cid, v->cfg.guest_cid);
    vc_kill_all(v);
    v->st = st;
    v->reset_pending = v->more = false;
    v->event_pending = v->kick_pending = v->reset_unacked = vmmio_running(t);
    v->gate_until = UINT64_MAX; /* the vCPUs are paused: its time starts when they run */
    arm_timer(v, 1);
    return 0;
}

static unsigned fds(const void *dev, struct virtio_fd out[VIRTIO_MAX_DEV_FDS])
{
    const struct vsock *v = dev;
    out[VSOCK_FD_POLL] = (struct virtio_fd){v->ep_fd, EPOLLIN};
    out[VSOCK_FD_TIMER] = (struct virtio_fd){v->timer_fd, EPOLLIN};
    return VSOCK_NFDS;
}

static void destroy(void *dev)
{
    struct vsock *v = dev;
    if (!v)
        return;
    if (v->ep_fd >= 0)
        vc_kill_all(v);
    for (unsigned i = 0; i < VSOCK_CONNS_MAX; i++)
        free(v->conns[i].buf);
    if (v->listen_fd >= 0)
        close(v->listen_fd);
    if (v->spare_fd >= 0)
        close(v->spare_fd);
    if (v->ep_fd >= 0)
        close(v->ep_fd);
    if (v->timer_fd >= 0)
        close(v->timer_fd);
    free(v);
}

/* A soft fd limit of 1024 (the usual default outside the jailer) runs out before the table
 * does: raised toward the hard limit, which only the jailer or root sets. What is still short
 * is said once; the table then ends at the fd limit, its clients refused (vc_accept). */
static void fd_room(const struct vsock *v)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= NOFILE_WANTED)
        return;
    rlim_t want = rl.rlim_max < NOFILE_WANTED ? rl.rlim_max : NOFILE_WANTED;
    if (want > rl.rlim_cur) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            want = 0;
    }
    if (want < NOFILE_WANTED)
        log_warn("vsock %s: the fd limit (RLIMIT_NOFILE %llu, hard %llu) is below %d: fewer "
                 "than %d connections fit, the rest are refused",
                 v->cfg.uds_path, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                 NOFILE_WANTED, VSOCK_CONNS_MAX);
}

unsigned vsock_nconns(const struct vsock *v)
{
    return v->nconns;
}

struct vsock *vsock_create(const struct vm_vsock *cfg, struct vm_stats *stats, char *err,
                           size_t errlen)
{
    struct vsock *v = calloc(1, sizeof(*v));
    if (!v) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    v->cfg = *cfg;
    v->stats = stats;
    v->st.guest_cid = cfg->guest_cid;
    v->st.next_port = VSOCK_HOST_PORT_FIRST;
    v->ep_fd = v->timer_fd = v->spare_fd = -1;
    for (unsigned i = 0; i < VSOCK_HASH; i++)
        v->hash[i] = -1;
    v->listen_fd = vsock_listen(cfg->uds_path, err, errlen);
    if (v->listen_fd < 0)
        goto fail;
    v->ep_fd = epoll_create1(EPOLL_CLOEXEC);
    v->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (v->ep_fd < 0 || v->timer_fd < 0 ||
        epoll_ctl(v->ep_fd, EPOLL_CTL_ADD, v->listen_fd, &ev) < 0) {
        errf(err, errlen, -errno, "vsock: epoll/timerfd: %s", strerror(errno));
        goto fail;
    }
    fd_room(v);
    if (!vc_spare(v)) {
        errf(err, errlen, -errno, "vsock: a spare socket: %s", strerror(errno));
        goto fail;
    }
    return v;
fail:
    destroy(v);
    return NULL;
}

const struct virtio_dev_ops vsock_ops = {
        .name = "vsock",
        .device_id = VIRTIO_ID_VSOCK,
        .nqueues = 3, /* rx, tx, event */
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
        .resumed = resumed,
        .state_size = sizeof(struct vsock_state),
        .save = save,
        .restore = restore,
        .destroy = destroy,
};
