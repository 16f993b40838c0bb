/* The VMM process: everything one ember owns (the only instance lives in main.c), its event
 * loop, and the operations the front ends turn requests into. The VMM thread runs the loop
 * before and after InstanceStart; the metrics timer and the stopping signals are fds on it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "../virtio/virtio.h"
#include "app.h"
#include "loop.h"
#include "../snapshot/snapshot.h"

#define METRICS_PERIOD_S 60
#define SNAP_FLUSH_MS    100 /* what a snapshot waits for a slow console reader, at most */

static struct app *fatal_app; /* what the fatal-signal handler flushes */

/* Async-signal-safe (the fatal-signal handler flushes too). */
static int flush_metrics(struct app *a)
{
    if (a->metrics_fd < 0)
        return 0;
    if (a->vm_built)
        metrics_from_vm_stats(&a->counters, &a->vm.stats);
    metrics_set(&a->counters, M_LOG_MISSED_LOG, log_missed());
    metrics_set(&a->counters, M_SECCOMP_THREADS, sc_filtered_threads());
    return metrics_flush(&a->counters, a->metrics_fd, a->emit_id ? a->id : NULL, a->props);
}

static void flush_last(void)
{
    if (fatal_app)
        flush_metrics(fatal_app);
}

static void on_metrics_timer(void *opaque, uint32_t events)
{
    struct app *a = opaque;
    uint64_t ticks;
    (void)events;
    if (read(a->timer_fd, &ticks, sizeof(ticks)) > 0)
        flush_metrics(a);
}

/* SIGTERM, SIGINT, SIGHUP, SIGQUIT: before InstanceStart the process leaves; after it the VM
 * stops cleanly and the process ends as the signal says. SIGUSR2 logs where the vCPUs are. */
static void on_signal(void *opaque, uint32_t events)
{
    struct app *a = opaque;
    struct signalfd_siginfo si;
    (void)events;

    if (read(a->sig_fd, &si, sizeof(si)) != sizeof(si))
        return;
    if (si.ssi_signo == SIGUSR2) { /* where the vCPUs are (vcpu_dump.c); the VM runs on */
        if (a->vm_built)
            vcpu_dump_all(&a->vm);
        else
            log_warn("SIGUSR2: no VM to show yet");
        return;
    }
    if (!a->vm_built) {
        log_info("received signal %u before the VM started: exiting", si.ssi_signo);
        a->quit_code = sig_stop_code(a->fc_mode, (int)si.ssi_signo, &a->raise_sig);
        a->quit = true;
        return;
    }
    log_info("received signal %u: stopping the VM", si.ssi_signo);
    a->vm.stop_signal = (int)si.ssi_signo;
    vm_request_stop(&a->vm, VM_STOP_SIGNAL);
}

int app_setup(struct app *a, const char *id, const struct timespec *t0)
{
    sigset_t term;

    memset(a, 0, sizeof(*a));
    a->metrics_fd = a->timer_fd = a->sig_fd = -1;
    /* before any filter: a reopening needs open() */
    log_std_fds(outfd_nonblocking(STDOUT_FILENO), outfd_nonblocking(STDERR_FILENO));
    a->id = id;
    a->vm.process_start = *t0;
    fatal_app = a;
    int ret = sig_setup(&a->counters, flush_last, &term);
    if (ret)
        return ret;
    sigaddset(&term, SIGUSR2); /* not a stop: the vCPUs' state in the log (on_signal) */
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    a->loop = loop_create();
    a->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    a->sig_fd = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK);
    if (!a->loop || a->timer_fd < 0 || a->sig_fd < 0)
        return -errno;
    struct itimerspec period = {{METRICS_PERIOD_S, 0}, {METRICS_PERIOD_S, 0}};
    timerfd_settime(a->timer_fd, 0, &period, NULL);
    ret = loop_add(a->loop, a->timer_fd, EPOLLIN, on_metrics_timer, a);
    return ret ? ret : loop_add(a->loop, a->sig_fd, EPOLLIN, on_signal, a);
}

