/* ns: the network namespace, daemonizing, the PID namespace, the controlling terminal and the
 * pid files. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* Writes pid into name (O_EXCL: a file there is someone else's) in the directory dirfd. */
static int write_pid_at(int dirfd, const char *name, pid_t pid)
{
    char buf[24];
    int fd, rc = 0, len;

    fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
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

/*
 * The pid file the orchestrator should trust is <base>/<exec>/<id>/<exec>.pid: that directory
 * is root's, so the VM's uid cannot replace it. Firecracker's place, root/<exec>.pid (Kata reads
 * it), gets the same pid; root/ is root's and sticky (devices_create), so the VM's uid cannot
 * unlink or rename that one either. Returns 0 or -errno (logged).
 */
static int write_pid_file(const struct jail *j, pid_t pid)
{
    char name[JAIL_PATH_MAX];
    int rc;

    env_path(name, sizeof(name), "%s.pid", j->exec_name);
    rc = write_pid_at(j->id_fd, name, pid);
    if (rc) {
        env_log(rc, "writing %s/%s", j->id_dir, name);
        return rc;
    }
    rc = write_pid_at(AT_FDCWD, name, pid); /* cwd is the jail's "/" */
    if (rc)
        env_log(rc, "writing /%s in the jail", name);
    return rc;
}

/*
 * Leaves the controlling terminal, so that the VMM cannot push input into the operator's shell
 * (TIOCSTI needs the terminal to be the caller's controlling one, or CAP_SYS_ADMIN). setsid()
 * when we can; a process-group leader (a shell's foreground job) cannot, and drops it with
 * TIOCNOTTY on whichever of fds 0-2 is that terminal. As a session leader that also hangs the
 * terminal's foreground group up: SIGHUP is ignored meanwhile. Returns 0 or -errno (logged).
 */
static int leave_terminal(void)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_hup, old_cont;
    pid_t sid;

    if (setsid() >= 0)
        return 0;
    sigaction(SIGHUP, &ign, &old_hup);
    sigaction(SIGCONT, &ign, &old_cont);
    for (int fd = 0; fd <= 2; fd++)
        if (isatty(fd))
            ioctl(fd, TIOCNOTTY); /* ENOTTY if it is not our controlling terminal */
    sigaction(SIGHUP, &old_hup, NULL);
    sigaction(SIGCONT, &old_cont, NULL);
    /* TIOCGSID answers only for the caller's controlling terminal. */
    for (int fd = 0; fd <= 2; fd++)
        if (isatty(fd) && ioctl(fd, TIOCGSID, &sid) == 0) {
            env_log(-EPERM, "leaving the controlling terminal (fd %d)", fd);
            return -EPERM;
        }
    return 0;
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
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return rc;
    }
    /* A session of its own (a child is never a group leader, so setsid works): the jailer's
     * exit does not hang it up, and it has no controlling terminal. */
    if (setsid() < 0) {
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
    /* daemonize() made a new session; otherwise the terminal is left here. */
    if (!j->args->daemonize && (rc = leave_terminal()) != 0)
        return rc;
    /* This pid becomes the exec'd binary's. */
    return write_pid_file(j, getpid());
}
