/* Guest-side probe (static, root): takes over the virtio-vsock device through /dev/mem (the
 * guest kernel's driver loses it: run it last) and plays a hostile driver: a header shorter
 * than 44 bytes, a length beyond its chain, a 64 KiB + 1 packet, a packet for no connection,
 * a notify storm on every queue; after each the device must not be NEEDS_RESET, and a REQUEST
 * to host port PORT (a host listener on <uds>_PORT) must still be answered with RESPONSE.
 *
 *   vsock_hostile BASE CID PORT   (BASE: the device's virtio-mmio window, e.g. 0xc0002000)
 *
 * Prints "vsock_hostile: <step> ..." lines and "vsock_hostile: ok" when every check held. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE  4096
#define QSIZE 32
#define NRX   8
#define HDR   44
#define STORM 50000

enum { P_RING = 0, P_RX = 9, P_TX = P_RX + NRX, NPAGES = P_TX + 24 };

static volatile uint32_t *regs;
static uint8_t *pages;
static uint64_t phys[NPAGES];
static uint64_t cid;
static uint16_t avail_idx[3], used_seen[3];

static void reg_write(unsigned off, uint32_t v)
{
    regs[off / 4] = v;
    __sync_synchronize();
}

static uint32_t reg_read(unsigned off)
{
    __sync_synchronize();
    return regs[off / 4];
}

static uint8_t *page(unsigned i)
{
    return pages + (size_t)i * PAGE;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int physical_addresses(void)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0)
        return -errno;
    for (unsigned i = 0; i < NPAGES; i++) {
        uint64_t e;
        off_t off = (off_t)((uintptr_t)page(i) / PAGE * sizeof(e));
        if (pread(fd, &e, sizeof(e), off) != sizeof(e) || !(e >> 63) || !(e & ((1ULL << 55) - 1))) {
            close(fd);
            return -EIO;
        }
        phys[i] = (e & ((1ULL << 55) - 1)) * PAGE;
    }
    close(fd);
    return 0;
}

static uint8_t *ring(unsigned q, unsigned part) /* 0 desc, 1 avail, 2 used */
{
    return page(P_RING + 3 * q + part);
}

static int setup(void)
{
    memset(pages, 0, (size_t)NPAGES * PAGE);
    reg_write(0x70, 0);
    reg_write(0x70, 1);
    reg_write(0x70, 3);
    reg_write(0x24, 1);
    reg_write(0x20, 1); /* VIRTIO_F_VERSION_1 */
    reg_write(0x24, 0);
    reg_write(0x20, 0);
    reg_write(0x70, 0xb);
    for (unsigned q = 0; q < 3; q++) {
        reg_write(0x30, q);
        reg_write(0x38, QSIZE);
        uint64_t a[3] = {phys[P_RING + 3 * q], phys[P_RING + 3 * q + 1], phys[P_RING + 3 * q + 2]};
        for (unsigned p = 0; p < 3; p++) {
            reg_write(0x80 + 0x10 * p, (uint32_t)a[p]);
            reg_write(0x84 + 0x10 * p, (uint32_t)(a[p] >> 32));
        }
        reg_write(0x44, 1);
    }
    reg_write(0x70, 0xf);
    return reg_read(0x70) == 0xf ? 0 : -1;
}

