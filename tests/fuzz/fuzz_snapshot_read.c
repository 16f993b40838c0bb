/* Fuzz target: a snapshot's state file as ember reads it before building anything from it
 * (snapshot/format.c: cap, CRC, sections and fields; vmm/snapshot_read.c: the machine and
 * device configuration rebuilt through the config setters; the chain of memory images, as a
 * load and `ember snapshot merge --snapshot` read it). The CRC check would stop almost
 * every mutation at the door, so the input's last 8 bytes are replaced by the right CRC first:
 * the parser behind it gets the hostile bytes. The seed is a real snapshot
 * (tests/fixtures/snapshot-v1). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../snapshot/format.h"
#include "../../snapshot/layout.h"
#include "../../snapshot/snapshot.h"
#include "../../snapshot/snapshot_file.h"
#include "../../vmm/vmm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vm_config cfg;
    char err[512];

    if (size > SNAP_MAX_FILE)
        return 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (size >= 16) {
        uint64_t crc = snap_crc64(0, buf, size - 8);
        for (int i = 0; i < 8; i++)
            buf[size - 8 + i] = (uint8_t)(crc >> (8 * i));
    }
    cfg_defaults(&cfg);
    struct vm_snapshot *s = vm_snapshot_parse(buf, size, "fuzz", &cfg, err, sizeof(err));
    if (s) { /* every field the reader found is inside the file */
        for (unsigned i = 0; i < s->f.nfields; i++) {
            const struct snap_field *f = &s->f.fields[i];
            if (f->data < s->buf || f->data + f->len > s->buf + size)
                abort();
        }
        struct snap_layer chain[SNAP_CHAIN_MAX];
        size_t n = 0;
        if (!snap_chain_read(&s->f, cfg.mem_mib << 8, chain, &n, err, sizeof(err)) &&
            (n == 0 || n > SNAP_CHAIN_MAX))
            abort();
        vm_snapshot_close(s);
    }
    cfg_free(&cfg);
    return 0;
}
