/* Fuzz target: the guest init's kernel command-line parser (rootfs-tools/init/cmdline.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../rootfs-tools/init/cmdline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    char out[64];

    if (!line)
        return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    int r = cmdline_get(line, "ember.cmd", out, sizeof(out));
    /* A found value must be NUL-terminated at the reported length. */
    if (r >= 0 && (r >= (int)sizeof(out) || strlen(out) != (size_t)r))
        abort();
    free(line);
    return 0;
}
