/* What a virtio device implementation sees: its const ops table, the transport's accessor
 * functions (the transport itself is opaque here: mmio.h), and the helpers devices share
 * (interrupt moderation, token buckets). virtio/README.md says how to add a device. */
#ifndef EMBER_VIRTIO_DEVICE_H
#define EMBER_VIRTIO_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"

/* Device status bits (spec 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_INT_USED   1
#define VIRTIO_INT_CONFIG 2

#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1      32

/* Device types (spec 5): the closed set ember offers. */
#define VIRTIO_ID_NET   1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_MAX_QUEUES  3 /* vsock: rx, tx, event */
#define VIRTIO_MAX_DEV_FDS 4 /* fds a device has the event loop watch besides its queues */

struct vmmio_dev;

/* An fd a device wants watched, and for what (EPOLLIN, EPOLLOUT; level-triggered). */
struct virtio_fd {
    int fd;
    uint32_t events;
};

/* A device: a const ops table. The transport owns registers, status and queues, takes its lock
 * around every call below except destroy, and turns an error return into NEEDS_RESET. A device
 * never takes the lock itself: I/O that may wait runs inside vmmio_unlocked(). */
struct virtio_dev_ops {
    const char *name; /* in log lines: "block", "net", "vsock" */
    uint32_t device_id;
    unsigned nqueues;     /* at most VIRTIO_MAX_QUEUES */
    uint16_t queue_max;   /* QueueNumMax, at most VQ_MAX_SIZE */
    uint32_t config_size; /* bytes of config space: bytes past it read 0, writes are dropped */
    /* features(dev): Returns the offered feature bits. */
    uint64_t (*features)(void *dev);
    /* config_read/config_write: [off, off + len) of config space, inside config_size. What
     * features and config_read return is copied into the register page (mmio_regs.c) that
     * the guest reads: a change after creation goes through vmmio_config_changed. */
    void (*config_read)(void *dev, uint64_t off, uint8_t *data, uint32_t len);
    void (*config_write)(void *dev, uint64_t off, const uint8_t *data, uint32_t len);
    /* activate(dev, t): the driver set DRIVER_OK with valid queues (vCPU thread: no I/O).
     * Returns 0 or -errno. */
    int (*activate)(void *dev, struct vmmio_dev *t);
    /* process_queue(dev, t, qi): the driver notified queue qi (event loop). Returns 0, or
     * -errno when the queue is malformed. */
    int (*process_queue)(void *dev, struct vmmio_dev *t, unsigned qi);
    /* reset(dev, t): the driver wrote 0 to Status (vCPU thread): forget the queues' work at
     * once, without I/O and without waiting for it; what is in flight is dropped later. */
    void (*reset)(void *dev, struct vmmio_dev *t);
    /* fds(dev, fds): fills the fds to watch. Returns their count (at most VIRTIO_MAX_DEV_FDS;
     * an fd of -1 is skipped). */
    unsigned (*fds)(const void *dev, struct virtio_fd fds[VIRTIO_MAX_DEV_FDS]);
    /* event(dev, t, which): fds()[which] is ready (event loop), also while the device is not
     * running (to take completions off). Returns 0 or -errno. */
    int (*event)(void *dev, struct vmmio_dev *t, unsigned which);
    /* quiesce(dev, t): the VM is paused for a snapshot (event loop): afterwards nothing is in
     * flight, no chain is held popped, no interrupt is held back. Returns 0 or -errno. */
    int (*quiesce)(void *dev, struct vmmio_dev *t);
    /* resumed(dev, t): the vCPUs run again after a pause or a load (optional). */
    void (*resumed)(void *dev, struct vmmio_dev *t);
    /* The device's own part of a snapshot: state_size bytes of plain data (0: none). */
    uint32_t state_size;
    /* save(dev, t, state): fills state (state_size bytes) once quiesce ran (VM paused).
     * Returns 0, or -EBUSY while something is still in flight. */
    int (*save)(const void *dev, struct vmmio_dev *t, void *state);
    /* restore(dev, t, state, err, errlen): the device takes a saved state, after the transport
     * took its own (registers and queues of t restored and checked). state is hostile (a
     * snapshot file): every field is checked. Returns 0, or -EINVAL with a one-line reason in
     * err. */
    int (*restore)(void *dev, struct vmmio_dev *t, const void *state, char *err, size_t errlen);
    /* update(dev, t, upd, err, errlen): a device-type-specific change on a running VM
     * (PATCH /drives: struct vblk_update). Returns 0, or -errno with a reason in err. */
    int (*update)(void *dev, struct vmmio_dev *t, const void *upd, char *err, size_t errlen);
    /* destroy(dev): closes and frees everything (after the transport is gone). */
    void (*destroy)(void *dev);
};

/* The transport, as devices use it (mmio.c). Each is called with the transport lock held, from
 * an op above. */
