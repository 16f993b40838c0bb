/* devices: the only device nodes the VMM gets, owned by the jail uid:gid, mode 0600. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "jailer.h"

int devices_probe(struct jail *j)
{
    char line[128], name[64];
    FILE *f;
    int minor;

    j->uffd_minor = -1;
    f = fopen("/proc/misc", "re");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%d %63s", &minor, name) == 2 && !strcmp(name, "userfaultfd")) {
            j->uffd_minor = minor;
            break;
        }
    }
    fclose(f);
    return 0;
}

static int make_dir(const char *path, uid_t uid, gid_t gid)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    if (chown(path, uid, gid) != 0 || chmod(path, 0700) != 0)
        return -errno;
    return 0;
}

static int make_node(const char *path, unsigned int maj, unsigned int min, uid_t uid, gid_t gid)
{
    if (mknod(path, S_IFCHR | 0600, makedev(maj, min)) != 0)
        return -errno;
    if (chown(path, uid, gid) != 0 || chmod(path, 0600) != 0)
        return -errno;
    return 0;
}

int devices_create(const struct jail *j)
{
    static const char *const dirs[] = {"/", "/dev", "/dev/net", "/run"};
    const struct {
        const char *path;
        unsigned int maj, min;
        bool wanted;
    } nodes[] = {
            {"/dev/kvm", 10, 232, true},
            {"/dev/net/tun", 10, 200, true},
            {"/dev/urandom", 1, 9, true},
            {"/dev/userfaultfd", 10, (unsigned int)j->uffd_minor, j->uffd_minor >= 0},
    };
    uid_t uid = j->args->uid;
    gid_t gid = j->args->gid;
    int rc;

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        rc = make_dir(dirs[i], uid, gid);
        if (rc) {
            env_log(rc, "creating %s in the jail", dirs[i]);
            return rc;
        }
    }
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
        if (!nodes[i].wanted)
            continue;
        rc = make_node(nodes[i].path, nodes[i].maj, nodes[i].min, uid, gid);
        if (rc) {
            env_log(rc, "creating %s in the jail", nodes[i].path);
            return rc;
        }
    }
    return 0;
}
