/* virtio-blk (virtio/blk*.c) through the mmio transport over fake guest memory and a temporary
 * backing file (blk_harness.c): request parsing, bounds, read-only, GET_ID, FLUSH and its
 * latched failure, both engines, the block counters, the Sync batch, the io_uring
 * restrictions, the NEEDS_RESET log limit. PATCH /drives: test_virtio_blk_update.c; quiesce,
 * snapshots, a slow disk and interrupt moderation: test_virtio_blk_state.c; request parsing
 * alone and the token bucket: test_virtio_blk_req.c. */
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

#include "../../virtio/blk_dev.h"
#include "blk_harness.h"

/* Both engines: state points at the drive's async flag. */
static void read_write(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "d", .async = async, .writeback = true};
    start(&d);
    uint8_t cap[8];
    vmmio_read(&t, 0x100, cap, 8);
    uint64_t c;
    memcpy(&c, cap, 8);
    assert_int_equal(c, DISK / 512);
    uint32_t seg_max;
    vmmio_read(&t, 0x10c, (uint8_t *)&seg_max, 4);
    assert_int_equal(seg_max, 126);
    /* Read sectors 3..4. */
    uint16_t r = request(VIRTIO_BLK_T_IN, 3, DATA, 1024, false);
    kick(1);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 3);
    assert_int_equal(ram[DATA + 1023], 4);
    uint32_t len;
    memcpy(&len, ram + USED + 8, 4);
    assert_int_equal(len, 1025);
    /* Write sector 7. */
    memset(ram + DATA, 0xab, 512);
    r = request(VIRTIO_BLK_T_OUT, 7, DATA, 512, true);
    uint16_t f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(3);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(status(f), VIRTIO_BLK_S_OK);
    uint8_t buf[514];
    file_bytes(7 * 512 - 1, buf, sizeof(buf));
    assert_int_equal(buf[0], 6);
    assert_int_equal(buf[1], 0xab);
    assert_int_equal(buf[512], 0xab);
    assert_int_equal(buf[513], 8);
    /* Past the end, not a sector multiple, unknown type. */
    uint16_t e1 = request(VIRTIO_BLK_T_IN, DISK / 512 - 1, DATA, 1024, false);
    uint16_t e2 = request(VIRTIO_BLK_T_OUT, 0, DATA, 100, true);
    uint16_t e3 = request(99, 0, 0, 0, false);
    uint16_t e4 = request(VIRTIO_BLK_T_IN, UINT64_MAX, DATA, 512, false);
    kick(7);
    assert_int_equal(status(e1), VIRTIO_BLK_S_IOERR);
    assert_int_equal(status(e2), VIRTIO_BLK_S_IOERR);
    assert_int_equal(status(e3), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(status(e4), VIRTIO_BLK_S_IOERR);
    /* GET_ID: 20 bytes, not NUL-terminated when full. */
    memset(ram + DATA, 0, 32);
    uint16_t g = request(VIRTIO_BLK_T_GET_ID, 0, DATA, 20, false);
    kick(8);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    expect_disk_id(path);
    assert_int_equal(rd(0x70), 0xf);
    /* Counters: successful I/O only, bytes actually done; the four bad requests are invalid. */
    assert_int_equal(stats.block_read_count, 1);
    assert_int_equal(stats.block_read_bytes, 1024);
    assert_int_equal(stats.block_write_count, 1);
    assert_int_equal(stats.block_write_bytes, 512);
    assert_int_equal(stats.block_flush_count, 1);
    assert_int_equal(stats.block_invalid_reqs, 4);
}

static void read_only(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "ro", .read_only = true};
    start(&d);
    wr(0x14, 0);
    assert_true(rd(0x10) & (1u << 5));  /* VIRTIO_BLK_F_RO */
    assert_false(rd(0x10) & (1u << 9)); /* no FLUSH without Writeback */
    memset(ram + DATA, 0xcd, 512);
    uint16_t r = request(VIRTIO_BLK_T_OUT, 1, DATA, 512, true);
    kick(1);
    assert_int_equal(status(r), VIRTIO_BLK_S_IOERR);
    uint8_t b;
    file_bytes(512, &b, 1);
    assert_int_equal(b, 1);
}

static void short_chains_get_no_status(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "s"};
    start(&d);
    /* A header-only chain has no status byte: returned with length 0, device still fine. */
    uint16_t head = desc(HDR, 16, 0);
    memcpy(ram + AVAIL + 4, &head, 2);
    next_avail = 1;
    memcpy(ram + AVAIL + 2, &next_avail, 2);
    kick(1);
    uint32_t len;
    memcpy(&len, ram + USED + 8, 4);
    assert_int_equal(len, 0);
    assert_int_equal(rd(0x70), 0xf);
    /* A malformed ring: NEEDS_RESET. */
    next_avail = 200;
    memcpy(ram + AVAIL + 2, &next_avail, 2);
    vmmio_notify(&t, 0);
    assert_int_equal(rd(0x70), 0x4f);
}

