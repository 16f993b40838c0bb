/* The logger in Firecracker's line format (vmm/log.c after log_configure). */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

static int fds[2];
static char line[2048];

static const char *next_line(void)
{
    ssize_t n = read(fds[0], line, sizeof(line) - 1);
    line[n > 0 ? n : 0] = '\0';
    return line;
}

static void fc_format(void **state)
{
    (void)state;
    assert_int_equal(pipe(fds), 0);
    pthread_setname_np(pthread_self(), "fc_vmm");
    log_configure("vm-7", fds[1], LOG_INFO, false, true, true);
    int here = __LINE__ + 1;
    log_info("API server started.");
    next_line();
    /* 2026-01-02T03:04:05.123456789 [vm-7:fc_vmm:INFO:tests/unit/test_api_log.c:NN] msg */
    assert_int_equal(line[4], '-');
    assert_int_equal(line[10], 'T');
    assert_int_equal(line[19], '.');
    assert_int_equal(line[29], ' ');
    char want[128];
    snprintf(want, sizeof(want),
             "[vm-7:fc_vmm:INFO:tests/unit/test_api_log.c:%d] API server started.\n", here);
    assert_string_equal(line + 30, want);

    log_configure("vm-7", fds[1], LOG_WARN, false, false, false);
    log_info("dropped");
    log_warn("kept");
    assert_string_equal(next_line() + 30, "[vm-7:fc_vmm] kept\n");
    log_at(LOG_ERROR, NULL, 0, "no origin %d", 5);
    assert_string_equal(next_line() + 30, "[vm-7:fc_vmm] no origin 5\n");

    log_configure("vm-7", fds[1], LOG_DEBUG, true, true, true); /* Off */
    log_err("silent");
    log_configure("vm-7", fds[1], LOG_ERROR, false, true, false);
    log_err("after off");
    assert_string_equal(next_line() + 30, "[vm-7:fc_vmm:ERROR] after off\n");
    close(fds[0]);
    close(fds[1]);
}

/* What a client sent never starts a line of its own or reaches a terminal as an escape. */
static void control_characters_escaped(void **state)
{
    (void)state;
    assert_int_equal(pipe(fds), 0);
    pthread_setname_np(pthread_self(), "fc_api");
    log_configure("vm-7", fds[1], LOG_INFO, false, false, false);
    log_info("GET \"%s\"", "/x\nFORGED [vm-7:fc_api] line\r\x1b[31mRED\x7f\t");
    assert_string_equal(next_line() + 30, "[vm-7:fc_api] GET \"/x\\x0aFORGED [vm-7:fc_api] "
                                          "line\\x0d\\x1b[31mRED\\x7f\\x09\"\n");
    log_info("C1 %s, UTF-8 %s",
             "\xc2\x9b"
             "2J",
             "\xc3\xa9\xe2\x82\xac");
    assert_string_equal(next_line() + 30, "[vm-7:fc_api] C1 \\x9b2J, UTF-8 \xc3\xa9\xe2\x82\xac\n");
    char big[2000];
    memset(big, '\n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_info("%s", big); /* 4 bytes each: cut at the buffer, still one line */
    const char *l = next_line();
    assert_non_null(strstr(l, "\\x0a\\x0a"));
    assert_ptr_equal(strchr(l, '\n'), l + strlen(l) - 1);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(fc_format),
            cmocka_unit_test(control_characters_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
