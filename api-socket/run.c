/* The firecracker-compatible process: `ember --api-sock PATH ...`. Order: parse flags → logger
 * and metrics → --config-file (boots at once) → API thread → the one event loop on the VMM
 * thread, serving requests before and after InstanceStart until the VM stops.
 * `ember run` enters through run_vm too, so the three front ends share one configuration path. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "../virtio/virtio.h"
#include "../vmm/loop.h"
#include "../vmm/vmm.h"
#include "api.h"

#define CONFIG_FILE_MAX  (1 << 20)
#define METRICS_PERIOD_S 60

/* Everything one VMM process owns (the only instance lives in api_main / run_vm). */
struct run {
    struct api_ctl ctl;
    struct api_server srv;
    bool srv_up;
    struct api_metrics_counters counters;
    int metrics_fd, timer_fd;
    const char *id;
    bool emit_id;
    char props[1024];
    struct loop *loop; /* the one event loop: API mailbox, metrics timer, signals, the VM */
    int sig_fd;        /* the stopping signals (sig_setup blocks them) */
    bool quit;         /* a signal before the VM started: leave with quit_code */
    int quit_code;
    struct vm_config cfg;
    struct vm vm;
    bool vm_built;
    bool fc_mode;    /* the firecracker front end: log the exit line tools wait for */
    bool boot_timer; /* --boot-timer: keep the boot-timer device (ember run always has it) */
    int raise_sig;   /* SIGTERM/SIGINT: after the clean stop, die by it (as Firecracker) */
    enum boot_pref boot;
};

static struct run the_run; /* large (paths, the VM): not on the stack; signal handlers reach it */

static enum log_level to_vmm_level(enum api_log_level l)
{
    switch (l) {
    case API_LOG_OFF:
    case API_LOG_ERROR:
        return LOG_ERROR;
    case API_LOG_WARN:
        return LOG_WARN;
    case API_LOG_INFO:
        return LOG_INFO;
    default:
        return LOG_DEBUG;
    }
}