/* The Sync batch: requests until the iovec pool is full (then 0: run the batch first), their
 * I/O in order. */
static void sync_batch_fills(void **state)
{
    static struct sync_batch bt;
    struct vblk_req r = {.type = VIRTIO_BLK_T_IN, .sector = 2, .len = 512, .niov = 100};
    uint8_t st;
    (void)state;
    for (unsigned i = 0; i < r.niov; i++)
        r.iov[i] = (struct iovec){ram + DATA + 512 * (i % 2), i == 0 ? 512 : 0};
    r.status = &st;
    memset(&bt, 0, sizeof(bt));
    assert_int_equal(sync_add(&bt, &r, 7), 1);
    assert_int_equal(sync_add(&bt, &r, 8), 1);
    assert_int_equal(sync_add(&bt, &r, 9), 0); /* 300 iovecs > VQ_MAX_SIZE */
    assert_int_equal(bt.n, 2);
    make_file(path, 4, 0x10);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    sync_run(&bt, fd);
    close(fd);
    unlink(path);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_OK);
    assert_int_equal(bt.r[1].head, 8);
    assert_int_equal(bt.r[1].s, VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 2 ^ 0x10);
    memset(&bt, 0, sizeof(bt));
    r.sector = 4; /* past the end of the file (now empty): a short read */
    assert_int_equal(sync_add(&bt, &r, 7), 1);
    fd = open(path, O_CREAT | O_RDONLY, 0600);
    sync_run(&bt, fd);
    close(fd);
    unlink(path);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_IOERR);
}

static void uring_done(void *ctx, const struct uring_op *op, bool ok)
{
    (void)op;
    *(int *)ctx += ok ? 1 : 100;
}

/* The Async engine's ring runs READV/WRITEV/FSYNC on its registered file and nothing else:
 * another opcode, a plain fd, or a new registration is refused by the kernel. */
static void uring_restricted(void **state)
{
    (void)state;
    struct uring_eng e;
    char err[256];
    uint8_t buf[512];
    make_file(path, 4, 0x33);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(uring_open(&e, fd, err, sizeof(err)), 0);
    /* Allowed: a read of the registered file through the engine. */
    struct vblk_req r = {.type = VIRTIO_BLK_T_IN, .sector = 2, .len = 512, .niov = 1};
    r.iov[0] = (struct iovec){buf, sizeof(buf)};
    int done = 0;
    assert_int_equal(uring_queue(&e, &r, 0, 0), 1);
    assert_int_equal(uring_drain(&e, uring_done, &done), 1);
    assert_int_equal(done, 1);
    assert_int_equal(buf[0], 2 ^ 0x33);
    /* Refused: NOP, and a read of a plain (unregistered) fd. */
    for (int i = 0; i < 2; i++) { /* one at a time: a refused SQE ends the submission */
        struct io_uring_cqe *cqe;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&e.ring);
        if (i == 0)
            io_uring_prep_nop(sqe);
        else
            io_uring_prep_read(sqe, fd, buf, sizeof(buf), 0);
        io_uring_sqe_set_data64(sqe, 1000);
        assert_int_equal(io_uring_submit(&e.ring), 1);
        assert_int_equal(io_uring_wait_cqe(&e.ring, &cqe), 0);
        assert_int_equal(cqe->res, -EACCES);
        io_uring_cqe_seen(&e.ring, cqe);
    }
    assert_int_equal(io_uring_register_files_update(&e.ring, 0, &fd, 1), 1); /* allowed */
    assert_int_equal(io_uring_register_buffers(&e.ring, &r.iov[0], 1), -EACCES);
    assert_int_equal(io_uring_unregister_files(&e.ring), -EACCES);
    uring_close(&e);
    close(fd);
    unlink(path);
}

