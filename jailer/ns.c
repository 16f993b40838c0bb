/* ns: the network namespace, daemonizing, the PID namespace and the pid file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jailer.h"

int ns_open_netns(struct jail *j)
{
    int rc;

    j->netns_fd = -1;
    if (!j->args->netns)
        return 0;
    j->netns_fd = open(j->args->netns, O_RDONLY | O_CLOEXEC);
    if (j->netns_fd < 0) {
        rc = -errno;
        env_log(rc, "--netns '%s'", j->args->netns);
        return rc;
    }
    return 0;
}

int ns_join_netns(struct jail *j)
{
    int rc = 0;

    if (j->netns_fd < 0)
        return 0;
    /* EINVAL here means the file is not a network namespace. */
    if (setns(j->netns_fd, CLONE_NEWNET) != 0) {
        rc = -errno;
        env_log(rc, "--netns '%s': joining the network namespace", j->args->netns);
    }
    close(j->netns_fd);
    j->netns_fd = -1;
    return rc;
}

static int write_pid_file(const struct jail *j, pid_t pid)
{
    char path[JAIL_PATH_MAX], buf[24];
    int fd, rc = 0, len;

    env_path(path, sizeof(path), "/%s.pid", j->exec_name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    len = snprintf(buf, sizeof(buf), "%d", (int)pid);
    if (write(fd, buf, (size_t)len) != len)
        rc = errno ? -errno : -EIO;
    if (rc == 0 && fchmod(fd, 0644) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* Double fork and setsid: the caller's child exits at once, the grandchild carries on. */
static int daemonize(struct jail *j)
{
    pid_t pid;

    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -errno;
    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0)
        _exit(0);
    for (int fd = 0; fd <= 2; fd++)
        if (dup2(j->devnull_fd, fd) < 0)
            return -errno;
    close(j->devnull_fd);
    j->devnull_fd = -1;
    return 0;
}

/* The child becomes PID 1 of a new PID namespace; the parent records its pid and exits. */
static int new_pid_ns(struct jail *j)
{
    bool leader = (getsid(0) == getpid());
    pid_t pid;
    int rc;

    if (unshare(CLONE_NEWPID) != 0) {
        rc = -errno;
        env_log(rc, "entering a new PID namespace");
        return rc;
    }
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        env_log(rc, "forking PID 1 of the new PID namespace");
        return rc;
    }
    if (pid > 0) {
        rc = write_pid_file(j, pid);
        if (rc == 0)
            _exit(0);
        /* The caller undoes the jail, which needs the child gone from the cgroup first. */
        env_log(rc, "writing /%s.pid", j->exec_name);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return rc;
    }
    /* Leave the jailer's session so its exit does not hang us up. */
    if (leader && setsid() < 0) {
        rc = -errno;
        env_log(rc, "setsid in the new PID namespace");
        return rc;
    }
    return 0;
}

int ns_detach(struct jail *j)
{
    int rc;

    if (j->args->daemonize) {
        rc = daemonize(j);
        if (rc) {
            env_log(rc, "daemonizing");
            return rc;
        }
    }
    if (j->args->new_pid_ns)
        return new_pid_ns(j);
    /* This pid becomes the exec'd binary's. */
    rc = write_pid_file(j, getpid());
    if (rc)
        env_log(rc, "writing /%s.pid", j->exec_name);
    return rc;
}