static void server_log(enum api_log_level level, const char *file, int line, const char *fmt, ...)
{
    char text[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_at(to_vmm_level(level), file, line, "%s", text);
}

/* The one configuration → struct vm_config translation (API, --config-file, ember run). */
static int run_vm_config(struct run *r, char *err, size_t errlen)
{
    const struct api_ctl *c = &r->ctl;
    struct vm_config *cfg = &r->cfg;

    cfg_defaults(cfg);
    cfg->boot = r->boot;
    cfg->vcpus = c->machine.vcpu_count;
    cfg->smt = c->machine.smt;
    cfg->mem_mib = c->machine.mem_size_mib;
    snprintf(cfg->kernel_path, sizeof(cfg->kernel_path), "%s", c->boot.kernel_image_path);
    snprintf(cfg->initrd_path, sizeof(cfg->initrd_path), "%s", c->boot.initrd_path);
    if (c->boot.has_boot_args)
        snprintf(cfg->cmdline, sizeof(cfg->cmdline), "%s", c->boot.boot_args);
    if (c->serial_set && c->serial.has_path)
        snprintf(cfg->console_path, sizeof(cfg->console_path), "%s", c->serial.serial_out_path);
    if (c->ndrives > VM_DRIVES_MAX)
        return snprintf(err, errlen, "Too many drives: %u (ember attaches at most %d).", c->ndrives,
                        VM_DRIVES_MAX),
               -EINVAL;
    cfg->ndrives = 0;
    for (int root = 1; root >= 0; root--) /* the root drive first: /dev/vda */
        for (unsigned i = 0; i < c->ndrives; i++) {
            const struct api_drive *d = &c->drives[i];
            if (d->is_root_device != (bool)root)
                continue;
            struct vm_drive *v = &cfg->drives[cfg->ndrives++];
            memset(v, 0, sizeof(*v));
            snprintf(v->id, sizeof(v->id), "%s", d->drive_id);
            snprintf(v->path, sizeof(v->path), "%s", d->path_on_host);
            v->root = d->is_root_device;
            v->read_only = d->is_read_only;
            v->writeback = d->cache_type == API_CACHE_WRITEBACK;
            v->async = d->io_engine == API_IO_ASYNC;
            v->bw = (struct vm_bucket){d->rate_limiter.bandwidth.size,
                                       d->rate_limiter.bandwidth.one_time_burst,
                                       d->rate_limiter.bandwidth.refill_time};
            v->ops =
                    (struct vm_bucket){d->rate_limiter.ops.size, d->rate_limiter.ops.one_time_burst,
                                       d->rate_limiter.ops.refill_time};
        }
    return cfg_validate(cfg, err, errlen);
}

/* The fault message of a refused request (or its status when there is none). */
static void fault_text(const struct api_response *resp, int ret, char *out, size_t len)
{
    json_t *v = resp->body ? json_loads(resp->body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(v, "fault_message"));

    snprintf(out, len, "%s", msg ? msg : strerror(ret < 0 ? -ret : EINVAL));
    json_decref(v);
}

/* Async-signal-safe (the fatal-signal handler flushes too). */
static int flush_metrics(struct run *r)
{
    if (r->metrics_fd < 0)
        return 0;
    if (r->vm_built)
        metrics_from_vm_stats(&r->counters, &r->vm.stats);
    metrics_set(&r->counters, M_LOG_MISSED_LOG, log_missed());
    return metrics_flush(&r->counters, r->metrics_fd, r->emit_id ? r->id : NULL, r->props);
}

/* The API thread left a request in the mailbox (VMM thread). */
static void on_api(void *opaque, uint32_t events)
{
    struct run *r = opaque;
    (void)events;
    api_server_serve(&r->srv, &r->ctl);
    metrics_set(&r->counters, M_LAT_API_REQUEST, r->srv.last_latency_us);
}

static void on_metrics_timer(void *opaque, uint32_t events)
{
    struct run *r = opaque;
    uint64_t ticks;
    (void)events;
    if (read(r->timer_fd, &ticks, sizeof(ticks)) > 0)
        flush_metrics(r);
}

/* SIGTERM, SIGINT, SIGHUP, SIGQUIT: before InstanceStart the process leaves; after it the VM
 * stops cleanly and the process ends as the signal says. */
static void on_signal(void *opaque, uint32_t events)
{
    struct run *r = opaque;
    struct signalfd_siginfo si;
    (void)events;

    if (read(r->sig_fd, &si, sizeof(si)) != sizeof(si))
        return;
    if (!r->vm_built) {
        log_info("received signal %u before the VM started: exiting", si.ssi_signo);
        r->quit_code = sig_stop_code(r->fc_mode, (int)si.ssi_signo, &r->raise_sig);
        r->quit = true;
        return;
    }
    log_info("received signal %u: stopping the VM", si.ssi_signo);
    r->vm.stop_signal = (int)si.ssi_signo;
    vm_request_stop(&r->vm, VM_STOP_SIGNAL);
}

static int op_start(void *opaque, char *err, size_t errlen)
{
    struct run *r = opaque;
    int ret = run_vm_config(r, err, errlen);

    if (ret)
        return ret;
    struct timespec start = r->vm.process_start;
    memset(&r->vm, 0, sizeof(r->vm));
    r->vm.process_start = start;
    ret = vm_create(&r->vm, &r->cfg, r->loop, err, errlen);
    if (ret) {
        vm_destroy(&r->vm);
        return ret;
    }
    r->vm_built = true;
    if (r->fc_mode && !r->boot_timer) /* Firecracker attaches it only with --boot-timer */
        boot_timer_detach(&r->vm.mmio, &r->vm.boot_timer);
    flush_metrics(r); /* Firecracker flushes once when the VM starts */
    vm_start(&r->vm); /* a failure stops the VM: the loop then ends the process */
    return 0;
}

static int op_pause(void *opaque, bool pause, char *err, size_t errlen)
{
    struct run *r = opaque;
    struct timespec t0;
    (void)err, (void)errlen;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < r->vm.nvcpus; i++)
        vcpu_request(&r->vm.vcpus[i], pause ? VCPU_CMD_PAUSE : VCPU_CMD_RUN);
    for (unsigned i = 0; i < r->vm.nvcpus; i++)
        vcpu_wait_state(&r->vm.vcpus[i], pause ? VCPU_PAUSED : VCPU_RUNNING);
    uint64_t us = log_us_since(&t0, CLOCK_MONOTONIC);
    metrics_set(&r->counters, pause ? M_LAT_VMM_PAUSE : M_LAT_VMM_RESUME, us);
    metrics_set(&r->counters, pause ? M_LAT_PAUSE : M_LAT_RESUME, us);
    log_info("%s the microVM.", pause ? "Paused" : "Resumed");
    return 0;
}

