/* virtio-net (virtio/net.c) through the mmio transport over fake guest memory, with a datagram
 * socketpair standing in for the TAP (one datagram: the 12-byte vnet header and the frame, as
 * a TAP with IFF_VNET_HDR reads and writes them): config space and features, tx and rx frames
 * and their headers, merged rx buffers, back-pressure both ways (what the loop is asked to
 * watch), the rate limiter, PATCH of the buckets, hostile chains and headers; and the pure
 * header checks (virtio/net_frame.c). */
#define _GNU_SOURCE /* unshare */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../virtio/mmio.h"
#include "../../virtio/net.h"

#define RAM   0x40000ULL
#define QSIZE 16
#define BUF   0x10000ULL /* rx buffers, 0x1000 each */
#define TXBUF 0x30000ULL /* tx frames, 0x1000 each */

static const uint64_t desc_gpa[2] = {0x1000, 0x4000}, avail_gpa[2] = {0x2000, 0x5000},
                      used_gpa[2] = {0x3000, 0x6000};
static uint8_t ram[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct vmmio_dev t;
static struct vnet *net;
static struct vm_stats stats;
static int peer = -1; /* the host side of the stand-in TAP */
static uint16_t next_avail[2], next_desc[2], seen_used[2];
static uint32_t watched; /* the last vmmio_watch mask */
static int watch_calls;
static const uint8_t mac[6] = {0x06, 0, 0xac, 0x10, 0, 2};

static void wr(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

static uint32_t rd(uint64_t off)
{
    uint32_t v;
    vmmio_read(&t, off, (uint8_t *)&v, 4);
    return v;
}

static void on_watch(void *opaque, unsigned which, uint32_t events)
{
    (void)opaque;
    assert_int_equal(which, VNET_FD_TAP);
    watched = events;
    watch_calls++;
}

/* The driver's initialization with features lo (bits 0-31) and VERSION_1. */
static void driver_init(uint32_t lo)
{
    memset(next_avail, 0, sizeof(next_avail));
    memset(next_desc, 0, sizeof(next_desc));
    memset(seen_used, 0, sizeof(seen_used));
    memset(ram + 0x1000, 0, 0x6000);
    wr(0x70, 1);
    wr(0x70, 3);
    wr(0x24, 0);
    wr(0x20, lo);
    wr(0x24, 1);
    wr(0x20, 1);
    wr(0x70, 0xb);
    for (unsigned q = 0; q < 2; q++) {
        wr(0x30, q);
        wr(0x38, QSIZE);
        wr(0x80, (uint32_t)desc_gpa[q]);
        wr(0x90, (uint32_t)avail_gpa[q]);
        wr(0xa0, (uint32_t)used_gpa[q]);
        wr(0x44, 1);
    }
    wr(0x70, 0xf);
    assert_int_equal(rd(0x70), 0xf);
}

#define F_ALL                                                                           \
    (1u << VIRTIO_NET_F_CSUM | 1u << VIRTIO_NET_F_GUEST_CSUM | 1u << VIRTIO_NET_F_MAC | \
     1u << VIRTIO_NET_F_HOST_TSO4 | 1u << VIRTIO_NET_F_MRG_RXBUF)

static void start_with(const struct vm_net *cfg, uint32_t features, int sndbuf)
{
    char err[256];
    int sv[2];
    memset(ram, 0, sizeof(ram));
    memset(&stats, 0, sizeof(stats));
    mem = (struct guest_mem){.nregions = 1};
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = ram};
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv), 0);
    if (sndbuf)
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    peer = sv[1];
    net = vnet_create_fd(cfg, sv[0], &stats, err, sizeof(err));
    assert_non_null(net);
    assert_int_equal(vmmio_init(&t, &vnet_ops, net, &mem, 0), 0);
    t.watch = on_watch;
    watched = EPOLLIN;
    watch_calls = 0;
    driver_init(features);
}

static void start(uint32_t features)
{
    struct vm_net cfg = {.id = "eth0", .host_dev_name = "tap0", .has_mac = true};
    memcpy(cfg.mac, mac, 6);
    start_with(&cfg, features, 0);
}

static int stop(void **state)
{
    (void)state;
    vmmio_destroy(&t);
    vnet_ops.destroy(net);
    close(peer);
    return 0;
}

