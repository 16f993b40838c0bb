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

#include "api.h"

#define NOT_BEFORE "The requested operation is not supported before starting the microVM."
#define NOT_AFTER  "The requested operation is not supported after starting the microVM."
#define MEM_MAX    (255 * 1024) /* MiB: RAM must end below the 64-bit MMIO window */

void ctl_init(struct api_ctl *c, const char *id, const char *version, const struct api_vmm_ops *ops,
              void *opaque)
{
    memset(c, 0, sizeof(*c));
    c->instance_id = id;
    c->version = version;
    c->ops = ops;
    c->opaque = opaque;
    c->machine = (struct api_machine){.has_vcpus = true,
                                      .has_mem = true,
                                      .has_smt = true,
                                      .has_dirty = true,
                                      .has_huge = true,
                                      .vcpu_count = 1,
                                      .mem_size_mib = 128};
}

/* Opens path the way the VMM will and checks it is a regular file (or a block device). */
static int check_file(const char *what, const char *path, bool writable, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

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
    struct api_machine m = c->machine;

    if (in->has_vcpus)
        m.vcpu_count = in->vcpu_count;
    if (in->has_mem)
        m.mem_size_mib = in->mem_size_mib;
    if (in->has_smt)
        m.smt = in->smt;
    if (in->has_dirty)
        m.track_dirty_pages = in->track_dirty_pages;
    if (in->has_huge)
        m.huge_pages = in->huge_pages;
    if (m.vcpu_count < 1 || m.vcpu_count > API_VCPUS_MAX)
        return snprintf(err, errlen,
                        "The number of vCPUs must be greater than 0, less than %d and must be 1 "
                        "or an even number if SMT is enabled.",
                        API_VCPUS_MAX + 1),
               -EINVAL;
    if (m.smt && m.vcpu_count > 1 && m.vcpu_count % 2) /* Firecracker's InvalidVcpuCount */
        return snprintf(err, errlen,
                        "The vCPU number is invalid! The vCPU number can only be 1 or an even "
                        "number when SMT is enabled."),
               -EINVAL;
    if (m.mem_size_mib < 2 || m.mem_size_mib > MEM_MAX)
        return snprintf(err, errlen,
                        "The memory size (MiB) is invalid: %llu (ember supports 2 to %d MiB).",
                        (unsigned long long)m.mem_size_mib, MEM_MAX),
               -EINVAL;
    if (m.huge_pages != API_HUGE_NONE)
        return snprintf(err, errlen, "Huge pages are not supported by this build of ember."),
               -EINVAL;
    c->machine = m;
    return 0;
}

static int set_boot_source(struct api_ctl *c, const struct api_boot_source *b, char *err,
                           size_t errlen)
{
    int ret = check_file("kernel", b->kernel_image_path, false, err, errlen);

    if (!ret && b->initrd_path[0])
        ret = check_file("initrd", b->initrd_path, false, err, errlen);
    if (ret)
        return ret;
    c->boot = *b;
    c->boot_set = true;
    return 0;
}

static int set_drive(struct api_ctl *c, const struct api_drive *d, char *err, size_t errlen)
{
    unsigned i;

    for (i = 0; i < c->ndrives && strcmp(c->drives[i].drive_id, d->drive_id); i++)
        ;
    if (d->is_root_device)
        for (unsigned j = 0; j < c->ndrives; j++)
            if (j != i && c->drives[j].is_root_device)
                return snprintf(err, errlen, "A root block device already exists!"), -EINVAL;
    if (i == c->ndrives && c->ndrives == API_DRIVES_MAX)
        return snprintf(err, errlen,
                        "Too many drives: at most %d (one virtio-mmio device per free interrupt "
                        "line, GSI 5 to 23).",
                        API_DRIVES_MAX),
               -ENOSPC;
    int ret = check_file("block device", d->path_on_host, !d->is_read_only, err, errlen);
    if (ret)
        return ret;
    c->drives[i] = *d;
    if (i == c->ndrives)
        c->ndrives++;
    return 0;
}

/* PATCH /drives/{id} after boot: the new file is checked as PUT checks it, the VMM swaps it
 * or the rate limiter, and the configuration follows (GET /vm/config). */
