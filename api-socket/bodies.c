/* Strict JSON bodies → typed structs: every key known, every type checked, every string
 * bounded. Messages follow Firecracker's ("An error occurred when deserializing ..."). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api.h"

#define DESER "An error occurred when deserializing the json body of a request: "

static int fault(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int fault(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(err, errlen, "%s", DESER);

    if (n < 0 || (size_t)n >= errlen)
        return -EINVAL;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Every key of obj must be one of allowed (NULL-terminated). */
static int check_keys(const json_t *obj, const char *const *allowed, char *err, size_t errlen)
{
    const char *key;
    json_t *val;

    if (!json_is_object(obj))
        return fault(err, errlen, "expected a JSON object.");
    json_object_foreach((json_t *)obj, key, val)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(key, *a);
        if (!ok) {
            char list[256] = "";
            size_t used = 0;
            for (const char *const *a = allowed; *a; a++) {
                int n = snprintf(list + used, sizeof(list) - used, "%s`%s`",
                                 a == allowed ? "" : ", ", *a);
                if (n < 0 || (size_t)n >= sizeof(list) - used)
                    break;
                used += (size_t)n;
            }
            return fault(err, errlen, "unknown field `%.64s`, expected one of %s.", key, list);
        }
    }
    return 0;
}

/* The value of key, or NULL when absent or null (an optional field left out). */
static json_t *member(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static int missing(const char *key, char *err, size_t errlen)
{
    return fault(err, errlen, "missing field `%s`.", key);
}

static int get_str(const json_t *obj, const char *key, bool required, char *dst, size_t size,
                   bool *present, char *err, size_t errlen)
{
    json_t *v = member(obj, key);

    if (present)
        *present = v != NULL;
    if (!v)
        return required ? missing(key, err, errlen) : 0;
    if (!json_is_string(v))
        return fault(err, errlen, "invalid type for `%s`: expected a string.", key);
    size_t len = json_string_length(v);
    if (len >= size)
        return fault(err, errlen, "`%s` is %zu bytes long, the limit is %zu.", key, len, size - 1);
    memcpy(dst, json_string_value(v), len + 1);
    return 0;
}

static int get_bool(const json_t *obj, const char *key, bool required, bool *dst, bool *present,
                    char *err, size_t errlen)
{
    json_t *v = member(obj, key);

    if (present)
        *present = v != NULL;
    if (!v)
        return required ? missing(key, err, errlen) : 0;
    if (!json_is_boolean(v))
        return fault(err, errlen, "invalid type for `%s`: expected a boolean.", key);
    *dst = json_is_true(v);
    return 0;
}

static int get_u64(const json_t *obj, const char *key, bool required, uint64_t max, uint64_t *dst,
                   bool *present, char *err, size_t errlen)
{
    json_t *v = member(obj, key);

    if (present)
        *present = v != NULL;
    if (!v)
        return required ? missing(key, err, errlen) : 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fault(err, errlen, "invalid type for `%s`: expected a non-negative integer.", key);
    if ((uint64_t)json_integer_value(v) > max)
        return fault(err, errlen, "`%s` is out of range (at most %llu).", key,
                     (unsigned long long)max);
    *dst = (uint64_t)json_integer_value(v);
    return 0;
}

/* A string that must be one of names[0..n); its index goes into *dst. */
static int get_enum(const json_t *obj, const char *key, bool required, const char *const *names,
                    unsigned n, unsigned *dst, bool *present, char *err, size_t errlen)
{
    char s[32];
    bool have;
    int ret = get_str(obj, key, required, s, sizeof(s), &have, err, errlen);

    if (present)
        *present = have;
    if (ret == -EINVAL && json_is_string(member(obj, key)))
        have = true, s[0] = '\0'; /* too long: cannot be a variant */
    else if (ret || !have)
        return ret;
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(s, names[i])) {
            *dst = i;
            return 0;
        }
    char list[160] = "";
    size_t used = 0;
    for (unsigned i = 0; i < n; i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s`%s`", i ? ", " : "", names[i]);
        if (w < 0 || (size_t)w >= sizeof(list) - used)
            break;
        used += (size_t)w;
    }
    return fault(err, errlen, "unknown variant `%.31s` for `%s`, expected one of %s.", s, key,
                 list);
}

