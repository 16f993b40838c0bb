/* virtio-blk over time (blk_harness.c): quiesce and a snapshot's save/restore, a slow disk
 * (userfaultfd) that a vCPU never waits for and a reset during its I/O, interrupt moderation. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "../../virtio/blk_dev.h"
#include "blk_harness.h"

/* virtio_drive_update finds drives by id; an unknown id is -ENOENT. */
/* Quiesce (a snapshot's pause): a request waiting for tokens goes back to the ring and is
 * popped again later; requests in flight on the Async engine are answered; nothing is held. */
static void quiesce_leaves_nothing_in_flight(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "q", .async = async, .ops = {.size = 1, .refill_time_ms = 100000}};
    char err[256];
    start(&d);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, 1, DATA + 512, 512, false);
    vmmio_notify(&t, 0);
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(used_idx(), 1);                /* the first answered (in flight: waited for) */
    assert_int_equal(t.queues[0].st.last_avail, 1); /* the second is back in the ring */
    assert_int_equal(status(0), VIRTIO_BLK_S_OK);
    assert_int_equal(rd(0x60) & VIRTIO_INT_USED, VIRTIO_INT_USED);
    struct vm_bucket off = {0};
    assert_int_equal(patch_drive(&d, NULL, NULL, &off, err, sizeof(err)), 0);
    kick(2); /* the second was given back, and is taken again */
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 1);
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(used_idx(), 2);
}

/* A snapshot of a quiesced drive restored onto a fresh device on the same file: the request
 * given back to the ring is answered there. Saving before quiesce, a changed disk size and
 * requests in flight in the state are refused. */
static void save_restore(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "s", .async = async, .ops = {.size = 1, .refill_time_ms = 100000}};
    struct vmmio_state s;
    struct vq_state q[VIRTIO_MAX_QUEUES];
    struct vblk_state bs, bad;
    char err[256];
    start(&d);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, 5, DATA + 512, 512, false);
    usleep(3000);
    vmmio_notify(&t, 0);
    assert_int_equal(vmmio_save(&t, &s, q, &bs), -EBUSY); /* one waits for tokens */
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(vmmio_save(&t, &s, q, &bs), 0);
    assert_int_equal(bs.capacity, DISK / 512);
    vmmio_destroy(&t);
    vblk_ops.destroy(blk);
    d.ops = (struct vm_bucket){0};
    blk = vblk_create(&d, &stats, err, sizeof(err));
    assert_non_null(blk);
    assert_int_equal(vmmio_init(&t, &vblk_ops, blk, &mem, 0), 0);
    bad = (struct vblk_state){.capacity = bs.capacity + 1};
    assert_int_equal(vmmio_restore(&t, &s, q, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "sectors"));
    struct vq_state popped[VIRTIO_MAX_QUEUES];
    memcpy(popped, q, sizeof(popped));
    popped[0].last_avail++;
    assert_int_equal(vmmio_restore(&t, &s, popped, &bs, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "in flight"));
    assert_int_equal(rd(0x70), 0);
    assert_int_equal(vmmio_restore(&t, &s, q, &bs, err, sizeof(err)), 0);
    assert_int_equal(rd(0x70), 0xf);
    kick(2);
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 5);
}

/* The FLUSH latch is part of the saved state: a drive whose FLUSH failed (the fd swapped for a
 * pipe, as in test_virtio_blk.c) is saved latched, and the restored device on a good file
 * still fails its FLUSH (the kernel reported the error once, to the process that saved) until
 * the driver resets it. A latch that is not 0 or 1, or a non-zero pad, is refused. */
static void save_restore_latched(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "sl", .async = async, .writeback = true};
    struct vmmio_state s;
    struct vq_state q[VIRTIO_MAX_QUEUES];
    struct vblk_state bs, bad;
    char err[256];
    int p[2];
    start(&d);
    int good = backing_to_pipe(async, p);
    uint16_t f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(1);
    assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
    assert_int_equal(vmmio_quiesce(&t), 0);
    assert_int_equal(vmmio_save(&t, &s, q, &bs), 0);
    assert_int_equal(bs.flush_failed, 1);
    vmmio_destroy(&t);
    vblk_ops.destroy(blk);
    close(good);
    close(p[0]);
    close(p[1]);
    blk = vblk_create(&d, &stats, err, sizeof(err)); /* the same file, opened afresh */
    assert_non_null(blk);
    assert_int_equal(vmmio_init(&t, &vblk_ops, blk, &mem, 0), 0);
    bad = bs;
    bad.flush_failed = 2;
    assert_int_equal(vmmio_restore(&t, &s, q, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "malformed"));
    bad = bs;
    bad.pad[6] = 1;
    assert_int_equal(vmmio_restore(&t, &s, q, &bad, err, sizeof(err)), -EINVAL);
    assert_int_equal(vmmio_restore(&t, &s, q, &bs, err, sizeof(err)), 0);
    f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(2);
    assert_int_equal(status(f), VIRTIO_BLK_S_IOERR); /* still latched, on a good file */
    wr(0x70, 0);
    driver_init();
    f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(1);
    assert_int_equal(status(f), VIRTIO_BLK_S_OK);
}

