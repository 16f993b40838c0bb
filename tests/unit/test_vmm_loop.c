/* The event loop (vmm/loop.c): handlers per fd, level and edge triggering, modify to 0 and
 * back, a handler removing another ready fd (its collected event is dropped, also when the slot
 * is reused at once), the table limit, and bad arguments. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../vmm/loop.h"

static struct loop *l;
static int calls[4];
static int efd[4];

static void kick(int fd)
{
    uint64_t one = 1;
    assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
}

static void on_event(void *opaque, uint32_t events)
{
    int i = (int)(intptr_t)opaque;
    assert_true(events & EPOLLIN);
    calls[i]++;
}

/* Removes fd 1 and watches a fresh eventfd (likely in the freed slot) for handler 3. */
static void remover(void *opaque, uint32_t events)
{
    (void)opaque, (void)events;
    calls[0]++;
    loop_remove(l, efd[1]);
    assert_int_equal(loop_add(l, efd[3], EPOLLIN, on_event, (void *)(intptr_t)3), 0);
}

static int setup(void **state)
{
    (void)state;
    l = loop_create();
    assert_non_null(l);
    memset(calls, 0, sizeof(calls));
    for (int i = 0; i < 4; i++) {
        efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        assert_true(efd[i] >= 0);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    loop_destroy(l);
    for (int i = 0; i < 4; i++)
        close(efd[i]);
    return 0;
}

static void level_edge_modify(void **state)
{
    (void)state;
    assert_int_equal(loop_add(l, efd[0], EPOLLIN, on_event, (void *)0), 0);
    assert_int_equal(loop_add(l, efd[1], EPOLLIN | EPOLLET, on_event, (void *)1), 0);
    assert_int_equal(loop_add(l, efd[0], EPOLLIN, on_event, (void *)0), -EEXIST);
    assert_int_equal(loop_wait(l, 0), 0); /* nothing ready */
    kick(efd[0]);
    kick(efd[1]);
    assert_int_equal(loop_wait(l, 0), 2);
    assert_int_equal(loop_wait(l, 0), 1); /* level: fd 0 again (never read); edge: fd 1 not */
    assert_int_equal(calls[0], 2);
    assert_int_equal(calls[1], 1);
    assert_int_equal(loop_modify(l, efd[0], 0), 0); /* watched for nothing */
    assert_int_equal(loop_wait(l, 0), 0);
    assert_int_equal(loop_modify(l, efd[0], EPOLLIN), 0);
    assert_int_equal(loop_wait(l, 0), 1);
    assert_int_equal(loop_modify(l, efd[2], EPOLLIN), -ENOENT);
    loop_remove(l, efd[0]);
    loop_remove(l, efd[2]); /* not watched: nothing happens */
    assert_int_equal(loop_wait(l, 0), 0);
}

static void removal_during_dispatch(void **state)
{
    (void)state;
    assert_int_equal(loop_add(l, efd[0], EPOLLIN, remover, NULL), 0);
    assert_int_equal(loop_add(l, efd[1], EPOLLIN, on_event, (void *)1), 0);
    kick(efd[0]);
    kick(efd[1]);
    kick(efd[3]);
    loop_wait(l, 0);
    /* Whichever order epoll reported them in: fd 1's handler never runs once removed, and the
     * new watch of fd 3 does not receive fd 1's collected event. */
    assert_int_equal(calls[0], 1);
    assert_true(calls[1] <= 1);
    assert_int_equal(calls[3], 0);
    loop_remove(l, efd[0]);
    int before = calls[1];
    assert_int_equal(loop_wait(l, 0), 1); /* fd 3 now */
    assert_int_equal(calls[3], 1);
    assert_int_equal(calls[1], before);
}

static void limits_and_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(loop_add(l, -1, EPOLLIN, on_event, NULL), -EINVAL);
    assert_int_equal(loop_add(l, efd[0], EPOLLIN, NULL, NULL), -EINVAL);
    assert_int_equal(loop_add(l, 1 << 20, EPOLLIN, on_event, NULL), -EBADF);
    int fds[LOOP_MAX_WATCHES + 1];
    int n = 0, ret = 0;
    for (; n <= LOOP_MAX_WATCHES; n++) {
        fds[n] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        assert_true(fds[n] >= 0);
        ret = loop_add(l, fds[n], EPOLLIN, on_event, NULL);
        if (ret) {
            n++;
            break;
        }
    }
    assert_int_equal(ret, -ENOSPC);
    assert_int_equal(n, LOOP_MAX_WATCHES + 1);
    for (int i = 0; i < n; i++) {
        loop_remove(l, fds[i]);
        close(fds[i]);
    }
    loop_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(level_edge_modify, setup, teardown),
            cmocka_unit_test_setup_teardown(removal_during_dispatch, setup, teardown),
            cmocka_unit_test_setup_teardown(limits_and_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