int body_machine(const void *o, bool partial, struct api_machine *m, char *err, size_t errlen)
{
    static const char *const keys[] = {"vcpu_count",        "mem_size_mib", "smt", "cpu_template",
                                       "track_dirty_pages", "huge_pages",   NULL};
    static const char *const huge[] = {"None", "2M", "Transparent"};
    static const char *const tmpl[] = {"None"};
    const json_t *obj = o;
    uint64_t v = 0;
    unsigned e = 0, t = 0;
    bool has_tmpl;
    int ret;

    memset(m, 0, sizeof(*m));
    if ((ret = check_keys(obj, keys, err, errlen)))
        return ret;
    if ((ret = get_u64(obj, "vcpu_count", !partial, API_VCPUS_MAX, &v, &m->has_vcpus, err, errlen)))
        return ret;
    m->vcpu_count = (uint32_t)v;
    if ((ret = get_u64(obj, "mem_size_mib", !partial, UINT64_MAX >> 20, &m->mem_size_mib,
                       &m->has_mem, err, errlen)))
        return ret;
    if ((ret = get_bool(obj, "smt", false, &m->smt, &m->has_smt, err, errlen)) ||
        (ret = get_bool(obj, "track_dirty_pages", false, &m->track_dirty_pages, &m->has_dirty, err,
                        errlen)) ||
        (ret = get_enum(obj, "huge_pages", false, huge, 3, &e, &m->has_huge, err, errlen)) ||
        (ret = get_enum(obj, "cpu_template", false, tmpl, 1, &t, &has_tmpl, err, errlen)))
        return ret;
    m->huge_pages = (enum api_huge_pages)e;
    if (m->has_vcpus && m->vcpu_count == 0)
        return fault(err, errlen, "`vcpu_count` must be at least 1.");
    if (m->has_mem && m->mem_size_mib == 0)
        return fault(err, errlen, "`mem_size_mib` must be at least 1.");
    if (partial && !m->has_vcpus && !m->has_mem && !m->has_smt && !m->has_dirty && !m->has_huge &&
        !has_tmpl)
        return fault(err, errlen, "empty machine configuration update.");
    return 0;
}

int body_boot_source(const void *o, struct api_boot_source *b, char *err, size_t errlen)
{
    static const char *const keys[] = {"kernel_image_path", "initrd_path", "boot_args", NULL};
    const json_t *obj = o;
    int ret;

    memset(b, 0, sizeof(*b));
    if ((ret = check_keys(obj, keys, err, errlen)) ||
        (ret = get_str(obj, "kernel_image_path", true, b->kernel_image_path,
                       sizeof(b->kernel_image_path), NULL, err, errlen)) ||
        (ret = get_str(obj, "initrd_path", false, b->initrd_path, sizeof(b->initrd_path), NULL, err,
                       errlen)) ||
        (ret = get_str(obj, "boot_args", false, b->boot_args, sizeof(b->boot_args),
                       &b->has_boot_args, err, errlen)))
        return ret;
    return 0;
}

/* An id the API accepts fits the VMM's drive id whole (a cut id names another drive). */
_Static_assert(sizeof(((struct vm_drive *)0)->id) == API_ID_MAX + 1, "drive id sizes differ");

static int bucket(const json_t *obj, const char *key, struct api_bucket *b, char *err,
                  size_t errlen)
{
    static const char *const keys[] = {"size", "one_time_burst", "refill_time", NULL};
    const json_t *v = member(obj, key);
    int ret;

    memset(b, 0, sizeof(*b));
    if (!v)
        return 0;
    b->set = true;
    if ((ret = check_keys(v, keys, err, errlen)) ||
        (ret = get_u64(v, "size", true, VM_BUCKET_SIZE_MAX, &b->size, NULL, err, errlen)) ||
        (ret = get_u64(v, "refill_time", true, VM_BUCKET_REFILL_MS_MAX, &b->refill_time, NULL, err,
                       errlen)) ||
        (ret = get_u64(v, "one_time_burst", false, VM_BUCKET_SIZE_MAX, &b->one_time_burst, NULL,
                       err, errlen)))
        return ret;
    return 0;
}

