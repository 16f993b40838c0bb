/* virtio-vsock (virtio/vsock.c, vsock_conn.c) through the mmio transport over fake guest
 * memory, with real Unix sockets on the host side: config space, the hybrid protocol both ways
 * (CONNECT/OK, an absent guest listener, garbage and over-long lines, <uds>_<port> for the
 * guest, nobody listening there), data and credit both ways, shutdown, hostile packets, the
 * connection limit, back-pressure without rx buffers. The fake driver is vsock_harness.c; reset
 * and save/restore are test_virtio_vsock_restore.c, the pure helpers test_virtio_vsock_pkt.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "vsock_harness.h"

static void config_space(void **state)
{
    (void)state;
    start();
    uint8_t cfg[8];
    for (unsigned i = 0; i < 8; i++)
        vmmio_read(&t, 0x100 + i, cfg + i, 1);
    uint64_t cid;
    memcpy(&cid, cfg, 8);
    assert_int_equal(cid, CID);
    assert_int_equal(rd(0x08), VIRTIO_ID_VSOCK);
    wr(0x14, 0);
    assert_int_equal(rd(0x10), 1u << VIRTIO_F_RING_EVENT_IDX);
}

static void host_initiated(void **state)
{
    (void)state;
    uint8_t buf[4096];
    uint32_t hp;
    struct vsock_hdr h;
    start();
    fill_rx();
    int fd = host_connect(52, &hp);
    assert_int_equal(hp, VSOCK_HOST_PORT_FIRST); /* Firecracker's first: OK 1073741824 */
    assert_int_equal(vsock_nconns(dev), 1);
    /* guest → host */
    send_pkt(VSOCK_OP_RW, 52, hp, 0, "hello", 5, 65536, 0);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    /* host → guest */
    assert_int_equal(write(fd, "world!", 6), 6);
    expect_rx(VSOCK_OP_RW, hp, 52, &h);
    assert_int_equal(h.len, 6);
    assert_int_equal(h.fwd_cnt, 5); /* the 5 bytes it wrote to the host */
    /* the host half-closes: the guest hears SHUTDOWN(SEND) and may still send */
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    expect_rx(VSOCK_OP_SHUTDOWN, hp, 52, &h);
    assert_int_equal(h.flags, VSOCK_SHUTDOWN_SEND);
    send_pkt(VSOCK_OP_RW, 52, hp, 0, "late", 4, 65536, 6);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "late", 4);
    /* the guest closes (both flags): RST, the connection is gone, the host reads EOF */
    send_pkt(VSOCK_OP_SHUTDOWN, 52, hp, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, NULL, 0, 65536,
             6);
    expect_rx(VSOCK_OP_RST, hp, 52, NULL);
    assert_int_equal(vsock_nconns(dev), 0);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
    /* a host that closes outright: SHUTDOWN(RCV|SEND), and the guest's RST ends it */
    fd = host_connect(52, &hp);
    assert_int_equal(hp, VSOCK_HOST_PORT_FIRST + 1);
    close(fd);
    expect_rx(VSOCK_OP_SHUTDOWN, hp, 52, &h);
    assert_int_equal(h.flags, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
    send_op(VSOCK_OP_RST, 52, hp);
    assert_int_equal(vsock_nconns(dev), 0);
    /* one whose guest never answers: reset after 2 s */
    fd = host_connect(52, &hp);
    close(fd);
    expect_rx(VSOCK_OP_SHUTDOWN, hp, 52, NULL);
    sleep(3);
    vmmio_event(&t, VSOCK_FD_TIMER);
    assert_int_equal(vsock_nconns(dev), 0);
    expect_rx(VSOCK_OP_RST, hp, 52, NULL);
}

