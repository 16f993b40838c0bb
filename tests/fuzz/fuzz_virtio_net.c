/* Fuzz target: virtio-net (virtio/net.c, net_frame.c) behind the mmio transport, over guest
 * RAM the input fills: 8 bytes choose the driver's features, the queue sizes, a reset and the
 * length of the frame the host sends (8 × hdr[7] bytes, next in the input); the rest is guest
 * RAM from 0: rx ring at 0x000/0x100/0x200, tx ring at 0x400/0x500/0x600, buffers after. The tx
 * queue is kicked, the frame handed in, the rx queue kicked; every header the guest wrote goes
 * through vnet_tx_check, every frame the device sends must be one the checks passed, and nothing
 * may touch memory outside the guarded RAM (guest_ram.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../virtio/mmio.h"
#include "../../virtio/net.h"
#include "guest_ram.h"

#define RAM 0x10000u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void wr(struct vmmio_dev *t, uint64_t off, uint32_t v)
{
    vmmio_write(t, off, (const uint8_t *)&v, 4);
}

static void drain(int fd)
{
    static uint8_t buf[VNET_BUF_MAX];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
        struct vnet_hdr h;
        if (n < VNET_HDR_LEN + VNET_ETH_MIN)
            abort(); /* the device sent what its checks refuse */
        vnet_hdr_read(buf, &h);
        if (vnet_tx_check(&h, (uint64_t)n - VNET_HDR_LEN, ~0ULL))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct guest_mem mem;
    static uint8_t *ram;
    static struct vmmio_dev t;
    static uint8_t frame[8 * 255];
    struct vm_net cfg = {.id = "f", .host_dev_name = "f", .has_mac = true};
    uint8_t hdr[8];
    char err[128];
    int sv[2];

    if (size < sizeof(hdr))
        return 0;
    memcpy(hdr, data, sizeof(hdr));
    data += sizeof(hdr);
    size -= sizeof(hdr);
    size_t flen = 8u * hdr[7];
    if (flen > size)
        flen = size;
    memcpy(frame, data, flen);
    data += flen;
    size -= flen;
    if (!ram)
        ram = guest_ram_add(&mem, 0, RAM);
    memset(ram, 0, RAM);
    memcpy(ram, data, size < RAM ? size : RAM);
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    struct vnet *n = vnet_create_fd(&cfg, sv[0], NULL, err, sizeof(err));
    if (!n || vmmio_init(&t, &vnet_ops, n, &mem, 0) < 0)
        abort();
    wr(&t, 0x70, 1);
    wr(&t, 0x70, 3);
    wr(&t, 0x24, 0);
    wr(&t, 0x20,
       (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
               (uint32_t)(hdr[3] & 0x20) << 24); /* bit 29: EVENT_IDX */
    wr(&t, 0x24, 1);
    wr(&t, 0x20, 1); /* VERSION_1 */
    wr(&t, 0x70, 0xb);
    for (unsigned q = 0; q < 2; q++) {
        wr(&t, 0x30, q);
        wr(&t, 0x38, 1u << (hdr[4 + q] % 5)); /* 1..16 */
        wr(&t, 0x80, 0x400 * q);
        wr(&t, 0x90, 0x400 * q + 0x100);
        wr(&t, 0xa0, 0x400 * q + 0x200);
        wr(&t, 0x44, 1);
    }
    wr(&t, 0x70, 0xf);
    for (int round = 0; round < 2; round++) {
        vmmio_notify(&t, VNET_QUEUE_TX);
        drain(sv[1]);
        if (flen && send(sv[1], frame, flen, 0) < 0) {
            /* a full socket: the frame is not sent */
        }
        vmmio_notify(&t, VNET_QUEUE_RX);
        vmmio_event(&t, VNET_FD_TAP);
        vmmio_event(&t, VNET_FD_RATE);
        if (hdr[6] & 1) {
            wr(&t, 0x70, 0); /* a reset in between */
            wr(&t, 0x70, 1);
        }
    }
    vmmio_destroy(&t);
    vnet_ops.destroy(n);
    close(sv[1]);
    return 0;
}
