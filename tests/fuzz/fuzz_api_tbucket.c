/* Fuzz target: the token bucket (virtio/tbucket.c) as the API configures it. Input: a
 * PATCH /drives/d body up to the first newline, parsed by the API body parser
 * (api-socket/bodies.c); when it is accepted, each of its buckets is built as the VMM builds
 * it and driven by the rest of the input, 9 bytes per step: an operation byte and a 64-bit
 * value (consume, refund, or move the last refill into the past by that many nanoseconds).
 * A division by zero or a wrap is a UBSan report; the bucket's invariants are checked here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../api-socket/api.h"
#include "../../virtio/device.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void drive(const struct api_bucket *in, const uint8_t *p, size_t n)
{
    struct tbucket b;
    bool on = in->size && in->refill_time; /* as the VMM's update: zero disables */
    struct vm_bucket cfg = {on ? in->size : 0, on ? in->one_time_burst : 0,
                            on ? in->refill_time : 0};

    tb_init(&b, &cfg);
    if (b.enabled && (b.refill_ns == 0 || b.size <= 0))
        abort(); /* an enabled bucket always has a divisor */
    for (; n >= 9; p += 9, n -= 9) {
        uint64_t v;
        memcpy(&v, p + 1, sizeof(v));
        switch (p[0] % 3) {
        case 0:
            (void)tb_consume(&b, v);
            break;
        case 1:
            tb_refund(&b, v);
            break;
        default:
            b.last_ns = v < b.last_ns ? b.last_ns - v : 0;
            break;
        }
        if (b.enabled && b.tokens > b.size)
            abort(); /* the bucket never holds more than its size */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct api_request req;
    char err[API_ERR_MAX];
    char *body = malloc(size + 1);

    if (!body)
        return 0;
    memcpy(body, data, size);
    body[size] = '\0';
    char *nl = memchr(body, '\n', size);
    size_t blen = nl ? (size_t)(nl - body) : size;
    const uint8_t *rest = nl ? data + blen + 1 : data + size;
    size_t rlen = size - (size_t)(rest - data);
    if (nl)
        *nl = '\0';
    err[0] = '\0';
    int ret = api_route("PATCH", "/drives/d", body, blen, &req, err, sizeof(err));
    if (ret && !err[0])
        abort(); /* every refusal carries a message */
    if (!ret && req.kind == API_REQ_PATCH_DRIVE) {
        const struct api_rate_limiter *rl = &req.u.drive.rate_limiter;
        if (rl->bandwidth.refill_time > VM_BUCKET_REFILL_MS_MAX ||
            rl->ops.refill_time > VM_BUCKET_REFILL_MS_MAX)
            abort(); /* the parser's bound */
        drive(&rl->bandwidth, rest, rlen);
        drive(&rl->ops, rest, rlen);
    }
    free(body);
    return 0;
}
