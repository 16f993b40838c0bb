/* The Async block engine: one io_uring per drive. The ring is created disabled, gets the backing
 * file registered as its only file, and is then restricted (IORING_REGISTER_RESTRICTIONS) to
 * READV, WRITEV and FSYNC on that registered file, with one register operation left (replacing
 * the file, for PATCH /drives), before it is enabled: whatever ends up in the submission queue
 * cannot reach another fd or opcode.
 *
 * The event loop watches the ring fd itself (readable while completions wait), as QEMU does.
 * An eventfd registered with io_uring_register_eventfd_async would miss completions posted by
 * task work on the submitting thread (buffered reads retried after a page-cache miss), and one
 * registered for every completion would wake the loop once more after each submit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "blk.h"

#define RING_ENTRIES VQ_MAX_SIZE

/* io_uring_register(2) directly: Debian's shared liburing 2.3 does not export
 * io_uring_register_restrictions / io_uring_enable_rings (its static library does). */
static int ring_register(struct io_uring *ring, unsigned op, const void *arg, unsigned n)
{
    long ret = syscall(__NR_io_uring_register, ring->ring_fd, op, arg, n);
    return ret < 0 ? -errno : 0;
}

/* A disabled ring on fd (registered as file 0), restricted, then enabled. */
static int ring_setup(struct io_uring *ring, int fd, char *err, size_t errlen)
{
    struct io_uring_restriction res[] = {
            {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_READV},
            {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_WRITEV},
            {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_FSYNC},
            {.opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED, .sqe_flags = IOSQE_FIXED_FILE},
            {.opcode = IORING_RESTRICTION_REGISTER_OP, .register_op = IORING_REGISTER_FILES_UPDATE},
    };
    int ret = io_uring_queue_init(RING_ENTRIES, ring, IORING_SETUP_R_DISABLED);
    if (ret == -EINVAL)
        return errf(err, errlen, ret,
                    "io_uring: the kernel cannot create restricted rings "
                    "(IORING_SETUP_R_DISABLED needs Linux 5.10 or later)");
    if (ret < 0)
        return errf(err, errlen, ret, "io_uring: %s", strerror(-ret));
    const char *what = "registering the file";
    ret = io_uring_register_files(ring, &fd, 1);
    if (ret >= 0) {
        what = "registering restrictions";
        ret = ring_register(ring, IORING_REGISTER_RESTRICTIONS, res, sizeof(res) / sizeof(res[0]));
    }
    if (ret >= 0) {
        what = "enabling the ring";
        ret = ring_register(ring, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    }
    if (ret < 0) {
        io_uring_queue_exit(ring);
        return errf(err, errlen, ret, "io_uring: %s: %s", what, strerror(-ret));
    }
    return 0;
}

int uring_open(struct uring_eng *e, int fd, char *err, size_t errlen)
{
    memset(e, 0, sizeof(*e));
    e->ops = calloc(VQ_MAX_SIZE, sizeof(*e->ops));
    if (!e->ops)
        return errf(err, errlen, -ENOMEM, "out of memory");
    for (unsigned i = 0; i < VQ_MAX_SIZE; i++)
        e->free_list[i] = (uint16_t)(VQ_MAX_SIZE - 1 - i);
    e->nfree = VQ_MAX_SIZE;
    int ret = ring_setup(&e->ring, fd, err, errlen);
    if (ret < 0)
        return ret;
    e->on = true;
    return 0;
}

int uring_fd(const struct uring_eng *e)
{
    return e->on ? e->ring.ring_fd : -1;
}

int uring_set_file(struct uring_eng *e, int fd, char *err, size_t errlen)
{
    if (e->inflight)
        return errf(err, errlen, -EBUSY, "io_uring: requests still in flight");
    int ret = io_uring_register_files_update(&e->ring, 0, &fd, 1);
    if (ret < 0)
        return errf(err, errlen, ret, "io_uring: replacing the file: %s", strerror(-ret));
    return 0;
}

int uring_queue(struct uring_eng *e, const struct vblk_req *r, uint16_t head, uint32_t tag)
{
    if (!e->nfree)
        return 0;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
    if (!sqe) {
        io_uring_submit(&e->ring);
        sqe = io_uring_get_sqe(&e->ring);
        if (!sqe)
            return 0;
    }
    uint16_t i = e->free_list[--e->nfree];
    struct uring_op *op = &e->ops[i];
    op->head = head;
    op->tag = tag;
    op->status = r->status;
    op->type = r->type;
    op->len = r->len;
    op->niov = r->niov;
    memcpy(op->iov, r->iov, r->niov * sizeof(r->iov[0]));
    uint64_t off = r->sector * VBLK_SECTOR;
    if (r->type == VIRTIO_BLK_T_IN)
        io_uring_prep_readv(sqe, 0, op->iov, op->niov, off);
    else if (r->type == VIRTIO_BLK_T_OUT)
        io_uring_prep_writev(sqe, 0, op->iov, op->niov, off);
    else
        io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
    sqe->flags |= IOSQE_FIXED_FILE; /* file 0: the only one registered */
    io_uring_sqe_set_data64(sqe, i);
    e->inflight++;
    return 1;
}

void uring_submit(struct uring_eng *e)
{
    if (io_uring_sq_ready(&e->ring))
        io_uring_submit(&e->ring);
}

unsigned uring_reap(struct uring_eng *e, uring_done_fn *done, void *ctx)
{
    struct io_uring_cqe *cqe;
    unsigned n = 0;

    while (io_uring_peek_cqe(&e->ring, &cqe) == 0) {
        uint64_t i = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&e->ring, cqe);
        if (i >= VQ_MAX_SIZE)
            continue;
        const struct uring_op *op = &e->ops[i];
        /* A read or write that did less than asked is an error for the guest. */
        bool ok = res >= 0 && (op->type == VIRTIO_BLK_T_FLUSH || (uint64_t)res == op->len);
        if (done)
            done(ctx, op, ok);
        e->free_list[e->nfree++] = (uint16_t)i;
        e->inflight--;
        n++;
    }
    return n;
}

void uring_wait(struct uring_eng *e)
{
    struct io_uring_cqe *cqe;
    uring_submit(e);
    while (e->inflight && io_uring_wait_cqe_nr(&e->ring, &cqe, e->inflight) == -EINTR)
        ;
}

unsigned uring_drain(struct uring_eng *e, uring_done_fn *done, void *ctx)
{
    unsigned n = 0;
    uring_submit(e);
    while (e->inflight) {
        struct io_uring_cqe *cqe;
        int ret = io_uring_wait_cqe(&e->ring, &cqe);
        if (ret < 0 && ret != -EINTR)
            break;
        n += uring_reap(e, done, ctx);
    }
    return n;
}

void uring_close(struct uring_eng *e)
{
    if (e->on)
        io_uring_queue_exit(&e->ring);
    free(e->ops);
    memset(e, 0, sizeof(*e));
}
