/* chroot: the jail directory <base>/<exec>/<id>/root, the binary copy, and pivot_root into it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jailer.h"

/*
 * The way to the jail is walked once, from "/", one openat(O_NOFOLLOW|O_DIRECTORY) per
 * component, and every later step works from the directory fds of that walk: a symlink
 * anywhere on the way is refused, never followed, and nothing can be swapped in under a path
 * between a check and its use. Each directory must be real, owned by root and writable by
 * nobody else (then only root can change the tree). The directories above the chroot base
 * (LV_ABOVE) may also be writable by others when sticky, as /tmp is: others can add entries
 * there but not rename or remove root's. The base itself (LV_BASE) may not: anyone who can
 * write it could make <base>/<exec name> first. (root/ owned by the VM's uid would let that uid
 * put a symlink at root/dev before the jailer creates it: LV_JAIL.)
 */
enum level { LV_ABOVE, LV_BASE, LV_JAIL };

static const char *level_name(enum level lv)
{
    return lv == LV_JAIL ? "jail path" : "--chroot-base-dir: directory";
}

/* Checks the opened directory fd (named path in messages). Returns 0 or -errno (logged). */
static int check_fd(int fd, const char *path, enum level lv)
{
    struct stat st;

    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        env_log(rc, "%s %s", level_name(lv), path);
        return rc;
    }
    if (st.st_uid != 0) {
        env_log(0, "%s %s is owned by uid %u (must be root)", level_name(lv), path,
                (unsigned int)st.st_uid);
        return -EPERM;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(lv == LV_ABOVE && (st.st_mode & S_ISVTX))) {
        env_log(0, "%s %s is writable by group or others (mode %04o)", level_name(lv), path,
                (unsigned int)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

/*
 * Opens the directory name in dirfd (path names it in messages) without following a symlink,
 * and checks it. Returns 0 with *out set, 1 if it does not exist (not logged), or -errno
 * (logged).
 */
static int open_level(int dirfd, const char *name, const char *path, enum level lv, int *out)
{
    struct stat st;
    int fd, rc;

    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (rc == -ENOENT)
            return 1;
        if ((rc == -ENOTDIR || rc == -ELOOP) &&
            fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISLNK(st.st_mode) || lv == LV_JAIL)
                env_log(0, "%s %s is %s", level_name(lv), path,
                        S_ISLNK(st.st_mode) ? "a symlink" : "not a directory");
            else
                env_log(-ENOTDIR, "%s %s", level_name(lv), path);
            return -ENOTDIR;
        }
        env_log(rc, "%s %s", level_name(lv), path);
        return rc;
    }
    rc = check_fd(fd, path, lv);
    if (rc) {
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* The level of component number k (1 = the first below "/") of <base>/<exec name>. */
static enum level level_of(const struct jail *j, int k)
{
    return k < j->base_depth ? LV_ABOVE : k == j->base_depth ? LV_BASE : LV_JAIL;
}

/*
 * Walks <base>/<exec name> from "/" as far as it exists. The deepest directory reached becomes
 * the anchor (undo works relative to it, also after pivot_root); j->way_len is the length of its
 * path, and j->way_complete says whether <base>/<exec name> exists. Returns 0 or -errno (logged,
 * *exit_code set).
 */
static int walk_way(struct jail *j, int *exit_code)
{
    char path[JAIL_PATH_MAX];
    int fd, k = 0, rc;

    env_path(path, sizeof(path), "%s", j->id_dir);
    *strrchr(path, '/') = '\0'; /* <base>/<exec> */
    *exit_code = JEXIT_BAD_CHROOT;
    fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        env_log(rc, "opening /");
        return rc;
    }
    if ((rc = check_fd(fd, "/", level_of(j, 0)))) {
        close(fd);
        return rc;
    }
    j->way_len = 1;
    j->way_complete = true;
    for (char *name = path + 1; *name;) {
        char *slash = strchr(name, '/');
        int next;
        if (slash)
            *slash = '\0';
        enum level lv = level_of(j, ++k);
        *exit_code = lv == LV_JAIL ? JEXIT_JAIL_EXISTS : JEXIT_BAD_CHROOT;
        rc = open_level(fd, name, path, lv, &next);
        if (rc) {
            if (rc < 0) {
                close(fd);
                return rc;
            }
            j->way_complete = false; /* the rest is the jailer's to make */
            break;
        }
        close(fd);
        fd = next;
        j->way_len = strlen(path);
        if (!slash)
            break;
        *slash = '/';
        name = slash + 1;
    }
    j->anchor_fd = fd;
    j->anchor_len = j->way_len;
    *exit_code = JEXIT_OK;
    return 0;
}

/*
 * Firecracker's jailer uses a jail directory that already exists; Kata makes <id>/root, mounts
 * the kernel, disks, FIFOs and its config file into it, then runs the jailer. Accept such a tree
 * when it is safe: <id>, root/ and root/run are real, root-owned directories writable only by
 * root, and nothing the jailer puts there (the binary copy, the pid files, dev/) exists yet, so a
 * jail in use or left over from an earlier VM is still refused. Runs on the fds of walk_way.
 */
static int check_existing(struct jail *j)
{
    char path[JAIL_PATH_MAX], pid_name[JAIL_PATH_MAX];
    const char *const ours[] = {j->exec_name, pid_name, "dev"};
    struct stat st;
    int rc, fd;

    if (!j->way_complete)
        return 0;
    env_path(pid_name, sizeof(pid_name), "%s.pid", j->exec_name);
    if ((rc = open_level(j->anchor_fd, j->args->id, j->id_dir, LV_JAIL, &j->id_fd)))
        return rc > 0 ? 0 : rc;
    j->existed = true;
    if (fstatat(j->id_fd, pid_name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) {
        env_log(0, "jail %s already exists and is in use or left over: %s/%s exists", j->id_dir,
                j->id_dir, pid_name);
        return -EEXIST;
    }
    /*
     * The jailer's own entries first (nothing is used yet): a jail in use has a root/ that
     * belongs to its VM's uid, and "in use" is the clearer message for it.
     */
    fd = openat(j->id_fd, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) {
            if (fstatat(fd, ours[i], &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) {
                env_log(0, "jail %s already exists and is in use or left over: %s/%s exists",
                        j->id_dir, j->root, ours[i]);
                close(fd);
                return -EEXIST;
            }
        }
        close(fd);
    }
    if ((rc = open_level(j->id_fd, "root", j->root, LV_JAIL, &j->root_fd)))
        return rc > 0 ? 0 : rc;
    j->had_root = true;
    env_path(path, sizeof(path), "%s/run", j->root);
    rc = open_level(j->root_fd, "run", path, LV_JAIL, &fd);
    if (rc == 0) {
        j->had_run = true;
        close(fd);
    }
    return rc > 0 ? 0 : rc;
}

int chroot_resolve(struct jail *j, int *exit_code)
{
    const struct jail_args *a = j->args;
    struct stat st;
    char *slash;
    int rc;

    *exit_code = JEXIT_BAD_EXEC;
    if (stat(a->exec_file, &st) != 0) {
        rc = -errno;
        env_log(rc, "--exec-file '%s'", a->exec_file);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        env_log(0, "--exec-file '%s': not a regular file", a->exec_file);
        return -EINVAL;
    }
    if (!realpath(a->exec_file, j->exec_path)) {
        rc = -errno;
        env_log(rc, "--exec-file '%s': resolving the path", a->exec_file);
        return rc;
    }
    rc = elf_check_static(j->exec_path);
    if (rc)
        return rc;
    slash = strrchr(j->exec_path, '/');
    j->exec_name = slash ? slash + 1 : j->exec_path;

    /* Used as given (absolute, no '.' or '..': args.c), never resolved: walk_way refuses a
     * symlink in it. */
    *exit_code = JEXIT_BAD_CHROOT;
    env_path(j->base, sizeof(j->base), "%s", a->chroot_base);
    for (size_t len = strlen(j->base); len > 1 && j->base[len - 1] == '/'; len--)
        j->base[len - 1] = '\0';
    j->base_depth = 0;
    for (const char *p = j->base; *p; p++)
        if (*p == '/' && p[1] && p[1] != '/')
            j->base_depth++;
    /* Room for <root>/<exec_name>.pid as well. */
    if (env_path(j->id_dir, sizeof(j->id_dir), "%s/%s/%s", strcmp(j->base, "/") ? j->base : "",
                 j->exec_name, a->id) ||
        strlen(j->id_dir) + 6 + strlen(j->exec_name) + 8 >= sizeof(j->root) ||
        strstr(j->base, "//")) {
        env_log(0, "--chroot-base-dir '%s': jail path too long or has an empty component",
                a->chroot_base);
        return -ENAMETOOLONG;
    }
    env_path(j->root, sizeof(j->root), "%s/root", j->id_dir);
    /*
     * Our own mount namespace first, every mount a slave of the host's (nothing mounted here
     * propagates back): the directory fds of the walk must belong to the namespace in which
     * root/ is bind-mounted and pivot_root'ed, since a mount of another namespace cannot be a
     * mount target.
     */
    *exit_code = JEXIT_JAIL;
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0) {
        rc = -errno;
        env_log(rc, "making a private mount namespace");
        return rc;
    }
    rc = walk_way(j, exit_code);
    if (rc)
        return rc;

    *exit_code = JEXIT_JAIL_EXISTS;
    rc = check_existing(j);
    if (rc)
        return rc;
    *exit_code = JEXIT_OK;
    return 0;
}

/*
 * Makes the directory name in dirfd (path in messages) at level lv, or, when it exists already
 * (someone made it since walk_way: a level under a sticky directory), takes it if it passes
 * open_level's checks. *made says which. Returns 0 with *out set, or -errno (logged).
 */
static int make_level(int dirfd, const char *name, const char *path, enum level lv, bool *made,
                      int *out)
{
    int rc;

    *made = mkdirat(dirfd, name, 0700) == 0;
    if (!*made && errno != EEXIST) {
        rc = -errno;
        env_log(rc, "creating %s", path);
        return rc;
    }
    rc = open_level(dirfd, name, path, lv, out);
    if (rc > 0) { /* removed again in between */
        env_log(-ENOENT, "creating %s", path);
        return -ENOENT;
    }
    return rc;
}

/*
 * mkdir -p for the rest of <base>/<exec name> below the anchor, remembering what we made (for
 * undo). Returns 0 with *out the fd of <base>/<exec name>, or -errno (logged).
 */
static int make_parents(struct jail *j, int *out)
{
    char path[JAIL_PATH_MAX];
    int fd = j->anchor_fd, k = 0, rc;

    env_path(path, sizeof(path), "%s", j->id_dir);
    *strrchr(path, '/') = '\0';
    for (size_t i = 0; j->anchor_len > 1 && i < j->anchor_len; i++)
        k += path[i] == '/'; /* the anchor's depth */
    if (j->way_complete) {
        *out = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return *out < 0 ? -errno : 0;
    }
    for (char *name = path + j->anchor_len + (j->anchor_len > 1);;) {
        char *slash = strchr(name, '/');
        bool made;
        int next;
        if (slash)
            *slash = '\0';
        rc = make_level(fd, name, path, level_of(j, ++k), &made, &next);
        if (fd != j->anchor_fd)
            close(fd);
        if (rc)
            return rc;
        fd = next;
        if (made) {
            /* umask is 077 here: directories on the path stay traversable by the jail uid. */
            if (j->n_created >= (int)(sizeof(j->created) / sizeof(j->created[0])) ||
                strlen(path) >= sizeof(j->created[0])) {
                env_log(-ENAMETOOLONG, "creating %s", path);
                close(fd);
                return -ENAMETOOLONG;
            }
            strcpy(j->created[j->n_created++], path);
            if (fchmod(fd, 0755) != 0) {
                rc = -errno;
                env_log(rc, "creating %s", path);
                close(fd);
                return rc;
            }
        }
        if (!slash)
            break;
        *slash = '/';
        name = slash + 1;
    }
    *out = fd;
    return 0;
}

static int copy_binary(const struct jail *j)
{
    char dst[JAIL_PATH_MAX];
    int in = -1, out = -1, rc = 0;
    char buf[65536];

    if (env_path(dst, sizeof(dst), "%s/%s", j->root, j->exec_name))
        return -ENAMETOOLONG;
    in = open(j->exec_path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    out = openat(j->root_fd, j->exec_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                 0700);
    if (out < 0) {
        rc = -errno;
        goto out_in;
    }
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n == 0)
            break;
        if (n > 0)
            continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
            rc = -errno;
            goto out_out;
        }
        /* Fallback: plain read/write from the current offsets. */
        while ((n = read(in, buf, sizeof(buf))) > 0) {
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(out, buf + off, (size_t)(n - off));
                if (w < 0) {
                    rc = -errno;
                    goto out_out;
                }
                off += w;
            }
        }
        if (n < 0)
            rc = -errno;
        break;
    }
    /* Root-owned and read-only: the jailed process can run it but not rewrite it. */
    if (rc == 0 && fchmod(out, 0555) != 0)
        rc = -errno;
