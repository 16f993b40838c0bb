/* The VM's virtio-mmio devices: a list of (transport, device) entries that knows no device type
 * by name. The caller (registry.c) makes each device and adds it; this file gives it a slot
 * (address, GSI), announces it on the kernel command line, attaches it to KVM and the MMIO bus,
 * and registers its queue notifiers and device fds with the event loop, which calls into the
 * transport (mmio.c) for each. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "../vmm/loop.h"
#include "mmio.h"
#include "virtio.h"

#define ID_MAX 65

struct virtio_entry;

/* What the event loop hands back for one watched fd. */
struct virtio_slot {
    struct virtio_entry *e;
    unsigned which;
};

struct virtio_entry {
    struct vmmio_dev t;
    struct loop *loop; /* set when attached */
    char id[ID_MAX];
    int fd[VIRTIO_MAX_DEV_FDS]; /* the device's fds as registered */
    struct virtio_slot queue_slot[VIRTIO_MAX_QUEUES], fd_slot[VIRTIO_MAX_DEV_FDS];
};

struct virtio_devs {
    const struct guest_mem *mem;
    struct loop *loop; /* set by virtio_attach */
    unsigned n;
    struct virtio_entry d[VIRTIO_MMIO_MAX_DEVS];
};

struct virtio_devs *virtio_create(const struct guest_mem *mem)
{
    struct virtio_devs *v = calloc(1, sizeof(*v));
    if (v)
        v->mem = mem;
    return v;
}

int virtio_add(struct virtio_devs *v, const struct virtio_dev_ops *ops, void *dev, const char *id,
               char *err, size_t errlen)
{
    if (v->n >= VIRTIO_MMIO_MAX_DEVS) {
        ops->destroy(dev);
        return errf(err, errlen, -ENOSPC,
                    "at most %d virtio devices (one per free interrupt line, GSI 5 to 23)",
                    VIRTIO_MMIO_MAX_DEVS);
    }
    if (strlen(id) >= ID_MAX) {
        ops->destroy(dev);
        return errf(err, errlen, -EINVAL, "%s device id '%.16s...' is too long", ops->name, id);
    }
    struct virtio_entry *e = &v->d[v->n];
    int ret = vmmio_init(&e->t, ops, dev, v->mem, v->n);
    if (ret) {
        ops->destroy(dev);
        return errf(err, errlen, ret, "virtio-mmio %s: %s", ops->name, strerror(-ret));
    }
    snprintf(e->id, sizeof(e->id), "%s", id);
    v->n++;
    return 0;
}

int virtio_cmdline(const struct virtio_devs *v, char *cmdline, size_t len)
{
    size_t used = strnlen(cmdline, len);

    for (unsigned i = 0; i < v->n; i++) {
        int w = vmmio_cmdline(&v->d[i].t, cmdline + used, len - used);
        if (w < 0 || (size_t)w >= len - used)
            return -ENAMETOOLONG;
        used += (size_t)w;
    }
    return 0;
}

static void on_notify(void *opaque, uint32_t events)
{
    struct virtio_slot *s = opaque;
    (void)events;
    vmmio_notify(&s->e->t, s->which);
}

static void on_device_fd(void *opaque, uint32_t events)
{
    struct virtio_slot *s = opaque;
    (void)events;
    vmmio_event(&s->e->t, s->which);
}

/* vmmio_watch: 0 becomes EPOLLONESHOT, since epoll reports errors and hang-ups whatever the
 * mask (a TAP whose interface is gone is always "in error"): one more event, then silence. */
static void watch_fd(void *opaque, unsigned which, uint32_t events)
{
    struct virtio_entry *e = opaque;
    if (which < VIRTIO_MAX_DEV_FDS && e->loop && e->fd[which] >= 0 &&
        loop_modify(e->loop, e->fd[which], events ? events : EPOLLONESHOT) < 0)
        log_warn("virtio %s %s: cannot change what the loop watches", e->t.ops->name, e->id);
}

