/* The controller: typed requests applied to the one configuration object, with Firecracker's
 * pre-/post-boot rules. Host resources named by a request are opened and checked here, so an
 * error surfaces on the call that caused it. Runs on the VMM thread only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../seccomp/seccomp.h"
#include "api.h"

#define NOT_BEFORE "The requested operation is not supported before starting the microVM."
#define NOT_AFTER  "The requested operation is not supported after starting the microVM."

void ctl_init(struct api_ctl *c, const char *id, const char *version, const struct api_vmm_ops *ops,
              void *opaque)
{
    memset(c, 0, sizeof(*c));
    c->instance_id = id;
    c->version = version;
    c->ops = ops;
    c->opaque = opaque;
    cfg_defaults(&c->cfg);
}

void ctl_free(struct api_ctl *c)
{
    cfg_free(&c->cfg);
}

/* Opens path the way the VMM will and checks it is a regular file (or a block device). */
static int check_file(const char *what, const char *path, bool writable, char *err, size_t errlen)
{
    struct stat st;
    int fd = sc_open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "The %s file %.256s cannot be opened: %s (os error %d)", what, path,
                 strerror(e), e);
        return -e;
    }
    int ret = fstat(fd, &st) ? -errno : 0;
    close(fd);
    if (!ret && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        snprintf(err, errlen, "The %s file is not a regular file or block device: %.256s", what,
                 path);
        return -EINVAL;
    }
    if (ret)
        snprintf(err, errlen, "The %s file cannot be examined: %s", what, strerror(-ret));
    return ret;
}

static int set_machine(struct api_ctl *c, const struct api_machine *in, char *err, size_t errlen)
{
    struct vm_config *cfg = &c->cfg;
    uint32_t vcpus = in->has_vcpus ? in->vcpu_count : cfg->vcpus;
    uint64_t mem = in->has_mem ? in->mem_size_mib : cfg->mem_mib;
    bool smt = in->has_smt ? in->smt : cfg->smt;
    int ret = cfg_check_machine(vcpus, mem, smt, err, errlen);

    if (ret)
        return ret;
    if (in->has_huge && in->huge_pages != API_HUGE_NONE)
        return errf(err, errlen, -EINVAL, "Huge pages are not supported by this build of ember.");
    cfg->vcpus = vcpus;
    cfg->mem_mib = mem;
    cfg->smt = smt;
    c->boot_path = true;
    if (in->has_dirty)
        cfg->track_dirty_pages = in->track_dirty_pages;
    if (in->has_huge)
        cfg->huge_pages = VM_HUGE_NONE;
    return 0;
}

static int set_boot_source(struct api_ctl *c, const struct api_boot_source *b, char *err,
                           size_t errlen)
{
    struct vm_config *cfg = &c->cfg;
    int ret = check_file("kernel", b->kernel_image_path, false, err, errlen);

    if (!ret && b->initrd_path[0])
        ret = check_file("initrd", b->initrd_path, false, err, errlen);
    if (!ret)
        ret = cfg_set_path(&cfg->kernel_path, b->kernel_image_path, "kernel", err, errlen);
    if (!ret)
        ret = cfg_set_path(&cfg->initrd_path, b->initrd_path, "initrd", err, errlen);
    if (ret)
        return ret;
    if (b->has_boot_args) {
        ret = cfg_set_cmdline(cfg, b->boot_args, err, errlen);
        if (ret)
            return ret;
    } else { /* PUT replaces the whole boot source: back to the default command line */
        snprintf(cfg->cmdline, sizeof(cfg->cmdline), "%s", DEFAULT_CMDLINE);
        cfg->cmdline_set = false;
    }
    c->boot_set = c->boot_path = true;
    return 0;
}

/* A bucket as the API gives it; zero size or refill time disables it (Firecracker). */
static struct vm_bucket bucket(const struct api_bucket *in)
{
    bool on = in->set && in->size && in->refill_time;
    return (struct vm_bucket){on ? in->size : 0, on ? in->one_time_burst : 0,
                              on ? in->refill_time : 0};
}

