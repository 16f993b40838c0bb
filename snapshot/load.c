/* Restoring a snapshot (read and checked by read.c) in a fresh process: the guest RAM
 * mapped MAP_PRIVATE from the memory file (no page read now), the machine built as for a boot,
 * and then the saved state laid over it: vCPUs, the VM's interrupt controllers and clock, the
 * legacy devices, each virtio device. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "layout.h"
#include "../virtio/mmio.h"
#include "../virtio/virtio.h"
#include "snapshot.h"
#include "snapshot_file.h"
#include "../vmm/vmm.h"

static int map_memory(struct vm *vm, const struct snap_mem_backend *mb, char *err, size_t errlen)
{
    const char *mem_path = mb->path;
    struct stat st;
    uint64_t want = vm->cfg->mem_mib << 20;
    int fd = open(mem_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        return errf(err, errlen, -errno, "Cannot open the memory file %.256s: %s", mem_path,
                    strerror(errno));
    int ret = 0;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode))
        ret = errf(err, errlen, -EINVAL, "The memory file %.256s is not a regular file", mem_path);
    else if ((uint64_t)st.st_size != want)
        ret = errf(err, errlen, -EINVAL,
                   "The memory file %.256s has %lld bytes, the snapshot's guest RAM %llu", mem_path,
                   (long long)st.st_size, (unsigned long long)want);
    else if ((ret = gm_map_file(&vm->mem, want, fd)) == 0)
        vm->mem_tag_valid = snap_memory_tag(fd, &vm->mem_tag) == 0;
    else
        errf(err, errlen, ret, "Cannot map the memory file %.256s: %s", mem_path, strerror(-ret));
    if (!ret && mb->ws_record_path)
        ret = mb->nlayers || mb->ws_path
                      ? errf(err, errlen, -EINVAL,
                             "A working set is recorded on a whole memory file (no layers, no "
                             "working set)")
                      : snap_ws_record(vm, mb->ws_record_path, fd, mb->ws_after_ms, err, errlen);
    close(fd); /* the mapping holds the file */
    return ret;
}

/* The chain of memory images the snapshot stands on (none recorded: a format-1 file written
 * before chains, one image), and its Diff layers mapped over the base when given. */
static int restore_chain(struct vm *vm, const struct snap_file *f,
                         const struct snap_mem_backend *mem, char *err, size_t errlen)
{
    struct snap_layer read[SNAP_CHAIN_MAX];
    size_t n = 0;
    int ret = snap_chain_read(f, vm->mem.total / 4096, read, &n, err, errlen);

    if (ret)
        return ret;
    vm->chain = calloc(n, sizeof(*vm->chain));
    if (!vm->chain)
        return errf(err, errlen, -ENOMEM, "out of memory");
    vm->nchain = (unsigned)n;
    memcpy(vm->chain, read, n * sizeof(*read));
    if (!mem->nlayers) /* Firecracker's way: the memory file is whole (a Full, or merged) */
        return 0;
    int k = snap_base_image(vm->chain, n, vm->mem_tag_valid, vm->mem_tag);
    if (k < 0)
        return errf(err, errlen, -EINVAL,
                    "The memory file %.256s is not the base of this snapshot's memory (it was "
                    "written for another snapshot)",
                    mem->path);
    size_t want = n - 1 - (size_t)k; /* a base merged up to layer k takes the ones after it */
    if (mem->uffd || mem->nlayers != want)
        return k ? errf(err, errlen, -EINVAL,
                        "The memory file %.256s holds this snapshot's memory merged up to layer "
                        "%d: it takes the %zu layer%s after that; %u were given",
                        mem->path, k, want, want == 1 ? "" : "s", mem->nlayers)
                 : errf(err, errlen, -EINVAL,
                        "This snapshot's memory is a base and %zu Diff layer%s; %u were given",
                        want, want == 1 ? "" : "s", mem->nlayers);
    for (unsigned i = 0; i < mem->nlayers; i++) {
        unsigned at = (unsigned)k + 1 + i;
        ret = snap_map_layer(&vm->mem, mem->layers[i], &vm->chain[at], at, err, errlen);
        if (ret)
            return ret;
    }
    return 0;
}