static int op_ctrl_alt_del(void *opaque, char *err, size_t errlen)
{
    struct run *r = opaque;
    int ret = i8042_ctrl_alt_del(&r->vm.i8042);

    if (ret)
        snprintf(err, errlen, "Failed to send Ctrl-Alt-Del: the i8042 buffer is full.");
    return ret;
}

static int op_flush(void *opaque, char *err, size_t errlen)
{
    struct run *r = opaque;

    if (r->metrics_fd < 0)
        return snprintf(err, errlen, "Metrics are not configured."), -EINVAL;
    int ret = flush_metrics(r);
    if (ret)
        snprintf(err, errlen, "Failed to write metrics: %s", strerror(-ret));
    return ret;
}

/* Opens a log or metrics sink as Firecracker does: read-write and non-blocking, so a FIFO nobody
 * reads yet opens (O_WRONLY would fail with ENXIO) and a full one drops lines (counted in
 * logger.missed_log_count / missed_metrics_count) instead of stopping the VMM. A missing path
 * is created, but never through a dangling symlink (O_EXCL); the sink must be a regular file, a
 * FIFO or /dev/null (not another device, a directory or a socket). */
static int open_sink(const char *what, const char *path, char *err, size_t errlen)
{
    const int flags = O_RDWR | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    struct stat st;
    int fd = open(path, flags);

    if (fd < 0 && errno == ENOENT) {
        fd = open(path, flags | O_CREAT | O_EXCL, 0600);
        if (fd < 0 && errno == EEXIST) /* a symlink to nothing (or a racing creator) */
            return snprintf(err, errlen,
                            "Failed to open the %s file %.256s: a dangling symlink (no file is "
                            "created through one)",
                            what, path),
                   -EEXIST;
    }
    if (fd < 0) {
        int rc = -errno; /* before snprintf/strerror, which may change errno */
        snprintf(err, errlen, "Failed to open the %s file %.256s: %s", what, path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode) ||
                                 (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)))) {
        close(fd);
        return snprintf(err, errlen, "The %s file %.256s is not a regular file or a FIFO.", what,
                        path),
               -EINVAL;
    }
    return fd;
}

static int op_logger(void *opaque, const struct api_logger *l, char *err, size_t errlen)
{
    struct run *r = opaque;
    int fd = -1;

    if (l->has_path && (fd = open_sink("log", l->log_path, err, errlen)) < 0)
        return fd;
    log_configure(r->id, fd, l->has_level ? to_vmm_level(l->level) : LOG_INFO,
                  l->has_level && l->level == API_LOG_OFF, l->show_level, l->show_log_origin);
    return 0;
}

static int op_metrics(void *opaque, const struct api_metrics *m, char *err, size_t errlen)
{
    struct run *r = opaque;

    if (r->metrics_fd >= 0)
        return snprintf(err, errlen, "Reinitialization of metrics not allowed."), -EINVAL;
    int fd = open_sink("metrics", m->metrics_path, err, errlen);
    if (fd < 0)
        return fd;
    r->metrics_fd = fd;
    r->emit_id = m->emit_id;
    snprintf(r->props, sizeof(r->props), "%s", m->properties);
    return 0;
}

static void to_vm_bucket(const struct api_bucket *in, struct vm_bucket *out)
{
    bool on = in->size && in->refill_time; /* zero size or refill time disables (Firecracker) */
    *out = (struct vm_bucket){on ? in->size : 0, on ? in->one_time_burst : 0,
                              on ? in->refill_time : 0};
}

