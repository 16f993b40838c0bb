/* Diff snapshots and memory layers. With track_dirty_pages the memory slots log the guest's
 * writes (KVM_MEM_LOG_DIRTY_PAGES) and the devices mark theirs (gm_mark_dirty); a Diff snapshot
 * writes just those pages, at their offsets, into a sparse memory file (Firecracker's layout).
 * Each snapshot's state file records the chain of memory images it stands on: an id per layer
 * and a digest of the pages each Diff layer holds (its runs of pages), so a load given a base
 * and its layers checks each layer is the one recorded, then maps it over the base with no
 * copy, and `ember snapshot merge` folds layers into a base. */
#define _GNU_SOURCE /* SEEK_DATA, SEEK_HOLE */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "format.h"
#include "layout.h"
#include "../virtio/mmio.h"
#include "../virtio/virtio.h"
#include "snapshot.h"
#include "../vmm/vmm.h"

#define PAGE           4096u
#define LAYER_MAPS_MAX 16384 /* mappings one layer may add (the kernel allows ~65530 in all) */
#define ID_XATTR       "user.ember.mem_id"

int snap_tag_memory(int fd, uint64_t id)
{
    /* a file system without user xattrs leaves the layer digest as the check */
    if (fsetxattr(fd, ID_XATTR, &id, sizeof(id), 0) < 0 && errno != ENOTSUP) {
        log_debug("memory file tag: %s", strerror(errno));
        return -errno;
    }
    return 0;
}

int snap_untag_memory(int fd)
{
    if (fremovexattr(fd, ID_XATTR) < 0 && errno != ENODATA && errno != ENOTSUP)
        return -errno;
    return 0;
}

int snap_base_image(const struct snap_layer *chain, size_t n, bool tag_valid, uint64_t tag)
{
    if (!tag_valid)
        return 0; /* no tag (another tool, a file system without xattrs): taken for the base */
    for (size_t k = 0; k < n; k++)
        if (chain[k].id == tag)
            return (int)k;
    return -1;
}

int snap_memory_tag(int fd, uint64_t *id)
{
    ssize_t n = fgetxattr(fd, ID_XATTR, id, sizeof(*id));
    return n == (ssize_t)sizeof(*id) ? 0 : -1;
}

static size_t words_of(const struct guest_mem *mem)
{
    return (mem->total / PAGE + 63) / 64;
}

static void set_range(uint64_t *bits, const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    uint64_t first = gm_page_index(mem, gpa), last = gm_page_index(mem, gpa + len - 1);
    if (!len || first == UINT64_MAX || last == UINT64_MAX)
        return;
    for (uint64_t p = first; p <= last; p++)
        bits[p / 64] |= 1ULL << (p % 64);
}

/* KVM's log of each slot (read and cleared), into bits at the slot's place (NULL: discarded). */
static int read_kvm_log(struct vm *vm, uint64_t *bits, char *err, size_t errlen)
{
    size_t at = 0; /* the slot's first page, in memory-file order (regions are MiB multiples) */
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        size_t pages = vm->mem.regions[i].size / PAGE, words = (pages + 63) / 64;
        uint64_t *log = calloc(words ? words : 1, sizeof(uint64_t));
        if (!log)
            return errf(err, errlen, -ENOMEM, "out of memory");
        struct kvm_dirty_log d = {.slot = i, .dirty_bitmap = log};
        if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &d) < 0) {
            int e = errno;
            free(log);
            return errf(err, errlen, -e, "KVM_GET_DIRTY_LOG: %s", strerror(e));
        }
        for (size_t w = 0; bits && w < words; w++)
            bits[at / 64 + w] |= log[w];
        free(log);
        at += pages;
    }
    return 0;
}

int snap_dirty_pages(struct vm *vm, uint64_t **out, char *err, size_t errlen)
{
    size_t words = words_of(&vm->mem);
    uint64_t *bits = calloc(words ? words : 1, sizeof(uint64_t));
    struct vmmio_dev *t;

    if (!bits)
        return errf(err, errlen, -ENOMEM, "out of memory");
    for (size_t w = 0; vm->mem.dirty && w < words; w++)
        bits[w] = atomic_load_explicit(&vm->mem.dirty[w], memory_order_relaxed);
    int ret = read_kvm_log(vm, bits, err, errlen);
    /* the rings the devices write on every request */
    for (unsigned i = 0; !ret && (t = virtio_transport(vm->virtio, i, NULL)); i++)
        for (unsigned k = 0; k < t->ops->nqueues; k++) {
            const struct vq_state *q = &t->queues[k].st;
            if (q->active)
                set_range(bits, &vm->mem, q->used_gpa, 6 + 8ULL * q->size);
        }
    if (ret) {
        free(bits);
        return ret;
    }
    *out = bits;
    return 0;
}

int snap_dirty_reset(struct vm *vm, char *err, size_t errlen)
{
    for (size_t w = 0; vm->mem.dirty && w < words_of(&vm->mem); w++)
        atomic_store_explicit(&vm->mem.dirty[w], 0, memory_order_relaxed);
    return read_kvm_log(vm, NULL, err, errlen);
}

/* The digest of a layer: CRC-64 of its runs of pages, (first page, count) little-endian. */
static void digest_run(uint64_t *crc, uint64_t first, uint64_t count)
{
    uint8_t b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(first >> (8 * i));
        b[8 + i] = (uint8_t)(count >> (8 * i));
    }
    *crc = snap_crc64(*crc, b, sizeof(b));
}

