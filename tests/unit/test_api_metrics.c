/* Metrics lines: the VMM's device counters copied in as absolute values come out as deltas
 * per flush, the line is one valid JSON object (no duplicate keys) with every section. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../api-socket/api.h"
#include "../../vmm/vmm.h"

/* Flushes m into a pipe and returns the parsed line (caller json_decref's it). */
static json_t *flush(struct api_metrics_counters *m, const char *id, const char *props)
{
    static char buf[16384];
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(metrics_flush(m, fds[1], id, props), 0);
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    close(fds[1]);
    assert_true(n > 1);
    assert_int_equal(buf[n - 1], '\n');
    buf[n] = '\0';
    json_error_t e;
    json_t *line = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &e);
    if (!line)
        fail_msg("not one JSON object: %s (%s)", e.text, buf);
    return line;
}

static json_int_t get(json_t *line, const char *section, const char *name)
{
    json_t *v = json_object_get(json_object_get(line, section), name);
    if (!json_is_integer(v))
        fail_msg("%s.%s missing", section, name);
    return json_integer_value(v);
}

static void device_counters_are_deltas(void **state)
{
    static struct api_metrics_counters m;
    static struct vm_stats stats;
    struct vm_stats *s = &stats; /* as the VMM holds it */
    (void)state;

    STAT_ADD(s, uart_write, 20);
    STAT_ADD(s, vcpu_exit_io_out, 21);
    STAT_ADD(s, block_read_bytes, 4096);
    STAT_ADD(s, i8042_reset, 1);
    metrics_from_vm_stats(&m, s);
    json_t *l = flush(&m, NULL, "");
    assert_int_equal(get(l, "uart", "write_count"), 20);
    assert_int_equal(get(l, "vcpu", "exit_io_out"), 21);
    assert_int_equal(get(l, "block", "read_bytes"), 4096);
    assert_int_equal(get(l, "i8042", "reset_count"), 1);
    json_decref(l);

    STAT_ADD(s, uart_write, 5); /* the VMM counts on; each flush shows what is new */
    metrics_from_vm_stats(&m, s);
    l = flush(&m, NULL, "");
    assert_int_equal(get(l, "uart", "write_count"), 5);
    assert_int_equal(get(l, "vcpu", "exit_io_out"), 0);
    assert_int_equal(get(l, "i8042", "reset_count"), 0);
    json_decref(l);

    metrics_from_vm_stats(&m, s); /* nothing new */
    l = flush(&m, NULL, "");
    assert_int_equal(get(l, "uart", "write_count"), 0);
    json_decref(l);
}

/* A line a full FIFO refuses is dropped, not waited for: its deltas and the drop itself
 * (logger.missed_metrics_count) come out in the next line that is written. */
static void dropped_line_carries_over(void **state)
{
    static struct api_metrics_counters m;
    char junk[65536];
    int fds[2];
    (void)state;

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
    memset(junk, 'x', sizeof(junk));
    while (write(fds[1], junk, sizeof(junk)) > 0)
        ;
    metrics_add(&m, M_PUT_ACTIONS, 3);
    assert_int_equal(metrics_flush(&m, fds[1], NULL, NULL), -EAGAIN);
    assert_int_equal(metrics_flush(&m, fds[1], NULL, NULL), -EAGAIN);
    close(fds[0]);
    close(fds[1]);
    json_t *l = flush(&m, NULL, "");
    assert_int_equal(get(l, "put_api_requests", "actions_count"), 3);
    assert_int_equal(get(l, "logger", "missed_metrics_count"), 2);
    json_decref(l);
}

static void line_shape(void **state)
{
    static struct api_metrics_counters m;
    static const char *const sections[] = {"api_server",
                                           "get_api_requests",
                                           "put_api_requests",
                                           "patch_api_requests",
                                           "latencies_us",
                                           "logger",
                                           "seccomp",
                                           "signals",
                                           "vcpu",
                                           "block",
                                           "net",
                                           "vsock",
                                           "uart",
                                           "i8042"};
    (void)state;

    metrics_set(&m, M_LAT_API_REQUEST, INT64_MAX); /* the widest number jansson reads */
    metrics_add(&m, M_SIG_HUP, 1);
    json_t *l = flush(&m, "vm-1", "{\"k\":\"v\",\"x\":\"y\"}");
    assert_string_equal(json_string_value(json_object_get(l, "id")), "vm-1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(l, "properties"), "x")),
                        "y");
    assert_true(json_integer_value(json_object_get(l, "utc_timestamp_ms")) > 0);
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
        assert_true(json_is_object(json_object_get(l, sections[i])));
    /* 2 + 14 sections: nothing else at the top */
    assert_int_equal(json_object_size(l), 2 + 1 + sizeof(sections) / sizeof(sections[0]));
    assert_int_equal(get(l, "signals", "sighup"), 1);
    assert_true(get(l, "latencies_us", "api_request_us") == INT64_MAX);
    json_decref(l);
}