int app_run(struct app *a)
{
    for (;;) {
        /* the VM and its vCPUs run: filtered before the next event, and before the end of a
         * VM that stopped while its InstanceStart was answered (a vCPU stops it at once) */
        if (a->vm_built)
            sc_enter(SC_ROLE_VMM);
        if (a->quit || (a->vm_built && vm_stopped(&a->vm)))
            break;
        int n = loop_wait(a->loop, -1);
        if (n < 0) {
            log_err("epoll_wait: %s", strerror(-n));
            if (!a->vm_built)
                return EXIT_GENERIC;
            vm_request_stop(&a->vm, VM_STOP_ERROR);
        }
    }
    if (a->quit)
        return a->quit_code;
    vm_halt(&a->vm); /* the console's last bytes are out: a log line now follows them */
    if (atomic_load(&a->vm.stop_reason) == VM_STOP_RESET && i8042_reset_pulsed(&a->vm.i8042))
        log_info("guest reset the CPU through the i8042: stopping the VM");
    if (atomic_load(&a->vm.stop_reason) == VM_STOP_SIGNAL)
        return sig_stop_code(a->fc_mode, a->vm.stop_signal, &a->raise_sig);
    return vm_exit_code(&a->vm);
}

int app_finish(struct app *a, int code)
{
    flush_metrics(a); /* at exit, as Firecracker (a no-op without a metrics sink) */
    if (a->vm_built)
        vm_destroy(&a->vm);
    a->vm_built = false;
    loop_destroy(a->loop);
    a->loop = NULL;
    int *fds[] = {&a->metrics_fd, &a->timer_fd, &a->sig_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        int fd = *fds[i];
        *fds[i] = -1; /* first: a fatal-signal flush must never see a closed (or reused) fd */
        if (fd >= 0)
            close(fd);
    }
    if (a->fc_mode && a->raise_sig)
        log_info("ember exiting on signal %d.", a->raise_sig);
    else if (a->fc_mode && code == EXIT_OK)
        log_info("ember exiting successfully. exit_code=0");
    else if (a->fc_mode)
        log_info("ember exiting with error. exit_code=%d", code);
    return code;
}

void app_startup_metrics(struct app *a, const struct api_args *args, const struct timespec *t0)
{
    struct timespec now, cpu;

    clock_gettime(CLOCK_MONOTONIC, &now);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    uint64_t wall_us = log_us_since(t0, CLOCK_MONOTONIC);
    if (args && args->has_start_time_us) { /* the jailer's CLOCK_MONOTONIC stamp before exec */
        uint64_t now_us = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
        wall_us = now_us > args->start_time_us ? now_us - args->start_time_us : 0;
    }
    uint64_t cpu_us = (uint64_t)cpu.tv_sec * 1000000 + (uint64_t)cpu.tv_nsec / 1000;
    if (args && args->has_parent_cpu_time_us)
        cpu_us += args->parent_cpu_time_us;
    metrics_set(&a->counters, M_STARTUP_US, wall_us);
    metrics_set(&a->counters, M_STARTUP_CPU_US, cpu_us);
}

int app_start_vm(struct app *a, const struct vm_config *cfg, char *err, size_t errlen)
{
    int ret = cfg_validate(cfg, err, errlen);
    if (ret)
        return ret;
    struct timespec start = a->vm.process_start;
    memset(&a->vm, 0, sizeof(a->vm));
    a->vm.process_start = start;
    ret = vm_create(&a->vm, cfg, a->loop, err, errlen);
    if (ret) {
        vm_destroy(&a->vm);
        return ret;
    }
    a->vm_built = true;
    if (!a->boot_timer)
        boot_timer_detach(&a->vm.mmio, &a->vm.boot_timer);
    flush_metrics(a);       /* Firecracker flushes once when the VM starts */
    vm_start(&a->vm, true); /* a failure stops the VM: the loop then ends the process */
    return 0;
}