static int patch_drive(struct api_ctl *c, const struct api_drive *d, char *err, size_t errlen)
{
    unsigned i;

    if (!d->has_path && !d->has_rate_limiter)
        return snprintf(err, errlen,
                        "Please specify at least one property to patch: path_on_host, "
                        "rate_limiter."),
               -EINVAL;
    for (i = 0; i < c->ndrives && strcmp(c->drives[i].drive_id, d->drive_id); i++)
        ;
    if (i == c->ndrives)
        return snprintf(err, errlen, "Invalid block device ID: no drive `%s` was configured.",
                        d->drive_id),
               -ENOENT;
    struct api_drive *cur = &c->drives[i];
    int ret = d->has_path
                      ? check_file("block device", d->path_on_host, !cur->is_read_only, err, errlen)
                      : 0;
    if (!ret) {
        ret = c->ops->update_drive(c->opaque, d, err, errlen);
        metrics_add(c->counters, ret ? M_BLOCK_UPDATE_FAILS : M_BLOCK_UPDATE, 1);
    }
    if (ret)
        return ret;
    if (d->has_path)
        memcpy(cur->path_on_host, d->path_on_host, sizeof(cur->path_on_host));
    if (d->rate_limiter.bandwidth.set)
        cur->rate_limiter.bandwidth = d->rate_limiter.bandwidth;
    if (d->rate_limiter.ops.set)
        cur->rate_limiter.ops = d->rate_limiter.ops;
    cur->rate_limiter.set = cur->rate_limiter.bandwidth.set || cur->rate_limiter.ops.set;
    cur->has_rate_limiter = cur->rate_limiter.set;
    return 0;
}

static int machine_json(const struct api_machine *m, struct api_response *resp)
{
    static const char *const huge[] = {"None", "2M", "Transparent"};
    return api_response_json(resp, 200, "{s:I,s:I,s:b,s:b,s:s}", "vcpu_count",
                             (json_int_t)m->vcpu_count, "mem_size_mib", (json_int_t)m->mem_size_mib,
                             "smt", m->smt, "track_dirty_pages", m->track_dirty_pages, "huge_pages",
                             huge[m->huge_pages]);
}

static int action(struct api_ctl *c, enum api_action a, char *err, size_t errlen)
{
    int ret;

    switch (a) {
    case API_ACTION_INSTANCE_START:
        if (c->state != API_VM_NOT_STARTED)
            return snprintf(err, errlen, NOT_AFTER), -EINVAL;
        if (!c->boot_set)
            return snprintf(err, errlen, "Cannot start microvm without kernel configuration."),
                   -EINVAL;
        ret = c->ops->start(c->opaque, err, errlen);
        if (!ret)
            c->state = API_VM_RUNNING;
        return ret;
    case API_ACTION_CTRL_ALT_DEL:
        if (c->state == API_VM_NOT_STARTED)
            return snprintf(err, errlen, NOT_BEFORE), -EINVAL;
        return c->ops->ctrl_alt_del(c->opaque, err, errlen);
    case API_ACTION_FLUSH_METRICS:
        if (c->state == API_VM_NOT_STARTED)
            return snprintf(err, errlen, NOT_BEFORE), -EINVAL;
        return c->ops->flush_metrics(c->opaque, err, errlen);
    }
    return snprintf(err, errlen, "Unknown action."), -EINVAL;
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
        return machine_json(&c->machine, resp);
    case API_REQ_PUT_MACHINE:
    case API_REQ_PATCH_MACHINE:
        if (!pre)
            return snprintf(err, errlen, NOT_AFTER), -EINVAL;
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
                  : (snprintf(err, errlen, NOT_AFTER), -EINVAL);
        break;
    case API_REQ_PUT_DRIVE:
        ret = pre ? set_drive(c, &r->u.drive, err, errlen)
                  : (snprintf(err, errlen, NOT_AFTER), -EINVAL);
        break;
    case API_REQ_PATCH_DRIVE:
        ret = pre ? (snprintf(err, errlen, NOT_BEFORE), -EINVAL)
                  : patch_drive(c, &r->u.drive, err, errlen);
        break;
    case API_REQ_ACTION:
        ret = action(c, r->u.action, err, errlen);
        break;
    case API_REQ_PATCH_VM:
        if (pre)
            return snprintf(err, errlen, NOT_BEFORE), -EINVAL;
        ret = c->ops->pause(c->opaque, r->u.pause, err, errlen);
        if (!ret)
            c->state = r->u.pause ? API_VM_PAUSED : API_VM_RUNNING;
        break;
    case API_REQ_LOGGER:
        if (!pre)
            return snprintf(err, errlen, NOT_AFTER), -EINVAL;
        ret = c->ops->logger(c->opaque, &r->u.logger, err, errlen);
        if (!ret)
            c->logger = r->u.logger, c->logger_set = true;
        break;
    case API_REQ_METRICS:
        if (!pre)
            return snprintf(err, errlen, NOT_AFTER), -EINVAL;
        ret = c->ops->metrics(c->opaque, &r->u.metrics, err, errlen);
        if (!ret)
            c->metrics = r->u.metrics, c->metrics_set = true;
        break;
    case API_REQ_SERIAL:
        if (!pre)
            return snprintf(err, errlen, NOT_AFTER), -EINVAL;
        c->serial = r->u.serial;
        c->serial_set = true;
        ret = 0;
        break;
    default:
        return snprintf(err, errlen, "Unknown request."), -EINVAL;
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
