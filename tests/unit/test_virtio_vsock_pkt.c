/* virtio-vsock's pure packet helpers (virtio/vsock_pkt.c): the header's wire layout, the
 * checks on a guest's packet, the host client's CONNECT line and the credit arithmetic. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../virtio/vsock.h"

static void header_layout(void **state)
{
    (void)state;
    struct vsock_hdr h = {.src_cid = 0x0102030405060708ULL,
                          .dst_cid = 2,
                          .src_port = 0x11223344,
                          .dst_port = 52,
                          .len = 7,
                          .type = 1,
                          .op = VSOCK_OP_RW,
                          .flags = 3,
                          .buf_alloc = 65536,
                          .fwd_cnt = 0xfffffffe};
    uint8_t raw[VSOCK_HDR_LEN], again[VSOCK_HDR_LEN];
    vsock_hdr_write(&h, raw);
    assert_int_equal(raw[0], 0x08); /* little-endian */
    assert_int_equal(raw[7], 0x01);
    assert_int_equal(raw[8], 2);
    assert_int_equal(raw[16], 0x44);
    assert_int_equal(raw[20], 52);
    assert_int_equal(raw[24], 7);
    assert_int_equal(raw[28], 1);
    assert_int_equal(raw[30], VSOCK_OP_RW);
    assert_int_equal(raw[32], 3);
    assert_int_equal(raw[38], 1); /* 65536 */
    assert_int_equal(raw[40], 0xfe);
    struct vsock_hdr back;
    vsock_hdr_read(raw, &back);
    vsock_hdr_write(&back, again);
    assert_memory_equal(raw, again, VSOCK_HDR_LEN);
    assert_int_equal(back.fwd_cnt, 0xfffffffe);
    assert_int_equal(back.src_cid, h.src_cid);
}

static void checks(void **state)
{
    (void)state;
    struct vsock_hdr h = {.src_cid = 3, .dst_cid = 2, .type = 1, .op = VSOCK_OP_RW, .len = 10};
    assert_int_equal(vsock_check(&h, 3, 10), VSOCK_ACCEPT);
    assert_int_equal(vsock_check(&h, 3, 9), VSOCK_DROP);  /* beyond the chain */
    assert_int_equal(vsock_check(&h, 4, 10), VSOCK_DROP); /* another source */
    h.dst_cid = 3;
    assert_int_equal(vsock_check(&h, 3, 10), VSOCK_DROP); /* not for the host */
    h.dst_cid = 2, h.len = VSOCK_PKT_MAX + 1;
    assert_int_equal(vsock_check(&h, 3, UINT32_MAX), VSOCK_DROP);
    h.len = VSOCK_PKT_MAX;
    assert_int_equal(vsock_check(&h, 3, VSOCK_PKT_MAX), VSOCK_ACCEPT);
    h.op = VSOCK_OP_REQUEST, h.len = 1;
    assert_int_equal(vsock_check(&h, 3, 1), VSOCK_DROP); /* data on a control packet */
    h.len = 0;
    assert_int_equal(vsock_check(&h, 3, 0), VSOCK_ACCEPT);
    h.type = 2; /* SOCK_SEQPACKET */
    assert_int_equal(vsock_check(&h, 3, 0), VSOCK_RESET);
    h.type = 1, h.op = 0;
    assert_int_equal(vsock_check(&h, 3, 0), VSOCK_RESET);
    h.op = 8;
    assert_int_equal(vsock_check(&h, 3, 0), VSOCK_RESET);
    h.op = VSOCK_OP_CREDIT_REQUEST;
    assert_int_equal(vsock_check(&h, 3, 0), VSOCK_ACCEPT);
}

static int parse(const char *line, uint32_t *port)
{
    return vsock_connect_parse(line, strlen(line), port);
}

static void connect_line(void **state)
{
    (void)state;
    uint32_t p = 0;
    assert_int_equal(parse("CONNECT 52\n", &p), 0);
    assert_int_equal(p, 52);
    assert_int_equal(parse("connect 4294967295\n", &p), 0);
    assert_int_equal(p, 4294967295u);
    assert_int_equal(parse("  CoNnEcT\t7 \r\n", &p), 0);
    assert_int_equal(p, 7);
    static const char *const bad[] = {
            "CONNECT 52",
            "CONNECT\n",
            "CONNECT 4294967296\n",
            "CONNECT 5 6\n",
            "CONNECTION 5\n",
            "CONNECT5\n",
            "CONNECT -5\n",
            "CONNECT +5\n",
            "GET / HTTP/1.1\n",
            "\n",
            "CONNECT 0x10\n",
            "CONNECT 52\n\n",
            "CONNECT 1                       \n", /* 33 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], &p), -EINVAL);
    assert_int_equal(vsock_connect_parse("CONNECT 5\n", 0, &p), -EINVAL);
    assert_int_equal(vsock_connect_parse("CONNECT 5\0\n", 11, &p), -EINVAL);
}

static void credit(void **state)
{
    (void)state;
    assert_int_equal(vsock_peer_free(65536, 0, 0), 65536);
    assert_int_equal(vsock_peer_free(65536, 100, 1000), 65536 - 900);
    assert_int_equal(vsock_peer_free(65536, 0, 65536), 0);
    assert_int_equal(vsock_peer_free(65536, 0, 70000), 0);  /* overrun */
    assert_int_equal(vsock_peer_free(65536, 1000, 100), 0); /* forwarded more than sent */
    assert_int_equal(vsock_peer_free(65536, 0xfffffff0u, 0x10), 65536 - 0x20); /* wrapped */
    assert_int_equal(vsock_peer_free(0, 0, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(header_layout),
            cmocka_unit_test(checks),
            cmocka_unit_test(connect_line),
            cmocka_unit_test(credit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
