/* virtio-blk (spec 5.2): the pure request helpers (blk_req.c), the Async engine (blk_uring.c)
 * and the device (blk.c), for the device set (registry.c) and the tests. */
#ifndef EMBER_VIRTIO_BLK_H
#define EMBER_VIRTIO_BLK_H

#include <liburing.h>

#include "device.h"

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

/* A parsed request: the header copied once, the data iovecs, where the status byte goes. */
struct vblk_req {
    uint32_t type;
    uint64_t sector;
    uint64_t len;    /* data bytes */
    uint8_t *status; /* NULL: the chain has no room for a status byte */
    unsigned niov;
    struct iovec iov[VQ_MAX_SIZE]; /* last: parsing clears only what precedes it */
};

/* Requests, the pure part (blk_req.c). */
#define VBLK_SECTOR 512
/* vblk_parse(c, r): splits a chain into header, data and status byte (any layout, spec 5.2.6).
 * Returns 0, or -EINVAL if the chain cannot hold a request (r->status set if it has one). */
int vblk_parse(const struct vq_chain *c, struct vblk_req *r);
/* vblk_check(r, capacity, read_only): Returns the status a well-formed request r would get
 * before any I/O (VIRTIO_BLK_S_OK if it may go ahead). */
uint8_t vblk_check(const struct vblk_req *r, uint64_t capacity, bool read_only);
/* vblk_iov_slice(src, n, skip, len, dst): the iovecs covering [skip, skip + len) of src into
 * dst (room for n). Returns their count. */
unsigned vblk_iov_slice(const struct iovec *src, unsigned n, uint64_t skip, uint64_t len,
                        struct iovec *dst);
/* vblk_iov_advance(iov, n, done): moves an iovec array forward by done bytes. */
void vblk_iov_advance(struct iovec **iov, unsigned *n, size_t done);
/* vblk_iov_fill(iov, n, src, len): copies up to len bytes of src into the iovecs.
 * Returns the bytes copied. */
uint64_t vblk_iov_fill(const struct iovec *iov, unsigned n, const void *src, uint64_t len);
struct stat;
/* vblk_disk_id(st, id): GET_ID's 20 bytes for a backing file, as Firecracker (and kvmtool):
 * decimal st_dev, st_rdev, st_ino run together, truncated, zero-padded. */
void vblk_disk_id(const struct stat *st, char id[VIRTIO_BLK_ID_BYTES]);

/* The Async engine (blk_uring.c): one restricted io_uring per drive. */
struct uring_op { /* a request in flight */
    uint16_t head;
    uint32_t tag; /* the device's reset generation when it was queued */
    uint8_t *status;
    uint32_t type;
    uint64_t len;
    unsigned niov;
    struct iovec iov[VQ_MAX_SIZE];
};
struct uring_eng {
    bool on;
    struct io_uring ring;
    struct uring_op *ops;
    uint16_t free_list[VQ_MAX_SIZE];
    unsigned nfree, inflight;
};
/* uring_done_fn(ctx, op, ok): one completion; ok when it transferred everything. */
typedef void uring_done_fn(void *ctx, const struct uring_op *op, bool ok);
/* uring_open(e, fd, err, errlen): a ring allowed only READV/WRITEV/FSYNC on fd.
 * Returns 0, or -errno with a reason in err (e then needs uring_close). */
int uring_open(struct uring_eng *e, int fd, char *err, size_t errlen);
/* uring_fd(e): Returns the fd the event loop watches for completions (level-triggered), or -1. */
int uring_fd(const struct uring_eng *e);
/* uring_set_file(e, fd, err, errlen): the ring's file becomes fd, once nothing is in flight
 * (uring_drain). Returns 0, or -errno with a reason (the old file kept). */
int uring_set_file(struct uring_eng *e, int fd, char *err, size_t errlen);
/* uring_queue(e, r, head, tag): queues request r of chain head, marked with tag (submitted by
 * uring_submit).
 * Returns 1, or 0 when no room is left (retry after a completion). */
int uring_queue(struct uring_eng *e, const struct vblk_req *r, uint16_t head, uint32_t tag);
/* uring_submit(e): submits whatever was queued (one syscall for the batch). */
void uring_submit(struct uring_eng *e);
/* uring_reap(e, done, ctx): hands every completion so far to done (may be NULL).
 * Returns the count. */