/* vmmio_queue(t, qi): Returns queue qi (qi < ops->nqueues). */
struct vq *vmmio_queue(struct vmmio_dev *t, unsigned qi);
/* vmmio_mem(t): Returns the guest memory the queues live in. */
const struct guest_mem *vmmio_mem(const struct vmmio_dev *t);
/* vmmio_running(t): Returns true while the device is activated and not NEEDS_RESET. */
bool vmmio_running(const struct vmmio_dev *t);
/* vmmio_used(t, qi): raises the used-buffer interrupt if queue qi's driver wants one. */
void vmmio_used(struct vmmio_dev *t, unsigned qi);
/* vmmio_fail(t): marks the device NEEDS_RESET and raises a config interrupt (spec 2.1.2); the
 * transport does this itself when an op returns an error. */
void vmmio_fail(struct vmmio_dev *t);
/* vmmio_unlocked(t, fn, ctx): runs fn(ctx) with the transport's lock released, so that vCPUs
 * reach the registers (and may reset the device) meanwhile: for the device's disk I/O. fn
 * touches only what it was handed (copies, guest buffers, the device's fds), never the
 * transport, its queues, or device state that an op run from a vCPU changes. Returns true if
 * the device was reset or stopped running meanwhile: the caller then drops what fn produced
 * (its chains belong to rings the driver has taken back) and returns. */
bool vmmio_unlocked(struct vmmio_dev *t, void (*fn)(void *ctx), void *ctx);
/* vmmio_features(t): Returns the feature bits the driver acknowledged (valid from activate). */
uint64_t vmmio_features(const struct vmmio_dev *t);
/* vmmio_watch(t, which, events): the event loop watches the device's fd number `which` (fds
 * op) for events from now on (EPOLLIN, EPOLLOUT; 0: not at all, errors and hang-ups included,
 * after at most one more event). Event-loop thread only (an epoll_ctl); a no-op for a
 * transport not attached to a loop (unit tests). */
void vmmio_watch(struct vmmio_dev *t, unsigned which, uint32_t events);
/* vmmio_config_changed(t): the config space changed: generation bumped, and a config
 * interrupt once the driver runs the device (spec 4.2.2). */
void vmmio_config_changed(struct vmmio_dev *t);

/* ---- interrupt moderation (irqmod.c) ---------------------------------------------------- */
#define IRQMOD_MAX_BACKOFF       256
#define IRQMOD_MAX_ROUNDS        4
#define IRQMOD_MIN_ROUND_NS      10000ULL
#define IRQMOD_MAX_ROUND_NS      200000ULL
#define IRQMOD_MAX_TURNAROUND_NS 2000000ULL /* longer: the guest was idle, not turning round */
struct irqmod {
    bool holding;           /* an interrupt is being held */
    unsigned rounds;        /* rounds of this hold that found requests */
    unsigned found;         /* requests found during this hold */
    unsigned backoff, skip; /* after a hold that found nothing: answers signalled at once */
    uint64_t signal_ns;     /* when the last interrupt went out (0: measured already) */
    uint64_t turnaround_ns; /* moving average; 0 until measured */
};
/* irqmod_reset(m): the initial state (device reset). */
void irqmod_reset(struct irqmod *m);
/* irqmod_signalled(m, now_ns): the device raised the interrupt at now_ns. */
void irqmod_signalled(struct irqmod *m, uint64_t now_ns);
/* irqmod_arrived(m, now_ns): a kick brought requests at now_ns (outside a hold). */
void irqmod_arrived(struct irqmod *m, uint64_t now_ns);
/* irqmod_round_ns(m): Returns the length of a round: the guest's turnaround, bounded. */
uint64_t irqmod_round_ns(const struct irqmod *m);
/* irqmod_start(m): the device answered requests. Returns true if the interrupt is to be held
 * (already held, or a new hold: the caller quiets the queue and arms a round of
 * irqmod_round_ns), false if it is to be raised now. */
bool irqmod_start(struct irqmod *m);
/* irqmod_round(m, found): a round ended; polling the ring found `found` new requests. Returns
 * true to hold for one more round (IRQMOD_MAX_ROUNDS in all), false to end the hold: the caller
 * re-arms kicks and raises the interrupt. */
bool irqmod_round(struct irqmod *m, unsigned found);
/* irqmod_end(m): the device ends a hold early and raises the interrupt now (virtio-net: the
 * guest's rx buffers ran out, only the interrupt brings more); counted as a hold that found
 * requests. A no-op outside a hold. */
void irqmod_end(struct irqmod *m);

/* ---- token bucket (tbucket.c) ------------------------------------------------------------ */
struct tbucket {
    bool enabled;
    int64_t size, tokens, burst;
    uint64_t refill_ns, last_ns;
};

/* tb_init(b, cfg): a bucket as configured (size 0 or cfg NULL: disabled). */
void tb_init(struct tbucket *b, const struct vm_bucket *cfg);
/* tb_consume(b, n): takes n tokens. Returns 0 if taken, else the nanoseconds to wait before
 * trying again (nothing taken). */
uint64_t tb_consume(struct tbucket *b, uint64_t n);
/* tb_refund(b, n): gives back n tokens taken by a request that then had to wait. */
void tb_refund(struct tbucket *b, uint64_t n);

#endif
