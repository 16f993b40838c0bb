/* Fuzz target: ember's seccomp filter file reader (seccomp/filefmt.c), which --seccomp-filter
 * feeds with whatever file it names. What it accepts must write out and read back the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../seccomp/seccomp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sc_filters f, g;
static uint8_t again[SC_FILE_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];

    if (sc_file_parse(&f, data, size, err, sizeof(err)) != 0) {
        if (!memchr(err, '\0', sizeof(err)) || !err[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    if (sc_file_size(&f) != size)
        abort();
    sc_file_write(&f, again);
    if (sc_file_parse(&g, again, size, err, sizeof(err)) != 0)
        abort();
    for (unsigned r = 0; r < SC_ROLES; r++)
        if (g.prog[r].len != f.prog[r].len ||
            memcmp(g.prog[r].insns, f.prog[r].insns, f.prog[r].len * sizeof(f.prog[r].insns[0])))
            abort();
    return 0;
}
