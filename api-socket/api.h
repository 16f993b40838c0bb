/* ember API socket: the one internal header of api-socket/ (typed requests and responses,
 * routing + strict JSON bodies, the request→configuration controller, the HTTP server). */
#ifndef EMBER_API_H
#define EMBER_API_H

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../vmm/vmm.h" /* VM_DRIVES_MAX: the one device limit */

#define API_PAYLOAD_MAX_DEFAULT 51200 /* --http-api-max-payload-size default, as Firecracker */
/* The configuration's limits (vmm/config.h) are the API's. */
#define API_ID_MAX      CFG_ID_MAX
#define API_CMDLINE_MAX CMDLINE_MAX
#define API_DRIVES_MAX  VM_DRIVES_MAX /* 19: one per free interrupt line */
#define API_VCPUS_MAX   VCPUS_MAX
#define API_ERR_MAX     512

/* ---- typed requests ----------------------------------------------------------------------- */
enum api_method { API_GET, API_PUT, API_PATCH, API_DELETE, API_METHOD_OTHER };

enum api_kind {
    API_REQ_INSTANCE_INFO, /* GET / */
    API_REQ_VERSION,       /* GET /version */
    API_REQ_VM_CONFIG,     /* GET /vm/config */
    API_REQ_GET_MACHINE,   /* GET /machine-config */
    API_REQ_PUT_MACHINE,   /* PUT /machine-config */
    API_REQ_PATCH_MACHINE, /* PATCH /machine-config */
    API_REQ_BOOT_SOURCE,   /* PUT /boot-source */
    API_REQ_PUT_DRIVE,     /* PUT /drives/{id} */
    API_REQ_PATCH_DRIVE,   /* PATCH /drives/{id} */
    API_REQ_PUT_NET,       /* PUT /network-interfaces/{id} */
    API_REQ_PATCH_NET,     /* PATCH /network-interfaces/{id} */
    API_REQ_PUT_VSOCK,     /* PUT /vsock */
    API_REQ_ACTION,        /* PUT /actions */
    API_REQ_PATCH_VM,      /* PATCH /vm */
    API_REQ_LOGGER,        /* PUT /logger */
    API_REQ_METRICS,       /* PUT /metrics */
    API_REQ_SERIAL,        /* PUT /serial */
    API_REQ_SNAP_CREATE,   /* PUT /snapshot/create */
    API_REQ_SNAP_LOAD,     /* PUT /snapshot/load */
    API_REQ_KIND_COUNT
};

enum api_huge_pages { API_HUGE_NONE, API_HUGE_2M, API_HUGE_TRANSPARENT };
enum api_cache_type { API_CACHE_UNSAFE, API_CACHE_WRITEBACK };
enum api_io_engine { API_IO_SYNC, API_IO_ASYNC };
enum api_action {
    API_ACTION_INSTANCE_START,
    API_ACTION_CTRL_ALT_DEL,
    API_ACTION_FLUSH_METRICS,
    API_ACTION_WRITE_WORKING_SET, /* ember's own: the working set's marker (snapshot/ws.c) */
};
enum api_log_level {
    API_LOG_OFF,
    API_LOG_ERROR,
    API_LOG_WARN,
    API_LOG_INFO,
    API_LOG_DEBUG,
    API_LOG_TRACE
};

struct api_machine {
    bool has_vcpus, has_mem, has_smt, has_dirty, has_huge;
    uint32_t vcpu_count;
    uint64_t mem_size_mib;
    bool smt, track_dirty_pages;
    enum api_huge_pages huge_pages;
};

struct api_boot_source {
    char kernel_image_path[PATH_MAX];
    char initrd_path[PATH_MAX]; /* "" = none */
    bool has_boot_args;
    char boot_args[API_CMDLINE_MAX];
};

struct api_bucket {
    bool set;
    uint64_t size, one_time_burst, refill_time;
};
struct api_rate_limiter {
    bool set;
    struct api_bucket bandwidth, ops;
};

struct api_drive {
    char drive_id[API_ID_MAX + 1];
    bool has_path, has_rate_limiter;
    char path_on_host[PATH_MAX];
    char partuuid[API_ID_MAX + 1];
    bool is_root_device, is_read_only;
    enum api_cache_type cache_type;
    enum api_io_engine io_engine;
    struct api_rate_limiter rate_limiter;
};

struct api_net {
    char iface_id[API_ID_MAX + 1]; /* first: the id routes compare with the path's */
    char host_dev_name[64];
    bool has_mac;
    uint8_t guest_mac[6];
    struct api_rate_limiter rx_rate_limiter, tx_rate_limiter;
};

struct api_vsock {
    uint32_t guest_cid;
    char uds_path[PATH_MAX]; /* the device's limit (VM_UDS_MAX) is the controller's check */
};

struct api_logger {
    bool has_path, has_level, has_show_level, has_show_origin;
    char log_path[PATH_MAX];
    enum api_log_level level;
    bool show_level, show_log_origin;
};

struct api_metrics {
    char metrics_path[PATH_MAX];
    bool emit_id;
    char properties[1024]; /* compact JSON object of strings, "" = none */
};

