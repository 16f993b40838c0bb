/* virtio-blk (spec 5.2): a file-backed block device with one queue. Requests run on the event
 * loop, either synchronously (preadv/pwritev) or through io_uring with completions arriving on
 * an eventfd; a token-bucket rate limiter holds requests back (never drops them) and wakes the
 * device with a timerfd. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "virtio.h"

#define SECTOR               512
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO      5
#define VIRTIO_BLK_F_FLUSH   9
#define RING_ENTRIES         VQ_MAX_SIZE
/* Data segments per request (config seg_max): a 1 MiB request is then one chain, not one per
 * page, and with the header and status byte it still fits a 128-entry queue (as QEMU). */
#define SEG_MAX 126

struct slot {
    uint16_t head;
    uint8_t *status;
    uint32_t used_len;
    uint64_t expect; /* bytes the operation must transfer */
    unsigned niov;
    struct iovec iov[VQ_MAX_SIZE];
};

struct vblk {
    struct vm_drive cfg;
    int fd;
    uint64_t capacity; /* sectors */
    char id[VIRTIO_BLK_ID_BYTES];
    struct vmmio_dev *t;    /* set at activation */
    struct vm_stats *stats; /* may be NULL */
    struct tbucket bw, ops;
    int timer_fd;
    bool throttled, has_pending;
    struct vq_chain chain; /* the chain being handled (kept while it waits) */
    struct vblk_req req;
    /* Async engine */
    bool ring_ok;
    struct io_uring ring;
    int ring_fd; /* completion eventfd */
    struct slot *slots;
    uint16_t free_list[VQ_MAX_SIZE];
    unsigned nfree, inflight;
};

/* ---- request parsing (pure: unit-tested and fuzzed) ---------------------------------------- */

