/* Fuzz target: the restore paths of a snapshot's device state, as a hostile snapshot file
 * feeds them: the virtio-mmio transport with its queues and a virtio-blk or virtio-vsock device
 * behind it (virtio/mmio_state.c, vq_restore in virtio/queue.c, the devices' restore ops), the
 * UART
 * (vmm/serial.c) and the i8042 (vmm/i8042.c). Each run patches a valid saved state (taken in
 * LLVMFuzzerInitialize from a real driver session) at the offsets the input names, so both
 * near-valid and arbitrary states are reached, then restores it onto a fresh device. Besides
 * the sanitizers the target checks that a restore that succeeded saves back the very state it
 * took; that the device then survives the guest driving it (notifications, register accesses,
 * RAM pokes); and that whatever state the device reaches after that is accepted by a restore
 * again (restore never refuses what the device itself can produce).
 *
 * Input: the target byte (0 transport + blk, 1 UART, 2 i8042, 3 transport + vsock), a patch
 * count n, n patches of
 * (offset u16 into the state, byte), then operations until the input ends. */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../virtio/blk.h"
#include "../../virtio/mmio.h"
#include "../../virtio/vsock.h"
#include "fuzz_input.h"
#include "guest_ram.h"

#define RAM_SIZE 0x8000ULL
#define MAX_OPS  64

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A virtio device's whole saved state, as one byte string (its first vstate_len bytes). */
struct vstate {
    struct vmmio_state t;
    struct vq_state q[VIRTIO_MAX_QUEUES];
    union {
        struct vblk_state blk;
        struct vsock_state vsock;
    } dev;
};

/* A virtio device under test, and the valid state its driver session left. */
struct fdev {
    const struct virtio_dev_ops *ops;
    void *dev;
    unsigned nfds;
    struct vstate base;
    uint8_t ram[RAM_SIZE]; /* guest RAM as the session left it */
};

static struct guest_mem mem;
static uint8_t *ram;
static struct fdev devs[2]; /* blk, vsock */
static struct vmmio_dev t;
static int efd; /* every interrupt and kick of the devices: drained, never looked at */
static struct serial_state base_s;
static struct i8042_state base_k;
static char vsock_dir[64], vsock_uds[96];

static size_t vstate_len(const struct fdev *d)
{
    return offsetof(struct vstate, dev) + d->ops->state_size;
}