static uint16_t desc(unsigned q, uint64_t addr, uint32_t len, uint16_t flags)
{
    uint16_t i = next_desc[q]++ % QSIZE;
    uint16_t next = (uint16_t)((i + 1) % QSIZE);
    uint8_t *d = ram + desc_gpa[q] + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
    return i;
}

static void publish(unsigned q, uint16_t head)
{
    uint8_t *a = ram + avail_gpa[q];
    memcpy(a + 4 + 2 * (next_avail[q] % QSIZE), &head, 2);
    next_avail[q]++;
    memcpy(a + 2, &next_avail[q], 2);
}

/* Posts one rx buffer of len bytes (one descriptor). */
static void post_rx(uint32_t len)
{
    uint16_t n = next_avail[0];
    publish(0, desc(0, BUF + 0x1000ULL * (n % QSIZE), len, VRING_DESC_F_WRITE));
}

/* Queues a tx frame: header (h, 12 bytes) then frame of len bytes in a second descriptor. */
static void post_tx(const struct vnet_hdr *h, uint32_t len, uint8_t fill)
{
    uint16_t n = next_avail[1];
    uint64_t at = TXBUF + 0x1000ULL * (n % QSIZE);
    vnet_hdr_write(h, ram + at);
    memset(ram + at + VNET_HDR_LEN, fill, len);
    memcpy(ram + at + VNET_HDR_LEN + 6, mac, 6); /* source MAC */
    uint16_t head = desc(1, at, VNET_HDR_LEN, VRING_DESC_F_NEXT);
    desc(1, at + VNET_HDR_LEN, len, 0);
    publish(1, head);
}

static uint16_t used_idx(unsigned q)
{
    uint16_t v;
    memcpy(&v, ram + used_gpa[q] + 2, 2);
    return v;
}

/* The next used element of queue q: its length (the test fails if there is none). */
static uint32_t take_used(unsigned q, uint16_t *id)
{
    assert_true(used_idx(q) != seen_used[q]);
    const uint8_t *e = ram + used_gpa[q] + 4 + 8 * (seen_used[q]++ % QSIZE);
    uint32_t v, len;
    memcpy(&v, e, 4);
    memcpy(&len, e + 4, 4);
    if (id)
        *id = (uint16_t)v;
    return len;
}

/* The host sends a frame of len bytes (after a header with flags) into the TAP. */
static void host_send(uint32_t len, uint8_t fill)
{
    static uint8_t f[VNET_BUF_MAX];
    memset(f, 0, VNET_HDR_LEN);
    f[0] = VNET_HDR_F_DATA_VALID;
    memset(f + VNET_HDR_LEN, fill, len);
    assert_int_equal(send(peer, f, VNET_HDR_LEN + len, 0), VNET_HDR_LEN + len);
}

static void config_and_features(void **state)
{
    (void)state;
    start(F_ALL);
    uint8_t cfg[8];
    for (unsigned i = 0; i < 8; i++)
        vmmio_read(&t, 0x100 + i, cfg + i, 1);
    assert_memory_equal(cfg, mac, 6);
    assert_int_equal(cfg[6] | cfg[7] << 8, VIRTIO_NET_S_LINK_UP);
    wr(0x14, 0);
    uint32_t f = rd(0x10);
    assert_true(f & 1u << VIRTIO_NET_F_MAC);
    assert_true(f & 1u << VIRTIO_NET_F_MRG_RXBUF);
    assert_true(f & 1u << VIRTIO_NET_F_GUEST_TSO4);
    wr(0x14, 1);
    assert_int_equal(rd(0x10) & 1, 1); /* VERSION_1 */
    stop(NULL);
    struct vm_net nomac = {.id = "eth1", .host_dev_name = "tap1"};
    start_with(&nomac, 0, 0);
    wr(0x14, 0);
    assert_false(rd(0x10) & 1u << VIRTIO_NET_F_MAC);
}

