/* virtio-blk's PATCH /drives (virtio/blk_update.c) through the transport (blk_harness.c): a
 * new backing file (capacity, GET_ID, config change; unusable paths refused; the old file
 * synced first, a failed sync refused with the old file kept), new buckets, drives found by
 * id through the registry. */
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
#include <sys/stat.h>

#include "../../virtio/blk_dev.h"
#include "../../virtio/virtio.h"
#include "blk_harness.h"

/* PATCH /drives/{id} with a new path_on_host: reads come from the new file, capacity and GET_ID
 * follow it, the driver gets a config-change interrupt and a new config generation; a path
 * that cannot be used changes nothing. */
static void swap_backing_file(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "d", .async = async};
    char err[256];
    start(&d);
    make_file(path2, 2 * DISK / 512, 0xc0);
    uint32_t gen = rd(0xfc);
    assert_int_equal(rd(0x60) & 2, 0);
    int ret = patch_drive(&d, path2, NULL, NULL, err, sizeof(err));
    assert_int_equal(ret, 0);
    assert_int_equal(capacity(), 2 * DISK / 512);
    assert_int_equal(rd(0xfc), gen + 1);
    assert_int_equal(rd(0x60) & 2, 2); /* VIRTIO_MMIO_INT_CONFIG */
    /* Sector 100 lies past the old end: it comes from the new file. */
    uint16_t r = request(VIRTIO_BLK_T_IN, 100, DATA, 1024, false);
    memset(ram + DATA + 0x1000, 0, 32);
    uint16_t g = request(VIRTIO_BLK_T_GET_ID, 0, DATA + 0x1000, 20, false);
    kick(2);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 100 ^ 0xc0);
    assert_int_equal(ram[DATA + 1023], 101 ^ 0xc0);
    assert_int_equal(status(g), VIRTIO_BLK_S_OK);
    memmove(ram + DATA, ram + DATA + 0x1000, 20);
    expect_disk_id(path2);
    /* Unusable paths: an error, and the drive keeps the file it had. */
    assert_true(patch_drive(&d, "/nonexistent/ember", NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/nonexistent/ember"));
    assert_true(patch_drive(&d, "/tmp", NULL, NULL, err, sizeof(err)) < 0);
    /* A FIFO is refused without blocking in open() (no writer: a blocking open would hang;
     * the alarm turns such a hang into a failure). */
    char fifo[64];
    snprintf(fifo, sizeof(fifo), "/tmp/ember-test-fifo-%d", (int)getpid());
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    assert_true(patch_drive(&d, fifo, NULL, NULL, err, sizeof(err)) < 0);
    alarm(0);
    unlink(fifo);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(capacity(), 2 * DISK / 512);
    assert_int_equal(rd(0xfc), gen + 1);
    r = request(VIRTIO_BLK_T_IN, 120, DATA, 512, false);
    kick(3);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 120 ^ 0xc0);
    /* Writes go to the new file too. */
    memset(ram + DATA, 0x5e, 512);
    r = request(VIRTIO_BLK_T_OUT, 127, DATA, 512, true);
    kick(4);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    int fd = open(path2, O_RDONLY);
    uint8_t b = 0;
    assert_int_equal(pread(fd, &b, 1, 127 * 512), 1);
    close(fd);
    assert_int_equal(b, 0x5e);
    assert_int_equal(rd(0x70), 0xf);
}

/* New buckets replace the old ones at once: a request the old ops bucket holds back (one
 * operation per 100 s) goes ahead when PATCH disables the limiter, without waiting for the
 * timer. */
static void update_buckets(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "rl", .ops = {.size = 1, .refill_time_ms = 100000}};
    char err[256];
    start(&d);
    request(VIRTIO_BLK_T_IN, 0, DATA, 512, false);
    request(VIRTIO_BLK_T_IN, 1, DATA + 512, 512, false);
    vmmio_notify(&t, 0);
    assert_int_equal(used_idx(), 1); /* the second one waits for a token */
    struct vm_bucket off = {0};
    assert_int_equal(patch_drive(&d, NULL, NULL, &off, err, sizeof(err)), 0);
    assert_int_equal(used_idx(), 2);
    assert_int_equal(status(1), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA + 512], 1);
}

/* virtio_drive_update finds drives by id; an unknown id is -ENOENT. */
static void drive_update_by_id(void **state)
{
    (void)state;
    static struct vm_config cfg; /* large: paths */
    char err[256], cmdline[256] = "";
    memset(&cfg, 0, sizeof(cfg));
    cfg.ndrives = 2;
    cfg.drives[0] = (struct vm_drive){.id = "a"};
    cfg.drives[1] = (struct vm_drive){.id = "b", .root = true, .read_only = true};
    make_file(path, 8, 0);
    make_file(path2, 16, 0);
    cfg.drives[0].path = path;
    cfg.drives[1].path = path;
    struct virtio_devs *v = virtio_open(&cfg, &mem, NULL, err, sizeof(err));
    assert_non_null(v);
    /* One device per drive on consecutive slots; the root drive is announced as /dev/vda. */
    assert_int_equal(virtio_boot_args(&cfg, cmdline, sizeof(cmdline)), 0);
    assert_int_equal(virtio_cmdline(v, cmdline, sizeof(cmdline)), 0);
    assert_string_equal(cmdline, " root=/dev/vda ro virtio_mmio.device=4K@0xc0001000:5"
                                 " virtio_mmio.device=4K@0xc0002000:6");
    char shorter[40] = "";
    assert_int_equal(virtio_cmdline(v, shorter, sizeof(shorter)), -ENAMETOOLONG);
    struct vm_drive unknown = {.id = "c"};
    assert_int_equal(virtio_drive_update(v, &unknown, path2, NULL, NULL, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "no drive with id c"));
    assert_int_equal(virtio_drive_update(v, &cfg.drives[0], path2, NULL, NULL, err, sizeof(err)),
                     0);
    assert_true(virtio_drive_update(v, &cfg.drives[1], "/nonexistent", NULL, NULL, err,
                                    sizeof(err)) < 0);
    virtio_destroy(v);
    unlink(path);
    unlink(path2);
}

