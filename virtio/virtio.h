/* ember virtio: the one internal header of virtio/ (split virtqueue, virtio-mmio transport,
 * block device). Spec references are to "Virtual I/O Device (VIRTIO) Version 1.2". */
#ifndef EMBER_VIRTIO_H
#define EMBER_VIRTIO_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "../vmm/vmm.h"

/* ---- split virtqueue (queue.c, spec 2.7) ------------------------------------------------- */
#define VQ_MAX_SIZE 256 /* QueueNumMax, as Firecracker */

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4

struct vq {
    /* Set by the driver through the transport before QueueReady. */
    uint16_t size;
    bool ready;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    /* Valid after vq_activate(). */
    bool active, event_idx, broken;
    bool quiet;     /* kicks suppressed (vq_set_quiet): an empty ring does not re-arm them */
    uint8_t *desc;  /* size × 16 bytes */
    uint8_t *avail; /* flags, idx, ring[size], used_event */
    uint8_t *used;  /* flags, idx, ring[size] × 8, avail_event */
    uint16_t last_avail, next_used, signalled_used;
    bool signalled_valid;
};

/* One popped descriptor chain: device-readable iovecs first (nout), then device-writable. */
struct vq_chain {
    uint16_t head;
    unsigned niov, nout;
    uint32_t out_len, in_len;
    struct iovec iov[VQ_MAX_SIZE];
};

/* vq_activate(q, mem, event_idx): checks size and ring placement and maps the rings.
 * Returns 0, or -EINVAL (size, alignment) / -EFAULT (a ring outside RAM). */
int vq_activate(struct vq *q, const struct guest_mem *mem, bool event_idx);
/* vq_reset(q): back to the reset state (driver registers zeroed, rings unmapped). */
void vq_reset(struct vq *q);
/* vq_pop(q, mem, c): takes the next available chain into c. Returns 1 if one was taken, 0 if
 * the ring is empty (notifications re-armed), -EINVAL if the ring is malformed (q->broken). */
int vq_pop(struct vq *q, const struct guest_mem *mem, struct vq_chain *c);
/* vq_set_quiet(q, quiet): while quiet, the driver is asked not to kick (avail_event is left
 * behind, or VRING_USED_F_NO_NOTIFY without EVENT_IDX) and the device polls the ring instead;
 * the first vq_pop that finds the ring empty after quiet ends re-arms the kicks. */
void vq_set_quiet(struct vq *q, bool quiet);
/* vq_push(q, head, len): returns a chain to the driver with len bytes written. */
void vq_push(struct vq *q, uint16_t head, uint32_t len);
/* vq_should_notify(q): Returns true if the driver wants an interrupt for the pushes so far
 * (VIRTIO_F_EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT, spec 2.7.7 / 2.7.10). */
bool vq_should_notify(struct vq *q);

/* ---- virtio-mmio transport (mmio.c, spec 4.2) -------------------------------------------- */
#define VIRTIO_MMIO_BASE     0xC0001000ULL
#define VIRTIO_MMIO_LEN      0x1000ULL
#define VIRTIO_MMIO_GSI_BASE MMIO_GSI_BASE
#define VIRTIO_MMIO_MAX_DEVS VM_DEVS_MAX /* GSI 5..23: see vmm.h */
#define VIRTIO_MAX_QUEUES    2

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

struct vmmio_dev;

/* A rate limit for one log line (mmio.c). */
struct ratelog {
    bool used;
    uint64_t last_ns, suppressed;
};
/* ratelog_allow(r, now_ns, interval_ns, suppressed): Returns true if the line may be logged now
 * (none in the last interval_ns), with *suppressed the lines dropped since the last one;
 * otherwise counts one more dropped line. */
bool ratelog_allow(struct ratelog *r, uint64_t now_ns, uint64_t interval_ns, uint64_t *suppressed);
#define VMMIO_FAIL_LOG_NS (10 * 1000000000ULL)

