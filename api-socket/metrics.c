/* Metrics: one JSON line per flush in Firecracker's shape ({"utc_timestamp_ms": ..., "<section>":
 * {"<name>": n}}); counters are reported as the delta since the previous flush, stored values
 * (startup time, latencies) as they are. The line is built in a stack buffer with no allocation
 * and no stdio, so a fatal-signal handler can flush too (as Firecracker does before it exits). */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../vmm/vmm.h"
#include "api.h"

/*
 * One write(2) per line, and a non-blocking FIFO takes a write whole or not at all (EAGAIN) only
 * up to PIPE_BUF bytes: a longer line could go out in part, and a reader would get a torn line.
 * So no line is longer than PIPE_BUF. The widest one fits: every metric at 20 digits is ~3.2 KiB
 * with a 64-character id, and PUT /metrics refuses properties longer than what is left
 * (metrics_props_max); a line that would not fit is refused whole (logger.metrics_fails), never
 * cut.
 */
#define LINE_MAX_BYTES 4096
_Static_assert(LINE_MAX_BYTES <= PIPE_BUF, "a metrics line must be one atomic FIFO write");

static const struct {
    const char *section, *name;
    bool counter;
} metrics[M_COUNT] = {
#define METRIC(id, section, name, counter) [id] = {section, name, counter},
#include "metrics.def"
#undef METRIC
};

void metrics_add(struct api_metrics_counters *m, enum metric_id id, uint64_t n)
{
    if (m && id < M_COUNT)
        atomic_fetch_add(&m->v[id], n);
}

void metrics_set(struct api_metrics_counters *m, enum metric_id id, uint64_t v)
{
    if (m && id < M_COUNT)
        atomic_store(&m->v[id], v);
}

void metrics_count_request(struct api_metrics_counters *m, const struct api_request *req,
                           bool failed)
{
    static const struct {
        bool counted; /* the request kind has a Firecracker metric */
        enum metric_id id;
    } put[API_REQ_KIND_COUNT] = {
            [API_REQ_INSTANCE_INFO] = {true, M_GET_INSTANCE_INFO},
            [API_REQ_VERSION] = {true, M_GET_VERSION},
            [API_REQ_GET_MACHINE] = {true, M_GET_MACHINE},
            [API_REQ_PUT_MACHINE] = {true, M_PUT_MACHINE},
            [API_REQ_PATCH_MACHINE] = {true, M_PATCH_MACHINE},
            [API_REQ_BOOT_SOURCE] = {true, M_PUT_BOOT},
            [API_REQ_PUT_DRIVE] = {true, M_PUT_DRIVE},
            [API_REQ_PATCH_DRIVE] = {true, M_PATCH_DRIVE},
            [API_REQ_PUT_VSOCK] = {true, M_PUT_VSOCK},
            [API_REQ_ACTION] = {true, M_PUT_ACTIONS},
            [API_REQ_LOGGER] = {true, M_PUT_LOGGER},
            [API_REQ_METRICS] = {true, M_PUT_METRICS},
            [API_REQ_SERIAL] = {true, M_PUT_SERIAL},
    };

    if (!m || req->kind >= API_REQ_KIND_COUNT)
        return;
    if (!put[req->kind].counted)
        return; /* no Firecracker key (PATCH /vm, GET /vm/config) */
    enum metric_id id = put[req->kind].id;
    metrics_add(m, id, 1);
    /* the *_fails key follows its *_count key for PUT and PATCH */
    if (failed && req->kind != API_REQ_INSTANCE_INFO && req->kind != API_REQ_VERSION &&
        req->kind != API_REQ_GET_MACHINE)
        metrics_add(m, id + 1, 1);
}

void metrics_from_vm_stats(struct api_metrics_counters *m, const struct vm_stats *s)
{
#define STAT(id, field)                      \
    {                                        \
        id, offsetof(struct vm_stats, field) \
    }
    static const struct {
        enum metric_id id;
        size_t off;
    } map[] = {
            STAT(M_VCPU_IO_IN, vcpu_exit_io_in),
            STAT(M_VCPU_IO_OUT, vcpu_exit_io_out),
            STAT(M_VCPU_MMIO_READ, vcpu_exit_mmio_read),
            STAT(M_VCPU_MMIO_WRITE, vcpu_exit_mmio_write),
            STAT(M_VCPU_FAILURES, vcpu_failures),
            STAT(M_BLOCK_READ_BYTES, block_read_bytes),
            STAT(M_BLOCK_WRITE_BYTES, block_write_bytes),
            STAT(M_BLOCK_READ_COUNT, block_read_count),
            STAT(M_BLOCK_WRITE_COUNT, block_write_count),
            STAT(M_BLOCK_FLUSH_COUNT, block_flush_count),
            STAT(M_BLOCK_INVALID, block_invalid_reqs),
            STAT(M_NET_RX_BYTES, net_rx_bytes),
            STAT(M_NET_RX_PACKETS, net_rx_packets),
            STAT(M_NET_RX_FAILS, net_rx_fails),
            STAT(M_NET_RX_THROTTLED, net_rx_rate_limiter_throttled),
            STAT(M_NET_NO_RX_BUF, net_no_rx_avail_buffer),
            STAT(M_NET_TX_BYTES, net_tx_bytes),
            STAT(M_NET_TX_PACKETS, net_tx_packets),
            STAT(M_NET_TX_MALFORMED, net_tx_malformed_frames),
            STAT(M_NET_TX_FAILS, net_tx_fails),
            STAT(M_NET_TX_THROTTLED, net_tx_rate_limiter_throttled),
            STAT(M_VSOCK_RX_BYTES, vsock_rx_bytes),
            STAT(M_VSOCK_TX_BYTES, vsock_tx_bytes),
            STAT(M_VSOCK_CONNS_ADDED, vsock_conns_added),
            STAT(M_VSOCK_CONNS_KILLED, vsock_conns_killed),
            STAT(M_VSOCK_CONNS_REMOVED, vsock_conns_removed),
            STAT(M_VSOCK_CONNS_REFUSED, vsock_conns_refused),
            STAT(M_VSOCK_TX_WRITE_FAILS, vsock_tx_write_fails),
            STAT(M_VSOCK_RX_READ_FAILS, vsock_rx_read_fails),
            STAT(M_VSOCK_TX_MALFORMED, vsock_tx_malformed_packets),
            STAT(M_UART_READ, uart_read),
            STAT(M_UART_WRITE, uart_write),
            STAT(M_UART_ERRORS, uart_errors),
            STAT(M_UART_MISSED_WRITE, uart_missed_write),
            STAT(M_UART_RATE_DROPPED, uart_rate_dropped),
            STAT(M_I8042_RESET, i8042_reset),
            STAT(M_I8042_READ, i8042_read),
            STAT(M_I8042_WRITE, i8042_write),
            STAT(M_I8042_MISSED_READ, i8042_missed_read),
            STAT(M_I8042_MISSED_WRITE, i8042_missed_write),
            STAT(M_I8042_ERRORS, i8042_errors),
    };
#undef STAT
    if (!m || !s)
        return;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const _Atomic uint64_t *v = (const _Atomic uint64_t *)((const char *)s + map[i].off);
        metrics_set(m, map[i].id, atomic_load_explicit(v, memory_order_relaxed));
    }
}

