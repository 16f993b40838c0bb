/* The UART's output side (vmm/serial.c): the ring, and guest bytes on their way to a console fd
 * that stalls, breaks or hits RLIMIT_FSIZE — a vCPU never waits, every lost byte is counted. */
#define _GNU_SOURCE /* pipe2, F_GETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

static struct outbuf ring;

static void ring_wraps_and_fills(void **state)
{
    const uint8_t *p;
    static uint8_t big[OUTBUF_SIZE + 100];
    (void)state;

    memset(&ring, 0, sizeof(ring));
    assert_int_equal(outbuf_peek(&ring, &p), 0);
    assert_int_equal(outbuf_put(&ring, (const uint8_t *)"abc", 3), 3);
    assert_int_equal(outbuf_peek(&ring, &p), 3);
    assert_memory_equal(p, "abc", 3);
    outbuf_drop(&ring, 2);
    assert_int_equal(outbuf_peek(&ring, &p), 1);
    assert_int_equal(p[0], 'c');
    outbuf_drop(&ring, 1);
    assert_int_equal(ring.head, 0); /* empty: the next run starts at the beginning */

    /* across the end: two runs, oldest first */
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)i;
    assert_int_equal(outbuf_put(&ring, big, OUTBUF_SIZE - 10), OUTBUF_SIZE - 10);
    outbuf_drop(&ring, OUTBUF_SIZE - 20); /* 10 left at the end */
    assert_int_equal(outbuf_put(&ring, (const uint8_t *)"0123456789ABCDEF", 16), 16);
    assert_int_equal(outbuf_peek(&ring, &p), 20);
    outbuf_drop(&ring, 20);
    assert_int_equal(outbuf_peek(&ring, &p), 6);
    assert_memory_equal(p, "ABCDEF", 6);
    outbuf_drop(&ring, 100); /* more than there is: all of it */
    assert_int_equal(ring.len, 0);

    /* full: what does not fit is refused, nothing is overwritten */
    assert_int_equal(outbuf_put(&ring, big, sizeof(big)), OUTBUF_SIZE);
    assert_int_equal(outbuf_put(&ring, big, 1), 0);
    assert_int_equal(outbuf_peek(&ring, &p), OUTBUF_SIZE);
    assert_memory_equal(p, big, OUTBUF_SIZE);
}

struct uart {
    struct serial s;
    struct vm_stats stats;
    struct bus pio;
    int irq, rx;
};

static struct uart *uart_new(int out_fd)
{
    struct uart *u = calloc(1, sizeof(*u));
    assert_non_null(u);
    u->irq = eventfd(0, EFD_NONBLOCK);
    u->rx = eventfd(0, EFD_NONBLOCK);
    assert_int_equal(serial_init(&u->s, out_fd, u->irq, u->rx), 0);
    u->s.stats = &u->stats;
    struct bus_dev d = serial_bus_dev(&u->s);
    assert_int_equal(bus_add(&u->pio, &d), 0);
    return u;
}

static void uart_free(struct uart *u)
{
    serial_destroy(&u->s);
    close(u->irq);
    close(u->rx);
    free(u);
}

/* The guest's bytes as a vCPU writes them, with nobody else writing to the console fd. */
static void guest_writes_direct(struct uart *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)('a' + i % 26);
        bus_access(&u->pio, 0x3f8, &c, 1, true);
    }
}

/* ... while the event loop (or a logging vCPU) is writing: the bytes go into the ring, and the
 * loop is woken for them once. Most tests here look at the ring, so they write this way. */
static void guest_writes(struct uart *u, size_t n)
{
    pthread_mutex_lock(&u->s.flush_lock);
    guest_writes_direct(u, n);
    pthread_mutex_unlock(&u->s.flush_lock);
}

static uint64_t kicks(struct uart *u)
{
    uint64_t v = 0;
    if (read(u->s.out_kick_fd, &v, sizeof(v)) != sizeof(v))
        return 0;
    return v;
}