/* A guest slow to answer a REQUEST is given more than the CONNECT line's 2 s. */
static void slow_answer(void **state)
{
    (void)state;
    struct vsock_hdr h;
    char ok[32];
    start();
    fill_rx();
    int fd = client();
    assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
    expect_rx(VSOCK_OP_REQUEST, ANY_PORT, 52, &h);
    struct timespec ts = {.tv_sec = 2, .tv_nsec = 500000000};
    nanosleep(&ts, NULL);
    vmmio_event(&t, VSOCK_FD_TIMER);
    assert_int_equal(vsock_nconns(dev), 1);
    send_op(VSOCK_OP_RESPONSE, 52, h.src_port);
    assert_int_equal(recv_some(fd, ok, sizeof(ok)), 14);
    assert_memory_equal(ok, "OK 1073741824\n", 14);
    close(fd);
    expect_rx(VSOCK_OP_SHUTDOWN, h.src_port, 52, NULL);
    send_op(VSOCK_OP_RST, 52, h.src_port);
    assert_int_equal(vsock_nconns(dev), 0);
}

static void host_refused(void **state)
{
    (void)state;
    char buf[64];
    struct vsock_hdr h;
    static const char *const bad[] = {"GET / HTTP/1.1\n", "CONNECT\n",    "CONNECT 99999999999\n",
                                      "CONNECT -1\n",     "CONNECTX 5\n", "CONNECT 5 6\n"};
    start();
    fill_rx();
    /* no guest listener: the guest answers RST, the client is closed */
    int fd = client();
    assert_int_equal(write(fd, "connect 7\n", 10), 10);
    expect_rx(VSOCK_OP_REQUEST, VSOCK_HOST_PORT_FIRST, 7, NULL);
    send_op(VSOCK_OP_RST, 7, VSOCK_HOST_PORT_FIRST);
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
    /* garbage lines and a line over 32 bytes: closed, the guest told nothing */
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]) + 1; i++) {
        fd = client();
        const char *line = i < sizeof(bad) / sizeof(bad[0])
                                   ? bad[i]
                                   : "CONNECT 1                                       \n";
        assert_true(write(fd, line, strlen(line)) > 0);
        pump();
        assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
        assert_false(next_rx(&h, NULL));
        close(fd);
    }
    assert_int_equal(vsock_nconns(dev), 0);
}

/* A listener on <uds>_<port>. */
static int listen_port(uint32_t port)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", uds, port);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1024), 0);
    return fd;
}

static void guest_initiated(void **state)
{
    (void)state;
    uint8_t buf[8192];
    struct vsock_hdr h;
    start();
    fill_rx();
    /* nobody listens on <uds>_99: RST */
    send_op(VSOCK_OP_REQUEST, GPORT, 99);
    expect_rx(VSOCK_OP_RST, 99, GPORT, NULL);
    int l = listen_port(1234);
    send_pkt(VSOCK_OP_REQUEST, GPORT, 1234, 0, NULL, 0, 8, 0); /* the guest buffers 8 bytes */
    expect_rx(VSOCK_OP_RESPONSE, 1234, GPORT, NULL);
    int fd = accept(l, NULL, NULL);
    assert_true(fd >= 0);
    /* credit: 20 bytes from the host, the guest takes 8, then asks for more */
    assert_int_equal(write(fd, "0123456789abcdefghij", 20), 20);
    uint8_t got[64];
    pump();
    assert_true(next_rx(&h, got));
    assert_int_equal(h.op, VSOCK_OP_RW);
    assert_int_equal(h.len, 8);
    assert_memory_equal(got, "01234567", 8);
    expect_rx(VSOCK_OP_CREDIT_REQUEST, 1234, GPORT, NULL);
    pump();
    assert_false(next_rx(&h, NULL)); /* no credit: nothing more */
    send_pkt(VSOCK_OP_CREDIT_UPDATE, GPORT, 1234, 0, NULL, 0, 8, 8);
    pump();
    assert_true(next_rx(&h, got));
    assert_int_equal(h.len, 8);
    assert_memory_equal(got, "89abcdef", 8);
    assert_true(next_rx(&h, NULL)); /* out of credit again: asks again */
    assert_int_equal(h.op, VSOCK_OP_CREDIT_REQUEST);
    send_pkt(VSOCK_OP_CREDIT_UPDATE, GPORT, 1234, 0, NULL, 0, 65536, 16);
    pump();
    assert_true(next_rx(&h, got));
    assert_int_equal(h.len, 4);
    /* the guest's CREDIT_REQUEST is answered */
    send_op(VSOCK_OP_CREDIT_REQUEST, GPORT, 1234);
    expect_rx(VSOCK_OP_CREDIT_UPDATE, 1234, GPORT, NULL);
    /* guest → host, then the guest shuts its sending side: the host reads EOF */
    memset(buf, 'x', sizeof(buf));
    send_pkt(VSOCK_OP_RW, GPORT, 1234, 0, buf, 4096, 65536, 20);
    send_pkt(VSOCK_OP_SHUTDOWN, GPORT, 1234, VSOCK_SHUTDOWN_SEND, NULL, 0, 65536, 20);
    size_t total = 0;
    ssize_t n;
    while ((n = recv_some(fd, buf, sizeof(buf))) > 0)
        total += (size_t)n;
    assert_int_equal(total, 4096);
    assert_int_equal(n, -1); /* EOF */
    /* the host may still send (half-close), then closes: SHUTDOWN(SEND), then the end */
    assert_int_equal(write(fd, "bye", 3), 3);
    pump();
    assert_true(next_rx(&h, got));
    assert_int_equal(h.op, VSOCK_OP_RW);
    close(fd);
    expect_rx(VSOCK_OP_SHUTDOWN, 1234, GPORT, NULL);
    expect_rx(VSOCK_OP_RST, 1234, GPORT, NULL);
    assert_int_equal(vsock_nconns(dev), 0);
    close(l);
}

