/* caps: capabilities (libcap-ng), supplementary groups, ids and no_new_privs. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <cap-ng.h>

#include "jailer.h"

/*
 * Bounding, ambient and inheritable go first, while we still hold CAP_SETPCAP. Permitted and
 * effective go after the id change (caps_clear_all), since setresuid itself needs CAP_SETUID.
 */
int caps_drop_inheritable(void)
{
    if (capng_get_caps_process() != 0)
        return -EPERM;
    capng_clear(CAPNG_SELECT_BOUNDS);
    capng_clear(CAPNG_SELECT_AMBIENT);
    /* capng_update refuses numbers past the running kernel's last capability. */
    for (unsigned int c = 0; c < 64; c++)
        (void)capng_update(CAPNG_DROP, CAPNG_INHERITABLE, c);
    if (capng_apply(CAPNG_SELECT_ALL) != 0)
        return -EPERM;
    return 0;
}

int caps_set_ids(uid_t uid, gid_t gid)
{
    if (setgroups(0, NULL) != 0)
        return -errno;
    if (setresgid(gid, gid, gid) != 0)
        return -errno;
    if (setresuid(uid, uid, uid) != 0)
        return -errno;
    return 0;
}

int caps_clear_all(void)
{
    /* A uid change away from 0 already emptied these; --uid 0 relies on this call. */
    capng_clear(CAPNG_SELECT_ALL);
    if (capng_apply(CAPNG_SELECT_CAPS) != 0)
        return -EPERM;
    if (capng_get_caps_process() != 0)
        return -EPERM;
    if (capng_have_capabilities(CAPNG_SELECT_ALL) != CAPNG_NONE)
        return -EPERM;
    return 0;
}

int caps_no_new_privs(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    return 0;
}
