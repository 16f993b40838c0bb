/* Fuzz target: the split-virtqueue walker (virtio/queue.c) and virtio-blk request parsing
 * (vblk_parse/vblk_check in virtio/blk_req.c) over guest memory the input fills:
 * the first bytes choose the queue size and ring addresses, the rest is guest RAM. Every iovec
 * handed out must lie inside the fake RAM. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../virtio/blk.h"

#define RAM 0x4000u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t ram[RAM] __attribute__((aligned(4096)));

static int in_ram(const struct iovec *v)
{
    const uint8_t *p = v->iov_base;
    return p >= ram && v->iov_len <= RAM && (size_t)(p - ram) <= RAM - v->iov_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vq_chain c;
    static struct vblk_req r;
    struct guest_mem mem = {.nregions = 1};
    struct vq q;
    uint16_t hdr[4];

    if (size < sizeof(hdr))
        return 0;
    memcpy(hdr, data, sizeof(hdr));
    data += sizeof(hdr);
    size -= sizeof(hdr);
    memset(ram, 0, sizeof(ram));
    memcpy(ram, data, size < RAM ? size : RAM);
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = ram};

    vq_reset(&q);
    q.st.size = hdr[0] & 0x1ff;
    q.st.desc_gpa = hdr[1];
    q.st.avail_gpa = hdr[2];
    q.st.used_gpa = hdr[3] & 0x7fff;
    if (vq_activate(&q, &mem, hdr[0] & 0x8000) != 0)
        return 0;
    for (int n = 0; n < 2 * VQ_MAX_SIZE; n++) {
        int got = vq_pop(&q, &mem, &c);
        if (got <= 0)
            break;
        if (c.head >= q.st.size || c.niov > q.st.size || c.nout > c.niov)
            abort();
        for (unsigned i = 0; i < c.niov; i++)
            if (!in_ram(&c.iov[i]))
                abort();
        if (vblk_parse(&c, &r) == 0) {
            uint64_t sum = 0;
            for (unsigned i = 0; i < r.niov; i++) {
                if (!in_ram(&r.iov[i]))
                    abort();
                sum += r.iov[i].iov_len;
            }
            if ((r.type == VIRTIO_BLK_T_IN || r.type == VIRTIO_BLK_T_OUT) && sum != r.len)
                abort();
            vblk_check(&r, hdr[1], hdr[2] & 1);
        }
        if (r.status && (r.status < ram || r.status >= ram + RAM))
            abort();
        vq_push(&q, c.head, c.in_len);
        vq_should_notify(&q);
    }
    return 0;
}
