/* virtio-mmio version 2 transport (spec 4.2): the register file, the device-status state
 * machine, queue set-up, ioeventfd per queue and one irqfd per device. vCPU threads reach the
 * registers through the MMIO bus; the event loop runs the device when a queue is notified or
 * one of its fds is ready. Every call into the device holds the transport lock, taken here and
 * nowhere else. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "mmio.h"
#include "mmio_regs.h"

#define S_ACK VIRTIO_STATUS_ACKNOWLEDGE
#define S_DRV VIRTIO_STATUS_DRIVER
#define S_FOK VIRTIO_STATUS_FEATURES_OK
#define S_DOK VIRTIO_STATUS_DRIVER_OK

/* The driver's initialization sequence, one bit at a time (spec 3.1.1); FAILED may be set at
 * any point, and 0 (reset) is always allowed. */
static const struct {
    uint32_t from, to;
} vmmio_transitions[] = {
        {0, S_ACK},
        {S_ACK, S_ACK | S_DRV},
        {S_ACK | S_DRV, S_ACK | S_DRV | S_FOK},
        {S_ACK | S_DRV | S_FOK, S_ACK | S_DRV | S_FOK | S_DOK},
};

int vmmio_init(struct vmmio_dev *t, const struct virtio_dev_ops *ops, void *dev,
               const struct guest_mem *mem, unsigned index)
{
    memset(t, 0, sizeof(*t));
    if (index >= VIRTIO_MMIO_MAX_DEVS || ops->nqueues > VIRTIO_MAX_QUEUES ||
        ops->queue_max > VQ_MAX_SIZE || !ops->features || !ops->destroy ||
        ops->config_size > VIRTIO_MMIO_LEN - REG_CONFIG)
        return -EINVAL;
    int ret = vmmio_regs_init(t);
    if (ret)
        return ret;
    ret = pthread_mutex_init(&t->lock, NULL);
    if (ret) {
        vmmio_regs_free(t);
        return -ret;
    }
    t->ops = ops;
    t->dev = dev;
    t->mem = mem;
    t->base = VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_LEN;
    t->gsi = VIRTIO_MMIO_GSI_BASE + index;
    t->irq_fd = t->ack_fd = -1;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        t->notify_fd[i] = -1;
    vmmio_regs_sync(t);
    return 0;
}

/* A new eventfd that KVM signals when the guest writes the 32-bit value v at addr: the write
 * completes in KVM, without an exit to the VMM. Returns 0 or -errno. */