static int rate_limiter(const json_t *obj, const char *key, struct api_rate_limiter *rl,
                        bool *present, char *err, size_t errlen)
{
    static const char *const keys[] = {"bandwidth", "ops", NULL};
    const json_t *v = member(obj, key);
    int ret;

    memset(rl, 0, sizeof(*rl));
    *present = v != NULL;
    if (!v)
        return 0;
    rl->set = true;
    if ((ret = check_keys(v, keys, err, errlen)) ||
        (ret = bucket(v, "bandwidth", &rl->bandwidth, err, errlen)) ||
        (ret = bucket(v, "ops", &rl->ops, err, errlen)))
        return ret;
    return 0;
}

int body_drive(const void *o, bool partial, struct api_drive *d, char *err, size_t errlen)
{
    static const char *const keys[] = {
            "drive_id",     "partuuid",     "is_root_device", "cache_type", "is_read_only",
            "path_on_host", "rate_limiter", "io_engine",      "socket",     NULL};
    static const char *const pkeys[] = {"drive_id", "path_on_host", "rate_limiter", NULL};
    static const char *const caches[] = {"Unsafe", "Writeback"};
    static const char *const engines[] = {"Sync", "Async"};
    const json_t *obj = o;
    unsigned e;
    int ret;

    memset(d, 0, sizeof(*d));
    if ((ret = check_keys(obj, partial ? pkeys : keys, err, errlen)) ||
        (ret = get_str(obj, "drive_id", true, d->drive_id, sizeof(d->drive_id), NULL, err,
                       errlen)) ||
        (ret = get_str(obj, "path_on_host", !partial, d->path_on_host, sizeof(d->path_on_host),
                       &d->has_path, err, errlen)) ||
        (ret = rate_limiter(obj, "rate_limiter", &d->rate_limiter, &d->has_rate_limiter, err,
                            errlen)))
        return ret;
    if (partial)
        return 0;
    if (member(obj, "socket"))
        return fault(err, errlen, "vhost-user drives (`socket`) are not supported by ember.");
    if ((ret = get_bool(obj, "is_root_device", true, &d->is_root_device, NULL, err, errlen)) ||
        (ret = get_bool(obj, "is_read_only", true, &d->is_read_only, NULL, err, errlen)) ||
        (ret = get_str(obj, "partuuid", false, d->partuuid, sizeof(d->partuuid), NULL, err,
                       errlen)))
        return ret;
    e = API_CACHE_UNSAFE;
    if ((ret = get_enum(obj, "cache_type", false, caches, 2, &e, NULL, err, errlen)))
        return ret;
    d->cache_type = e;
    e = API_IO_SYNC;
    if ((ret = get_enum(obj, "io_engine", false, engines, 2, &e, NULL, err, errlen)))
        return ret;
    d->io_engine = e;
    return 0;
}

int body_net(const void *o, bool partial, struct api_net *n, char *err, size_t errlen)
{
    static const char *const keys[] = {"iface_id",        "host_dev_name",   "guest_mac",
                                       "rx_rate_limiter", "tx_rate_limiter", NULL};
    static const char *const pkeys[] = {"iface_id", "rx_rate_limiter", "tx_rate_limiter", NULL};
    const json_t *obj = o;
    char mac[32];
    bool present;
    int ret;

    memset(n, 0, sizeof(*n));
    if ((ret = check_keys(obj, partial ? pkeys : keys, err, errlen)) ||
        (ret = get_str(obj, "iface_id", true, n->iface_id, sizeof(n->iface_id), NULL, err,
                       errlen)) ||
        (ret = rate_limiter(obj, "rx_rate_limiter", &n->rx_rate_limiter, &present, err, errlen)) ||
        (ret = rate_limiter(obj, "tx_rate_limiter", &n->tx_rate_limiter, &present, err, errlen)))
        return ret;
    if (partial)
        return 0;
    if ((ret = get_str(obj, "host_dev_name", true, n->host_dev_name, sizeof(n->host_dev_name), NULL,
                       err, errlen)) ||
        (ret = get_str(obj, "guest_mac", false, mac, sizeof(mac), &n->has_mac, err, errlen)))
        return ret;
    if (n->has_mac && cfg_mac_parse(mac, n->guest_mac))
        return fault(err, errlen,
                     "invalid MAC address `%s`: expected six colon-separated pairs of hex "
                     "digits (06:00:AC:10:00:02).",
                     mac);
    return 0;
}