out_out:
    if (close(out) != 0 && rc == 0)
        rc = -errno;
    /* O_EXCL made it ours: a partial copy must not stay behind as a claim on the jail. */
    if (rc)
        unlinkat(j->root_fd, j->exec_name, 0);
out_in:
    close(in);
    return rc;
}

/*
 * Removes abs (a file or an empty directory at or below the anchor) through the anchor. Every
 * directory on the way is opened with O_NOFOLLOW, so a symlink put into the jail (root/ and dev/
 * belong to the VM's uid once devices_create ran) can never lead the removal out of it.
 */
static void remove_anchored(const struct jail *j, const char *abs)
{
    char rel[JAIL_PATH_MAX];
    char *name, *slash;
    int dir = j->anchor_fd;

    if (strlen(abs) <= j->anchor_len ||
        env_path(rel, sizeof(rel), "%s", abs + (j->anchor_len == 1 ? 1 : j->anchor_len + 1)))
        return;
    for (name = rel;; name = slash + 1) {
        slash = strchr(name, '/');
        if (slash)
            *slash = '\0';
        if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
            break;
        if (!slash) {
            if (unlinkat(dir, name, 0) != 0 && errno == EISDIR)
                unlinkat(dir, name, AT_REMOVEDIR);
            break;
        }
        int fd = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dir != j->anchor_fd)
            close(dir);
        dir = fd;
        if (dir < 0)
            return;
    }
    if (dir != j->anchor_fd)
        close(dir);
}

