/* Creating a Full snapshot of a paused VM: the devices quiesced, the state in ember's format
 * (the sections of snapshot/layout.h), the guest RAM into the memory file region by region, as
 * Firecracker lays it out. Pages that were never touched (or hold only zeros) are left as holes:
 * the file reads the same, takes less disk and less time to write. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "format.h"
#include "layout.h"
#include "../virtio/mmio.h"
#include "../virtio/virtio.h"
#include "snapshot.h"
#include "../vmm/vmm.h"

#define MEM_CHUNK  (2u << 20) /* bytes per mincore() look */
#define ZERO_BLOCK (64u << 10)
#define PAGE       4096u

/* ---- the state file ---------------------------------------------------------------------- */

static void put_bucket(struct snap_writer *w, uint32_t tag, const struct vm_bucket *b)
{
    struct snap_bucket sb = {b->size, b->one_time_burst, b->refill_time_ms};
    if (b->size)
        snapw_field(w, tag, &sb, sizeof(sb));
}

static void put_machine(struct snap_writer *w, const struct vm *vm, const char *mem_path, bool diff,
                        const struct snap_layer *chain, unsigned nchain)
{
    const struct vm_config *cfg = vm->cfg;
    struct snap_region r[GM_MAX_REGIONS];

    snapw_section(w, SNAP_SEC_MACHINE, SNAP_REQUIRED);
    snapw_str(w, SF_WRITER, "ember " EMBER_VERSION);
    snapw_str(w, SF_SNAP_TYPE, diff ? "Diff" : "Full");
    snapw_u64(w, SF_TRACK_DIRTY, vm->cfg->track_dirty_pages);
    snapw_field(w, SF_MEM_CHAIN, chain, nchain * sizeof(chain[0]));
    snapw_u64(w, SF_CREATED, (uint64_t)time(NULL));
    snapw_u64(w, SF_VCPUS, vm->nvcpus);
    snapw_u64(w, SF_MEM_MIB, cfg->mem_mib);
    snapw_u64(w, SF_SMT, cfg->smt);
    snapw_u64(w, SF_KVM_CAPS, vm->snap_caps);
    for (unsigned i = 0; i < vm->mem.nregions; i++)
        r[i] = (struct snap_region){vm->mem.regions[i].gpa, vm->mem.regions[i].size};
    snapw_field(w, SF_REGIONS, r, vm->mem.nregions * sizeof(r[0]));
    snapw_str(w, SF_MEM_FILE, mem_path);
}

static void put_config(struct snap_writer *w, const struct vm_config *cfg)
{
    for (unsigned i = 0; i < cfg->ndrives; i++) {
        const struct vm_drive *d = &cfg->drives[i];
        uint64_t flags = (d->root ? SNAP_DRV_ROOT : 0) | (d->read_only ? SNAP_DRV_RO : 0) |
                         (d->writeback ? SNAP_DRV_WRITEBACK : 0) | (d->async ? SNAP_DRV_ASYNC : 0);
        snapw_section(w, SNAP_SEC_DRIVE, SNAP_REQUIRED);
        snapw_str(w, SF_DRV_ID, d->id);
        snapw_str(w, SF_DRV_PATH, d->path ? d->path : "");
        snapw_u64(w, SF_DRV_FLAGS, flags);
        if (d->partuuid[0])
            snapw_str(w, SF_DRV_PARTUUID, d->partuuid);
        put_bucket(w, SF_DRV_BW, &d->bw);
        put_bucket(w, SF_DRV_OPS, &d->ops);
    }
    for (unsigned i = 0; i < cfg->nnets; i++) {
        const struct vm_net *n = &cfg->nets[i];
        snapw_section(w, SNAP_SEC_NET, SNAP_REQUIRED);
        snapw_str(w, SF_NET_ID, n->id);
        snapw_str(w, SF_NET_TAP, n->host_dev_name);
        if (n->has_mac)
            snapw_field(w, SF_NET_MAC, n->mac, sizeof(n->mac));
        put_bucket(w, SF_NET_RX_BW, &n->rx_bw);
        put_bucket(w, SF_NET_RX_OPS, &n->rx_ops);
        put_bucket(w, SF_NET_TX_BW, &n->tx_bw);
        put_bucket(w, SF_NET_TX_OPS, &n->tx_ops);
    }
    if (cfg->vsock.enabled) {
        snapw_section(w, SNAP_SEC_VSOCK, SNAP_REQUIRED);
        snapw_u64(w, SF_VSK_CID, cfg->vsock.guest_cid);
        snapw_str(w, SF_VSK_UDS, cfg->vsock.uds_path);
    }
}

