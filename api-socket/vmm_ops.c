/* The bridge from the API controller to the VMM: each request the controller accepts becomes
 * one VMM operation (vmm/app.c). The opaque pointer is the struct app. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../virtio/virtio.h"
#include "../vmm/app.h"
#include "../snapshot/snapshot.h"
#include "api.h"

enum log_level api_to_vmm_level(enum api_log_level l)
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

void api_server_log(enum api_log_level level, const char *file, int line, const char *fmt, ...)
{
    char text[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_at(api_to_vmm_level(level), file, line, "%s", text);
}

static int op_start(void *opaque, const struct vm_config *cfg, char *err, size_t errlen)
{
    return app_start_vm(opaque, cfg, err, errlen);
}

static int op_pause(void *opaque, bool pause, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    return app_pause(opaque, pause);
}

static int op_ctrl_alt_del(void *opaque, char *err, size_t errlen)
{
    return app_ctrl_alt_del(opaque, err, errlen);
}

static int op_flush(void *opaque, char *err, size_t errlen)
{
    return app_flush_metrics(opaque, err, errlen);
}

static int op_write_working_set(void *opaque, char *err, size_t errlen)
{
    return app_write_working_set(opaque, err, errlen);
}

static int op_logger(void *opaque, const struct api_logger *l, char *err, size_t errlen)
{
    struct app *a = opaque;
    int fd = -1;

    if (l->has_path && (fd = app_open_sink("log", l->log_path, err, errlen)) < 0)
        return fd;
    log_configure(a->id, fd, l->has_level ? api_to_vmm_level(l->level) : LOG_INFO,
                  l->has_level && l->level == API_LOG_OFF, l->show_level, l->show_log_origin);
    return 0;
}

static int op_metrics(void *opaque, const struct api_metrics *m, char *err, size_t errlen)
{
    return app_set_metrics(opaque, m->metrics_path, m->emit_id, m->properties, err, errlen);
}

static int op_update_drive(void *opaque, const struct vm_drive *drive, const char *path,
                           const struct vm_bucket *bw, const struct vm_bucket *ops, char *err,
                           size_t errlen)
{
    return app_update_drive(opaque, drive, path, bw, ops, err, errlen);
}

static int op_check_net(void *opaque, const struct vm_net *net, char *err, size_t errlen)
{
    (void)opaque;
    return virtio_net_check(net, err, errlen);
}

static int op_check_vsock(void *opaque, const struct vm_vsock *vs, char *err, size_t errlen)
{
    (void)opaque;
    return virtio_vsock_check(vs, err, errlen);
}

static int op_update_net(void *opaque, const struct vm_net *net, const struct vm_bucket *rx_bw,
                         const struct vm_bucket *rx_ops, const struct vm_bucket *tx_bw,
                         const struct vm_bucket *tx_ops, char *err, size_t errlen)
{
    return app_update_net(opaque, net, rx_bw, rx_ops, tx_bw, tx_ops, err, errlen);
}

static int op_snapshot_create(void *opaque, const struct api_snap_create *c, char *err,
                              size_t errlen)
{
    return app_snapshot_create(opaque, c->snapshot_path, c->mem_file_path, c->diff, err, errlen);
}

/* network_overrides: each names an interface of the snapshot and gets a new TAP, checked as a
 * PUT /network-interfaces would check it. */
static int net_overrides(struct vm_config *cfg, const struct api_snap_load *l, char *err,
                         size_t errlen)
{
    for (unsigned i = 0; i < l->noverrides; i++) {
        const struct api_net_override *o = &l->overrides[i];
        struct vm_net *cur = cfg_net(cfg, o->iface_id);
        if (!cur)
            return errf(err, errlen, -EINVAL,
                        "network_overrides: the snapshot has no network interface `%s`.",
                        o->iface_id);
        struct vm_net n = *cur;
        snprintf(n.host_dev_name, sizeof(n.host_dev_name), "%s", o->host_dev_name);
        int ret = cfg_put_net(cfg, &n, err, errlen);
        if (ret)
            return ret;
    }
    return 0;
}

/* vsock_override: the snapshot's vsock device listens on a new uds_path (Firecracker 1.13+),
 * checked as a PUT /vsock would check it; bound when the device is built. */
static int vsock_override(struct vm_config *cfg, const struct api_snap_load *l, char *err,
                          size_t errlen)
{
    if (!l->has_vsock_override)
        return 0;
    if (!cfg->vsock.enabled)
        return errf(err, errlen, -EINVAL, "vsock_override: the snapshot has no vsock device.");
    struct vm_vsock vs = cfg->vsock;
    if (strlen(l->vsock_uds_path) > VM_UDS_MAX)
        return errf(err, errlen, -EINVAL,
                    "vsock_override: Invalid uds_path: at most %d bytes (a Unix socket path).",
                    VM_UDS_MAX);
    snprintf(vs.uds_path, sizeof(vs.uds_path), "%s", l->vsock_uds_path);
    return cfg_put_vsock(cfg, &vs, err, errlen);
}

static int op_snapshot_load(void *opaque, struct vm_config *cfg, const struct api_snap_load *l,
                            char *err, size_t errlen)
{
    struct vm_snapshot *s = vm_snapshot_open(l->snapshot_path, cfg, err, errlen);
    if (!s)
        return -EINVAL;
    cfg->track_dirty_pages = l->track_dirty_pages;
    int ret = net_overrides(cfg, l, err, errlen);
    if (!ret)
        ret = vsock_override(cfg, l, err, errlen);
    if (!ret) {
        const char *layers[API_LAYERS_MAX];
        for (unsigned i = 0; i < l->nlayers; i++)
            layers[i] = l->layers[i];
        struct snap_mem_backend mem = {.path = l->mem_path,
                                       .uffd = l->uffd,
                                       .layers = layers,
                                       .nlayers = l->nlayers,
                                       .ws_path = l->ws_path[0] ? l->ws_path : NULL,
                                       .ws_record_path =
                                               l->ws_record_path[0] ? l->ws_record_path : NULL,
                                       .ws_after_ms = l->ws_after_ms};
        ret = app_snapshot_load(opaque, cfg, s, &mem, l->resume_vm, err, errlen);
    }
    vm_snapshot_close(s); /* everything in it was applied */
    return ret;
}

const struct api_vmm_ops api_app_ops = {
        .start = op_start,
        .pause = op_pause,
        .ctrl_alt_del = op_ctrl_alt_del,
        .flush_metrics = op_flush,
        .write_working_set = op_write_working_set,
        .logger = op_logger,
        .metrics = op_metrics,
        .update_drive = op_update_drive,
        .check_net = op_check_net,
        .check_vsock = op_check_vsock,
        .update_net = op_update_net,
        .snapshot_create = op_snapshot_create,
        .snapshot_load = op_snapshot_load,
};
