/* Routing: method + path + body → one typed api_request, or a fault message. Everything here
 * is pure (no VMM state), so it is unit-tested and fuzzed on its own. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api.h"

enum api_method api_method_parse(const char *s)
{
    static const char *const names[] = {"GET", "PUT", "PATCH", "DELETE"};

    for (unsigned i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i]))
            return (enum api_method)i;
    return API_METHOD_OTHER;
}

const char *api_method_name(enum api_method m)
{
    static const char *const names[] = {"Get", "Put", "Patch", "Delete", "Other"};
    return names[m <= API_METHOD_OTHER ? m : API_METHOD_OTHER];
}

bool api_id_valid(const char *id)
{
    return cfg_id_valid(id);
}

struct route {
    const char *path; /* exact path, or a prefix ending in '/' taking an id */
    enum api_method method;
    enum api_kind kind;
};

static const struct route routes[] = {
        {"/", API_GET, API_REQ_INSTANCE_INFO},
        {"/version", API_GET, API_REQ_VERSION},
        {"/vm/config", API_GET, API_REQ_VM_CONFIG},
        {"/machine-config", API_GET, API_REQ_GET_MACHINE},
        {"/machine-config", API_PUT, API_REQ_PUT_MACHINE},
        {"/machine-config", API_PATCH, API_REQ_PATCH_MACHINE},
        {"/boot-source", API_PUT, API_REQ_BOOT_SOURCE},
        {"/drives/", API_PUT, API_REQ_PUT_DRIVE},
        {"/drives/", API_PATCH, API_REQ_PATCH_DRIVE},
        {"/network-interfaces/", API_PUT, API_REQ_PUT_NET},
        {"/network-interfaces/", API_PATCH, API_REQ_PATCH_NET},
        {"/vsock", API_PUT, API_REQ_PUT_VSOCK},
        {"/actions", API_PUT, API_REQ_ACTION},
        {"/vm", API_PATCH, API_REQ_PATCH_VM},
        {"/logger", API_PUT, API_REQ_LOGGER},
        {"/metrics", API_PUT, API_REQ_METRICS},
        {"/serial", API_PUT, API_REQ_SERIAL},
        {"/snapshot/create", API_PUT, API_REQ_SNAP_CREATE},
        {"/snapshot/load", API_PUT, API_REQ_SNAP_LOAD},
};

/* Firecracker endpoints whose device or feature this build does not have yet. */
static const char *const unsupported[] = {
        "/mmds", "/balloon", "/entropy", "/pmem", "/cpu-config", "/hotplug", NULL,
};

static bool path_under(const char *path, const char *base)
{
    size_t n = strlen(base);
    return !strncmp(path, base, n) && (path[n] == '\0' || path[n] == '/');
}

/* Matches path against r; *id points at the id part for id routes. */
static bool route_match(const struct route *r, const char *path, const char **id)
{
    size_t n = strlen(r->path);

    if (n > 1 && r->path[n - 1] == '/') {
        if (strncmp(path, r->path, n))
            return false;
        *id = path + n;
        return true;
    }
    return !strcmp(path, r->path);
}