static int put_devices(struct snap_writer *w, struct vm *vm, char *err, size_t errlen)
{
    const char *id;
    struct vmmio_dev *t;

    for (unsigned i = 0; (t = virtio_transport(vm->virtio, i, &id)); i++) {
        struct vmmio_state st;
        struct vq_state q[VIRTIO_MAX_QUEUES];
        uint8_t *dev = calloc(1, t->ops->state_size ? t->ops->state_size : 1);
        if (!dev)
            return errf(err, errlen, -ENOMEM, "out of memory");
        int ret = vmmio_save(t, &st, q, t->ops->state_size ? dev : NULL);
        if (ret) {
            free(dev);
            return errf(err, errlen, ret, "the %s device %s cannot be saved: %s", t->ops->name, id,
                        strerror(-ret));
        }
        snapw_section(w, SNAP_SEC_VIRTIO, SNAP_REQUIRED);
        snapw_u64(w, SF_VIO_TYPE, t->ops->device_id);
        snapw_str(w, SF_VIO_ID, id);
        snapw_field(w, SF_VIO_MMIO, &st, sizeof(st));
        for (unsigned k = 0; k < t->ops->nqueues; k++)
            snapw_field(w, SF_VIO_QUEUE0 + k, &q[k], sizeof(q[k]));
        if (t->ops->state_size)
            snapw_field(w, SF_VIO_DEVICE, dev, t->ops->state_size);
        free(dev);
    }
    return 0;
}

static int build_state(struct snap_writer *w, struct vm *vm, const char *mem_path, bool diff,
                       const struct snap_layer *chain, unsigned nchain, char *err, size_t errlen)
{
    int ret = 0;

    if (!vm->snap_msrs && (ret = snap_msr_list(vm, &vm->snap_msrs, &vm->snap_nmsrs)))
        return errf(err, errlen, ret, "KVM_GET_MSR_INDEX_LIST: %s", strerror(-ret));
    snapw_init(w, SNAP_ARCH_X86_64);
    put_machine(w, vm, mem_path, diff, chain, nchain);
    put_config(w, vm->cfg);
    for (unsigned i = 0; !ret && i < vm->nvcpus; i++)
        ret = cpu_state_save(vm, &vm->vcpus[i], w, err, errlen);
    if (!ret)
        ret = vm_state_save(vm, w, err, errlen);
    if (ret)
        return ret;
    struct serial_state ss;
    struct i8042_state ks;
    serial_save(&vm->serial, &ss);
    i8042_save(&vm->i8042, &ks);
    snapw_section(w, SNAP_SEC_LEGACY, SNAP_REQUIRED);
    snapw_field(w, SF_LEG_SERIAL, &ss, sizeof(ss));
    snapw_field(w, SF_LEG_I8042, &ks, sizeof(ks));
    snapw_u64(w, SF_LEG_BOOT_TIMER, atomic_load(&vm->boot_timer.fired));
    return put_devices(w, vm, err, errlen);
}

/* ---- the files --------------------------------------------------------------------------- */

/* Creates (or truncates) an output file; through the opener once this thread is filtered. */
static int create_file(const char *what, const char *path, char *err, size_t errlen)
{
    int fd = sc_create(path);
    if (fd < 0) {
        int e = errno;
        return errf(err, errlen, -e, "Cannot create the %s file %.256s: %s", what, path,
                    strerror(e));
    }
    return fd;
}

