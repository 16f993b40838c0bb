/* virtio-blk (spec 5.2): a file-backed block device with one queue, its ops. Requests run on
 * the event loop (blk_io.c), either synchronously (preadv/pwritev in batches, blk_sync.c) or
 * through the io_uring engine (blk_uring.c) with completions arriving on the ring's fd; the I/O
 * itself runs with the transport's lock released (vmmio_unlocked), so a vCPU never waits for
 * the disk. A token-bucket rate limiter holds requests back (never drops them) and wakes the
 * device with a timerfd; interrupts may be held (blk_hold.c). PATCH /drives swaps the backing
 * file and the buckets of a running device (blk_update.c). Every op runs under the transport's
 * lock. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "blk_dev.h"

#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO      5
#define VIRTIO_BLK_F_FLUSH   9
/* Data segments per request (config seg_max): a 1 MiB request is then one chain, not one per
 * page, and with the header and status byte it still fits a 128-entry queue (as QEMU). */
#define SEG_MAX 126

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
    memcpy(cfg, &b->st.capacity, 8);
    memcpy(cfg + 12, &seg_max, 4);
    memcpy(data, cfg + off, len); /* inside config_size: the transport checked */
}

static int process_queue(void *dev, struct vmmio_dev *t, unsigned qi)
{
    (void)qi;
    return vblk_run_queue(dev, t, 0);
}

/* On the vCPU thread that wrote Status 0: no I/O and no waiting. Requests still in flight on
 * the Async engine finish on the event loop and are dropped there (vblk_async_done: older
 * generation); until then their buffers may still be written, as with any DMA the device had
 * started before the reset. */
static void reset(void *dev, struct vmmio_dev *t)
{
    struct vblk *b = dev;
    (void)t;
    b->gen++;
    vblk_unthrottle(b);
    vblk_hold_cancel(b);
    b->has_pending = false;
    b->unsignalled = 0;
    b->st.flush_failed = false; /* the driver starts again: its FLUSHes are tried afresh */
}

