/* Unit tests for jailer/args.c: the ember-jailer command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "../../jailer/jailer.h"

static struct jail_args a;

#define BASE "--id", "vm-1", "--exec-file", "/bin/ember", "--uid", "123", "--gid", "456"

/* Parses a NULL-terminated list of arguments after argv[0]. */
static int parse_list(const char *const *list)
{
    static char *argv[64];
    int argc = 0;

    argv[argc++] = (char *)"ember-jailer";
    for (; *list && argc < 63; list++)
        argv[argc++] = (char *)*list;
    argv[argc] = NULL;
    return args_parse(&a, argc, argv);
}
#define parse(...) parse_list((const char *const[]){__VA_ARGS__, (const char *)0})

static void expect_fail(int rc, int code, const char *needle)
{
    assert_int_equal(rc, -22);
    assert_int_equal(a.exit_code, code);
    assert_non_null(strstr(a.err, needle));
}

static void test_minimal_defaults(void **state)
{
    (void)state;
    assert_int_equal(parse(BASE), 0);
    assert_string_equal(a.id, "vm-1");
    assert_string_equal(a.exec_file, "/bin/ember");
    assert_int_equal(a.uid, 123);
    assert_int_equal(a.gid, 456);
    assert_string_equal(a.chroot_base, "/srv/jailer");
    assert_null(a.netns);
    assert_int_equal(a.cgroup_version, 1);
    assert_null(a.parent_cgroup);
    assert_int_equal(a.n_cgroups, 0);
    assert_int_equal(a.n_rlimits, 0);
    assert_false(a.daemonize);
    assert_false(a.new_pid_ns);
    assert_int_equal(a.extra_argc, 0);
}

static void test_all_flags(void **state)
{
    (void)state;
    assert_int_equal(parse(BASE, "--chroot-base-dir", "/tmp/j", "--netns", "/var/run/netns/x",
                           "--cgroup", "cpuset.cpus=0-1", "--cgroup=cpu.shares=512",
                           "--cgroup-version", "2", "--parent-cgroup", "fc/a_b", "--resource-limit",
                           "no-file=100", "--resource-limit=fsize=4096", "--daemonize",
                           "--new-pid-ns", "--", "--api-sock", "/run/x.sock"),
                     0);
    assert_string_equal(a.chroot_base, "/tmp/j");
    assert_string_equal(a.netns, "/var/run/netns/x");
    assert_int_equal(a.n_cgroups, 2);
    assert_string_equal(a.cgroups[0].file, "cpuset.cpus");
    assert_string_equal(a.cgroups[0].value, "0-1");
    assert_string_equal(a.cgroups[1].file, "cpu.shares");
    assert_string_equal(a.cgroups[1].value, "512");
    assert_int_equal(a.cgroup_version, 2);
    assert_string_equal(a.parent_cgroup, "fc/a_b");
    assert_int_equal(a.n_rlimits, 2);
    assert_int_equal(a.rlimits[0].resource, RLIMIT_NOFILE);
    assert_int_equal(a.rlimits[0].value, 100);
    assert_int_equal(a.rlimits[1].resource, RLIMIT_FSIZE);
    assert_int_equal(a.rlimits[1].value, 4096);
    assert_true(a.daemonize);
    assert_true(a.new_pid_ns);
    assert_int_equal(a.extra_argc, 2);
    assert_string_equal(a.extra_argv[0], "--api-sock");
    assert_string_equal(a.extra_argv[1], "/run/x.sock");
}

static void test_help_version_need_nothing_else(void **state)
{
    (void)state;
    assert_int_equal(parse("--help"), 0);
    assert_true(a.help);
    assert_int_equal(parse("--version"), 0);
    assert_true(a.version);
}

static void test_id(void **state)
{
    char id64[65], id65[66];

    (void)state;
    memset(id64, 'a', 64);
    id64[64] = '\0';
    memset(id65, 'b', 65);
    id65[65] = '\0';
    assert_int_equal(parse("--id", id64, "--exec-file", "/x", "--uid", "1", "--gid", "1"), 0);
    expect_fail(parse("--id", id65, "--exec-file", "/x", "--uid", "1", "--gid", "1"), JEXIT_BAD_ID,
                "--id");
    expect_fail(parse("--id", "", "--exec-file", "/x"), JEXIT_BAD_ID, "--id");
    expect_fail(parse("--id", "../etc"), JEXIT_BAD_ID, "letters, digits");
    expect_fail(parse("--id", "a/b"), JEXIT_BAD_ID, "--id");
    expect_fail(parse("--id", "a_b"), JEXIT_BAD_ID, "--id");
    expect_fail(parse("--id", "a.b"), JEXIT_BAD_ID, "--id");
    assert_true(args_valid_id("Ab-09"));
    assert_false(args_valid_id("a b"));
}

