/* cgroup: create and join <mount>/<parent>/<id> in cgroup v1 (per controller) or v2. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mntent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jailer.h"

#define CG_PATH (JAIL_PATH_MAX / 4)

static int write_file(const char *path, const char *value)
{
    size_t len = strlen(value);
    int fd, rc = 0;
    ssize_t n;

    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = write(fd, value, len);
    if (n < 0)
        rc = -errno;
    else if ((size_t)n != len)
        rc = -EIO;
    close(fd);
    return rc;
}

/* Reads one line (without its newline) into buf. Returns its length or -errno. */
static int read_line(const char *path, char *buf, size_t size)
{
    ssize_t n;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return (int)strlen(buf);
}

/* The controller of a cgroup file is the part before the first dot. */
static void controller_of(const char *file, char *out, size_t size)
{
    size_t n = strcspn(file, ".");

    if (n >= size)
        n = size - 1;
    memcpy(out, file, n);
    out[n] = '\0';
}

/* Finds the mount of a v1 controller (ctrl != NULL) or of the v2 hierarchy. */
static int find_mount(const char *ctrl, char *out, size_t size)
{
    struct mntent *m;
    FILE *f;
    int rc = -ENOENT;

    f = setmntent("/proc/mounts", "re");
    if (!f)
        return -errno;
    while ((m = getmntent(f)) != NULL) {
        bool hit = ctrl ? (!strcmp(m->mnt_type, "cgroup") && hasmntopt(m, ctrl))
                        : !strcmp(m->mnt_type, "cgroup2");
        if (hit) {
            rc = env_path(out, size, "%s", m->mnt_dir);
            break;
        }
    }
    endmntent(f);
    return rc;
}

/* Returns true if the space-separated list contains word. */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0' || p[n] == '\n'))
            return true;
    return false;
}

static const char *parent_of(const struct jail *j)
{
    return j->args->parent_cgroup ? j->args->parent_cgroup : j->exec_name;
}

int cgroup_check(struct jail *j)
{
    const struct jail_args *a = j->args;
    char mnt[CG_PATH], ctrl[JAIL_CGROUP_NAME_MAX], path[JAIL_PATH_MAX], list[1024];
    struct stat st;
    int rc;

    if (a->cgroup_version == 2) {
        if (a->n_cgroups == 0 && !a->parent_cgroup)
            return 0;
        rc = find_mount(NULL, mnt, sizeof(mnt));
        if (rc) {
            env_log(rc, "no cgroup v2 hierarchy is mounted");
            return rc;
        }
        if (a->n_cgroups == 0) {
            env_path(path, sizeof(path), "%s/%s", mnt, a->parent_cgroup);
            if (stat(path, &st) != 0) {
                rc = -errno;
                env_log(rc, "--parent-cgroup %s", path);
                return rc;
            }
            return 0;
        }
        env_path(path, sizeof(path), "%s/cgroup.controllers", mnt);
        rc = read_line(path, list, sizeof(list));
        if (rc < 0) {
            env_log(rc, "reading %s", path);
            return rc;
        }
        for (int i = 0; i < a->n_cgroups; i++) {
            controller_of(a->cgroups[i].file, ctrl, sizeof(ctrl));
            if (strcmp(ctrl, "cgroup") && !has_word(list, ctrl)) {
                env_log(0, "--cgroup %s: controller '%s' is not available in %s",
                        a->cgroups[i].file, ctrl, mnt);
                return -ENOENT;
            }
        }
        return 0;
    }
    for (int i = 0; i < a->n_cgroups; i++) {
        controller_of(a->cgroups[i].file, ctrl, sizeof(ctrl));
        rc = find_mount(ctrl, mnt, sizeof(mnt));
        if (rc) {
            env_log(0, "--cgroup %s: cgroup v1 controller '%s' is not mounted", a->cgroups[i].file,
                    ctrl);
            return -ENOENT;
        }
    }
    return 0;
}

/* mkdir, remembering the directory (relative to mount mnt, the last one opened) for undo. */
static int make_dir(struct jail *j, const char *mnt, const char *path, bool must_be_new)
{
    if (mkdir(path, 0755) != 0) {
        if (errno == EEXIST && !must_be_new)
            return 0;
        return -errno;
    }
    if (j->n_cg_made >= (int)(sizeof(j->cg_made) / sizeof(j->cg_made[0])) ||
        env_path(j->cg_made[j->n_cg_made], sizeof(j->cg_made[0]), "%s", path + strlen(mnt) + 1)) {
        rmdir(path);
        return -ENAMETOOLONG;
    }
    j->cg_made_mount[j->n_cg_made++] = j->n_cg_mount - 1;
    return 0;
}

/*
 * Creates <mnt>/<parent>/<id>. For each level, before its child is made, calls
 * level_fn (v1 cpuset seeding, v2 subtree_control) on it.
 */
