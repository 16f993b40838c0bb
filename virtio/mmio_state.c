/* Saving and restoring a virtio-mmio transport, its queues and its device (the snapshot side of
 * mmio.c). A restored state comes from a file: it is checked field by field against what the
 * register file and the driver's sequence can produce, and nothing is applied until all of it
 * passed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mmio.h"

#define S_ACK VIRTIO_STATUS_ACKNOWLEDGE
#define S_DRV VIRTIO_STATUS_DRIVER
#define S_FOK VIRTIO_STATUS_FEATURES_OK
#define S_DOK VIRTIO_STATUS_DRIVER_OK

int vmmio_save(struct vmmio_dev *t, struct vmmio_state *st, struct vq_state q[VIRTIO_MAX_QUEUES],
               void *dev_state)
{
    pthread_mutex_lock(&t->lock);
    int ret = t->ops->state_size && t->ops->save ? t->ops->save(t->dev, t, dev_state) : 0;
    if (!ret) {
        memcpy(st, &t->st, sizeof(*st));
        /* the page is ember's alone, but a snapshot holds only bits a restore takes */
        atomic_store(&st->interrupt_status,
                     vmmio_regs_isr(t) & (uint32_t)(VIRTIO_INT_USED | VIRTIO_INT_CONFIG));
        for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
            q[i] = t->queues[i].st;
    }
    pthread_mutex_unlock(&t->lock);
    return ret;
}

/* The status register holds a prefix of the driver's sequence (spec 3.1.1), FAILED at any
 * point, NEEDS_RESET only once the driver ran the device. Returns a reason, or NULL. */
static const char *check_status(const struct vmmio_dev *t, const struct vmmio_state *st)
{
    static const uint32_t reachable[] = {0, S_ACK, S_ACK | S_DRV, S_ACK | S_DRV | S_FOK,
                                         S_ACK | S_DRV | S_FOK | S_DOK};
    uint32_t base = st->status & ~(uint32_t)(VIRTIO_STATUS_FAILED | VIRTIO_STATUS_NEEDS_RESET);
    bool known = false;

    for (size_t i = 0; i < sizeof(reachable) / sizeof(reachable[0]); i++)
        known |= base == reachable[i];
    if (!known)
        return "a status the driver's sequence cannot reach";
    if ((st->status & VIRTIO_STATUS_NEEDS_RESET) && !(st->status & S_DOK))
        return "NEEDS_RESET before DRIVER_OK";
    if (st->activated > 1)
        return "activated is neither 0 nor 1";
    if (st->activated && !(st->status & S_DOK))
        return "activated without DRIVER_OK";
    if ((st->status & S_DOK) && !st->activated && !(st->status & VIRTIO_STATUS_NEEDS_RESET))
        return "DRIVER_OK, neither activated nor failed";
    if (st->status & S_FOK) {
        uint64_t offered = t->ops->features(t->dev);
        if ((st->drv_features & ~offered) || !(st->drv_features & (1ULL << VIRTIO_F_VERSION_1)))
            return "features the device does not offer (or no VERSION_1) after FEATURES_OK";
    }
    return NULL;
}

/* The transport's registers, then each queue against them. Returns a reason, or NULL. */
static const char *check(const struct vmmio_dev *t, const struct vmmio_state *st,
                         const struct vq_state q[VIRTIO_MAX_QUEUES])
{
    static const struct vq_state zero;
    const char *why = check_status(t, st);

    if (why)
        return why;
    for (size_t i = 0; i < sizeof(st->pad); i++)
        if (st->pad[i])
            return "nonzero padding";
    if (st->queue_sel > t->ops->nqueues || st->dev_features_sel > 2 || st->drv_features_sel > 2)
        return "a selector out of range";
    if (atomic_load(&st->interrupt_status) & ~(uint32_t)(VIRTIO_INT_USED | VIRTIO_INT_CONFIG))
        return "unknown interrupt status bits";
    bool event_idx = st->drv_features & (1ULL << VIRTIO_F_RING_EVENT_IDX);
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        if (i >= t->ops->nqueues) {
            if (memcmp(&q[i], &zero, sizeof(zero)))
                return "state on a queue the device does not have";
            continue;
        }
        if (q[i].active && !(st->status & S_DOK))
            return "an active queue before DRIVER_OK";
        if (q[i].active && q[i].event_idx != event_idx)
            return "a queue's EVENT_IDX differs from the negotiated features";
        if (st->activated && q[i].ready && !q[i].active)
            return "a ready queue not active on an activated device";
    }
    return NULL;
}

static void reset_state(struct vmmio_dev *t)
{
    memset(&t->st, 0, sizeof(t->st));
    vmmio_regs_isr_store(t, 0);
    t->config_pending = false;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        vq_reset(&t->queues[i]);
}

int vmmio_restore(struct vmmio_dev *t, const struct vmmio_state *st,
                  const struct vq_state q[VIRTIO_MAX_QUEUES], const void *dev_state, char *err,
                  size_t errlen)
{
    struct vq tmp[VIRTIO_MAX_QUEUES];
    char why[160];
    int ret = 0;

    pthread_mutex_lock(&t->lock);
    const char *bad = check(t, st, q);
    if (bad)
        ret = errf(err, errlen, -EINVAL, "virtio-mmio %s: %s", t->ops->name, bad);
    for (unsigned i = 0; !ret && i < VIRTIO_MAX_QUEUES; i++) {
        if (i >= t->ops->nqueues) {
            vq_reset(&tmp[i]);
            continue;
        }
        if (vq_restore(&tmp[i], &q[i], t->mem, t->ops->queue_max, why, sizeof(why)))
            ret = errf(err, errlen, -EINVAL, "virtio-mmio %s queue %u: %s", t->ops->name, i, why);
    }
    if (!ret) {
        memcpy(&t->st, st, sizeof(t->st));
        atomic_store(&t->st.interrupt_status, 0); /* the live bits are the page's */
        vmmio_regs_isr_store(t, atomic_load(&st->interrupt_status));
        /* Not in the state: a device saved while its driver set it up may have had a config
         * change pending; one interrupt too many at DRIVER_OK is harmless (mmio.c). */
        t->config_pending = st->status && !st->activated;
        memcpy(t->queues, tmp, sizeof(tmp));
        if (t->ops->restore)
            ret = t->ops->restore(t->dev, t, dev_state, err, errlen);
    }
    if (ret)
        reset_state(t);
    vmmio_regs_sync(t);
    pthread_mutex_unlock(&t->lock);
    return ret;
}
