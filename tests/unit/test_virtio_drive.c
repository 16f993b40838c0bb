/* --drive / --rootfs option parsing (virtio/drive.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../virtio/virtio.h"

static struct vm_drive d;
static char err[256];

static void full_spec(void **state)
{
    (void)state;
    assert_int_equal(drive_parse(&d,
                                 "path=/a/b.img,ro,engine=async,cache=writeback,bw=1048576/s,"
                                 "iops=100,id=data",
                                 false, err, sizeof(err)),
                     0);
    assert_string_equal(d.path, "/a/b.img");
    assert_string_equal(d.id, "data");
    assert_true(d.read_only && d.async && d.writeback && !d.root);
    assert_int_equal(d.bw.size, 1048576);
    assert_int_equal(d.bw.refill_time_ms, 1000);
    assert_int_equal(d.ops.size, 100);
    assert_int_equal(drive_parse(&d, "path=x", false, err, sizeof(err)), 0);
    assert_false(d.read_only || d.async || d.writeback);
    assert_int_equal(d.bw.size, 0);
    assert_int_equal(drive_parse(&d, "path=x,bw=0", false, err, sizeof(err)), 0);
    assert_int_equal(d.bw.refill_time_ms, 0);
}

static void rootfs(void **state)
{
    (void)state;
    assert_int_equal(drive_parse(&d, "/r,oot.ext4", true, err, sizeof(err)), 0);
    assert_string_equal(d.path, "/r,oot.ext4");
    assert_true(d.root);
    assert_int_equal(drive_parse(&d, "", true, err, sizeof(err)), -EINVAL);
}

static void bad_specs(void **state)
{
    (void)state;
    static const char *const bad[] = {
            "",
            "ro",
            "path=",
            "path=x,rw",
            "path=x,engine=aio",
            "path=x,bw=",
            "path=x,bw=-1",
            "path=x,iops=1k",
            "path=x,cache=",
            "path=x,,ro",
            "path=x,bw=99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(drive_parse(&d, bad[i], false, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(full_spec),
            cmocka_unit_test(rootfs),
            cmocka_unit_test(bad_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