static void tx_frames(void **state)
{
    uint8_t got[2048];
    struct vnet_hdr h = {0};
    (void)state;
    start(F_ALL);
    post_tx(&h, 100, 0x5a);
    h.flags = VNET_HDR_F_NEEDS_CSUM, h.csum_start = 34, h.csum_offset = 16;
    post_tx(&h, 200, 0x6b);
    vmmio_notify(&t, 1);
    assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 100);
    assert_int_equal(got[0], 0);
    assert_int_equal(got[VNET_HDR_LEN], 0x5a);
    assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 200);
    struct vnet_hdr back;
    vnet_hdr_read(got, &back);
    assert_int_equal(back.flags, VNET_HDR_F_NEEDS_CSUM);
    assert_int_equal(back.csum_start, 34);
    assert_int_equal(take_used(1, NULL), 0);
    assert_int_equal(take_used(1, NULL), 0);
    assert_int_equal(stats.net_tx_packets, 2);
    assert_int_equal(stats.net_tx_bytes, 300);
    assert_int_equal(rd(0x70), 0xf);
}

/* Lying headers and short chains: dropped and counted, the chain answered, nothing sent. */
static void tx_hostile(void **state)
{
    uint8_t got[256];
    (void)state;
    start(F_ALL & ~(1u << VIRTIO_NET_F_HOST_TSO4));
    struct vnet_hdr lies[] = {
            {.flags = VNET_HDR_F_NEEDS_CSUM, .csum_start = 90, .csum_offset = 9}, /* past end */
            {.gso_type = VNET_HDR_GSO_TCPV4, .flags = 1, .gso_size = 1448},       /* not acked */
            {.gso_type = VNET_HDR_GSO_UDP, .flags = 1, .gso_size = 1000},         /* not offered */
            {.flags = 0x80},                                                      /* unknown flag */
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++)
        post_tx(&lies[i], 100, 1);
    /* a chain shorter than a header */
    publish(1, desc(1, TXBUF + 0xf000, 8, 0));
    /* a frame over the limit: 64 KiB + 16 in descriptors spread over guest RAM */
    uint16_t head = desc(1, TXBUF, VNET_HDR_LEN, VRING_DESC_F_NEXT);
    desc(1, 0x10000, 0x10010, 0);
    publish(1, head);
    vmmio_notify(&t, 1);
    assert_int_equal(recv(peer, got, sizeof(got), 0), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(stats.net_tx_malformed_frames, 6);
    for (int i = 0; i < 6; i++)
        take_used(1, NULL);
    assert_int_equal(rd(0x70), 0xf); /* dropped, the device still runs */
    /* a descriptor outside guest RAM: the queue is broken, the device needs a reset */
    struct vnet_hdr ok = {0};
    post_tx(&ok, 100, 1);
    uint8_t *d = ram + desc_gpa[1] + 16 * ((next_desc[1] - 1) % QSIZE);
    uint64_t far = RAM + 0x1000;
    memcpy(d, &far, 8);
    vmmio_notify(&t, 1);
    assert_true(rd(0x70) & VIRTIO_STATUS_NEEDS_RESET);
}

static void rx_frames(void **state)
{
    uint8_t *b = ram + BUF;
    (void)state;
    start(F_ALL & ~(1u << VIRTIO_NET_F_MRG_RXBUF));
    post_rx(2048);
    post_rx(2048);
    vmmio_notify(&t, 0); /* the driver's kick: the TAP is watched */
    assert_int_equal(watched, EPOLLIN);
    host_send(60, 0x11);
    host_send(1500, 0x22);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(take_used(0, NULL), VNET_HDR_LEN + 60);
    struct vnet_hdr h;
    vnet_hdr_read(b, &h);
    assert_int_equal(h.num_buffers, 1);
    assert_int_equal(h.flags, VNET_HDR_F_DATA_VALID);
    assert_int_equal(b[VNET_HDR_LEN + 59], 0x11);
    assert_int_equal(take_used(0, NULL), VNET_HDR_LEN + 1500);
    assert_int_equal(b[0x1000 + VNET_HDR_LEN + 1499], 0x22);
    assert_int_equal(stats.net_rx_packets, 2);
    assert_int_equal(stats.net_rx_bytes, 1560);
    /* without MRG_RXBUF a buffer too small for the frame drops it (counted) */
    post_rx(100);
    host_send(200, 0x33);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(stats.net_rx_fails, 1);
    assert_int_equal(used_idx(0), 2);
}

/* With MRG_RXBUF a frame takes as many buffers as it needs, num_buffers in the first. */
static void rx_merged(void **state)
{
    uint8_t *b = ram + BUF;
    (void)state;
    start(F_ALL);
    for (int i = 0; i < 3; i++)
        post_rx(1000);
    vmmio_notify(&t, 0);
    host_send(2500, 0x44);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(take_used(0, NULL), 1000);
    assert_int_equal(take_used(0, NULL), 1000);
    assert_int_equal(take_used(0, NULL), VNET_HDR_LEN + 2500 - 2000);
    struct vnet_hdr h;
    vnet_hdr_read(b, &h);
    assert_int_equal(h.num_buffers, 3);
    assert_int_equal(b[0x2000 + 511], 0x44);
}

/* rx queue full: the frame waits in the device, the TAP is no longer watched; the driver's
 * buffers and kick bring it in and the watch back. A frame wider than what is posted waits
 * for more buffers, the chains it had given back. */
static void rx_back_pressure(void **state)
{
    (void)state;
    start(F_ALL);
    vmmio_notify(&t, 0);
    host_send(1500, 0x55);
    host_send(1500, 0x66);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(watched, 0);
    assert_int_equal(used_idx(0), 0);
    assert_int_equal(stats.net_no_rx_avail_buffer, 1);
    post_rx(1000); /* not enough for the frame */
    vmmio_notify(&t, 0);
    assert_int_equal(used_idx(0), 0);
    assert_int_equal(watched, 0);
    post_rx(1000);
    vmmio_notify(&t, 0);
    assert_int_equal(used_idx(0), 2); /* the first frame, in both */
    assert_int_equal(ram[BUF + 0x1000 + 100], 0x55);
    assert_int_equal(watched, 0); /* the second waits */
    post_rx(2048);
    vmmio_notify(&t, 0);
    assert_int_equal(used_idx(0), 3);
    assert_int_equal(watched, EPOLLIN);
    assert_int_equal(stats.net_rx_packets, 2);
}

/* A chain whose writable part cannot hold the header: the device needs a reset. */
static void rx_short_chain(void **state)
{
    (void)state;
    start(F_ALL);
    post_rx(6);
    vmmio_notify(&t, 0);
    host_send(100, 1);
    vmmio_event(&t, VNET_FD_TAP);
    assert_true(rd(0x70) & VIRTIO_STATUS_NEEDS_RESET);
}

/* The TAP's send queue full (EAGAIN): the chain goes back to the ring, tx stops and the TAP is
 * watched for EPOLLOUT; once it is writable the frames go. */
static void tx_back_pressure(void **state)
{
    uint8_t got[4096];
    struct vm_net cfg = {.id = "eth0", .host_dev_name = "tap0"};
    struct vnet_hdr h = {0};
    (void)state;
    start_with(&cfg, F_ALL & ~(1u << VIRTIO_NET_F_MAC), 4096);
    unsigned queued = 0;
    for (; queued < 8; queued++)
        post_tx(&h, 3000, (uint8_t)queued);
    vmmio_notify(&t, 1);
    unsigned sent = used_idx(1);
    assert_true(sent < queued);
    assert_int_equal(watched, EPOLLIN | EPOLLOUT);
    while (recv(peer, got, sizeof(got), 0) > 0)
        ;
    vmmio_event(&t, VNET_FD_TAP);
    assert_true(used_idx(1) > sent);
    for (int round = 0; round < 16 && used_idx(1) < queued; round++) {
        while (recv(peer, got, sizeof(got), 0) > 0)
            ;
        vmmio_event(&t, VNET_FD_TAP);
    }
    assert_int_equal(used_idx(1), queued);
    assert_int_equal(stats.net_tx_packets, queued);
    assert_int_equal(watched, EPOLLIN);
}

/* The tx bucket holds frames back (never drops them); PATCH of the bucket lets them go. */
static void tx_rate_limited(void **state)
{
    uint8_t got[2048];
    struct vm_net cfg = {.id = "eth0", .host_dev_name = "tap0"};
    struct vnet_hdr h = {0};
    (void)state;
    cfg.tx_bw = (struct vm_bucket){.size = 1000, .refill_time_ms = 100000};
    start_with(&cfg, F_ALL & ~(1u << VIRTIO_NET_F_MAC), 0);
    post_tx(&h, 800, 1);
    post_tx(&h, 800, 2);
    vmmio_notify(&t, 1);
    assert_int_equal(used_idx(1), 1);
    assert_int_equal(stats.net_tx_rate_limiter_throttled, 1);
    assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 800);
    assert_int_equal(recv(peer, got, sizeof(got), 0), -1);
    /* The timer's wake-up (early here: the bucket refills over 100 s) finds it still short. */
    vmmio_event(&t, VNET_FD_RATE);
    assert_int_equal(stats.net_tx_rate_limiter_throttled, 2);
    assert_int_equal(used_idx(1), 1);
    struct vm_bucket off = {0};
    struct vnet_update u = {.tx_bw = &off};
    char err[128];
    assert_int_equal(vmmio_update(&t, &u, err, sizeof(err)), 0);
    assert_int_equal(used_idx(1), 2);
    assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 800);
}