/* Queue notifiers are edge-triggered and never read: every guest kick is an event of its own,
 * and a wake-up runs the queue until it is empty, so nothing is lost (one syscall less per
 * kick). Device fds are watched as the device asks (level-triggered). */
static int attach_one(struct virtio_entry *e, int vm_fd, struct bus *mmio, struct loop *loop)
{
    struct vmmio_dev *t = &e->t;
    struct virtio_fd fds[VIRTIO_MAX_DEV_FDS];
    int ret = vmmio_attach_kvm(t, vm_fd);

    for (unsigned q = 0; !ret && q < t->ops->nqueues; q++) {
        e->queue_slot[q] = (struct virtio_slot){e, q};
        ret = loop_add(loop, t->notify_fd[q], EPOLLIN | EPOLLET, on_notify, &e->queue_slot[q]);
    }
    unsigned nfds = t->ops->fds ? t->ops->fds(t->dev, fds) : 0;
    for (unsigned f = 0; f < VIRTIO_MAX_DEV_FDS; f++)
        e->fd[f] = -1;
    for (unsigned f = 0; !ret && f < nfds && f < VIRTIO_MAX_DEV_FDS; f++) {
        e->fd_slot[f] = (struct virtio_slot){e, f};
        if (fds[f].fd >= 0)
            ret = loop_add(loop, fds[f].fd, fds[f].events, on_device_fd, &e->fd_slot[f]);
        if (!ret)
            e->fd[f] = fds[f].fd;
    }
    if (!ret) {
        pthread_mutex_lock(&t->lock);
        e->loop = loop;
        t->watch = watch_fd;
        t->watch_opaque = e;
        pthread_mutex_unlock(&t->lock);
    }
    if (ret)
        return ret;
    struct bus_dev bd = {.base = t->base,
                         .len = VIRTIO_MMIO_LEN,
                         .read = vmmio_read,
                         .write = vmmio_write,
                         .opaque = t};
    return bus_add(mmio, &bd);
}

int virtio_attach(struct virtio_devs *v, int vm_fd, struct bus *mmio, struct loop *loop)
{
    v->loop = loop;
    for (unsigned i = 0; i < v->n; i++) {
        int ret = attach_one(&v->d[i], vm_fd, mmio, loop);
        if (ret)
            return ret;
    }
    return 0;
}

int virtio_update(struct virtio_devs *v, uint32_t device_id, const char *id, const void *upd,
                  char *err, size_t errlen)
{
    for (unsigned i = 0; v && id && i < v->n; i++)
        if (v->d[i].t.ops->device_id == device_id && strcmp(v->d[i].id, id) == 0)
            return vmmio_update(&v->d[i].t, upd, err, errlen);
    return -ENOENT;
}

unsigned virtio_count(const struct virtio_devs *v)
{
    return v ? v->n : 0;
}

struct vmmio_dev *virtio_transport(struct virtio_devs *v, unsigned i, const char **id)
{
    if (!v || i >= v->n)
        return NULL;
    if (id)
        *id = v->d[i].id;
    return &v->d[i].t;
}

void virtio_resumed(struct virtio_devs *v)
{
    for (unsigned i = 0; v && i < v->n; i++)
        vmmio_resumed(&v->d[i].t);
}

void virtio_destroy(struct virtio_devs *v)
{
    if (!v)
        return;
    for (unsigned i = 0; i < v->n; i++) {
        struct vmmio_dev *t = &v->d[i].t;
        const struct virtio_dev_ops *ops = t->ops;
        void *dev = t->dev;
        struct virtio_fd fds[VIRTIO_MAX_DEV_FDS];
        unsigned nfds = v->loop && ops->fds ? ops->fds(dev, fds) : 0;
        for (unsigned f = 0; f < nfds && f < VIRTIO_MAX_DEV_FDS; f++)
            loop_remove(v->loop, fds[f].fd);
        for (unsigned q = 0; v->loop && q < ops->nqueues; q++)
            loop_remove(v->loop, t->notify_fd[q]);
        vmmio_destroy(t);
        ops->destroy(dev);
    }
    free(v);
}
