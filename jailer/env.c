/* env: a clean process to start from (no inherited fds above 2, no environment, default signal
 * handling), clocks, log. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/close_range.h>

#include "jailer.h"

void env_log(int err, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (err)
        fprintf(stderr, "ember-jailer: %s: %s\n", msg, strerror(-err));
    else
        fprintf(stderr, "ember-jailer: %s\n", msg);
}

int env_path(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}

/* Fallback for kernels before 5.9: close one by one up to the fd limit. */
static void close_slow(void)
{
    long max = sysconf(_SC_OPEN_MAX);

    if (max < 0 || max > 1 << 20)
        max = 1 << 20;
    for (int fd = 3; fd < max; fd++)
        close(fd);
}

/* The kernel's struct for rt_sigaction (x86_64): glibc's sigaction() refuses the two
 * real-time signals it reserves (32, 33), but an ignored one survives exec all the same. */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

/* Blocked and ignored signals survive exec: give the VMM default dispositions, none blocked. */
static int reset_signals(void)
{
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    sigset_t none;

    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
        return -errno;
    return 0;
}

int env_sanitize(void)
{
    /* Unshare first so a file table shared with a parent (CLONE_FILES) is not affected. */
    if (syscall(SYS_close_range, 3U, UINT_MAX, CLOSE_RANGE_UNSHARE) != 0) {
        if (errno != ENOSYS && errno != EINVAL)
            return -errno;
        close_slow();
    }
    if (clearenv() != 0)
        return -ENOMEM;
    return reset_signals();
}

static uint64_t clock_us(clockid_t clk)
{
    struct timespec ts;

    if (clock_gettime(clk, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t env_mono_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

uint64_t env_cpu_us(void)
{
    return clock_us(CLOCK_PROCESS_CPUTIME_ID);
}