static int ioeventfd(int vm_fd, uint64_t addr, uint32_t v, int *fd)
{
    *fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (*fd < 0)
        return -errno;
    struct kvm_ioeventfd io = {.datamatch = v,
                               .addr = addr,
                               .len = 4,
                               .fd = *fd,
                               .flags = KVM_IOEVENTFD_FLAG_DATAMATCH};
    return ioctl(vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

int vmmio_attach_kvm(struct vmmio_dev *t, int vm_fd)
{
    t->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->irq_fd < 0)
        return -errno;
    struct kvm_irqfd irqfd = {.fd = (uint32_t)t->irq_fd, .gsi = t->gsi};
    if (ioctl(vm_fd, KVM_IRQFD, &irqfd) < 0)
        return -errno;
    /* The guest's QueueNotify write of i wakes the event loop through notify_fd[i]. */
    for (unsigned i = 0; i < t->ops->nqueues; i++) {
        int ret = ioeventfd(vm_fd, t->base + REG_QUEUE_NOTIFY, i, &t->notify_fd[i]);
        if (ret)
            return ret;
    }
    /* The interrupt handler's acknowledgement of a used buffer ends in KVM, unread: USED stays
     * set until a reset (virtio/README.md, "The register page"). */
    int ret = ioeventfd(vm_fd, t->base + REG_INT_ACK, VIRTIO_INT_USED, &t->ack_fd);
    if (ret)
        return ret;
    t->ack_sticky = VIRTIO_INT_USED;
    /* Register reads without an exit, where KVM can map a page read-only (all of x86 KVM). */
    unsigned index = (unsigned)((t->base - VIRTIO_MMIO_BASE) / VIRTIO_MMIO_LEN);
    ret = vmmio_regs_map(t, vm_fd, VIRTIO_MMIO_SLOT_BASE + index);
    return ret == -ENOTSUP ? 0 : ret;
}

void vmmio_destroy(struct vmmio_dev *t)
{
    if (!t->ops)
        return;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        if (t->notify_fd[i] >= 0)
            close(t->notify_fd[i]);
    if (t->irq_fd >= 0)
        close(t->irq_fd);
    if (t->ack_fd >= 0)
        close(t->ack_fd);
    vmmio_regs_free(t);
    pthread_mutex_destroy(&t->lock);
    t->ops = NULL;
}

void vmmio_signal(struct vmmio_dev *t, unsigned bits)
{
    static const uint64_t one = 1;
    vmmio_regs_isr_set(t, bits);
    if (t->irq_fd >= 0 && write(t->irq_fd, &one, sizeof(one)) < 0)
        log_debug("virtio-mmio %#llx: irqfd: %s", (unsigned long long)t->base, strerror(errno));
}

void vmmio_fail(struct vmmio_dev *t)
{
    uint64_t dropped;
    if (t->st.status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    t->fail_count++;
    /* A guest can break and reset its queues in a loop: one line per interval at most. */
    if (ratelog_allow(&t->fail_log, clock_ns(), VMMIO_FAIL_LOG_NS, &dropped))
        log_warn("virtio-mmio %#llx: bad queue, device needs a reset (failure %llu; %llu more "
                 "since the last such line not logged)",
                 (unsigned long long)t->base, (unsigned long long)t->fail_count,
                 (unsigned long long)dropped);
    t->st.status |= VIRTIO_STATUS_NEEDS_RESET;
    t->st.config_generation++;
    vmmio_regs_sync(t);
    vmmio_signal(t, VIRTIO_INT_CONFIG);
}

void vmmio_used(struct vmmio_dev *t, unsigned qi)
{
    if (qi < t->ops->nqueues && vq_should_notify(&t->queues[qi]))
        vmmio_signal(t, VIRTIO_INT_USED);
}

struct vq *vmmio_queue(struct vmmio_dev *t, unsigned qi)
{
    return &t->queues[qi < VIRTIO_MAX_QUEUES ? qi : 0];
}

const struct guest_mem *vmmio_mem(const struct vmmio_dev *t)
{
    return t->mem;
}

bool vmmio_running(const struct vmmio_dev *t)
{
    return t->st.activated && !(t->st.status & VIRTIO_STATUS_NEEDS_RESET);
}

bool vmmio_unlocked(struct vmmio_dev *t, void (*fn)(void *ctx), void *ctx)
{
    uint64_t resets = t->resets;
    pthread_mutex_unlock(&t->lock);
    fn(ctx);
    pthread_mutex_lock(&t->lock);
    return t->resets != resets || !vmmio_running(t);
}

uint64_t vmmio_features(const struct vmmio_dev *t)
{
    return t->st.drv_features;
}

void vmmio_watch(struct vmmio_dev *t, unsigned which, uint32_t events)
{
    if (t->watch)
        t->watch(t->watch_opaque, which, events);
}

/* A change while the driver sets the device up (status neither 0 nor DRIVER_OK yet) gets its
 * interrupt at DRIVER_OK: Linux reads the config (virtio-blk its capacity) before DRIVER_OK,
 * and a change between that read and DRIVER_OK would otherwise never be seen (a Kata drive
 * hot-swapped while the guest probed it stayed empty in the guest). Linux keeps a config
 * interrupt that comes during its probe until the probe is done. */
void vmmio_config_changed(struct vmmio_dev *t)
{
    t->st.config_generation++;
    vmmio_regs_publish(t);
    if (t->st.activated)
        vmmio_signal(t, VIRTIO_INT_CONFIG);
    else if (t->st.status)
        t->config_pending = true;
}

int vmmio_cmdline(const struct vmmio_dev *t, char *buf, size_t len)
{
    return snprintf(buf, len, " virtio_mmio.device=4K@0x%llx:%u", (unsigned long long)t->base,
                    t->gsi);
}

/* Config space accesses stay inside the device's config_size. */
static bool in_config(const struct vmmio_dev *t, uint64_t off, uint32_t len)
{
    uint64_t rel = off - REG_CONFIG;
    return rel < t->ops->config_size && len <= t->ops->config_size - rel;
}

static struct vq *selected(struct vmmio_dev *t)
{
    return t->st.queue_sel < t->ops->nqueues ? &t->queues[t->st.queue_sel] : NULL;
}

/* Device reset (spec 4.2.2.1: writing 0 to Status). */
static void reset(struct vmmio_dev *t)
{
    if (t->ops->reset)
        t->ops->reset(t->dev, t);
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        vq_reset(&t->queues[i]);
    t->st.status = 0;
    t->st.queue_sel = t->st.dev_features_sel = t->st.drv_features_sel = 0;
    t->st.drv_features = 0;
    t->st.activated = false;
    t->config_pending = false;
    vmmio_regs_isr_store(t, 0);
    t->resets++;
}

/* DRIVER_OK: map every queue the driver made ready, then start the device. */
static int activate(struct vmmio_dev *t)
{
    bool config_pending = t->config_pending;
    t->config_pending = false;
    bool event_idx = t->st.drv_features & (1ULL << VIRTIO_F_RING_EVENT_IDX);
    for (unsigned i = 0; i < t->ops->nqueues; i++) {
        struct vq *q = &t->queues[i];
        if (!q->st.ready)
            continue;
        int ret = vq_activate(q, t->mem, event_idx);
        if (ret)
            return ret;
    }
    int ret = t->ops->activate ? t->ops->activate(t->dev, t) : 0;
    if (!ret)
        t->st.activated = true;
    if (!ret && config_pending)
        vmmio_signal(t, VIRTIO_INT_CONFIG);
    return ret;
}

static void write_status(struct vmmio_dev *t, uint32_t v)
{
    if (v == 0) {
        reset(t);
        return;
    }
    if (v == (t->st.status | VIRTIO_STATUS_FAILED)) {
        t->st.status = v;
        return;
    }
    for (size_t i = 0; i < sizeof(vmmio_transitions) / sizeof(vmmio_transitions[0]); i++) {
        if (vmmio_transitions[i].from != t->st.status || vmmio_transitions[i].to != v)
            continue;
        if (v & S_FOK && !(t->st.status & S_FOK)) {
            /* Spec 3.1.1 step 5-6: features outside the offer leave FEATURES_OK clear. */
            uint64_t offered = t->ops->features(t->dev);
            if ((t->st.drv_features & ~offered) ||
                !(t->st.drv_features & (1ULL << VIRTIO_F_VERSION_1)))
                return;
        }
        t->st.status = v;
        if (v & S_DOK && activate(t))
            vmmio_fail(t);
        return;
    }
    log_debug("virtio-mmio %#llx: status %#x -> %#x refused", (unsigned long long)t->base,
              t->st.status, v);
}

/* What the guest reads is the register page (mmio_regs.c), also when a read exits: no lock,
 * so a vCPU never waits for the event loop's I/O. */
void vmmio_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
    vmmio_regs_read(opaque, off, data, len);
}

/* Queue registers may change only while the queue is not ready and the driver has not
 * finished (spec 4.2.2.3). Returns the queue or NULL. */
static struct vq *writable_queue(struct vmmio_dev *t)
{
    struct vq *q = selected(t);
    if (!q || q->st.ready || t->st.status & (S_DOK | VIRTIO_STATUS_FAILED))
        return NULL;
    return q;
}

static void set_half(uint64_t *reg, bool hi, uint32_t v)
{
    *reg = hi ? (*reg & 0xffffffffULL) | (uint64_t)v << 32 : (*reg & ~0xffffffffULL) | v;
}

static void write_queue_reg(struct vmmio_dev *t, uint64_t off, uint32_t v)
{
    struct vq *q = writable_queue(t);
    if (!q)
        return;
    switch (off) {
    case REG_QUEUE_NUM:
        q->st.size = v <= t->ops->queue_max ? (uint16_t)v : 0;
        break;
    case REG_QUEUE_READY:
        q->st.ready = v == 1;
        break;
    case REG_QUEUE_DESC_LO:
    case REG_QUEUE_DESC_HI:
        set_half(&q->st.desc_gpa, off == REG_QUEUE_DESC_HI, v);
        break;
    case REG_QUEUE_AVAIL_LO:
    case REG_QUEUE_AVAIL_HI:
        set_half(&q->st.avail_gpa, off == REG_QUEUE_AVAIL_HI, v);
        break;
    default:
        set_half(&q->st.used_gpa, off == REG_QUEUE_USED_HI, v);
        break;
    }
}

void vmmio_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
    struct vmmio_dev *t = opaque;
    uint32_t v;

    if (off == REG_INT_ACK && len == 4) { /* lock-free, as the status read */
        memcpy(&v, data, 4);
        vmmio_regs_isr_clear(t, v & ~t->ack_sticky);
        return;
    }
    pthread_mutex_lock(&t->lock);
    if (off >= REG_CONFIG) {
        /* Config space belongs to a driver: refused before DRIVER and after FAILED. */
        if ((t->st.status & S_DRV) && !(t->st.status & VIRTIO_STATUS_FAILED) &&
            t->ops->config_write && in_config(t, off, len))
            t->ops->config_write(t->dev, off - REG_CONFIG, data, len);
        goto out;
    }
    if (len != 4 || (off & 3))
        goto out;
    memcpy(&v, data, 4);
    switch (off) {
    case REG_DEV_FEATURES_SEL: /* write-only selectors: any value out of range is "none" */
        t->st.dev_features_sel = v < 2 ? v : 2;
        break;
    case REG_DRV_FEATURES:
        /* Features are written between DRIVER and FEATURES_OK only (spec 3.1.1). */
        if ((t->st.status & (S_DRV | S_FOK | VIRTIO_STATUS_FAILED)) == S_DRV &&
            t->st.drv_features_sel < 2)
            set_half(&t->st.drv_features, t->st.drv_features_sel == 1, v);
        break;
    case REG_DRV_FEATURES_SEL:
        t->st.drv_features_sel = v < 2 ? v : 2;
        break;
    case REG_QUEUE_SEL:
        t->st.queue_sel = v < t->ops->nqueues ? v : t->ops->nqueues;
        break;
    case REG_QUEUE_NUM:
    case REG_QUEUE_READY:
    case REG_QUEUE_DESC_LO:
    case REG_QUEUE_DESC_HI:
    case REG_QUEUE_AVAIL_LO:
    case REG_QUEUE_AVAIL_HI:
    case REG_QUEUE_USED_LO:
    case REG_QUEUE_USED_HI:
        write_queue_reg(t, off, v);
        break;
    case REG_QUEUE_NOTIFY: /* caught by the ioeventfds; here only for a queue that has none */
        break;
    case REG_STATUS:
        write_status(t, v);
        break;
    default:
        break;
    }
out:
    vmmio_regs_sync(t); /* before the vCPU goes on: its next read sees what it wrote */
    pthread_mutex_unlock(&t->lock);
}

