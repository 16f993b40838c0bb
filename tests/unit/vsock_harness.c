/* The fake driver of the virtio-vsock unit tests: see vsock_harness.h. */
#include <setjmp.h> /* cmocka.h needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "vsock_harness.h"

uint8_t ram[RAM] __attribute__((aligned(4096)));
struct guest_mem mem;
struct vmmio_dev t;
struct vsock *dev;
struct vm_stats stats;
char dir[40], uds[64];
uint16_t next_avail[3], next_desc[3], seen_used[3];

uint64_t ring(unsigned q, unsigned part) /* 0 desc, 1 avail, 2 used */
{
    return 0x1000 + 0x3000ULL * q + 0x1000ULL * part;
}

void wr(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

uint32_t rd(uint64_t off)
{
    uint32_t v;
    vmmio_read(&t, off, (uint8_t *)&v, 4);
    return v;
}

void driver_init(void)
{
    memset(next_avail, 0, sizeof(next_avail));
    memset(next_desc, 0, sizeof(next_desc));
    memset(seen_used, 0, sizeof(seen_used));
    memset(ram + 0x1000, 0, 0xa000);
    wr(0x70, 1);
    wr(0x70, 3);
    wr(0x24, 1);
    wr(0x20, 1); /* VERSION_1 */
    wr(0x70, 0xb);
    for (unsigned q = 0; q < 3; q++) {
        wr(0x30, q);
        wr(0x38, QSIZE);
        wr(0x80, (uint32_t)ring(q, 0));
        wr(0x90, (uint32_t)ring(q, 1));
        wr(0xa0, (uint32_t)ring(q, 2));
        wr(0x44, 1);
    }
    wr(0x70, 0xf);
    assert_int_equal(rd(0x70), 0xf);
}

void start(void)
{
    char err[256];
    struct vm_vsock cfg = {.enabled = true, .guest_cid = CID};
    memset(ram, 0, sizeof(ram));
    memset(&stats, 0, sizeof(stats));
    mem = (struct guest_mem){.nregions = 1};
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = ram};
    snprintf(dir, sizeof(dir), "/tmp/vsock-unit-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(uds, sizeof(uds), "%s/v.sock", dir);
    snprintf(cfg.uds_path, sizeof(cfg.uds_path), "%s", uds);
    dev = vsock_create(&cfg, &stats, err, sizeof(err));
    assert_non_null(dev);
    assert_int_equal(vmmio_init(&t, &vsock_ops, dev, &mem, 0), 0);
    driver_init();
}

int stop(void **state)
{
    char cmd[160];
    (void)state;
    vmmio_destroy(&t);
    vsock_ops.destroy(dev);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

uint16_t desc(unsigned q, uint64_t addr, uint32_t len, uint16_t flags)
{
    uint16_t i = next_desc[q]++ % QSIZE;
    uint16_t next = (uint16_t)((i + 1) % QSIZE);
    uint8_t *d = ram + ring(q, 0) + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
    return i;
}

void publish(unsigned q, uint16_t head)
{
    uint8_t *a = ram + ring(q, 1);
    memcpy(a + 4 + 2 * (next_avail[q] % QSIZE), &head, 2);
    next_avail[q]++;
    memcpy(a + 2, &next_avail[q], 2);
}

uint16_t used_idx(unsigned q)
{
    uint16_t v;
    memcpy(&v, ram + ring(q, 2) + 2, 2);
    return v;
}

/* Posts rx buffers until QSIZE are out, and kicks. */
void fill_rx(void)
{
    while ((uint16_t)(next_avail[0] - seen_used[0]) < QSIZE) {
        uint16_t n = next_avail[0];
        publish(0, desc(0, RXBUF + 0x2000ULL * (n % QSIZE), RXLEN, VRING_DESC_F_WRITE));
    }
    vmmio_notify(&t, VSOCK_QUEUE_RX);
}

/* The guest sends a packet (one descriptor: header and payload) and kicks. */
void send_pkt(uint16_t op, uint32_t src, uint32_t dst, uint32_t flags, const void *data,
              uint32_t len, uint32_t buf_alloc, uint32_t fwd_cnt)
{
    struct vsock_hdr h = {.src_cid = CID,
                          .dst_cid = 2,
                          .src_port = src,
                          .dst_port = dst,
                          .len = len,
                          .type = VSOCK_TYPE_STREAM,
                          .op = op,
                          .flags = flags,
                          .buf_alloc = buf_alloc,
                          .fwd_cnt = fwd_cnt};
    uint64_t at = TXBUF + 0x11000ULL * (next_avail[1] % QSIZE);
    vsock_hdr_write(&h, ram + at);
    if (len)
        memcpy(ram + at + VSOCK_HDR_LEN, data, len);
    publish(1, desc(1, at, VSOCK_HDR_LEN + len, 0));
    vmmio_notify(&t, VSOCK_QUEUE_TX);
}

void send_op(uint16_t op, uint32_t src, uint32_t dst)
{
    send_pkt(op, src, dst, 0, NULL, 0, 65536, 0);
}

/* The next packet the device put in the rx queue: false if there is none. */
bool next_rx(struct vsock_hdr *h, uint8_t *payload)
{
    if (used_idx(0) == seen_used[0])
        return false;
    const uint8_t *e = ram + ring(0, 2) + 4 + 8 * (seen_used[0]++ % QSIZE);
    uint32_t id, len;
    uint64_t addr;
    memcpy(&id, e, 4);
    memcpy(&len, e + 4, 4);
    memcpy(&addr, ram + ring(0, 0) + 16 * id, 8);
    vsock_hdr_read(ram + addr, h);
    assert_int_equal(len, VSOCK_HDR_LEN + h->len);
    if (payload && h->len)
        memcpy(payload, ram + addr + VSOCK_HDR_LEN, h->len);
    return true;
}

/* Runs the device's host side: every ready socket event, then what it owes the guest. */
void pump(void)
{
    for (int i = 0; i < 4; i++)
        vmmio_event(&t, VSOCK_FD_POLL);
    fill_rx();
}

void expect_rx(uint16_t op, uint32_t src, uint32_t dst, struct vsock_hdr *out)
{
    struct vsock_hdr h;
    pump();
    assert_true(next_rx(&h, NULL));
    assert_int_equal(h.op, op);
    if (src != ANY_PORT)
        assert_int_equal(h.src_port, src);
    assert_int_equal(h.dst_port, dst);
    assert_int_equal(h.src_cid, 2);
    assert_int_equal(h.dst_cid, CID);
    assert_int_equal(h.type, VSOCK_TYPE_STREAM);
    assert_int_equal(h.buf_alloc, VSOCK_BUF_ALLOC);
    if (out)
        *out = h;
}

int client(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", uds);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Bytes the peer fd has now (waits up to 1 s for the first), -1 on EOF or error. */
ssize_t recv_some(int fd, void *buf, size_t len)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1000) != 1)
        return -2;
    ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
    return n > 0 ? n : -1;
}

/* A host client through CONNECT, REQUEST, RESPONSE and OK. Returns its fd. */
int host_connect(uint32_t port, uint32_t *host_port)
{
    struct vsock_hdr h;
    char line[64], ok[64];
    int fd = client();
    int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
    assert_int_equal(write(fd, line, (size_t)n), n);
    expect_rx(VSOCK_OP_REQUEST, ANY_PORT, port, &h);
    *host_port = h.src_port;
    send_op(VSOCK_OP_RESPONSE, port, *host_port);
    n = snprintf(line, sizeof(line), "OK %u\n", *host_port);
    assert_int_equal(recv_some(fd, ok, sizeof(ok)), n);
    assert_memory_equal(ok, line, (size_t)n);
    return fd;
}