static int set_drive(struct api_ctl *c, const struct api_drive *in, char *err, size_t errlen)
{
    struct vm_drive d = {
            .root = in->is_root_device,
            .read_only = in->is_read_only,
            .writeback = in->cache_type == API_CACHE_WRITEBACK,
            .async = in->io_engine == API_IO_ASYNC,
            .bw = bucket(&in->rate_limiter.bandwidth),
            .ops = bucket(&in->rate_limiter.ops),
    };
    snprintf(d.id, sizeof(d.id), "%s", in->drive_id);
    snprintf(d.partuuid, sizeof(d.partuuid), "%s", in->partuuid);
    int ret = check_file("block device", in->path_on_host, !in->is_read_only, err, errlen);
    if (!ret)
        ret = cfg_set_path(&d.path, in->path_on_host, "block device", err, errlen);
    if (!ret)
        ret = cfg_put_drive(&c->cfg, &d, err, errlen);
    cfg_drive_free(&d);
    c->boot_path |= ret == 0;
    return ret;
}

/* PATCH /drives/{id} after boot: the new file is checked as PUT checks it, the VMM swaps it
 * or the rate limiter, and the configuration follows (GET /vm/config). */
static int patch_drive(struct api_ctl *c, const struct api_drive *d, char *err, size_t errlen)
{
    if (!d->has_path && !d->has_rate_limiter)
        return errf(err, errlen, -EINVAL,
                    "Please specify at least one property to patch: path_on_host, "
                    "rate_limiter.");
    struct vm_drive *cur = cfg_drive(&c->cfg, d->drive_id);
    if (!cur)
        return errf(err, errlen, -ENOENT, "Invalid block device ID: no drive `%s` was configured.",
                    d->drive_id);
    struct vm_bucket bw = bucket(&d->rate_limiter.bandwidth), ops = bucket(&d->rate_limiter.ops);
    const char *path = d->has_path ? d->path_on_host : NULL;
    int ret = path ? check_file("block device", path, !cur->read_only, err, errlen) : 0;
    if (!ret) {
        ret = c->ops->update_drive(c->opaque, cur, path, d->rate_limiter.bandwidth.set ? &bw : NULL,
                                   d->rate_limiter.ops.set ? &ops : NULL, err, errlen);
        metrics_add(c->counters, ret ? M_BLOCK_UPDATE_FAILS : M_BLOCK_UPDATE, 1);
    }
    if (!ret && path)
        ret = cfg_set_path(&cur->path, path, "block device", err, errlen);
    if (ret)
        return ret;
    if (d->rate_limiter.bandwidth.set)
        cur->bw = bw;
    if (d->rate_limiter.ops.set)
        cur->ops = ops;
    return 0;
}

static int set_net(struct api_ctl *c, const struct api_net *in, char *err, size_t errlen)
{
    struct vm_net n = {
            .has_mac = in->has_mac,
            .rx_bw = bucket(&in->rx_rate_limiter.bandwidth),
            .rx_ops = bucket(&in->rx_rate_limiter.ops),
            .tx_bw = bucket(&in->tx_rate_limiter.bandwidth),
            .tx_ops = bucket(&in->tx_rate_limiter.ops),
    };
    snprintf(n.id, sizeof(n.id), "%s", in->iface_id);
    if (strlen(in->host_dev_name) >= sizeof(n.host_dev_name))
        return errf(err, errlen, -EINVAL,
                    "Invalid host device name '%.32s': at most %d characters (IFNAMSIZ).",
                    in->host_dev_name, VM_IFNAME_MAX);
    snprintf(n.host_dev_name, sizeof(n.host_dev_name), "%s", in->host_dev_name);
    memcpy(n.mac, in->guest_mac, sizeof(n.mac));
    /* The configuration's checks first (a copy: nothing changes), then the TAP itself. */
    struct vm_config *probe = malloc(sizeof(*probe));
    if (!probe)
        return errf(err, errlen, -ENOMEM, "out of memory");
    memcpy(probe, &c->cfg, sizeof(*probe));
    int ret = cfg_put_net(probe, &n, err, errlen);
    free(probe); /* a shallow copy: its strings are c->cfg's */
    if (!ret && c->ops->check_net)
        ret = c->ops->check_net(c->opaque, &n, err, errlen);
    if (!ret)
        ret = cfg_put_net(&c->cfg, &n, err, errlen);
    c->boot_path |= ret == 0;
    return ret;
}

/* PATCH /network-interfaces/{id} after boot: the device takes the new buckets, then the
 * configuration follows (GET /vm/config). */
