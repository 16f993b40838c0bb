/* The virtio-mmio transport (mmio.c, spec 4.2), as the device set (virtio.c), the VMM and the
 * tests see it. Devices see only device.h. */
#ifndef EMBER_VIRTIO_MMIO_H
#define EMBER_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdatomic.h>

#include "device.h"

#define VIRTIO_MMIO_BASE     0xC0001000ULL
#define VIRTIO_MMIO_LEN      0x1000ULL
#define VIRTIO_MMIO_GSI_BASE MMIO_GSI_BASE
#define VIRTIO_MMIO_MAX_DEVS VM_DEVS_MAX /* GSI 5..23: see vmm.h */
/* Device i's register page is KVM memory slot VIRTIO_MMIO_SLOT_BASE + i (guest RAM: 0, 1). */
#define VIRTIO_MMIO_SLOT_BASE 16

#define VMMIO_FAIL_LOG_NS (10 * 1000000000ULL)

/* The transport's state that a snapshot carries (plain data, fixed layout: 40 bytes, no
 * padding the compiler adds). The selectors are kept in range (QueueSel at most nqueues,
 * the feature selectors at most 2: "none"), as the registers are write-only. */
struct vmmio_state {
    uint64_t drv_features;
    uint32_t status, queue_sel, dev_features_sel, drv_features_sel, config_generation;
    /* VIRTIO_INT_*: filled in by vmmio_save, taken by vmmio_restore; while the device runs, the
     * bits live in the register page (vmmio_regs_isr), where a guest reads them */
    _Atomic uint32_t interrupt_status;
    uint8_t activated; /* 0 or 1 */
    uint8_t pad[7];    /* 0 */
};
_Static_assert(sizeof(struct vmmio_state) == 40, "vmmio_state layout");

struct vmmio_dev {
    struct vmmio_state st;
    pthread_mutex_t lock; /* registers, status, queues, the device: vCPUs and the event loop */
    const struct virtio_dev_ops *ops;
    void *dev;
    const struct guest_mem *mem;
    uint64_t base;
    unsigned gsi;
    int irq_fd;                       /* eventfd bound to the GSI by irqfd, or -1 */
    int notify_fd[VIRTIO_MAX_QUEUES]; /* ioeventfds on QueueNotify, or -1 */
    int ack_fd;                       /* ioeventfd on InterruptACK of VIRTIO_INT_USED, or -1 */
    uint32_t ack_sticky;              /* VIRTIO_INT_USED while ack_fd swallows its ACKs, or 0 */
    /* The register page (mmio_regs.c): what a driver reads, kept current under the lock. */
    const uint32_t *regs;    /* 4 KiB, the page the guest sees, mapped read-only (and in KVM) */
    void *regs_bufs;         /* both pages of the memfd, writable: ember writes through these */
    int regs_fd;             /* the memfd */
    unsigned regs_active;    /* which of the two is shown at regs */
    uint64_t resets;         /* device resets so far (vmmio_unlocked) */
    bool config_pending;     /* config changed while the driver set the device up */
    uint64_t fail_count;     /* NEEDS_RESET transitions */
    struct ratelog fail_log; /* their log line */
    struct vq queues[VIRTIO_MAX_QUEUES];
    /* vmmio_watch's way to the event loop (set by the device set when attached; NULL: none) */
    void (*watch)(void *opaque, unsigned which, uint32_t events);
    void *watch_opaque;
};

/* vmmio_init(t, ops, dev, mem, index): a transport for device number index (base address and
 * GSI follow from it); no KVM resources yet. Returns 0 or -errno. */
int vmmio_init(struct vmmio_dev *t, const struct virtio_dev_ops *ops, void *dev,
               const struct guest_mem *mem, unsigned index);
/* vmmio_attach_kvm(t, vm_fd): creates the irqfd, one ioeventfd per queue and one on
 * InterruptACK of USED, and maps the register page into the guest (where KVM can).
 * Returns 0 or -errno. */
