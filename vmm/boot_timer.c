/* The boot-timer pseudo device at MMIO 0xC000_0000: the guest's init writes the byte 123 once it
 * runs, and we log the wall and CPU time since the boot started (Firecracker's log line). */
#include <inttypes.h>
#include <string.h>

#include "vmm.h"

#define BOOT_TIMER_MAGIC 123

static void bt_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
    (void)opaque, (void)off;
    memset(data, 0, len);
}

static void bt_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
    struct boot_timer *bt = opaque;

    if (off != 0 || len != 1 || data[0] != BOOT_TIMER_MAGIC)
        return;
    uint64_t wall = log_us_since(&bt->start_wall, CLOCK_MONOTONIC);
    uint64_t cpu = log_us_since(&bt->start_cpu, CLOCK_PROCESS_CPUTIME_ID);
    /* Logged once: the guest must not be able to flood the log. */
    if (!atomic_exchange(&bt->fired, true))
        log_info("Guest-boot-time = %" PRIu64 " us %" PRIu64 " ms, %" PRIu64 " CPU us %" PRIu64
                 " CPU ms",
                 wall, wall / 1000, cpu, cpu / 1000);
}

void boot_timer_start(struct boot_timer *bt)
{
    clock_gettime(CLOCK_MONOTONIC, &bt->start_wall);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &bt->start_cpu);
    atomic_store(&bt->fired, false);
}

struct bus_dev boot_timer_bus_dev(struct boot_timer *bt)
{
    return (struct bus_dev){.base = MMIO_HOLE_START,
                            .len = 0x1000,
                            .read = bt_read,
                            .write = bt_write,
                            .opaque = bt};
}

void boot_timer_detach(struct bus *mmio, const struct boot_timer *bt)
{
    for (unsigned i = 0; i < mmio->ndevs; i++)
        if (mmio->devs[i].opaque == bt && mmio->devs[i].write == bt_write) {
            memmove(&mmio->devs[i], &mmio->devs[i + 1],
                    (mmio->ndevs - i - 1) * sizeof(mmio->devs[0]));
            mmio->ndevs--;
            return;
        }
}