static void *notify_thread(void *arg)
{
    (void)arg;
    vmmio_notify(&t, 0);
    return NULL;
}

/* A vCPU's register accesses during the I/O (a Status read, then maybe a reset). */
static uint32_t vcpu_status;
static int vcpu_done = -1;

static void *vcpu_thread(void *arg)
{
    uint64_t one = 1;
    vcpu_status = rd(0x70);
    if (*(bool *)arg)
        wr(0x70, 0);
    assert_int_equal(write(vcpu_done, &one, sizeof(one)), sizeof(one));
    return NULL;
}

#define SLOW_GPA 0x100000ULL /* a guest page that userfaultfd keeps missing */

/* A Sync read whose data buffer is a guest page that is not there yet (userfaultfd): preadv
 * waits in the kernel until the test supplies the page, as a slow disk would keep it. A vCPU's
 * register access meanwhile does not wait for it (item 7 of issue 12; 2 s bound a wedge, they
 * are no timing); after a reset meanwhile the answer is dropped. */
static void slow_sync_read(void **state)
{
    bool reset = *(bool *)*state;
    struct vm_drive d = {.id = "slow"};
    start(&d);
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0)
        skip(); /* no userfaultfd on this host */
    struct uffdio_api api = {.api = UFFD_API};
    assert_int_equal(ioctl(uffd, UFFDIO_API, &api), 0);
    uint8_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(page != MAP_FAILED);
    struct uffdio_register reg = {.range = {(uintptr_t)page, 4096},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    assert_int_equal(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
    mem.regions[1] = (struct gm_region){.gpa = SLOW_GPA, .size = 4096, .host = page};
    mem.nregions = 2;
    uint16_t r = request(VIRTIO_BLK_T_IN, 3, SLOW_GPA, 512, false);

    pthread_t io, vcpu;
    vcpu_done = eventfd(0, 0);
    assert_int_equal(pthread_create(&io, NULL, notify_thread, NULL), 0);
    struct pollfd p = {.fd = uffd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 2000), 1); /* the read waits for the page */
    struct uffd_msg msg;
    assert_int_equal(read(uffd, &msg, sizeof(msg)), sizeof(msg));
    assert_int_equal(msg.event, UFFD_EVENT_PAGEFAULT);
    assert_int_equal(pthread_create(&vcpu, NULL, vcpu_thread, &reset), 0);
    struct pollfd v = {.fd = vcpu_done, .events = POLLIN};
    bool answered = poll(&v, 1, 2000) == 1;
    struct uffdio_zeropage z = {.range = {(uintptr_t)page, 4096}};
    assert_int_equal(ioctl(uffd, UFFDIO_ZEROPAGE, &z), 0); /* the page arrives, preadv ends */
    pthread_join(io, NULL);
    pthread_join(vcpu, NULL);
    close(vcpu_done);
    close(uffd);
    assert_true(answered);
    assert_int_equal(vcpu_status, 0xf);
    assert_int_equal(page[0], 3); /* the read itself ran */
    assert_int_equal(used_idx(), reset ? 0 : 1);
    assert_int_equal(status(r), reset ? 0xee : VIRTIO_BLK_S_OK);
    mem.nregions = 1;
    munmap(page, 4096);
}

/* Interrupts signalled through t.irq_fd since the last call. */
static uint64_t interrupts(void)
{
    uint64_t n = 0;
    if (read(t.irq_fd, &n, sizeof(n)) != sizeof(n))
        return 0;
    return n;
}

/* Waits (bounded) for the moderation round to end and runs it. Returns false if none ended. */
static bool end_of_round(int timeout_ms)
{
    struct pollfd p = {.fd = dev_fd(VBLK_FD_HOLD), .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) /* a round is at most IRQMOD_MAX_ROUND_NS */
        return false;
    vmmio_event(&t, VBLK_FD_HOLD);
    return true;
}

/* Interrupt moderation through the device: the first answer interrupts at once (nothing
 * measured yet); once the guest's turnaround is known, an answer holds the interrupt while the
 * ring is polled without kicks (VRING_USED_F_NO_NOTIFY), a request put in without a kick is
 * found and answered, and one interrupt covers both when a round finds nothing more. A reset
 * in the middle of a hold cancels it: no interrupt afterwards. */