/* The rx bucket holds a frame read from the TAP in the device (the TAP no longer watched) until
 * tokens come back; PATCH of the bucket delivers it. */
static void rx_rate_limited(void **state)
{
    struct vm_net cfg = {.id = "eth0", .host_dev_name = "tap0"};
    (void)state;
    cfg.rx_ops = (struct vm_bucket){.size = 1, .refill_time_ms = 100000};
    start_with(&cfg, F_ALL & ~(1u << VIRTIO_NET_F_MAC), 0);
    post_rx(2048);
    post_rx(2048);
    vmmio_notify(&t, 0);
    host_send(100, 1);
    host_send(100, 2);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(used_idx(0), 1);
    assert_int_equal(stats.net_rx_rate_limiter_throttled, 1);
    assert_int_equal(watched, 0);
    struct vm_bucket off = {0};
    struct vnet_update u = {.rx_ops = &off};
    char err[128];
    assert_int_equal(vmmio_update(&t, &u, err, sizeof(err)), 0);
    assert_int_equal(used_idx(0), 2);
    assert_int_equal(ram[BUF + 0x1000 + VNET_HDR_LEN], 2);
    assert_int_equal(watched, EPOLLIN);
}

/* A reset forgets a held frame; a device not running has the loop stop watching the TAP. */
static void reset_and_not_running(void **state)
{
    (void)state;
    start(F_ALL);
    vmmio_notify(&t, 0);
    host_send(100, 1);
    vmmio_event(&t, VNET_FD_TAP); /* held: no buffers */
    wr(0x70, 0);
    assert_int_equal(rd(0x70), 0);
    host_send(100, 2);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(watched, 0);
    driver_init(F_ALL);
    post_rx(2048);
    vmmio_notify(&t, 0);
    assert_int_equal(watched, EPOLLIN);
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(used_idx(0), 1);
    assert_int_equal(ram[BUF + VNET_HDR_LEN], 2); /* the frame held before the reset is gone */
}