static int make_tree(struct jail *j, const char *mnt, char *leaf, size_t size,
                     int (*level_fn)(const char *dir, const void *ctx), const void *ctx)
{
    char rel[CG_PATH];
    char *p;
    int rc;

    if (env_path(rel, sizeof(rel), "%s/%s", parent_of(j), j->args->id))
        return -ENAMETOOLONG;
    if (env_path(leaf, size, "%s", mnt))
        return -ENAMETOOLONG;
    if (j->n_cg_mount >= JAIL_MAX_CGROUPS)
        return -EMFILE;
    j->cg_mount_fd[j->n_cg_mount] = open(mnt, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (j->cg_mount_fd[j->n_cg_mount] < 0) {
        rc = -errno;
        env_log(rc, "opening %s", mnt);
        return rc;
    }
    j->n_cg_mount++;
    p = rel;
    for (;;) {
        char *slash = strchr(p, '/');
        size_t len = strlen(leaf);
        bool last = (slash == NULL);

        if (level_fn) {
            rc = level_fn(leaf, ctx);
            if (rc)
                return rc;
        }
        if (slash)
            *slash = '\0';
        if (env_path(leaf + len, size - len, "/%s", p))
            return -ENAMETOOLONG;
        rc = make_dir(j, mnt, leaf, last);
        if (rc) {
            env_log(rc == -EEXIST ? 0 : rc, "%s %s",
                    rc == -EEXIST ? "cgroup already exists:" : "creating cgroup", leaf);
            return rc;
        }
        if (last)
            return 0;
        p = slash + 1;
    }
}

/* v1 cpuset: a new cgroup has empty cpus/mems and refuses tasks; copy the parent's. */
static int seed_level(const char *dir, const char *file)
{
    char path[JAIL_PATH_MAX], ppath[JAIL_PATH_MAX], val[4096];
    int rc;

    env_path(path, sizeof(path), "%s/%s", dir, file);
    rc = read_line(path, val, sizeof(val));
    if (rc != 0)
        return rc < 0 ? rc : 0;
    env_path(ppath, sizeof(ppath), "%s", dir);
    *strrchr(ppath, '/') = '\0';
    snprintf(ppath + strlen(ppath), sizeof(ppath) - strlen(ppath), "/%s", file);
    rc = read_line(ppath, val, sizeof(val));
    if (rc < 0)
        return rc;
    return write_file(path, val);
}

static int write_props(const struct jail *j, const char *dir, const char *ctrl)
{
    char path[JAIL_PATH_MAX], c[JAIL_CGROUP_NAME_MAX];
    const struct jail_args *a = j->args;
    int rc;

    for (int i = 0; i < a->n_cgroups; i++) {
        controller_of(a->cgroups[i].file, c, sizeof(c));
        if (ctrl && strcmp(c, ctrl))
            continue;
        env_path(path, sizeof(path), "%s/%s", dir, a->cgroups[i].file);
        if (access(path, F_OK) != 0) {
            env_log(0, "--cgroup %s: cgroup file %s does not exist", a->cgroups[i].file, path);
            return -ENOENT;
        }
        rc = write_file(path, a->cgroups[i].value);
        if (rc) {
            env_log(rc, "writing '%s' to %s", a->cgroups[i].value, path);
            return rc;
        }
    }
    return 0;
}

/* Remembers our current cgroup in this hierarchy (to return on failure), then joins dir. */
static int join(struct jail *j, const char *mnt, const char *ctrl, const char *dir)
{
    char line[CG_PATH + 256], path[JAIL_PATH_MAX], pid[24];
    FILE *f;
    int rc;

    f = fopen("/proc/self/cgroup", "re");
    if (!f) {
        rc = -errno;
        env_log(rc, "reading /proc/self/cgroup");
        return rc;
    }
    while (fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        line[strcspn(line, "\n")] = '\0';
        c2[1 + strcspn(c2 + 1, "\n")] = '\0';
        /* v2: "0::/path"; v1: "N:ctrl,ctrl:/path" (comma-separated controllers) */
        for (char *q = c1 + 1; *q; q++)
            if (*q == ',')
                *q = ' ';
        bool hit = ctrl ? has_word(c1 + 1, ctrl) : (c1[1] == '\0');
        if (hit && j->n_cg_return < JAIL_MAX_CGROUPS &&
            !env_path(path, sizeof(path), "%s%s/cgroup.procs", mnt,
                      strcmp(c2 + 1, "/") ? c2 + 1 : "")) {
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0)
                j->cg_return_fd[j->n_cg_return++] = fd;
            break;
        }
    }
    fclose(f);
    env_path(path, sizeof(path), "%s/cgroup.procs", dir);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    rc = write_file(path, pid);
    if (rc)
        env_log(rc, "joining cgroup %s", dir);
    return rc;
}

static int cpuset_seed(const char *dir, const void *ctx)
{
    const char *mnt = ctx;
    int rc;

    if (!strcmp(dir, mnt))
        return 0; /* the root always has cpus and mems */
    rc = seed_level(dir, "cpuset.cpus");
    if (rc == 0)
        rc = seed_level(dir, "cpuset.mems");
    if (rc)
        env_log(rc, "seeding cpuset.cpus/mems of %s from its parent", dir);
    return rc;
}