static int patch_net(struct api_ctl *c, const struct api_net *in, char *err, size_t errlen)
{
    const struct api_rate_limiter *rx = &in->rx_rate_limiter, *tx = &in->tx_rate_limiter;
    struct vm_net *cur = cfg_net(&c->cfg, in->iface_id);
    if (!cur)
        return errf(err, errlen, -ENOENT,
                    "Invalid network interface ID: no interface `%s` was configured.",
                    in->iface_id);
    struct vm_bucket rx_bw = bucket(&rx->bandwidth), rx_ops = bucket(&rx->ops);
    struct vm_bucket tx_bw = bucket(&tx->bandwidth), tx_ops = bucket(&tx->ops);
    int ret = c->ops->update_net(c->opaque, cur, rx->bandwidth.set ? &rx_bw : NULL,
                                 rx->ops.set ? &rx_ops : NULL, tx->bandwidth.set ? &tx_bw : NULL,
                                 tx->ops.set ? &tx_ops : NULL, err, errlen);
    if (ret)
        return ret;
    if (rx->bandwidth.set)
        cur->rx_bw = rx_bw;
    if (rx->ops.set)
        cur->rx_ops = rx_ops;
    if (tx->bandwidth.set)
        cur->tx_bw = tx_bw;
    if (tx->ops.set)
        cur->tx_ops = tx_ops;
    return 0;
}

static int snapshot_create(struct api_ctl *c, const struct api_snap_create *r, char *err,
                           size_t errlen)
{
    if (c->state == API_VM_NOT_STARTED)
        return errf(err, errlen, -EINVAL, NOT_BEFORE);
    if (c->state != API_VM_PAUSED)
        return errf(err, errlen, -EINVAL,
                    "Cannot create a snapshot of a running microVM: pause it first (PATCH /vm "
                    "{\"state\": \"Paused\"}).");
    uint64_t t0 = clock_ns();
    int ret = c->ops->snapshot_create(c->opaque, r, err, errlen);
    if (!ret)
        metrics_set(c->counters, r->diff ? M_LAT_CREATE_DIFF : M_LAT_CREATE_FULL,
                    (clock_ns() - t0) / 1000);
    return ret;
}

/* The configuration back to what it was before a failed load: only logger, metrics and the
 * serial output may have been set (anything else refuses the load). */
static void unload(struct vm_config *cfg)
{
    char *console = cfg->console_path;
    cfg->console_path = NULL;
    cfg_free(cfg);
    cfg_defaults(cfg);
    cfg->console_path = console;
}

static int snapshot_load(struct api_ctl *c, const struct api_snap_load *r, char *err, size_t errlen)
{
    if (c->state != API_VM_NOT_STARTED)
        return errf(err, errlen, -EINVAL, NOT_AFTER);
    if (c->boot_path)
        return errf(err, errlen, -EINVAL,
                    "Loading a microVM snapshot not allowed after configuring boot-specific "
                    "resources.");
    if (r->clock_realtime)
        return errf(err, errlen, -EINVAL,
                    "clock_realtime is not supported by this build of ember yet.");
    uint64_t t0 = clock_ns();
    int ret = c->ops->snapshot_load(c->opaque, &c->cfg, r, err, errlen);
    if (ret) {
        unload(&c->cfg);
        return ret;
    }
    metrics_set(c->counters, M_LAT_LOAD, (clock_ns() - t0) / 1000);
    c->state = r->resume_vm ? API_VM_RUNNING : API_VM_PAUSED;
    c->boot_set = c->boot_path = true;
    return 0;
}

static int set_vsock(struct api_ctl *c, const struct api_vsock *in, char *err, size_t errlen)
{
    struct vm_vsock vs = {.enabled = true, .guest_cid = in->guest_cid};
    if (strlen(in->uds_path) > VM_UDS_MAX)
        return errf(err, errlen, -EINVAL,
                    "Invalid uds_path: at most %d bytes (a Unix socket path).", VM_UDS_MAX);
    snprintf(vs.uds_path, sizeof(vs.uds_path), "%s", in->uds_path);
    /* The configuration's checks first (a copy: nothing changes), then the bind itself. */
    struct vm_config *probe = malloc(sizeof(*probe));
    if (!probe)
        return errf(err, errlen, -ENOMEM, "out of memory");
    memcpy(probe, &c->cfg, sizeof(*probe));
    int ret = cfg_put_vsock(probe, &vs, err, errlen);
    free(probe); /* a shallow copy: its strings are c->cfg's */
    if (!ret && c->ops->check_vsock)
        ret = c->ops->check_vsock(c->opaque, &vs, err, errlen);
    return ret ? ret : cfg_put_vsock(&c->cfg, &vs, err, errlen);
}