/* A bounded line buffer; overflow is sticky and checked once at the end. */
struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    bool overflow;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->overflow || n > sizeof(l->buf) - l->len) {
        l->overflow = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_s(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_u64(struct line *l, uint64_t v)
{
    char digits[20];
    size_t n = 0;

    do
        digits[sizeof(digits) - ++n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put(l, digits + sizeof(digits) - n, n);
}

size_t metrics_props_max(void)
{
    /* the widest line without properties: every metric at 20 digits, a 64-character id */
    size_t n = strlen("{\"utc_timestamp_ms\":") + 20 + strlen(",\"id\":\"\"") + 64 + 3;
    const char *section = NULL;
    for (unsigned i = 0; i < M_COUNT; i++) {
        if (!section || strcmp(section, metrics[i].section) != 0) {
            n += strlen(metrics[i].section) + 6; /* },"section":{ */
            section = metrics[i].section;
        }
        n += strlen(metrics[i].name) + 3 + 20 + 1; /* "name":value, */
    }
    n += strlen(",\"properties\":");
    return n < LINE_MAX_BYTES ? LINE_MAX_BYTES - n : 0;
}

int metrics_flush(struct api_metrics_counters *m, int fd, const char *id, const char *props)
{
    uint64_t before[M_COUNT]; /* a line that is not written gives its deltas to the next one */
    struct line l = {.len = 0};
    struct timespec now;
    const char *section = NULL;

    memcpy(before, m->flushed, sizeof(before));
    clock_gettime(CLOCK_REALTIME, &now);
    put_s(&l, "{\"utc_timestamp_ms\":");
    put_u64(&l, (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000);
    if (id) { /* instance ids are [A-Za-z0-9-]: nothing to escape */
        put_s(&l, ",\"id\":\"");
        put_s(&l, id);
        put_s(&l, "\"");
    }
    if (props && props[0]) { /* compact JSON text, made by the body parser */
        put_s(&l, ",\"properties\":");
        put_s(&l, props);
    }
    /* metrics.def lists each section's metrics together, so one pass makes the objects */
    for (unsigned i = 0; i < M_COUNT; i++) {
        uint64_t v = atomic_load(&m->v[i]), out = v;
        if (metrics[i].counter) {
            out = v - m->flushed[i];
            m->flushed[i] = v;
        }
        bool first = !section || strcmp(section, metrics[i].section) != 0;
        if (first) {
            put_s(&l, section ? "}," : ",");
            put_s(&l, "\"");
            put_s(&l, metrics[i].section);
            put_s(&l, "\":{");
            section = metrics[i].section;
        } else {
            put_s(&l, ",");
        }
        put_s(&l, "\"");
        put_s(&l, metrics[i].name);
        put_s(&l, "\":");
        put_u64(&l, out);
    }
    put_s(&l, section ? "}}\n" : "}\n");
    if (l.overflow) {
        memcpy(m->flushed, before, sizeof(before));
        metrics_add(m, M_LOG_METRICS_FAILS, 1);
        return -ENOSPC;
    }
    if (fd < 0)
        return 0;
    ssize_t n = write(fd, l.buf, l.len); /* one write per line */
    if (n == (ssize_t)l.len)
        return 0;
    /*
     * Not written: a full FIFO (EAGAIN) drops the line and counts it as missed; any other error
     * counts as a failure. A short write (errno is not set then) can only come from a regular
     * file (disk full, RLIMIT_FSIZE): the reader gets a cut line it cannot parse, so it is
     * missed as well. Either way no reader got this line's values: its deltas go to the next one.
     */
    int err = n < 0 ? errno : EIO;
    bool missed = n >= 0 || err == EAGAIN;
    memcpy(m->flushed, before, sizeof(before));
    metrics_add(m, missed ? M_LOG_MISSED_METRICS : M_LOG_METRICS_FAILS, 1);
    return -err;
}