static int setup_v1(struct jail *j)
{
    const struct jail_args *a = j->args;
    char ctrls[JAIL_MAX_CGROUPS][JAIL_CGROUP_NAME_MAX];
    char dirs[JAIL_MAX_CGROUPS][CG_PATH], mnts[JAIL_MAX_CGROUPS][CG_PATH];
    int n = 0, rc;

    for (int i = 0; i < a->n_cgroups; i++) {
        char c[JAIL_CGROUP_NAME_MAX];
        bool dup = false;

        controller_of(a->cgroups[i].file, c, sizeof(c));
        for (int k = 0; k < n; k++)
            dup = dup || !strcmp(ctrls[k], c);
        if (dup)
            continue;
        strcpy(ctrls[n], c);
        rc = find_mount(c, mnts[n], sizeof(mnts[n]));
        if (rc) {
            env_log(0, "cgroup v1 controller '%s' is not mounted", c);
            return -ENOENT;
        }
        /* Controllers co-mounted in one hierarchy (cpu,cpuacct) share the directory. */
        bool same = false;
        for (int k = 0; k < n; k++)
            same = same || !strcmp(mnts[k], mnts[n]);
        if (same) {
            env_path(dirs[n], sizeof(dirs[n]), "%s/%s/%s", mnts[n], parent_of(j), a->id);
        } else {
            rc = make_tree(j, mnts[n], dirs[n], sizeof(dirs[n]),
                           !strcmp(c, "cpuset") ? cpuset_seed : NULL, mnts[n]);
            if (rc)
                return rc;
            if (!strcmp(c, "cpuset")) {
                rc = cpuset_seed(dirs[n], mnts[n]);
                if (rc)
                    return rc;
            }
        }
        rc = write_props(j, dirs[n], c);
        if (rc)
            return rc;
        n++;
    }
    for (int k = 0; k < n; k++) {
        bool joined = false;
        for (int m = 0; m < k; m++)
            joined = joined || !strcmp(mnts[m], mnts[k]);
        if (!joined) {
            rc = join(j, mnts[k], ctrls[k], dirs[k]);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int enable_controllers(const char *dir, const void *ctx)
{
    const struct jail_args *a = ctx;
    char path[JAIL_PATH_MAX], c[JAIL_CGROUP_NAME_MAX], op[JAIL_CGROUP_NAME_MAX + 2];
    int rc;

    env_path(path, sizeof(path), "%s/cgroup.subtree_control", dir);
    for (int i = 0; i < a->n_cgroups; i++) {
        controller_of(a->cgroups[i].file, c, sizeof(c));
        if (!strcmp(c, "cgroup"))
            continue; /* core files, present without any controller */
        snprintf(op, sizeof(op), "+%s", c);
        rc = write_file(path, op);
        if (rc) {
            env_log(rc, "enabling controller %s in %s", c, path);
            return rc;
        }
    }
    return 0;
}

static int setup_v2(struct jail *j)
{
    const struct jail_args *a = j->args;
    char mnt[CG_PATH], dir[CG_PATH];
    int rc;

    rc = find_mount(NULL, mnt, sizeof(mnt));
    if (rc) {
        env_log(rc, "no cgroup v2 hierarchy is mounted");
        return rc;
    }
    if (a->n_cgroups == 0) {
        /* Only move into the existing parent (it must not have domain controllers enabled). */
        if (env_path(dir, sizeof(dir), "%s/%s", mnt, a->parent_cgroup))
            return -ENAMETOOLONG;
        return join(j, mnt, NULL, dir);
    }
    rc = make_tree(j, mnt, dir, sizeof(dir), enable_controllers, a);
    if (rc)
        return rc;
    rc = write_props(j, dir, NULL);
    if (rc)
        return rc;
    return join(j, mnt, NULL, dir);
}

int cgroup_setup(struct jail *j)
{
    const struct jail_args *a = j->args;

    if (a->cgroup_version == 2)
        return (a->n_cgroups || a->parent_cgroup) ? setup_v2(j) : 0;
    return a->n_cgroups ? setup_v1(j) : 0;
}

void cgroup_undo(struct jail *j)
{
    char pid[24];
    int len = snprintf(pid, sizeof(pid), "%d", (int)getpid());

    /* Leave first: a cgroup with a member cannot be removed. */
    while (j->n_cg_return > 0) {
        int fd = j->cg_return_fd[--j->n_cg_return];
        if (write(fd, pid, (size_t)len) != len)
            env_log(-errno, "returning to the original cgroup");
        close(fd);
    }
    while (j->n_cg_made > 0) {
        j->n_cg_made--;
        unlinkat(j->cg_mount_fd[j->cg_made_mount[j->n_cg_made]], j->cg_made[j->n_cg_made],
                 AT_REMOVEDIR);
    }
    while (j->n_cg_mount > 0)
        close(j->cg_mount_fd[--j->n_cg_mount]);
}