/* A vCPU writes its bytes out itself while the pipe has room (no wake-up of the loop, no copy
 * in the ring); what a full pipe does not take is queued and the loop woken once for it. */
static void vcpu_writes_through(void **state)
{
    static char got[OUTBUF_SIZE];
    int p[2];
    (void)state;
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    int cap = fcntl(p[1], F_GETPIPE_SZ);
    struct uart *u = uart_new(p[1]);

    guest_writes_direct(u, 10);
    assert_int_equal(kicks(u), 0);
    assert_int_equal(u->s.out.len, 0);
    assert_int_equal(read(p[0], got, sizeof(got)), 10);
    assert_memory_equal(got, "abcdefghij", 10);

    guest_writes_direct(u, (size_t)cap); /* exactly full */
    assert_int_equal(kicks(u), 0);
    guest_writes_direct(u, 5); /* no room: queued, the loop told once to wait for it */
    assert_int_equal(kicks(u), 1);
    guest_writes_direct(u, 3);
    assert_int_equal(kicks(u), 0);
    assert_int_equal(u->s.out.len, 8);
    assert_int_equal(u->stats.uart_missed_write, 0);

    size_t total = 0;
    ssize_t r;
    while ((r = read(p[0], got, sizeof(got))) > 0)
        total += (size_t)r;
    assert_int_equal(total, (size_t)cap);
    guest_writes_direct(u, 2); /* room again: the queued 8 and these 2 go out, in order */
    assert_int_equal(u->s.out.len, 0);
    assert_int_equal(read(p[0], got, sizeof(got)), 10);
    assert_memory_equal(got, "abcdeabcab", 10); /* each guest_writes_direct starts at 'a' */
    assert_int_equal(kicks(u), 0);
    assert_int_equal(u->stats.uart_write, 10 + (uint64_t)cap + 10);
    uart_free(u);
    close(p[0]), close(p[1]);
}

/* A console pipe nobody reads: the guest's writes return at once, the ring fills, the rest is
 * dropped and counted; once the reader catches up, the queued bytes come out in order. */
static void stalled_reader(void **state)
{
    int p[2];
    (void)state;
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    int cap = fcntl(p[1], F_GETPIPE_SZ);
    struct uart *u = uart_new(p[1]);

    guest_writes(u, 3);
    assert_int_equal(kicks(u), 1); /* one wake-up for the loop, not one per byte */
    guest_writes(u, (size_t)cap - 3);
    assert_int_equal(kicks(u), 0);
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0); /* the pipe is full now */
    assert_int_equal(u->stats.uart_write, cap);
    guest_writes(u, OUTBUF_SIZE + 500);
    assert_int_equal(kicks(u), 1);
    assert_int_equal(u->stats.uart_missed_write, 500);
    /* the loop is told to wait for the pipe: nothing written, nothing lost */
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), -EAGAIN);
    assert_int_equal(u->stats.uart_write, cap);
    assert_int_equal(u->s.out.len, OUTBUF_SIZE);
    guest_writes(u, 10); /* still full: dropped, and no kick (the loop waits for POLLOUT) */
    assert_int_equal(u->stats.uart_missed_write, 510);
    assert_int_equal(kicks(u), 0);

    /* the reader drains: everything queued follows, in order */
    static char got[OUTBUF_SIZE * 8];
    size_t total = 0;
    int ret;
    do {
        ssize_t r;
        while ((r = read(p[0], got + total, sizeof(got) - total)) > 0)
            total += (size_t)r;
        ret = serial_flush(&u->s, SIZE_MAX);
    } while (ret == -EAGAIN);
    assert_int_equal(ret, 0);
    ssize_t r;
    while ((r = read(p[0], got + total, sizeof(got) - total)) > 0)
        total += (size_t)r;
    assert_int_equal(total, (size_t)cap + OUTBUF_SIZE);
    for (size_t i = 0; i < (size_t)OUTBUF_SIZE; i++) /* the ring's bytes: the oldest kept */
        assert_int_equal(got[cap + i], 'a' + i % 26);
    /* empty again: the next byte kicks */
    guest_writes(u, 1);
    assert_int_equal(kicks(u), 1);
    uart_free(u);
    close(p[0]), close(p[1]);
}