static int op_update_drive(void *opaque, const struct api_drive *d, char *err, size_t errlen)
{
    struct run *r = opaque;
    struct vm_bucket bw, ops;

    to_vm_bucket(&d->rate_limiter.bandwidth, &bw);
    to_vm_bucket(&d->rate_limiter.ops, &ops);
    const struct vm_drive *drive = NULL;
    for (unsigned i = 0; i < r->cfg.ndrives && !drive; i++)
        if (strcmp(r->cfg.drives[i].id, d->drive_id) == 0)
            drive = &r->cfg.drives[i];
    if (!drive)
        return snprintf(err, errlen, "no drive with id %s", d->drive_id), -ENOENT;
    int ret = virtio_drive_update(r->vm.virtio, drive, d->has_path ? d->path_on_host : NULL,
                                  d->rate_limiter.bandwidth.set ? &bw : NULL,
                                  d->rate_limiter.ops.set ? &ops : NULL, err, errlen);
    if (ret && !err[0])
        snprintf(err, errlen, "Failed to update the block device %s: %s", d->drive_id,
                 strerror(-ret));
    if (ret)
        return ret == -ENOENT ? ret : -EINVAL;
    log_info("Updated the block device %s.", d->drive_id);
    return 0;
}

static const struct api_vmm_ops run_ops = {op_start,  op_pause,   op_ctrl_alt_del, op_flush,
                                           op_logger, op_metrics, op_update_drive};

/* What the fatal-signal handler flushes before the process exits. */
static void flush_last(void)
{
    flush_metrics(&the_run);
}

/* The VMM thread's life after set-up: the event loop, until the VM stops (or, before
 * InstanceStart, a signal ends the process). Returns the exit code. */
static int run_loop(struct run *r)
{
    while (!r->quit && !(r->vm_built && vm_stopped(&r->vm))) {
        int n = loop_wait(r->loop, -1);
        if (n < 0) {
            log_err("epoll_wait: %s", strerror(-n));
            if (!r->vm_built)
                return EXIT_GENERIC;
            vm_request_stop(&r->vm, VM_STOP_ERROR);
        }
    }
    if (r->quit)
        return r->quit_code;
    vm_halt(&r->vm);
    if (atomic_load(&r->vm.stop_reason) == VM_STOP_SIGNAL)
        return sig_stop_code(r->fc_mode, r->vm.stop_signal, &r->raise_sig);
    return vm_exit_code(&r->vm);
}

static void startup_metrics(struct run *r, const struct api_args *a, const struct timespec *t0)
{
    struct timespec now, cpu;
    uint64_t wall_us, cpu_us;

    clock_gettime(CLOCK_MONOTONIC, &now);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    wall_us = log_us_since(t0, CLOCK_MONOTONIC);
    if (a && a->has_start_time_us) { /* the jailer's CLOCK_MONOTONIC stamp before exec */
        uint64_t now_us = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
        wall_us = now_us > a->start_time_us ? now_us - a->start_time_us : 0;
    }
    cpu_us = (uint64_t)cpu.tv_sec * 1000000 + (uint64_t)cpu.tv_nsec / 1000;
    if (a && a->has_parent_cpu_time_us)
        cpu_us += a->parent_cpu_time_us;
    metrics_set(&r->counters, M_STARTUP_US, wall_us);
    metrics_set(&r->counters, M_STARTUP_CPU_US, cpu_us);
}

static int run_setup(struct run *r, const char *id, const struct timespec *t0, const sigset_t *term)
{
    memset(r, 0, sizeof(*r));
    r->metrics_fd = r->timer_fd = r->sig_fd = -1;
    r->srv.listen_fd = r->srv.req_fd = r->srv.stop_fd = -1;
    r->id = id;
    r->vm.process_start = *t0;
    ctl_init(&r->ctl, id, EMBER_FC_VERSION, &run_ops, r);
    r->ctl.counters = &r->counters;
    r->loop = loop_create();
    r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    r->sig_fd = signalfd(-1, term, SFD_CLOEXEC | SFD_NONBLOCK);
    if (!r->loop || r->timer_fd < 0 || r->sig_fd < 0)
        return -errno;
    struct itimerspec period = {{METRICS_PERIOD_S, 0}, {METRICS_PERIOD_S, 0}};
    timerfd_settime(r->timer_fd, 0, &period, NULL);
    int ret = loop_add(r->loop, r->timer_fd, EPOLLIN, on_metrics_timer, r);
    return ret ? ret : loop_add(r->loop, r->sig_fd, EPOLLIN, on_signal, r);
}

