/* `ember run` options → struct vm_config, and the configuration checks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

static struct vm_config cfg;
static char err[256];

static int parse(int argc, const char **argv)
{
    cfg_free(&cfg);
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
    assert_null(cfg.initrd_path);
    assert_null(cfg.console_path);
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
    cfg_free(&cfg);
    cfg_defaults(&cfg);
    assert_int_equal(cfg_validate(&cfg, err, sizeof(err)), -EINVAL); /* no kernel */
    assert_int_equal(cfg_set_path(&cfg.kernel_path, "k", "kernel", err, sizeof(err)), 0);
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

/* The configuration's drive rules, which the API and `ember run` share: ids, one root,
 * VM_DRIVES_MAX drives, a PUT with a known id replaces that drive. */
static void drive_rules(void **state)
{
    (void)state;
    cfg_free(&cfg);
    cfg_defaults(&cfg);
    struct vm_drive d = {.id = "bad-id", .path = strdup("p")};
    assert_int_equal(cfg_put_drive(&cfg, &d, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "alphanumeric"));
    assert_non_null(d.path); /* still the caller's */
    snprintf(d.id, sizeof(d.id), "root");
    d.root = true;
    assert_int_equal(cfg_put_drive(&cfg, &d, err, sizeof(err)), 0);
    assert_null(d.path); /* taken */
    struct vm_drive r2 = {.id = "root2", .root = true, .path = strdup("q")};
    assert_int_equal(cfg_put_drive(&cfg, &r2, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "root block device already exists"));
    r2.root = false;
    for (unsigned i = 1; i < VM_DRIVES_MAX; i++) {
        snprintf(r2.id, sizeof(r2.id), "d%u", i);
        r2.path = strdup("q");
        assert_int_equal(cfg_put_drive(&cfg, &r2, err, sizeof(err)), 0);
    }
    assert_int_equal(cfg.ndrives, VM_DRIVES_MAX);
    snprintf(r2.id, sizeof(r2.id), "one_more");
    r2.path = strdup("q");
    assert_int_equal(cfg_put_drive(&cfg, &r2, err, sizeof(err)), -ENOSPC);
    snprintf(r2.id, sizeof(r2.id), "d3"); /* a known id: replaced, not added */
    assert_int_equal(cfg_put_drive(&cfg, &r2, err, sizeof(err)), 0);
    assert_int_equal(cfg.ndrives, VM_DRIVES_MAX);
    assert_string_equal(cfg_drive(&cfg, "d3")->path, "q");
    /* A 64-character id is the limit, 65 is refused. */
    char id65[CFG_ID_MAX + 2];
    memset(id65, 'a', CFG_ID_MAX + 1);
    id65[CFG_ID_MAX + 1] = 0;
    assert_false(cfg_id_valid(id65));
    id65[CFG_ID_MAX] = 0;
    assert_true(cfg_id_valid(id65));
    cfg_free(&cfg);
}

/* The command line and the devices' arguments must fit together: whichever grows last is
 * refused, so InstanceStart never finds the line too long. */
static void cmdline_room_for_devices(void **state)
{
    static char line[CMDLINE_MAX];
    (void)state;
    cfg_free(&cfg);
    cfg_defaults(&cfg);
    memset(line, 'x', 2010);
    line[1980] = 0;
    assert_int_equal(cfg_set_cmdline(&cfg, line, err, sizeof(err)), 0);
    struct vm_drive d = {.id = "root", .root = true, .path = strdup("p")};
    assert_int_equal(cfg_put_drive(&cfg, &d, err, sizeof(err)), 0); /* 1980 + 17 + 36 */
    struct vm_drive e = {.id = "more", .path = strdup("q")};
    assert_int_equal(cfg_put_drive(&cfg, &e, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "devices' arguments"));
    cfg_drive_free(&e);
    line[1980] = 'x'; /* 2010 + 17 + 36 */
    line[2010] = 0;
    assert_int_equal(cfg_set_cmdline(&cfg, line, err, sizeof(err)), -EINVAL);
    cfg_free(&cfg);
}