static bool all_zero(const uint8_t *p, size_t len)
{
    const uint64_t *q = (const uint64_t *)p;
    for (size_t i = 0; i < len / 8; i++)
        if (q[i])
            return false;
    return true;
}

/* Writes [p, p+len) at file offset off, leaving all-zero blocks as holes; consecutive blocks
 * with data go out in one write. */
static int write_sparse(int fd, const uint8_t *p, size_t len, off_t off)
{
    size_t run = 0, start = 0;

    for (size_t pos = 0; pos < len; pos += ZERO_BLOCK) {
        size_t n = len - pos < ZERO_BLOCK ? len - pos : ZERO_BLOCK;
        if (!all_zero(p + pos, n)) {
            if (!run)
                start = pos;
            run += n;
            continue;
        }
        if (run) {
            int ret = snap_pwrite_all(fd, p + start, run, off + (off_t)start);
            if (ret)
                return ret;
        }
        run = 0;
    }
    return run ? snap_pwrite_all(fd, p + start, run, off + (off_t)start) : 0;
}

/* A never-touched anonymous page is not resident and reads as zero; with swap on, a resident
 * bit says nothing (a swapped-out page holds data), in a file-backed mapping a page that is
 * not resident holds the file's data, and under a page-fault handler (Uffd) one it has not
 * served yet: then every page is read (the handler serves each as for a guest's touch). */
static int write_region(int fd, const struct gm_region *r, off_t off, bool trust_mincore)
{
    static unsigned char vec[MEM_CHUNK / PAGE];

    for (uint64_t pos = 0; pos < r->size; pos += MEM_CHUNK) {
        size_t n = r->size - pos < MEM_CHUNK ? (size_t)(r->size - pos) : MEM_CHUNK;
        uint8_t *p = r->host + pos;
        if (!trust_mincore || mincore(p, n, vec)) {
            int ret = write_sparse(fd, p, n, off + (off_t)pos);
            if (ret)
                return ret;
            continue;
        }
        size_t pages = (n + PAGE - 1) / PAGE;
        for (size_t i = 0; i < pages;) {
            if (!(vec[i] & 1)) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < pages && (vec[j] & 1))
                j++;
            size_t bytes = (j - i) * PAGE < n - i * PAGE ? (j - i) * PAGE : n - i * PAGE;
            int ret = write_sparse(fd, p + i * PAGE, bytes, off + (off_t)(pos + i * PAGE));
            if (ret)
                return ret;
            i = j;
        }
    }
    return 0;
}

static int write_memory(struct vm *vm, int fd, char *err, size_t errlen)
{
    struct sysinfo si;
    bool swap = sysinfo(&si) != 0 || si.totalswap > 0;
    bool trust_mincore = !vm->mem.file_backed && !swap && vm->uffd < 0;

    if (ftruncate(fd, 0) || ftruncate(fd, (off_t)vm->mem.total))
        return errf(err, errlen, -errno, "Cannot size the memory file: %s", strerror(errno));
    off_t off = 0;
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        int ret = write_region(fd, &vm->mem.regions[i], off, trust_mincore);
        if (ret)
            return errf(err, errlen, ret, "Cannot write the memory file: %s", strerror(-ret));
        off += (off_t)vm->mem.regions[i].size;
    }
    return 0;
}

