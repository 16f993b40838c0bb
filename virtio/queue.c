/* The one split-virtqueue implementation (spec 2.7). The guest is hostile: every index is
 * checked, every descriptor is copied once into a local before it is looked at, chains are
 * bounded by the queue size, and buffers become iovecs only through gm_ptr(). A violation marks
 * the queue broken and returns -EINVAL; the transport then asks the driver for a reset. */
#include <errno.h>
#include <string.h>

#include "queue.h"

/* Offsets inside the rings (spec 2.7.6, 2.7.8). */
#define AVAIL_FLAGS 0
#define AVAIL_IDX   2
#define AVAIL_RING  4
#define USED_FLAGS  0
#define USED_IDX    2
#define USED_RING   4

#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY     1

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static uint16_t load16(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

static void store16(uint8_t *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELEASE);
}

static void store32(uint8_t *p, uint32_t v)
{
    __atomic_store_n((uint32_t *)(void *)p, v, __ATOMIC_RELAXED);
}

/* Checks the queue's size and ring placement and maps the rings. Returns 0, or -EINVAL with
 * the reason in *why. */
static int map(struct vq *q, const struct guest_mem *mem, uint16_t queue_max, const char **why)
{
    uint64_t n = q->st.size;

    q->desc = q->avail = q->used = NULL;
    /* Spec 2.7: Queue Size is a power of two no larger than QueueNumMax (4.2.2.2). */
    if (n == 0 || n > queue_max || (n & (n - 1))) {
        *why = "size is 0, not a power of two or above the device's maximum";
        return -EINVAL;
    }
    /* Alignment: descriptor table 16, available ring 2, used ring 4 (spec 2.7). */
    if ((q->st.desc_gpa & 15) || (q->st.avail_gpa & 1) || (q->st.used_gpa & 3)) {
        *why = "a misaligned ring";
        return -EINVAL;
    }
    q->desc = gm_ptr(mem, q->st.desc_gpa, 16 * n);
    q->avail = gm_ptr(mem, q->st.avail_gpa, 6 + 2 * n);
    q->used = gm_ptr(mem, q->st.used_gpa, 6 + 8 * n);
    if (!q->desc || !q->avail || !q->used) {
        q->desc = q->avail = q->used = NULL;
        *why = "a ring outside guest RAM";
        return -EFAULT;
    }
    return 0;
}

int vq_activate(struct vq *q, const struct guest_mem *mem, bool event_idx)
{
    const char *why;

    q->st.active = false;
    int ret = map(q, mem, VQ_MAX_SIZE, &why);
    if (ret)
        return ret;
    q->st.event_idx = event_idx;
    q->st.broken = q->st.quiet = false;
    q->st.last_avail = q->st.next_used = q->st.signalled_used = 0;
    q->st.signalled_valid = false;
    q->st.active = true;
    return 0;
}

static bool flag(uint8_t v)
{
    return v <= 1;
}

int vq_restore(struct vq *q, const struct vq_state *st, const struct guest_mem *mem,
               uint16_t queue_max, char *err, size_t errlen)
{
    const char *why = NULL;

    vq_reset(q);
    if (!flag(st->ready) || !flag(st->active) || !flag(st->event_idx) || !flag(st->broken) ||
        !flag(st->quiet) || !flag(st->signalled_valid) || st->pad[0] || st->pad[1])
        why = "a flag that is neither 0 nor 1";
    else if (st->size > queue_max)
        why = "size above the device's maximum";
    else if (st->active && !st->ready)
        why = "active but not ready";
    else if (!st->active && (st->last_avail || st->next_used || st->signalled_used ||
                             st->event_idx || st->broken || st->quiet || st->signalled_valid))
        why = "device-side state on a queue that is not active";
    /* Chains popped and not answered yet: at most one ring's worth. */
    else if (st->active && (uint16_t)(st->last_avail - st->next_used) > st->size)
        why = "more chains in flight than the queue holds";
    if (why)
        return errf(err, errlen, -EINVAL, "%s", why);
    q->st = *st;
    if (!st->active)
        return 0; /* what the driver wrote so far: checked again at DRIVER_OK */
    int ret = map(q, mem, queue_max, &why);
    if (ret) {
        vq_reset(q);
        return errf(err, errlen, -EINVAL, "%s", why);
    }
    return 0;
}

void vq_reset(struct vq *q)
{
    memset(q, 0, sizeof(*q));
}

static int broken(struct vq *q)
{
    q->st.broken = true;
    return -EINVAL;
}

/* Re-arms the driver's notifications and says whether more work arrived meanwhile
 * (spec 2.7.10: avail_event; 2.7.7: the used ring flags without EVENT_IDX). */
static bool rearm_and_recheck(struct vq *q)
{
    if (q->st.event_idx)
        store16(q->used + USED_RING + 8 * (size_t)q->st.size, q->st.last_avail);
    else
        store16(q->used + USED_FLAGS, 0);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return load16(q->avail + AVAIL_IDX) != q->st.last_avail;
}

