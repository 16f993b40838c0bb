/* Inside virtio-vsock: the device and its connections, shared by vsock.c (queues, ops) and
 * vsock_conn.c (the connection table and the host sockets). Nothing else includes this. */
#ifndef EMBER_VIRTIO_VSOCK_DEV_H
#define EMBER_VIRTIO_VSOCK_DEV_H

#include "vsock.h"

#define VSOCK_HASH      2048 /* buckets of the (local port, peer port) table */
#define VSOCK_RST_MAX   128  /* RSTs owed for packets of no connection (then dropped, counted) */
#define VSOCK_RX_BUDGET 256  /* packets per wake-up: the loop's other fds get their turn */
#define VSOCK_RING      (VSOCK_BUF_ALLOC + VSOCK_LINE_MAX) /* the guest's 64 KiB and our "OK ...\n" */

enum vconn_state {
    VC_FREE,
    VC_LINE,       /* a host client: its CONNECT line is being read */
    VC_CONNECTING, /* the guest was sent REQUEST for a host client: RESPONSE or RST next */
    VC_OPEN,       /* joined: data both ways */
};

/* Control packets a connection owes the guest (sent before data, SHUTDOWN last). */
enum {
    VP_REQUEST = 1,
    VP_RESPONSE = 2,
    VP_CREDIT_UPDATE = 4,
    VP_CREDIT_REQUEST = 8,
    VP_SHUTDOWN = 16,
};

struct vconn {
    enum vconn_state state;
    int fd;                         /* the host's Unix socket */
    uint32_t local_port, peer_port; /* host side, guest side */
    int32_t hnext;                  /* next in its hash bucket, -1: none */
    uint32_t pending;               /* VP_* */
    uint32_t armed;                 /* what the epoll set is armed for (one-shot: 0 once fired) */
    bool in_table;                  /* in the hash (its peer port is known) */
    bool in_ready;                  /* in the ready ring */
    bool readable;                  /* the host socket has data (or EOF) not yet read */
    bool credit_asked;              /* CREDIT_REQUEST sent, no update since */
    bool host_eof;                  /* the host socket said EOF: SHUTDOWN owed or sent */
    bool host_gone;                 /* ... and its peer closed it (no half-close): RCV|SEND */
    bool wr_shut;                   /* shutdown(SHUT_WR) done on the host socket */
    uint32_t peer_shut;             /* VSOCK_SHUTDOWN_* the guest sent */
    uint32_t peer_buf_alloc, peer_fwd_cnt; /* the guest's, from its last packet */
    uint32_t rx_cnt;                       /* bytes sent to the guest */
    uint32_t in_cnt;                       /* bytes the guest sent */
    uint32_t fwd_cnt;                      /* of those, bytes written to the host socket */
    uint32_t fwd_told;                     /* fwd_cnt as the guest last heard it */
    uint8_t *buf; /* VSOCK_RING bytes for the host socket (allocated when needed) */
    uint32_t buf_head, buf_len;
    uint32_t own; /* bytes at the buffer's head that are the device's ("OK ..."), not the guest's */
    uint8_t line_len;
    char line[VSOCK_LINE_MAX];
    uint64_t deadline; /* monotonic ns; 0: none */
};

struct vsock {
    struct vsock_state st;
    struct vm_vsock cfg;
    struct vm_stats *stats;
    int listen_fd, ep_fd, timer_fd;
    int spare_fd;       /* held back for the moment the process runs out of fds (-1: spent) */
    bool listen_off;    /* the listener is not watched: no spare fd to refuse a client with */
    bool reset_pending; /* the driver reset the device: connections to close on the loop */
    bool event_pending; /* TRANSPORT_RESET owed on the event queue */
    bool kick_pending;  /* run every queue once at the next wake-up (after a restore) */
    bool more;          /* the rx budget ran out with packets left */
    /* Restored, and the driver has not yet shown it handled TRANSPORT_RESET (it re-posts the
     * event buffer: the event queue's avail index moves past reset_avail): host clients' lines
     * are left unread until then, or until gate_until (monotonic ns; UINT64_MAX until the
     * vCPUs resume). */
    bool reset_unacked;
    uint16_t reset_avail;
    uint64_t gate_until;
    uint64_t timer_due;
    unsigned ndeadlines; /* connections with a deadline */
    unsigned nconns;
    struct vconn conns[VSOCK_CONNS_MAX];
    int32_t hash[VSOCK_HASH];
    uint16_t ready[VSOCK_CONNS_MAX]; /* ring of connection indices with packets for the guest */
    unsigned ready_head, ready_n;
    struct {
        uint32_t local, peer;
    } rst[VSOCK_RST_MAX];
    unsigned rst_head, rst_n;
    struct ratelog log;
    struct vq_chain chain;
};

