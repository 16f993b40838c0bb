/* Guest-side probe (static, runs inside the VM as root): takes over a virtio-blk device through
 * /dev/mem, hands it hostile virtqueues (a descriptor loop, a buffer outside RAM, an avail index
 * leap) and checks that each time the device answers with NEEDS_RESET; then resets it, sets up
 * a well-formed queue and reads sector 0 to show the device works again.
 *
 *   vq_corrupt BASE     (BASE: the device's virtio-mmio window, e.g. 0xc0003000)
 *
 * Prints "vq_corrupt: <case> status=0x.." lines and "vq_corrupt: ok" when every check held. */
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
#define QSIZE 8

enum { P_DESC, P_AVAIL, P_USED, P_DATA, NPAGES };

static volatile uint32_t *regs;
static uint8_t *pages;
static uint64_t phys[NPAGES];

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

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The driver's initialization sequence (virtio spec 3.1.1) with our own rings. */
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
    if (reg_read(0x70) != 0xb)
        return -1;
    reg_write(0x30, 0);
    reg_write(0x38, QSIZE);
    reg_write(0x80, (uint32_t)phys[P_DESC]);
    reg_write(0x84, (uint32_t)(phys[P_DESC] >> 32));
    reg_write(0x90, (uint32_t)phys[P_AVAIL]);
    reg_write(0x94, (uint32_t)(phys[P_AVAIL] >> 32));
    reg_write(0xa0, (uint32_t)phys[P_USED]);
    reg_write(0xa4, (uint32_t)(phys[P_USED] >> 32));
    reg_write(0x44, 1);
    reg_write(0x70, 0xf);
    return reg_read(0x70) == 0xf ? 0 : -1;
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = page(P_DESC) + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void publish(uint16_t head, uint16_t idx)
{
    volatile uint16_t *avail = (volatile uint16_t *)(void *)page(P_AVAIL);
    avail[2] = head;
    __sync_synchronize();
    avail[1] = idx;
    __sync_synchronize();
    reg_write(0x50, 0); /* QueueNotify */
}

/* Waits (bounded) until cond holds for the status register. Returns the last status. */
static uint32_t wait_status(uint32_t bit)
{
    uint32_t s = 0;
    for (int i = 0; i < 500; i++) {
        s = reg_read(0x70);
        if (s & bit)
            break;
        sleep_ms(20);
    }
    return s;
}

static int hostile(const char *name, void (*build)(void))
{
    if (setup()) {
        printf("vq_corrupt: %s: set-up refused, status=0x%x\n", name, reg_read(0x70));
        return -1;
    }
    build();
    uint32_t s = wait_status(0x40);
    /* The guest kernel's handler for this GSI acknowledges the config interrupt itself, so
     * only NEEDS_RESET is checked here (the interrupt is checked by the unit tests). */
    printf("vq_corrupt: %s status=0x%x\n", name, s);
    return s & 0x40 ? 0 : -1;
}

static void loop_chain(void)
{
    set_desc(0, phys[P_DATA], 16, 1, 1);
    set_desc(1, phys[P_DATA], 16, 1, 0);
    publish(0, 1);
}

static void outside_ram(void)
{
    set_desc(0, 0xfffffff00000ULL, 16, 0, 0);
    publish(0, 1);
}

static void index_leap(void)
{
    set_desc(0, phys[P_DATA], 16, 0, 0);
    publish(0, 1000);
}

/* A well-formed read of sector 0: header, 512 bytes, status byte. */
static int good_read(void)
{
    if (setup())
        return -1;
    uint8_t *data = page(P_DATA);
    uint32_t type = 0;
    uint64_t sector = 0;
    memcpy(data, &type, 4);
    memcpy(data + 8, &sector, 8);
    data[1024] = 0xee;
    set_desc(0, phys[P_DATA], 16, 1, 1);
    set_desc(1, phys[P_DATA] + 512, 512, 3, 2);
    set_desc(2, phys[P_DATA] + 1024, 1, 2, 0);
    publish(0, 1);
    volatile uint16_t *used = (volatile uint16_t *)(void *)page(P_USED);
    for (int i = 0; i < 500 && used[1] != 1; i++)
        sleep_ms(20);
    printf("vq_corrupt: good read used=%u status=%u data=%.16s\n", used[1], data[1024],
           (const char *)data + 512);
    return used[1] == 1 && data[1024] == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: vq_corrupt BASE\n");
        return 2;
    }
    uint64_t base = strtoull(argv[1], NULL, 0);
    int fd = open("/dev/mem", O_RDWR | O_SYNC);
    if (fd < 0) {
        perror("vq_corrupt: /dev/mem");
        return 1;
    }
    regs = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    pages = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
    if (regs == MAP_FAILED || pages == MAP_FAILED) {
        perror("vq_corrupt: mmap");
        return 1;
    }
    if (reg_read(0) != 0x74726976 || reg_read(8) != 2) {
        fprintf(stderr, "vq_corrupt: no virtio-blk at %#llx\n", (unsigned long long)base);
        return 1;
    }
    memset(pages, 0, (size_t)NPAGES * PAGE);
    if (physical_addresses()) {
        fprintf(stderr, "vq_corrupt: cannot read /proc/self/pagemap\n");
        return 1;
    }
    int bad = 0;
    bad |= hostile("loop", loop_chain);
    bad |= hostile("outside-ram", outside_ram);
    bad |= hostile("index-leap", index_leap);
    bad |= good_read();
    reg_write(0x70, 0);
    printf("vq_corrupt: %s\n", bad ? "FAILED" : "ok");
    return bad ? 1 : 0;
}
