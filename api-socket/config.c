/* The configuration in --config-file shape, both ways: GET /vm/config writes it, --config-file
 * reads it. Reading goes section by section through the same body parsers and the same
 * controller as the HTTP API, so all three entry points share one code path. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api.h"

static json_t *drive_json(const struct vm_drive *d)
{
    json_t *o = json_pack("{s:s,s:b,s:s,s:b,s:s,s:s}", "drive_id", d->id, "is_root_device", d->root,
                          "cache_type", d->writeback ? "Writeback" : "Unsafe", "is_read_only",
                          d->read_only, "path_on_host", d->path ? d->path : "", "io_engine",
                          d->async ? "Async" : "Sync");
    if (o && d->partuuid[0])
        json_object_set_new(o, "partuuid", json_string(d->partuuid));
    return o;
}

static json_t *bucket_json(const struct vm_bucket *b)
{
    return json_pack("{s:I,s:I,s:I}", "size", (json_int_t)b->size, "one_time_burst",
                     (json_int_t)b->one_time_burst, "refill_time", (json_int_t)b->refill_time_ms);
}

/* A rate limiter with its enabled buckets, or NULL when it has none (left out). */
static json_t *limiter_json(const struct vm_bucket *bw, const struct vm_bucket *ops)
{
    if (!bw->size && !ops->size)
        return NULL;
    json_t *o = json_object();
    if (o && bw->size)
        json_object_set_new(o, "bandwidth", bucket_json(bw));
    if (o && ops->size)
        json_object_set_new(o, "ops", bucket_json(ops));
    return o;
}

static json_t *net_json(const struct vm_net *n)
{
    char mac[18];
    json_t *o = json_pack("{s:s,s:s}", "iface_id", n->id, "host_dev_name", n->host_dev_name);
    json_t *rx = limiter_json(&n->rx_bw, &n->rx_ops), *tx = limiter_json(&n->tx_bw, &n->tx_ops);
    if (o && n->has_mac)
        json_object_set_new(o, "guest_mac", json_string(cfg_mac_format(n->mac, mac)));
    if (o && rx)
        json_object_set_new(o, "rx_rate_limiter", rx);
    if (o && tx)
        json_object_set_new(o, "tx_rate_limiter", tx);
    return o;
}