static void hostile_packets(void **state)
{
    (void)state;
    struct vsock_hdr h;
    uint8_t big[VSOCK_PKT_MAX + 8] = {0};
    start();
    fill_rx();
    /* a header shorter than 44 bytes; another source CID; len beyond the chain or the limit;
     * a payload on a control packet: dropped and counted, no answer */
    publish(1, desc(1, TXBUF, 20, 0));
    vmmio_notify(&t, VSOCK_QUEUE_TX);
    struct vsock_hdr bad = {.src_cid = 7, .dst_cid = 2, .type = 1, .op = VSOCK_OP_REQUEST};
    vsock_hdr_write(&bad, ram + TXBUF);
    publish(1, desc(1, TXBUF, VSOCK_HDR_LEN, 0));
    bad.src_cid = CID, bad.op = VSOCK_OP_RW, bad.len = 100;
    vsock_hdr_write(&bad, ram + TXBUF + 0x11000);
    publish(1, desc(1, TXBUF + 0x11000, VSOCK_HDR_LEN + 50, 0));
    vmmio_notify(&t, VSOCK_QUEUE_TX);
    send_pkt(VSOCK_OP_RW, GPORT, 1, 0, big, VSOCK_PKT_MAX + 1, 65536, 0);
    send_pkt(VSOCK_OP_REQUEST, GPORT, 1, 0, "x", 1, 65536, 0);
    pump();
    assert_false(next_rx(&h, NULL));
    assert_int_equal(stats.vsock_tx_malformed_packets, 5);
    /* well-formed but for no connection, or of another type: RST (never for an RST) */
    send_pkt(VSOCK_OP_RW, GPORT, 1, 0, "x", 1, 65536, 0);
    expect_rx(VSOCK_OP_RST, 1, GPORT, NULL);
    send_op(VSOCK_OP_RST, GPORT, 1);
    bad = (struct vsock_hdr){.src_cid = CID,
                             .dst_cid = 2,
                             .src_port = 9,
                             .dst_port = 10,
                             .type = 2,
                             .op = VSOCK_OP_REQUEST};
    vsock_hdr_write(&bad, ram + TXBUF);
    publish(1, desc(1, TXBUF, VSOCK_HDR_LEN, 0));
    vmmio_notify(&t, VSOCK_QUEUE_TX);
    expect_rx(VSOCK_OP_RST, 10, 9, NULL);
    pump();
    assert_false(next_rx(&h, NULL));
    /* a guest that writes beyond the 64 KiB credit while the host does not read: reset */
    int l = listen_port(77);
    send_op(VSOCK_OP_REQUEST, GPORT, 77);
    expect_rx(VSOCK_OP_RESPONSE, 77, GPORT, NULL);
    int fd = accept(l, NULL, NULL);
    bool reset = false;
    for (int i = 0; i < 40 && !reset; i++) {
        send_pkt(VSOCK_OP_RW, GPORT, 77, 0, big, VSOCK_PKT_MAX, 65536, 0);
        pump();
        reset = next_rx(&h, NULL) && h.op == VSOCK_OP_RST;
    }
    assert_true(reset);
    assert_int_equal(vsock_nconns(dev), 0);
    assert_int_equal(stats.vsock_tx_malformed_packets, 6);
    /* the device still works */
    send_op(VSOCK_OP_REQUEST, GPORT + 1, 77);
    expect_rx(VSOCK_OP_RESPONSE, 77, GPORT + 1, NULL);
    assert_true(rd(0x70) == 0xf); /* not NEEDS_RESET */
    close(fd);
    close(l);
}