static int run_finish(struct run *r, int code)
{
    flush_metrics(r); /* at exit, as Firecracker (a no-op without a metrics sink) */
    if (r->vm_built)
        vm_destroy(&r->vm);
    if (r->srv_up)
        api_server_stop(&r->srv);
    loop_destroy(r->loop);
    r->loop = NULL;
    int *fds[] = {&r->metrics_fd, &r->timer_fd, &r->sig_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        int fd = *fds[i];
        *fds[i] = -1; /* first: a fatal-signal flush must never see a closed (or reused) fd */
        if (fd >= 0)
            close(fd);
    }
    if (r->fc_mode && r->raise_sig)
        log_info("ember exiting on signal %d.", r->raise_sig);
    else if (r->fc_mode && code == EXIT_OK)
        log_info("ember exiting successfully. exit_code=0");
    else if (r->fc_mode)
        log_info("ember exiting with error. exit_code=%d", code);
    return code;
}

static int read_config_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        int e = errno; /* snprintf may change errno */
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
        close(fd);
        return snprintf(err, errlen, "%s is not a regular file of at most %d bytes", path,
                        CONFIG_FILE_MAX),
               -EINVAL;
    }
    *text = malloc((size_t)st.st_size + 1);
    ssize_t got = *text ? read(fd, *text, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(*text);
        *text = NULL;
        return snprintf(err, errlen, "cannot read %s", path), -EIO;
    }
    *len = (size_t)got;
    return 0;
}

/* InstanceStart through the controller, as the API would send it. */
static int start_instance(struct run *r, char *err, size_t errlen)
{
    struct api_request req = {.kind = API_REQ_ACTION, .u.action = API_ACTION_INSTANCE_START};
    struct api_response resp;

    int ret = ctl_handle(&r->ctl, &req, &resp);
    if (ret)
        fault_text(&resp, ret, err, errlen);
    api_response_free(&resp);
    return ret;
}

int api_main(int argc, char **argv, const struct timespec *t0)
{
    struct run *r = &the_run;
    struct api_args a;
    char err[API_ERR_MAX];
    sigset_t term;
    int ret = args_parse(&a, argc, argv, err, sizeof(err));

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
    if (sig_setup(&r->counters, flush_last, &term) || run_setup(r, a.id, t0, &term)) {
        log_err("cannot set up the process: %s", strerror(errno));
        return EXIT_GENERIC;
    }
    r->fc_mode = true;
    r->boot_timer = a.boot_timer;
    struct api_logger lg = {.has_path = a.log_path != NULL,
                            .has_level = true,
                            .level = a.level,
                            .show_level = a.show_level,
                            .show_log_origin = a.show_log_origin};
    if (a.log_path)
        snprintf(lg.log_path, sizeof(lg.log_path), "%s", a.log_path);
    if (op_logger(r, &lg, err, sizeof(err))) {
        log_err("%s", err);
        return run_finish(r, EXIT_BAD_CONFIG);
    }
    log_info("Running Firecracker v%s (ember %s)", EMBER_FC_VERSION, EMBER_VERSION);
    if (a.seccomp_filter || !a.no_seccomp)
        log_warn("seccomp filters are not installed by this build of ember");
    if (a.metrics_path) {
        struct api_metrics m = {0};
        snprintf(m.metrics_path, sizeof(m.metrics_path), "%s", a.metrics_path);
        if (op_metrics(r, &m, err, sizeof(err))) {
            log_err("%s", err);
            return run_finish(r, EXIT_BAD_CONFIG);
        }
        r->ctl.metrics = m;
        r->ctl.metrics_set = true;
    }
    r->boot = BOOT_PREF_AUTO;
    if (a.config_file) {
        char *text = NULL;
        size_t len = 0;
        ret = read_config_file(a.config_file, &text, &len, err, sizeof(err));
        if (!ret)
            ret = ctl_config_file(&r->ctl, text, len, err, sizeof(err));
        free(text);
        if (!ret)
            ret = start_instance(r, err, sizeof(err));
        if (ret) {
            log_err("Building VMM configured from cmdline json failed: %s", err);
            return run_finish(r, EXIT_BAD_CONFIG);
        }
    }
    if (!a.no_api) {
        r->srv.log = server_log;
        ret = api_server_start(&r->srv, a.api_sock, a.max_payload, err, sizeof(err));
        if (ret) {
            log_err("%s", err);
            return run_finish(r, EXIT_GENERIC);
        }
        r->srv_up = true;
        ret = loop_add(r->loop, r->srv.req_fd, EPOLLIN, on_api, r);
        if (ret) {
            log_err("cannot watch the API mailbox: %s", strerror(-ret));
            return run_finish(r, EXIT_GENERIC);
        }
        startup_metrics(r, &a, t0);
        log_info("API server started.");
        log_debug("Process startup: %" PRIu64 " us wall, %" PRIu64 " us CPU.",
                  (uint64_t)atomic_load(&r->counters.v[M_STARTUP_US]),
                  (uint64_t)atomic_load(&r->counters.v[M_STARTUP_CPU_US]));
    } else {
        startup_metrics(r, &a, t0);
    }
    return sig_exit(r->raise_sig, run_finish(r, run_loop(r)));
}