/* A device: a const ops table; the transport owns registers, status and queues. */
struct virtio_dev_ops {
    uint32_t device_id;
    unsigned nqueues;
    /* features(dev): Returns the offered feature bits. */
    uint64_t (*features)(void *dev);
    /* config_read/config_write: device config space (off from 0x100). */
    void (*config_read)(void *dev, uint64_t off, uint8_t *data, uint32_t len);
    void (*config_write)(void *dev, uint64_t off, const uint8_t *data, uint32_t len);
    /* activate(dev, t): the driver set DRIVER_OK with valid queues. Returns 0 or -errno. */
    int (*activate)(void *dev, struct vmmio_dev *t);
    /* process_queue(dev, t, qi): the driver notified queue qi (event loop). Returns 0 or
     * -errno when the queue is malformed (the transport then asks for a reset). */
    int (*process_queue)(void *dev, struct vmmio_dev *t, unsigned qi);
    /* reset(dev): the driver wrote 0 to Status; drop in-flight work. */
    void (*reset)(void *dev);
};

struct vmmio_dev {
    pthread_mutex_t lock; /* registers, status, queues: vCPU threads and the event loop */
    const struct virtio_dev_ops *ops;
    void *dev;
    const struct guest_mem *mem;
    uint64_t base;
    unsigned gsi;
    int irq_fd;                       /* eventfd bound to the GSI by irqfd, or -1 */
    int notify_fd[VIRTIO_MAX_QUEUES]; /* ioeventfds on QueueNotify, or -1 */
    uint32_t status, queue_sel, dev_features_sel, drv_features_sel, config_generation;
    uint64_t drv_features;
    atomic_uint interrupt_status;
    bool activated;
    uint64_t fail_count;     /* NEEDS_RESET transitions */
    struct ratelog fail_log; /* their log line */
    struct vq queues[VIRTIO_MAX_QUEUES];
};

/* vmmio_init(t, ops, dev, mem, index): a transport for device number index (base address and
 * GSI follow from it); no KVM resources yet. Returns 0 or -errno. */
int vmmio_init(struct vmmio_dev *t, const struct virtio_dev_ops *ops, void *dev,
               const struct guest_mem *mem, unsigned index);
/* vmmio_attach_kvm(t, vm_fd): creates the irqfd and one ioeventfd per queue.
 * Returns 0 or -errno. */
int vmmio_attach_kvm(struct vmmio_dev *t, int vm_fd);
/* vmmio_destroy(t): closes the fds and the lock. */
void vmmio_destroy(struct vmmio_dev *t);
/* vmmio_read/vmmio_write: the register file (bus callbacks, vCPU threads). */
void vmmio_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len);
void vmmio_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len);
/* vmmio_notify(t, qi): the event loop saw queue qi's ioeventfd; runs the device. */
void vmmio_notify(struct vmmio_dev *t, unsigned qi);
/* vmmio_signal(t, bits): sets interrupt status bits and raises the GSI. */
void vmmio_signal(struct vmmio_dev *t, unsigned bits);
/* vmmio_used(t, qi): raises the used-buffer interrupt if queue qi's driver wants one. */
void vmmio_used(struct vmmio_dev *t, unsigned qi);
/* vmmio_fail(t): marks the device NEEDS_RESET and raises a config interrupt (spec 2.1.2). */
void vmmio_fail(struct vmmio_dev *t);
/* vmmio_cmdline(t, buf, len): Returns the snprintf count of " virtio_mmio.device=4K@0x…:N". */
int vmmio_cmdline(const struct vmmio_dev *t, char *buf, size_t len);

/* ---- interrupt moderation (irqmod.c) ----------------------------------------------------- */
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

/* ---- virtio-blk (blk.c, spec 5.2) -------------------------------------------------------- */
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

struct vblk;
extern const struct virtio_dev_ops vblk_ops;

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
/* uring_queue(e, r, head): queues request r of chain head (submitted by uring_submit).
 * Returns 1, or 0 when no room is left (retry after a completion). */
int uring_queue(struct uring_eng *e, const struct vblk_req *r, uint16_t head);
/* uring_submit(e): submits whatever was queued (one syscall for the batch). */
void uring_submit(struct uring_eng *e);
/* uring_reap(e, done, ctx): hands every completion so far to done (may be NULL).
 * Returns the count. */