static int event(void *dev, struct vmmio_dev *t, unsigned which)
{
    struct vblk *b = dev;
    struct vblk_done d = {b, t};
    uint64_t v;

    if (which != VBLK_FD_RING &&
        read(which == VBLK_FD_THROTTLE ? b->timer_fd : b->hold_fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
    if (which == VBLK_FD_HOLD) {
        if (!vmmio_running(t)) {
            vblk_hold_cancel(b);
            return 0;
        }
        if (b->awaiting)
            return vblk_await_end(b, t);
        return b->mod.holding ? vblk_hold_round(b, t) : 0;
    }
    /* The ring is watched level-triggered: its completions are always taken off, answered only
     * while the device runs (otherwise the driver is about to reset it). */
    unsigned reaped = 0;
    if (which == VBLK_FD_RING && b->eng.on)
        reaped = uring_reap(&b->eng, vmmio_running(t) ? vblk_async_done : NULL, &d);
    if (!vmmio_running(t))
        return 0;
    if (which == VBLK_FD_THROTTLE)
        b->throttled = false;
    return vblk_run_queue(b, t, reaped); /* one interrupt for the reaped and the new answers */
}

/* Nothing in flight afterwards: Async requests finish and are answered (dropped after a reset),
 * a request waiting for tokens or a ring slot goes back to the ring (popped again after a
 * restore), and a held interrupt is raised now. */
static int quiesce(void *dev, struct vmmio_dev *t)
{
    struct vblk *b = dev;
    struct vblk_done d = {b, t};
    bool run = vmmio_running(t);
    unsigned answered = b->eng.on ? uring_drain(&b->eng, run ? vblk_async_done : NULL, &d) : 0;

    if (b->has_pending) {
        vq_unpop(vmmio_queue(t, 0));
        b->has_pending = false;
    }
    vblk_unthrottle(b);
    bool held = b->mod.holding || b->awaiting;
    vblk_hold_cancel(b);
    if (run && held)
        vq_set_quiet(vmmio_queue(t, 0), false);
    if (run && (held || answered))
        vblk_signal_used(b, t, clock_ns());
    return 0;
}

/* Only after quiesce: nothing in flight, no chain held, no interrupt held back. */
static int save(const void *dev, struct vmmio_dev *t, void *state)
{
    const struct vblk *b = dev;
    (void)t;
    if (b->has_pending || b->eng.inflight || b->mod.holding || b->awaiting || b->throttled)
        return -EBUSY;
    memcpy(state, &b->st, sizeof(b->st));
    return 0;
}

/* The transport and its queue are restored already; the device starts with nothing in flight
 * (as quiesce left it) and its runtime state fresh. */
static int restore(void *dev, struct vmmio_dev *t, const void *state, char *err, size_t errlen)
{
    struct vblk *b = dev;
    struct vblk_state st;
    const struct vq_state *q = &vmmio_queue(t, 0)->st;

    memcpy(&st, state, sizeof(st));
    if (st.capacity != b->st.capacity)
        return errf(err, errlen, -EINVAL,
                    "drive %s: the snapshot's disk has %llu sectors, its file now %llu", b->cfg.id,
                    (unsigned long long)st.capacity, (unsigned long long)b->st.capacity);
    if (q->active && q->last_avail != q->next_used)
        return errf(err, errlen, -EINVAL, "drive %s: requests in flight in a snapshot", b->cfg.id);
    static const uint8_t zero[sizeof(st.pad)];
    if (st.flush_failed > 1 || memcmp(st.pad, zero, sizeof(zero)))
        return errf(err, errlen, -EINVAL, "drive %s: a malformed device state", b->cfg.id);
    reset(b, t);
    b->st.flush_failed = st.flush_failed; /* the kernel will not report that error again */
    return 0;
}

static unsigned fds(const void *dev, struct virtio_fd out[VIRTIO_MAX_DEV_FDS])
{
    const struct vblk *b = dev;
    out[VBLK_FD_RING] = (struct virtio_fd){uring_fd(&b->eng), EPOLLIN};
    out[VBLK_FD_THROTTLE] = (struct virtio_fd){b->timer_fd, EPOLLIN};
    out[VBLK_FD_HOLD] = (struct virtio_fd){b->hold_fd, EPOLLIN};
    return VBLK_NFDS;
}

static void destroy(void *dev);

struct vblk *vblk_create(const struct vm_drive *cfg, struct vm_stats *stats, char *err,
                         size_t errlen)
{
    struct vblk *b = calloc(1, sizeof(*b));
    struct vblk_backing bk;
    if (!b) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->cfg.path = NULL; /* the configuration's string: only its fd is kept */
    b->stats = stats;
    b->fd = b->timer_fd = b->hold_fd = -1;
    if (vblk_open_backing(cfg, cfg->path, &bk, err, errlen) < 0)
        goto fail;
    b->fd = bk.fd;
    b->st.capacity = bk.sectors;
    memcpy(b->id, bk.id, sizeof(b->id));
    tb_init(&b->bw, &cfg->bw);
    tb_init(&b->ops, &cfg->ops);
    b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    b->hold_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (b->timer_fd < 0 || b->hold_fd < 0) {
        errf(err, errlen, -errno, "timerfd: %s", strerror(errno));
        goto fail;
    }
    if (cfg->async) {
        char why[200];
        int ret = uring_open(&b->eng, b->fd, why, sizeof(why));
        if (ret < 0) {
            errf(err, errlen, ret, "drive %s: %s", cfg->id, why);
            goto fail;
        }
    }
    return b;
fail:
    destroy(b);
    return NULL;
}

static void destroy(void *dev)
{
    struct vblk *b = dev;
    if (!b)
        return;
    uring_close(&b->eng);
    if (b->fd >= 0)
        close(b->fd);
    if (b->timer_fd >= 0)
        close(b->timer_fd);
    if (b->hold_fd >= 0)
        close(b->hold_fd);
    free(b);
}

const struct virtio_dev_ops vblk_ops = {
        .name = "block",
        .device_id = VIRTIO_ID_BLOCK,
        .nqueues = 1,
        .queue_max = VQ_MAX_SIZE,
        .config_size = 16, /* capacity, size_max, seg_max (spec 5.2.4) */
        .features = features,
        .config_read = config_read,
        .process_queue = process_queue,
        .reset = reset,
        .fds = fds,
        .event = event,
        .quiesce = quiesce,
        .state_size = sizeof(struct vblk_state),
        .save = save,
        .restore = restore,
        .update = vblk_update_op,
        .destroy = destroy,
};