int body_vsock(const void *o, struct api_vsock *v, char *err, size_t errlen)
{
    /* vsock_id: deprecated in Firecracker, accepted and ignored. */
    static const char *const keys[] = {"guest_cid", "uds_path", "vsock_id", NULL};
    const json_t *obj = o;
    uint64_t cid;
    char id[API_ID_MAX + 1];
    int ret;

    memset(v, 0, sizeof(*v));
    if ((ret = check_keys(obj, keys, err, errlen)) ||
        (ret = get_u64(obj, "guest_cid", true, UINT32_MAX, &cid, NULL, err, errlen)) ||
        (ret = get_str(obj, "uds_path", true, v->uds_path, sizeof(v->uds_path), NULL, err,
                       errlen)) ||
        (ret = get_str(obj, "vsock_id", false, id, sizeof(id), NULL, err, errlen)))
        return ret;
    v->guest_cid = (uint32_t)cid;
    return 0;
}

int body_action(const void *o, enum api_action *a, char *err, size_t errlen)
{
    static const char *const keys[] = {"action_type", NULL};
    static const char *const names[] = {"InstanceStart", "SendCtrlAltDel", "FlushMetrics",
                                        "WriteWorkingSet"};
    unsigned e = 0;
    int ret;

    if ((ret = check_keys(o, keys, err, errlen)) ||
        (ret = get_enum(o, "action_type", true, names, 4, &e, NULL, err, errlen)))
        return ret;
    *a = e;
    return 0;
}

int body_vm_state(const void *o, bool *pause, char *err, size_t errlen)
{
    static const char *const keys[] = {"state", NULL};
    static const char *const names[] = {"Paused", "Resumed"};
    unsigned e = 0;
    int ret;

    if ((ret = check_keys(o, keys, err, errlen)) ||
        (ret = get_enum(o, "state", true, names, 2, &e, NULL, err, errlen)))
        return ret;
    *pause = e == 0;
    return 0;
}

int body_logger(const void *o, struct api_logger *l, char *err, size_t errlen)
{
    static const char *const keys[] = {"log_path",        "level",  "show_level",
                                       "show_log_origin", "module", NULL};
    static const char *const names[] = {"off",   "error", "warning", "info",
                                        "debug", "trace", "warn"};
    const json_t *obj = o;
    char level[16];
    int ret;

    memset(l, 0, sizeof(*l));
    if ((ret = check_keys(obj, keys, err, errlen)) ||
        (ret = get_str(obj, "log_path", false, l->log_path, sizeof(l->log_path), &l->has_path, err,
                       errlen)) ||
        (ret = get_bool(obj, "show_level", false, &l->show_level, &l->has_show_level, err,
                        errlen)) ||
        (ret = get_bool(obj, "show_log_origin", false, &l->show_log_origin, &l->has_show_origin,
                        err, errlen)))
        return ret;
    if (member(obj, "module"))
        return fault(err, errlen, "`module` filters are not supported by ember.");
    if (get_str(obj, "level", false, level, sizeof(level), &l->has_level, err, errlen))
        return fault(err, errlen,
                     "`level` must be one of Error, Warning, Info, Debug, Trace, "
                     "Off.");
    if (!l->has_level)
        return 0;
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcasecmp(level, names[i])) {
            l->level = i == 6 ? API_LOG_WARN : (enum api_log_level)i;
            return 0;
        }
    return fault(err, errlen, "`level` must be one of Error, Warning, Info, Debug, Trace, Off.");
}

