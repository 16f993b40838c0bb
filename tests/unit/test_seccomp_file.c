/* ember's seccomp filter file (seccomp/filefmt.c): a written file reads back the same, and
 * every kind of bad file or program is refused with its reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <linux/audit.h>

#include "../../seccomp/seccomp.h"

static struct sc_filters in, out;
static uint8_t buf[SC_FILE_MAX + 64];
static char err[256];

/* A small valid program per role: load nr, allow nr 0, else trap. */
static size_t make_file(void)
{
    memset(&in, 0, sizeof(in));
    for (unsigned r = 0; r < SC_ROLES; r++) {
        struct sc_prog *p = &in.prog[r];
        p->insns[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);
        p->insns[1] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, r, 0, 1);
        p->insns[2] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0x7fff0000);
        p->insns[3] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0x00030000);
        p->len = 4;
    }
    size_t len = sc_file_size(&in);
    sc_file_write(&in, buf);
    return len;
}

static int parse(size_t len)
{
    err[0] = '\0';
    return sc_file_parse(&out, buf, len, err, sizeof(err));
}

static void round_trip(void **state)
{
    (void)state;
    size_t len = make_file();
    assert_int_equal(len, 24 + SC_ROLES * (24 + 4 * 8));
    assert_int_equal(parse(len), 0);
    for (unsigned r = 0; r < SC_ROLES; r++) {
        assert_int_equal(out.prog[r].len, 4);
        assert_memory_equal(out.prog[r].insns, in.prog[r].insns, 4 * sizeof(struct sock_filter));
    }
    assert_string_equal(sc_role_name(SC_ROLE_VCPU), "vcpu");
    assert_int_equal(sc_role_parse("opener"), SC_ROLE_OPENER);
    assert_int_equal(sc_role_parse("nope"), -1);
}

static void bad_headers(void **state)
{
    (void)state;
    size_t len = make_file();
    assert_int_equal(parse(0), -EINVAL);
    assert_non_null(strstr(err, "not an ember seccomp filter file"));
    buf[8] = 2; /* version */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "version 2"));
    make_file();
    buf[12] ^= 1; /* arch */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "audit arch"));
    make_file();
    buf[16] = SC_ROLES + 1;
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "programs"));
    make_file();
    assert_int_equal(parse(len + 8), -EINVAL);
    assert_non_null(strstr(err, "8 bytes after the last program"));
    assert_int_equal(parse(len - 1), -EINVAL);
    assert_non_null(strstr(err, "the file ends inside program 4"));
    assert_int_equal(parse(SC_FILE_MAX + 1), -EINVAL);
    assert_non_null(strstr(err, "too long"));
}

static void bad_roles(void **state)
{
    (void)state;
    size_t len = make_file();
    memcpy(buf + 24, "vcpu", 5); /* api's program now says vcpu: twice */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "role vcpu is given twice"));
    make_file();
    memcpy(buf + 24, "nobody", 7);
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "unknown role"));
    make_file();
    memset(buf + 24, 'a', SC_ROLE_LEN); /* no NUL in the name */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "unknown role"));
    make_file();
    memcpy(buf + 24, "api\0x", 5); /* not NUL-padded */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "unknown role"));
    make_file();
    buf[16] = SC_ROLES - 1; /* the last program left out */
    assert_int_equal(parse(len - (24 + 4 * 8)), -EINVAL);
    assert_non_null(strstr(err, "no program for role opener"));
    make_file();
    buf[24 + 16] = 0; /* zero instructions */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "0 instructions"));
    buf[24 + 16] = 0x01;
    buf[24 + 17] = 0x10; /* 4097 */
    assert_int_equal(parse(len), -EINVAL);
    assert_non_null(strstr(err, "4097 instructions (1 to 4096"));
}

static void bad_programs(void **state)
{
    struct sock_filter p[3];
    (void)state;
    p[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 64); /* past seccomp_data */
    p[1] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "outside seccomp_data"));
    p[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 2); /* unaligned */
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    p[0] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0); /* to the end */
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "jump past the end"));
    p[0] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0);
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    p[0] = (struct sock_filter)BPF_STMT(BPF_ST, 0); /* scratch memory */
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not allowed"));
    p[0] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_DIV | BPF_K, 0);
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    p[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);
    p[1] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 1); /* no return at the end */
    assert_int_equal(sc_prog_check(p, 2, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a return"));
    assert_int_equal(sc_prog_check(p, 0, err, sizeof(err)), -EINVAL);
    p[2] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
    assert_int_equal(sc_prog_check(p, 3, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(round_trip),
            cmocka_unit_test(bad_headers),
            cmocka_unit_test(bad_roles),
            cmocka_unit_test(bad_programs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
