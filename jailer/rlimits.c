/* rlimits: --resource-limit, applied as both soft and hard limit. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/resource.h>

#include "jailer.h"

static int set_one(int resource, uint64_t value)
{
    struct rlimit rl = {.rlim_cur = value, .rlim_max = value};

    if (setrlimit(resource, &rl) != 0)
        return -errno;
    return 0;
}

int rlimits_apply(const struct jail_args *a)
{
    bool nofile_set = false;
    int rc;

    for (int i = 0; i < a->n_rlimits; i++) {
        rc = set_one(a->rlimits[i].resource, a->rlimits[i].value);
        if (rc) {
            env_log(rc, "setting %s=%llu",
                    a->rlimits[i].resource == RLIMIT_NOFILE ? "no-file" : "fsize",
                    (unsigned long long)a->rlimits[i].value);
            return rc;
        }
        if (a->rlimits[i].resource == RLIMIT_NOFILE)
            nofile_set = true;
    }
    if (!nofile_set) {
        rc = set_one(RLIMIT_NOFILE, JAIL_DEFAULT_NOFILE);
        if (rc) {
            env_log(rc, "setting no-file=%d", JAIL_DEFAULT_NOFILE);
            return rc;
        }
    }
    return 0;
}