static void fail_log_limit(void **state)
{
    (void)state;
    struct ratelog r = {0};
    uint64_t n = 99, s = 1000000000ULL;
    assert_true(ratelog_allow(&r, 5 * s, 10 * s, &n));
    assert_int_equal(n, 0);
    for (int i = 0; i < 1000; i++)
        assert_false(ratelog_allow(&r, 5 * s + (uint64_t)i * 1000000ULL, 10 * s, &n));
    assert_false(ratelog_allow(&r, 15 * s - 1, 10 * s, &n));
    assert_true(ratelog_allow(&r, 15 * s, 10 * s, &n));
    assert_int_equal(n, 1001);
    assert_true(ratelog_allow(&r, 40 * s, 10 * s, &n));
    assert_int_equal(n, 0);
    /* Through the transport: each break is counted, each goes through the limiter. */
    struct vm_drive d = {.id = "f"};
    start(&d);
    for (int i = 0; i < 3; i++) {
        uint16_t leap = 200;
        memcpy(ram + AVAIL + 2, &leap, 2);
        vmmio_notify(&t, 0);
        assert_int_equal(rd(0x70), 0x4f);
        wr(0x70, 0); /* reset */
        driver_init();
    }
    assert_int_equal(t.fail_count, 3);
    assert_true(t.fail_log.used);
}

/* A FLUSH whose sync fails (the backing fd swapped for a pipe: fdatasync and io_uring's FSYNC
 * fail with EINVAL, a real failure of the kernel) is IOERR, and so is every later FLUSH, in the
 * same wake-up and after the file works again: Linux reports a writeback error to one sync
 * only. A reset by the driver clears it. */
static void flush_failure_latched(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "fl", .async = async, .writeback = true};
    int p[2];
    start(&d);
    uint16_t f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(1);
    assert_int_equal(status(f), VIRTIO_BLK_S_OK);
    int good = backing_to_pipe(async, p);
    f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    uint16_t f2 = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(3);
    assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
    assert_int_equal(status(f2), VIRTIO_BLK_S_IOERR);
    /* The file works again: FLUSH still fails (latched); reads and writes go on. */
    backing_set(async, good);
    memset(ram + DATA, 0x77, 512);
    uint16_t w = request(VIRTIO_BLK_T_OUT, 9, DATA, 512, true);
    f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(5);
    assert_int_equal(status(w), VIRTIO_BLK_S_OK);
    assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
    assert_int_equal(stats.block_flush_count, 1);
    assert_int_equal(rd(0x70), 0xf); /* an I/O error, not a broken device */
    /* A reset: the driver starts again, its FLUSH is tried afresh. */
    wr(0x70, 0);
    driver_init();
    f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(1);
    assert_int_equal(status(f), VIRTIO_BLK_S_OK);
    assert_int_equal(stats.block_flush_count, 2);
    close(good);
    close(p[0]);
    close(p[1]);
}

/* The Sync batch's part of the latch: a failed fdatasync fails the FLUSHes after it in the
 * batch and sets flush_failed; a batch that starts latched fails its FLUSH on a good file. */
static void sync_batch_flush_latch(void **state)
{
    static struct sync_batch bt;
    struct vblk_req r = {.type = VIRTIO_BLK_T_FLUSH};
    uint8_t st;
    int p[2];
    (void)state;
    r.status = &st;
    memset(&bt, 0, sizeof(bt));
    assert_int_equal(sync_add(&bt, &r, 1), 1);
    assert_int_equal(sync_add(&bt, &r, 2), 1);
    assert_int_equal(pipe(p), 0);
    sync_run(&bt, p[0]);
    close(p[0]);
    close(p[1]);
    assert_true(bt.flush_failed);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_IOERR);
    assert_int_equal(bt.r[1].s, VIRTIO_BLK_S_IOERR);
    make_file(path, 4, 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    memset(&bt, 0, sizeof(bt));
    assert_int_equal(sync_add(&bt, &r, 3), 1);
    sync_run(&bt, fd);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_OK);
    memset(&bt, 0, sizeof(bt));
    bt.flush_failed = true;
    assert_int_equal(sync_add(&bt, &r, 4), 1);
    sync_run(&bt, fd);
    assert_int_equal(bt.r[0].s, VIRTIO_BLK_S_IOERR);
    close(fd);
    unlink(path);
}
int main(void)
{
    static bool sync_engine = false, async_engine = true;
    const struct CMUnitTest tests[] = {
            {"sync_engine", read_write, NULL, stop, &sync_engine},
            {"async_engine", read_write, NULL, stop, &async_engine},
            cmocka_unit_test_teardown(read_only, stop),
            cmocka_unit_test_teardown(short_chains_get_no_status, stop),
            {"flush_failure_latched_sync", flush_failure_latched, NULL, stop, &sync_engine},
            {"flush_failure_latched_async", flush_failure_latched, NULL, stop, &async_engine},
            cmocka_unit_test(sync_batch_fills),
            cmocka_unit_test(sync_batch_flush_latch),
            cmocka_unit_test(uring_restricted),
            cmocka_unit_test_teardown(fail_log_limit, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