/* Snapshot state: the MAC the guest saw; a malformed state refused, nothing applied. */
static void state_save_restore(void **state)
{
    struct vnet_state st;
    char err[128];
    (void)state;
    start(F_ALL);
    assert_int_equal(vnet_ops.state_size, sizeof(st));
    assert_int_equal(vnet_ops.save(net, &t, &st), 0);
    assert_memory_equal(st.mac, mac, 6);
    assert_int_equal(st.has_mac, 1);
    struct vnet_state bad = st;
    bad.has_mac = 2;
    assert_int_equal(vnet_ops.restore(net, &t, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "malformed"));
    st.mac[5] = 9;
    assert_int_equal(vnet_ops.restore(net, &t, &st, err, sizeof(err)), 0);
    vmmio_regs_sync(&t); /* as vmmio_restore does after the device's restore */
    uint8_t cfg[6];
    for (unsigned i = 0; i < 6; i++)
        vmmio_read(&t, 0x100 + i, cfg + i, 1);
    assert_int_equal(cfg[5], 9);
}

/* A real TAP, in a network namespace of this test process's own: vnet_tap_open's flags and
 * header size, a missing interface refused (never created), and a TAP that errors (its link
 * is down: EIO) counted while the device keeps running. */
static void real_tap(void **state)
{
    char err[256];
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI};
    int hdr = 0;
    (void)state;
    assert_int_equal(unshare(CLONE_NEWNET), 0);
    int fd = vnet_tap_open("embt0", err, sizeof(err));
    assert_int_equal(fd, -ENODEV);
    assert_non_null(strstr(err, "no network interface named embt0"));
    int mk = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    assert_true(mk >= 0);
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "embt0");
    assert_int_equal(ioctl(mk, TUNSETIFF, &ifr), 0);
    assert_int_equal(ioctl(mk, TUNSETPERSIST, 1), 0);
    close(mk);
    fd = vnet_tap_open("embt0", err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(ioctl(fd, TUNGETIFF, &ifr), 0);
    assert_int_equal(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
                     IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    assert_int_equal(ioctl(fd, TUNGETVNETHDRSZ, &hdr), 0);
    assert_int_equal(hdr, VNET_HDR_LEN);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_int_equal(vnet_tap_open("embt0", err, sizeof(err)), -EBUSY); /* attached already */
    close(fd);

    /* UFO: offered exactly when this kernel's TAP takes TUN_F_UFO (6.1 does; some refuse it). */
    int probe = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    assert_true(probe >= 0);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    assert_int_equal(ioctl(probe, TUNSETIFF, &ifr), 0);
    bool ufo = ioctl(probe, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_UFO)) == 0;
    close(probe);

    struct vm_net cfg = {.id = "eth0", .host_dev_name = "embt0"};
    memset(ram, 0, sizeof(ram));
    memset(&stats, 0, sizeof(stats));
    mem = (struct guest_mem){.nregions = 1};
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = ram};
    net = vnet_create(&cfg, &stats, err, sizeof(err));
    assert_non_null(net);
    assert_int_equal(vmmio_init(&t, &vnet_ops, net, &mem, 0), 0);
    t.watch = on_watch;
    peer = open("/dev/null", O_RDONLY); /* for stop() */
    wr(0x14, 0);
    uint32_t offered = rd(0x10),
             ufo_bits = 1u << VIRTIO_NET_F_GUEST_UFO | 1u << VIRTIO_NET_F_HOST_UFO;
    assert_int_equal(offered & ufo_bits, ufo ? ufo_bits : 0);
    driver_init((F_ALL & ~(1u << VIRTIO_NET_F_MAC)) | (offered & ufo_bits));
    struct vnet_hdr h = {0};
    post_tx(&h, 100, 1);
    vmmio_notify(&t, 1); /* TUNSETOFFLOAD for the acked features first, then the frame */
    assert_int_equal(take_used(1, NULL), 0);
    assert_int_equal(stats.net_tx_fails, 1); /* the link is down: EIO */
    assert_int_equal(rd(0x70), 0xf);         /* the TAP goes with the namespace, at exit */
}