/* `ember run` drives: unnamed ones are drive1, drive2 ... the root one is rootfs; the 20th is
 * refused at parse time. */
static void run_drives(void **state)
{
    (void)state;
    const char *argv[] = {"run",     "--kernel", "k",       "--rootfs",       "r",
                          "--drive", "path=a",   "--drive", "path=b,id=named"};
    assert_int_equal(parse(9, argv), 0);
    assert_int_equal(cfg.ndrives, 3);
    assert_string_equal(cfg.drives[0].id, "rootfs");
    assert_string_equal(cfg.drives[1].id, "drive1");
    assert_string_equal(cfg.drives[2].id, "named");
    const char *many[4 + 2 * (VM_DRIVES_MAX + 1)];
    int n = 0;
    many[n++] = "run";
    many[n++] = "--kernel";
    many[n++] = "k";
    for (int i = 0; i <= VM_DRIVES_MAX; i++) {
        many[n++] = "--drive";
        many[n++] = "path=x";
    }
    assert_int_equal(parse(n, many), -ENOSPC);
    assert_non_null(strstr(err, "at most 19"));
    cfg_free(&cfg);
}

/* A rate limiter whose arithmetic would overflow is refused, from --drive or any other path. */
static void bucket_bounds(void **state)
{
    const char *argv[] = {"run", "--kernel", "k", "--drive", "path=x,bw=9223372036854775808"};
    (void)state;
    assert_int_equal(parse(5, argv), -EINVAL);
    assert_non_null(strstr(err, "rate limiter"));
    argv[4] = "path=x,iops=9223372036854775807";
    assert_int_equal(parse(5, argv), 0);
    cfg_free(&cfg);
    cfg_defaults(&cfg);
    /* as a configuration that did not come through the API's body parser might */
    struct vm_drive d = {.id = "d", .path = strdup("p")};
    d.ops.refill_time_ms = VM_BUCKET_REFILL_MS_MAX + 1;
    assert_int_equal(cfg_put_drive(&cfg, &d, err, sizeof(err)), -EINVAL);
    d.ops = (struct vm_bucket){.size = 1,
                               .refill_time_ms = VM_BUCKET_REFILL_MS_MAX,
                               .one_time_burst = (uint64_t)INT64_MAX + 1};
    assert_int_equal(cfg_put_drive(&cfg, &d, err, sizeof(err)), -EINVAL);
    d.ops.one_time_burst = INT64_MAX;
    assert_int_equal(cfg_put_drive(&cfg, &d, err, sizeof(err)), 0);
    cfg_free(&cfg);
}

/* `ember run --vsock cid=N,uds=PATH`: the configuration's rules (CID 3 and up, a socket
 * path), the device counted among the 19. */
static void run_vsock(void **state)
{
    (void)state;
    const char *argv[] = {"run", "--kernel", "k", "--vsock", "cid=3,uds=/run/v.sock"};
    assert_int_equal(parse(5, argv), 0);
    assert_true(cfg.vsock.enabled);
    assert_int_equal(cfg.vsock.guest_cid, 3);
    assert_string_equal(cfg.vsock.uds_path, "/run/v.sock");
    const char *bad[][2] = {
            {"cid=2,uds=/v", "Invalid guest CID 2"},
            {"cid=4294967295,uds=/v", "Invalid guest CID"},
            {"cid=4294967296,uds=/v", "is not a number"},
            {"cid=-3,uds=/v", "is not a number"},
            {"cid=,uds=/v", "is not a number"},
            {"uds=/v", "needs cid=N and uds=PATH"},
            {"cid=3", "needs cid=N and uds=PATH"},
            {"cid=3,uds=/v,x=1", "unknown option 'x'"},
            {"cid", "not KEY=VALUE"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[] = {"run", "--kernel", "k", "--vsock", bad[i][0]};
        assert_int_equal(parse(5, one), -EINVAL);
        if (!strstr(err, bad[i][1]))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i][0], err, bad[i][1]);
    }
}