/* Copies descriptor i into d (one read of guest memory). */
static void read_desc(const struct vq *q, uint16_t i, struct desc *d)
{
    memcpy(d, q->desc + 16 * (size_t)i, sizeof(*d));
}

int vq_pop(struct vq *q, const struct guest_mem *mem, struct vq_chain *c)
{
    struct desc d;

    if (!q->st.active || q->st.broken)
        return q->st.broken ? -EINVAL : 0;
    uint16_t avail_idx = load16(q->avail + AVAIL_IDX);
    if (avail_idx == q->st.last_avail) {
        if (q->st.quiet || !rearm_and_recheck(q))
            return 0;
        avail_idx = load16(q->avail + AVAIL_IDX);
    }
    /* The driver can be at most one ring ahead of us (spec 2.7.13.3: idx wraps at 2^16). */
    if ((uint16_t)(avail_idx - q->st.last_avail) > q->st.size)
        return broken(q);
    uint16_t head = load16(q->avail + AVAIL_RING + 2 * (size_t)(q->st.last_avail % q->st.size));
    if (head >= q->st.size)
        return broken(q);

    memset(c, 0, offsetof(struct vq_chain, iov));
    c->head = head;
    uint16_t i = head;
    /* A chain visits at most size descriptors: a longer one loops (spec 2.7.5.2). */
    for (unsigned ttl = q->st.size;; ttl--) {
        if (ttl == 0)
            return broken(q);
        read_desc(q, i, &d);
        /* VIRTIO_F_INDIRECT_DESC is not offered (spec 2.7.5.3.1). */
        if (d.flags & VRING_DESC_F_INDIRECT)
            return broken(q);
        bool writable = d.flags & VRING_DESC_F_WRITE;
        /* Device-readable descriptors come first (spec 2.7.4.2). */
        if (!writable && c->niov > c->nout)
            return broken(q);
        uint32_t *total = writable ? &c->in_len : &c->out_len;
        if (__builtin_add_overflow(*total, d.len, total))
            return broken(q);
        if (d.len) {
            void *p = gm_ptr(mem, d.addr, d.len);
            if (!p || c->niov >= VQ_MAX_SIZE)
                return broken(q);
            if (writable) /* the device will write it: the next Diff snapshot must hold it */
                gm_mark_dirty(mem, d.addr, d.len);
            c->iov[c->niov].iov_base = p;
            c->iov[c->niov].iov_len = d.len;
            c->niov++;
            if (!writable)
                c->nout = c->niov;
        }
        if (!(d.flags & VRING_DESC_F_NEXT))
            break;
        if (d.next >= q->st.size)
            return broken(q);
        i = d.next;
    }
    q->st.last_avail++;
    return 1;
}

void vq_unpop(struct vq *q)
{
    if (!q->st.active)
        return;
    q->st.last_avail--;
    if (q->st.event_idx) /* the driver kicks again for it (an earlier avail_event is harmless) */
        store16(q->used + USED_RING + 8 * (size_t)q->st.size, q->st.last_avail);
}

bool vq_kick_on_more(struct vq *q)
{
    if (!q->st.active || q->st.broken)
        return false;
    uint16_t idx = load16(q->avail + AVAIL_IDX);
    if (q->st.event_idx)
        store16(q->used + USED_RING + 8 * (size_t)q->st.size, idx);
    else
        store16(q->used + USED_FLAGS, 0);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return load16(q->avail + AVAIL_IDX) != idx;
}

uint16_t vq_avail_idx(const struct vq *q)
{
    return q->st.active ? load16(q->avail + AVAIL_IDX) : 0;
}

void vq_set_quiet(struct vq *q, bool quiet)
{
    q->st.quiet = quiet;
    /* With EVENT_IDX nothing to write: avail_event stays where the last re-arm put it, and a
     * driver already past it does not kick again (spec 2.7.10). */
    if (q->st.active && quiet && !q->st.event_idx)
        store16(q->used + USED_FLAGS, VRING_USED_F_NO_NOTIFY);
}

void vq_push(struct vq *q, uint16_t head, uint32_t len)
{
    if (!q->st.active)
        return;
    uint8_t *e = q->used + USED_RING + 8 * (size_t)(q->st.next_used % q->st.size);
    store32(e, head);
    store32(e + 4, len);
    q->st.next_used++;
    /* The element is visible before the index that publishes it (spec 2.7.8.2). */
    store16(q->used + USED_IDX, q->st.next_used);
}

bool vq_should_notify(struct vq *q)
{
    if (!q->st.active)
        return false;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!q->st.event_idx)
        return !(load16(q->avail + AVAIL_FLAGS) & VRING_AVAIL_F_NO_INTERRUPT);
    /* Spec 2.7.10: notify if used_event lies in [old, new). */
    uint16_t event = load16(q->avail + AVAIL_RING + 2 * (size_t)q->st.size);
    uint16_t old = q->st.signalled_used, now = q->st.next_used;
    bool valid = q->st.signalled_valid;
    q->st.signalled_used = now;
    q->st.signalled_valid = true;
    return !valid || (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}