/* Copies the iovecs covering [skip, skip + len) of src into dst. Returns the count. */
static unsigned iov_slice(const struct iovec *src, unsigned n, uint64_t skip, uint64_t len,
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
    unsigned k = iov_slice(c->iov, c->nout, 0, sizeof(hdr), part);
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
        r->niov = iov_slice(in, nin, 0, r->len, r->iov);
        break;
    case VIRTIO_BLK_T_OUT:
        if (c->in_len != 1)
            return -EINVAL;
        r->len = c->out_len - sizeof(hdr);
        r->niov = iov_slice(c->iov, c->nout, sizeof(hdr), r->len, r->iov);
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
        if (r->len % SECTOR || r->sector > capacity || r->len / SECTOR > capacity - r->sector)
            return VIRTIO_BLK_S_IOERR;
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_FLUSH:
    case VIRTIO_BLK_T_GET_ID:
        return VIRTIO_BLK_S_OK;
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

/* ---- the device ------------------------------------------------------------------------- */

static uint64_t features(void *dev)
{
    const struct vblk *b = dev;
    uint64_t f = 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX |
                 1ULL << VIRTIO_BLK_F_SEG_MAX;
    if (b->cfg.read_only)
        f |= 1ULL << VIRTIO_BLK_F_RO;
    if (b->cfg.writeback)
        f |= 1ULL << VIRTIO_BLK_F_FLUSH;
    return f;
}

/* Config space (spec 5.2.4): capacity in 512-byte sectors, size_max (not offered), seg_max. */
static void config_read(void *dev, uint64_t off, uint8_t *data, uint32_t len)
{
    const struct vblk *b = dev;
    uint8_t cfg[16] = {0};
    uint32_t seg_max = SEG_MAX;
    memcpy(cfg, &b->capacity, 8);
    memcpy(cfg + 12, &seg_max, 4);
    if (off < sizeof(cfg) && len <= sizeof(cfg) - off)
        memcpy(data, cfg + off, len);
}

/* Moves an iovec array forward by n bytes. */
static void iov_advance(struct iovec **iov, unsigned *n, size_t done)
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

static uint8_t sync_rw(struct vblk *b, struct vblk_req *r)
{
    struct iovec *iov = r->iov;
    unsigned n = r->niov;
    off_t off = (off_t)(r->sector * SECTOR);
    uint64_t left = r->len;

    while (left) {
        ssize_t got = r->type == VIRTIO_BLK_T_IN ? preadv(b->fd, iov, (int)n, off)
                                                 : pwritev(b->fd, iov, (int)n, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return VIRTIO_BLK_S_IOERR;
        left -= (uint64_t)got;
        off += got;
        iov_advance(&iov, &n, (size_t)got);
    }
    return VIRTIO_BLK_S_OK;
}

static uint8_t get_id(struct vblk *b, struct vblk_req *r, uint32_t *used)
{
    struct iovec part[VQ_MAX_SIZE];
    uint64_t len = r->len < sizeof(b->id) ? r->len : sizeof(b->id);
    unsigned k = iov_slice(r->iov, r->niov, 0, len, part);
    const uint8_t *src = (const uint8_t *)b->id;
    for (unsigned i = 0; i < k; i++) {
        memcpy(part[i].iov_base, src, part[i].iov_len);
        src += part[i].iov_len;
    }
    *used += (uint32_t)len;
    return VIRTIO_BLK_S_OK;
}

static void complete(struct vblk *b, uint16_t head, uint8_t *status, uint8_t s, uint32_t used)
{
    if (status) {
        *status = s;
        used++;
    }
    vq_push(&b->t->queues[0], head, used);
}

/* Async: queues one read, write or flush. Returns 1 if submitted, 0 if no slot (retry later). */
static int async_submit(struct vblk *b, struct vblk_req *r)
{
    if (!b->nfree)
        return 0;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (!sqe) {
        io_uring_submit(&b->ring);
        sqe = io_uring_get_sqe(&b->ring);
        if (!sqe)
            return 0;
    }
    uint16_t i = b->free_list[--b->nfree];
    struct slot *s = &b->slots[i];
    s->head = b->chain.head;
    s->status = r->status;
    s->used_len = r->type == VIRTIO_BLK_T_IN ? (uint32_t)r->len : 0;
    s->expect = r->len;
    s->niov = r->niov;
    memcpy(s->iov, r->iov, r->niov * sizeof(r->iov[0]));
    off_t off = (off_t)(r->sector * SECTOR);
    if (r->type == VIRTIO_BLK_T_IN)
        io_uring_prep_readv(sqe, b->fd, s->iov, s->niov, (uint64_t)off);
    else if (r->type == VIRTIO_BLK_T_OUT)
        io_uring_prep_writev(sqe, b->fd, s->iov, s->niov, (uint64_t)off);
    else
        io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, i);
    b->inflight++;
    return 1;
}

/* Charges the rate limiter. Returns 0, or the nanoseconds to wait (nothing charged). */
static uint64_t charge(struct vblk *b, const struct vblk_req *r)
{
    uint64_t bytes = r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_OUT ? r->len : 0;
    uint64_t wait = tb_consume(&b->bw, bytes);
    if (wait)
        return wait;
    wait = tb_consume(&b->ops, 1);
    if (wait)
        tb_refund(&b->bw, bytes);
    return wait;
}

static void throttle(struct vblk *b, uint64_t ns)
{
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    b->throttled = true;
    if (timerfd_settime(b->timer_fd, 0, &its, NULL) < 0)
        log_warn("drive %s: timerfd: %s", b->cfg.id, strerror(errno));
}

/* Handles one request of b->chain. Returns 1 if done, 0 if it must wait (kept pending). */
static int handle(struct vblk *b)
{
    struct vblk_req *r = &b->req;
    uint32_t used = 0;

    if (vblk_parse(&b->chain, r) < 0) {
        complete(b, b->chain.head, r->status, VIRTIO_BLK_S_IOERR, 0);
        return 1;
    }
    uint8_t s = vblk_check(r, b->capacity, b->cfg.read_only);
    if (s != VIRTIO_BLK_S_OK) {
        complete(b, b->chain.head, r->status, s, 0);
        return 1;
    }
    uint64_t wait = charge(b, r);
    if (wait) {
        throttle(b, wait);
        return 0;
    }
    bool io = r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_OUT ||
              (r->type == VIRTIO_BLK_T_FLUSH && b->cfg.writeback);
    if (io && b->ring_ok) {
        if (async_submit(b, r))
            return 1;
        tb_refund(&b->bw, r->len);
        tb_refund(&b->ops, 1);
        return 0; /* retried when a completion frees a slot */
    }
    switch (r->type) {
    case VIRTIO_BLK_T_IN:
        s = sync_rw(b, r);
        used = s == VIRTIO_BLK_S_OK ? (uint32_t)r->len : 0;
        break;
    case VIRTIO_BLK_T_OUT:
        s = sync_rw(b, r);
        break;
    case VIRTIO_BLK_T_FLUSH: /* spec 5.2.6.2; without Writeback caching there is nothing to do */
        s = b->cfg.writeback && fdatasync(b->fd) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
        break;
    default:
        s = get_id(b, r, &used);
        break;
    }
    complete(b, b->chain.head, r->status, s, used);
    return 1;
}

static unsigned reap(struct vblk *b, bool push);

/* Runs the queue until it is empty, throttled or out of async slots. Returns 0 or -EINVAL. */
static int run_queue(struct vblk *b)
{
    struct vq *q = &b->t->queues[0];
    int ret = 0;
    unsigned done = 0;

    while (!b->throttled) {
        if (!b->has_pending) {
            ret = vq_pop(q, b->t->mem, &b->chain);
            if (ret <= 0)
                break;
            b->has_pending = true;
        }
        if (!handle(b))
            break;
        b->has_pending = false;
        done++;
    }
    if (b->ring_ok && b->inflight) {
        io_uring_submit(&b->ring);
        /* Page-cache hits complete inside the submit: answer them in this same interrupt
         * (the eventfd only reports completions that happen later). */
        done += reap(b, true);
    }
    if (done)
        vmmio_used(b->t, 0);
    return ret < 0 ? ret : 0;
}

static int process_queue(void *dev, struct vmmio_dev *t, unsigned qi)
{
    (void)t;
    (void)qi;
    return run_queue(dev);
}

void vblk_bind(struct vblk *b, struct vmmio_dev *t, struct vm_stats *stats)
{
    b->t = t;
    b->stats = stats;
}

/* Reaps io_uring completions (event loop, transport lock held). Returns the count. */
static unsigned reap(struct vblk *b, bool push)
{
    struct io_uring_cqe *cqe;
    unsigned n = 0;

    while (io_uring_peek_cqe(&b->ring, &cqe) == 0) {
        uint64_t i = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&b->ring, cqe);
        if (i >= VQ_MAX_SIZE)
            continue;
        struct slot *s = &b->slots[i];
        bool ok = res >= 0 && (uint64_t)res == s->expect;
        if (push)
            complete(b, s->head, s->status, ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR,
                     ok ? s->used_len : 0);
        b->free_list[b->nfree++] = (uint16_t)i;
        b->inflight--;
        n++;
    }
    return n;
}

