/* virtio-blk requests (spec 5.2.6), the pure part: splitting a descriptor chain into header,
 * data and status byte, the checks a request passes before any I/O, iovec helpers, and the
 * GET_ID string. No device state here: unit-tested and fuzzed directly. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "blk.h"

unsigned vblk_iov_slice(const struct iovec *src, unsigned n, uint64_t skip, uint64_t len,
                        struct iovec *dst)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n && len; i++) {
        uint64_t l = src[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        uint64_t take = l - skip < len ? l - skip : len;
        dst[k].iov_base = (uint8_t *)src[i].iov_base + skip;
        dst[k].iov_len = take;
        k++;
        len -= take;
        skip = 0;
    }
    return k;
}

void vblk_iov_advance(struct iovec **iov, unsigned *n, size_t done)
{
    while (*n && done >= (*iov)->iov_len) {
        done -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n && done) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + done;
        (*iov)->iov_len -= done;
    }
}

uint64_t vblk_iov_fill(const struct iovec *iov, unsigned n, const void *src, uint64_t len)
{
    struct iovec part[VQ_MAX_SIZE];
    unsigned k = vblk_iov_slice(iov, n < VQ_MAX_SIZE ? n : VQ_MAX_SIZE, 0, len, part);
    const uint8_t *s = src;
    uint64_t done = 0;
    for (unsigned i = 0; i < k; i++) {
        memcpy(part[i].iov_base, s + done, part[i].iov_len);
        done += part[i].iov_len;
    }
    return done;
}

int vblk_parse(const struct vq_chain *c, struct vblk_req *r)
{
    struct {
        uint32_t type, reserved;
        uint64_t sector;
    } hdr; /* struct virtio_blk_req's header, spec 5.2.6 */
    struct iovec part[VQ_MAX_SIZE];
    const struct iovec *in = c->iov + c->nout;
    unsigned nin = c->niov - c->nout;

    memset(r, 0, offsetof(struct vblk_req, iov));
    r->status = NULL;
    if (c->in_len >= 1) { /* the status byte is the last device-writable byte */
        const struct iovec *last = &in[nin - 1];
        r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
    }
    if (c->out_len < sizeof(hdr) || !r->status)
        return -EINVAL;
    /* The header is copied once; only the copy is looked at. */
    unsigned k = vblk_iov_slice(c->iov, c->nout, 0, sizeof(hdr), part);
    uint8_t *dst = (uint8_t *)&hdr;
    for (unsigned i = 0; i < k; i++) {
        memcpy(dst, part[i].iov_base, part[i].iov_len);
        dst += part[i].iov_len;
    }
    r->type = hdr.type;
    r->sector = hdr.sector;
    switch (r->type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_GET_ID:
        if (c->out_len != sizeof(hdr))
            return -EINVAL;
        r->len = c->in_len - 1;
        r->niov = vblk_iov_slice(in, nin, 0, r->len, r->iov);
        break;
    case VIRTIO_BLK_T_OUT:
        if (c->in_len != 1)
            return -EINVAL;
        r->len = c->out_len - sizeof(hdr);
        r->niov = vblk_iov_slice(c->iov, c->nout, sizeof(hdr), r->len, r->iov);
        break;
    default:
        break;
    }
    return 0;
}

uint8_t vblk_check(const struct vblk_req *r, uint64_t capacity, bool read_only)
{
    switch (r->type) {
    case VIRTIO_BLK_T_OUT:
        if (read_only)
            return VIRTIO_BLK_S_IOERR;
        /* fallthrough */
    case VIRTIO_BLK_T_IN:
        /* Spec 5.2.6.1: data is a multiple of 512 bytes; it must fit the disk. */
        if (r->len % VBLK_SECTOR || r->sector > capacity ||
            r->len / VBLK_SECTOR > capacity - r->sector)
            return VIRTIO_BLK_S_IOERR;
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_FLUSH:
    case VIRTIO_BLK_T_GET_ID:
        return VIRTIO_BLK_S_OK;
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

void vblk_disk_id(const struct stat *st, char id[VIRTIO_BLK_ID_BYTES])
{
    char s[3 * 21];
    snprintf(s, sizeof(s), "%llu%llu%llu", (unsigned long long)st->st_dev,
             (unsigned long long)st->st_rdev, (unsigned long long)st->st_ino);
    size_t n = strlen(s);
    memset(id, 0, VIRTIO_BLK_ID_BYTES);
    memcpy(id, s, n < VIRTIO_BLK_ID_BYTES ? n : VIRTIO_BLK_ID_BYTES);
}