void vmmio_notify(struct vmmio_dev *t, unsigned qi)
{
    pthread_mutex_lock(&t->lock);
    if (vmmio_running(t) && qi < t->ops->nqueues && t->queues[qi].st.active &&
        t->ops->process_queue && t->ops->process_queue(t->dev, t, qi) < 0)
        vmmio_fail(t);
    pthread_mutex_unlock(&t->lock);
}

void vmmio_event(struct vmmio_dev *t, unsigned which)
{
    pthread_mutex_lock(&t->lock);
    /* Called while not running too: the device takes its completions off. A failure counts
     * only while the driver runs the device. */
    if (t->ops->event && t->ops->event(t->dev, t, which) < 0 && vmmio_running(t))
        vmmio_fail(t);
    pthread_mutex_unlock(&t->lock);
}

int vmmio_quiesce(struct vmmio_dev *t)
{
    pthread_mutex_lock(&t->lock);
    int ret = t->ops->quiesce ? t->ops->quiesce(t->dev, t) : 0;
    pthread_mutex_unlock(&t->lock);
    return ret;
}

void vmmio_resumed(struct vmmio_dev *t)
{
    if (!t->ops->resumed)
        return;
    pthread_mutex_lock(&t->lock);
    t->ops->resumed(t->dev, t);
    pthread_mutex_unlock(&t->lock);
}

int vmmio_update(struct vmmio_dev *t, const void *upd, char *err, size_t errlen)
{
    if (!t->ops->update)
        return errf(err, errlen, -ENOTSUP, "the %s device cannot be updated", t->ops->name);
    pthread_mutex_lock(&t->lock);
    int ret = t->ops->update(t->dev, t, upd, err, errlen);
    vmmio_regs_sync(t);
    pthread_mutex_unlock(&t->lock);
    return ret;
}