static void wr32(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

static void drain(void)
{
    uint64_t n;
    if (read(efd, &n, sizeof(n)) < 0) {
        /* nothing signalled */
    }
}

/* A driver's features and nq queues of 8 (queue q's rings at 0x1000 + 0x1000 * q), then
 * DRIVER_OK. */
static void driver_init(unsigned nq)
{
    static const uint32_t seq[][2] = {
            {0x70, 1}, {0x70, 3}, {0x24, 0},   {0x20, 1U << VIRTIO_F_RING_EVENT_IDX},
            {0x24, 1}, {0x20, 1}, {0x70, 0xb},
    };
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
        wr32(seq[i][0], seq[i][1]);
    for (unsigned q = 0; q < nq; q++) {
        wr32(0x30, q);
        wr32(0x38, 8);
        wr32(0x80, 0x1000 + 0x1000 * q);
        wr32(0x90, 0x1400 + 0x1000 * q);
        wr32(0xa0, 0x1800 + 0x1000 * q);
        wr32(0x44, 1);
    }
    wr32(0x70, 0xf);
}

/* blk: a driver's session up to a request answered (the valid state runs start from). */
static void blk_session(void)
{
    struct fdev *d = &devs[0];
    driver_init(1);
    /* One GET_ID request: header at 0x4000, 20 bytes at 0x5000, status at 0x6000. */
    static const struct {
        uint64_t addr;
        uint32_t len;
        uint16_t flags, next;
    } desc[3] = {{0x4000, 16, 1, 1}, {0x5000, 20, 3, 2}, {0x6000, 1, 2, 0}};
    uint32_t type = VIRTIO_BLK_T_GET_ID;
    uint16_t head = 0, idx = 1;
    memcpy(ram + 0x1000, desc, sizeof(desc));
    memcpy(ram + 0x4000, &type, 4);
    memcpy(ram + 0x1404, &head, 2);
    memcpy(ram + 0x1402, &idx, 2);
    vmmio_notify(&t, 0);
    if (vmmio_quiesce(&t) || vmmio_save(&t, &d->base.t, d->base.q, &d->base.dev))
        abort();
    memcpy(d->ram, ram, RAM_SIZE);
}

/* vsock: a driver that posted two rx buffers and one event buffer. */
static void vsock_session(void)
{
    struct fdev *d = &devs[1];
    static const struct {
        uint64_t addr;
        uint32_t len;
        uint16_t flags, next;
    } rx[2] = {{0x6000, 0x800, 2, 0}, {0x6800, 0x800, 2, 0}}, ev = {0x7000, 8, 2, 0};
    uint16_t ring[2] = {0, 1}, idx = 2, one = 1;
    driver_init(3);
    memcpy(ram + 0x1000, rx, sizeof(rx));
    memcpy(ram + 0x1404, ring, sizeof(ring));
    memcpy(ram + 0x1402, &idx, 2);
    memcpy(ram + 0x3000, &ev, sizeof(ev));
    memcpy(ram + 0x3404, &ring[0], 2);
    memcpy(ram + 0x3402, &one, 2);
    vmmio_notify(&t, VSOCK_QUEUE_RX);
    vmmio_notify(&t, VSOCK_QUEUE_EV);
    if (vmmio_quiesce(&t) || vmmio_save(&t, &d->base.t, d->base.q, &d->base.dev))
        abort();
    memcpy(d->ram, ram, RAM_SIZE);
}

static void vsock_cleanup(void)
{
    unlink(vsock_uds);
    rmdir(vsock_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static struct vm_drive cfg = {.id = "f", .writeback = true};
    struct vm_vsock vcfg = {.enabled = true, .guest_cid = 3};
    char err[256];
    (void)argc, (void)argv;
    log_level = LOG_ERROR;
    ram = guest_ram_add(&mem, 0, RAM_SIZE);
    efd = eventfd(0, EFD_NONBLOCK);
    int fd = memfd_create("fuzz-restore", 0);
    if (efd < 0 || fd < 0 || ftruncate(fd, 16 * VBLK_SECTOR) < 0)
        abort();
    static char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    cfg.path = path;
    snprintf(vsock_dir, sizeof(vsock_dir), "/tmp/fuzz-restore-XXXXXX");
    if (!mkdtemp(vsock_dir))
        abort();
    snprintf(vsock_uds, sizeof(vsock_uds), "%s/v", vsock_dir);
    snprintf(vcfg.uds_path, sizeof(vcfg.uds_path), "%s", vsock_uds);
    atexit(vsock_cleanup);
    devs[0] = (struct fdev){
            .ops = &vblk_ops, .dev = vblk_create(&cfg, NULL, err, sizeof(err)), .nfds = VBLK_NFDS};
    devs[1] = (struct fdev){.ops = &vsock_ops,
                            .dev = vsock_create(&vcfg, NULL, err, sizeof(err)),
                            .nfds = VSOCK_NFDS};
    for (unsigned i = 0; i < 2; i++) {
        if (!devs[i].dev || vmmio_init(&t, devs[i].ops, devs[i].dev, &mem, 0)) {
            fprintf(stderr, "fuzz_state_restore: %s\n", err);
            abort();
        }
        memset(ram, 0, RAM_SIZE);
        i ? vsock_session() : blk_session();
        vmmio_destroy(&t);
    }

    struct serial s;
    struct i8042 k;
    if (serial_init(&s, -1, efd, efd) || i8042_init(&k, efd, efd))
        abort();
    serial_input(&s, (const uint8_t *)"snapshot", 8);
    serial_save(&s, &base_s);
    i8042_ctrl_alt_del(&k);
    i8042_save(&k, &base_k);
    serial_destroy(&s);
    i8042_destroy(&k);
    drain();
    return 0;
}

/* Patches the state: n times (offset u16, byte); offsets past the state wrap. */
static void patch(struct input *in, void *state, size_t len)
{
    unsigned n = in8(in);
    for (unsigned i = 0; i < n && in->left; i++) {
        uint16_t off = in16(in);
        ((uint8_t *)state)[off % len] = in8(in);
    }
}

/* What the device reached is a state restore accepts, onto a fresh transport. */
static void resave_virtio(const struct fdev *d)
{
    struct vstate v;
    char err[256];
    memset(&v, 0, sizeof(v));
    if (vmmio_quiesce(&t) || vmmio_save(&t, &v.t, v.q, &v.dev))
        abort();
    vmmio_destroy(&t);
    if (vmmio_init(&t, d->ops, d->dev, &mem, 0))
        abort();
    if (vmmio_restore(&t, &v.t, v.q, &v.dev, err, sizeof(err))) {
        fprintf(stderr, "fuzz_state_restore: a saved state refused: %s\n", err);
        abort();
    }
}

static void run_virtio(struct input *in, const struct fdev *d)
{
    struct vstate v = d->base, back;
    char err[256];

    memcpy(ram, d->ram, RAM_SIZE);
    patch(in, &v, vstate_len(d));
    if (vmmio_init(&t, d->ops, d->dev, &mem, 0))
        abort();
    d->ops->reset(d->dev, &t);
    if (vmmio_restore(&t, &v.t, v.q, &v.dev, err, sizeof(err)) == 0) {
        memset(&back, 0, sizeof(back));
        if (vmmio_save(&t, &back.t, back.q, &back.dev) || memcmp(&back, &v, vstate_len(d)))
            abort(); /* restored, but not what was given */
        pthread_mutex_lock(&t.lock);
        bool shown = vmmio_regs_current(&t); /* what the guest reads is the restored state */
        pthread_mutex_unlock(&t.lock);
        if (!shown)
            abort();
        for (unsigned i = 0; i < MAX_OPS && in->left; i++) {
            uint8_t op = in8(in);
            uint16_t x = in16(in);
            uint32_t v32 = in16(in);
            switch (op % 5) {
            case 0:
                vmmio_notify(&t, x % VIRTIO_MAX_QUEUES);
                break;
            case 1: {
                uint8_t buf[8];
                vmmio_read(&t, x & 0xfff, buf, 1u << (op >> 6));
                break;
            }
            case 2:
                wr32(x & 0xffc, v32);
                break;
            case 3:
                ram[x % RAM_SIZE] = (uint8_t)v32;
                break;
            default:
                vmmio_event(&t, x % d->nfds);
                break;
            }
        }
        resave_virtio(d);
    }
    wr32(0x70, 0);
    if (vmmio_quiesce(&t))
        abort();
    vmmio_destroy(&t);
    drain();
}

/* The legacy devices: restore, check the round trip, let the guest use the ports, and restore
 * what they reached. */
static void run_legacy(struct input *in, bool uart)
{
    struct serial s;
    struct i8042 k;
    struct serial_state ss = base_s, sb;
    struct i8042_state ks = base_k, kb;
    char err[256];

    if (serial_init(&s, -1, efd, efd) || i8042_init(&k, efd, efd))
        abort();
    struct bus_dev d = uart ? serial_bus_dev(&s) : i8042_bus_dev(&k);
    patch(in, uart ? (void *)&ss : (void *)&ks, uart ? sizeof(ss) : sizeof(ks));
    int ret = uart ? serial_restore(&s, &ss, err, sizeof(err))
                   : i8042_restore(&k, &ks, err, sizeof(err));
    if (ret == 0) {
        uart ? serial_save(&s, &sb) : i8042_save(&k, &kb);
        if (uart ? memcmp(&sb, &ss, sizeof(ss)) : memcmp(&kb, &ks, sizeof(ks)))
            abort();
        for (unsigned i = 0; i < MAX_OPS && in->left; i++) {
            uint8_t op = in8(in), v = in8(in);
            uint64_t port = op % d.len;
            if (op & 0x80)
                d.write(d.opaque, port, &v, 1);
            else
                d.read(d.opaque, port, &v, 1);
        }
        if (uart) {
            serial_save(&s, &sb);
            ret = serial_restore(&s, &sb, err, sizeof(err));
        } else {
            i8042_save(&k, &kb);
            ret = i8042_restore(&k, &kb, err, sizeof(err));
        }
        if (ret)
            abort();
    }
    serial_destroy(&s);
    i8042_destroy(&k);
    drain();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    switch (in8(&in) % 4) {
    case 0:
        run_virtio(&in, &devs[0]);
        break;
    case 1:
        run_legacy(&in, true);
        break;
    case 2:
        run_legacy(&in, false);
        break;
    default:
        run_virtio(&in, &devs[1]);
        break;
    }
    return 0;
}