unsigned uring_reap(struct uring_eng *e, uring_done_fn *done, void *ctx);
/* uring_drain(e, done, ctx): submits and waits until nothing is in flight. Returns the count. */
unsigned uring_drain(struct uring_eng *e, uring_done_fn *done, void *ctx);
/* uring_close(e): closes the ring (safe on a zeroed e). */
void uring_close(struct uring_eng *e);

/* The device (blk.c). */
/* vblk_create(cfg, err, errlen): opens the backing file. Returns the device or NULL. */
struct vblk *vblk_create(const struct vm_drive *cfg, char *err, size_t errlen);
/* vblk_bind(b, t, stats): the transport b answers through (before the VM runs), and the block
 * counters it bumps (NULL: none). */
void vblk_bind(struct vblk *b, struct vmmio_dev *t, struct vm_stats *stats);
/* vblk_id(b): Returns the drive's id (its drive_id). */
const char *vblk_id(const struct vblk *b);
/* vblk_update(b, path, bw, ops, err, errlen): PATCH /drives/{id} (transport lock held): path
 * (NULL: unchanged) swaps the backing file once in-flight I/O on the old one is done (capacity
 * and GET_ID re-read, config generation bumped, config-change interrupt); bw/ops (NULL:
 * unchanged) replace the buckets. Returns 0, or -errno with a reason in err (nothing changed). */
int vblk_update(struct vblk *b, const char *path, const struct vm_bucket *bw,
                const struct vm_bucket *ops, char *err, size_t errlen);
/* vblk_destroy(b): closes everything (safe on NULL). */
void vblk_destroy(struct vblk *b);
/* vblk_fds(b, fds): the fds the event loop must watch (level-triggered) besides the queue
 * notifiers: the io_uring ring (never read; -1 without the Async engine), the rate-limiter
 * timer and the interrupt-moderation timer. */
#define VBLK_NFDS 3
void vblk_fds(const struct vblk *b, int fds[VBLK_NFDS]);
/* vblk_event(b, which): fds[which] from vblk_fds() became readable (event loop). */
void vblk_event(struct vblk *b, unsigned which);

/* ---- drive options (drive.c) ------------------------------------------------------------- */
/* drive_parse(d, spec, root, err, errlen): fills d from a --drive spec, or from a --rootfs path
 * when root. Returns 0, or -EINVAL with a reason in err. */
int drive_parse(struct vm_drive *d, const char *spec, bool root, char *err, size_t errlen);

/* ---- the VM's device set (virtio.c) ------------------------------------------------------ */
struct virtio_devs;

/* virtio_open(drives, n, mem, stats, err, errlen): opens every drive (root first) and sets up
 * its transport; the devices bump stats (may be NULL). Returns the set, or NULL with a reason
 * in err. */
struct virtio_devs *virtio_open(const struct vm_drive *drives, unsigned n,
                                const struct guest_mem *mem, struct vm_stats *stats, char *err,
                                size_t errlen);
/* virtio_cmdline(v, cmdline, len): appends root= and one virtio_mmio.device= per device.
 * Returns 0 or -ENAMETOOLONG. */
int virtio_cmdline(const struct virtio_devs *v, char *cmdline, size_t len);
/* virtio_attach(v, vm_fd, mmio): irqfds, ioeventfds, bus entries, the epoll set.
 * Returns 0 or -errno. */
int virtio_attach(struct virtio_devs *v, int vm_fd, struct bus *mmio);
/* virtio_fd(v): Returns the epoll fd the event loop watches (-1 for no set). */
int virtio_fd(const struct virtio_devs *v);
/* virtio_poll(v): runs whatever is ready (event loop thread). */
void virtio_poll(struct virtio_devs *v);
/* virtio_drive_update(v, id, path, bw, ops, err, errlen): PATCH /drives/{id} on a running VM
 * (event-loop thread). path (NULL: unchanged) swaps the backing file: capacity re-read, config
 * generation bumped, config-change interrupt. bw/ops (NULL: unchanged) replace the rate
 * limiter's buckets. Returns 0, -ENOENT for an unknown id, or -errno with a reason in err. */
int virtio_drive_update(struct virtio_devs *v, const char *id, const char *path,
                        const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                        size_t errlen);
/* virtio_destroy(v): closes everything (safe on NULL). */
void virtio_destroy(struct virtio_devs *v);

#endif
