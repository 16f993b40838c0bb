/* virtio-vsock packet helpers (spec 5.10.6), pure: header encoding, the checks a guest's
 * packet passes before the device acts on it, the host client's CONNECT line and the credit
 * arithmetic. Fuzzed by tests/fuzz/fuzz_virtio_vsock.c. */
#include <errno.h>
#include <string.h>

#include "vsock.h"

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

static void put(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

void vsock_hdr_read(const uint8_t raw[VSOCK_HDR_LEN], struct vsock_hdr *h)
{
    h->src_cid = le(raw, 8);
    h->dst_cid = le(raw + 8, 8);
    h->src_port = (uint32_t)le(raw + 16, 4);
    h->dst_port = (uint32_t)le(raw + 20, 4);
    h->len = (uint32_t)le(raw + 24, 4);
    h->type = (uint16_t)le(raw + 28, 2);
    h->op = (uint16_t)le(raw + 30, 2);
    h->flags = (uint32_t)le(raw + 32, 4);
    h->buf_alloc = (uint32_t)le(raw + 36, 4);
    h->fwd_cnt = (uint32_t)le(raw + 40, 4);
}

void vsock_hdr_write(const struct vsock_hdr *h, uint8_t raw[VSOCK_HDR_LEN])
{
    put(raw, h->src_cid, 8);
    put(raw + 8, h->dst_cid, 8);
    put(raw + 16, h->src_port, 4);
    put(raw + 20, h->dst_port, 4);
    put(raw + 24, h->len, 4);
    put(raw + 28, h->type, 2);
    put(raw + 30, h->op, 2);
    put(raw + 32, h->flags, 4);
    put(raw + 36, h->buf_alloc, 4);
    put(raw + 40, h->fwd_cnt, 4);
}

enum vsock_verdict vsock_check(const struct vsock_hdr *h, uint64_t guest_cid, uint64_t payload)
{
    /* A packet that claims another source, or is not for the host, has no connection here. */
    if (h->src_cid != guest_cid || h->dst_cid != VSOCK_HOST_CID)
        return VSOCK_DROP;
    if (h->len > VSOCK_PKT_MAX || h->len > payload)
        return VSOCK_DROP;
    if (h->len && h->op != VSOCK_OP_RW)
        return VSOCK_DROP;
    if (h->type != VSOCK_TYPE_STREAM)
        return VSOCK_RESET; /* SOCK_SEQPACKET is not offered (Firecracker neither) */
    if (h->op < VSOCK_OP_REQUEST || h->op > VSOCK_OP_CREDIT_REQUEST)
        return VSOCK_RESET;
    return VSOCK_ACCEPT;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int vsock_connect_parse(const char *line, size_t len, uint32_t *port)
{
    static const char kw[] = "connect";
    size_t i = 0;

    if (len == 0 || len > VSOCK_LINE_MAX || line[len - 1] != '\n')
        return -EINVAL;
    len--; /* the newline */
    while (i < len && blank(line[i]))
        i++;
    for (size_t k = 0; k < sizeof(kw) - 1; k++, i++) {
        char c = i < len ? line[i] : '\0';
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != kw[k])
            return -EINVAL;
    }
    if (i >= len || !blank(line[i]))
        return -EINVAL;
    while (i < len && blank(line[i]))
        i++;
    uint64_t v = 0;
    size_t digits = 0;
    for (; i < len && line[i] >= '0' && line[i] <= '9'; i++, digits++) {
        v = v * 10 + (uint64_t)(line[i] - '0');
        if (v > UINT32_MAX)
            return -EINVAL;
    }
    while (i < len && blank(line[i]))
        i++;
    if (!digits || i != len)
        return -EINVAL;
    *port = (uint32_t)v;
    return 0;
}

uint32_t vsock_peer_free(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent)
{
    uint32_t in_flight = sent - fwd_cnt; /* wraps as the counters do */
    return in_flight >= buf_alloc ? 0 : buf_alloc - in_flight;
}