static void connection_limit(void **state)
{
    (void)state;
    struct vsock_hdr h;
    struct rlimit rl;
    start();
    fill_rx();
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(rl.rlim_cur >= 2 * VSOCK_CONNS_MAX + 64);
    int l = listen_port(80);
    static int peers[VSOCK_CONNS_MAX];
    for (unsigned i = 0; i < VSOCK_CONNS_MAX; i++) {
        send_op(VSOCK_OP_REQUEST, GPORT + i, 80);
        expect_rx(VSOCK_OP_RESPONSE, 80, GPORT + i, NULL);
        peers[i] = accept(l, NULL, NULL);
        assert_true(peers[i] >= 0);
    }
    assert_int_equal(vsock_nconns(dev), VSOCK_CONNS_MAX);
    /* one over from the guest: RST; one over from the host: closed at once */
    send_op(VSOCK_OP_REQUEST, GPORT + VSOCK_CONNS_MAX, 80);
    expect_rx(VSOCK_OP_RST, 80, GPORT + VSOCK_CONNS_MAX, NULL);
    int fd = client();
    char buf[8];
    pump();
    assert_int_equal(recv_some(fd, buf, sizeof(buf)), -1);
    close(fd);
    assert_int_equal(stats.vsock_conns_refused, 2);
    /* one closes: room for another */
    send_op(VSOCK_OP_RST, GPORT, 80);
    send_op(VSOCK_OP_REQUEST, GPORT + 5000, 80);
    expect_rx(VSOCK_OP_RESPONSE, 80, GPORT + 5000, NULL);
    pump();
    assert_false(next_rx(&h, NULL));
    for (unsigned i = 0; i < VSOCK_CONNS_MAX; i++)
        close(peers[i]);
    close(l);
}

/* The process out of fds (a soft limit below what the table needs): a host client waiting in
 * the backlog is refused at once (closed, counted), never left waiting for an answer with the
 * listener waking the loop on every wait; once fds are back, clients connect again. */
