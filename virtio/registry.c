/* The registry: the closed set of devices ember offers and how a configuration becomes them.
 * Today virtio-blk (one device per drive, the root drive first so that it is /dev/vda);
 * virtio-net and virtio-vsock join here. No other device type and no PCI, on purpose: the
 * guest-facing surface stays this small. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "blk.h"
#include "virtio.h"

static int add_drive(struct virtio_devs *v, const struct vm_drive *d, struct vm_stats *stats,
                     char *err, size_t errlen)
{
    struct vblk *b = vblk_create(d, stats, err, errlen);
    return b ? virtio_add(v, &vblk_ops, b, d->id, err, errlen) : -EINVAL;
}

struct virtio_devs *virtio_open(const struct vm_config *cfg, const struct guest_mem *mem,
                                struct vm_stats *stats, char *err, size_t errlen)
{
    struct virtio_devs *v = virtio_create(mem);
    int ret = 0;

    if (!v) {
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    /* Attach order: the root drive first (/dev/vda), then the others as configured. */
    for (int root = 1; root >= 0 && !ret; root--)
        for (unsigned i = 0; i < cfg->ndrives && !ret; i++)
            if (cfg->drives[i].root == (bool)root)
                ret = add_drive(v, &cfg->drives[i], stats, err, errlen);
    if (ret) {
        virtio_destroy(v);
        return NULL;
    }
    return v;
}

int virtio_boot_args(const struct vm_config *cfg, char *cmdline, size_t len)
{
    size_t used = strnlen(cmdline, len);

    for (unsigned i = 0; i < cfg->ndrives; i++) {
        if (!cfg->drives[i].root)
            continue;
        int w = snprintf(cmdline + used, len - used, " root=/dev/vda %s",
                         cfg->drives[i].read_only ? "ro" : "rw");
        if (w < 0 || (size_t)w >= len - used)
            return -ENAMETOOLONG;
        break;
    }
    return 0;
}

int virtio_drive_update(struct virtio_devs *v, const struct vm_drive *drive, const char *path,
                        const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                        size_t errlen)
{
    struct vblk_backing bk = {.fd = -1};
    struct vblk_update upd = {.path = path, .bw = bw, .ops = ops};

    if (path) { /* opened before the device's lock is taken: a vCPU never waits for open() */
        int ret = vblk_open_backing(drive, path, &bk, err, errlen);
        if (ret)
            return ret;
        upd.backing = &bk;
    }
    int ret = virtio_update(v, VIRTIO_ID_BLOCK, drive->id, &upd, err, errlen);
    if (bk.fd >= 0) /* not taken by the device */
        close(bk.fd);
    if (ret == -ENOENT)
        return errf(err, errlen, ret, "no drive with id %s", drive->id);
    return ret;
}
