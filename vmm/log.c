/* Logging: one line per message. `ember run` writes "ember: [level: ]message" on stderr; the
 * firecracker-compatible process switches (log_configure) to Firecracker's format,
 * "<ts> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] message", on stdout or a file/FIFO.
 * The level, this sink and the missed-line count are its only globals. */
#define _GNU_SOURCE /* pthread_getname_np */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmm.h"

enum log_level log_level = LOG_INFO;
static _Atomic uint64_t missed; /* lines lost to a failed or full sink */
/* Where stdout and stderr lines go: log_std_fds gives descriptors that never block. */
static int std_out = STDOUT_FILENO, std_err = STDERR_FILENO;

/* This thread's call before each line (log_thread_before_line). */
static _Thread_local void (*before_line)(void *);
static _Thread_local void *before_arg;

void log_thread_before_line(void (*fn)(void *), void *arg)
{
    before_line = fn;
    before_arg = arg;
}

void log_std_fds(int out, int err)
{
    std_out = out;
    std_err = err;
}

static struct {
    bool fc_format, off, show_level, show_origin;
    int fd;
    char id[65];
} sink = {.fd = -1};

void log_configure(const char *id, int fd, enum log_level level, bool off, bool show_level,
                   bool show_origin)
{
    if (sink.fd >= 0 && sink.fd != fd)
        close(sink.fd);
    snprintf(sink.id, sizeof(sink.id), "%s", id ? id : "anonymous-instance");
    sink.fd = fd;
    sink.off = off;
    sink.show_level = show_level;
    sink.show_origin = show_origin;
    sink.fc_format = true;
    log_level = level;
}

/*
 * A message can carry what a client sent (a path, a request body, an id): its control bytes are
 * written as \xHH, so that no message starts a forged line or sends escapes to a terminal. C0
 * controls, DEL, and C1 controls in UTF-8 (0xc2 0x80-0x9f) are escaped; other bytes are kept.
 */
static void escape_controls(const char *in, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 <= size; p++) {
        bool c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;
        if (*p >= 0x20 && *p != 0x7f && !c1) {
            out[o++] = (char)*p;
            continue;
        }
        unsigned char c = c1 ? *++p : *p;
        out[o++] = '\\';
        out[o++] = 'x';
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
    }
    out[o] = '\0';
}

static void log_vat(enum log_level level, const char *file, int line, const char *fmt, va_list ap)
{
    static const char *const prefix[] = {"error: ", "warning: ", "", "debug: "};
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char raw[1024], msg[1024], out[1400], thread[16] = "main";
    int saved = errno;

    if (level > log_level || sink.off)
        return;
    if (before_line)
        before_line(before_arg);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    escape_controls(raw, msg, sizeof(msg));
    if (!sink.fc_format) {
        /* One write per line, so lines from vCPU threads do not interleave. */
        int n = snprintf(out, sizeof(out), "ember: %s%s\n", prefix[level], msg);
        if (n >= (int)sizeof(out)) {
            n = (int)sizeof(out) - 1;
            out[n - 1] = '\n';
        }
        if (n > 0 && write(std_err, out, (size_t)n) != n)
            atomic_fetch_add_explicit(&missed, 1, memory_order_relaxed);
        errno = saved;
        return;
    }
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_getname_np(pthread_self(), thread, sizeof(thread));
    int n = snprintf(out, sizeof(out), "%s.%09ld [%s:%s", when, ts.tv_nsec, sink.id, thread);
    if (sink.show_level && n >= 0 && (size_t)n < sizeof(out))
        n += snprintf(out + n, sizeof(out) - (size_t)n, ":%s", names[level]);
    if (sink.show_origin && file && n >= 0 && (size_t)n < sizeof(out))
        n += snprintf(out + n, sizeof(out) - (size_t)n, ":%s:%d", file, line);
    if (n >= 0 && (size_t)n < sizeof(out))
        n += snprintf(out + n, sizeof(out) - (size_t)n, "] %s\n", msg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(out)) {
        n = (int)sizeof(out) - 1;
        out[n - 1] = '\n';
    }
    /* One write per line; a full FIFO or pipe drops the line rather than stopping the VMM. */
    if (write(sink.fd >= 0 ? sink.fd : std_out, out, (size_t)n) != n)
        atomic_fetch_add_explicit(&missed, 1, memory_order_relaxed);
    errno = saved;
}

void log_at(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vat(level, file, line, fmt, ap);
    va_end(ap);
}

uint64_t log_missed(void)
{
    return atomic_load_explicit(&missed, memory_order_relaxed);
}

int log_sink_fd(const char **id)
{
    *id = sink.fc_format ? sink.id : NULL;
    if (sink.off)
        return -1;
    if (!sink.fc_format)
        return std_err;
    return sink.fd >= 0 ? sink.fd : std_out;
}

int errf(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

bool ratelog_allow(struct ratelog *r, uint64_t now_ns, uint64_t interval_ns, uint64_t *suppressed)
{
    if (r->used && now_ns - r->last_ns < interval_ns) {
        r->suppressed++;
        return false;
    }
    *suppressed = r->suppressed;
    r->suppressed = 0;
    r->used = true;
    r->last_ns = now_ns;
    return true;
}

uint64_t log_us_since(const struct timespec *t0, clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    int64_t ns = (int64_t)(now.tv_sec - t0->tv_sec) * 1000000000 + (now.tv_nsec - t0->tv_nsec);
    return ns > 0 ? (uint64_t)ns / 1000 : 0;
}
