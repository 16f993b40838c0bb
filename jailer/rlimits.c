/* rlimits: --resource-limit, applied as both soft and hard limit. RLIMIT_CORE is 0 unless
 * --resource-limit core=N says otherwise: a VMM's core holds all of its guest's RAM. */
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

static const char *name(int resource)
{
    return resource == RLIMIT_NOFILE ? "no-file" : resource == RLIMIT_FSIZE ? "fsize" : "core";
}

int rlimits_apply(const struct jail_args *a)
{
    bool nofile_set = false, core_set = false;
    int rc;

    for (int i = 0; i < a->n_rlimits; i++) {
        rc = set_one(a->rlimits[i].resource, a->rlimits[i].value);
        if (rc) {
            env_log(rc, "setting %s=%llu", name(a->rlimits[i].resource),
                    (unsigned long long)a->rlimits[i].value);
            return rc;
        }
        nofile_set |= a->rlimits[i].resource == RLIMIT_NOFILE;
        core_set |= a->rlimits[i].resource == RLIMIT_CORE;
    }
    if (!core_set && (rc = set_one(RLIMIT_CORE, 0)) != 0) {
        env_log(rc, "setting core=0");
        return rc;
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