/* vs_rx_run(v, t): sends what is owed to the guest until the rx queue or the budget runs
 * out (vsock_rx.c; v->more: packets left over). Returns 0, or -EINVAL for an rx chain that
 * cannot hold a packet. */
int vs_rx_run(struct vsock *v, struct vmmio_dev *t);

/* ---- the connection table and host sockets (vsock_conn.c) -------------------------------- */
/* vc_find(v, local, peer): Returns the connection with those ports, or NULL. */
struct vconn *vc_find(struct vsock *v, uint32_t local, uint32_t peer);
/* vc_new(v, fd, state, local, peer): a connection on host socket fd (taken), in the table when
 * state is not VC_LINE. Returns it, or NULL when the table is full (fd closed, counted). */
struct vconn *vc_new(struct vsock *v, int fd, enum vconn_state state, uint32_t local,
                     uint32_t peer);
/* vc_kill(v, c, rst): closes the connection; with rst the guest is sent an RST for it. */
void vc_kill(struct vsock *v, struct vconn *c, bool rst);
/* vc_kill_all(v): closes every connection, no packets (a reset device). */
void vc_kill_all(struct vsock *v);
/* vc_rst(v, local, peer): queues an RST for ports with no connection (dropped when full). */
void vc_rst(struct vsock *v, uint32_t local, uint32_t peer);
/* vc_ready(v, c): c has packets for the guest: queued for the rx queue. */
void vc_ready(struct vsock *v, struct vconn *c);
/* vc_rearm(v, c): the epoll set watches c's socket for what c can use now. */
void vc_rearm(struct vsock *v, struct vconn *c);
/* vc_set_deadline(v, c, ns): sets or (0) clears c's deadline. */
void vc_set_deadline(struct vsock *v, struct vconn *c, uint64_t ns);
/* vc_host_event(v, c, events): c's host socket is ready (EPOLLIN/OUT/HUP/ERR). */
void vc_host_event(struct vsock *v, struct vconn *c, uint32_t events);
/* vc_accept(v, running): takes host clients from the listener (refused while !running, the
 * table is full or the process has no fd left: never left waiting in the backlog). */
void vc_accept(struct vsock *v, bool running);
/* vc_to_host(v, c, iov, n, len): len payload bytes of an RW packet for c's host socket.
 * Returns 0, or -1 when c was killed (overran its credit, or the socket failed). */
int vc_to_host(struct vsock *v, struct vconn *c, const struct iovec *iov, unsigned n, uint32_t len);
/* vc_open(v, c): the guest accepted host client c: joined, "OK <host port>\n" queued for the
 * client. Returns 0, or -1 when c was killed (out of memory). */
int vc_open(struct vsock *v, struct vconn *c);
/* vc_flush(v, c): writes buffered bytes to the host socket; finishes a shut connection. */
void vc_flush(struct vsock *v, struct vconn *c);
/* vc_guest_shutdown(v, c, flags): the guest sent SHUTDOWN with flags. */
void vc_guest_shutdown(struct vsock *v, struct vconn *c, uint32_t flags);
/* vc_deadlines(v, now): kills the connections whose deadline passed. Returns the earliest
 * deadline left (0: none). */
uint64_t vc_deadlines(struct vsock *v, uint64_t now);
/* vc_credit_check(v, c): owes the guest a credit update once its view of c's free buffer
 * falls below VSOCK_CREDIT_THRESH. */
void vc_credit_check(struct vsock *v, struct vconn *c);
/* vc_host_eof(v, c): c's host socket read EOF: SHUTDOWN owed to the guest, SEND only for a
 * half-closed socket, RCV|SEND (and 2 s for the guest's RST) for one its peer closed. */
void vc_host_eof(struct vsock *v, struct vconn *c);
/* vc_spare(v): holds the spare fd again if it was spent, and watches the listener again.
 * Returns true if the spare is held. */
bool vc_spare(struct vsock *v);
/* vc_host_port(v): Returns the next free host port (round robin from st.next_port). */
uint32_t vc_host_port(struct vsock *v);

#endif
