/* The registry: the closed set of devices ember offers and how a configuration becomes them.
 * virtio-blk (one device per drive, the root drive first so that it is /dev/vda), then
 * virtio-net (one device per network interface, as configured), then virtio-vsock. No other
 * device type and no PCI, on purpose: the guest-facing surface stays this small. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "blk.h"
#include "net.h"
#include "virtio.h"
#include "vsock.h"

static int add_drive(struct virtio_devs *v, const struct vm_drive *d, struct vm_stats *stats,
                     char *err, size_t errlen)
{
    struct vblk *b = vblk_create(d, stats, err, errlen);
    return b ? virtio_add(v, &vblk_ops, b, d->id, err, errlen) : -EINVAL;
}

static int add_net(struct virtio_devs *v, const struct vm_net *n, struct vm_stats *stats, char *err,
                   size_t errlen)
{
    struct vnet *d = vnet_create(n, stats, err, errlen);
    return d ? virtio_add(v, &vnet_ops, d, n->id, err, errlen) : -EINVAL;
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
    for (unsigned i = 0; i < cfg->nnets && !ret; i++)
        ret = add_net(v, &cfg->nets[i], stats, err, errlen);
    if (cfg->vsock.enabled && !ret) {
        struct vsock *vs = vsock_create(&cfg->vsock, stats, err, errlen);
        ret = vs ? virtio_add(v, &vsock_ops, vs, "vsock", err, errlen) : -EINVAL;
    }
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

int virtio_net_check(const struct vm_net *net, char *err, size_t errlen)
{
    int fd = vnet_tap_open(net->host_dev_name, err, errlen);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

int virtio_net_update(struct virtio_devs *v, const struct vm_net *net,
                      const struct vm_bucket *rx_bw, const struct vm_bucket *rx_ops,
                      const struct vm_bucket *tx_bw, const struct vm_bucket *tx_ops, char *err,
                      size_t errlen)
{
    struct vnet_update upd = {rx_bw, rx_ops, tx_bw, tx_ops};
    int ret = virtio_update(v, VIRTIO_ID_NET, net->id, &upd, err, errlen);
    if (ret == -ENOENT)
        return errf(err, errlen, ret, "no network interface with id %s", net->id);
    return ret;
}

int virtio_vsock_check(const struct vm_vsock *vs, char *err, size_t errlen)
{
    int fd = vsock_listen(vs->uds_path, err, errlen);
    if (fd < 0)
        return fd;
    close(fd);
    unlink(vs->uds_path); /* bound again when the VM is built */
    return 0;
}
