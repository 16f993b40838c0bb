/* virtio-net frames, the pure part: the vnet header both ways, what a guest's header may say
 * about its frame, the TAP offloads a driver's features allow, and copies to and from a
 * chain's buffers. Fuzzed: tests/fuzz/fuzz_virtio_net.c. */
#include <errno.h>
#include <linux/if_tun.h>
#include <string.h>

#include "net.h"

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void vnet_hdr_read(const uint8_t raw[VNET_HDR_LEN], struct vnet_hdr *h)
{
    h->flags = raw[0];
    h->gso_type = raw[1];
    h->hdr_len = le16(raw + 2);
    h->gso_size = le16(raw + 4);
    h->csum_start = le16(raw + 6);
    h->csum_offset = le16(raw + 8);
    h->num_buffers = le16(raw + 10);
}

void vnet_hdr_write(const struct vnet_hdr *h, uint8_t raw[VNET_HDR_LEN])
{
    raw[0] = h->flags;
    raw[1] = h->gso_type;
    put16(raw + 2, h->hdr_len);
    put16(raw + 4, h->gso_size);
    put16(raw + 6, h->csum_start);
    put16(raw + 8, h->csum_offset);
    put16(raw + 10, h->num_buffers);
}

static bool acked_bit(uint64_t acked, unsigned bit)
{
    return acked >> bit & 1;
}

int vnet_tx_check(const struct vnet_hdr *h, uint64_t frame_len, uint64_t acked)
{
    if (frame_len < VNET_ETH_MIN || frame_len > VNET_FRAME_MAX)
        return -EINVAL;
    if (h->flags & ~(VNET_HDR_F_NEEDS_CSUM | VNET_HDR_F_DATA_VALID))
        return -EINVAL;
    if (h->flags & VNET_HDR_F_NEEDS_CSUM) { /* spec 5.1.6.2: csum_start + csum_offset + 2 */
        if (!acked_bit(acked, VIRTIO_NET_F_CSUM) ||
            (uint64_t)h->csum_start + h->csum_offset + 2 > frame_len)
            return -EINVAL;
    }
    switch (h->gso_type) { /* no ECN: not offered */
    case VNET_HDR_GSO_NONE:
        return 0;
    case VNET_HDR_GSO_TCPV4:
        if (!acked_bit(acked, VIRTIO_NET_F_HOST_TSO4))
            return -EINVAL;
        break;
    case VNET_HDR_GSO_TCPV6:
        if (!acked_bit(acked, VIRTIO_NET_F_HOST_TSO6))
            return -EINVAL;
        break;
    case VNET_HDR_GSO_UDP: /* offered only where the TAP takes it (net.c) */
        if (!acked_bit(acked, VIRTIO_NET_F_HOST_UFO))
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
    /* A segmented frame: its checksum is the device's to fill in, segments of gso_size bytes
     * after hdr_len bytes of headers (spec 5.1.6.2.1). */
    if (!(h->flags & VNET_HDR_F_NEEDS_CSUM) || h->gso_size == 0 || h->hdr_len > frame_len)
        return -EINVAL;
    return 0;
}

unsigned vnet_tun_offload(uint64_t acked)
{
    unsigned f = 0;
    if (!acked_bit(acked, VIRTIO_NET_F_GUEST_CSUM))
        return 0; /* segmentation offloads need checksum offload (spec 5.1.3.1) */
    f |= TUN_F_CSUM;
    if (acked_bit(acked, VIRTIO_NET_F_GUEST_TSO4))
        f |= TUN_F_TSO4;
    if (acked_bit(acked, VIRTIO_NET_F_GUEST_TSO6))
        f |= TUN_F_TSO6;
    if (acked_bit(acked, VIRTIO_NET_F_GUEST_UFO))
        f |= TUN_F_UFO;
    return f;
}

uint64_t vnet_iov_copy_out(const struct iovec *iov, unsigned n, uint64_t skip, const void *src,
                           uint64_t len)
{
    const uint8_t *s = src;
    uint64_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        uint64_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        uint64_t take = l - skip < len - done ? l - skip : len - done;
        memcpy((uint8_t *)iov[i].iov_base + skip, s + done, take);
        done += take;
        skip = 0;
    }
    return done;
}

uint64_t vnet_iov_copy_in(const struct iovec *iov, unsigned n, void *dst, uint64_t len)
{
    uint8_t *d = dst;
    uint64_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        uint64_t take = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
        memcpy(d + done, iov[i].iov_base, take);
        done += take;
    }
    return done;
}