/* `ember run --net tap=NAME[,mac=MAC][,id=ID]`: net0, net1 ... unless named; MACs parsed;
 * the configuration's rules (unique MAC and TAP, devices shared with drives, the command-line
 * room) as for the API. */
static void run_nets(void **state)
{
    (void)state;
    const char *argv[] = {"run",   "--kernel",       "k", "--net", "tap=tap0,mac=06:00:AC:10:00:02",
                          "--net", "tap=tap1,id=lan"};
    assert_int_equal(parse(7, argv), 0);
    assert_int_equal(cfg.nnets, 2);
    assert_string_equal(cfg.nets[0].id, "net0");
    assert_string_equal(cfg.nets[0].host_dev_name, "tap0");
    assert_true(cfg.nets[0].has_mac);
    assert_int_equal(cfg.nets[0].mac[2], 0xac);
    assert_string_equal(cfg.nets[1].id, "lan");
    assert_false(cfg.nets[1].has_mac);
    const char *bad[][2] = {
            {"mac=06:00:ac:10:00:02", "needs tap=NAME"},
            {"tap=t,mac=06:00:ac:10:00", "is not xx:xx"},
            {"tap=t,mac=06:00:ac:10:00:02:03", "is not xx:xx"},
            {"tap=t,speed=10", "unknown option 'speed'"},
            {"tap=a_name_longer_than_15", "longer than 15"},
            {"tap", "not KEY=VALUE"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[] = {"run", "--kernel", "k", "--net", bad[i][0]};
        assert_int_equal(parse(5, one), -EINVAL);
        if (!strstr(err, bad[i][1]))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i][0], err, bad[i][1]);
    }
    const char *dup_mac[] = {"run",
                             "--kernel",
                             "k",
                             "--net",
                             "tap=a,mac=02:00:00:00:00:01",
                             "--net",
                             "tap=b,mac=02:00:00:00:00:01"};
    assert_int_equal(parse(7, dup_mac), -EINVAL);
    assert_non_null(strstr(err, "The MAC address is already in use"));
    const char *dup_tap[] = {"run", "--kernel", "k", "--net", "tap=a", "--net", "tap=a"};
    assert_int_equal(parse(7, dup_tap), -EINVAL);
    assert_non_null(strstr(err, "host device name is already in use"));
    const char *dup_id[] = {"run", "--kernel", "k", "--net", "tap=a,id=x", "--net", "tap=b,id=x"};
    assert_int_equal(parse(7, dup_id), -EINVAL);
    /* 18 drives and 1 net fill the 19 lines; one more of either is refused */
    const char *many[8 + 2 * VM_DEVS_MAX];
    int n = 0;
    many[n++] = "run";
    many[n++] = "--kernel";
    many[n++] = "k";
    for (int i = 0; i < VM_DEVS_MAX - 1; i++) {
        many[n++] = "--drive";
        many[n++] = "path=x";
    }
    many[n++] = "--net";
    many[n++] = "tap=a";
    assert_int_equal(parse(n, many), 0);
    many[n++] = "--net";
    many[n++] = "tap=b";
    assert_int_equal(parse(n, many), -ENOSPC);
    assert_non_null(strstr(err, "Too many network interfaces"));
    many[n - 2] = "--drive";
    many[n - 1] = "path=y";
    assert_int_equal(parse(n, many), -ENOSPC);
    assert_non_null(strstr(err, "Too many drives"));
    cfg_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(defaults),      cmocka_unit_test(all_options),
            cmocka_unit_test(bad_options),   cmocka_unit_test(long_command_line),
            cmocka_unit_test(validation),    cmocka_unit_test(drive_rules),
            cmocka_unit_test(run_drives),    cmocka_unit_test(cmdline_room_for_devices),
            cmocka_unit_test(bucket_bounds), cmocka_unit_test(run_nets),
            cmocka_unit_test(run_vsock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
