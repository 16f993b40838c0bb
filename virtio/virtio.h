/* ember virtio: the one internal header of virtio/ (split virtqueue, virtio-mmio transport,
 * block device). Spec references are to "Virtual I/O Device (VIRTIO) Version 1.2". */
#ifndef EMBER_VIRTIO_H
#define EMBER_VIRTIO_H

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
/* vq_push(q, head, len): returns a chain to the driver with len bytes written. */
void vq_push(struct vq *q, uint16_t head, uint32_t len);
/* vq_should_notify(q): Returns true if the driver wants an interrupt for the pushes so far
 * (VIRTIO_F_EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT, spec 2.7.7 / 2.7.10). */
bool vq_should_notify(struct vq *q);

/* ---- virtio-mmio transport (mmio.c, spec 4.2) -------------------------------------------- */
#define VIRTIO_MMIO_BASE     0xC0001000ULL
#define VIRTIO_MMIO_LEN      0x1000ULL
#define VIRTIO_MMIO_GSI_BASE 5
#define VIRTIO_MMIO_MAX_DEVS 17
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

#endif