int chroot_create(struct jail *j)
{
    bool made;
    int exec_fd, rc;

    rc = make_parents(j, &exec_fd); /* logs its errors */
    if (rc)
        return rc;
    /* A directory that appeared since chroot_resolve is another jailer's: refused. */
    if (!j->existed) {
        rc = mkdirat(exec_fd, j->args->id, 0700) ? -errno : 0;
        if (rc == 0) {
            j->made_id_dir = true;
            rc = open_level(exec_fd, j->args->id, j->id_dir, LV_JAIL, &j->id_fd);
            if (rc == 0 && fchmod(j->id_fd, 0755) != 0)
                rc = -errno;
        } else if (rc == -EEXIST) {
            env_log(0, "jail %s already exists", j->id_dir);
        }
        if (rc) {
            if (rc != -EEXIST)
                env_log(rc, "creating %s", j->id_dir);
            close(exec_fd);
            return rc > 0 ? -ENOENT : rc;
        }
    }
    close(exec_fd);
    if (!j->had_root) {
        rc = make_level(j->id_fd, "root", j->root, LV_JAIL, &made, &j->root_fd);
        j->made_root = made;
        if (rc)
            return rc;
    }
    /* The O_EXCL copy of the binary is the atomic claim on the jail (also on an existing one). */
    rc = copy_binary(j);
    if (rc) {
        if (rc == -EEXIST)
            env_log(0, "jail %s already exists and is in use: %s/%s exists", j->id_dir, j->root,
                    j->exec_name);
        else
            env_log(rc, "copying %s into %s", j->exec_path, j->root);
        return rc;
    }
    j->made_binary = true;
    return 0;
}