/* The loop's share per wake-up is bounded: a flood never keeps it from other events. */
static void flush_budget(void **state)
{
    char path[] = "/tmp/ember-serial-XXXXXX";
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    unlink(path);
    struct uart *u = uart_new(fd);
    guest_writes(u, 3000);
    assert_int_equal(serial_flush(&u->s, 1000), 1);
    assert_true(u->stats.uart_write >= 1000 && u->stats.uart_write < 3000);
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    assert_int_equal(u->stats.uart_write, 3000);
    assert_int_equal(lseek(fd, 0, SEEK_END), 3000);
    uart_free(u);
    close(fd);
}

/* A reader gone (EPIPE) or a file at RLIMIT_FSIZE (EFBIG): the bytes are dropped and counted,
 * and the next ones are tried again (a FIFO may get a new reader). */
static void broken_outputs(void **state)
{
    int p[2];
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    close(p[0]);
    struct uart *u = uart_new(p[1]);
    guest_writes(u, 100);
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    assert_int_equal(u->stats.uart_missed_write, 100);
    assert_int_equal(u->stats.uart_errors, 1);
    uart_free(u);
    close(p[1]);

    char path[] = "/tmp/ember-serial-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    struct rlimit old, lim = {.rlim_cur = 4096};
    getrlimit(RLIMIT_FSIZE, &old);
    lim.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN); /* ember counts its own SIGXFSZ and returns (signals.c) */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    u = uart_new(fd);
    guest_writes(u, 5000);
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    guest_writes(u, 50);
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 4096); /* the file stops at the limit */
    assert_int_equal(u->stats.uart_write, 4096);
    assert_int_equal(u->stats.uart_missed_write, 5050 - 4096);
    uart_free(u);
    close(fd);
}

/* serial_rate_limiter: bytes beyond the bucket are dropped (uart.rate_limiter_dropped_bytes);
 * the one-time burst goes first. */
static void rate_limit(void **state)
{
    int p[2];
    (void)state;
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    struct uart *u = uart_new(p[1]);
    struct vm_bucket b = {.size = 100, .one_time_burst = 50, .refill_time_ms = 1000000};
    assert_int_equal(serial_set_rate(&u->s, &b), 0);
    guest_writes(u, 1000);
    assert_int_equal(u->stats.uart_rate_dropped, 850);
    assert_int_equal(u->s.out.len, 150);
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    assert_int_equal(u->stats.uart_write, 150);
    struct vm_bucket off = {0};
    assert_int_equal(serial_set_rate(&u->s, &off), 0); /* size 0: nothing changes */
    assert_non_null(u->s.rate);
    uart_free(u);
    close(p[0]), close(p[1]);
}

/* Loopback mode keeps bytes off the output; discard counts what never went out. */
static void loopback_and_discard(void **state)
{
    int p[2];
    (void)state;
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    struct uart *u = uart_new(p[1]);
    uint8_t v = 0x10 | 0x08;
    bus_access(&u->pio, 0x3fc, &v, 1, true);
    guest_writes(u, 5);
    assert_int_equal(u->s.out.len, 0);
    v = 0x08;
    bus_access(&u->pio, 0x3fc, &v, 1, true);
    guest_writes(u, 7);
    serial_discard(&u->s);
    assert_int_equal(u->s.out.len, 0);
    assert_int_equal(u->stats.uart_missed_write, 7);
    uart_free(u);
    close(p[0]), close(p[1]);
}

