/* The Sync engine: requests collected under the transport's lock, their preadv/pwritev/
 * fdatasync run as one batch with the lock released (vmmio_unlocked), so a vCPU reaching the
 * registers never waits for the disk. The batch holds copies of everything the I/O needs; the
 * answers go to the ring under the lock again, unless the device was reset meanwhile. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "blk.h"

int sync_add(struct sync_batch *bt, const struct vblk_req *r, uint16_t head)
{
    if (bt->n >= VQ_MAX_SIZE || r->niov > VQ_MAX_SIZE - bt->niov)
        return 0;
    struct sync_req *s = &bt->r[bt->n++];
    *s = (struct sync_req){.head = head,
                           .status = r->status,
                           .type = r->type,
                           .sector = r->sector,
                           .len = r->len,
                           .iov0 = (uint16_t)bt->niov,
                           .niov = (uint16_t)r->niov};
    memcpy(bt->iov + bt->niov, r->iov, r->niov * sizeof(r->iov[0]));
    bt->niov += r->niov;
    return 1;
}

static uint8_t rw(int fd, struct sync_req *s, struct iovec *iov)
{
    unsigned n = s->niov;
    off_t off = (off_t)(s->sector * VBLK_SECTOR);
    uint64_t left = s->len;

    while (left) {
        ssize_t got = s->type == VIRTIO_BLK_T_IN ? preadv(fd, iov, (int)n, off)
                                                 : pwritev(fd, iov, (int)n, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return VIRTIO_BLK_S_IOERR;
        left -= (uint64_t)got;
        off += got;
        vblk_iov_advance(&iov, &n, (size_t)got);
    }
    return VIRTIO_BLK_S_OK;
}

void sync_run(struct sync_batch *bt, int fd)
{
    for (unsigned i = 0; i < bt->n; i++) {
        struct sync_req *s = &bt->r[i];
        if (s->type == VIRTIO_BLK_T_FLUSH) {
            if (!bt->flush_failed && fdatasync(fd) < 0)
                bt->flush_failed = true;
            s->s = bt->flush_failed ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
        } else {
            s->s = rw(fd, s, bt->iov + s->iov0); /* advances the batch's copy of the iovecs */
        }
    }
}