static void test_exec_file(void **state)
{
    (void)state;
    expect_fail(parse("--exec-file", "../ember"), JEXIT_BAD_EXEC, "'..'");
    expect_fail(parse("--exec-file", "/usr/../bin/ember"), JEXIT_BAD_EXEC, "'..'");
    expect_fail(parse("--exec-file", "/usr/./ember"), JEXIT_BAD_EXEC, "'..'");
    expect_fail(parse("--exec-file", ""), JEXIT_BAD_EXEC, "empty");
    assert_true(args_no_dot_components("/a/..b/c."));
    assert_false(args_no_dot_components("a/.."));
}

static void test_uid_gid(void **state)
{
    (void)state;
    expect_fail(parse("--uid", "-1"), JEXIT_BAD_UID_GID, "--uid");
    expect_fail(parse("--uid", "4294967295"), JEXIT_BAD_UID_GID, "--uid");
    expect_fail(parse("--uid", "99999999999999999999"), JEXIT_BAD_UID_GID, "--uid");
    expect_fail(parse("--gid", "12a"), JEXIT_BAD_UID_GID, "--gid");
    expect_fail(parse("--gid", ""), JEXIT_BAD_UID_GID, "--gid");
    assert_int_equal(parse(BASE, "--uid", "4294967294"), -22); /* repeated */
    assert_int_equal(parse("--id", "x", "--exec-file", "/x", "--uid", "4294967294", "--gid", "0"),
                     0);
    assert_int_equal(a.uid, 4294967294u);
}

/* uid/gid 0 are accepted (Kata passes them; the jailer warns), refused by --strict-sandbox. */
static void test_strict_sandbox(void **state)
{
    (void)state;
    assert_int_equal(parse("--id", "x", "--exec-file", "/x", "--uid", "0", "--gid", "0"), 0);
    assert_false(a.strict_sandbox);
    expect_fail(
            parse("--id", "x", "--exec-file", "/x", "--uid", "0", "--gid", "5", "--strict-sandbox"),
            JEXIT_BAD_UID_GID, "--strict-sandbox");
    expect_fail(
            parse("--id", "x", "--exec-file", "/x", "--uid", "5", "--gid", "0", "--strict-sandbox"),
            JEXIT_BAD_UID_GID, "must not be 0");
    assert_int_equal(parse(BASE, "--strict-sandbox", "--userfaultfd"), 0);
    assert_true(a.strict_sandbox && a.userfaultfd);
}

static void test_chroot_base(void **state)
{
    (void)state;
    expect_fail(parse("--chroot-base-dir", "srv/jailer"), JEXIT_BAD_CHROOT, "absolute");
    expect_fail(parse("--chroot-base-dir", "/srv/../etc"), JEXIT_BAD_CHROOT, "'..'");
}

static void test_netns(void **state)
{
    (void)state;
    expect_fail(parse("--netns", "netns/x"), JEXIT_BAD_NETNS, "absolute");
}

static void test_cgroup(void **state)
{
    (void)state;
    expect_fail(parse("--cgroup", "cpuset.cpus"), JEXIT_BAD_CGROUP, "FILE=VALUE");
    expect_fail(parse("--cgroup", "=1"), JEXIT_BAD_CGROUP, "bad file");
    expect_fail(parse("--cgroup", "cpus=1"), JEXIT_BAD_CGROUP, "<controller>.<name>");
    expect_fail(parse("--cgroup", "../x.y=1"), JEXIT_BAD_CGROUP, "<controller>.<name>");
    expect_fail(parse("--cgroup", "a/b.c=1"), JEXIT_BAD_CGROUP, "<controller>.<name>");
    expect_fail(parse("--cgroup", "cpu.shares="), JEXIT_BAD_CGROUP, "value");
    expect_fail(parse("--cgroup", "cpu.shares=1\n2"), JEXIT_BAD_CGROUP, "value");
    expect_fail(parse("--cgroup-version", "3"), JEXIT_BAD_CGROUP, "1 or 2");
    expect_fail(parse("--parent-cgroup", "/abs"), JEXIT_BAD_CGROUP, "relative");
    expect_fail(parse("--parent-cgroup", "a/../b"), JEXIT_BAD_CGROUP, "relative");
    expect_fail(parse("--parent-cgroup", "a//b"), JEXIT_BAD_CGROUP, "relative");
    expect_fail(parse("--parent-cgroup", "a b"), JEXIT_BAD_CGROUP, "relative");
}