struct api_serial {
    bool has_path;
    char serial_out_path[PATH_MAX];
    struct api_bucket rate_limiter; /* a TokenBucket in bytes (set: given) */
};

struct api_snap_create {
    char snapshot_path[PATH_MAX], mem_file_path[PATH_MAX];
    bool diff; /* "snapshot_type": "Diff" */
};

#define API_LAYERS_MAX 8 /* Diff layers a snapshot/load maps over its base */

struct api_net_override {
    char iface_id[CFG_ID_MAX + 1];
    char host_dev_name[VM_IFNAME_MAX + 1];
};

struct api_snap_load {
    char snapshot_path[PATH_MAX];
    char mem_path[PATH_MAX]; /* mem_backend.backend_path, or the older mem_file_path */
    bool uffd;               /* mem_backend.backend_type "Uffd" */
    bool track_dirty_pages, resume_vm, clock_realtime;
    unsigned noverrides;
    struct api_net_override overrides[VM_NETS_MAX];
    bool has_vsock_override;
    char vsock_uds_path[PATH_MAX];
    /* ember's own: mem_backend.layers, Diff memory files mapped over backend_path in order */
    unsigned nlayers;
    char layers[API_LAYERS_MAX][PATH_MAX];
    /* ember's own: mem_backend.working_set (prefetch) / record_working_set {path, after_ms} */
    char ws_path[PATH_MAX], ws_record_path[PATH_MAX];
    uint64_t ws_after_ms;
};

/* One request, parsed and validated; the union member is chosen by kind. */
struct api_request {
    enum api_kind kind;
    union {
        struct api_machine machine;
        struct api_boot_source boot;
        struct api_drive drive;
        struct api_net net;
        struct api_vsock vsock;
        enum api_action action;
        bool pause; /* PATCH /vm: true = Paused, false = Resumed */
        struct api_logger logger;
        struct api_metrics metrics;
        struct api_serial serial;
        struct api_snap_create snap_create;
        struct api_snap_load snap_load;
    } u;
};

/* One response: 200 with a JSON body, 204, or 400 with {"fault_message": ...}. */
struct api_response {
    int status;
    char *body; /* malloc'd JSON text or NULL (204) */
};

/* ---- routing and bodies (routes.c, bodies.c): no VMM dependency -------------------------- */
/* api_method_parse(s): Returns the method for an HTTP method name (API_METHOD_OTHER if none). */
enum api_method api_method_parse(const char *s);
/* api_method_name(m): Returns "Get", "Put", ... (as Firecracker's log lines spell them). */
const char *api_method_name(enum api_method m);
/* api_route(method, path, body, len, req, err, errlen): maps a request onto a typed
 * api_request, validating the body strictly. Returns 0, or -EINVAL with the fault message in
 * err (answered as 400), or -ENOMEM. */
int api_route(const char *method, const char *path, const char *body, size_t len,
              struct api_request *req, char *err, size_t errlen);
/* api_parse_body(kind, obj, req, err, errlen): fills req from a parsed JSON body for kind
 * (also used for --config-file sections). Returns 0 or -EINVAL with a message in err. */
int api_parse_body(enum api_kind kind, const void *obj, struct api_request *req, char *err,
                   size_t errlen);
/* api_id_valid(id): Returns true for a non-empty id of [A-Za-z0-9_] up to API_ID_MAX chars. */
bool api_id_valid(const char *id);

/* The body parsers take a parsed JSON object (json_t *, as void * to keep jansson out of
 * the header users' includes); each Returns 0 or -EINVAL with a fault message in err. */
int body_machine(const void *obj, bool partial, struct api_machine *m, char *err, size_t errlen);
int body_boot_source(const void *obj, struct api_boot_source *b, char *err, size_t errlen);
int body_drive(const void *obj, bool partial, struct api_drive *d, char *err, size_t errlen);
int body_net(const void *obj, bool partial, struct api_net *n, char *err, size_t errlen);
int body_vsock(const void *obj, struct api_vsock *v, char *err, size_t errlen);
int body_action(const void *obj, enum api_action *a, char *err, size_t errlen);
int body_vm_state(const void *obj, bool *pause, char *err, size_t errlen);
int body_logger(const void *obj, struct api_logger *l, char *err, size_t errlen);
int body_metrics(const void *obj, struct api_metrics *m, char *err, size_t errlen);
int body_serial(const void *obj, struct api_serial *s, char *err, size_t errlen);
int body_snap_create(const void *obj, struct api_snap_create *c, char *err, size_t errlen);
int body_snap_load(const void *obj, struct api_snap_load *l, char *err, size_t errlen);

/* ---- the controller (ctl.c): requests applied to the configuration, phase rules ---------- */
enum api_vm_state { API_VM_NOT_STARTED, API_VM_RUNNING, API_VM_PAUSED };