int api_run_cli(const struct vm_config *cli, const struct timespec *t0)
{
    struct run *r = &the_run;
    static struct api_request req;
    struct api_response resp;
    char err[API_ERR_MAX];
    sigset_t term;

    if (sig_setup(&r->counters, flush_last, &term) || run_setup(r, "ember", t0, &term)) {
        log_err("cannot set up the process: %s", strerror(errno));
        return EXIT_GENERIC;
    }
    r->boot = cli->boot;
    /* The `ember run` options as the API requests they stand for. */
    memset(&req, 0, sizeof(req));
    req.kind = API_REQ_PUT_MACHINE;
    req.u.machine = (struct api_machine){.has_vcpus = true,
                                         .has_mem = true,
                                         .vcpu_count = cli->vcpus,
                                         .mem_size_mib = cli->mem_mib};
    int ret = ctl_handle(&r->ctl, &req, &resp);
    if (!ret) {
        api_response_free(&resp);
        memset(&req, 0, sizeof(req));
        req.kind = API_REQ_BOOT_SOURCE;
        snprintf(req.u.boot.kernel_image_path, PATH_MAX, "%s", cli->kernel_path);
        snprintf(req.u.boot.initrd_path, PATH_MAX, "%s", cli->initrd_path);
        snprintf(req.u.boot.boot_args, API_CMDLINE_MAX, "%s", cli->cmdline);
        req.u.boot.has_boot_args = true;
        ret = ctl_handle(&r->ctl, &req, &resp);
    }
    for (unsigned i = 0; !ret && i < cli->ndrives; i++) {
        const struct vm_drive *v = &cli->drives[i];
        struct api_drive *d = &req.u.drive;
        api_response_free(&resp);
        memset(&req, 0, sizeof(req));
        req.kind = API_REQ_PUT_DRIVE;
        snprintf(d->drive_id, sizeof(d->drive_id), "%s", v->id);
        if (!api_id_valid(d->drive_id))
            snprintf(d->drive_id, sizeof(d->drive_id), "drive%u", i);
        snprintf(d->path_on_host, sizeof(d->path_on_host), "%s", v->path);
        d->has_path = true;
        d->is_root_device = v->root;
        d->is_read_only = v->read_only;
        d->cache_type = v->writeback ? API_CACHE_WRITEBACK : API_CACHE_UNSAFE;
        d->io_engine = v->async ? API_IO_ASYNC : API_IO_SYNC;
        d->rate_limiter.bandwidth = (struct api_bucket){v->bw.size != 0, v->bw.size,
                                                        v->bw.one_time_burst, v->bw.refill_time_ms};
        d->rate_limiter.ops = (struct api_bucket){v->ops.size != 0, v->ops.size,
                                                  v->ops.one_time_burst, v->ops.refill_time_ms};
        ret = ctl_handle(&r->ctl, &req, &resp);
    }
    if (!ret && cli->console_path[0]) {
        api_response_free(&resp);
        memset(&req, 0, sizeof(req));
        req.kind = API_REQ_SERIAL;
        req.u.serial.has_path = true;
        snprintf(req.u.serial.serial_out_path, PATH_MAX, "%s", cli->console_path);
        ret = ctl_handle(&r->ctl, &req, &resp);
    }
    if (ret) {
        fault_text(&resp, ret, err, sizeof(err));
        log_err("%s", err);
        api_response_free(&resp);
        return run_finish(r, EXIT_BAD_CONFIG);
    }
    api_response_free(&resp);
    ret = start_instance(r, err, sizeof(err));
    if (ret) {
        log_err("%s", err);
        return run_finish(r, r->vm.config_error ? EXIT_BAD_CONFIG : EXIT_GENERIC);
    }
    return run_finish(r, run_loop(r));
}