static void widest_number(void **state)
{
    static struct api_metrics_counters m;
    char buf[16384];
    int fds[2];
    (void)state;

    metrics_set(&m, M_LAT_API_REQUEST, UINT64_MAX);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(metrics_flush(&m, fds[1], NULL, NULL), 0);
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    close(fds[1]);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "\"api_request_us\":18446744073709551615}"));
}

/* The widest line there can be (every metric at 20 digits, a 64-character id, the longest
 * properties PUT /metrics accepts: metrics_props_max) still fits in PIPE_BUF: one atomic write
 * to a FIFO. */
static void widest_line_fits_pipe_buf(void **state)
{
    static struct api_metrics_counters m;
    static char props[PIPE_BUF], buf[2 * PIPE_BUF];
    char id[65];
    int fds[2];
    (void)state;

    for (int i = 0; i < M_COUNT; i++)
        metrics_set(&m, (enum metric_id)i, UINT64_MAX);
    memset(id, 'a', 64);
    id[64] = '\0';
    size_t max = metrics_props_max();
    assert_true(max >= 200); /* room left for a few properties */
    /* {"k":"vvv..."}: exactly max bytes */
    memset(props, 'v', max);
    memcpy(props, "{\"k\":\"", 6);
    memcpy(props + max - 2, "\"}", 3);
    assert_int_equal(strlen(props), max);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(metrics_flush(&m, fds[1], id, props), 0);
    ssize_t n = read(fds[0], buf, sizeof(buf));
    close(fds[0]);
    close(fds[1]);
    assert_true(n > 4000);
    assert_true(n <= PIPE_BUF);
    assert_int_equal(buf[n - 1], '\n');
}

/* A FIFO with less room than the line takes none of it (EAGAIN), never a part. */
static void nearly_full_fifo_takes_nothing(void **state)
{
    static struct api_metrics_counters m;
    char junk[65536];
    int fds[2];
    size_t queued = 0;
    (void)state;

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
    memset(junk, 'x', sizeof(junk));
    for (ssize_t w; (w = write(fds[1], junk, 1)) > 0;)
        queued += (size_t)w;
    assert_int_equal(read(fds[0], junk, 100), 100); /* room for 100 bytes, not a line */
    queued -= 100;
    assert_int_equal(metrics_flush(&m, fds[1], NULL, NULL), -EAGAIN);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    size_t left = 0;
    for (ssize_t r; (r = read(fds[0], junk, sizeof(junk))) > 0;) {
        for (ssize_t i = 0; i < r; i++)
            assert_int_equal(junk[i], 'x'); /* no piece of a metrics line */
        left += (size_t)r;
    }
    assert_int_equal(left, queued);
    close(fds[0]);
    close(fds[1]);
}

/* A regular file that takes only part of the line (here RLIMIT_FSIZE; a full disk alike): the
 * cut line is counted as missed, its deltas carry over, and the error is not a stale errno. */
static void short_write_is_missed_and_carries_over(void **state)
{
    static struct api_metrics_counters m;
    char path[] = "/tmp/test_api_metrics.XXXXXX";
    struct rlimit old, lim;
    (void)state;

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 100;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    metrics_add(&m, M_PUT_ACTIONS, 4);
    errno = EAGAIN; /* stale: must not decide how the short write is counted */
    int rc = metrics_flush(&m, fd, NULL, NULL);
    off_t size = lseek(fd, 0, SEEK_END);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    close(fd);
    assert_int_equal(rc, -EIO);
    assert_int_equal(size, 100); /* the file took a part */
    json_t *l = flush(&m, NULL, "");
    assert_int_equal(get(l, "put_api_requests", "actions_count"), 4);
    assert_int_equal(get(l, "logger", "missed_metrics_count"), 1);
    assert_int_equal(get(l, "logger", "metrics_fails"), 0);
    json_decref(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(device_counters_are_deltas),
            cmocka_unit_test(dropped_line_carries_over),
            cmocka_unit_test(line_shape),
            cmocka_unit_test(widest_number),
            cmocka_unit_test(widest_line_fits_pipe_buf),
            cmocka_unit_test(nearly_full_fifo_takes_nothing),
            cmocka_unit_test(short_write_is_missed_and_carries_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
