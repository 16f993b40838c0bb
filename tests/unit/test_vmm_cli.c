/* `ember run` options → struct vm_config, and the configuration checks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

static struct vm_config cfg;
static char err[256];

static int parse(int argc, const char **argv)
{
    cfg_defaults(&cfg);
    err[0] = 0;
    return cli_parse(&cfg, argc, (char **)argv, err, sizeof(err));
}

static void defaults(void **state)
{
    const char *argv[] = {"run", "--kernel", "k"};
    (void)state;
    assert_int_equal(parse(3, argv), 0);
    assert_string_equal(cfg.kernel_path, "k");
    assert_int_equal(cfg.vcpus, 1);
    assert_int_equal(cfg.mem_mib, 128);
    assert_string_equal(cfg.cmdline, DEFAULT_CMDLINE);
    assert_string_equal(cfg.initrd_path, "");
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), 0);
}

static void all_options(void **state)
{
    const char *argv[] = {"run",       "--kernel",  "k",       "--initrd",    "i",
                          "--cmdline", "a b",       "--vcpus", "4",           "--mem",
                          "512",       "--console", "/tmp/c",  "--log-level", "debug"};
    (void)state;
    assert_int_equal(parse(15, argv), 0);
    assert_string_equal(cfg.initrd_path, "i");
    assert_string_equal(cfg.cmdline, "a b");
    assert_int_equal(cfg.vcpus, 4);
    assert_int_equal(cfg.mem_mib, 512);
    assert_string_equal(cfg.console_path, "/tmp/c");
    assert_int_equal(log_level, LOG_DEBUG);
    log_level = LOG_INFO;
}

static void bad_options(void **state)
{
    const char *bad_num[] = {"run", "--kernel", "k", "--mem", "12x"};
    const char *neg[] = {"run", "--kernel", "k", "--vcpus", "-1"};
    const char *huge[] = {"run", "--kernel", "k", "--vcpus", "99999999999999999999"};
    const char *unknown[] = {"run", "--kernle", "k"};
    const char *missing[] = {"run", "--kernel"};
    const char *extra[] = {"run", "--kernel", "k", "stray"};
    (void)state;
    assert_int_equal(parse(5, bad_num), -EINVAL);
    assert_non_null(strstr(err, "--mem"));
    assert_int_equal(parse(5, neg), -EINVAL);
    assert_int_equal(parse(5, huge), -EINVAL);
    assert_int_equal(parse(3, unknown), -EINVAL);
    assert_non_null(strstr(err, "--kernle"));
    assert_int_equal(parse(2, missing), -EINVAL);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse(4, extra), -EINVAL);
}

static void long_command_line(void **state)
{
    static char line[CMDLINE_MAX + 1];
    const char *argv[] = {"run", "--kernel", "k", "--cmdline", line};
    (void)state;
    memset(line, 'x', CMDLINE_MAX - 1);
    line[CMDLINE_MAX - 1] = 0;
    assert_int_equal(parse(5, argv), 0);
    line[CMDLINE_MAX - 1] = 'x';
    line[CMDLINE_MAX] = 0;
    assert_int_equal(parse(5, argv), -EINVAL);
    assert_non_null(strstr(err, "2047"));
}

static void validation(void **state)
{
    (void)state;
    cfg_defaults(&cfg);
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), -EINVAL); /* no kernel */
    strcpy(cfg.kernel_path, "k");
    cfg.vcpus = 0;
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), -EINVAL);
    cfg.vcpus = VCPUS_MAX + 1;
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), -EINVAL);
    cfg.vcpus = VCPUS_MAX;
    cfg.mem_mib = 0;
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), -EINVAL);
    cfg.mem_mib = (uint64_t)MEM_MAX_MIB + 1;
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), -EINVAL);
    cfg.mem_mib = MEM_MAX_MIB;
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(defaults),    cmocka_unit_test(all_options),
            cmocka_unit_test(bad_options), cmocka_unit_test(long_command_line),
            cmocka_unit_test(validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