char *ctl_vm_config_json(const struct api_ctl *c)
{
    static const char *const huge[] = {"None", "2M", "Transparent"};
    static const char *const levels[] = {"Off", "Error", "Warning", "Info", "Debug", "Trace"};
    const struct vm_config *cfg = &c->cfg;
    json_t *drives = json_array(), *nets = json_array();
    char *text = NULL;

    json_t *root =
            json_pack("{s:{s:I,s:I,s:b,s:b,s:s},s:o,s:o}", "machine-config", "vcpu_count",
                      (json_int_t)cfg->vcpus, "mem_size_mib", (json_int_t)cfg->mem_mib, "smt",
                      cfg->smt, "track_dirty_pages", cfg->track_dirty_pages, "huge_pages",
                      huge[cfg->huge_pages], "drives", drives, "network-interfaces", nets);
    if (!root)
        return NULL;
    for (unsigned i = 0; i < cfg->ndrives; i++)
        json_array_append_new(drives, drive_json(&cfg->drives[i]));
    for (unsigned i = 0; i < cfg->nnets; i++)
        json_array_append_new(nets, net_json(&cfg->nets[i]));
    if (c->boot_set) {
        json_t *b = json_pack("{s:s}", "kernel_image_path", cfg->kernel_path);
        if (b && cfg->initrd_path)
            json_object_set_new(b, "initrd_path", json_string(cfg->initrd_path));
        if (b && cfg->cmdline_set)
            json_object_set_new(b, "boot_args", json_string(cfg->cmdline));
        json_object_set_new(root, "boot-source", b);
    }
    if (cfg->vsock.enabled)
        json_object_set_new(root, "vsock",
                            json_pack("{s:I,s:s}", "guest_cid", (json_int_t)cfg->vsock.guest_cid,
                                      "uds_path", cfg->vsock.uds_path));
    if (c->logger_set) {
        const struct api_logger *l = &c->logger;
        json_t *o = json_pack("{s:s,s:b,s:b}", "level", levels[l->has_level ? l->level : 3],
                              "show_level", l->show_level, "show_log_origin", l->show_log_origin);
        if (o && l->has_path)
            json_object_set_new(o, "log_path", json_string(l->log_path));
        json_object_set_new(root, "logger", o);
    }
    if (c->metrics_set)
        json_object_set_new(root, "metrics",
                            json_pack("{s:s}", "metrics_path", c->metrics.metrics_path));
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

/* --config-file sections, in the order they are applied. */
static const struct {
    const char *key;
    enum api_kind kind;
    bool array;
} sections[] = {
        {"logger", API_REQ_LOGGER, false},
        {"metrics", API_REQ_METRICS, false},
        {"machine-config", API_REQ_PUT_MACHINE, false},
        {"boot-source", API_REQ_BOOT_SOURCE, false},
        {"drives", API_REQ_PUT_DRIVE, true},
        {"network-interfaces", API_REQ_PUT_NET, true},
        {"vsock", API_REQ_PUT_VSOCK, false},
};

static const char *const unsupported_sections[] = {
        "balloon", "mmds-config", "entropy", "pmem", "cpu-config", "memory-hotplug", NULL,
};

/* Parses and applies one section object through the controller. */
static int apply(struct api_ctl *c, const char *key, enum api_kind kind, const json_t *obj,
                 char *err, size_t errlen)
{
    struct api_request *req = calloc(1, sizeof(*req)); /* large (paths) */
    struct api_response resp = {0};
    char why[API_ERR_MAX];
    int ret = -EINVAL;

    if (!req)
        return errf(err, errlen, -ENOMEM, "%s: out of memory", key);
    if (api_parse_body(kind, obj, req, why, sizeof(why))) {
        snprintf(err, errlen, "%s: %s", key, why);
        goto out;
    }
    if ((kind == API_REQ_PUT_DRIVE && !api_id_valid(req->u.drive.drive_id)) ||
        (kind == API_REQ_PUT_NET && !api_id_valid(req->u.net.iface_id))) {
        snprintf(err, errlen,
                 "%s: API Resource IDs can only contain alphanumeric characters and "
                 "underscores.",
                 key);
        goto out;
    }
    ret = ctl_handle(c, req, &resp);
    if (ret) {
        json_t *v = resp.body ? json_loads(resp.body, 0, NULL) : NULL;
        const char *msg = json_string_value(json_object_get(v, "fault_message"));
        snprintf(err, errlen, "%s: %s", key, msg ? msg : strerror(-ret));
        json_decref(v);
    }
    api_response_free(&resp);
out:
    free(req);
    return ret;
}

int ctl_config_file(struct api_ctl *c, const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    const char *key;
    json_t *val;
    int ret = 0;

    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return errf(err, errlen, -EINVAL, "invalid JSON: %s at line %d column %d", jerr.text,
                    jerr.line, jerr.column);
    if (!json_is_object(root)) {
        snprintf(err, errlen, "the configuration must be a JSON object");
        ret = -EINVAL;
        goto out;
    }
    json_object_foreach(root, key, val)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
            known |= !strcmp(key, sections[i].key);
        for (const char *const *u = unsupported_sections; *u && !known; u++)
            if (!strcmp(key, *u)) {
                bool empty = json_is_null(val) || (json_is_array(val) && !json_array_size(val));
                if (!empty) {
                    snprintf(err, errlen, "'%s' is not supported by this build of ember", key);
                    ret = -EINVAL;
                    goto out;
                }
                known = true;
            }
        if (!known) {
            snprintf(err, errlen, "unknown configuration section '%.64s'", key);
            ret = -EINVAL;
            goto out;
        }
    }
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]) && !ret; i++) {
        json_t *s = json_object_get(root, sections[i].key);
        if (!s || json_is_null(s))
            continue;
        if (!sections[i].array) {
            ret = apply(c, sections[i].key, sections[i].kind, s, err, errlen);
            continue;
        }
        if (!json_is_array(s)) {
            snprintf(err, errlen, "'%s' must be an array", sections[i].key);
            ret = -EINVAL;
            break;
        }
        size_t j;
        json_t *item;
        json_array_foreach(s, j, item)
        {
            if (!ret)
                ret = apply(c, sections[i].key, sections[i].kind, item, err, errlen);
        }
    }
    if (!ret && !c->boot_set) {
        snprintf(err, errlen, "'boot-source' is required");
        ret = -EINVAL;
    }
out:
    json_decref(root);
    return ret;
}