static void header_checks(void **state)
{
    uint64_t all = ~0ULL;
    (void)state;
    struct vnet_hdr h = {0};
    assert_int_equal(vnet_tx_check(&h, 60, 0), 0);
    assert_int_equal(vnet_tx_check(&h, 13, all), -EINVAL); /* shorter than Ethernet */
    assert_int_equal(vnet_tx_check(&h, VNET_FRAME_MAX + 1, all), -EINVAL);
    h = (struct vnet_hdr){.flags = VNET_HDR_F_NEEDS_CSUM, .csum_start = 50, .csum_offset = 8};
    assert_int_equal(vnet_tx_check(&h, 60, all), 0);
    assert_int_equal(vnet_tx_check(&h, 59, all), -EINVAL);
    assert_int_equal(vnet_tx_check(&h, 60, 0), -EINVAL); /* CSUM not acked */
    h = (struct vnet_hdr){.flags = 1,
                          .gso_type = VNET_HDR_GSO_TCPV6,
                          .gso_size = 1440,
                          .hdr_len = 74,
                          .csum_start = 54,
                          .csum_offset = 16};
    assert_int_equal(vnet_tx_check(&h, 9000, all), 0);
    assert_int_equal(vnet_tx_check(&h, 9000, all & ~(1ULL << VIRTIO_NET_F_HOST_TSO6)), -EINVAL);
    h.gso_size = 0;
    assert_int_equal(vnet_tx_check(&h, 9000, all), -EINVAL);
    h.gso_size = 1440, h.gso_type |= VNET_HDR_GSO_ECN;
    assert_int_equal(vnet_tx_check(&h, 9000, all), -EINVAL);
    h = (struct vnet_hdr){.flags = 1,
                          .gso_type = VNET_HDR_GSO_UDP,
                          .gso_size = 1400,
                          .hdr_len = 42,
                          .csum_start = 34,
                          .csum_offset = 6};
    assert_int_equal(vnet_tx_check(&h, 9000, all), 0);
    assert_int_equal(vnet_tx_check(&h, 9000, all & ~(1ULL << VIRTIO_NET_F_HOST_UFO)), -EINVAL);
    assert_int_equal(
            vnet_tun_offload(1ULL << VIRTIO_NET_F_GUEST_CSUM | 1ULL << VIRTIO_NET_F_GUEST_UFO),
            TUN_F_CSUM | TUN_F_UFO);
    assert_int_equal(vnet_tun_offload(1ULL << VIRTIO_NET_F_GUEST_UFO), 0); /* needs CSUM */
    assert_int_equal(vnet_tun_offload(0), 0);
    assert_int_equal(vnet_tun_offload(1ULL << VIRTIO_NET_F_GUEST_TSO4), 0); /* needs CSUM */
    assert_int_equal(
            vnet_tun_offload(1ULL << VIRTIO_NET_F_GUEST_CSUM | 1ULL << VIRTIO_NET_F_GUEST_TSO4),
            0x3); /* TUN_F_CSUM | TUN_F_TSO4 */
    uint8_t raw[VNET_HDR_LEN];
    struct vnet_hdr back, w = {1, 4, 0x102, 0x304, 0x506, 0x708, 0x90a};
    vnet_hdr_write(&w, raw);
    assert_int_equal(raw[2], 2);
    assert_int_equal(raw[3], 1);
    vnet_hdr_read(raw, &back);
    assert_memory_equal(&back, &w, sizeof(w));
}

