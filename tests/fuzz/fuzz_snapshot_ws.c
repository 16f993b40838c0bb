/* Fuzz target: a working-set file's header and index as a load reads them
 * (vmm/snapshot_ws.c: snap_ws_read_index), from a memfd holding the input. The memory image id
 * the load expects is taken from the input's own header, and the index CRC is fixed up, so
 * mutations reach the size and index checks behind them. Seeded with a recorded file. */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../snapshot/format.h"
#include "../../snapshot/snapshot.h"
#include "../../vmm/vmm.h"

#define TOTAL_PAGES 4096 /* a 16 MiB guest */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    uint64_t want = 0, npages = 0, data_off = 0, *idx = NULL;

    if (size > (1u << 20))
        return 0;
    if (fd < 0 && (fd = memfd_create("ws", MFD_CLOEXEC)) < 0)
        abort();
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    if (size >= 64) {
        memcpy(&want, buf + 24, 8);
        memcpy(&npages, buf + 16, 8);
        if (npages <= TOTAL_PAGES && 64 + npages * 8 <= size) {
            uint64_t crc = snap_crc64(0, buf + 64, npages * 8);
            memcpy(buf + 40, &crc, 8);
        }
    }
    if (ftruncate(fd, 0) || pwrite(fd, buf, size, 0) != (ssize_t)size)
        abort();
    free(buf);
    if (snap_ws_read_index(fd, TOTAL_PAGES, want, &idx, &npages, &data_off) == 0) {
        for (uint64_t i = 0; i < npages; i++) /* what the mapping then trusts */
            if (idx[i] >= TOTAL_PAGES || (i && idx[i] <= idx[i - 1]) || data_off % 4096)
                abort();
        free(idx);
    }
    return 0;
}