int app_pause(struct app *a, bool pause)
{
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!pause) {
        vm_kvmclock_ctrl(&a->vm); /* the guest's watchdogs must not count the pause */
        snap_ws_resumed(&a->vm);
        virtio_resumed(a->vm.virtio);
    }
    for (unsigned i = 0; i < a->vm.nvcpus; i++)
        vcpu_request(&a->vm.vcpus[i], pause ? VCPU_CMD_PAUSE : VCPU_CMD_RUN);
    for (unsigned i = 0; i < a->vm.nvcpus; i++)
        vcpu_wait_state(&a->vm.vcpus[i], pause ? VCPU_PAUSED : VCPU_RUNNING);
    uint64_t us = log_us_since(&t0, CLOCK_MONOTONIC);
    metrics_set(&a->counters, pause ? M_LAT_VMM_PAUSE : M_LAT_VMM_RESUME, us);
    metrics_set(&a->counters, pause ? M_LAT_PAUSE : M_LAT_RESUME, us);
    log_info("%s the microVM.", pause ? "Paused" : "Resumed");
    return 0;
}

int app_snapshot_create(struct app *a, const char *snap_path, const char *mem_path, bool diff,
                        char *err, size_t errlen)
{
    uint64_t t0 = clock_ns();
    /* The UART's output ring is not part of the snapshot: what the guest wrote before the
     * pause is this VM's console output, so it goes out first (a VMM is often ended right
     * after its snapshot). A reader too slow for that keeps the rest queued here. */
    if (serial_drain(&a->vm.serial, SNAP_FLUSH_MS))
        log_warn("Serial output of the guest is still queued for a slow console reader; the "
                 "snapshot does not carry it.");
    int ret = vm_snapshot_create(&a->vm, snap_path, mem_path, diff, err, errlen);
    if (ret)
        return ret;
    metrics_set(&a->counters, diff ? M_LAT_VMM_CREATE_DIFF : M_LAT_VMM_CREATE_FULL,
                (clock_ns() - t0) / 1000);
    log_info("Created a %s snapshot: %s (memory %s).", diff ? "Diff" : "Full", snap_path, mem_path);
    return 0;
}

int app_snapshot_load(struct app *a, const struct vm_config *cfg, const struct vm_snapshot *s,
                      const struct snap_mem_backend *mem, bool resume, char *err, size_t errlen)
{
    uint64_t t0 = clock_ns();
    struct timespec start = a->vm.process_start;

    memset(&a->vm, 0, sizeof(a->vm));
    a->vm.process_start = start;
    int ret = vm_snapshot_restore(&a->vm, cfg, a->loop, s, mem, err, errlen);
    if (ret) {
        vm_destroy(&a->vm);
        memset(&a->vm, 0, sizeof(a->vm)); /* as before: another load may follow */
        a->vm.process_start = start;
        return ret;
    }
    a->vm_built = true;
    if (!a->boot_timer)
        boot_timer_detach(&a->vm.mmio, &a->vm.boot_timer);
    vm_start(&a->vm, false);
    metrics_set(&a->counters, M_LAT_VMM_LOAD, (clock_ns() - t0) / 1000);
    log_info("Loaded the snapshot (%u vCPUs, %llu MiB %s %s).", a->vm.nvcpus,
             (unsigned long long)cfg->mem_mib, mem->uffd ? "served by the handler at" : "from",
             mem->path);
    return resume ? app_pause(a, false) : 0;
}

int app_ctrl_alt_del(struct app *a, char *err, size_t errlen)
{
    int ret = i8042_ctrl_alt_del(&a->vm.i8042);
    return ret ? errf(err, errlen, ret, "Failed to send Ctrl-Alt-Del: the i8042 buffer is full.")
               : 0;
}

