/* A snapshot's state file as read (read.c), shared with the restore (load.c)
 * and the tools (ember snapshot info, the fuzz target). */
#ifndef EMBER_VMM_SNAPSHOT_FILE_H
#define EMBER_VMM_SNAPSHOT_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

struct vm_config;

struct vm_snapshot {
    uint8_t *buf; /* the whole file */
    struct snap_file f;
};

/* vm_snapshot_parse(buf, len, name, cfg, err, errlen): vm_snapshot_open on a file already
 * read (buf malloc'd: the snapshot owns it from now on, also on failure); name is the file's
 * name in messages. */
struct vm_snapshot *vm_snapshot_parse(uint8_t *buf, size_t len, const char *name,
                                      struct vm_config *cfg, char *err, size_t errlen);

#endif