static int machine_json(const struct vm_config *cfg, struct api_response *resp)
{
    static const char *const huge[] = {"None", "2M", "Transparent"};
    return api_response_json(resp, 200, "{s:I,s:I,s:b,s:b,s:s}", "vcpu_count",
                             (json_int_t)cfg->vcpus, "mem_size_mib", (json_int_t)cfg->mem_mib,
                             "smt", cfg->smt, "track_dirty_pages", cfg->track_dirty_pages,
                             "huge_pages", huge[cfg->huge_pages]);
}

static int action(struct api_ctl *c, enum api_action a, char *err, size_t errlen)
{
    int ret;

    switch (a) {
    case API_ACTION_INSTANCE_START:
        if (c->state != API_VM_NOT_STARTED)
            return errf(err, errlen, -EINVAL, NOT_AFTER);
        if (!c->boot_set)
            return errf(err, errlen, -EINVAL, "Cannot start microvm without kernel configuration.");
        ret = c->ops->start(c->opaque, &c->cfg, err, errlen);
        if (!ret)
            c->state = API_VM_RUNNING;
        return ret;
    case API_ACTION_CTRL_ALT_DEL:
        if (c->state == API_VM_NOT_STARTED)
            return errf(err, errlen, -EINVAL, NOT_BEFORE);
        return c->ops->ctrl_alt_del(c->opaque, err, errlen);
    case API_ACTION_FLUSH_METRICS:
        if (c->state == API_VM_NOT_STARTED)
            return errf(err, errlen, -EINVAL, NOT_BEFORE);
        return c->ops->flush_metrics(c->opaque, err, errlen);
    case API_ACTION_WRITE_WORKING_SET:
        if (c->state == API_VM_NOT_STARTED)
            return errf(err, errlen, -EINVAL, NOT_BEFORE);
        if (!c->ops->write_working_set)
            return errf(err, errlen, -EINVAL, "No working set is being recorded.");
        return c->ops->write_working_set(c->opaque, err, errlen);
    }
    return errf(err, errlen, -EINVAL, "Unknown action.");
}

/* PUT /serial: what can be known without opening the path (opening a FIFO and closing it
 * again would hand its reader an EOF) is checked now; InstanceStart opens it without blocking
 * and refuses a FIFO with no reader (console_open_out). */
static int set_serial(struct api_ctl *c, const struct api_serial *in, char *err, size_t errlen)
{
    struct stat st;

    if (in->has_path && in->serial_out_path[0] && lstat(in->serial_out_path, &st) == 0) {
        const char *why = S_ISLNK(st.st_mode)   ? "it is a symbolic link (refused)"
                          : S_ISDIR(st.st_mode) ? "it is a directory"
                          : !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)
                                  ? "not a regular file, a FIFO, /dev/null or a terminal"
                                  : NULL;
        if (why)
            return errf(err, errlen, -EINVAL, "The serial output %.256s cannot be used: %s",
                        in->serial_out_path, why);
    }
    int ret = cfg_set_path(&c->cfg.console_path, in->has_path ? in->serial_out_path : NULL,
                           "serial output", err, errlen);
    if (!ret)
        c->cfg.serial_rate = bucket(&in->rate_limiter);
    return ret;
}

