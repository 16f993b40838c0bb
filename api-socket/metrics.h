/* Metrics (metrics.c): Firecracker's key names for what ember has (metrics.def), the counters
 * any thread bumps, and the one-line flush. Included by api.h, after the types it uses. */
#ifndef EMBER_API_METRICS_H
#define EMBER_API_METRICS_H

enum metric_id {
#define METRIC(id, section, name, counter) id,
#include "metrics.def"
#undef METRIC
    M_COUNT
};

struct api_metrics_counters {
    _Atomic uint64_t v[M_COUNT]; /* bumped from any thread */
    uint64_t flushed[M_COUNT];   /* counters: value at the last flush (VMM thread) */
};

/* metrics_add(m, id, n): adds n to a counter (or sets a store metric with metrics_set). */
void metrics_add(struct api_metrics_counters *m, enum metric_id id, uint64_t n);
void metrics_set(struct api_metrics_counters *m, enum metric_id id, uint64_t v);
/* metrics_count_request(m, req, failed): counts one API request as Firecracker does. */
void metrics_count_request(struct api_metrics_counters *m, const struct api_request *req,
                           bool failed);
struct vm_stats;
/* metrics_from_vm_stats(m, s): copies the VMM's device and vCPU counters (absolute values) into
 * their metrics, before a flush turns them into deltas. */
void metrics_from_vm_stats(struct api_metrics_counters *m, const struct vm_stats *s);
/* metrics_props_max(): Returns the longest properties text (compact JSON) a metrics line has
 * room for when every metric is at its widest: PUT /metrics refuses longer ones. */
size_t metrics_props_max(void);
/* metrics_flush(m, fd, id, props): writes one JSON line (counters as deltas since the last
 * flush); id is emitted when non-NULL, props (a JSON object text) when non-empty. Allocates
 * nothing and uses no stdio (a fatal-signal handler calls it). Returns 0 or -errno. */
int metrics_flush(struct api_metrics_counters *m, int fd, const char *id, const char *props);

/* The controller's state: the VM's configuration (the one model, vmm/config.h) as requests
 * and --config-file build it, and the process settings beside it. */
struct api_ctl {
    enum api_vm_state state;
    const char *instance_id;
    const char *version;
    struct vm_config cfg;
    bool boot_set;
    bool boot_path; /* a boot resource was configured: snapshot/load is refused (Firecracker) */
    bool logger_set, metrics_set;
    struct api_logger logger;
    struct api_metrics metrics;
    const struct api_vmm_ops *ops;
    void *opaque;
    struct api_metrics_counters *counters; /* may be NULL */
};

/* ctl_init(c, id, version, ops, opaque): empty configuration, machine defaults. */
void ctl_init(struct api_ctl *c, const char *id, const char *version, const struct api_vmm_ops *ops,
              void *opaque);
/* ctl_free(c): frees the configuration's strings. */
void ctl_free(struct api_ctl *c);
/* ctl_handle(c, req, resp): applies one request (phase rules, resources opened and checked
 * now). Always fills resp; Returns 0 or -errno (resp then holds the 400). */
int ctl_handle(struct api_ctl *c, const struct api_request *req, struct api_response *resp);
/* ctl_vm_config_json(c): Returns the configuration in --config-file shape (malloc'd). */
char *ctl_vm_config_json(const struct api_ctl *c);
/* ctl_config_file(c, text, len, err, errlen): applies a --config-file (kebab-case sections);
 * the caller then sends InstanceStart. Returns 0 or -errno with a reason in err. */
int ctl_config_file(struct api_ctl *c, const char *text, size_t len, char *err, size_t errlen);

#endif