/* A drive whose file cannot be opened fails the whole set with its reason (nothing leaks). */
static void registry_bad_drive(void **state)
{
    (void)state;
    static struct vm_config cfg;
    char err[256];
    memset(&cfg, 0, sizeof(cfg));
    cfg.ndrives = 1;
    cfg.drives[0] = (struct vm_drive){.id = "x", .path = "/nonexistent/disk"};
    assert_null(virtio_open(&cfg, &mem, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/disk"));
}

/* PATCH /drives on a writeback drive syncs the old file before the swap (F14). A failed sync
 * (the old fd swapped for a pipe: fdatasync fails with EINVAL) refuses the PATCH with a
 * message and keeps the old file; since the kernel reported the error to that sync, the
 * guest's next FLUSH fails (latched). A later swap that syncs clears it. */
static void swap_sync_fails(void **state)
{
    bool async = *(bool *)*state;
    struct vm_drive d = {.id = "ws", .async = async, .writeback = true};
    char err[256];
    int p[2];
    start(&d);
    make_file(path2, 2 * DISK / 512, 0xc0);
    uint32_t gen = rd(0xfc);
    int old = dup(blk->fd);
    assert_true(old >= 0);
    assert_int_equal(pipe(p), 0);
    assert_true(dup2(p[0], blk->fd) == blk->fd); /* what swap_file syncs (the ring keeps its own) */
    err[0] = 0;
    assert_int_equal(patch_drive(&d, path2, NULL, NULL, err, sizeof(err)), -EIO);
    assert_non_null(strstr(err, "syncing the current file before the swap failed"));
    assert_int_equal(capacity(), DISK / 512);
    assert_int_equal(rd(0xfc), gen);
    assert_true(dup2(old, blk->fd) == blk->fd); /* the old file, still the drive's */
    uint16_t r = request(VIRTIO_BLK_T_IN, 3, DATA, 512, false);
    uint16_t f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(2);
    assert_int_equal(status(r), VIRTIO_BLK_S_OK);
    assert_int_equal(ram[DATA], 3);
    assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
    /* The sync works now: the swap goes through, the new file's FLUSHes are tried afresh. */
    assert_int_equal(patch_drive(&d, path2, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(capacity(), 2 * DISK / 512);
    r = request(VIRTIO_BLK_T_IN, 100, DATA, 512, false);
    f = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    kick(4);
    assert_int_equal(ram[DATA], 100 ^ 0xc0);
    assert_int_equal(status(f), VIRTIO_BLK_S_OK);
    close(old);
    close(p[0]);
    close(p[1]);
}

/* A drive swapped while the driver sets the device up (Linux has read the capacity, DRIVER_OK
 * not yet written): no interrupt then, one at DRIVER_OK, so the driver reads the new capacity.
 * A swap before the driver starts (status 0) needs none: the driver reads the config anyway. */
static void swap_during_driver_setup(void **state)
{
    (void)state;
    struct vm_drive d = {.id = "s"};
    char err[256];
    start(&d);
    make_file(path2, 2 * DISK / 512, 0xc0);
    wr(0x70, 0); /* the driver resets the device and starts over */
    assert_int_equal(patch_drive(&d, path2, NULL, NULL, err, sizeof(err)), 0);
    driver_negotiate();
    assert_int_equal(patch_drive(&d, path, NULL, NULL, err, sizeof(err)), 0); /* mid-setup */
    assert_int_equal(rd(0x60) & 2, 0); /* not before DRIVER_OK */
    driver_ready();
    assert_int_equal(rd(0x60) & 2, 2); /* at DRIVER_OK */
    wr(0x64, 2);
    /* A reset forgets a change made during a set-up that never reached DRIVER_OK. */
    wr(0x70, 0);
    wr(0x70, 1);
    assert_int_equal(patch_drive(&d, path2, NULL, NULL, err, sizeof(err)), 0);
    wr(0x70, 0);
    driver_init();
    assert_int_equal(rd(0x60) & 2, 0);
}

int main(void)
{
    static bool sync_engine = false, async_engine = true;
    const struct CMUnitTest tests[] = {
            {"swap_file_sync", swap_backing_file, NULL, stop, &sync_engine},
            {"swap_file_async", swap_backing_file, NULL, stop, &async_engine},
            cmocka_unit_test_teardown(swap_during_driver_setup, stop),
            {"swap_sync_fails_sync", swap_sync_fails, NULL, stop, &sync_engine},
            {"swap_sync_fails_async", swap_sync_fails, NULL, stop, &async_engine},
            cmocka_unit_test_teardown(update_buckets, stop),
            cmocka_unit_test(drive_update_by_id),
            cmocka_unit_test(registry_bad_drive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
