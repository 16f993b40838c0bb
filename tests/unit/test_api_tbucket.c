/* Token-bucket overflow (security review F6): the API body parser refuses a bucket whose
 * arithmetic would overflow (Firecracker's bounds), and the bucket itself (virtio/tbucket.c)
 * never divides by zero or wraps, whatever configuration reaches it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../api-socket/api.h"
#include "../../virtio/device.h"

static struct api_request req;
static char err[API_ERR_MAX];

/* PATCH /drives/d with one ops bucket {size, refill_time[, one_time_burst]}. */
static int patch(const char *size, const char *refill, const char *burst)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"drive_id\":\"d\",\"rate_limiter\":{\"ops\":{\"size\":%s,\"refill_time\":%s%s%s}}}",
             size, refill, burst ? ",\"one_time_burst\":" : "", burst ? burst : "");
    err[0] = '\0';
    return api_route("PATCH", "/drives/d", body, strlen(body), &req, err, sizeof(err));
}

static void refill_time_bounds(void **state)
{
    char max[32], over[32];
    (void)state;
    snprintf(max, sizeof(max), "%llu", (unsigned long long)VM_BUCKET_REFILL_MS_MAX);
    snprintf(over, sizeof(over), "%llu", (unsigned long long)VM_BUCKET_REFILL_MS_MAX + 1);
    assert_int_equal(patch("10", max, NULL), 0);
    assert_int_equal(req.u.drive.rate_limiter.ops.refill_time, VM_BUCKET_REFILL_MS_MAX);
    assert_int_equal(patch("10", over, NULL), -EINVAL);
    assert_non_null(strstr(err, "`refill_time` is out of range"));
    /* The review's reproducer: 2^58 ms is 2^64 ns, which wrapped to a zero divisor. */
    assert_int_equal(patch("10", "288230376151711744", NULL), -EINVAL);
    assert_non_null(strstr(err, "`refill_time` is out of range"));
    assert_int_equal(patch("10", "9223372036854775807", NULL), -EINVAL);
}

static void size_and_burst_bounds(void **state)
{
    (void)state;
    assert_int_equal(patch("9223372036854775807", "1", "9223372036854775807"), 0);
    assert_int_equal(req.u.drive.rate_limiter.ops.size, (uint64_t)INT64_MAX);
    assert_int_equal(patch("9223372036854775808", "1", NULL), -EINVAL); /* not an int64 */
    assert_int_equal(patch("-1", "1", NULL), -EINVAL);
    assert_int_equal(patch("1", "1", "-5"), -EINVAL);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A configuration that skipped the API's check still gives a working, non-zero divisor. */
static void wrapping_refill_time(void **state)
{
    struct tbucket b;
    (void)state;
    tb_init(&b, &(struct vm_bucket){.size = 10, .refill_time_ms = 1ULL << 58});
    assert_true(b.enabled);
    assert_int_not_equal(b.refill_ns, 0);
    assert_int_equal(b.refill_ns, UINT64_MAX); /* saturated, not wrapped */
    assert_int_equal(tb_consume(&b, 10), 0);
    assert_true(tb_consume(&b, 1) > 0); /* SIGFPE here before the fix */
    tb_init(&b, &(struct vm_bucket){.size = 10, .refill_time_ms = UINT64_MAX});
    assert_int_equal(b.refill_ns, UINT64_MAX);
    assert_int_equal(tb_consume(&b, 10), 0);
    assert_true(tb_consume(&b, 1) > 0);
}

/* The time to wait is saturated instead of truncated to 64 bits. */
static void wait_saturates(void **state)
{
    struct tbucket b;
    (void)state;
    tb_init(&b, &(struct vm_bucket){.size = 1, .refill_time_ms = VM_BUCKET_REFILL_MS_MAX});
    assert_int_equal(tb_consume(&b, 1), 0);
    assert_true(tb_consume(&b, 1) >= VM_BUCKET_REFILL_MS_MAX * 1000000ULL - 1000000000ULL);
    /* A full bucket lets a huge request through and leaves a debt of ~2^61 tokens, each worth
     * ~2^64 ns: the wait is far past 64 bits and comes back as the largest value. */
    tb_init(&b, &(struct vm_bucket){.size = 1, .refill_time_ms = VM_BUCKET_REFILL_MS_MAX});
    assert_int_equal(tb_consume(&b, UINT64_MAX), 0);
    assert_int_equal(tb_consume(&b, 1), UINT64_MAX);
}

/* A huge size times a long idle time: the refill caps at the size, nothing wraps. */
static void long_idle_refill(void **state)
{
    struct tbucket b;
    (void)state;
    tb_init(&b, &(struct vm_bucket){.size = INT64_MAX, .refill_time_ms = 1});
    assert_int_equal(tb_consume(&b, INT64_MAX), 0);
    b.last_ns = 0; /* the bucket last refilled at boot: dt is the whole uptime */
    assert_int_equal(tb_consume(&b, 1000), 0);
    assert_true(b.tokens > 0 && b.tokens <= b.size);
    /* A clock before the last refill (never from CLOCK_MONOTONIC) adds nothing. */
    b.last_ns = now_ns() + 1000000000ULL;
    int64_t before = b.tokens;
    assert_int_equal(tb_consume(&b, 1), 0);
    assert_int_equal(b.tokens, before - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(refill_time_bounds),   cmocka_unit_test(size_and_burst_bounds),
            cmocka_unit_test(wrapping_refill_time), cmocka_unit_test(wait_saturates),
            cmocka_unit_test(long_idle_refill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
