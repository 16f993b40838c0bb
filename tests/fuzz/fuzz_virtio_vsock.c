/* Fuzz target: virtio-vsock (virtio/vsock.c, vsock_conn.c, vsock_pkt.c) behind the mmio
 * transport, over guest RAM the input fills, with real Unix sockets on the host side. 8 bytes
 * choose the queue sizes, a reset, and the length of a host client's first bytes (next in the
 * input: its CONNECT line and data, also parsed by vsock_connect_parse); the rest is guest RAM
 * from 0: rx ring at 0x000/0x100/0x200, tx at 0x400/0x500/0x600, event at 0x800/0x900/0xa00,
 * packets after. A listener on <uds>_5 takes the guest's connections. The queues are kicked
 * and the host side run twice; every rx element the device pushed must name a chain and hold a
 * header, and nothing may touch memory outside the guarded RAM (guest_ram.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../virtio/mmio.h"
#include "../../virtio/vsock.h"
#include "guest_ram.h"

#define RAM 0x10000u
#define CID 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void wr(struct vmmio_dev *t, uint64_t off, uint32_t v)
{
    vmmio_write(t, off, (const uint8_t *)&v, 4);
}

static int unix_sock(const char *path, bool listening)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        abort();
    if (listening && (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0))
        abort();
    if (!listening && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* What the device put in the rx queue (the elements it pushed): a chain of the ring, at least
 * a header long. Headers are not looked at: the guest's buffers may overlap each other. */
static void check_rx(const uint8_t *ram, const struct vq *q)
{
    uint16_t n = q->st.next_used < q->st.size ? q->st.next_used : q->st.size;
    for (uint16_t k = 0; k < n; k++) {
        uint16_t i = (uint16_t)(q->st.next_used - 1 - k) % q->st.size;
        uint32_t id, len;
        memcpy(&id, ram + 0x204 + 8 * i, 4);
        memcpy(&len, ram + 0x208 + 8 * i, 4);
        if (id >= q->st.size || len < VSOCK_HDR_LEN || len > VSOCK_HDR_LEN + VSOCK_PKT_MAX)
            abort();
    }
}

static char dir[64], port5[96], uds[96];

static void cleanup(void)
{
    unlink(uds);
    unlink(port5);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct guest_mem mem;
    static uint8_t *ram;
    static struct vmmio_dev t;
    static int l5 = -1;
    struct vm_vsock cfg = {.enabled = true, .guest_cid = CID};
    uint8_t hdr[8], first[255];
    char err[160];

    if (size < sizeof(hdr))
        return 0;
    memcpy(hdr, data, sizeof(hdr));
    data += sizeof(hdr);
    size -= sizeof(hdr);
    size_t flen = hdr[7] < size ? hdr[7] : size;
    memcpy(first, data, flen);
    data += flen;
    size -= flen;
    uint32_t port;
    for (size_t n = 1; n <= flen; n++) /* every prefix as a complete line */
        if (vsock_connect_parse((const char *)first, n, &port) == 0 && first[n - 1] != '\n')
            abort();
    if (!ram) {
        ram = guest_ram_add(&mem, 0, RAM);
        snprintf(dir, sizeof(dir), "/tmp/fuzz-vsock-XXXXXX");
        if (!mkdtemp(dir))
            abort();
        snprintf(port5, sizeof(port5), "%s/v_5", dir);
        snprintf(uds, sizeof(uds), "%s/v", dir);
        l5 = unix_sock(port5, true);
        atexit(cleanup);
    }
    snprintf(cfg.uds_path, sizeof(cfg.uds_path), "%s/v", dir);
    memset(ram, 0, RAM);
    memcpy(ram, data, size < RAM ? size : RAM);
    unlink(cfg.uds_path);
    struct vsock *v = vsock_create(&cfg, NULL, err, sizeof(err));
    if (!v || vmmio_init(&t, &vsock_ops, v, &mem, 0) < 0)
        abort();
    wr(&t, 0x70, 1);
    wr(&t, 0x70, 3);
    wr(&t, 0x24, 0);
    wr(&t, 0x20, (uint32_t)(hdr[3] & 0x20) << 24); /* bit 29: EVENT_IDX */
    wr(&t, 0x24, 1);
    wr(&t, 0x20, 1); /* VERSION_1 */
    wr(&t, 0x70, 0xb);
    unsigned qsize = 1u << (hdr[0] % 5); /* 1..16 */
    for (unsigned q = 0; q < 3; q++) {
        wr(&t, 0x30, q);
        wr(&t, 0x38, q ? 1u << (hdr[q] % 5) : qsize);
        wr(&t, 0x80, 0x400 * q);
        wr(&t, 0x90, 0x400 * q + 0x100);
        wr(&t, 0xa0, 0x400 * q + 0x200);
        wr(&t, 0x44, 1);
    }
    wr(&t, 0x70, 0xf);
    int c = flen ? unix_sock(cfg.uds_path, false) : -1;
    if (c >= 0 && write(c, first, flen) < 0) {
        /* a full socket: fewer bytes */
    }
    for (int round = 0; round < 2; round++) {
        vmmio_event(&t, VSOCK_FD_POLL);
        vmmio_event(&t, VSOCK_FD_POLL);
        vmmio_notify(&t, VSOCK_QUEUE_TX);
        vmmio_notify(&t, VSOCK_QUEUE_RX);
        vmmio_notify(&t, VSOCK_QUEUE_EV);
        vmmio_event(&t, VSOCK_FD_TIMER);
        int a;
        while ((a = accept(l5, NULL, NULL)) >= 0) {
            if (send(a, "data", 4, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                /* closed already */
            }
            close(a);
        }
        if (hdr[6] & 1 && round == 0) {
            wr(&t, 0x70, 0); /* a reset in between */
            vmmio_event(&t, VSOCK_FD_TIMER);
        }
    }
    if (t.queues[VSOCK_QUEUE_RX].st.active)
        check_rx(ram, &t.queues[VSOCK_QUEUE_RX]);
    if (vsock_nconns(v) > VSOCK_CONNS_MAX)
        abort();
    vmmio_destroy(&t);
    vsock_ops.destroy(v);
    if (c >= 0)
        close(c);
    return 0;
}