int body_metrics(const void *o, struct api_metrics *m, char *err, size_t errlen)
{
    static const char *const keys[] = {"metrics_path", "emit_id", "properties", NULL};
    const json_t *props;
    const char *key;
    json_t *val;
    int ret;

    memset(m, 0, sizeof(*m));
    if ((ret = check_keys(o, keys, err, errlen)) ||
        (ret = get_str(o, "metrics_path", true, m->metrics_path, sizeof(m->metrics_path), NULL, err,
                       errlen)) ||
        (ret = get_bool(o, "emit_id", false, &m->emit_id, NULL, err, errlen)))
        return ret;
    props = member(o, "properties");
    if (!props)
        return 0;
    if (!json_is_object(props))
        return fault(err, errlen, "invalid type for `properties`: expected an object.");
    json_object_foreach((json_t *)props, key, val)
    {
        if (!json_is_string(val))
            return fault(err, errlen, "invalid type for `properties.%.64s`: expected a string.",
                         key);
    }
    char *text = json_dumps(props, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text);
    if (len < sizeof(m->properties))
        memcpy(m->properties, text, len + 1);
    free(text);
    if (len >= sizeof(m->properties))
        return fault(err, errlen, "`properties` is longer than %zu bytes.",
                     sizeof(m->properties) - 1);
    return 0;
}

int body_serial(const void *o, struct api_serial *s, char *err, size_t errlen)
{
    static const char *const keys[] = {"serial_out_path", "rate_limiter", NULL};
    int ret;

    memset(s, 0, sizeof(*s));
    if ((ret = check_keys(o, keys, err, errlen)) ||
        (ret = bucket(o, "rate_limiter", &s->rate_limiter, err, errlen)))
        return ret;
    return get_str(o, "serial_out_path", false, s->serial_out_path, sizeof(s->serial_out_path),
                   &s->has_path, err, errlen);
}

int body_snap_create(const void *o, struct api_snap_create *c, char *err, size_t errlen)
{
    static const char *const keys[] = {"snapshot_type", "snapshot_path", "mem_file_path", "version",
                                       NULL};
    static const char *const types[] = {"Full", "Diff"};
    unsigned type = 0;
    int ret;

    memset(c, 0, sizeof(*c));
    if ((ret = check_keys(o, keys, err, errlen)) ||
        (ret = get_enum(o, "snapshot_type", false, types, 2, &type, NULL, err, errlen)) ||
        (ret = get_str(o, "snapshot_path", true, c->snapshot_path, sizeof(c->snapshot_path), NULL,
                       err, errlen)) ||
        (ret = get_str(o, "mem_file_path", true, c->mem_file_path, sizeof(c->mem_file_path), NULL,
                       err, errlen)))
        return ret;
    if (member(o, "version")) /* Firecracker 1.x dropped it: say so rather than ignore it */
        return fault(err, errlen, "unknown field `version`: snapshots have no target version.");
    c->diff = type == 1;
    return 0;
}

static int net_overrides(const json_t *o, struct api_snap_load *l, char *err, size_t errlen)
{
    static const char *const keys[] = {"iface_id", "host_dev_name", NULL};
    json_t *arr = member(o, "network_overrides"), *item;
    size_t i;
    int ret;

    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return fault(err, errlen, "invalid type for `network_overrides`: expected an array.");
    if (json_array_size(arr) > VM_NETS_MAX)
        return fault(err, errlen, "`network_overrides` has more than %d entries.", VM_NETS_MAX);
    json_array_foreach(arr, i, item)
    {
        struct api_net_override *n = &l->overrides[i];
        if ((ret = check_keys(item, keys, err, errlen)) ||
            (ret = get_str(item, "iface_id", true, n->iface_id, sizeof(n->iface_id), NULL, err,
                           errlen)) ||
            (ret = get_str(item, "host_dev_name", true, n->host_dev_name, sizeof(n->host_dev_name),
                           NULL, err, errlen)))
            return ret;
    }
    l->noverrides = (unsigned)json_array_size(arr);
    return 0;
}

