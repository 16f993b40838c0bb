/* The guest agent's wire format (rootfs-tools/agent/proto.c): a request encoded by `ember
 * exec` parses back in the agent; malformed requests and frame headers are refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../rootfs-tools/agent/proto.h"

static void request_round_trip(void **state)
{
    (void)state;
    static uint8_t buf[AGENT_REQ_MAX + 8];
    char *argv[] = {"sh", "-c", "echo 'a b'", ""};
    const char *back[AGENT_ARGS_MAX + 1];
    int n = agent_req_encode(argv, 4, buf, sizeof(buf));
    assert_int_equal(n, 8 + 3 + 3 + 11 + 1);
    assert_int_equal(agent_le32(buf), (uint32_t)n - 4);
    assert_int_equal(agent_req_parse(buf + 4, (size_t)n - 4, back, AGENT_ARGS_MAX), 4);
    assert_string_equal(back[0], "sh");
    assert_string_equal(back[2], "echo 'a b'");
    assert_string_equal(back[3], "");
    assert_null(back[4]);
    /* too many arguments, too long, no room */
    static char *many[AGENT_ARGS_MAX + 1];
    for (int i = 0; i <= AGENT_ARGS_MAX; i++)
        many[i] = "x";
    assert_int_equal(agent_req_encode(many, AGENT_ARGS_MAX + 1, buf, sizeof(buf)), -E2BIG);
    assert_int_equal(agent_req_encode(argv, 0, buf, sizeof(buf)), -E2BIG);
    assert_int_equal(agent_req_encode(argv, 4, buf, 10), -E2BIG);
    static char big[AGENT_REQ_MAX];
    memset(big, 'a', sizeof(big) - 1);
    char *one[] = {big};
    assert_int_equal(agent_req_encode(one, 1, buf, sizeof(buf)), -E2BIG);
}

static void malformed_requests(void **state)
{
    (void)state;
    const char *argv[AGENT_ARGS_MAX + 1];
    static const struct {
        const char *body;
        size_t len;
    } bad[] = {
            {"", 0},
            {"\1\0\0", 3},
            {"\0\0\0\0", 4},      /* argc 0 */
            {"\1\0\0\0ls", 6},    /* no NUL */
            {"\1\0\0\0ls\0x", 8}, /* bytes after the last argument */
            {"\2\0\0\0ls\0", 7},  /* one argument short */
            {"\1\0\0\0\0", 5},    /* an empty program */
            {"\1\1\0\0ls\0", 7},  /* argc 257 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(
                agent_req_parse((const uint8_t *)bad[i].body, bad[i].len, argv, AGENT_ARGS_MAX),
                -EINVAL);
    assert_int_equal(agent_req_parse((const uint8_t *)"\2\0\0\0a\0b\0", 8, argv, 1), -EINVAL);
    assert_int_equal(agent_req_parse((const uint8_t *)"\2\0\0\0a\0b\0", 8, argv, 2), 2);
}

static void frames(void **state)
{
    (void)state;
    uint8_t h[AGENT_FRAME_HDR], type;
    uint32_t len;
    agent_frame_hdr(AGENT_STDERR, 300, h);
    assert_int_equal(agent_frame_check(h, &type, &len), 0);
    assert_int_equal(type, AGENT_STDERR);
    assert_int_equal(len, 300);
    agent_frame_hdr(AGENT_EXIT, 4, h);
    assert_int_equal(agent_frame_check(h, &type, &len), 0);
    agent_frame_hdr(AGENT_EXIT, 5, h);
    assert_int_equal(agent_frame_check(h, &type, &len), -EPROTO);
    agent_frame_hdr(AGENT_STDOUT, AGENT_CHUNK_MAX + 1, h);
    assert_int_equal(agent_frame_check(h, &type, &len), -EPROTO);
    agent_frame_hdr(0, 1, h);
    assert_int_equal(agent_frame_check(h, &type, &len), -EPROTO);
    agent_frame_hdr(4, 1, h);
    assert_int_equal(agent_frame_check(h, &type, &len), -EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(request_round_trip),
            cmocka_unit_test(malformed_requests),
            cmocka_unit_test(frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
