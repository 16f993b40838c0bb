/* Unit tests for the guest init's kernel command-line parser (rootfs-tools/init). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "../../rootfs-tools/init/cmdline.h"

static char out[64];

static void test_quoted_value(void **state)
{
    (void)state;
    assert_int_equal(cmdline_get("console=ttyS0 ember.cmd=\"uname -a; ls\" reboot=k\n", "ember.cmd",
                                 out, sizeof(out)),
                     12);
    assert_string_equal(out, "uname -a; ls");
}

static void test_plain_value_and_end_of_line(void **state)
{
    (void)state;
    assert_int_equal(cmdline_get("a=1 ember.cmd=true", "ember.cmd", out, sizeof(out)), 4);
    assert_string_equal(out, "true");
    assert_int_equal(cmdline_get("ember.cmd=x\n", "ember.cmd", out, sizeof(out)), 1);
    assert_string_equal(out, "x");
}

static void test_empty_values(void **state)
{
    (void)state;
    assert_int_equal(cmdline_get("ember.cmd= a", "ember.cmd", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(cmdline_get("ember.cmd=\"\"", "ember.cmd", out, sizeof(out)), 0);
}

static void test_absent_or_prefix_only(void **state)
{
    (void)state;
    assert_int_equal(cmdline_get("", "ember.cmd", out, sizeof(out)), -ENOENT);
    assert_int_equal(
            cmdline_get("ember.cmdx=1 xember.cmd=2 ember.cmd", "ember.cmd", out, sizeof(out)),
            -ENOENT);
}

static void test_key_inside_another_quoted_value_is_not_matched(void **state)
{
    (void)state;
    assert_int_equal(
            cmdline_get("foo=\"a ember.cmd=evil\" ember.cmd=good", "ember.cmd", out, sizeof(out)),
            4);
    assert_string_equal(out, "good");
}

static void test_bad_input(void **state)
{
    (void)state;
    assert_int_equal(cmdline_get("ember.cmd=\"never closed", "ember.cmd", out, sizeof(out)),
                     -EINVAL);
    char small[4];
    assert_int_equal(cmdline_get("ember.cmd=abcd", "ember.cmd", small, sizeof(small)),
                     -ENAMETOOLONG);
    assert_int_equal(cmdline_get("ember.cmd=abc", "ember.cmd", small, sizeof(small)), 3);
    assert_int_equal(cmdline_get("ember.cmd=a", "ember.cmd", small, 0), -EINVAL);
    assert_int_equal(cmdline_get("ember.cmd=a", "", small, sizeof(small)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_quoted_value),
            cmocka_unit_test(test_plain_value_and_end_of_line),
            cmocka_unit_test(test_empty_values),
            cmocka_unit_test(test_absent_or_prefix_only),
            cmocka_unit_test(test_key_inside_another_quoted_value_is_not_matched),
            cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
