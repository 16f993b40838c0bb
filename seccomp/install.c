/* Installing the filters: load and check them once at start (built-in, or --seccomp-filter),
 * then each thread installs its role's program itself (prctl NO_NEW_PRIVS + seccomp, no TSYNC:
 * every thread has its own list). A violation traps: the SIGSYS handler logs the syscall and
 * the thread, lets the API layer count seccomp.num_faults and flush metrics, and exits 148. */
#define _GNU_SOURCE /* pthread_getname_np */
#include <errno.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "../vmm/vmm.h"
#include "seccomp.h"

#define EXIT_SECCOMP 148 /* Firecracker's exit code for a bad syscall */
#define KICK_SIGNAL  34  /* the vCPU kick (SIGRTMIN) as the lists allow it in tgkill */
#define SYS_SECCOMP  1   /* si_code of a seccomp trap */

static struct sc_filters filters;         /* read-only once sc_setup returns */
static uint8_t file_buf[SC_FILE_MAX + 1]; /* a --seccomp-filter file */
static bool active;
static atomic_uint nfiltered;
static _Atomic uint64_t install_ns;
static void (*fault_hook)(void);

static __thread bool filtered;
static __thread int my_role = -1;
static __thread char my_name[16];
static __thread int pending_role = -1;
static __thread const char *pending_name;

bool sc_thread_filtered(void)
{
    return filtered;
}

unsigned sc_filtered_threads(void)
{
    return atomic_load(&nfiltered);
}

uint64_t sc_install_ns(void)
{
    return atomic_load(&install_ns);
}

void sc_on_fault(void (*hook)(void))
{
    fault_hook = hook;
}

/* ---- the SIGSYS line, async-signal-safe (no stdio, no locale, no time zone) ---------------- */
struct line {
    char b[400];
    size_t n;
};

static void put(struct line *l, const char *s)
{
    while (*s && l->n < sizeof(l->b) - 1)
        l->b[l->n++] = *s++;
}

static void put_num(struct line *l, uint64_t v, unsigned width)
{
    char d[24];
    unsigned n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < sizeof(d));
    while (n < width && n < sizeof(d))
        d[n++] = '0';
    while (n && l->n < sizeof(l->b) - 1)
        l->b[l->n++] = d[--n];
}

/* The UTC date and time of t as Firecracker's log lines start: 2026-12-02T01:02:03.000000000 */
static void put_time(struct line *l, const struct timespec *t)
{
    int64_t days = t->tv_sec / 86400, secs = t->tv_sec % 86400;
    /* days since 1970-01-01 → civil date (H. Hinnant's algorithm) */
    int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    put_num(l, (uint64_t)(yoe + era * 400 + (m <= 2)), 4);
    put(l, "-");
    put_num(l, (uint64_t)m, 2);
    put(l, "-");
    put_num(l, (uint64_t)d, 2);
    put(l, "T");
    put_num(l, (uint64_t)secs / 3600, 2);
    put(l, ":");
    put_num(l, (uint64_t)secs / 60 % 60, 2);
    put(l, ":");
    put_num(l, (uint64_t)secs % 60, 2);
    put(l, ".");
    put_num(l, (uint64_t)t->tv_nsec, 9);
}

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
    struct line l = {.n = 0};
    struct timespec now;
    const char *id;
    int fd = log_sink_fd(&id);
    (void)sig, (void)uc;

    clock_gettime(CLOCK_REALTIME, &now);
    if (id) {
        put_time(&l, &now);
        put(&l, " [");
        put(&l, id);
        put(&l, ":");
        put(&l, my_name[0] ? my_name : "?");
        put(&l, ":ERROR] ");
    } else {
        put(&l, "ember: error: ");
    }
    if (si->si_code != SYS_SECCOMP) { /* someone sent SIGSYS: not a filter's verdict */
        put(&l, "Shutting down VM after intercepting signal 31 (not from seccomp).\n");
        if (fd >= 0 && write(fd, l.b, l.n) < 0) {
            /* nothing left to tell it to */
        }
        _exit(EXIT_GENERIC);
    }
    unsigned nr = (unsigned)si->si_syscall;
    put(&l, "Shutting down VM after intercepting a bad syscall (");
    put_num(&l, nr, 0);
    if (nr < sc_syscall_names_len && sc_syscall_names[nr]) {
        put(&l, ": ");
        put(&l, sc_syscall_names[nr]);
    }
    put(&l, ") on thread ");
    put(&l, my_name[0] ? my_name : "?");
    put(&l, " (seccomp role ");
    put(&l, my_role >= 0 ? sc_role_name(my_role) : "none");
    put(&l, ").\n");
    if (fd >= 0 && write(fd, l.b, l.n) < 0) {
        /* the exit code still says it */
    }
    if (fault_hook)
        fault_hook(); /* seccomp.num_faults, then the metrics are flushed */
    _exit(EXIT_SECCOMP);
}

