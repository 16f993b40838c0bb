/* virtio-vsock's rx queue (spec 5.10.6.3): what connections owe the guest, control packets
 * first (REQUEST, RESPONSE, credit), then data read from host sockets straight into the
 * guest's buffers within the credit it gave, SHUTDOWN last; RSTs for packets of no connection
 * before all of them. The connections with packets wait in a ring, one packet each per turn;
 * without an rx buffer they wait for the driver's next rx kick, their sockets unwatched. */
#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blk.h" /* vblk_iov_slice */
#include "net.h" /* vnet_iov_copy_out */
#include "vsock_dev.h"

/* Pops an rx chain into v->chain. Returns 0, -EAGAIN (none), or -EINVAL (a chain that cannot
 * hold a header: a broken driver). */
static int pop_rx(struct vsock *v, struct vmmio_dev *t)
{
    int ret = vq_pop(vmmio_queue(t, VSOCK_QUEUE_RX), vmmio_mem(t), &v->chain);
    if (ret <= 0)
        return ret ? ret : -EAGAIN;
    return v->chain.in_len < VSOCK_HDR_LEN ? -EINVAL : 0;
}

/* Writes a packet's header into v->chain and returns it to the driver. */
static void put_pkt(struct vsock *v, struct vmmio_dev *t, uint32_t local, uint32_t peer,
                    uint16_t op, uint32_t flags, uint32_t len, uint32_t fwd_cnt)
{
    struct vsock_hdr h = {.src_cid = VSOCK_HOST_CID,
                          .dst_cid = v->st.guest_cid,
                          .src_port = local,
                          .dst_port = peer,
                          .len = len,
                          .type = VSOCK_TYPE_STREAM,
                          .op = op,
                          .flags = flags,
                          .buf_alloc = VSOCK_BUF_ALLOC,
                          .fwd_cnt = fwd_cnt};
    uint8_t raw[VSOCK_HDR_LEN];
    vsock_hdr_write(&h, raw);
    vnet_iov_copy_out(v->chain.iov + v->chain.nout, v->chain.niov - v->chain.nout, 0, raw,
                      VSOCK_HDR_LEN);
    vq_push(vmmio_queue(t, VSOCK_QUEUE_RX), v->chain.head, VSOCK_HDR_LEN + len);
}

static int conn_ctl(struct vsock *v, struct vmmio_dev *t, struct vconn *c, uint32_t bit,
                    uint16_t op, uint32_t flags)
{
    int ret = pop_rx(v, t);
    if (ret)
        return ret;
    c->pending &= ~bit;
    put_pkt(v, t, c->local_port, c->peer_port, op, flags, 0, c->fwd_cnt);
    c->fwd_told = c->fwd_cnt;
    return 1;
}

/* Data from c's host socket into one rx chain. Returns 1 (a packet sent), 0 (nothing to send
 * now), or pop_rx's error. */
static int conn_data(struct vsock *v, struct vmmio_dev *t, struct vconn *c)
{
    uint32_t credit = vsock_peer_free(c->peer_buf_alloc, c->peer_fwd_cnt, c->rx_cnt);
    if (!credit) {
        if (c->credit_asked)
            return 0; /* its CREDIT_UPDATE brings it back */
        c->credit_asked = true;
        return conn_ctl(v, t, c, 0, VSOCK_OP_CREDIT_REQUEST, 0);
    }
    int ret = pop_rx(v, t);
    if (ret)
        return ret;
    uint64_t room = v->chain.in_len - VSOCK_HDR_LEN, n = credit < room ? credit : room;
    if (n > VSOCK_PKT_MAX)
        n = VSOCK_PKT_MAX;
    struct iovec iov[VQ_MAX_SIZE];
    unsigned k = vblk_iov_slice(v->chain.iov + v->chain.nout, v->chain.niov - v->chain.nout,
                                VSOCK_HDR_LEN, n, iov);
    ssize_t got = 0;
    if (k)
        do
            got = readv(c->fd, iov, (int)k);
        while (got < 0 && errno == EINTR);
    if (got > 0) {
        put_pkt(v, t, c->local_port, c->peer_port, VSOCK_OP_RW, 0, (uint32_t)got, c->fwd_cnt);
        c->fwd_told = c->fwd_cnt;
        c->rx_cnt += (uint32_t)got;
        STAT_ADD(v->stats, vsock_rx_bytes, (uint64_t)got);
        return 1;
    }
    vq_unpop(vmmio_queue(t, VSOCK_QUEUE_RX));
    if (!k)
        return -EINVAL; /* a chain with a header's room only: not an rx buffer */
    c->readable = false;
    if (got == 0) { /* EOF: the host sends no more */
        vc_host_eof(v, c);
        return 0;
    }
    if (errno != EAGAIN) {
        STAT_ADD(v->stats, vsock_rx_read_fails, 1);
        vc_kill(v, c, true);
        return 0;
    }
    vc_rearm(v, c);
    return 0;
}