int api_parse_body(enum api_kind kind, const void *obj, struct api_request *req, char *err,
                   size_t errlen)
{
    req->kind = kind;
    switch (kind) {
    case API_REQ_PUT_MACHINE:
    case API_REQ_PATCH_MACHINE:
        return body_machine(obj, kind == API_REQ_PATCH_MACHINE, &req->u.machine, err, errlen);
    case API_REQ_BOOT_SOURCE:
        return body_boot_source(obj, &req->u.boot, err, errlen);
    case API_REQ_PUT_DRIVE:
    case API_REQ_PATCH_DRIVE:
        return body_drive(obj, kind == API_REQ_PATCH_DRIVE, &req->u.drive, err, errlen);
    case API_REQ_PUT_NET:
    case API_REQ_PATCH_NET:
        return body_net(obj, kind == API_REQ_PATCH_NET, &req->u.net, err, errlen);
    case API_REQ_PUT_VSOCK:
        return body_vsock(obj, &req->u.vsock, err, errlen);
    case API_REQ_ACTION:
        return body_action(obj, &req->u.action, err, errlen);
    case API_REQ_PATCH_VM:
        return body_vm_state(obj, &req->u.pause, err, errlen);
    case API_REQ_LOGGER:
        return body_logger(obj, &req->u.logger, err, errlen);
    case API_REQ_METRICS:
        return body_metrics(obj, &req->u.metrics, err, errlen);
    case API_REQ_SERIAL:
        return body_serial(obj, &req->u.serial, err, errlen);
    case API_REQ_SNAP_CREATE:
        return body_snap_create(obj, &req->u.snap_create, err, errlen);
    case API_REQ_SNAP_LOAD:
        return body_snap_load(obj, &req->u.snap_load, err, errlen);
    default:
        return 0;
    }
}

int api_route(const char *method, const char *path, const char *body, size_t len,
              struct api_request *req, char *err, size_t errlen)
{
    enum api_method m = api_method_parse(method);
    const struct route *r = NULL;
    const char *id = NULL;
    json_error_t jerr;
    int ret;

    memset(req, 0, sizeof(*req));
    if (!method || !path)
        return errf(err, errlen, -EINVAL, "Invalid request.");
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]) && !r; i++)
        if (routes[i].method == m && route_match(&routes[i], path, &id))
            r = &routes[i];
    if (!r) {
        for (const char *const *u = unsupported; *u; u++)
            if (path_under(path, *u))
                return errf(err, errlen, -EINVAL,
                            "The %s API (%.64s) is not supported by this build of ember.", *u + 1,
                            path);
        return errf(err, errlen, -EINVAL, "Invalid request method and/or path: %.16s %.128s.",
                    method, path);
    }
    if (id && !api_id_valid(id))
        return errf(err, errlen, -EINVAL,
                    "API Resource IDs can only contain alphanumeric characters and "
                    "underscores.");
    if (m == API_GET || m == API_DELETE) {
        if (len)
            return errf(err, errlen, -EINVAL, "%s request cannot have a body.",
                        m == API_GET ? "GET" : "DELETE");
        req->kind = r->kind;
        return 0;
    }
    if (!body || len == 0)
        return errf(err, errlen, -EINVAL, "Empty %s request.", m == API_PUT ? "PUT" : "PATCH");
    json_t *obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj)
        return errf(err, errlen, -EINVAL,
                    "An error occurred when deserializing the json body of a request: %s "
                    "at line %d column %d.",
                    jerr.text, jerr.line, jerr.column);
    ret = api_parse_body(r->kind, obj, req, err, errlen);
    json_decref(obj);
    if (ret)
        return ret;
    const char *body_id = r->kind == API_REQ_PUT_NET || r->kind == API_REQ_PATCH_NET
                                  ? req->u.net.iface_id
                                  : req->u.drive.drive_id;
    if (id && strcmp(id, body_id))
        return errf(err, errlen, -EINVAL,
                    "The id from the path does not match the id from the body!");
    return 0;
}

int api_response_json(struct api_response *resp, int status, const char *fmt, ...)
{
    va_list ap;
    json_error_t jerr;

    va_start(ap, fmt);
    json_t *v = json_vpack_ex(&jerr, 0, fmt, ap);
    va_end(ap);
    resp->status = status;
    resp->body = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    return resp->body ? 0 : -ENOMEM;
}

int api_response_fault(struct api_response *resp, const char *msg)
{
    api_response_json(resp, 400, "{s:s}", "fault_message", msg);
    resp->status = 400;
    return -EINVAL;
}

void api_response_free(struct api_response *resp)
{
    free(resp->body);
    resp->body = NULL;
}
