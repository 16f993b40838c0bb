/* ember: the entry point and the boot story. Two front ends fill the one configuration
 * (config.h) and hand it to the VMM process (app.c):
 *   ember [--api-sock PATH] [...]  Firecracker's command line and HTTP API (no arguments:
 *                                  the API on /run/firecracker.socket, as firecracker)
 *   ember run --kernel PATH [...]  a VM on this terminal, configured from options
 *   ember exec --vsock UDS -- CMD  a command in a running VM through its agent (exec.c)
 * Order (the privilege checkpoint of DESIGN.md): parse the configuration → open every host
 * resource and build the machine → run the event loop until the guest stops. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../seccomp/seccomp.h"
#include "app.h"
#include "loop.h"
#include "../snapshot/snapshot.h"

#define CONFIG_FILE_MAX (1 << 20)

static struct app the_app; /* the process (signal handlers reach it) */

/* `ember run`: options → configuration → the VM, no API. */
static int cmd_run(int argc, char **argv, const struct timespec *t0)
{
    static struct vm_config cfg; /* the configuration lives as long as the VM */
    struct app *a = &the_app;
    char err[512];

    cfg_defaults(&cfg);
    int ret = cli_parse(&cfg, argc, argv, err, sizeof(err));
    if (ret == 1 || ret < 0) {
        cfg_free(&cfg);
        if (ret < 0)
            log_err("%s (see ember run --help)", err);
        return ret < 0 ? EXIT_BAD_ARGS : EXIT_OK;
    }
    struct vm_snapshot *snap = NULL;
    if (cfg.restore_path) /* the file checked before anything is set up */
        snap = vm_snapshot_open(cfg.restore_path, &cfg, err, sizeof(err));
    if (cfg.restore_path ? !snap : cfg_validate(&cfg, err, sizeof(err)) != 0) {
        log_err("%s", err);
        cfg_free(&cfg);
        return EXIT_BAD_CONFIG;
    }
    if (app_setup(a, "ember", t0)) {
        log_err("cannot set up the process: %s", strerror(errno));
        vm_snapshot_close(snap);
        return EXIT_GENERIC;
    }
    struct sc_options sc = {.opener = false}; /* the built-in filters, no sandbox check */
    if (sc_setup(&sc, err, sizeof(err))) {
        log_err("%s", err);
        vm_snapshot_close(snap);
        cfg_free(&cfg);
        return app_finish(a, EXIT_GENERIC);
    }
    a->boot_timer = true; /* ember run always has it */
    if (snap) {
        struct snap_mem_backend mem = {.path = cfg.restore_mem};
        ret = app_snapshot_load(a, &cfg, snap, &mem, true, err, sizeof(err));
        vm_snapshot_close(snap);
    } else {
        ret = app_start_vm(a, &cfg, err, sizeof(err));
    }
    if (ret)
        log_err("%s", err);
    ret = app_finish(a, ret ? (a->vm.config_error ? EXIT_BAD_CONFIG : EXIT_GENERIC) : app_run(a));
    cfg_free(&cfg);
    return ret;
}

/* ---- the firecracker front end ---------------------------------------------------------- */
struct fc {
    struct api_ctl ctl;
    struct api_server srv;
    bool srv_up;
};

/* The API thread left a request in the mailbox (VMM thread). */
static void on_api(void *opaque, uint32_t events)
{
    struct fc *f = opaque;
    (void)events;
    api_server_serve(&f->srv, &f->ctl);
    metrics_set(&the_app.counters, M_LAT_API_REQUEST, f->srv.last_latency_us);
}

/* The fault message of a refused request (or its status when there is none). */
static void fault_text(const struct api_response *resp, int ret, char *out, size_t len)
{
    json_t *v = resp->body ? json_loads(resp->body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(v, "fault_message"));

    snprintf(out, len, "%s", msg ? msg : strerror(ret < 0 ? -ret : EINVAL));
    json_decref(v);
}

static int read_config_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        int e = errno; /* errf may change errno */
        return errf(err, errlen, -e, "cannot open %s: %s", path, strerror(e));
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
        close(fd);
        return errf(err, errlen, -EINVAL, "%s is not a regular file of at most %d bytes", path,
                    CONFIG_FILE_MAX);
    }
    *text = malloc((size_t)st.st_size + 1);
    ssize_t got = *text ? read(fd, *text, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(*text);
        *text = NULL;
        return errf(err, errlen, -EIO, "cannot read %s", path);
    }
    *len = (size_t)got;
    return 0;
}

/* --config-file: its sections through the controller, then InstanceStart, as the API would. */
static int config_file(struct fc *f, const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int ret = read_config_file(path, &text, &len, err, errlen);

    if (!ret)
        ret = ctl_config_file(&f->ctl, text, len, err, errlen);
    free(text);
    if (ret)
        return ret;
    struct api_request req = {.kind = API_REQ_ACTION, .u.action = API_ACTION_INSTANCE_START};
    struct api_response resp;
    ret = ctl_handle(&f->ctl, &req, &resp);
    if (ret)
        fault_text(&resp, ret, err, errlen);
    api_response_free(&resp);
    return ret;
}