/* The next packet c owes the guest, in order: REQUEST/RESPONSE, credit, data, SHUTDOWN.
 * Returns 1 (one sent), 0 (none now), or pop_rx's error. */
static int conn_packet(struct vsock *v, struct vmmio_dev *t, struct vconn *c)
{
    static const struct {
        uint32_t bit;
        uint16_t op;
    } ctl[] = {{VP_REQUEST, VSOCK_OP_REQUEST},
               {VP_RESPONSE, VSOCK_OP_RESPONSE},
               {VP_CREDIT_UPDATE, VSOCK_OP_CREDIT_UPDATE},
               {VP_CREDIT_REQUEST, VSOCK_OP_CREDIT_REQUEST}};
    for (unsigned i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++)
        if (c->pending & ctl[i].bit)
            return conn_ctl(v, t, c, ctl[i].bit, ctl[i].op, 0);
    if (c->readable && c->state == VC_OPEN) {
        int ret = conn_data(v, t, c);
        if (ret || c->state == VC_FREE || !(c->pending & VP_SHUTDOWN))
            return ret;
    }
    if (c->pending & VP_SHUTDOWN) {
        uint32_t flags = VSOCK_SHUTDOWN_SEND | (c->host_gone ? VSOCK_SHUTDOWN_RCV : 0);
        int ret = conn_ctl(v, t, c, VP_SHUTDOWN, VSOCK_OP_SHUTDOWN, flags);
        if (ret == 1)
            vc_flush(v, c); /* ends it if the guest is done too */
        return ret;
    }
    return 0;
}

/* Sends what is owed: RSTs for packets of no connection, then the ready connections in turn,
 * one packet each per round, until the queue or the budget runs out. Returns 0 or -EINVAL. */
int vs_rx_run(struct vsock *v, struct vmmio_dev *t)
{
    unsigned sent = 0;
    int ret = 0;

    v->more = false;
    if (!vmmio_running(t))
        return 0;
    while (sent < VSOCK_RX_BUDGET && !ret) {
        if (v->rst_n) {
            if ((ret = pop_rx(v, t)))
                break;
            put_pkt(v, t, v->rst[v->rst_head].local, v->rst[v->rst_head].peer, VSOCK_OP_RST, 0, 0,
                    0);
            v->rst_head = (v->rst_head + 1) % VSOCK_RST_MAX;
            v->rst_n--;
            sent++;
            continue;
        }
        if (!v->ready_n)
            break;
        struct vconn *c = &v->conns[v->ready[v->ready_head]];
        v->ready_head = (v->ready_head + 1) % VSOCK_CONNS_MAX;
        v->ready_n--;
        c->in_ready = false;
        if (c->state == VC_FREE)
            continue;
        ret = conn_packet(v, t, c);
        bool went = ret == 1;
        if (went)
            sent++, ret = 0;
        /* Its turn again after the others': it sent one and may have more, or it waits for
         * a buffer. Nothing to send now (no credit, nothing read): out until something comes. */
        if (c->state != VC_FREE && (ret || (went && (c->pending || c->readable))))
            vc_ready(v, c);
    }
    if (sent)
        vmmio_used(t, VSOCK_QUEUE_RX);
    if (sent >= VSOCK_RX_BUDGET && (v->rst_n || v->ready_n))
        v->more = true;
    return ret == -EINVAL ? ret : 0;
}