static void test_cgroup_limit(void **state)
{
    const char *argv[2 + 2 * (JAIL_MAX_CGROUPS + 1)];
    int n = 0;

    (void)state;
    argv[n++] = "ember-jailer";
    for (int i = 0; i <= JAIL_MAX_CGROUPS; i++) {
        argv[n++] = "--cgroup";
        argv[n++] = "cpu.shares=2";
    }
    argv[n] = NULL;
    expect_fail(args_parse(&a, n, (char **)argv), JEXIT_BAD_CGROUP, "too many");
}

static void test_rlimit(void **state)
{
    (void)state;
    expect_fail(parse("--resource-limit", "nofile=1"), JEXIT_BAD_RLIMIT, "no-file, fsize or core");
    assert_int_equal(parse(BASE, "--resource-limit", "core=0"), 0);
    assert_int_equal(a.rlimits[0].resource, RLIMIT_CORE);
    expect_fail(parse(BASE, "--resource-limit", "core=1", "--resource-limit", "core=2"),
                JEXIT_BAD_RLIMIT, "twice");
    expect_fail(parse("--resource-limit", "no-file"), JEXIT_BAD_RLIMIT, "RES=N");
    expect_fail(parse("--resource-limit", "no-file=x"), JEXIT_BAD_RLIMIT, "decimal");
    expect_fail(parse("--resource-limit", "fsize=-1"), JEXIT_BAD_RLIMIT, "decimal");
    expect_fail(parse("--resource-limit", "fsize=1", "--resource-limit", "fsize=2"),
                JEXIT_BAD_RLIMIT, "twice");
}

static void test_usage_errors(void **state)
{
    (void)state;
    expect_fail(parse("--bogus"), JEXIT_USAGE, "unknown argument '--bogus'");
    expect_fail(parse("positional"), JEXIT_USAGE, "unknown argument");
    expect_fail(parse("--id"), JEXIT_USAGE, "--id needs a value");
    expect_fail(parse("--daemonize=1"), JEXIT_USAGE, "takes no value");
    expect_fail(parse("--id", "a", "--id", "b"), JEXIT_USAGE, "more than once");
    expect_fail(parse("--exec-file", "/x", "--uid", "1", "--gid", "1"), JEXIT_USAGE,
                "missing --id");
    expect_fail(parse("--id", "a", "--uid", "1", "--gid", "1"), JEXIT_USAGE, "missing --exec-file");
    expect_fail(parse("--id", "a", "--exec-file", "/x", "--gid", "1"), JEXIT_USAGE,
                "missing --uid");
    expect_fail(parse("--id", "a", "--exec-file", "/x", "--uid", "1"), JEXIT_USAGE,
                "missing --gid");
    /* Flags after "--" belong to the exec'd binary. */
    assert_int_equal(parse(BASE, "--", "--id", "zzz"), 0);
    assert_string_equal(a.id, "vm-1");
    assert_int_equal(a.extra_argc, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_minimal_defaults),
            cmocka_unit_test(test_all_flags),
            cmocka_unit_test(test_help_version_need_nothing_else),
            cmocka_unit_test(test_id),
            cmocka_unit_test(test_exec_file),
            cmocka_unit_test(test_uid_gid),
            cmocka_unit_test(test_strict_sandbox),
            cmocka_unit_test(test_chroot_base),
            cmocka_unit_test(test_netns),
            cmocka_unit_test(test_cgroup),
            cmocka_unit_test(test_cgroup_limit),
            cmocka_unit_test(test_rlimit),
            cmocka_unit_test(test_usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