void chroot_undo(struct jail *j)
{
    /* What the jailer may have put in the jail, innermost first; the exec name comes extra. */
    static const char *const inner[] = {"dev/kvm",         "dev/net/tun", "dev/urandom",
                                        "dev/userfaultfd", "dev/net",     "dev"};
    char path[JAIL_PATH_MAX];

    if (j->anchor_fd < 0)
        return;
    /*
     * Our own bind mount, the top one at j->root in our own mount namespace; below it may be
     * the orchestrator's (Kata bind-mounts root/ onto itself), never touched.
     */
    if (j->bound && !j->pivoted)
        umount2(j->root, MNT_DETACH);
    j->bound = false;
    /* Only what this jailer made: an orchestrator's tree (and what it mounted there) stays. */
    if (j->made_binary) {
        if (!env_path(path, sizeof(path), "%s/%s", j->root, j->exec_name))
            remove_anchored(j, path);
        if (!env_path(path, sizeof(path), "%s/%s.pid", j->root, j->exec_name))
            remove_anchored(j, path);
        if (!env_path(path, sizeof(path), "%s/%s.pid", j->id_dir, j->exec_name))
            remove_anchored(j, path);
        for (size_t i = 0; i < sizeof(inner) / sizeof(inner[0]); i++)
            if (!env_path(path, sizeof(path), "%s/%s", j->root, inner[i]))
                remove_anchored(j, path);
        if (!j->had_run && !env_path(path, sizeof(path), "%s/run", j->root))
            remove_anchored(j, path);
        j->made_binary = false;
    }
    if (j->made_root) {
        remove_anchored(j, j->root);
        j->made_root = false;
    }
    if (j->made_id_dir) {
        remove_anchored(j, j->id_dir);
        j->made_id_dir = false;
    }
    while (j->n_created > 0)
        remove_anchored(j, j->created[--j->n_created]);
    close(j->anchor_fd);
    j->anchor_fd = -1;
    for (int *fd = &j->id_fd; fd <= &j->root_fd; fd++)
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
}