static uint64_t next_id(struct vm *vm)
{
    uint64_t z = (vm->snap_seed += 0x9E3779B97F4A7C15ULL); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* The memory file: every page (Full) or the pages written since the last snapshot (Diff);
 * fills the new layer of the chain. */
static int write_mem(struct vm *vm, int fd, bool diff, struct snap_layer *layer, char *err,
                     size_t errlen)
{
    if (!diff) {
        layer->digest = 0;
        layer->pages = vm->mem.total / PAGE;
        return write_memory(vm, fd, err, errlen);
    }
    uint64_t *bits = NULL;
    int ret = snap_dirty_pages(vm, &bits, err, errlen);
    if (!ret)
        ret = snap_write_diff(vm, fd, bits, layer, err, errlen);
    free(bits);
    return ret;
}

int vm_snapshot_create(struct vm *vm, const char *snap_path, const char *mem_path, bool diff,
                       char *err, size_t errlen)
{
    struct snap_writer w = {0};
    const char *id;
    struct vmmio_dev *t;
    int ret = 0;

    if (diff && !vm->mem.dirty)
        return errf(err, errlen, -EINVAL,
                    "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
    /* A Full image starts a new chain; a Diff layer goes on the VM's (or starts one, holding
     * every page, when the VM never had a snapshot) */
    unsigned keep = diff ? vm->nchain : 0;
    if (keep >= SNAP_CHAIN_MAX)
        return errf(err, errlen, -EINVAL,
                    "%d layers of Diff snapshots: take a Full one (or merge the layers)",
                    SNAP_CHAIN_MAX);
    struct snap_layer *chain = calloc(keep + 1, sizeof(*chain));
    if (!chain)
        return errf(err, errlen, -ENOMEM, "out of memory");
    if (keep)
        memcpy(chain, vm->chain, keep * sizeof(*chain));
    chain[keep].id = next_id(vm);
    for (unsigned i = 0; !ret && (t = virtio_transport(vm->virtio, i, &id)); i++)
        if ((ret = vmmio_quiesce(t)))
            errf(err, errlen, ret, "the %s device %s cannot be quiesced: %s", t->ops->name, id,
                 strerror(-ret));
    int mfd = -1, sfd = -1;
    /* The memory first (a Diff's digest goes into the state), the state file last: one that
     * exists goes with a complete memory file. */
    if (!ret && (mfd = create_file("memory", mem_path, err, errlen)) < 0)
        ret = mfd;
    if (!ret)
        ret = write_mem(vm, mfd, diff, &chain[keep], err, errlen);
    if (!ret && atomic_load(&vm->uffd_failed)) /* pages read meanwhile came back empty */
        ret = errf(err, errlen, -EIO,
                   "The page-fault handler stopped serving the guest's memory: the snapshot "
                   "would not hold it");
    if (!ret)
        (void)snap_tag_memory(mfd, chain[keep].id); /* best effort: the digest still checks */
    /* The next Diff stands on this image, Full or Diff: the devices' marks are cleared as KVM's
     * log was when read (a Diff that kept them held every page a device ever wrote since the
     * last Full, and a booted VM's every Diff held all of RAM) */
    if (!ret && vm->mem.dirty)
        ret = snap_dirty_reset(vm, err, errlen);
    if (!ret)
        ret = build_state(&w, vm, mem_path, diff, chain, keep + 1, err, errlen);
    size_t len = 0;
    const uint8_t *buf = ret ? NULL : snapw_finish(&w, &len);
    if (!ret && !buf)
        ret = errf(err, errlen, -ENOMEM, "the snapshot state does not fit in %u MiB",
                   SNAP_MAX_FILE >> 20);
    if (!ret && (sfd = create_file("snapshot", snap_path, err, errlen)) < 0)
        ret = sfd;
    if (!ret && (ret = snap_pwrite_all(sfd, buf, len, 0)))
        errf(err, errlen, ret, "Cannot write the snapshot file: %s", strerror(-ret));
    if (mfd >= 0)
        close(mfd);
    if (sfd >= 0)
        close(sfd);
    snapw_free(&w);
    if (ret) {
        free(chain);
        if (vm->mem.dirty) /* what was dirty may be cleared: the next Diff takes everything */
            gm_track_dirty(&vm->mem, true);
        return ret;
    }
    free(vm->chain);
    vm->chain = chain;
    vm->nchain = keep + 1;
    return 0;
}