int body_snap_load(const void *o, struct api_snap_load *l, char *err, size_t errlen)
{
    static const char *const keys[] = {"snapshot_path",
                                       "mem_file_path",
                                       "mem_backend",
                                       "enable_diff_snapshots",
                                       "track_dirty_pages",
                                       "resume_vm",
                                       "network_overrides",
                                       "vsock_override",
                                       "clock_realtime",
                                       "huge_pages",
                                       NULL};
    static const char *const backend_keys[] = {"backend_type", "backend_path",       "layers",
                                               "working_set",  "record_working_set", NULL};
    static const char *const record_keys[] = {"path", "after_ms", NULL};
    static const char *const backends[] = {"File", "Uffd"};
    static const char *const huge[] = {"Snapshot", "None", "Transparent", "2M"};
    static const char *const vsock_keys[] = {"uds_path", NULL};
    bool has_file, diff = false, dirty = false;
    unsigned backend = 0, pages = 0;
    int ret;

    memset(l, 0, sizeof(*l));
    if ((ret = check_keys(o, keys, err, errlen)) ||
        (ret = get_str(o, "snapshot_path", true, l->snapshot_path, sizeof(l->snapshot_path), NULL,
                       err, errlen)) ||
        (ret = get_str(o, "mem_file_path", false, l->mem_path, sizeof(l->mem_path), &has_file, err,
                       errlen)) ||
        (ret = get_bool(o, "enable_diff_snapshots", false, &diff, NULL, err, errlen)) ||
        (ret = get_bool(o, "track_dirty_pages", false, &dirty, NULL, err, errlen)) ||
        (ret = get_bool(o, "resume_vm", false, &l->resume_vm, NULL, err, errlen)) ||
        (ret = get_bool(o, "clock_realtime", false, &l->clock_realtime, NULL, err, errlen)) ||
        (ret = get_enum(o, "huge_pages", false, huge, 4, &pages, NULL, err, errlen)) ||
        (ret = net_overrides(o, l, err, errlen)))
        return ret;
    json_t *mb = member(o, "mem_backend");
    if (mb && has_file)
        return fault(err, errlen,
                     "too many fields: `mem_backend` and `mem_file_path` (the "
                     "latter is deprecated) cannot both be given.");
    if (!mb && !has_file)
        return fault(err, errlen, "missing field: either `mem_backend` or `mem_file_path`.");
    if (mb &&
        ((ret = check_keys(mb, backend_keys, err, errlen)) ||
         (ret = get_enum(mb, "backend_type", true, backends, 2, &backend, NULL, err, errlen)) ||
         (ret = get_str(mb, "backend_path", true, l->mem_path, sizeof(l->mem_path), NULL, err,
                        errlen))))
        return ret;
    json_t *layers = mb ? member(mb, "layers") : NULL, *item;
    size_t i;
    if (layers && (!json_is_array(layers) || json_array_size(layers) > API_LAYERS_MAX))
        return fault(err, errlen, "`mem_backend.layers` must be an array of at most %d paths.",
                     API_LAYERS_MAX);
    json_array_foreach(layers, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) >= PATH_MAX ||
            !json_string_length(item))
            return fault(err, errlen, "`mem_backend.layers[%zu]` is not a path.", i);
        memcpy(l->layers[i], json_string_value(item), json_string_length(item) + 1);
    }
    l->nlayers = layers ? (unsigned)json_array_size(layers) : 0;
    json_t *rec = mb ? member(mb, "record_working_set") : NULL;
    if (mb && (ret = get_str(mb, "working_set", false, l->ws_path, sizeof(l->ws_path), NULL, err,
                             errlen)))
        return ret;
    if (rec &&
        ((ret = check_keys(rec, record_keys, err, errlen)) ||
         (ret = get_str(rec, "path", true, l->ws_record_path, sizeof(l->ws_record_path), NULL, err,
                        errlen)) ||
         (ret = get_u64(rec, "after_ms", false, 3600 * 1000, &l->ws_after_ms, NULL, err, errlen))))
        return ret;
    json_t *vo = member(o, "vsock_override");
    if (vo && ((ret = check_keys(vo, vsock_keys, err, errlen)) ||
               (ret = get_str(vo, "uds_path", true, l->vsock_uds_path, sizeof(l->vsock_uds_path),
                              NULL, err, errlen))))
        return ret;
    l->has_vsock_override = vo != NULL;
    l->uffd = backend == 1;
    if (l->uffd && l->nlayers)
        return fault(err, errlen, "`mem_backend.layers` go with the File backend only.");
    /* refused here, before a page-fault handler is ever handed the memory */
    if (l->uffd && (l->ws_path[0] || rec))
        return fault(err, errlen, "`mem_backend.%s` goes with the File backend only.",
                     l->ws_path[0] ? "working_set" : "record_working_set");
    l->track_dirty_pages = dirty || diff;
    if (pages >= 2)
        return fault(err, errlen, "`huge_pages` `%s` is not supported by this build of ember.",
                     huge[pages]);
    return 0;
}