int app_write_working_set(struct app *a, char *err, size_t errlen)
{
    return snap_ws_write_now(&a->vm, err, errlen);
}

int app_flush_metrics(struct app *a, char *err, size_t errlen)
{
    if (a->metrics_fd < 0)
        return errf(err, errlen, -EINVAL, "Metrics are not configured.");
    int ret = flush_metrics(a);
    return ret ? errf(err, errlen, ret, "Failed to write metrics: %s", strerror(-ret)) : 0;
}

/* Read-write and non-blocking, so a FIFO nobody reads yet opens (O_WRONLY would fail with
 * ENXIO) and a full one drops lines (counted in logger.missed_log_count /
 * missed_metrics_count) instead of stopping the VMM. A missing path is created, but never
 * through a dangling symlink (O_EXCL); the sink must be a regular file, a FIFO or /dev/null. */
int app_open_sink(const char *what, const char *path, char *err, size_t errlen)
{
    const int flags = O_RDWR | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    struct stat st;
    int fd = open(path, flags);

    if (fd < 0 && errno == ENOENT) {
        fd = open(path, flags | O_CREAT | O_EXCL, 0600);
        if (fd < 0 && errno == EEXIST) /* a symlink to nothing (or a racing creator) */
            return errf(err, errlen, -EEXIST,
                        "Failed to open the %s file %.256s: a dangling symlink (no file is "
                        "created through one)",
                        what, path);
    }
    if (fd < 0) {
        int rc = -errno; /* before errf/strerror, which may change errno */
        return errf(err, errlen, rc, "Failed to open the %s file %.256s: %s", what, path,
                    strerror(-rc));
    }
    if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode) ||
                                 (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)))) {
        close(fd);
        return errf(err, errlen, -EINVAL, "The %s file %.256s is not a regular file or a FIFO.",
                    what, path);
    }
    return fd;
}

int app_set_metrics(struct app *a, const char *path, bool emit_id, const char *props, char *err,
                    size_t errlen)
{
    if (a->metrics_fd >= 0)
        return errf(err, errlen, -EINVAL, "Reinitialization of metrics not allowed.");
    if (props && strlen(props) > metrics_props_max())
        return errf(err, errlen, -EINVAL,
                    "The metrics properties are %zu bytes of JSON; at most %zu fit a metrics "
                    "line (one atomic write to a FIFO).",
                    strlen(props), metrics_props_max());
    int fd = app_open_sink("metrics", path, err, errlen);
    if (fd < 0)
        return fd;
    a->metrics_fd = fd;
    a->emit_id = emit_id;
    snprintf(a->props, sizeof(a->props), "%s", props ? props : "");
    return 0;
}

int app_update_net(struct app *a, const struct vm_net *net, const struct vm_bucket *rx_bw,
                   const struct vm_bucket *rx_ops, const struct vm_bucket *tx_bw,
                   const struct vm_bucket *tx_ops, char *err, size_t errlen)
{
    int ret = virtio_net_update(a->vm.virtio, net, rx_bw, rx_ops, tx_bw, tx_ops, err, errlen);
    if (ret && !err[0])
        errf(err, errlen, ret, "Failed to update the network interface %s: %s", net->id,
             strerror(-ret));
    if (ret)
        return ret == -ENOENT ? ret : -EINVAL;
    log_info("Updated the network interface %s.", net->id);
    return 0;
}

int app_update_drive(struct app *a, const struct vm_drive *drive, const char *path,
                     const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                     size_t errlen)
{
    int ret = virtio_drive_update(a->vm.virtio, drive, path, bw, ops, err, errlen);
    if (ret && !err[0])
        errf(err, errlen, ret, "Failed to update the block device %s: %s", drive->id,
             strerror(-ret));
    if (ret)
        return ret == -ENOENT ? ret : -EINVAL;
    log_info("Updated the block device %s.", drive->id);
    return 0;
}
