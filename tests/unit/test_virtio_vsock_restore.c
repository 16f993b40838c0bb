/* virtio-vsock (virtio/vsock.c) through its fake driver (vsock_harness.c): a driver's reset,
 * and save/restore with its TRANSPORT_RESET event and the gate that holds host clients until
 * the driver handled it (at most VSOCK_RESET_GATE_NS). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "vsock_harness.h"

/* A driver reset (vCPU thread) closes the connections at the loop's next timer event. */
static void reset_closes(void **state)
{
    (void)state;
    uint32_t hp;
    char buf[8];
    start();
    fill_rx();
    int fd = host_connect(52, &hp);
    wr(0x70, 0);
    assert_int_equal(vsock_nconns(dev), 1);
    vmmio_event(&t, VSOCK_FD_TIMER);
    assert_int_equal(vsock_nconns(dev), 0);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
    /* a client while the driver is away: closed */
    fd = client();
    vmmio_event(&t, VSOCK_FD_POLL);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
}

static void save_restore(void **state)
{
    (void)state;
    char err[256];
    uint32_t hp;
    struct vsock_state st, bad;
    start();
    fill_rx();
    int fd = host_connect(52, &hp);
    assert_int_equal(vsock_ops.save(dev, &t, &st), 0);
    assert_int_equal(st.guest_cid, CID);
    assert_int_equal(st.next_port, VSOCK_HOST_PORT_FIRST + 1);
    /* hostile states are refused */
    bad = st, bad.guest_cid = 2;
    assert_int_equal(vsock_ops.restore(dev, &t, &bad, err, sizeof(err)), -EINVAL);
    bad = st, bad.pad = 1;
    assert_int_equal(vsock_ops.restore(dev, &t, &bad, err, sizeof(err)), -EINVAL);
    bad = st, bad.next_port = 5;
    assert_int_equal(vsock_ops.restore(dev, &t, &bad, err, sizeof(err)), -EINVAL);
    bad = st, bad.guest_cid = CID + 1; /* valid, but not the configuration's */
    assert_int_equal(vsock_ops.restore(dev, &t, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not the configured"));
    bad = st, bad.guest_cid = 1ULL << 32;
    assert_int_equal(vsock_ops.restore(dev, &t, &bad, err, sizeof(err)), -EINVAL);
    /* the guest's event buffer, then the restore: connections gone, TRANSPORT_RESET sent */
    publish(2, desc(2, 0x3F0000, 8, VRING_DESC_F_WRITE));
    memset(ram + 0x3F0000, 0xff, 8);
    st.next_port = VSOCK_HOST_PORT_FIRST + 10;
    assert_int_equal(vsock_ops.restore(dev, &t, &st, err, sizeof(err)), 0);
    assert_int_equal(vsock_nconns(dev), 0);
    char buf[8];
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
    vmmio_event(&t, VSOCK_FD_TIMER); /* the first wake-up: every queue once */
    assert_int_equal(used_idx(2), 1);
    uint32_t len, id;
    memcpy(&len, ram + ring(2, 2) + 8, 4);
    memcpy(&id, ram + 0x3F0000, 4);
    assert_int_equal(len, 4);
    assert_int_equal(id, VSOCK_EVENT_TRANSPORT_RESET);
    /* a host client before the driver handled the reset waits, its line unread: a REQUEST
     * now would be reset with the snapshot's connections */
    struct vsock_hdr h;
    fd = client();
    assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
    pump();
    assert_false(next_rx(&h, NULL));
    assert_int_equal(vsock_nconns(dev), 1);
    /* the driver re-posts its event buffer (it handled the reset): the REQUEST goes out, from
     * the saved port on, and the connection works */
    publish(2, desc(2, 0x3F0000, 8, VRING_DESC_F_WRITE));
    vmmio_notify(&t, VSOCK_QUEUE_EV);
    expect_rx(VSOCK_OP_REQUEST, VSOCK_HOST_PORT_FIRST + 10, 52, &h);
    send_op(VSOCK_OP_RESPONSE, 52, h.src_port);
    char ok[32];
    assert_int_equal(recv_some(fd, ok, sizeof(ok)), 14);
    assert_memory_equal(ok, "OK 1073741834\n", 14);
    close(fd);
    expect_rx(VSOCK_OP_SHUTDOWN, h.src_port, 52, NULL);
    send_op(VSOCK_OP_RST, 52, h.src_port);
    assert_int_equal(vsock_nconns(dev), 0);
    /* restored again: the re-posted buffer takes the event, the next client waits again */
    assert_int_equal(vsock_ops.restore(dev, &t, &st, err, sizeof(err)), 0);
    vmmio_event(&t, VSOCK_FD_TIMER);
    assert_int_equal(used_idx(2), 2);
    fd = client();
    assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
    pump();
    assert_false(next_rx(&h, NULL));
    /* an event buffer the driver posts later still gets a pending event, and opens nothing */
    assert_int_equal(vsock_ops.restore(dev, &t, &st, err, sizeof(err)), 0);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1); /* the waiting client closed */
    close(fd);
    vmmio_event(&t, VSOCK_FD_TIMER);
    assert_int_equal(used_idx(2), 2);
    publish(2, desc(2, 0x3F0000, 8, VRING_DESC_F_WRITE));
    vmmio_notify(&t, VSOCK_QUEUE_EV);
    assert_int_equal(used_idx(2), 3);
    fd = client();
    assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
    pump();
    assert_false(next_rx(&h, NULL));
    publish(2, desc(2, 0x3F0000, 8, VRING_DESC_F_WRITE)); /* the driver handled it */
    vmmio_notify(&t, VSOCK_QUEUE_EV);
    expect_rx(VSOCK_OP_REQUEST, VSOCK_HOST_PORT_FIRST + 10, 52, NULL);
    close(fd);
    assert_int_equal(vmmio_quiesce(&t), 0);
}

/* A device saved and restored with the driver's event buffer posted, TRANSPORT_RESET taken;
 * resume: the vCPUs run (as with resume_vm). */
static void restored_with_event(bool resume)
{
    char err[256];
    struct vsock_state st;
    start();
    fill_rx();
    assert_int_equal(vsock_ops.save(dev, &t, &st), 0);
    publish(2, desc(2, 0x3F0000, 8, VRING_DESC_F_WRITE));
    assert_int_equal(vsock_ops.restore(dev, &t, &st, err, sizeof(err)), 0);
    vmmio_event(&t, VSOCK_FD_TIMER);
    assert_int_equal(used_idx(2), 1);
    if (resume)
        vmmio_resumed(&t);
}

/* A driver that never re-posts its event buffer holds host clients VSOCK_RESET_GATE_NS at
 * most; one that leaves meanwhile is closed at once. */
static void reset_gate_bounded(void **state)
{
    (void)state;
    char buf[8];
    struct vsock_hdr h;
    restored_with_event(true);
    int fd = client(), gone = client();
    assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
    pump();
    assert_int_equal(vsock_nconns(dev), 2);
    close(gone);
    pump();
    assert_int_equal(vsock_nconns(dev), 1);
    assert_false(next_rx(&h, NULL));
    struct timespec ts = {.tv_sec = 3, .tv_nsec = 100000000};
    nanosleep(&ts, NULL);
    vmmio_event(&t, VSOCK_FD_TIMER); /* the gate's time is up */
    expect_rx(VSOCK_OP_REQUEST, VSOCK_HOST_PORT_FIRST, 52, NULL);
    send_op(VSOCK_OP_RST, 52, VSOCK_HOST_PORT_FIRST); /* no listener: the client is closed */
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
    assert_int_equal(vsock_nconns(dev), 0);
}

/* A VM loaded paused: the gate holds while it is paused, however long, and its time counts
 * from the resume. */
static void gate_counts_from_resume(void **state)
{
    (void)state;
    struct vsock_hdr h;
    restored_with_event(false);
    int fd = client();
    assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
    struct timespec ts = {.tv_sec = 3, .tv_nsec = 200000000};
    nanosleep(&ts, NULL);
    vmmio_event(&t, VSOCK_FD_TIMER); /* longer than the gate's time, still paused */
    pump();
    assert_false(next_rx(&h, NULL));
    vmmio_resumed(&t);
    vmmio_event(&t, VSOCK_FD_TIMER);
    pump();
    assert_false(next_rx(&h, NULL));                      /* its 3 s start now */
    publish(2, desc(2, 0x3F0000, 8, VRING_DESC_F_WRITE)); /* the driver handled the reset */
    vmmio_notify(&t, VSOCK_QUEUE_EV);
    expect_rx(VSOCK_OP_REQUEST, VSOCK_HOST_PORT_FIRST, 52, NULL);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(reset_closes, stop),
            cmocka_unit_test_teardown(save_restore, stop),
            cmocka_unit_test_teardown(reset_gate_bounded, stop),
            cmocka_unit_test_teardown(gate_counts_from_resume, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
