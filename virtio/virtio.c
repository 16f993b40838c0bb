/* The VM's virtio devices: open the backing files (before KVM and before any sandbox), announce
 * the devices on the kernel command line, attach them to KVM and the MMIO bus, and run them on
 * the event loop through one epoll fd (nested in the loop's own set). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "virtio.h"

#define TOK_DEV_FD 0x10 /* token slots: queue index, or TOK_DEV_FD + a device fd index */

struct virtio_devs {
    int epfd;
    unsigned n;
    bool has_root, root_ro;
    struct {
        struct vmmio_dev t;
        struct vblk *blk;
        bool inited;
    } d[VIRTIO_MMIO_MAX_DEVS];
};

struct virtio_devs *virtio_open(const struct vm_drive *drives, unsigned n,
                                const struct guest_mem *mem, struct vm_stats *stats, char *err,
                                size_t errlen)
{
    struct virtio_devs *v = calloc(1, sizeof(*v));
    const struct vm_drive *order[VIRTIO_MMIO_MAX_DEVS];
    unsigned k = 0;

    if (!v) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    v->epfd = -1;
    if (n > VIRTIO_MMIO_MAX_DEVS) {
        errf(err, errlen, -EINVAL, "at most %u drives", VIRTIO_MMIO_MAX_DEVS);
        goto fail;
    }
    /* Attach order: the root drive first (/dev/vda), then the others as given. */
    for (unsigned i = 0; i < n; i++) {
        if (!drives[i].root)
            continue;
        if (v->has_root) {
            errf(err, errlen, -EINVAL, "more than one root drive");
            goto fail;
        }
        v->has_root = true;
        v->root_ro = drives[i].read_only;
        order[k++] = &drives[i];
    }
    for (unsigned i = 0; i < n; i++)
        if (!drives[i].root)
            order[k++] = &drives[i];
    for (unsigned i = 0; i < k; i++) {
        v->d[i].blk = vblk_create(order[i], err, errlen);
        if (!v->d[i].blk)
            goto fail;
        v->n = i + 1;
        int ret = vmmio_init(&v->d[i].t, &vblk_ops, v->d[i].blk, mem, i);
        if (ret) {
            errf(err, errlen, ret, "virtio-mmio: %s", strerror(-ret));
            goto fail;
        }
        v->d[i].inited = true;
        vblk_bind(v->d[i].blk, &v->d[i].t, stats);
    }
    return v;
fail:
    virtio_destroy(v);
    return NULL;
}

int virtio_cmdline(const struct virtio_devs *v, char *cmdline, size_t len)
{
    size_t used = strlen(cmdline);
    int w;

    if (v->has_root) {
        w = snprintf(cmdline + used, len - used, " root=/dev/vda %s", v->root_ro ? "ro" : "rw");
        if (w < 0 || (size_t)w >= len - used)
            return -ENAMETOOLONG;
        used += (size_t)w;
    }
    for (unsigned i = 0; i < v->n; i++) {
        w = vmmio_cmdline(&v->d[i].t, cmdline + used, len - used);
        if (w < 0 || (size_t)w >= len - used)
            return -ENAMETOOLONG;
        used += (size_t)w;
    }
    return 0;
}

/* Queue notifiers are edge-triggered and never read: every guest kick is an event of its own,
 * and a wake-up runs the queue until it is empty, so nothing is lost (one syscall less per
 * kick). The device fds (io_uring ring, rate-limiter timer) are level-triggered. */
static int watch(struct virtio_devs *v, int fd, unsigned dev, unsigned slot)
{
    uint32_t events = slot < TOK_DEV_FD ? EPOLLIN | EPOLLET : EPOLLIN;
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)dev << 8 | slot};
    return fd < 0 || epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

int virtio_attach(struct virtio_devs *v, int vm_fd, struct bus *mmio)
{
    v->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (v->epfd < 0)
        return -errno;
    for (unsigned i = 0; i < v->n; i++) {
        struct vmmio_dev *t = &v->d[i].t;
        int fds[VBLK_NFDS], ret = vmmio_attach_kvm(t, vm_fd);
        for (unsigned q = 0; !ret && q < t->ops->nqueues; q++)
            ret = watch(v, t->notify_fd[q], i, q);
        vblk_fds(v->d[i].blk, fds);
        for (unsigned f = 0; !ret && f < VBLK_NFDS; f++)
            ret = watch(v, fds[f], i, TOK_DEV_FD + f);
        if (ret)
            return ret;
        struct bus_dev bd = {.base = t->base,
                             .len = VIRTIO_MMIO_LEN,
                             .read = vmmio_read,
                             .write = vmmio_write,
                             .opaque = t};
        ret = bus_add(mmio, &bd);
        if (ret)
            return ret;
    }
    return 0;
}

int virtio_fd(const struct virtio_devs *v)
{
    return v ? v->epfd : -1;
}

void virtio_poll(struct virtio_devs *v)
{
    struct epoll_event evs[16];
    int n = epoll_wait(v->epfd, evs, sizeof(evs) / sizeof(evs[0]), 0);

    for (int i = 0; i < n; i++) {
        unsigned dev = (unsigned)(evs[i].data.u64 >> 8), slot = evs[i].data.u64 & 0xff;
        if (dev >= v->n)
            continue;
        if (slot >= TOK_DEV_FD) {
            vblk_event(v->d[dev].blk, slot - TOK_DEV_FD);
            continue;
        }
        if (slot < VIRTIO_MAX_QUEUES)
            vmmio_notify(&v->d[dev].t, slot);
    }
}

void virtio_destroy(struct virtio_devs *v)
{
    if (!v)
        return;
    if (v->epfd >= 0)
        close(v->epfd);
    for (unsigned i = 0; i < v->n; i++) {
        if (v->d[i].inited)
            vmmio_destroy(&v->d[i].t);
        vblk_destroy(v->d[i].blk);
    }
    free(v);
}

int virtio_drive_update(struct virtio_devs *v, const char *id, const char *path,
                        const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                        size_t errlen)
{
    for (unsigned i = 0; v && id && i < v->n; i++) {
        if (strcmp(vblk_id(v->d[i].blk), id) != 0)
            continue;
        struct vmmio_dev *t = &v->d[i].t;
        pthread_mutex_lock(&t->lock); /* vCPU threads read the config space meanwhile */
        int ret = vblk_update(v->d[i].blk, path, bw, ops, err, errlen);
        pthread_mutex_unlock(&t->lock);
        return ret;
    }
    return errf(err, errlen, -ENOENT, "no drive with id %s", id ? id : "(none)");
}
