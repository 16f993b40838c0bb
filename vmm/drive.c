/* `--drive path=P[,ro][,engine=sync|async][,cache=unsafe|writeback][,bw=BYTES/s][,iops=N]
 * [,id=ID]` and `--rootfs PATH` → struct vm_drive. A rate given as N means N per second with a
 * bucket of N (refill_time 1000 ms), as Firecracker's {size: N, refill_time: 1000}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

static int number(const char *s, size_t len, uint64_t *out)
{
    char buf[32];
    char *end;

    if (len == 0 || len >= sizeof(buf) || s[0] < '0' || s[0] > '9')
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || (*end && strcmp(end, "/s")))
        return -EINVAL;
    *out = v;
    return 0;
}

static bool is(const char *key, size_t klen, const char *name)
{
    return strlen(name) == klen && !memcmp(key, name, klen);
}

static int option(struct vm_drive *d, const char *opt, size_t len, char *err, size_t errlen)
{
    const char *eq = memchr(opt, '=', len);
    size_t klen = eq ? (size_t)(eq - opt) : len;
    const char *val = eq ? eq + 1 : NULL;
    size_t vlen = eq ? len - klen - 1 : 0;
    uint64_t n;

    if (!eq && is(opt, klen, "ro")) {
        d->read_only = true;
        return 0;
    }
    if (!eq)
        return errf(err, errlen, -EINVAL, "--drive: unknown option '%.*s'", (int)len, opt);
    if (is(opt, klen, "path")) {
        if (vlen == 0 || vlen >= CFG_PATH_MAX)
            return errf(err, errlen, -EINVAL, "--drive: path is empty or too long");
        free(d->path);
        d->path = strndup(val, vlen);
        return d->path ? 0 : errf(err, errlen, -ENOMEM, "out of memory");
    }
    if (is(opt, klen, "id")) {
        if (vlen == 0 || vlen >= sizeof(d->id))
            return errf(err, errlen, -EINVAL, "--drive: id is empty or longer than %d", CFG_ID_MAX);
        memcpy(d->id, val, vlen);
        d->id[vlen] = '\0';
        return 0;
    }
    if (is(opt, klen, "engine")) {
        if (vlen == 5 && !memcmp(val, "async", 5))
            d->async = true;
        else if (vlen == 4 && !memcmp(val, "sync", 4))
            d->async = false;
        else
            return errf(err, errlen, -EINVAL, "--drive: engine is sync or async");
        return 0;
    }
    if (is(opt, klen, "cache")) {
        if (vlen == 9 && !memcmp(val, "writeback", 9))
            d->writeback = true;
        else if (vlen == 6 && !memcmp(val, "unsafe", 6))
            d->writeback = false;
        else
            return errf(err, errlen, -EINVAL, "--drive: cache is unsafe or writeback");
        return 0;
    }
    if (is(opt, klen, "bw") || is(opt, klen, "iops")) {
        if (number(val, vlen, &n))
            return errf(err, errlen, -EINVAL, "--drive: %.*s needs a number", (int)klen, opt);
        struct vm_bucket *b = is(opt, klen, "bw") ? &d->bw : &d->ops;
        *b = (struct vm_bucket){.size = n, .refill_time_ms = n ? 1000 : 0};
        return 0;
    }
    return errf(err, errlen, -EINVAL, "--drive: unknown option '%.*s'", (int)klen, opt);
}

static int parse(struct vm_drive *d, const char *spec, bool root, char *err, size_t errlen)
{
    d->root = root;
    if (root) { /* --rootfs PATH */
        size_t len = strlen(spec);
        if (len == 0 || len >= CFG_PATH_MAX)
            return errf(err, errlen, -EINVAL, "--rootfs: path is empty or too long");
        snprintf(d->id, sizeof(d->id), "rootfs");
        d->path = strdup(spec);
        return d->path ? 0 : errf(err, errlen, -ENOMEM, "out of memory");
    }
    for (const char *p = spec; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int ret = option(d, p, len, err, errlen);
        if (ret)
            return ret;
        p += len + (comma ? 1 : 0);
    }
    if (!d->path)
        return errf(err, errlen, -EINVAL, "--drive needs path=PATH");
    return 0;
}

int drive_parse(struct vm_drive *d, const char *spec, bool root, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    int ret = parse(d, spec, root, err, errlen);
    if (ret)
        cfg_drive_free(d);
    return ret;
}