static void set_desc(unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    uint8_t *d = ring(q, 0) + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void publish(unsigned q, uint16_t head)
{
    volatile uint16_t *avail = (volatile uint16_t *)(void *)ring(q, 1);
    avail[2 + avail_idx[q] % QSIZE] = head;
    __sync_synchronize();
    avail[1] = ++avail_idx[q];
    __sync_synchronize();
    reg_write(0x50, q);
}

static uint16_t used_idx(unsigned q)
{
    __sync_synchronize();
    return ((volatile uint16_t *)(void *)ring(q, 2))[1];
}

static void header(uint8_t *p, uint32_t src, uint32_t dst, uint32_t len, uint16_t op)
{
    uint64_t host = 2;
    uint16_t type = 1;
    uint32_t zero = 0, buf_alloc = 65536;
    memset(p, 0, HDR);
    memcpy(p, &cid, 8);
    memcpy(p + 8, &host, 8);
    memcpy(p + 16, &src, 4);
    memcpy(p + 20, &dst, 4);
    memcpy(p + 24, &len, 4);
    memcpy(p + 28, &type, 2);
    memcpy(p + 30, &op, 2);
    memcpy(p + 32, &zero, 4);
    memcpy(p + 36, &buf_alloc, 4);
}

/* Sends the chain at descriptor 0 (already built) and waits (bounded) until it is used. */
static int send_chain(void)
{
    uint16_t want = (uint16_t)(used_idx(1) + 1);
    publish(1, 0);
    for (int i = 0; i < 500 && used_idx(1) != want; i++)
        sleep_ms(10);
    return used_idx(1) == want ? 0 : -1;
}

/* Waits (bounded) for an rx packet with op for guest port gport. */
static int expect_rx(uint16_t op, uint32_t gport)
{
    for (int i = 0; i < 500; i++) {
        while (used_seen[0] != used_idx(0)) {
            const uint8_t *e = ring(0, 2) + 4 + 8 * (used_seen[0]++ % QSIZE);
            uint32_t id, dst;
            uint16_t got;
            memcpy(&id, e, 4);
            const uint8_t *h = page(P_RX + id % NRX);
            memcpy(&dst, h + 20, 4);
            memcpy(&got, h + 30, 2);
            set_desc(0, id, phys[P_RX + id % NRX], PAGE, 2, 0); /* the buffer goes back */
            publish(0, (uint16_t)id);
            if (got == op && dst == gport)
                return 0;
        }
        sleep_ms(10);
    }
    return -1;
}

static int check(const char *step, int ok)
{
    uint32_t s = reg_read(0x70);
    int good = ok == 0 && !(s & 0x40);
    printf("vsock_hostile: %s %s status=0x%x\n", step, good ? "ok" : "FAILED", s);
    return good ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: vsock_hostile BASE CID PORT\n");
        return 2;
    }
    uint64_t base = strtoull(argv[1], NULL, 0);
    cid = strtoull(argv[2], NULL, 0);
    uint32_t port = (uint32_t)strtoul(argv[3], NULL, 0);
    int fd = open("/dev/mem", O_RDWR | O_SYNC);
    if (fd < 0)
        return perror("vsock_hostile: /dev/mem"), 1;
    regs = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    pages = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
    if (regs == MAP_FAILED || pages == MAP_FAILED)
        return perror("vsock_hostile: mmap"), 1;
    if (reg_read(0) != 0x74726976 || reg_read(8) != 19)
        return fprintf(stderr, "vsock_hostile: no virtio-vsock at %#llx\n",
                       (unsigned long long)base),
               1;
    memset(pages, 0, (size_t)NPAGES * PAGE);
    if (physical_addresses())
        return fprintf(stderr, "vsock_hostile: cannot read /proc/self/pagemap\n"), 1;
    if (setup())
        return fprintf(stderr, "vsock_hostile: set-up refused, status=0x%x\n", reg_read(0x70)), 1;
    for (unsigned i = 0; i < NRX; i++) {
        set_desc(0, i, phys[P_RX + i], PAGE, 2, 0);
        publish(0, (uint16_t)i);
    }
    uint8_t *tx = page(P_TX);
    int bad = 0;
    /* a header of 20 bytes */
    header(tx, 1000, port, 0, 1);
    set_desc(1, 0, phys[P_TX], 20, 0, 0);
    bad |= check("short-header", send_chain());
    /* len 100 in a chain of 44 + 50 */
    header(tx, 1000, port, 100, 5);
    set_desc(1, 0, phys[P_TX], HDR + 50, 0, 0);
    bad |= check("len-beyond-chain", send_chain());
    /* a 64 KiB + 1 packet: the header, then 17 pages */
    header(tx, 1000, port, 65537, 5);
    set_desc(1, 0, phys[P_TX], HDR, 1, 1);
    for (unsigned i = 1; i <= 17; i++)
        set_desc(1, i, phys[P_TX + i], PAGE, i < 17 ? 1 : 0, (uint16_t)(i + 1));
    bad |= check("over-64KiB", send_chain());
    /* RW for no connection: answered with RST */
    header(tx, 1001, port, 4, 5);
    memcpy(tx + HDR, "data", 4);
    set_desc(1, 0, phys[P_TX], HDR + 4, 0, 0);
    bad |= check("no-connection", send_chain() || expect_rx(3, 1001));
    /* a notify storm on every queue, the rings empty */
    for (unsigned q = 0; q < 3; q++)
        for (int i = 0; i < STORM; i++)
            reg_write(0x50, q);
    bad |= check("notify-storm", 0);
    /* the device still answers: REQUEST → RESPONSE from the host listener */
    for (uint32_t src = 2000; src < 2002; src++) {
        header(tx, src, port, 0, 1);
        set_desc(1, 0, phys[P_TX], HDR, 0, 0);
        bad |= check(src == 2000 ? "request" : "request-again", send_chain() || expect_rx(2, src));
    }
    reg_write(0x70, 0);
    printf("vsock_hostile: %s\n", bad ? "FAILED" : "ok");
    return bad ? 1 : 0;
}
