/* virtio-net (spec 5.1) on a host TAP device: the pure frame helpers (net_frame.c, fuzzed) and
 * the device (net.c), for the device set (registry.c), the API and the tests. */
#ifndef EMBER_VIRTIO_NET_H
#define EMBER_VIRTIO_NET_H

#include "device.h"

/* Feature bits (spec 5.1.3). */
#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_UFO  10
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_UFO   14
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16

#define VIRTIO_NET_S_LINK_UP 1

/* struct virtio_net_hdr (spec 5.1.6), the VERSION_1 layout with num_buffers: 12 bytes, also
 * the TAP's vnet header (TUNSETVNETHDRSZ). */
#define VNET_HDR_LEN          12
#define VNET_HDR_F_NEEDS_CSUM 1
#define VNET_HDR_F_DATA_VALID 2
#define VNET_HDR_GSO_NONE     0
#define VNET_HDR_GSO_TCPV4    1
#define VNET_HDR_GSO_UDP      3
#define VNET_HDR_GSO_TCPV6    4
#define VNET_HDR_GSO_ECN      0x80
#define VNET_FRAME_MAX        65550 /* an Ethernet frame: 64 KiB of IP plus its header */
#define VNET_BUF_MAX          (VNET_HDR_LEN + VNET_FRAME_MAX)
#define VNET_ETH_MIN          14 /* destination, source, EtherType */
#define VNET_QUEUE_RX         0
#define VNET_QUEUE_TX         1

struct vnet_hdr {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers;
};

/* ---- frames (net_frame.c): pure -------------------------------------------------------- */
/* vnet_hdr_read(raw, h): decodes a header from its 12 little-endian bytes. */
void vnet_hdr_read(const uint8_t raw[VNET_HDR_LEN], struct vnet_hdr *h);
/* vnet_hdr_write(h, raw): encodes a header. */
void vnet_hdr_write(const struct vnet_hdr *h, uint8_t raw[VNET_HDR_LEN]);
/* vnet_tx_check(h, frame_len, acked): checks the header of a frame of frame_len bytes (after
 * the header) the guest sent, against the frame and the features it acknowledged: known flags
 * and GSO type, a GSO type only with its HOST_TSO/HOST_UFO feature and a non-zero gso_size,
 * checksum offsets inside the frame only with CSUM, the frame at least an Ethernet header and at
 * most VNET_FRAME_MAX. Returns 0 or -EINVAL. */
int vnet_tx_check(const struct vnet_hdr *h, uint64_t frame_len, uint64_t acked);
/* vnet_tun_offload(acked): Returns the TUNSETOFFLOAD flags (TUN_F_*) matching what the driver
 * can receive: GUEST_CSUM → TUN_F_CSUM, GUEST_TSO4/6 → TUN_F_TSO4/6, GUEST_UFO → TUN_F_UFO
 * (the last three with GUEST_CSUM only). */
unsigned vnet_tun_offload(uint64_t acked);
/* vnet_iov_copy_out(iov, n, skip, src, len): copies len bytes of src into the iovecs from byte
 * skip on. Returns the bytes copied (less when the iovecs end). */
uint64_t vnet_iov_copy_out(const struct iovec *iov, unsigned n, uint64_t skip, const void *src,
                           uint64_t len);
/* vnet_iov_copy_in(iov, n, dst, len): copies up to len bytes from the iovecs into dst.
 * Returns the bytes copied. */
uint64_t vnet_iov_copy_in(const struct iovec *iov, unsigned n, void *dst, uint64_t len);

/* ---- the device (net.c) ---------------------------------------------------------------- */
struct vnet;
/* Its snapshot state (the first member of struct vnet): the MAC the guest was given. The queues
 * and features are the transport's; a frame held from the TAP is not kept (a lost frame). */
struct vnet_state {
    uint8_t mac[6];
    uint8_t has_mac; /* 0 or 1 */
    uint8_t pad;     /* 0 */
};
_Static_assert(sizeof(struct vnet_state) == 8, "vnet_state layout");
extern const struct virtio_dev_ops vnet_ops;

/* vnet_tap_open(name, err, errlen): opens TAP interface name (it must exist) with IFF_TAP,
 * IFF_NO_PI and IFF_VNET_HDR, non-blocking, a 12-byte vnet header and no offloads yet.
 * Returns the fd, or -errno with a reason in err. */
int vnet_tap_open(const char *name, char *err, size_t errlen);
/* vnet_create(cfg, stats, err, errlen): a device on cfg's TAP, counting into stats (may be
 * NULL). Returns the device or NULL with a reason in err. */
struct vnet *vnet_create(const struct vm_net *cfg, struct vm_stats *stats, char *err,
                         size_t errlen);
/* vnet_create_fd(cfg, fd, stats, err, errlen): the same on an open fd (taken, also on
 * failure), a TAP or a stand-in (unit tests: a datagram socket carrying header and frame).
 * Returns the device or NULL. */
struct vnet *vnet_create_fd(const struct vm_net *cfg, int fd, struct vm_stats *stats, char *err,
                            size_t errlen);

/* PATCH /network-interfaces/{id} (the update op): NULL buckets are unchanged. */
struct vnet_update {
    const struct vm_bucket *rx_bw, *rx_ops, *tx_bw, *tx_ops;
};

/* The device's fds (the fds op), in this order: the TAP, the rate limiters' timer, and each
 * queue's interrupt-moderation round (VNET_FD_HOLD_RX + queue index). */
enum { VNET_FD_TAP, VNET_FD_RATE, VNET_FD_HOLD_RX, VNET_FD_HOLD_TX, VNET_NFDS };

#endif
