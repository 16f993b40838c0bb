/* Fake guest RAM for the fuzz targets: each region is its own mapping with an inaccessible
 * page on either side, so a host access that strays past a region gm_ptr() handed out faults
 * at once, wherever ASan's redzones would not reach. Header-only: each target includes it. */
#ifndef EMBER_FUZZ_GUEST_RAM_H
#define EMBER_FUZZ_GUEST_RAM_H

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "../../vmm/vmm.h"

#define GUEST_RAM_PAGE 4096ULL

/* guest_ram_add(mem, gpa, size): appends a guarded region of size bytes (a multiple of 4 KiB)
 * at gpa to mem, or aborts. Returns its host address. */
static inline uint8_t *guest_ram_add(struct guest_mem *mem, uint64_t gpa, uint64_t size)
{
    uint8_t *p = mmap(NULL, size + 2 * GUEST_RAM_PAGE, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED || mem->nregions >= GM_MAX_REGIONS ||
        mprotect(p + GUEST_RAM_PAGE, size, PROT_READ | PROT_WRITE) < 0)
        abort();
    p += GUEST_RAM_PAGE;
    mem->regions[mem->nregions++] = (struct gm_region){.gpa = gpa, .size = size, .host = p};
    mem->total += size;
    return p;
}

#endif
