/* virtio-blk's pure parts: a request split over any descriptor layout (virtio/blk_req.c), and
 * the token bucket (virtio/tbucket.c), checked through the waits it asks for, not through
 * time. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../virtio/blk.h"

static void parse_any_layout(void **state)
{
    (void)state;
    static struct vq_chain c;
    static struct vblk_req r;
    uint8_t hdr[16] = {1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0};
    uint8_t body[1040], st = 0xee;
    memcpy(body, hdr + 5, 11); /* header split 5 + 11, then 1024 bytes of data */
    c.niov = 3;
    c.nout = 2;
    c.iov[0] = (struct iovec){hdr, 5};
    c.iov[1] = (struct iovec){body, 11 + 1024};
    c.iov[2] = (struct iovec){&st, 1};
    c.out_len = 1040;
    c.in_len = 1;
    assert_int_equal(vblk_parse(&c, &r), 0);
    assert_int_equal(r.type, VIRTIO_BLK_T_OUT);
    assert_int_equal(r.sector, 9);
    assert_int_equal(r.len, 1024);
    assert_int_equal(r.niov, 1);
    assert_ptr_equal(r.iov[0].iov_base, body + 11);
    assert_ptr_equal(r.status, &st);
    assert_int_equal(vblk_check(&r, 10, false), VIRTIO_BLK_S_IOERR); /* 9 + 2 > 10 */
    assert_int_equal(vblk_check(&r, 11, false), VIRTIO_BLK_S_OK);
    assert_int_equal(vblk_check(&r, 11, true), VIRTIO_BLK_S_IOERR);
    c.out_len = 15;
    assert_int_equal(vblk_parse(&c, &r), -EINVAL);
    /* No device-writable byte: no status pointer, even after a request that had one. */
    c.out_len = 1040;
    c.niov = c.nout = 2;
    c.in_len = 0;
    assert_int_equal(vblk_parse(&c, &r), -EINVAL);
    assert_null(r.status);
}

static void token_bucket(void **state)
{
    (void)state;
    struct tbucket b;
    struct vm_bucket cfg = {.size = 1000, .refill_time_ms = 1000, .one_time_burst = 500};
    tb_init(&b, NULL);
    assert_int_equal(tb_consume(&b, 1ULL << 40), 0); /* disabled */
    tb_init(&b, &cfg);
    assert_int_equal(tb_consume(&b, 500), 0);  /* the burst */
    assert_int_equal(tb_consume(&b, 1000), 0); /* the bucket */
    uint64_t wait = tb_consume(&b, 500);
    /* 500 tokens at 1000 per second: about half a second (less what already refilled). */
    assert_true(wait > 400000000ULL && wait <= 500000000ULL);
    tb_refund(&b, 1000);
    assert_int_equal(tb_consume(&b, 500), 0);
    /* A request larger than the bucket goes through a full bucket and leaves a debt. */
    tb_init(&b, &(struct vm_bucket){.size = 100, .refill_time_ms = 100});
    assert_int_equal(tb_consume(&b, 1000), 0);
    wait = tb_consume(&b, 1);
    assert_true(wait > 800000000ULL && wait <= 910000000ULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(parse_any_layout),
            cmocka_unit_test(token_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