/* ---- interrupt moderation, quiesce, restore ---------------------------------------------- */

static int dev_fd(unsigned which)
{
    struct virtio_fd f[VIRTIO_MAX_DEV_FDS];
    assert_int_equal(vnet_ops.fds(net, f), VNET_NFDS);
    return f[which].fd;
}

static uint64_t interrupts(void)
{
    uint64_t v = 0;
    if (read(t.irq_fd, &v, sizeof(v)) < 0)
        return 0;
    return v;
}

/* Waits (bounded) for queue qi's moderation round to end and runs it. Returns false if none. */
static bool end_of_round(unsigned qi, int timeout_ms)
{
    struct pollfd p = {.fd = dev_fd(VNET_FD_HOLD_RX + qi), .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) /* a round is at most IRQMOD_MAX_ROUND_NS */
        return false;
    vmmio_event(&t, VNET_FD_HOLD_RX + qi);
    return true;
}

static void with_irqs(void)
{
    t.irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(t.irq_fd >= 0);
}

/* Sends tx frames, one kick each, until an answer's interrupt is held (the turnaround is
 * measured from the first one; a test preempted for over 2 ms looks like an idle guest, so a
 * bounded number of tries). Returns the frames sent. */
static unsigned tx_until_held(void)
{
    struct vnet_hdr h = {0};
    uint8_t got[256];
    unsigned sent = 0;
    uint64_t irqs = 1;
    uint16_t base = used_idx(1);
    for (int i = 0; i < 6 && irqs; i++) {
        post_tx(&h, 60, (uint8_t)i);
        vmmio_notify(&t, 1);
        assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 60);
        sent++;
        irqs = interrupts();
    }
    assert_int_equal(irqs, 0);
    assert_int_equal(used_idx(1), (uint16_t)(base + sent));
    return sent;
}

/* tx: the first answer interrupts at once; once the turnaround is known an answer holds the
 * interrupt with kicks suppressed (VRING_USED_F_NO_NOTIFY), a frame queued without a kick goes
 * out at the round's end, and one interrupt covers them when a round finds nothing more. A
 * reset during a hold cancels it: no interrupt afterwards. */
static void tx_moderation(void **state)
{
    struct vnet_hdr h = {0};
    uint8_t got[256];
    (void)state;
    start(F_ALL);
    with_irqs();
    uint16_t sent = (uint16_t)tx_until_held();
    assert_int_equal(ram[used_gpa[1]] & 1, 1); /* kicks suppressed */
    post_tx(&h, 70, 0x77);                     /* no kick */
    int rounds = 0;
    while (interrupts() == 0 && rounds < 2 + IRQMOD_MAX_ROUNDS)
        rounds += end_of_round(1, 1000);
    assert_true(rounds >= 2 && rounds <= IRQMOD_MAX_ROUNDS); /* found the frame, then nothing */
    assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 70);
    assert_int_equal(used_idx(1), sent + 1);
    assert_int_equal(ram[used_gpa[1]] & 1, 0); /* kicks re-armed */
    /* A reset during a hold: no round, no interrupt. */
    tx_until_held();
    wr(0x70, 0);
    assert_false(end_of_round(1, 50));
    assert_int_equal(interrupts(), 0);
    close(t.irq_fd);
    t.irq_fd = -1;
}

