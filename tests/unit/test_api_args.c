/* The firecracker command line (api-socket/args.c) and the metrics line (metrics.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../api-socket/api.h"

static struct api_args a;
static char err[API_ERR_MAX];

static int parse(int argc, const char **argv)
{
    err[0] = '\0';
    return args_parse(&a, argc, (char **)argv, err, sizeof(err));
}

static void defaults_and_all_flags(void **state)
{
    (void)state;
    const char *none[] = {"ember"};
    assert_int_equal(parse(1, none), 0);
    assert_string_equal(a.api_sock, API_SOCK_DEFAULT);
    assert_string_equal(a.id, API_INSTANCE_ID_DEFAULT);
    assert_int_equal(a.max_payload, API_PAYLOAD_MAX_DEFAULT);
    assert_int_equal(a.max_connections, 10); /* Firecracker's */
    assert_int_equal(a.idle_timeout_s, API_IDLE_TIMEOUT_S);
    assert_false(a.allow_core_dumps);
    assert_false(a.idle_give_way); /* Firecracker's limit unless asked */
    const char *all[] = {"ember",
                         "--api-sock",
                         "/s",
                         "--id",
                         "vm-1",
                         "--config-file",
                         "/c.json",
                         "--no-api",
                         "--boot-timer",
                         "--log-path",
                         "/l",
                         "--level",
                         "Debug",
                         "--show-level",
                         "--show-log-origin",
                         "--metrics-path",
                         "/m",
                         "--http-api-max-payload-size",
                         "1000",
                         "--start-time-us",
                         "12",
                         "--start-time-cpu-us",
                         "34",
                         "--parent-cpu-time-us",
                         "56",
                         "--http-api-max-connections",
                         "1024",
                         "--http-api-idle-timeout",
                         "7",
                         "--http-api-idle-give-way",
                         "--allow-core-dumps",
                         "--no-seccomp"};
    assert_int_equal(parse(sizeof(all) / sizeof(all[0]), all), 0);
    assert_string_equal(a.api_sock, "/s");
    assert_string_equal(a.id, "vm-1");
    assert_string_equal(a.config_file, "/c.json");
    assert_true(a.no_api && a.boot_timer && a.show_level && a.show_log_origin && a.no_seccomp);
    assert_int_equal(a.level, API_LOG_DEBUG);
    assert_int_equal(a.max_payload, 1000);
    assert_int_equal(a.start_time_us, 12);
    assert_int_equal(a.start_time_cpu_us, 34);
    assert_int_equal(a.parent_cpu_time_us, 56);
    assert_int_equal(a.max_connections, 1024);
    assert_int_equal(a.idle_timeout_s, 7);
    assert_true(a.idle_give_way);
    assert_true(a.allow_core_dumps);
    const char *help[] = {"ember", "--help"}, *version[] = {"ember", "--version"};
    assert_int_equal(parse(2, help), 1);
    assert_int_equal(parse(2, version), 2);
}

static void refused(void **state)
{
    (void)state;
    static const char *bad[][4] = {
            {"--bogus", NULL, NULL, "--bogus"},
            {"--api-sock", NULL, NULL, "needs a value"},
            {"--id", "a_b", NULL, "Invalid instance ID"},
            {"--id", "", NULL, "Invalid instance ID"},
            {"--level", "loud", NULL, "--level"},
            {"--http-api-max-payload-size", "0", NULL, "1 to"},
            {"--http-api-max-payload-size", "-1", NULL, "not a number"},
            {"--start-time-us", "1x", NULL, "not a number"},
            {"--http-api-max-connections", "0", NULL, "1 to 1024"},
            {"--http-api-max-connections", "1025", NULL, "1 to 1024"},
            {"--http-api-idle-timeout", "0", NULL, "1 to 86400"},
            {"--http-api-idle-timeout", "86401", NULL, "1 to 86400"},
            {"--http-api-idle-timeout", "x", NULL, "not a number"},
            {"--http-api-idle-give-way=yes", NULL, NULL, "--http-api-idle-give-way"},
            {"--no-api", NULL, NULL, "requires --config-file"},
            {"--seccomp-filter", "f", "--no-seccomp", "conflict"},
            {"stray", NULL, NULL, "stray"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[4] = {"ember"};
        int n = 1;
        for (int j = 0; j < 3 && bad[i][j]; j++)
            argv[n++] = bad[i][j];
        assert_int_equal(parse(n, argv), -EINVAL);
        if (!strstr(err, bad[i][3]) || !strstr(err, "Arguments parsing error"))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i][0], err, bad[i][3]);
    }
}

static void metrics_line(void **state)
{
    static struct api_metrics_counters m;
    struct api_request req = {.kind = API_REQ_BOOT_SOURCE};
    char buf[8192];
    int fds[2];
    (void)state;

    assert_int_equal(pipe(fds), 0);
    metrics_set(&m, M_STARTUP_US, 777);
    metrics_count_request(&m, &req, false);
    metrics_count_request(&m, &req, true);
    metrics_add(&m, M_VCPU_IO_OUT, 5);
    assert_int_equal(metrics_flush(&m, fds[1], "vm-1", "{\"a\":\"b\"}"), 0);
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "\"utc_timestamp_ms\":"));
    assert_non_null(strstr(buf, "\"id\":\"vm-1\""));
    assert_non_null(strstr(buf, "\"properties\":{\"a\":\"b\"}"));
    assert_non_null(strstr(buf, "\"process_startup_time_us\":777"));
    assert_non_null(strstr(buf, "\"boot_source_count\":2"));
    assert_non_null(strstr(buf, "\"boot_source_fails\":1"));
    assert_non_null(strstr(buf, "\"exit_io_out\":5"));
    assert_int_equal(buf[n - 1], '\n');
    assert_null(strchr(buf, '\n') + 1 < buf + n ? strchr(strchr(buf, '\n') + 1, '\n') : NULL);
    /* counters are deltas since the last flush; stored values stay */
    assert_int_equal(metrics_flush(&m, fds[1], NULL, ""), 0);
    n = read(fds[0], buf, sizeof(buf) - 1);
    buf[n] = '\0';
    assert_null(strstr(buf, "\"id\""));
    assert_non_null(strstr(buf, "\"boot_source_count\":0"));
    assert_non_null(strstr(buf, "\"exit_io_out\":0"));
    assert_non_null(strstr(buf, "\"process_startup_time_us\":777"));
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(defaults_and_all_flags),
            cmocka_unit_test(refused),
            cmocka_unit_test(metrics_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