static void interrupt_moderation(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "m"};
    start(&d);
    t.irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(t.irq_fd >= 0);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    kick(1);
    assert_int_equal(interrupts(), 1);
    /* The turnaround is measured: the next answer is held. (A test preempted for over 2 ms
     * looks like an idle guest and measures nothing: then try again, a bounded number.) */
    uint16_t r1, n = 1;
    uint64_t irqs = 1;
    for (int i = 0; i < 5 && irqs; i++) {
        r1 = request(VIRTIO_BLK_T_IN, 1, DATA, 512, false);
        kick(++n);
        assert_int_equal(status(r1), VIRTIO_BLK_S_OK);
        irqs = interrupts();
    }
    assert_int_equal(irqs, 0);
    assert_int_equal(ram[USED] & 1, 1);                                /* kicks suppressed */
    uint16_t r2 = request(VIRTIO_BLK_T_IN, 2, DATA + 512, 512, false); /* no kick */
    int rounds = 0;
    while (interrupts() == 0 && rounds < 2 + IRQMOD_MAX_ROUNDS)
        rounds += end_of_round(1000);
    assert_int_equal(used_idx(), n + 1);
    assert_int_equal(status(r2), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 2);
    assert_true(rounds >= 2 && rounds <= IRQMOD_MAX_ROUNDS); /* found r2, then nothing */
    assert_int_equal(ram[USED] & 1, 0);                      /* kicks re-armed */
    /* A reset during a hold: the round's timer is disarmed, no interrupt comes. */
    request(VIRTIO_BLK_T_IN, 3, DATA, 512, false);
    kick(n + 2);
    assert_int_equal(interrupts(), 0);
    wr(0x70, 0);
    assert_false(end_of_round(50));
    assert_int_equal(interrupts(), 0);
    close(t.irq_fd);
    t.irq_fd = -1;
}

/* One read on the pipe completes (512 bytes of 0x5a written to fd): waits (bounded) for its
 * completion and hands the ring's event to the device, which then has answered `used` in all
 * and raised `irqs` interrupts since the last look. */
static void read_done(int fd, uint16_t used, uint64_t irqs)
{
    uint8_t buf[512];
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(write(fd, buf, sizeof(buf)), sizeof(buf));
    struct pollfd p = {.fd = dev_fd(VBLK_FD_RING), .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1); /* a bound: the data is in the pipe already */
    vmmio_event(&t, VBLK_FD_RING);
    assert_int_equal(used_idx(), used);
    assert_int_equal(interrupts(), irqs);
}

/* Two reads of sectors n and n + 1, kicked more than 2 ms after the last interrupt, so irqmod
 * measures no turnaround and holds nothing. */
static void two_reads(uint64_t n)
{
    request(VIRTIO_BLK_T_IN, n, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, n + 1, DATA + 512, 512, false);
    usleep(3000);
    vmmio_notify(&t, 0);
    assert_int_equal(blk->eng.inflight, 2);
}

/* Async: an answer waits for the requests still in flight, and one interrupt covers them all
 * (the ring's file is a pipe, so the test decides when each read completes). An await whose
 * timer ends before any other completion joined raises the interrupt then, and the next
 * answer with requests in flight goes out at once (backoff). */
static void await_in_flight(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "aw", .async = true};
    int p[2];
    start(&d);
    t.irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(t.irq_fd >= 0);
    close(backing_to_pipe(true, p));
    two_reads(0);
    read_done(p[1], 1, 0); /* answered at once, its interrupt awaits the other */
    read_done(p[1], 2, 1); /* one for both */
    assert_int_equal(status(0), VIRTIO_BLK_S_OK);
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 511], 0x5a);
    assert_int_equal(ram[DATA + 1023], 0x5a);
    /* The other read stays out: the await's timer raises the interrupt. */
    two_reads(2);
    read_done(p[1], 3, 0);
    assert_true(end_of_round(1000));
    assert_int_equal(interrupts(), 1);
    read_done(p[1], 4, 1); /* nothing in flight: at once */
    /* That await was for nothing: the next answer with a request in flight goes out at once. */
    two_reads(4);
    read_done(p[1], 5, 1);
    read_done(p[1], 6, 1);
    close(t.irq_fd);
    t.irq_fd = -1;
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    static bool sync_engine = false, async_engine = true, no_reset = false, with_reset = true;
    const struct CMUnitTest tests[] = {
            {"quiesce_sync", quiesce_leaves_nothing_in_flight, NULL, stop, &sync_engine},
            {"quiesce_async", quiesce_leaves_nothing_in_flight, NULL, stop, &async_engine},
            {"slow_sync_read", slow_sync_read, NULL, stop, &no_reset},
            {"slow_sync_read_reset", slow_sync_read, NULL, stop, &with_reset},
            {"save_restore_sync", save_restore, NULL, stop, &sync_engine},
            {"save_restore_async", save_restore, NULL, stop, &async_engine},
            {"save_restore_latched_sync", save_restore_latched, NULL, stop, &sync_engine},
            {"save_restore_latched_async", save_restore_latched, NULL, stop, &async_engine},
            cmocka_unit_test_teardown(interrupt_moderation, stop),
            cmocka_unit_test_teardown(await_in_flight, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
