/* devices: the only device nodes the VMM gets, owned by the jail uid:gid, mode 0600. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

/*
 * Makes (or, when may_exist, also takes) the directory name in dirfd and opens it; O_NOFOLLOW and
 * O_DIRECTORY: a symlink or anything else in its place is refused, never followed. Each
 * directory of the jail is still root's and private here (chowned only at the end), so nobody
 * else can add an entry to it meanwhile.
 */
static int open_dir(int dirfd, const char *name, bool may_exist, int *out)
{
    struct stat st;
    int fd;

    if (mkdirat(dirfd, name, 0700) != 0 && !(may_exist && errno == EEXIST))
        return -errno;
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? -ENOTDIR : -errno;
    /* One that was there already (root/run) must still be root's, as chroot_resolve found it. */
    if (fstat(fd, &st) != 0 || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        close(fd);
        return -EPERM;
    }
    *out = fd;
    return 0;
}

/* The node is made 0600 (umask is 077) in a directory only root can write yet. */
static int make_node(int dirfd, const char *name, unsigned int maj, unsigned int min, uid_t uid,
                     gid_t gid)
{
    if (mknodat(dirfd, name, S_IFCHR | 0600, makedev(maj, min)) != 0)
        return -errno;
    if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
        return -errno;
    return 0;
}

/*
 * Runs after pivot_root, so "/" is the jail's root/ (root-owned: chroot_resolve refused anything
 * else). Everything is made through directory fds and only then given to the VM's uid, the root
 * directory last, so the uid cannot race a symlink into any path the jailer uses.
 */
int devices_create(const struct jail *j)
{
    enum { ROOT, DEV, NET, RUN, N_DIRS };
    static const char *const names[N_DIRS] = {"/", "/dev", "/dev/net", "/run"};
    const struct {
        const char *name;
        int dir;
        unsigned int maj, min;
        bool wanted;
    } nodes[] = {
            {"kvm", DEV, 10, 232, true},
            {"tun", NET, 10, 200, true},
            {"urandom", DEV, 1, 9, true},
            /* Only when asked (--userfaultfd): the node gives the VM's uid kernel-fault
             * userfaultfds, past vm.unprivileged_userfaultfd, and nothing uses it before
             * snapshot loads with a UFFD backend. */
            {"userfaultfd", DEV, 10, (unsigned int)j->uffd_minor,
             j->args->userfaultfd && j->uffd_minor >= 0},
    };
    uid_t uid = j->args->uid;
    gid_t gid = j->args->gid;
    int fd[N_DIRS] = {-1, -1, -1, -1};
    int rc, i;

    fd[ROOT] = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd[ROOT] < 0) {
        rc = -errno;
        env_log(rc, "opening / in the jail");
        return rc;
    }
    i = DEV;
    rc = open_dir(fd[ROOT], "dev", false, &fd[DEV]);
    if (rc)
        goto fail_dir;
    i = NET;
    rc = open_dir(fd[DEV], "net", false, &fd[NET]);
    if (rc)
        goto fail_dir;
    i = RUN;
    rc = open_dir(fd[ROOT], "run", j->had_run, &fd[RUN]);
    if (rc)
        goto fail_dir;
    for (size_t n = 0; n < sizeof(nodes) / sizeof(nodes[0]); n++) {
        if (!nodes[n].wanted)
            continue;
        rc = make_node(fd[nodes[n].dir], nodes[n].name, nodes[n].maj, nodes[n].min, uid, gid);
        if (rc) {
            env_log(rc, "creating %s/%s in the jail", names[nodes[n].dir], nodes[n].name);
            goto out;
        }
    }
    /*
     * Innermost first, the root last: until then no path here is the VM uid's to change. The
     * root stays root's, writable by the VM's gid and sticky (1770): the VMM can make files
     * there but never unlink or rename root's (the binary copy, the pid file).
     */
    for (i = N_DIRS - 1; i >= 0; i--) {
        uid_t owner = i == ROOT ? 0 : uid;
        mode_t mode = i == ROOT ? 01770 : 0700;
        if (fchown(fd[i], owner, gid) != 0 || fchmod(fd[i], mode) != 0) {
            rc = -errno;
            goto fail_dir;
        }
    }
    rc = 0;
    goto out;
fail_dir:
    env_log(rc, "creating %s in the jail", names[i]);
out:
    for (i = 0; i < N_DIRS; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    return rc;
}