int chroot_enter(struct jail *j)
{
    char self[32];
    const char *step;
    int rc, fd;

    /*
     * pivot_root needs the new root to be a mount point. Bound through the fd of the walk
     * (/proc/self/fd/N names that very directory), then entered by a lookup of "root" in the
     * root-owned <id> directory, which lands on top of the new mount.
     */
    step = "bind-mounting the jail";
    snprintf(self, sizeof(self), "/proc/self/fd/%d", j->root_fd);
    if (mount(self, self, NULL, MS_BIND | MS_REC, NULL) != 0)
        goto fail;
    j->bound = true;
    step = "chdir into the jail";
    fd = openat(j->id_fd, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        goto fail;
    rc = fchdir(fd);
    close(fd);
    if (rc != 0)
        goto fail;
    /*
     * pivot_root(".", ".") stacks the old root on top of the new one at "/"; detaching "."
     * then drops it. Same result as an old_root directory, without creating and removing one.
     */
    step = "pivot_root";
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        goto fail;
    j->pivoted = true;
    step = "detaching the old root";
    if (umount2(".", MNT_DETACH) != 0)
        goto fail;
    step = "chdir /";
    if (chdir("/") != 0)
        goto fail;
    return 0;
fail:
    rc = -errno;
    env_log(rc, "entering the jail %s: %s", j->root, step);
    return rc;
}
