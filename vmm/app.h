/* The VMM process (app.c): the one event loop, the VM, the metrics sink, the stopping signals,
 * and the VMM operations the front ends ask for (vmm/main.c: `ember run` and Firecracker's
 * command line; api-socket/vmm_ops.c: the HTTP API's requests). */
#ifndef EMBER_APP_H
#define EMBER_APP_H

#include <stdbool.h>
#include <time.h>

#include "../api-socket/api.h"
#include "vmm.h"

struct app {
    struct loop *loop;
    struct vm vm;
    bool vm_built;
    struct api_metrics_counters counters;
    int metrics_fd, timer_fd, sig_fd;
    const char *id;
    bool emit_id;
    char props[1024];
    bool fc_mode;    /* the firecracker front end: its exit lines and signal ends */
    bool boot_timer; /* keep the boot-timer device (Firecracker: only with --boot-timer) */
    int raise_sig;   /* SIGTERM/SIGINT: after the clean stop, die by it (as Firecracker) */
    bool quit;       /* a stopping signal before the VM started: leave with quit_code */
    int quit_code;
};

/* app_setup(a, id, t0): installs the signal handlers (the fatal ones flush a's metrics), makes
 * the event loop with the metrics timer and the stopping signals on it. Returns 0 or -errno. */
int app_setup(struct app *a, const char *id, const struct timespec *t0);
/* app_run(a): the event loop until the VM stops (or, before InstanceStart, a stopping signal).
 * Returns the exit code. */
int app_run(struct app *a);
/* app_finish(a, code): flushes the metrics, tears everything down, logs the exit line.
 * Returns code. */
int app_finish(struct app *a, int code);
/* app_startup_metrics(a, args): api_server.startup_time_us and _cpu_us (args may be NULL). */
void app_startup_metrics(struct app *a, const struct api_args *args, const struct timespec *t0);

/* The VMM operations; each Returns 0 or -errno with a reason in err. */
/* app_start_vm(a, cfg, err, errlen): builds the VM of cfg (a keeps the pointer) and runs it. */
int app_start_vm(struct app *a, const struct vm_config *cfg, char *err, size_t errlen);
/* app_pause(a, pause): pauses or resumes every vCPU and waits until they are. */
int app_pause(struct app *a, bool pause);
/* app_snapshot_create(a, snap_path, mem_path, diff, err, errlen): a Full (or Diff) snapshot of
 * the paused VM. */
int app_snapshot_create(struct app *a, const char *snap_path, const char *mem_path, bool diff,
                        char *err, size_t errlen);
struct vm_snapshot;
/* app_snapshot_load(a, cfg, s, mem, resume, err, errlen): builds the VM from snapshot s
 * (cfg: what vm_snapshot_open made of it; a keeps the pointer), paused unless resume. On
 * failure the process is as before (no VM). */
struct snap_mem_backend;
int app_snapshot_load(struct app *a, const struct vm_config *cfg, const struct vm_snapshot *s,
                      const struct snap_mem_backend *mem, bool resume, char *err, size_t errlen);
/* app_ctrl_alt_del(a, err, errlen): the guest's keyboard gets Ctrl-Alt-Del. */
int app_ctrl_alt_del(struct app *a, char *err, size_t errlen);
/* app_write_working_set(a, err, errlen): PUT /actions WriteWorkingSet: the recording
 * started by the load's record_working_set ends now and its file is written. */
int app_write_working_set(struct app *a, char *err, size_t errlen);
/* app_flush_metrics(a, err, errlen): writes one metrics line now. */
int app_flush_metrics(struct app *a, char *err, size_t errlen);
/* app_set_metrics(a, path, emit_id, props, err, errlen): the metrics sink (once). */
int app_set_metrics(struct app *a, const char *path, bool emit_id, const char *props, char *err,
                    size_t errlen);
/* app_open_sink(what, path, err, errlen): opens a log or metrics file as Firecracker does.
 * Returns the fd, or -errno with a reason in err. */
int app_open_sink(const char *what, const char *path, char *err, size_t errlen);
/* app_update_net(a, net, rx_bw, rx_ops, tx_bw, tx_ops, err, errlen): PATCH
 * /network-interfaces on the running VM (NULL buckets: unchanged). Returns 0 or -errno. */
int app_update_net(struct app *a, const struct vm_net *net, const struct vm_bucket *rx_bw,
                   const struct vm_bucket *rx_ops, const struct vm_bucket *tx_bw,
                   const struct vm_bucket *tx_ops, char *err, size_t errlen);
/* app_update_drive(a, drive, path, bw, ops, err, errlen): PATCH /drives on the running VM. */
int app_update_drive(struct app *a, const struct vm_drive *drive, const char *path,
                     const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                     size_t errlen);
/* cmd_exec(argc, argv): `ember exec` (exec.c): a command in the guest through its agent.
 * Returns the command's exit code, 124 (timeout) or 125 (ember exec failed). */
int cmd_exec(int argc, char **argv);

#endif