/* Logger and metrics from the flags, through the same operations as PUT /logger, /metrics. */
static int flag_sinks(struct fc *f, const struct api_args *args, char *err, size_t errlen)
{
    struct api_logger lg = {.has_path = args->log_path != NULL,
                            .has_level = true,
                            .level = args->level,
                            .show_level = args->show_level,
                            .show_log_origin = args->show_log_origin};
    if (args->log_path)
        snprintf(lg.log_path, sizeof(lg.log_path), "%s", args->log_path);
    int ret = api_app_ops.logger(&the_app, &lg, err, errlen);
    if (ret || !args->metrics_path)
        return ret;
    struct api_metrics m = {0};
    snprintf(m.metrics_path, sizeof(m.metrics_path), "%s", args->metrics_path);
    ret = api_app_ops.metrics(&the_app, &m, err, errlen);
    if (!ret) {
        f->ctl.metrics = m;
        f->ctl.metrics_set = true;
    }
    return ret;
}

static int fc_finish(struct fc *f, int code)
{
    if (f->srv_up)
        api_server_stop(&f->srv);
    f->srv_up = false;
    code = app_finish(&the_app, code);
    ctl_free(&f->ctl);
    return sig_exit(the_app.raise_sig, code);
}

static int fc_main(int argc, char **argv, const struct timespec *t0)
{
    static struct fc f; /* the configuration lives as long as the VM */
    struct app *a = &the_app;
    struct api_args args;
    char err[API_ERR_MAX];
    int ret = args_parse(&args, argc, argv, err, sizeof(err));

    if (ret == 1 || ret == 2) {
        if (ret == 1)
            args_usage(stdout);
        else
            printf("Firecracker v%s (ember %s)\n", EMBER_FC_VERSION, EMBER_VERSION);
        return EXIT_OK;
    }
    if (ret) {
        log_err("%s", err);
        return EXIT_BAD_ARGS;
    }
    pthread_setname_np(pthread_self(), "fc_vmm");
    ctl_init(&f.ctl, args.id, EMBER_FC_VERSION, &api_app_ops, a);
    if (app_setup(a, args.id, t0)) {
        log_err("cannot set up the process: %s", strerror(errno));
        return EXIT_GENERIC;
    }
    f.ctl.counters = &a->counters;
    a->fc_mode = true;
    a->boot_timer = args.boot_timer;
    f.srv.listen_fd = f.srv.req_fd = f.srv.stop_fd = -1;
    if (flag_sinks(&f, &args, err, sizeof(err))) {
        log_err("%s", err);
        return fc_finish(&f, EXIT_BAD_CONFIG);
    }
    log_info("Running Firecracker v%s (ember %s)", EMBER_FC_VERSION, EMBER_VERSION);
    struct sc_options sc = {args.no_seccomp, args.seccomp_filter, true, args.strict_sandbox, true};
    if (sc_setup(&sc, err, sizeof(err))) { /* before any other thread exists */
        log_err("%s", err);
        return fc_finish(&f, EXIT_GENERIC);
    }
    if (args.config_file && config_file(&f, args.config_file, err, sizeof(err))) {
        log_err("Building VMM configured from cmdline json failed: %s", err);
        return fc_finish(&f, EXIT_BAD_CONFIG);
    }
    if (!args.no_api) {
        f.srv.log = api_server_log;
        f.srv.conn_limit = args.max_connections, f.srv.idle_timeout_s = args.idle_timeout_s;
        f.srv.idle_give_way = args.idle_give_way;
        ret = api_server_start(&f.srv, args.api_sock, args.max_payload, err, sizeof(err));
        if (ret) {
            log_err("%s", err);
            return fc_finish(&f, EXIT_GENERIC);
        }
        f.srv_up = true;
        ret = loop_add(a->loop, f.srv.req_fd, EPOLLIN, on_api, &f);
        if (ret) {
            log_err("cannot watch the API mailbox: %s", strerror(-ret));
            return fc_finish(&f, EXIT_GENERIC);
        }
        app_startup_metrics(a, &args, t0);
        log_info("API server started.");
        log_debug("Process startup: %" PRIu64 " us wall, %" PRIu64 " us CPU.",
                  (uint64_t)atomic_load(&a->counters.v[M_STARTUP_US]),
                  (uint64_t)atomic_load(&a->counters.v[M_STARTUP_CPU_US]));
    } else {
        app_startup_metrics(a, &args, t0);
    }
    return fc_finish(&f, app_run(a));
}

int main(int argc, char **argv)
{
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    proc_hygiene(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        /* Firecracker's form: clients (Kata) read the 2nd word as the API's semver */
        printf("Firecracker v%s (ember %s)\n", EMBER_FC_VERSION, EMBER_VERSION);
        return EXIT_OK;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        cli_usage(stdout);
        printf("\nusage: ember exec --vsock UDS [--port N] [--timeout S] -- CMD [ARGS...]\n"
               "  runs CMD in the guest through its agent (ember exec --help)\n\n");
        args_usage(stdout);
        return EXIT_OK;
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1, &t0);
    if (argc >= 2 && strcmp(argv[1], "snapshot") == 0)
        return snapshot_tool(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "exec") == 0)
        return cmd_exec(argc - 1, argv + 1);
    /* Firecracker's flags; with none at all, Firecracker serves /run/firecracker.socket */
    if (argc < 2 || strncmp(argv[1], "--", 2) == 0)
        return fc_main(argc, argv, &t0);
    log_err("unknown command '%s' (try ember --help)", argv[1]);
    return EXIT_BAD_ARGS;
}
