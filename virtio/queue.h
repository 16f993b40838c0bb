/* The split virtqueue (queue.c, spec 2.7): the one parser of guest rings. Spec references in
 * virtio/ are to "Virtual I/O Device (VIRTIO) Version 1.2". */
#ifndef EMBER_VIRTIO_QUEUE_H
#define EMBER_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "../vmm/vmm.h"

#define VQ_MAX_SIZE 256 /* QueueNumMax, as Firecracker */

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4

/* A queue's state that a snapshot carries (plain data, fixed layout: 40 bytes, no padding the
 * compiler adds; the flags are 0 or 1). The driver's registers, then what the device keeps once
 * the queue is active; all zero in the reset state. */
struct vq_state {
    uint64_t desc_gpa, avail_gpa, used_gpa; /* set by the driver before QueueReady */
    uint16_t size;
    uint16_t last_avail, next_used, signalled_used; /* valid while active */
    uint8_t ready;
    uint8_t active, event_idx, broken; /* set by vq_activate() */
    uint8_t quiet;                     /* kicks suppressed (vq_set_quiet): an empty ring does not
                                        * re-arm them */
    uint8_t signalled_valid;
    uint8_t pad[2]; /* 0 */
};
_Static_assert(sizeof(struct vq_state) == 40, "vq_state layout");

struct vq {
    struct vq_state st;
    /* The rings in host memory: mapped by vq_activate() and vq_restore(). */
    uint8_t *desc;  /* size × 16 bytes */
    uint8_t *avail; /* flags, idx, ring[size], used_event */
    uint8_t *used;  /* flags, idx, ring[size] × 8, avail_event */
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
/* vq_restore(q, st, mem, queue_max, err, errlen): q takes the saved state st, which is hostile
 * (a snapshot file): flags 0/1, size at most queue_max, no device-side state on a queue that
 * is not active, and an active queue passes vq_activate's checks again (size a nonzero power
 * of two, aligned rings inside mem: mapped anew) with at most size chains in flight.
 * Returns 0, or -EINVAL with a one-line reason in err (q then reset). */
int vq_restore(struct vq *q, const struct vq_state *st, const struct guest_mem *mem,
               uint16_t queue_max, char *err, size_t errlen);
/* vq_reset(q): back to the reset state (driver registers zeroed, rings unmapped). */
void vq_reset(struct vq *q);
/* vq_pop(q, mem, c): takes the next available chain into c. Returns 1 if one was taken, 0 if
 * the ring is empty (notifications re-armed), -EINVAL if the ring is malformed (q->st.broken). */
int vq_pop(struct vq *q, const struct guest_mem *mem, struct vq_chain *c);
/* vq_unpop(q): gives the chain the last vq_pop took back to the ring (popped again next). */
void vq_unpop(struct vq *q);
/* vq_kick_on_more(q): asks the driver to kick once it adds a chain beyond those available now
 * (for a device that gave chains back with vq_unpop because they were not enough).
 * Returns true if the driver added some meanwhile (the caller tries again). */
bool vq_kick_on_more(struct vq *q);
/* vq_avail_idx(q): Returns the driver's avail index as it is now (0 for an inactive queue). */
uint16_t vq_avail_idx(const struct vq *q);
/* vq_set_quiet(q, quiet): while quiet, the driver is asked not to kick (avail_event is left
 * behind, or VRING_USED_F_NO_NOTIFY without EVENT_IDX) and the device polls the ring instead;
 * the first vq_pop that finds the ring empty after quiet ends re-arms the kicks. */
void vq_set_quiet(struct vq *q, bool quiet);
/* vq_push(q, head, len): returns a chain to the driver with len bytes written. */
void vq_push(struct vq *q, uint16_t head, uint32_t len);
/* vq_should_notify(q): Returns true if the driver wants an interrupt for the pushes so far
 * (VIRTIO_F_EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT, spec 2.7.7 / 2.7.10). */
bool vq_should_notify(struct vq *q);

#endif