static int restore_legacy(struct vm *vm, const struct snap_file *f, char *err, size_t errlen)
{
    const struct snap_section *s = snap_find(f, SNAP_SEC_LEGACY, 0);
    struct serial_state ss;
    struct i8042_state ks;

    if (snap_get_record(f, s, SF_LEG_SERIAL, &ss, sizeof(ss)) ||
        snap_get_record(f, s, SF_LEG_I8042, &ks, sizeof(ks)))
        return errf(err, errlen, -EINVAL, "the legacy-device state is malformed");
    uint64_t fired = 0;
    int r = snap_get_u64(f, s, SF_LEG_BOOT_TIMER, &fired);
    if ((r && r != -ENOENT) || fired > 1)
        return errf(err, errlen, -EINVAL, "the boot timer's state is malformed");
    atomic_store(&vm->boot_timer.fired, fired == 1); /* a booted guest does not "boot" again */
    int ret = serial_restore(&vm->serial, &ss, err, errlen);
    return ret ? ret : i8042_restore(&vm->i8042, &ks, err, errlen);
}

static int restore_devices(struct vm *vm, const struct snap_file *f, char *err, size_t errlen)
{
    const char *id;
    struct vmmio_dev *t;

    for (unsigned i = 0; (t = virtio_transport(vm->virtio, i, &id)); i++) {
        const struct snap_section *s = snap_find(f, SNAP_SEC_VIRTIO, i);
        struct vmmio_state st;
        struct vq_state q[VIRTIO_MAX_QUEUES];
        char sid[CFG_ID_MAX + 1];
        uint64_t type;
        if (snap_get_u64(f, s, SF_VIO_TYPE, &type) ||
            snap_get_str(f, s, SF_VIO_ID, sid, sizeof(sid)))
            return errf(err, errlen, -EINVAL, "virtio device %u: a malformed section", i);
        if (type != t->ops->device_id || strcmp(sid, id))
            return errf(err, errlen, -EINVAL,
                        "virtio device %u: the snapshot has a device of type %llu named %s here, "
                        "the configuration a %s device %s",
                        i, (unsigned long long)type, sid, t->ops->name, id);
        memset(q, 0, sizeof(q));
        int ret = snap_get_record(f, s, SF_VIO_MMIO, &st, sizeof(st));
        for (unsigned k = 0; !ret && k < t->ops->nqueues; k++)
            ret = snap_get_record(f, s, SF_VIO_QUEUE0 + k, &q[k], sizeof(q[k]));
        uint8_t *dev = calloc(1, t->ops->state_size ? t->ops->state_size : 1);
        if (!dev)
            return errf(err, errlen, -ENOMEM, "out of memory");
        if (!ret && t->ops->state_size)
            ret = snap_get_record(f, s, SF_VIO_DEVICE, dev, t->ops->state_size);
        if (ret)
            ret = errf(err, errlen, -EINVAL, "the %s device %s: a malformed state", t->ops->name,
                       id);
        else
            ret = vmmio_restore(t, &st, q, t->ops->state_size ? dev : NULL, err, errlen);
        free(dev);
        if (ret)
            return ret;
    }
    /* Every queue once, as if the driver had kicked it: a notification the guest sent (or
     * suppressed, with EVENT_IDX) before the snapshot is not lost. */
    for (unsigned i = 0; (t = virtio_transport(vm->virtio, i, NULL)); i++)
        for (unsigned k = 0; k < t->ops->nqueues; k++)
            vmmio_notify(t, k);
    return 0;
}

int vm_snapshot_restore(struct vm *vm, const struct vm_config *cfg, struct loop *loop,
                        const struct vm_snapshot *s, const struct snap_mem_backend *mem, char *err,
                        size_t errlen)
{
    const struct snap_file *f = &s->f;

    vm_init(vm, cfg, loop);
    int ret = vm_open_console(vm, err, errlen);
    if (!ret)
        ret = mem->uffd ? snap_uffd_memory(vm, mem->path, err, errlen)
                        : map_memory(vm, mem, err, errlen);
    if (!ret)
        ret = restore_chain(vm, f, mem, err, errlen);
    if (!ret && mem->ws_path) /* after the layers: it holds the newest content */
        ret = mem->uffd ? errf(err, errlen, -EINVAL, "A working set goes with the File backend")
                        : snap_ws_map(vm, mem->ws_path, err, errlen);
    if (ret) {
        vm->config_error = true;
        return ret;
    }
    vm->virtio = virtio_open(cfg, &vm->mem, &vm->stats, err, errlen);
    if (!vm->virtio) {
        vm->config_error = true;
        return -EINVAL;
    }
    ret = vm_build(vm, err, errlen);
    for (unsigned i = 0; !ret && i < vm->nvcpus; i++)
        ret = cpu_state_restore(vm, &vm->vcpus[i], f, snap_find(f, SNAP_SEC_VCPU, i), err, errlen);
    if (!ret)
        ret = vm_state_restore(vm, f, snap_find(f, SNAP_SEC_KVM_VM, 0), err, errlen);
    if (!ret)
        ret = restore_legacy(vm, f, err, errlen);
    if (!ret)
        ret = restore_devices(vm, f, err, errlen);
    return ret;
}