int vmmio_attach_kvm(struct vmmio_dev *t, int vm_fd);
/* vmmio_destroy(t): closes the fds and the lock (not the device). */
void vmmio_destroy(struct vmmio_dev *t);
/* vmmio_read/vmmio_write: the register file (bus callbacks, vCPU threads). */
void vmmio_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len);
void vmmio_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len);
/* vmmio_notify(t, qi): queue qi's ioeventfd fired (event loop): runs the device. */
void vmmio_notify(struct vmmio_dev *t, unsigned qi);
/* vmmio_event(t, which): the device's fd number `which` is ready (event loop). */
void vmmio_event(struct vmmio_dev *t, unsigned which);
/* vmmio_quiesce(t): the device's quiesce op under the lock (VM paused). Returns its result. */
int vmmio_quiesce(struct vmmio_dev *t);
/* vmmio_resumed(t): the device's resumed op, if it has one, under the lock. */
void vmmio_resumed(struct vmmio_dev *t);
/* vmmio_update(t, upd, err, errlen): the device's update op under the lock. Returns its
 * result, or -ENOTSUP for a device without one. */
int vmmio_update(struct vmmio_dev *t, const void *upd, char *err, size_t errlen);
/* vmmio_signal(t, bits): sets interrupt status bits and raises the GSI. */
void vmmio_signal(struct vmmio_dev *t, unsigned bits);
/* vmmio_cmdline(t, buf, len): Returns the snprintf count of " virtio_mmio.device=4K@0x…:N". */
int vmmio_cmdline(const struct vmmio_dev *t, char *buf, size_t len);

/* ---- the register page (mmio_regs.c) ------------------------------------------------------ */
/* vmmio_regs_init(t): the page's memfd and mappings, all zero. Returns 0 or -errno. */
int vmmio_regs_init(struct vmmio_dev *t);
/* vmmio_regs_free(t): unmaps and closes them (the memory slot goes with the VM). */
void vmmio_regs_free(struct vmmio_dev *t);
/* vmmio_regs_sync(t): under the lock, the page brought up to the state, word by word. */
void vmmio_regs_sync(struct vmmio_dev *t);
/* vmmio_regs_publish(t): under the lock, the same, as one swap of the whole page: for changes
 * that span words while a driver may read them. */
void vmmio_regs_publish(struct vmmio_dev *t);
/* vmmio_regs_read(t, off, data, len): what a driver reads at off (no lock). */
void vmmio_regs_read(const struct vmmio_dev *t, uint64_t off, uint8_t *data, uint32_t len);
/* vmmio_regs_current(t): under the lock, whether the page shows the state (tests, fuzzing). */
bool vmmio_regs_current(const struct vmmio_dev *t);
/* vmmio_regs_map(t, vm_fd, slot): the page as a read-only memory slot at t->base. Returns 0,
 * -ENOTSUP without KVM_CAP_READONLY_MEM, or -errno. */
int vmmio_regs_map(struct vmmio_dev *t, int vm_fd, unsigned slot);
/* InterruptStatus in the page (atomic, no lock). */
uint32_t vmmio_regs_isr(const struct vmmio_dev *t);
void vmmio_regs_isr_set(struct vmmio_dev *t, uint32_t bits);
void vmmio_regs_isr_clear(struct vmmio_dev *t, uint32_t bits);
void vmmio_regs_isr_store(struct vmmio_dev *t, uint32_t v);

/* ---- snapshots (mmio_state.c) ------------------------------------------------------------ */
/* vmmio_save(t, st, q, dev_state): under the lock, the transport's state into st, each queue's
 * into q (the queues the device lacks: zero) and the device's (ops->state_size bytes; NULL
 * when 0) into dev_state; the VM paused and vmmio_quiesce done. Returns 0, or the device's
 * -EBUSY. */
int vmmio_save(struct vmmio_dev *t, struct vmmio_state *st, struct vq_state q[VIRTIO_MAX_QUEUES],
               void *dev_state);
/* vmmio_restore(t, st, q, dev_state, err, errlen): under the lock, a transport made by
 * vmmio_init (its device opened as configured) takes a saved state, which is hostile (a
 * snapshot file). Refused: a status the driver's sequence cannot reach, an activated device
 * without DRIVER_OK (or DRIVER_OK without activation and without NEEDS_RESET), features outside
 * the offer after FEATURES_OK, selectors out of range, unknown interrupt bits, nonzero padding,
 * and queues vq_restore refuses, active ones out of step with the transport (EVENT_IDX as
 * negotiated) or state on queues the device lacks; then whatever the device's restore refuses.
 * Returns 0, or -EINVAL with a one-line reason in err (t is then in the reset state). */
int vmmio_restore(struct vmmio_dev *t, const struct vmmio_state *st,
                  const struct vq_state q[VIRTIO_MAX_QUEUES], const void *dev_state, char *err,
                  size_t errlen);

#endif