int snap_write_diff(struct vm *vm, int fd, const uint64_t *bits, struct snap_layer *layer,
                    char *err, size_t errlen)
{
    uint64_t pages = vm->mem.total / PAGE, crc = 0, count = 0;
    const uint8_t *base = vm->mem.base; /* the regions back to back: memory-file order */

    if (ftruncate(fd, 0) || ftruncate(fd, (off_t)vm->mem.total))
        return errf(err, errlen, -errno, "Cannot size the memory file: %s", strerror(errno));
    for (uint64_t p = 0; p < pages;) {
        if (!(bits[p / 64] & (1ULL << (p % 64)))) {
            p++;
            continue;
        }
        uint64_t q = p;
        while (q < pages && (bits[q / 64] & (1ULL << (q % 64))))
            q++;
        /* every dirty page is written, zeros too: a hole would mean "not in this layer" */
        int ret = snap_pwrite_all(fd, base + p * PAGE, (q - p) * PAGE, (off_t)(p * PAGE));
        if (ret)
            return errf(err, errlen, ret, "Cannot write the memory file: %s", strerror(-ret));
        digest_run(&crc, p, q - p);
        count += q - p;
        p = q;
    }
    layer->digest = crc;
    layer->pages = count;
    return 0;
}

/* The runs of data in a layer file (SEEK_DATA/SEEK_HOLE), each passed to fn (page units).
 * Returns 0, or -errno (fn's, or a misaligned or unreadable layer). */
static int each_run(int fd, uint64_t size, int (*fn)(void *ctx, uint64_t first, uint64_t count),
                    void *ctx)
{
    off_t pos = 0;
    for (;;) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO ? 0 : -errno; /* ENXIO: no data past pos */
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        if ((data | hole) % PAGE || (uint64_t)hole > size)
            return -EINVAL;
        int ret = fn(ctx, (uint64_t)data / PAGE, (uint64_t)(hole - data) / PAGE);
        if (ret)
            return ret;
        pos = hole;
    }
}

static int add_digest(void *ctx, uint64_t first, uint64_t count)
{
    digest_run(ctx, first, count);
    return 0;
}

struct map_ctx {
    uint8_t *base;
    int fd;
    unsigned maps;
};

static int map_run(void *ctx, uint64_t first, uint64_t count)
{
    struct map_ctx *m = ctx;
    if (++m->maps > LAYER_MAPS_MAX)
        return -E2BIG;
    void *p = mmap(m->base + first * PAGE, count * PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, m->fd, (off_t)(first * PAGE));
    return p == MAP_FAILED ? -errno : 0;
}

int snap_check_layer(int fd, uint64_t size, const struct snap_layer *want, unsigned index,
                     const char *path, char *err, size_t errlen)
{
    struct stat st;
    int ret = 0;
    uint64_t crc = 0, tag;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
        ret = errf(err, errlen, -EINVAL,
                   "The memory layer %.256s is not a %llu-byte memory file of this snapshot", path,
                   (unsigned long long)size);
    else if ((ret = each_run(fd, size, add_digest, &crc)))
        errf(err, errlen, ret, "The memory layer %.256s cannot be read as a Diff layer: %s", path,
             strerror(-ret));
    else if (snap_memory_tag(fd, &tag) == 0 && tag != want->id)
        ret = errf(err, errlen, -EINVAL,
                   "The memory layer %.256s is not layer %u of this snapshot's memory (it was "
                   "written for another snapshot)",
                   path, index);
    else if (crc != want->digest)
        ret = errf(err, errlen, -EINVAL,
                   "The memory layer %.256s is not layer %u of this snapshot's memory (its pages "
                   "are not the ones that Diff snapshot wrote)",
                   path, index);
    return ret;
}

int snap_map_layer(struct guest_mem *mem, const char *path, const struct snap_layer *want,
                   unsigned index, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return errf(err, errlen, -errno, "Cannot open the memory layer %.256s: %s", path,
                    strerror(errno));
    int ret = snap_check_layer(fd, mem->total, want, index, path, err, errlen);
    if (!ret) {
        struct map_ctx m = {.base = mem->base, .fd = fd};
        ret = each_run(fd, mem->total, map_run, &m);
        if (ret)
            errf(err, errlen, ret, "Cannot map the memory layer %.256s: %s%s", path, strerror(-ret),
                 ret == -E2BIG ? " (merge it: ember snapshot merge)" : "");
    }
    close(fd); /* the mappings hold the file */
    return ret;
}

struct copy_ctx {
    int from, to;
    uint64_t pages;
};

static int copy_run(void *ctx, uint64_t first, uint64_t count)
{
    struct copy_ctx *c = ctx;
    static uint8_t buf[1 << 20];
    for (uint64_t done = 0; done < count;) {
        uint64_t n = count - done < sizeof(buf) / PAGE ? count - done : sizeof(buf) / PAGE;
        off_t off = (off_t)((first + done) * PAGE);
        int ret = snap_pread_all(c->from, buf, n * PAGE, off);
        if (!ret)
            ret = snap_pwrite_all(c->to, buf, n * PAGE, off);
        if (ret)
            return ret;
        done += n;
    }
    c->pages += count;
    return 0;
}

int snap_merge_layer(int base, int layer, uint64_t size, uint64_t *pages)
{
    struct copy_ctx c = {.from = layer, .to = base};
    int ret = each_run(layer, size, copy_run, &c);
    *pages = c.pages;
    return ret;
}
