/* Token buckets for the rate limiter (as Firecracker's: size tokens refilled over
 * refill_time_ms, plus a one-time burst spent first). A request larger than the bucket is let
 * through when the bucket is full and leaves it in debt, so the long-run rate stays exact and no
 * request is ever dropped. The API refuses a refill time whose nanoseconds overflow 64 bits
 * (VM_BUCKET_REFILL_MS_MAX); the arithmetic here still saturates instead of wrapping and never
 * divides by zero, whatever the configuration. */
#include <errno.h>
#include <string.h>

#include "device.h"

void tb_init(struct tbucket *b, const struct vm_bucket *cfg)
{
    memset(b, 0, sizeof(*b));
    if (!cfg || cfg->size == 0 || cfg->refill_time_ms == 0)
        return; /* zero disables */
    b->enabled = true;
    b->size = cfg->size > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)cfg->size;
    /* Checked: a wrapped product could be 0 (2^58 ms is 2^64 ns), a divisor below. */
    if (__builtin_mul_overflow(cfg->refill_time_ms, 1000000ULL, &b->refill_ns))
        b->refill_ns = UINT64_MAX;
    b->tokens = b->size;
    b->burst = cfg->one_time_burst > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)cfg->one_time_burst;
    b->last_ns = clock_ns();
}

static void refill(struct tbucket *b, uint64_t now)
{
    if (b->refill_ns == 0 || b->size <= 0 || now <= b->last_ns)
        return;
    uint64_t dt = now - b->last_ns;
    /* tokens += size * dt / refill_ns, without overflow and without losing fractions. */
    unsigned __int128 add = (unsigned __int128)b->size * dt / b->refill_ns;
    if (add == 0)
        return;
    uint64_t used_ns = (uint64_t)((unsigned __int128)add * b->refill_ns / (uint64_t)b->size);
    b->last_ns += used_ns;
    if (add >= (unsigned __int128)(b->size - b->tokens)) {
        b->tokens = b->size;
        b->last_ns = now;
    } else {
        b->tokens += (int64_t)add;
    }
}

uint64_t tb_consume(struct tbucket *b, uint64_t n)
{
    if (!b->enabled || n == 0)
        return 0;
    uint64_t now = clock_ns();
    refill(b, now);
    int64_t want = n > (uint64_t)INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)n;
    if (b->burst > 0) { /* the one-time burst goes first */
        int64_t take = want < b->burst ? want : b->burst;
        b->burst -= take;
        want -= take;
        if (want == 0)
            return 0;
    }
    /* Enough tokens, or a full bucket for a request bigger than the bucket. */
    int64_t need = want < b->size ? want : b->size;
    if (b->tokens >= need) {
        b->tokens -= want;
        return 0;
    }
    /* Time until the bucket holds need tokens (saturated: at most 2^64-1 ns, 584 years). */
    if (b->size <= 0)
        return 0;
    uint64_t missing = (uint64_t)(need - b->tokens);
    unsigned __int128 wait = (unsigned __int128)missing * b->refill_ns / (uint64_t)b->size;
    if (wait > UINT64_MAX)
        return UINT64_MAX;
    return wait ? (uint64_t)wait : 1;
}

void tb_refund(struct tbucket *b, uint64_t n)
{
    if (!b->enabled)
        return;
    b->tokens += n > (uint64_t)b->size ? b->size : (int64_t)n;
    if (b->tokens > b->size) /* never above the size, as Firecracker's replenish */
        b->tokens = b->size;
}