static void fds_exhausted(void **state)
{
    (void)state;
    struct rlimit saved, low;
    uint32_t hp;
    static int hog[4096];
    unsigned nhog = 0;
    char buf[8];
    start();
    fill_rx();
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    int c = client(); /* in the backlog before the fds run out */
    low = saved;
    low.rlim_cur = (rlim_t)c + 16;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (nhog < 4096 && (hog[nhog] = dup(0)) >= 0)
        nhog++;
    assert_int_equal(errno, EMFILE);
    assert_true(nhog < 4096);
    pump();
    assert_int_equal(recv_some(c, buf, sizeof(buf)), -1); /* closed, no OK */
    close(c);
    assert_int_equal(stats.vsock_conns_refused, 1);
    assert_int_equal(vsock_nconns(dev), 0);
    struct virtio_fd fds[VIRTIO_MAX_DEV_FDS];
    vsock_ops.fds(dev, fds);
    struct pollfd p = {fds[VSOCK_FD_POLL].fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 0), 0); /* nothing left to wake the loop */
    for (unsigned i = 0; i < nhog; i++)
        close(hog[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    int fd = host_connect(52, &hp);
    close(fd);
}

/* A soft fd limit of 1024 is raised to what the table needs, as far as the hard limit allows. */
static void fd_limit_raised(void **state)
{
    (void)state;
    struct rlimit saved, rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    rl = saved;
    rl.rlim_cur = saved.rlim_max < 1024 ? saved.rlim_max : 1024;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    start();
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_int_equal(rl.rlim_cur, saved.rlim_max < 2048 ? saved.rlim_max : 2048);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

/* No rx buffers: host data waits (the socket is not watched, nothing is read or lost); the
 * driver's next buffers bring it. */
static void rx_back_pressure(void **state)
{
    (void)state;
    struct vsock_hdr h;
    uint8_t got[4096];
    start();
    int l = listen_port(3);
    send_op(VSOCK_OP_REQUEST, GPORT, 3);
    for (int i = 0; i < 4; i++)
        vmmio_event(&t, VSOCK_FD_POLL);
    assert_false(next_rx(&h, NULL)); /* RESPONSE waits for a buffer */
    int fd = accept(l, NULL, NULL);
    assert_int_equal(write(fd, "abc", 3), 3);
    for (int i = 0; i < 4; i++)
        vmmio_event(&t, VSOCK_FD_POLL);
    assert_false(next_rx(&h, NULL));
    /* nothing to do until a buffer comes: the device's epoll set stays quiet (no busy loop),
     * also for a second connection whose host peer hung up meanwhile */
    struct virtio_fd f[VIRTIO_MAX_DEV_FDS];
    vsock_ops.fds(dev, f);
    struct pollfd p = {f[VSOCK_FD_POLL].fd, POLLIN, 0};
    send_pkt(VSOCK_OP_REQUEST, GPORT + 1, 3, 0, NULL, 0, 0, 0); /* no credit: nothing to read */
    int fd2 = accept(l, NULL, NULL);
    close(fd2);
    for (int i = 0; i < 4; i++)
        vmmio_event(&t, VSOCK_FD_POLL);
    assert_int_equal(poll(&p, 1, 0), 0);
    fill_rx();
    pump();
    unsigned responses = 0;
    bool data = false;
    while (next_rx(&h, got)) {
        responses += h.op == VSOCK_OP_RESPONSE;
        if (h.op == VSOCK_OP_RW && h.dst_port == GPORT)
            data = h.len == 3 && !memcmp(got, "abc", 3);
    }
    assert_int_equal(responses, 2);
    assert_true(data);
    close(fd);
    close(l);
}

static void bind_refused(void **state)
{
    (void)state;
    char err[256];
    start();
    struct vm_vsock cfg = {.enabled = true, .guest_cid = 3};
    snprintf(cfg.uds_path, sizeof(cfg.uds_path), "%s", uds); /* in use by the device */
    assert_null(vsock_create(&cfg, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "Address already in use"));
    snprintf(cfg.uds_path, sizeof(cfg.uds_path), "/nonexistent-dir/v.sock");
    assert_true(vsock_listen(cfg.uds_path, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "No such file or directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(config_space, stop),
            cmocka_unit_test_teardown(host_initiated, stop),
            cmocka_unit_test_teardown(slow_answer, stop),
            cmocka_unit_test_teardown(host_refused, stop),
            cmocka_unit_test_teardown(guest_initiated, stop),
            cmocka_unit_test_teardown(hostile_packets, stop),
            cmocka_unit_test_teardown(connection_limit, stop),
            cmocka_unit_test_teardown(fds_exhausted, stop),
            cmocka_unit_test_teardown(fd_limit_raised, stop),
            cmocka_unit_test_teardown(rx_back_pressure, stop),
            cmocka_unit_test_teardown(bind_refused, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
