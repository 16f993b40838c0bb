/* Guest-side probe (static, runs inside the VM as root): takes over a virtio-net device through
 * /dev/mem (an interface the guest keeps down) and hands its tx queue hostile input: vnet
 * headers that lie (a checksum past the frame's end, a segmentation type never negotiated), a
 * chain shorter than a header, a frame over the 64 KiB limit, a notify storm; each must be
 * dropped and answered with the device still running, and a good frame after the storm must be
 * answered too. Then a descriptor outside RAM must get NEEDS_RESET, and after a reset a good
 * frame goes through again. Counting the dropped frames (net metrics) is the host's check.
 *
 *   net_hostile BASE     (BASE: the device's virtio-mmio window, e.g. 0xc0004000)
 *
 * Prints "net_hostile: <case> used=N status=0x.." lines and "net_hostile: ok" when every check
 * on the guest's side held. */
#define QSIZE     32
#define HDR       12
#define BIG_PAGES 17 /* 68 KiB: a frame over the device's 64 KiB + 14 limit */
#define STORM     20000

enum {
    P_RX_DESC,
    P_RX_AVAIL,
    P_RX_USED,
    P_DESC,
    P_AVAIL,
    P_USED,
    P_DATA,
    P_BIG,
    NPAGES = P_BIG + BIG_PAGES
};

#include "mmio_probe.h"

static uint16_t avail_idx;

/* The driver's initialization (virtio spec 3.1.1): VERSION_1 and CSUM only (no segmentation
 * offloads, no EVENT_IDX), both queues ours, no rx buffers. */
static int setup(void)
{
    memset(pages, 0, (size_t)P_BIG * PAGE);
    avail_idx = 0;
    if (probe_features(1)) /* VIRTIO_NET_F_CSUM */
        return -1;
    probe_queue(0, QSIZE, P_RX_DESC, P_RX_AVAIL, P_RX_USED);
    probe_queue(1, QSIZE, P_DESC, P_AVAIL, P_USED);
    return probe_driver_ok();
}

/* Makes chain `head` available on the tx queue and kicks. */
static void publish(uint16_t head)
{
    volatile uint16_t *avail = (volatile uint16_t *)(void *)page(P_AVAIL);
    avail[2 + avail_idx % QSIZE] = head;
    __sync_synchronize();
    avail[1] = ++avail_idx;
    __sync_synchronize();
    reg_write(0x50, 1); /* QueueNotify: tx */
}

static uint16_t used_idx(void)
{
    __sync_synchronize();
    return ((volatile uint16_t *)(void *)page(P_USED))[1];
}

/* Waits (bounded) for the tx queue to have answered n chains or the device to need a reset.
 * Returns the status. */
static uint32_t wait_used(uint16_t n)
{
    uint32_t s = 0;
    for (int i = 0; i < 500; i++) {
        s = reg_read(0x70);
        if (used_idx() == n || s & 0x40)
            break;
        sleep_ms(20);
    }
    return s;
}

/* A vnet header with flags, gso_type and checksum offsets, then a 60-byte broadcast frame of
 * a local experimental EtherType, in the data page; the chain is descriptors 0 (header) and 1
 * (frame). */
static void frame(uint8_t flags, uint8_t gso, uint16_t csum_start, uint16_t csum_offset)
{
    uint8_t *h = page(P_DATA), *f = h + HDR;
    memset(h, 0, HDR + 60);
    h[0] = flags;
    h[1] = gso;
    if (gso)
        h[4] = 0x05, h[5] = 0xa8; /* gso_size 1448 */
    memcpy(h + 6, &csum_start, 2);
    memcpy(h + 8, &csum_offset, 2);
    memset(f, 0xff, 6);
    memcpy(f + 6, "\x06\x00\xac\x10\x00\x09", 6);
    f[12] = 0x88, f[13] = 0xb5;
    memcpy(f + 14, "net_hostile", 11);
    set_desc(0, phys[P_DATA], HDR, 1, 1);
    set_desc(1, phys[P_DATA] + HDR, 60, 0, 0);
}

/* A case that the device must answer (dropped or sent) and keep running through. */
static int answered(const char *name, uint16_t n)
{
    uint32_t s = wait_used(n);
    printf("net_hostile: %s used=%u status=0x%x\n", name, used_idx(), s);
    return used_idx() == n && s == 0xf ? 0 : -1;
}

int main(int argc, char **argv)
{
    int ret = probe_open(argc, argv, "net_hostile", 1);
    if (ret)
        return ret;
    int bad = 0;
    if (setup()) {
        printf("net_hostile: set-up refused, status=0x%x\n", reg_read(0x70));
        return 1;
    }
    /* Headers that lie: a checksum at 58 + 8 in a 60-byte frame; TCP segmentation the driver
     * never negotiated. */
    frame(1, 0, 58, 8);
    publish(0);
    bad |= answered("csum-past-end", 1);
    frame(1, 1, 34, 16);
    publish(0);
    bad |= answered("gso-not-negotiated", 2);
    /* A chain of 8 bytes: shorter than the 12-byte header. */
    set_desc(0, phys[P_DATA], 8, 0, 0);
    publish(0);
    bad |= answered("shorter-than-header", 3);
    /* The header, then 17 pages: 69632 bytes of frame, over 65550. */
    frame(0, 0, 0, 0);
    set_desc(0, phys[P_DATA], HDR, 1, 1);
    for (unsigned i = 0; i < BIG_PAGES; i++)
        set_desc(1 + i, phys[P_BIG + i], PAGE, i + 1 < BIG_PAGES ? 1 : 0, (uint16_t)(2 + i));
    publish(0);
    bad |= answered("over-the-limit", 4);
    /* A notify storm on an empty ring, then a good frame. */
    for (int i = 0; i < STORM; i++)
        reg_write(0x50, 1);
    frame(0, 0, 0, 0);
    publish(0);
    bad |= answered("storm-then-good", 5);
    /* A buffer outside guest RAM: the device needs a reset. */
    set_desc(0, 0xfffffff00000ULL, HDR + 60, 0, 0);
    publish(0);
    uint32_t s = wait_used(6);
    printf("net_hostile: outside-ram status=0x%x\n", s);
    bad |= s & 0x40 ? 0 : -1;
    /* Reset, and the device works again. */
    if (setup()) {
        printf("net_hostile: set-up after reset refused, status=0x%x\n", reg_read(0x70));
        return 1;
    }
    frame(0, 0, 0, 0);
    publish(0);
    bad |= answered("good-after-reset", 1);
    reg_write(0x70, 0);
    printf("net_hostile: %s\n", bad ? "FAILED" : "ok");
    return bad ? 1 : 0;
}