/* serial_drain (before a snapshot, at the end): everything queued goes to a reader with room;
 * a full pipe is waited for a bounded time and what it did not take stays queued, uncounted;
 * a reader that left loses the bytes (counted), and drain still ends. */
static void drain_bounded(void **state)
{
    static char got[OUTBUF_SIZE * 2];
    int p[2];
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    int cap = fcntl(p[1], F_GETPIPE_SZ);
    struct uart *u = uart_new(p[1]);

    guest_writes(u, 5000);
    assert_int_equal(serial_drain(&u->s, 100), 0);
    assert_int_equal(u->s.out.len, 0);
    assert_int_equal(read(p[0], got, sizeof(got)), 5000);
    assert_int_equal(got[4999], 'a' + 4999 % 26);

    guest_writes(u, (size_t)cap); /* the pipe full, then 1000 more that it cannot take */
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    guest_writes(u, 1000);
    assert_int_equal(serial_drain(&u->s, 10), -EAGAIN);
    assert_int_equal(serial_drain(&u->s, -5), -EAGAIN); /* a negative wait: none */
    assert_int_equal(u->s.out.len, 1000);
    assert_int_equal(u->stats.uart_missed_write, 0);
    size_t total = 0;
    ssize_t r;
    while ((r = read(p[0], got + total, sizeof(got) - total)) > 0)
        total += (size_t)r;
    assert_int_equal(total, (size_t)cap);
    assert_int_equal(serial_drain(&u->s, 0), 0); /* room again: no wait needed */
    assert_int_equal(read(p[0], got, sizeof(got)), 1000);

    guest_writes(u, 300);
    close(p[0]); /* the reader leaves */
    assert_int_equal(serial_drain(&u->s, 100), 0);
    assert_int_equal(u->s.out.len, 0);
    assert_int_equal(u->stats.uart_missed_write, 300);
    uart_free(u);
    close(p[1]);
}

/* A vCPU's log line on the console's pipe comes after the guest bytes it queued before it,
 * not before them (log_thread_before_line + serial_flush_before_log); a stalled pipe still
 * never holds the vCPU. */
static void log_line_follows_the_output(void **state)
{
    static char got[OUTBUF_SIZE * 2];
    int p[2];
    (void)state;
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    int cap = fcntl(p[1], F_GETPIPE_SZ);
    struct uart *u = uart_new(p[1]);
    log_std_fds(p[1], p[1]);
    log_thread_before_line(serial_flush_before_log, &u->s);

    guest_writes(u, 300);
    log_at(LOG_INFO, __FILE__, __LINE__, "after the 300");
    ssize_t n = read(p[0], got, sizeof(got));
    assert_int_equal(n, 300 + strlen("ember: after the 300\n"));
    assert_int_equal(got[299], 'a' + 299 % 26);
    assert_memory_equal(got + 300, "ember: after the 300\n", strlen("ember: after the 300\n"));

    guest_writes(u, (size_t)cap); /* the pipe full, then 100 bytes wait in the ring */
    assert_int_equal(serial_flush(&u->s, SIZE_MAX), 0);
    guest_writes(u, 100);
    log_at(LOG_INFO, __FILE__, __LINE__, "dropped"); /* returns at once: no room for it */
    assert_int_equal(u->s.out.len, 100);
    log_thread_before_line(NULL, NULL);
    log_std_fds(STDOUT_FILENO, STDERR_FILENO);
    uart_free(u);
    close(p[0]), close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(ring_wraps_and_fills),
            cmocka_unit_test(vcpu_writes_through),
            cmocka_unit_test(stalled_reader),
            cmocka_unit_test(flush_budget),
            cmocka_unit_test(broken_outputs),
            cmocka_unit_test(rate_limit),
            cmocka_unit_test(loopback_and_discard),
            cmocka_unit_test(drain_bounded),
            cmocka_unit_test(log_line_follows_the_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
