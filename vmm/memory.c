/* Guest memory: one lazily-populated anonymous mapping, split into regions around the 32-bit
 * MMIO hole, and gm_ptr(), the only way to turn a guest physical address into a pointer. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "vmm.h"

#define GM_MADV_POPULATE_WRITE 23 /* not in older libc headers */

/* The regions of size bytes of RAM at host address p: low RAM up to the MMIO hole, the rest
 * above 4 GiB (the memory file's layout is the same: region after region). */
static void layout(struct guest_mem *mem, uint8_t *p, uint64_t size)
{
    mem->base = p;
    mem->total = size;
    uint64_t low = size < MMIO_HOLE_START ? size : MMIO_HOLE_START;
    mem->regions[0] = (struct gm_region){.gpa = 0, .size = low, .host = p};
    mem->nregions = 1;
    if (size > low) {
        mem->regions[1] =
                (struct gm_region){.gpa = MMIO_HOLE_END, .size = size - low, .host = p + low};
        mem->nregions = 2;
    }
}

int gm_create(struct guest_mem *mem, uint64_t size)
{
    memset(mem, 0, sizeof(*mem));
    if (size == 0 || size > (uint64_t)MEM_MAX_MIB << 20 || (size & 0xfff))
        return -EINVAL;
    /* MAP_NORESERVE and no MAP_POPULATE: pages are faulted in by the guest, so creating the
     * VM costs the same for 128 MiB as for 64 GiB. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    layout(mem, p, size);
    return 0;
}

int gm_map_file(struct guest_mem *mem, uint64_t size, int fd)
{
    memset(mem, 0, sizeof(*mem));
    if (size == 0 || size > (uint64_t)MEM_MAX_MIB << 20 || (size & 0xfff))
        return -EINVAL;
    /* Private: the guest's writes are its own (copy on write), the file stays as it is and is
     * shared, page by page through the page cache, by every VM restored from it. Nothing is
     * read now: pages come in as the guest (or KVM) touches them. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    layout(mem, p, size);
    mem->file_backed = true;
    return 0;
}

int gm_track_dirty(struct guest_mem *mem, bool all)
{
    size_t words = (mem->total / 4096 + 63) / 64;
    free((void *)mem->dirty);
    mem->dirty = calloc(words ? words : 1, sizeof(uint64_t));
    if (!mem->dirty)
        return -ENOMEM;
    if (all)
        memset((void *)mem->dirty, 0xff, words * sizeof(uint64_t));
    return 0;
}

uint64_t gm_page_index(const struct guest_mem *mem, uint64_t gpa)
{
    uint64_t off = 0;
    for (unsigned i = 0; i < mem->nregions && i < GM_MAX_REGIONS; i++) {
        const struct gm_region *r = &mem->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size)
            return (off + gpa - r->gpa) / 4096;
        off += r->size;
    }
    return UINT64_MAX;
}

void gm_mark_dirty(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    if (!mem->dirty || !len)
        return;
    uint64_t first = gm_page_index(mem, gpa), last = gm_page_index(mem, gpa + len - 1);
    if (first == UINT64_MAX || last == UINT64_MAX) /* callers checked the range with gm_ptr */
        return;
    for (uint64_t p = first; p <= last; p++)
        atomic_fetch_or_explicit(&mem->dirty[p / 64], 1ULL << (p % 64), memory_order_relaxed);
}

void gm_destroy(struct guest_mem *mem)
{
    free((void *)mem->dirty);
    if (mem->base)
        munmap(mem->base, mem->total);
    memset(mem, 0, sizeof(*mem));
}

void *gm_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    uint64_t last;
    if (len == 0)
        len = 1;
    if (__builtin_add_overflow(gpa, len - 1, &last))
        return NULL;
    for (unsigned i = 0; i < mem->nregions && i < GM_MAX_REGIONS; i++) {
        const struct gm_region *r = &mem->regions[i];
        /* Written as offsets so that no sum can wrap. */
        if (gpa >= r->gpa && gpa - r->gpa < r->size && last - r->gpa < r->size)
            return r->host + (gpa - r->gpa);
    }
    return NULL;
}

int gm_write(const struct guest_mem *mem, uint64_t gpa, const void *src, uint64_t len)
{
    void *p = gm_ptr(mem, gpa, len);
    if (!p)
        return -EFAULT;
    memcpy(p, src, len);
    return 0;
}

void gm_prefault(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    uint8_t *p = gm_ptr(mem, gpa, len);
    if (!p || !len)
        return;
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)4095;
    uintptr_t end = ((uintptr_t)p + len + 4095) & ~(uintptr_t)4095;
    /* Best effort (Linux >= 5.14): one call instead of a page fault per 4 KiB. */
    madvise((void *)start, end - start, GM_MADV_POPULATE_WRITE);
}

uint64_t gm_low_end(const struct guest_mem *mem)
{
    return mem->nregions ? mem->regions[0].gpa + mem->regions[0].size : 0;
}
