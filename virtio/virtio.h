/* ember virtio: the VM's virtio-mmio devices as the VMM sees them (virtio.c: the device set;
 * registry.c: which devices a configuration makes). Inside virtio/: queue.h (virtqueue),
 * device.h (what a device implements and uses), mmio.h (the transport), blk.h (virtio-blk). */
#ifndef EMBER_VIRTIO_H
#define EMBER_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../vmm/vmm.h"

struct loop;
struct virtio_dev_ops;
struct virtio_devs;
struct vmmio_dev;

/* ---- the device set (virtio.c): knows no device type by name ----------------------------- */
/* virtio_create(mem): Returns an empty set whose devices use mem, or NULL (out of memory). */
struct virtio_devs *virtio_create(const struct guest_mem *mem);
/* virtio_add(v, ops, dev, id, err, errlen): adds device dev as the next virtio-mmio device
 * (its slot gives its address and GSI); v owns dev from now on, also on failure (ops->destroy).
 * id names it for virtio_update (may be ""). Returns 0, or -errno with a reason in err. */
int virtio_add(struct virtio_devs *v, const struct virtio_dev_ops *ops, void *dev, const char *id,
               char *err, size_t errlen);
/* virtio_cmdline(v, cmdline, len): appends one virtio_mmio.device= per device.
 * Returns 0 or -ENAMETOOLONG. */
int virtio_cmdline(const struct virtio_devs *v, char *cmdline, size_t len);
/* virtio_attach(v, vm_fd, mmio, loop): irqfds, ioeventfds, bus entries, and every queue
 * notifier and device fd registered with the event loop. Returns 0 or -errno. */
int virtio_attach(struct virtio_devs *v, int vm_fd, struct bus *mmio, struct loop *loop);
/* virtio_update(v, device_id, id, upd, err, errlen): the update op of the device of that type
 * and id, under its transport's lock (event-loop thread). Returns its result, or -ENOENT. */
int virtio_update(struct virtio_devs *v, uint32_t device_id, const char *id, const void *upd,
                  char *err, size_t errlen);
/* virtio_count(v): Returns how many devices v has (0 for NULL). */
unsigned virtio_count(const struct virtio_devs *v);
/* virtio_transport(v, i, id): Returns device i's transport (mmio.h: for snapshots), with *id
 * (may be NULL) its configured id, or NULL past the end. */
struct vmmio_dev *virtio_transport(struct virtio_devs *v, unsigned i, const char **id);
/* virtio_resumed(v): tells every device that the vCPUs run again (safe on NULL). */
void virtio_resumed(struct virtio_devs *v);
/* virtio_destroy(v): takes the fds off the event loop and closes everything (safe on NULL). */
void virtio_destroy(struct virtio_devs *v);

/* ---- the registry (registry.c): the configuration's devices ------------------------------ */
/* virtio_open(cfg, mem, stats, err, errlen): every device cfg asks for, in attach order (the
 * root drive first: /dev/vda; the network interfaces after the drives, the vsock last), counting
 * into stats (may be NULL). Returns the set, or NULL with a reason in err. */
struct virtio_devs *virtio_open(const struct vm_config *cfg, const struct guest_mem *mem,
                                struct vm_stats *stats, char *err, size_t errlen);
/* virtio_boot_args(cfg, cmdline, len): appends what the devices tell the kernel besides their
 * addresses (root=/dev/vda ro|rw). Returns 0 or -ENAMETOOLONG. */
int virtio_boot_args(const struct vm_config *cfg, char *cmdline, size_t len);
/* virtio_drive_update(v, drive, path, bw, ops, err, errlen): PATCH /drives/{id} on a running
 * VM (event-loop thread) for the configured drive: path (NULL: unchanged) is opened as the
 * drive's mode says, then swapped in under the device's lock; bw/ops (NULL: unchanged) replace
 * the rate limiter's buckets. Returns 0, -ENOENT for a drive the VM does not have, or -errno
 * with a reason in err. */
int virtio_drive_update(struct virtio_devs *v, const struct vm_drive *drive, const char *path,
                        const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                        size_t errlen);

/* virtio_net_check(net, err, errlen): opens the interface's TAP as the device will, and
 * closes it (PUT /network-interfaces). Returns 0, or -errno with a reason in err. */
int virtio_net_check(const struct vm_net *net, char *err, size_t errlen);
/* virtio_net_update(v, net, rx_bw, rx_ops, tx_bw, tx_ops, err, errlen): PATCH
 * /network-interfaces/{id} on a running VM (event-loop thread): the buckets given (NULL:
 * unchanged) replace the device's. Returns 0, -ENOENT for an interface the VM does not have,
 * or -errno with a reason in err. */
int virtio_net_update(struct virtio_devs *v, const struct vm_net *net,
                      const struct vm_bucket *rx_bw, const struct vm_bucket *rx_ops,
                      const struct vm_bucket *tx_bw, const struct vm_bucket *tx_ops, char *err,
                      size_t errlen);

/* virtio_vsock_check(vs, err, errlen): binds the vsock's Unix socket as the device will, then
 * closes and removes it (PUT /vsock: a path that cannot be bound is refused there).
 * Returns 0, or -errno with a reason in err. */
int virtio_vsock_check(const struct vm_vsock *vs, char *err, size_t errlen);

/* ---- drive options (drive.c) ------------------------------------------------------------- */
/* drive_parse(d, spec, root, err, errlen): fills d from a --drive spec, or from a --rootfs path
 * when root. Returns 0, or -EINVAL with a reason in err. */
int drive_parse(struct vm_drive *d, const char *spec, bool root, char *err, size_t errlen);

#endif
