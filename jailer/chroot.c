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
 * A directory of an existing jail tree (lstat: a symlink is not a directory) must be a real
 * directory owned by root that nobody else can write: then no one but root can change the tree
 * between these checks and its use. (root/ owned by the VM's uid would let that uid put a
 * symlink at root/dev before the jailer creates it.) A directory on the way to the jail (the
 * chroot base and its ancestors, on_the_way) may also be writable by others if it is sticky, as
 * /tmp is: others can add entries there but not rename or remove root's.
 * Returns 0, -ENOENT (not there, not logged), or -errno (logged).
 */
static int check_dir(const char *path, bool on_the_way)
{
    const char *what = on_the_way ? "--chroot-base-dir: directory" : "jail path";
    struct stat st;

    if (lstat(path, &st) != 0) {
        int rc = -errno;
        if (rc != -ENOENT)
            env_log(rc, "%s %s", what, path);
        return rc;
    }
    if (!S_ISDIR(st.st_mode)) {
        env_log(0, "%s %s is %s", what, path,
                S_ISLNK(st.st_mode) ? "a symlink" : "not a directory");
        return -ENOTDIR;
    }
    if (st.st_uid != 0) {
        env_log(0, "%s %s is owned by uid %u (must be root)", what, path, (unsigned int)st.st_uid);
        return -EPERM;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(on_the_way && (st.st_mode & S_ISVTX))) {
        env_log(0, "%s %s is writable by group or others (mode %04o)", what, path,
                (unsigned int)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

/* check_dir() of one level of an existing tree: 1 if the level is missing (the rest of the tree
 * is then the jailer's to make), 0 if it is there and safe, or -errno. */
static int check_level(const char *path)
{
    int rc = check_dir(path, false);
    return rc == -ENOENT ? 1 : rc;
}

/* Checks "/" and every existing directory of path down to path itself (check_dir on the way). */
static int check_ancestors(const char *path)
{
    char buf[JAIL_PATH_MAX];
    int rc;

    if (env_path(buf, sizeof(buf), "%s", path))
        return -ENAMETOOLONG;
    rc = check_dir("/", true);
    for (char *p = buf + 1; rc == 0 && *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        rc = check_dir(buf, true);
        *p = '/';
    }
    if (rc == 0 && strcmp(buf, "/") != 0)
        rc = check_dir(buf, true);
    return rc == -ENOENT ? 0 : rc;
}

/*
 * Firecracker's jailer uses a jail directory that already exists; Kata makes <id>/root, mounts
 * the kernel, disks, FIFOs and its config file into it, then runs the jailer. Accept such a tree
 * when it is safe: every directory from <base>/<exec> down is real, root-owned and writable only
 * by root (the base and its ancestors: check_ancestors), and nothing the jailer puts there (the
 * binary copy, the pid file, dev/) exists yet, so a jail in use or left over from an earlier VM is
 * still refused.
 */
static int check_existing(struct jail *j)
{
    char path[JAIL_PATH_MAX];
    const char *const ours[] = {j->exec_name, NULL, "dev"};
    struct stat st;
    int rc;

    env_path(path, sizeof(path), "%s", j->id_dir);
    *strrchr(path, '/') = '\0'; /* <base>/<exec> */
    if ((rc = check_level(path)))
        return rc > 0 ? 0 : rc;
    if ((rc = check_level(j->id_dir)))
        return rc > 0 ? 0 : rc;
    j->existed = true;
    /*
     * The jailer's own entries first (lstat only, nothing is used yet): a jail in use has a
     * root/ that belongs to its VM's uid, and "in use" is the clearer message for it.
     */
    if (lstat(j->root, &st) == 0 && S_ISDIR(st.st_mode)) {
        for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) {
            if (ours[i])
                env_path(path, sizeof(path), "%s/%s", j->root, ours[i]);
            else
                env_path(path, sizeof(path), "%s/%s.pid", j->root, j->exec_name);
            if (lstat(path, &st) == 0 || errno != ENOENT) {
                env_log(0, "jail %s already exists and is in use or left over: %s exists",
                        j->id_dir, path);
                return -EEXIST;
            }
        }
    }
    if ((rc = check_level(j->root)))
        return rc > 0 ? 0 : rc;
    j->had_root = true;
    env_path(path, sizeof(path), "%s/run", j->root);
    rc = check_dir(path, false);
    if (rc == 0)
        j->had_run = true;
    return rc == -ENOENT ? 0 : rc;
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

    *exit_code = JEXIT_BAD_CHROOT;
    if (realpath(a->chroot_base, j->base) == NULL) {
        if (errno != ENOENT) {
            rc = -errno;
            env_log(rc, "--chroot-base-dir '%s'", a->chroot_base);
            return rc;
        }
        /* Created later; the argument is already absolute and free of '.' and '..'. */
        env_path(j->base, sizeof(j->base), "%s", a->chroot_base);
        for (size_t len = strlen(j->base); len > 1 && j->base[len - 1] == '/'; len--)
            j->base[len - 1] = '\0';
    } else if (stat(j->base, &st) != 0 || !S_ISDIR(st.st_mode)) {
        env_log(0, "--chroot-base-dir '%s': not a directory", a->chroot_base);
        return -ENOTDIR;
    }
    /* Room for <root>/<exec_name>.pid as well. */
    if (env_path(j->id_dir, sizeof(j->id_dir), "%s/%s/%s", strcmp(j->base, "/") ? j->base : "",
                 j->exec_name, a->id) ||
        strlen(j->id_dir) + 6 + strlen(j->exec_name) + 8 >= sizeof(j->root)) {
        env_log(0, "--chroot-base-dir '%s': jail path too long", a->chroot_base);
        return -ENAMETOOLONG;
    }
    env_path(j->root, sizeof(j->root), "%s/root", j->id_dir);
    /* Only root may be able to change the way to the jail (checked again as it is created). */
    rc = check_ancestors(j->base);
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
 * mkdir -p for the directories above the id directory, remembering what we made. A directory
 * that was already there must pass check_dir (one on the way from a sticky directory such
 * as /tmp may have been made by anyone since chroot_resolve).
 */
static int make_parents(struct jail *j, const char *path)
{
    char buf[JAIL_PATH_MAX];
    char *p;
    int rc;

    env_path(buf, sizeof(buf), "%s", path);
    for (p = buf + 1;; p++) {
        bool end = (*p == '\0');
        if (*p != '/' && !end)
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) == 0) {
            /* umask is 077 here: directories on the path stay traversable by the jail uid. */
            if (chmod(buf, 0755) != 0)
                goto fail;
            if (j->n_created >= (int)(sizeof(j->created) / sizeof(j->created[0])) ||
                strlen(buf) >= sizeof(j->created[0])) {
                errno = ENAMETOOLONG;
                goto fail;
            }
            strcpy(j->created[j->n_created++], buf);
        } else if (errno != EEXIST) {
            goto fail;
        } else if ((rc = check_dir(buf, true)) != 0) {
            if (rc != -ENOENT)
                return rc; /* logged */
            errno = ENOENT;
            goto fail;
        }
        if (end)
            return 0;
        *p = '/';
    }
fail:
    rc = -errno;
    env_log(rc, "creating %s", buf);
    return rc;
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
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
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
        unlink(dst);
out_in:
    close(in);
    return rc;
}

/*
 * Opens (O_PATH) the deepest directory of path that already exists. Undo works relative to it,
 * so it still reaches the jail after pivot_root, when the host's paths are gone.
 */
static int open_anchor(struct jail *j, const char *path)
{
    char buf[JAIL_PATH_MAX];

    env_path(buf, sizeof(buf), "%s", path);
    for (;;) {
        char *slash;
        int fd = open(buf, O_PATH | O_DIRECTORY | O_CLOEXEC);

        if (fd >= 0) {
            j->anchor_fd = fd;
            j->anchor_len = strlen(buf);
            return 0;
        }
        slash = strrchr(buf, '/');
        if (errno != ENOENT || !slash || !strcmp(buf, "/"))
            return -errno;
        slash[slash == buf ? 1 : 0] = '\0';
    }
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
    char parent[JAIL_PATH_MAX];
    int rc;

    env_path(parent, sizeof(parent), "%s", j->id_dir);
    *strrchr(parent, '/') = '\0';
    rc = open_anchor(j, parent);
    if (rc) {
        env_log(rc, "opening %s", parent);
        return rc;
    }
    rc = make_parents(j, parent); /* logs its errors */
    if (rc)
        return rc;
    /* A directory that appeared since chroot_resolve is another jailer's: refused. */
    if (!j->existed) {
        if (mkdir(j->id_dir, 0700) != 0) {
            rc = -errno;
            if (rc == -EEXIST)
                env_log(0, "jail %s already exists", j->id_dir);
            else
                env_log(rc, "creating %s", j->id_dir);
            return rc;
        }
        j->made_id_dir = true;
        if (chmod(j->id_dir, 0755) != 0) {
            rc = -errno;
            env_log(rc, "creating %s", j->id_dir);
            return rc;
        }
    }
    if (!j->had_root) {
        if (mkdir(j->root, 0700) != 0) {
            rc = -errno;
            env_log(rc, "creating %s", j->root);
            return rc;
        }
        j->made_root = true;
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
     * Our own bind mount, in our own mount namespace. Before chroot_enter's unshare the mounts
     * at j->root are the host's (Kata bind-mounts root/ onto itself): never touch those.
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
}

int chroot_enter(struct jail *j)
{
    const char *step;
    int rc;

    step = "unshare(CLONE_NEWNS)";
    if (unshare(CLONE_NEWNS) != 0)
        goto fail;
    /* Nothing we mount from here on may propagate back to the host. */
    step = "making mounts slave";
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0)
        goto fail;
    /* pivot_root needs the new root to be a mount point. */
    step = "bind-mounting the jail";
    if (mount(j->root, j->root, NULL, MS_BIND | MS_REC, NULL) != 0)
        goto fail;
    j->bound = true;
    step = "chdir into the jail";
    if (chdir(j->root) != 0)
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
