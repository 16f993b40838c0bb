/* The opener: the one thread that may open a path once the filters are in. PATCH /drives swaps
 * a drive's file on a running VM; the VMM thread (filtered, no openat) asks this thread, which
 * opens the path read-only or read-write (its filter refuses O_PATH, O_TMPFILE, ...; it creates
 * or truncates only a snapshot's output files, never through a symlink),
 * keeps it only if it is a regular file, a block device or a directory (no device node, FIFO
 * or socket: /dev/kvm or /dev/userfaultfd cannot be had again), and hands the fd back: threads
 * share one fd table. It also removes the API socket at the end. Started by sc_setup, before
 * any other thread, with all signals blocked. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "seccomp.h"

#define OPEN_FLAGS (O_ACCMODE | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

enum op { OP_NONE, OP_OPEN, OP_CREATE, OP_UNLINK };

static struct {
    pthread_mutex_t lock; /* guards the slot below */
    pthread_cond_t cond;
    pthread_mutex_t callers; /* one request at a time */
    enum op op;
    const char *path;
    int flags;
    bool done;
    int result, error;
    bool up;
} o = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .cond = PTHREAD_COND_INITIALIZER,
       .callers = PTHREAD_MUTEX_INITIALIZER};

/* One request, on the opener thread. Returns the fd (or 0 for unlink), or -errno. */
static int serve(enum op op, const char *path, int flags)
{
    struct stat st;

    if (op == OP_UNLINK)
        return unlink(path) ? -errno : 0;
    if (op == OP_CREATE) { /* a snapshot's output file: a regular file, never via a symlink */
        int fd = open(path, SC_CREATE_FLAGS, 0600);
        if (fd < 0)
            return -errno;
        if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
            close(fd);
            return -EINVAL;
        }
        return fd;
    }
    if ((flags & ~OPEN_FLAGS) || (flags & O_ACCMODE) == O_WRONLY)
        return -EINVAL; /* the filter would trap it: refuse before the syscall */
    int fd = open(path, flags | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode))) {
        close(fd);
        return -EINVAL;
    }
    return fd;
}

static void *opener(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "ember_opener");
    sc_enter(SC_ROLE_OPENER);
    pthread_mutex_lock(&o.lock);
    for (;;) {
        while (o.op == OP_NONE)
            pthread_cond_wait(&o.cond, &o.lock);
        int ret = serve(o.op, o.path, o.flags);
        o.result = ret < 0 ? -1 : ret;
        o.error = ret < 0 ? -ret : 0;
        o.op = OP_NONE;
        o.done = true;
        pthread_cond_broadcast(&o.cond);
    }
    return NULL;
}

int sc_opener_start(char *err, size_t errlen)
{
    sigset_t all, old;
    pthread_t t;

    sigfillset(&all);        /* no handler returns on it (its list has no rt_sigreturn) */
    sigdelset(&all, SIGSYS); /* but a trap must reach the SIGSYS handler: a blocked one kills */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int ret = pthread_create(&t, NULL, opener, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret)
        return snprintf(err, errlen, "cannot start the opener thread: %s", strerror(ret)), -ret;
    pthread_detach(t);
    o.up = true;
    return 0;
}

static int request(enum op op, const char *path, int flags)
{
    if (!o.up) {
        errno = ENOSYS;
        return -1;
    }
    pthread_mutex_lock(&o.callers);
    pthread_mutex_lock(&o.lock);
    o.path = path;
    o.flags = flags;
    o.done = false;
    o.op = op;
    pthread_cond_broadcast(&o.cond);
    while (!o.done)
        pthread_cond_wait(&o.cond, &o.lock);
    int result = o.result, error = o.error;
    pthread_mutex_unlock(&o.lock);
    pthread_mutex_unlock(&o.callers);
    errno = error;
    return result;
}

int sc_opener_open(const char *path, int flags)
{
    return request(OP_OPEN, path, flags);
}

int sc_opener_create(const char *path)
{
    return request(OP_CREATE, path, 0);
}

int sc_opener_unlink(const char *path)
{
    return request(OP_UNLINK, path, 0);
}