/* Requests that answer with data, or that only change the configuration. */
static int dispatch(struct api_ctl *c, const struct api_request *r, struct api_response *resp,
                    char *err, size_t errlen)
{
    static const char *const states[] = {"Not started", "Running", "Paused"};
    bool pre = c->state == API_VM_NOT_STARTED;
    int ret;

    switch (r->kind) {
    case API_REQ_INSTANCE_INFO:
        return api_response_json(resp, 200, "{s:s,s:s,s:s,s:s}", "id", c->instance_id, "state",
                                 states[c->state], "vmm_version", c->version, "app_name",
                                 "Firecracker");
    case API_REQ_VERSION:
        return api_response_json(resp, 200, "{s:s}", "firecracker_version", c->version);
    case API_REQ_VM_CONFIG:
        resp->status = 200;
        resp->body = ctl_vm_config_json(c);
        return resp->body ? 0 : -ENOMEM;
    case API_REQ_GET_MACHINE:
        return machine_json(&c->cfg, resp);
    case API_REQ_PUT_MACHINE:
    case API_REQ_PATCH_MACHINE:
        if (!pre)
            return errf(err, errlen, -EINVAL, NOT_AFTER);
        if (r->kind == API_REQ_PUT_MACHINE) { /* PUT resets what it leaves out */
            struct api_machine full = r->u.machine;
            full.has_smt = full.has_dirty = full.has_huge = true;
            ret = set_machine(c, &full, err, errlen);
        } else {
            ret = set_machine(c, &r->u.machine, err, errlen);
        }
        break;
    case API_REQ_BOOT_SOURCE:
        ret = pre ? set_boot_source(c, &r->u.boot, err, errlen)
                  : errf(err, errlen, -EINVAL, NOT_AFTER);
        break;
    case API_REQ_PUT_DRIVE:
        ret = pre ? set_drive(c, &r->u.drive, err, errlen) : errf(err, errlen, -EINVAL, NOT_AFTER);
        break;
    case API_REQ_PATCH_DRIVE:
        ret = pre ? errf(err, errlen, -EINVAL, NOT_BEFORE)
                  : patch_drive(c, &r->u.drive, err, errlen);
        break;
    case API_REQ_PUT_NET:
        ret = pre ? set_net(c, &r->u.net, err, errlen) : errf(err, errlen, -EINVAL, NOT_AFTER);
        break;
    case API_REQ_PATCH_NET:
        ret = pre ? errf(err, errlen, -EINVAL, NOT_BEFORE) : patch_net(c, &r->u.net, err, errlen);
        break;
    case API_REQ_PUT_VSOCK:
        ret = pre ? set_vsock(c, &r->u.vsock, err, errlen) : errf(err, errlen, -EINVAL, NOT_AFTER);
        break;
    case API_REQ_ACTION:
        ret = action(c, r->u.action, err, errlen);
        break;
    case API_REQ_PATCH_VM:
        if (pre)
            return errf(err, errlen, -EINVAL, NOT_BEFORE);
        ret = c->ops->pause(c->opaque, r->u.pause, err, errlen);
        if (!ret)
            c->state = r->u.pause ? API_VM_PAUSED : API_VM_RUNNING;
        break;
    case API_REQ_LOGGER:
        if (!pre)
            return errf(err, errlen, -EINVAL, NOT_AFTER);
        ret = c->ops->logger(c->opaque, &r->u.logger, err, errlen);
        if (!ret)
            c->logger = r->u.logger, c->logger_set = true;
        break;
    case API_REQ_METRICS:
        if (!pre)
            return errf(err, errlen, -EINVAL, NOT_AFTER);
        ret = c->ops->metrics(c->opaque, &r->u.metrics, err, errlen);
        if (!ret)
            c->metrics = r->u.metrics, c->metrics_set = true;
        break;
    case API_REQ_SNAP_CREATE:
        ret = snapshot_create(c, &r->u.snap_create, err, errlen);
        break;
    case API_REQ_SNAP_LOAD:
        ret = snapshot_load(c, &r->u.snap_load, err, errlen);
        break;
    case API_REQ_SERIAL:
        if (!pre)
            return errf(err, errlen, -EINVAL, NOT_AFTER);
        ret = set_serial(c, &r->u.serial, err, errlen);
        break;
    default:
        return errf(err, errlen, -EINVAL, "Unknown request.");
    }
    if (!ret)
        resp->status = 204;
    return ret;
}

int ctl_handle(struct api_ctl *c, const struct api_request *req, struct api_response *resp)
{
    char err[API_ERR_MAX] = "";

    resp->status = 500;
    resp->body = NULL;
    int ret = dispatch(c, req, resp, err, sizeof(err));
    metrics_count_request(c->counters, req, ret != 0);
    if (ret) {
        api_response_free(resp);
        if (!err[0])
            snprintf(err, sizeof(err), "%s", strerror(-ret));
        api_response_fault(resp, err);
    }
    return ret;
}