/* What the controller asks of the VMM. Each Returns 0 or -errno with a reason in err. */
struct api_vmm_ops {
    /* start: build and run the VM of cfg */
    int (*start)(void *opaque, const struct vm_config *cfg, char *err, size_t errlen);
    int (*pause)(void *opaque, bool pause, char *err, size_t errlen);
    int (*ctrl_alt_del)(void *opaque, char *err, size_t errlen);
    int (*flush_metrics)(void *opaque, char *err, size_t errlen);
    /* write_working_set (may be NULL: not supported): ends the recording of a working set
     * now and writes its file */
    int (*write_working_set)(void *opaque, char *err, size_t errlen);
    int (*logger)(void *opaque, const struct api_logger *l, char *err, size_t errlen);
    int (*metrics)(void *opaque, const struct api_metrics *m, char *err, size_t errlen);
    /* PATCH /drives/{id} on the running VM, for the configured drive: path (NULL: unchanged),
     * bw/ops (NULL: unchanged) */
    int (*update_drive)(void *opaque, const struct vm_drive *drive, const char *path,
                        const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                        size_t errlen);
    /* check_net (may be NULL): PUT /network-interfaces: the TAP can be opened as the device
     * will open it (then closed again) */
    int (*check_net)(void *opaque, const struct vm_net *net, char *err, size_t errlen);
    /* check_vsock (may be NULL): PUT /vsock: uds_path can be bound (then it is removed) */
    int (*check_vsock)(void *opaque, const struct vm_vsock *vs, char *err, size_t errlen);
    /* PATCH /network-interfaces/{id} on the running VM: rx/tx buckets (NULL: unchanged) */
    int (*update_net)(void *opaque, const struct vm_net *net, const struct vm_bucket *rx_bw,
                      const struct vm_bucket *rx_ops, const struct vm_bucket *tx_bw,
                      const struct vm_bucket *tx_ops, char *err, size_t errlen);
    /* PUT /snapshot/create on the paused VM */
    int (*snapshot_create)(void *opaque, const struct api_snap_create *c, char *err, size_t errlen);
    /* PUT /snapshot/load in a fresh process: cfg (the controller's, nothing but logger/
     * metrics/serial set) becomes the snapshot's configuration; on failure the caller resets
     * it */
    int (*snapshot_load)(void *opaque, struct vm_config *cfg, const struct api_snap_load *l,
                         char *err, size_t errlen);
};

/* The VMM operations behind the controller (vmm_ops.c; opaque: the struct app of vmm/app.h). */
extern const struct api_vmm_ops api_app_ops;
/* api_to_vmm_level(l): the VMM's log level for an API one. */
enum log_level api_to_vmm_level(enum api_log_level l);
/* api_server_log(...): an api_log_fn writing through the VMM's logger. */
void api_server_log(enum api_log_level level, const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Metrics lines in Firecracker's shape (metrics.c). */
#include "metrics.h"

/* ---- the firecracker command line (args.c) ----------------------------------------------- */
#define API_SOCK_DEFAULT        "/run/firecracker.socket"
#define API_INSTANCE_ID_DEFAULT "anonymous-instance"

struct api_args {
    const char *api_sock, *id, *config_file, *log_path, *metrics_path, *seccomp_filter;
    bool no_api, boot_timer, show_level, show_log_origin, no_seccomp, strict_sandbox;
    bool has_level;
    enum api_log_level level;
    size_t max_payload;
    unsigned max_connections, idle_timeout_s;
    bool idle_give_way;    /* --http-api-idle-give-way (ember's own; off: Firecracker's limit) */
    bool allow_core_dumps; /* acted on by proc_hygiene, before parsing */
    uint64_t start_time_us, start_time_cpu_us, parent_cpu_time_us;
    bool has_start_time_us, has_start_time_cpu_us, has_parent_cpu_time_us;
};

/* args_parse(a, argc, argv, err, errlen): parses Firecracker's flags (argv[0] is the program).
 * Returns 0, 1 for --help, 2 for --version, or -EINVAL with a reason in err (exit 153). */
int args_parse(struct api_args *a, int argc, char **argv, char *err, size_t errlen);
/* args_usage(out): prints the usage text to a FILE *. */
void args_usage(void *out);

/* ---- signals (signals.c) ------------------------------------------------------------------ */
/* sig_setup(c, flush, term): installs the fatal-signal handlers (they count into c, call flush
 * and exit with Firecracker's codes) and the SIGPIPE counter, and blocks the stopping signals
 * (SIGTERM, SIGINT, SIGHUP, SIGQUIT), returned in term for a signalfd. Returns 0 or -errno. */
int sig_setup(struct api_metrics_counters *c, void (*flush)(void), sigset_t *term);
/* sig_stop_code(fc_mode, sig, raise_sig): the exit code of a clean stop by a stopping signal,
 * 128 + sig; the firecracker front end follows Firecracker: SIGHUP is counted and gives 156,
 * and SIGTERM/SIGINT (left at their default action by Firecracker) set *raise_sig. */
int sig_stop_code(bool fc_mode, int sig, int *raise_sig);
/* sig_exit(raise_sig, code): when raise_sig is set, ends the process by that signal (its
 * default action). Returns code if it is still alive. */
int sig_exit(int raise_sig, int code);

/* The HTTP server and its acceptor thread (http.c, accept.c). */
#include "http.h"

#endif