unsigned uring_reap(struct uring_eng *e, uring_done_fn *done, void *ctx);
/* uring_wait(e): submits and waits until everything in flight has completed, taking no
 * completion off (uring_reap or uring_drain then answers them without waiting). */
void uring_wait(struct uring_eng *e);
/* uring_drain(e, done, ctx): submits and waits until nothing is in flight. Returns the count. */
unsigned uring_drain(struct uring_eng *e, uring_done_fn *done, void *ctx);
/* uring_close(e): closes the ring (safe on a zeroed e). */
void uring_close(struct uring_eng *e);

/* The Sync engine (blk_sync.c): a batch of requests whose I/O runs without the transport's
 * lock. */
struct sync_req {
    uint16_t head;
    uint8_t s; /* the answer, set by sync_run */
    uint8_t *status;
    uint32_t type; /* IN, OUT or FLUSH */
    uint64_t sector, len;
    uint16_t iov0, niov; /* its iovecs in the batch */
};
struct sync_batch {
    unsigned n, niov;
    bool flush_failed; /* in: the drive's latch; out: set if a FLUSH failed (every later one
                        * in the batch then fails without syncing) */
    struct sync_req r[VQ_MAX_SIZE];
    struct iovec iov[VQ_MAX_SIZE];
};
/* sync_add(bt, r, head): copies request r of chain head into the batch.
 * Returns 1, or 0 when the batch has no room for it (run the batch first). */
int sync_add(struct sync_batch *bt, const struct vblk_req *r, uint16_t head);
/* sync_run(bt, fd): runs the batch's I/O on fd in order (preadv, pwritev, fdatasync), each
 * request's answer into its s; a FLUSH fails once bt->flush_failed is set. Touches nothing but
 * bt, fd and guest buffers. */
void sync_run(struct sync_batch *bt, int fd);

/* The device (blk.c). */
struct vblk;
/* What a snapshot carries of a quiesced virtio-blk (plain data, fixed layout: 16 bytes). The
 * features are the transport's; the reset generation, the rate limiter's budget (its clock is
 * the host's), the interrupt moderation's measurements and GET_ID (from the file) are runtime
 * and start afresh. The capacity is read from the backing file again: a restore checks it did
 * not change under the guest. The FLUSH latch travels: the kernel reported the error to the
 * saving process once and will not again, so a restored guest's FLUSH must still fail. A
 * format-1 snapshot has only the capacity (the record's tail reads as zero: not latched). */
struct vblk_state {
    uint64_t capacity;    /* sectors */
    uint8_t flush_failed; /* 1: a FLUSH failed, every later one fails until a reset or swap */
    uint8_t pad[7];       /* zero */
};
_Static_assert(sizeof(struct vblk_state) == 16, "vblk_state layout");
extern const struct virtio_dev_ops vblk_ops;

/* A backing file opened for a drive: the fd, its size in sectors and its GET_ID. */
struct vblk_backing {
    int fd;
    uint64_t sectors;
    char id[VIRTIO_BLK_ID_BYTES];
};
/* vblk_open_backing(cfg, path, bk, err, errlen): opens path as drive cfg's mode says (never
 * blocking on a FIFO), checks it is a regular file or block device and fills bk.
 * Returns 0, or -errno with a reason in err. */
int vblk_open_backing(const struct vm_drive *cfg, const char *path, struct vblk_backing *bk,
                      char *err, size_t errlen);
/* vblk_create(cfg, stats, err, errlen): a device on cfg's backing file, counting into stats
 * (may be NULL). Returns the device or NULL with a reason in err. */
struct vblk *vblk_create(const struct vm_drive *cfg, struct vm_stats *stats, char *err,
                         size_t errlen);

/* PATCH /drives/{id} (the update op): backing (NULL: unchanged; on success the device takes
 * its fd and sets it to -1) swaps
 * the file once in-flight I/O on the old one is done (capacity and GET_ID from backing, config
 * generation bumped, config-change interrupt); path is its name for logs; bw/ops (NULL:
 * unchanged) replace the buckets. */
struct vblk_update {
    struct vblk_backing *backing;
    const char *path;
    const struct vm_bucket *bw, *ops;
};

/* The device's fds (the fds op), in this order. */
enum { VBLK_FD_RING, VBLK_FD_THROTTLE, VBLK_FD_HOLD, VBLK_NFDS };

#endif
