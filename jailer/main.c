/*
 * ember-jailer: puts one ember process into its own jail and execs it. The steps run in
 * Firecracker's jailer order (see SECURITY.md); each returns 0 or -errno and maps to one exit code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jailer.h"

static struct jail_args g_args;
static struct jail g_jail;

/*
 * Undoes what the jailer made and returns the exit code. Best effort: once the ids are
 * switched (caps_clear_all, exec) there is no privilege left to undo with.
 */
static int fail(struct jail *j, int code)
{
    cgroup_undo(j);
    chroot_undo(j);
    return code;
}

static int exec_binary(const struct jail *j)
{
    const struct jail_args *a = j->args;
    char path[JAIL_PATH_MAX], start[24], cpu[24], parent_cpu[24];
    char *argv[10 + a->extra_argc];
    char *envp[] = {NULL};
    int n = 0;

    env_path(path, sizeof(path), "/%s", j->exec_name);
    snprintf(start, sizeof(start), "%" PRIu64, j->start_us);
    /* Like Firecracker: this process's CPU clock now, plus what the jailer used before forks. */
    snprintf(cpu, sizeof(cpu), "%" PRIu64, env_cpu_us());
    snprintf(parent_cpu, sizeof(parent_cpu), "%" PRIu64, j->jailer_cpu_us);
    argv[n++] = path;
    argv[n++] = (char *)"--id";
    argv[n++] = (char *)a->id;
    argv[n++] = (char *)"--start-time-us";
    argv[n++] = start;
    argv[n++] = (char *)"--start-time-cpu-us";
    argv[n++] = cpu;
    argv[n++] = (char *)"--parent-cpu-time-us";
    argv[n++] = parent_cpu;
    for (int i = 0; i < a->extra_argc; i++)
        argv[n++] = a->extra_argv[i];
    argv[n] = NULL;
    execve(path, argv, envp);
    return -errno;
}

int main(int argc, char **argv)
{
    struct jail *j = &g_jail;
    int rc, code;

    j->start_us = env_mono_us();
    j->start_cpu_us = env_cpu_us();
    j->netns_fd = -1;
    j->devnull_fd = -1;
    j->anchor_fd = -1;
    j->id_fd = -1;
    j->root_fd = -1;
    j->uffd_minor = -1;
    /* Files the jailer (and, inherited, the VMM) creates are private unless chmod'ed. */
    umask(077);

    rc = env_sanitize();
    if (rc) {
        env_log(rc, "closing inherited file descriptors");
        return JEXIT_SANITIZE;
    }

    if (args_parse(&g_args, argc, argv) != 0) {
        env_log(0, "%s", g_args.err);
        return g_args.exit_code;
    }
    if (g_args.help) {
        args_usage(stdout);
        return 0;
    }
    if (g_args.version) {
        printf("ember-jailer %s\n", JAILER_VERSION);
        return 0;
    }
    if (geteuid() != 0) {
        env_log(0, "must run as root (effective uid is %u)", (unsigned int)geteuid());
        return JEXIT_NOT_ROOT;
    }
    j->args = &g_args;
    if (g_args.uid == 0 || g_args.gid == 0)
        env_log(0,
                "warning: --uid %u --gid %u: id 0 keeps, with no capability, owner rights on "
                "root's files (chmod, rewrite) and kill(2) on root's processes; give each VM its "
                "own unprivileged ids (--strict-sandbox refuses 0)",
                (unsigned int)g_args.uid, (unsigned int)g_args.gid);

    if (g_args.daemonize) {
        /* Opened now, in the host's mount namespace: after pivot_root the host's /dev/null is
         * out of reach. */
        j->devnull_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (j->devnull_fd < 0) {
            env_log(-errno, "opening /dev/null");
            return JEXIT_DAEMON;
        }
    }
    /* Validate everything that can be checked before anything is created. */
    rc = chroot_resolve(j, &code);
    if (rc)
        return code;
    if (ns_open_netns(j) != 0)
        return JEXIT_BAD_NETNS;
    rc = cgroup_check(j);
    if (rc)
        return rc == -ENOENT ? JEXIT_CGROUP_FILE : JEXIT_CGROUP;
    rc = g_args.userfaultfd ? devices_probe(j) : 0;
    if (rc) {
        env_log(rc, "reading /proc/misc");
        return JEXIT_DEVICES;
    }
    if (g_args.userfaultfd && j->uffd_minor < 0) {
        env_log(0, "--userfaultfd: this host has no userfaultfd device (not in /proc/misc)");
        return JEXIT_DEVICES;
    }

    rc = chroot_create(j);
    if (rc)
        return fail(j, rc == -EEXIST ? JEXIT_JAIL_EXISTS : JEXIT_JAIL);
    if (ns_join_netns(j) != 0)
        return fail(j, JEXIT_BAD_NETNS);
    if (rlimits_apply(&g_args) != 0)
        return fail(j, JEXIT_RLIMIT);
    rc = cgroup_setup(j);
    if (rc)
        return fail(j, rc == -ENOENT   ? JEXIT_CGROUP_FILE
                       : rc == -EEXIST ? JEXIT_JAIL_EXISTS
                                       : JEXIT_CGROUP);
    if (chroot_enter(j) != 0)
        return fail(j, JEXIT_JAIL);

    /* From here on the host's paths are gone; undo works through fds opened before. */
    if (devices_create(j) != 0)
        return fail(j, JEXIT_DEVICES);
    j->jailer_cpu_us = env_cpu_us() - j->start_cpu_us;
    if (ns_detach(j) != 0)
        return fail(j, JEXIT_DAEMON);

    rc = caps_drop_inheritable();
    if (rc) {
        env_log(rc, "clearing the bounding, ambient and inheritable capability sets");
        return fail(j, JEXIT_PRIVS);
    }
    rc = caps_set_ids(g_args.uid, g_args.gid);
    if (rc) {
        env_log(rc, "switching to uid %u gid %u", (unsigned int)g_args.uid,
                (unsigned int)g_args.gid);
        return fail(j, JEXIT_PRIVS);
    }
    rc = caps_clear_all();
    if (rc) {
        env_log(rc, "clearing the permitted and effective capability sets");
        return JEXIT_PRIVS;
    }
    rc = caps_no_new_privs();
    if (rc) {
        env_log(rc, "setting no_new_privs");
        return JEXIT_PRIVS;
    }

    rc = exec_binary(j);
    env_log(rc, "executing /%s", j->exec_name);
    return JEXIT_EXEC;
}