/* ---- loading ------------------------------------------------------------------------------ */
static int load_file(const char *path, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0)
        return errf(err, errlen, -errno, "--seccomp-filter %.200s: %s", path, strerror(errno));
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return errf(err, errlen, -EINVAL, "--seccomp-filter %.200s: not a regular file", path);
    }
    ssize_t n = read(fd, file_buf, sizeof(file_buf)); /* one more than a file may have */
    int e = errno;
    close(fd);
    if (n < 0)
        return errf(err, errlen, -e, "--seccomp-filter %.200s: %s", path, strerror(e));
    *len = (size_t)n;
    return 0;
}

int sc_setup(const struct sc_options *opts, char *err, size_t errlen)
{
    char why[256];
    size_t len = sc_builtin_file_len;
    const uint8_t *data = sc_builtin_file;

    if ((opts->check_sandbox || opts->strict_sandbox) && !sc_sandbox_check(why, sizeof(why))) {
        if (opts->strict_sandbox)
            return errf(err, errlen, -EPERM, "--strict-sandbox: refusing to start: %s", why);
        log_warn("ember is not sandboxed: %s (see SECURITY.md)", why);
    }
    if (opts->off) {
        log_warn("--no-seccomp: no seccomp filter is installed on any thread");
        return 0;
    }
    if (SIGRTMIN != KICK_SIGNAL)
        return errf(err, errlen, -ENOTSUP, "seccomp: SIGRTMIN is %d, the lists allow %d", SIGRTMIN,
                    KICK_SIGNAL);
    if (opts->file) {
        int ret = load_file(opts->file, &len, err, errlen);
        if (ret)
            return ret;
        data = file_buf;
    }
    if (sc_file_parse(&filters, data, len, why, sizeof(why)))
        return errf(err, errlen, -EINVAL, "--seccomp-filter %.200s: %s",
                    opts->file ? opts->file : "(built-in)", why);
    struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL))
        return errf(err, errlen, -errno, "seccomp: SIGSYS handler: %s", strerror(errno));
    /* Lazy first uses that open files: do them now, before any filter. */
    tzset();
    json_object_seed(0);
    active = true;
    if (opts->opener) {
        int ret = sc_opener_start(err, errlen);
        if (ret)
            return ret;
    }
    /* the firecracker front end says it; ember run's one-line errors stay alone */
    log_at(opts->check_sandbox ? LOG_INFO : LOG_DEBUG, __FILE__, __LINE__,
           "seccomp: %s filters (BPF instructions: api %u, accept %u, vmm %u, vcpu %u, opener %u)",
           opts->file ? opts->file : "built-in", filters.prog[SC_ROLE_API].len,
           filters.prog[SC_ROLE_ACCEPT].len, filters.prog[SC_ROLE_VMM].len,
           filters.prog[SC_ROLE_VCPU].len, filters.prog[SC_ROLE_OPENER].len);
    return 0;
}

void sc_enter(enum sc_role role)
{
    struct timespec t0, t1;

    if (!active || filtered || (unsigned)role >= SC_ROLES)
        return;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_getname_np(pthread_self(), my_name, sizeof(my_name)); /* for the SIGSYS line */
    my_role = (int)role;
    struct sock_fprog prog = {.len = (unsigned short)filters.prog[role].len,
                              .filter = filters.prog[role].insns};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        log_err("seccomp: cannot install the %s filter on thread %s: %s", sc_role_name(role),
                my_name, strerror(errno));
        _exit(EXIT_GENERIC); /* never run a thread unfiltered by accident */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    filtered = true;
    atomic_fetch_add(&nfiltered, 1);
    atomic_store(&install_ns,
                 (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
}

/* ---- threads ember does not create itself: libmicrohttpd's -------------------------------- */
struct tramp {
    int role;
    const char *name;
    void *(*fn)(void *);
    void *arg;
};
static struct tramp tramps[SC_ROLES]; /* one thread per role at a time is being started */

static void *trampoline(void *p)
{
    const struct tramp *t = p;
    void *(*fn)(void *) = t->fn;
    void *arg = t->arg;

    pthread_setname_np(pthread_self(), t->name); /* its role's name, not its creator's */
    sc_enter(t->role);
    return fn(arg);
}

void sc_next_thread(enum sc_role role, const char *name)
{
    if (active && (unsigned)role < SC_ROLES) {
        pending_role = (int)role;
        pending_name = name;
    }
}

void sc_next_thread_done(void)
{
    pending_role = -1;
}

int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

/* ember links with --wrap=pthread_create: every pthread_create comes here. */
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    int role = pending_role;

    if (role < 0)
        return __real_pthread_create(t, attr, fn, arg);
    pending_role = -1;
    tramps[role] = (struct tramp){role, pending_name, fn, arg};
    return __real_pthread_create(t, attr, trampoline, &tramps[role]);
}