static void reset(void *dev)
{
    struct vblk *b = dev;
    /* In-flight requests point into buffers the driver is taking back: wait for them. */
    while (b->ring_ok && b->inflight) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&b->ring, &cqe) < 0)
            break;
        reap(b, false);
    }
    struct itimerspec off = {0};
    if (b->timer_fd >= 0)
        timerfd_settime(b->timer_fd, 0, &off, NULL);
    b->throttled = b->has_pending = false;
}

void vblk_event(struct vblk *b, unsigned which)
{
    uint64_t v;
    int fd = which == 0 ? b->ring_fd : b->timer_fd;
    if (fd < 0 || read(fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
    struct vmmio_dev *t = b->t;
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->activated && !(t->status & VIRTIO_STATUS_NEEDS_RESET)) {
        if (which == 0 && reap(b, true))
            vmmio_used(t, 0);
        if (which == 1)
            b->throttled = false;
        if (run_queue(b) < 0)
            vmmio_fail(t);
    }
    pthread_mutex_unlock(&t->lock);
}

void vblk_fds(const struct vblk *b, int fds[2])
{
    fds[0] = b->ring_ok ? b->ring_fd : -1;
    fds[1] = b->timer_fd;
}

static int open_async(struct vblk *b)
{
    b->ring_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->ring_fd < 0)
        return -errno;
    int ret = io_uring_queue_init(RING_ENTRIES, &b->ring, 0);
    if (ret < 0)
        return ret;
    b->ring_ok = true;
    ret = io_uring_register_eventfd_async(&b->ring, b->ring_fd);
    if (ret < 0)
        return ret;
    b->slots = calloc(VQ_MAX_SIZE, sizeof(*b->slots));
    if (!b->slots)
        return -ENOMEM;
    for (unsigned i = 0; i < VQ_MAX_SIZE; i++)
        b->free_list[i] = (uint16_t)(VQ_MAX_SIZE - 1 - i);
    b->nfree = VQ_MAX_SIZE;
    return 0;
}

struct vblk *vblk_create(const struct vm_drive *cfg, char *err, size_t errlen)
{
    struct stat st;
    struct vblk *b = calloc(1, sizeof(*b));
    if (!b) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->ring_fd = b->timer_fd = -1;
    b->fd = open(cfg->path, (cfg->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (b->fd < 0) {
        errf(err, errlen, -errno, "drive %s: %s", cfg->path, strerror(errno));
        goto fail;
    }
    if (fstat(b->fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        errf(err, errlen, -EINVAL, "drive %s: not a regular file", cfg->path);
        goto fail;
    }
    off_t size = lseek(b->fd, 0, SEEK_END);
    if (size < 0) {
        errf(err, errlen, -errno, "drive %s: %s", cfg->path, strerror(errno));
        goto fail;
    }
    b->capacity = (uint64_t)size / SECTOR;
    /* GET_ID: the backing file's identity, as kvmtool and Firecracker. */
    char id[64];
    snprintf(id, sizeof(id), "%llu%llu%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_rdev, (unsigned long long)st.st_ino);
    size_t idlen = strlen(id);
    memcpy(b->id, id, idlen < sizeof(b->id) ? idlen : sizeof(b->id));
    tb_init(&b->bw, &cfg->bw);
    tb_init(&b->ops, &cfg->ops);
    b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (b->timer_fd < 0) {
        errf(err, errlen, -errno, "timerfd: %s", strerror(errno));
        goto fail;
    }
    if (cfg->async) {
        int ret = open_async(b);
        if (ret < 0) {
            errf(err, errlen, ret, "drive %s: io_uring: %s", cfg->path, strerror(-ret));
            goto fail;
        }
    }
    return b;
fail:
    vblk_destroy(b);
    return NULL;
}

void vblk_destroy(struct vblk *b)
{
    if (!b)
        return;
    if (b->ring_ok)
        io_uring_queue_exit(&b->ring);
    int fds[] = {b->fd, b->ring_fd, b->timer_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(b->slots);
    free(b);
}

const struct virtio_dev_ops vblk_ops = {
        .device_id = 2,
        .nqueues = 1,
        .features = features,
        .config_read = config_read,
        .process_queue = process_queue,
        .reset = reset,
};
