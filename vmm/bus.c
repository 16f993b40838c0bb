/* The PIO and MMIO buses: a short list of address ranges, searched linearly (a handful of
 * devices). Unclaimed reads see all-ones and unclaimed writes are dropped, as on real hardware. */
#include <errno.h>
#include <string.h>

#include "vmm.h"

int bus_add(struct bus *bus, const struct bus_dev *dev)
{
    if (dev->len == 0 || dev->base + dev->len < dev->base)
        return -EINVAL;
    for (unsigned i = 0; i < bus->ndevs; i++) {
        const struct bus_dev *d = &bus->devs[i];
        if (dev->base < d->base + d->len && d->base < dev->base + dev->len)
            return -EBUSY;
    }
    if (bus->ndevs >= BUS_MAX_DEVS)
        return -ENOSPC;
    bus->devs[bus->ndevs++] = *dev;
    return 0;
}

bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
    for (unsigned i = 0; i < bus->ndevs; i++) {
        const struct bus_dev *d = &bus->devs[i];
        if (addr < d->base || addr - d->base >= d->len)
            continue;
        if (is_write) {
            if (d->write)
                d->write(d->opaque, addr - d->base, data, len);
        } else if (d->read) {
            d->read(d->opaque, addr - d->base, data, len);
        } else {
            memset(data, 0xff, len);
        }
        return true;
    }
    if (!is_write)
        memset(data, 0xff, len);
    return false;
}
