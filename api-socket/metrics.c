/* Metrics: one JSON line per flush in Firecracker's shape ({"utc_timestamp_ms": ..., "<section>":
 * {"<name>": n}}); counters are reported as the delta since the previous flush, stored values
 * (startup time, latencies) as they are. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"

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
    static const enum metric_id put[API_REQ_KIND_COUNT] = {
            [API_REQ_INSTANCE_INFO] = M_GET_INSTANCE_INFO,
            [API_REQ_VERSION] = M_GET_VERSION,
            [API_REQ_GET_MACHINE] = M_GET_MACHINE,
            [API_REQ_PUT_MACHINE] = M_PUT_MACHINE,
            [API_REQ_PATCH_MACHINE] = M_PATCH_MACHINE,
            [API_REQ_BOOT_SOURCE] = M_PUT_BOOT,
            [API_REQ_PUT_DRIVE] = M_PUT_DRIVE,
            [API_REQ_PATCH_DRIVE] = M_PATCH_DRIVE,
            [API_REQ_ACTION] = M_PUT_ACTIONS,
            [API_REQ_LOGGER] = M_PUT_LOGGER,
            [API_REQ_METRICS] = M_PUT_METRICS,
            [API_REQ_SERIAL] = M_PUT_SERIAL,
    };

    if (!m || req->kind >= API_REQ_KIND_COUNT)
        return;
    enum metric_id id = put[req->kind];
    if (id == M_STARTUP_US)
        return; /* no Firecracker key (PATCH /vm, GET /vm/config) */
    metrics_add(m, id, 1);
    /* the *_fails key follows its *_count key for PUT and PATCH */
    if (failed && req->kind != API_REQ_INSTANCE_INFO && req->kind != API_REQ_VERSION &&
        req->kind != API_REQ_GET_MACHINE)
        metrics_add(m, id + 1, 1);
}

int metrics_flush(struct api_metrics_counters *m, int fd, const char *id, const char *props)
{
    struct timespec now;
    int ret = 0;

    clock_gettime(CLOCK_REALTIME, &now);
    json_t *root = json_pack("{s:I}", "utc_timestamp_ms",
                             (json_int_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    if (!root)
        return -ENOMEM;
    if (id)
        json_object_set_new(root, "id", json_string(id));
    if (props && props[0])
        json_object_set_new(root, "properties", json_loads(props, 0, NULL));
    for (unsigned i = 0; i < M_COUNT; i++) {
        uint64_t v = atomic_load(&m->v[i]);
        uint64_t out = v;
        if (metrics[i].counter) {
            out = v - m->flushed[i];
            m->flushed[i] = v;
        }
        json_t *sec = json_object_get(root, metrics[i].section);
        if (!sec) {
            sec = json_object();
            json_object_set_new(root, metrics[i].section, sec);
        }
        json_object_set_new(sec, metrics[i].name, json_integer((json_int_t)out));
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text);
    char *line = realloc(text, len + 2); /* one write per line, newline included */
    if (!line) {
        free(text);
        return -ENOMEM;
    }
    line[len++] = '\n';
    line[len] = '\0';
    if (fd >= 0 && write(fd, line, len) != (ssize_t)len) {
        ret = errno == EAGAIN ? -EAGAIN : -EIO;
        metrics_add(m, ret == -EAGAIN ? M_LOG_MISSED_METRICS : M_LOG_METRICS_FAILS, 1);
    }
    free(line);
    return ret;
}
