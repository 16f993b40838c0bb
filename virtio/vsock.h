/* virtio-vsock (spec 5.10) with Firecracker's hybrid host side: the guest's stream sockets are
 * joined to Unix sockets on the host. The pure packet helpers (vsock_pkt.c, fuzzed), the
 * connection table (vsock_conn.c) and the device (vsock.c), for the registry, the API and the
 * tests. */
#ifndef EMBER_VIRTIO_VSOCK_H
#define EMBER_VIRTIO_VSOCK_H

#include "device.h"

#define VSOCK_QUEUE_RX 0
#define VSOCK_QUEUE_TX 1
#define VSOCK_QUEUE_EV 2

#define VSOCK_HOST_CID    2
#define VSOCK_TYPE_STREAM 1
/* Operations (spec 5.10.6). */
enum {
    VSOCK_OP_INVALID,
    VSOCK_OP_REQUEST,
    VSOCK_OP_RESPONSE,
    VSOCK_OP_RST,
    VSOCK_OP_SHUTDOWN,
    VSOCK_OP_RW,
    VSOCK_OP_CREDIT_UPDATE,
    VSOCK_OP_CREDIT_REQUEST,
};
#define VSOCK_SHUTDOWN_RCV          1 /* the sender will receive no more */
#define VSOCK_SHUTDOWN_SEND         2 /* the sender will send no more */
#define VSOCK_EVENT_TRANSPORT_RESET 0

#define VSOCK_HDR_LEN         44
#define VSOCK_PKT_MAX         65536         /* payload of one packet, as Firecracker */
#define VSOCK_BUF_ALLOC       65536         /* what each connection buffers for the host socket */
#define VSOCK_CREDIT_THRESH   4096          /* a credit update once the guest sees less room */
#define VSOCK_CONNS_MAX       1023          /* connections per device, as Firecracker */
#define VSOCK_LINE_MAX        32            /* "CONNECT <port>\n", its newline included */
#define VSOCK_HOST_PORT_FIRST (1u << 30)    /* host-initiated connections' local ports: */
#define VSOCK_HOST_PORT_END   (1u << 31)    /* [2^30, 2^31), round robin, as Firecracker */
#define VSOCK_TIMEOUT_NS      2000000000ULL /* CONNECT line, shutdown's end */
/* The guest's answer to a host client's REQUEST (Firecracker: 2 s). A guest with no listener
 * answers RST at once; one that is busy (a restored guest faulting its memory in, a loaded
 * host) may need longer, and a client closed meanwhile would only have to retry. */
#define VSOCK_ANSWER_TIMEOUT_NS 10000000000ULL
/* After a restore, host clients wait (accepted, their CONNECT line unread) until the driver has
 * handled TRANSPORT_RESET, at most this long after the vCPUs resume: a REQUEST sent before
 * would be reset with the connections the snapshot held. */
#define VSOCK_RESET_GATE_NS 3000000000ULL

/* struct virtio_vsock_hdr (spec 5.10.6), little-endian on the wire, 44 bytes. */
struct vsock_hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
};

/* ---- packets (vsock_pkt.c): pure --------------------------------------------------------- */
/* vsock_hdr_read(raw, h) / vsock_hdr_write(h, raw): a header from / into its 44 bytes. */
void vsock_hdr_read(const uint8_t raw[VSOCK_HDR_LEN], struct vsock_hdr *h);
void vsock_hdr_write(const struct vsock_hdr *h, uint8_t raw[VSOCK_HDR_LEN]);

/* What the device does with a packet the guest sent. */
enum vsock_verdict {
    VSOCK_ACCEPT, /* a packet for the host: handled by its op */
    VSOCK_DROP,   /* not for us, or malformed: dropped and counted */
    VSOCK_RESET,  /* well-formed but unusable (not a stream, unknown op): answered with RST */
};
/* vsock_check(h, guest_cid, payload): the header of a packet with payload bytes after it in
 * the chain: from guest_cid to the host (CID 2), len at most VSOCK_PKT_MAX and inside the
 * chain, len 0 unless it is RW; then a stream socket and a known op. Returns the verdict. */
enum vsock_verdict vsock_check(const struct vsock_hdr *h, uint64_t guest_cid, uint64_t payload);
/* vsock_connect_parse(line, len, port): a host client's complete first line (len bytes, its
 * '\n' last): "CONNECT <port>\n", the keyword in any case, blanks around the port, a decimal
 * port of at most 32 bits. Returns 0, or -EINVAL for anything else. */
int vsock_connect_parse(const char *line, size_t len, uint32_t *port);
/* vsock_peer_free(buf_alloc, fwd_cnt, sent): Returns the bytes a peer that buffers buf_alloc
 * and has forwarded fwd_cnt of the sent bytes can still take (counters wrap at 2^32; a peer
 * claiming more than it was sent, or a buffer it overran, gives 0). */
uint32_t vsock_peer_free(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent);

/* ---- the device (vsock.c) ---------------------------------------------------------------- */
struct vsock;
/* Its snapshot state: the guest's CID and the next host port (so ports are not reused after a
 * restore, Firecracker PR #5688). Connections are never saved: a restore sends the guest
 * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, which drops them (listeners stay). */
struct vsock_state {
    uint64_t guest_cid;
    uint32_t next_port; /* in [VSOCK_HOST_PORT_FIRST, VSOCK_HOST_PORT_END) */
    uint32_t pad;       /* 0 */
};
_Static_assert(sizeof(struct vsock_state) == 16, "vsock_state layout");
extern const struct virtio_dev_ops vsock_ops;

/* vsock_listen(path, err, errlen): a non-blocking Unix stream socket bound to path and
 * listening (Firecracker binds at PUT /vsock: an existing path is refused). Returns the fd, or
 * -errno with a reason in err. */
int vsock_listen(const char *path, char *err, size_t errlen);
/* vsock_create(cfg, stats, err, errlen): a device listening on cfg->uds_path, counting into
 * stats (may be NULL). Returns the device or NULL with a reason in err. */
struct vsock *vsock_create(const struct vm_vsock *cfg, struct vm_stats *stats, char *err,
                           size_t errlen);
/* vsock_nconns(v): Returns the connections the device holds (tests). */
unsigned vsock_nconns(const struct vsock *v);

/* The device's fds (the fds op), in this order: its own epoll set (listener and connections)
 * and a timerfd (deadlines, a deferred reset, the wake-up after a restore). */
enum { VSOCK_FD_POLL, VSOCK_FD_TIMER, VSOCK_NFDS };

#endif