/* rx: an interrupt held while frames come from the TAP; the guest's buffers running out ends
 * the hold at once (only the interrupt makes the driver refill). */
static void rx_moderation(void **state)
{
    (void)state;
    start(F_ALL);
    with_irqs();
    for (int i = 0; i < QSIZE; i++)
        post_rx(2048);
    vmmio_notify(&t, 0);
    uint64_t irqs = 1;
    unsigned frames = 0;
    for (int i = 0; i < 6 && irqs; i++) {
        host_send(100, (uint8_t)i);
        vmmio_event(&t, VNET_FD_TAP);
        assert_int_equal(used_idx(0), ++frames);
        irqs = interrupts();
    }
    assert_int_equal(irqs, 0); /* held */
    while (frames < QSIZE) {   /* the rest of the buffers, during the hold */
        host_send(100, 0x42);
        frames++;
    }
    host_send(100, 0x43); /* one too many: no room */
    vmmio_event(&t, VNET_FD_TAP);
    assert_int_equal(used_idx(0), QSIZE);
    assert_int_equal(interrupts(), 1); /* at once, not at the round's end */
    assert_int_equal(watched, 0);
    assert_false(end_of_round(0, 50)); /* the round was cancelled */
    close(t.irq_fd);
    t.irq_fd = -1;
}

/* quiesce raises a held interrupt and re-arms kicks; save refuses while a hold is on; a restore
 * re-validates the state, and the queues run once as the loader runs them (a frame queued
 * before the snapshot, whose kick the old process took, goes out without a new kick). */
static void quiesce_and_restore(void **state)
{
    struct vnet_state st;
    struct vnet_hdr h = {0};
    uint8_t got[256];
    char err[128];
    (void)state;
    start(F_ALL);
    with_irqs();
    tx_until_held();
    assert_int_equal(vnet_ops.save(net, &t, &st), -EBUSY);
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(interrupts(), 1);
    assert_int_equal(ram[used_gpa[1]] & 1, 0);
    assert_int_equal(vnet_ops.save(net, &t, &st), 0);
    assert_false(end_of_round(1, 50));
    struct vnet_state bad = st;
    bad.pad = 1;
    assert_int_equal(vnet_ops.restore(net, &t, &bad, err, sizeof(err)), -EINVAL);
    post_tx(&h, 80, 0x88); /* queued, its kick lost */
    uint16_t before = used_idx(1);
    assert_int_equal(vnet_ops.restore(net, &t, &st, err, sizeof(err)), 0);
    vmmio_notify(&t, 0); /* vmm/snapshot_load.c: every queue once */
    vmmio_notify(&t, 1);
    assert_int_equal(recv(peer, got, sizeof(got), 0), VNET_HDR_LEN + 80);
    assert_int_equal(used_idx(1), before + 1);
    close(t.irq_fd);
    t.irq_fd = -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(config_and_features, stop),
            cmocka_unit_test_teardown(tx_frames, stop),
            cmocka_unit_test_teardown(tx_hostile, stop),
            cmocka_unit_test_teardown(rx_frames, stop),
            cmocka_unit_test_teardown(rx_merged, stop),
            cmocka_unit_test_teardown(rx_back_pressure, stop),
            cmocka_unit_test_teardown(rx_short_chain, stop),
            cmocka_unit_test_teardown(tx_back_pressure, stop),
            cmocka_unit_test_teardown(tx_rate_limited, stop),
            cmocka_unit_test_teardown(rx_rate_limited, stop),
            cmocka_unit_test_teardown(reset_and_not_running, stop),
            cmocka_unit_test(header_checks),
            cmocka_unit_test_teardown(state_save_restore, stop),
            cmocka_unit_test_teardown(real_tap, stop),
            cmocka_unit_test_teardown(tx_moderation, stop),
            cmocka_unit_test_teardown(rx_moderation, stop),
            cmocka_unit_test_teardown(quiesce_and_restore, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
