/* virtio-blk's PATCH /drives (the update op): a new backing file, opened before the
 * transport's lock is taken (vblk_open_backing), replaces the old one once the I/O in flight
 * on it is done; new token buckets replace the old ones. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "blk_dev.h"

int vblk_open_backing(const struct vm_drive *cfg, const char *path, struct vblk_backing *bk,
                      char *err, size_t errlen)
{
    struct stat st;
    /* O_NONBLOCK: a FIFO put at the path must not block the event loop in open(); cleared
     * again for the file we keep (io_uring would fail page-cache misses with EAGAIN). */
    int fd = sc_open(path, (cfg->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errf(err, errlen, -errno, "drive %s: %s: %s", cfg->id, path, strerror(errno));
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        close(fd);
        return errf(err, errlen, -EINVAL, "drive %s: %s: not a regular file", cfg->id, path);
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, -e, "drive %s: %s: %s", cfg->id, path, strerror(e));
    }
    bk->fd = fd;
    bk->sectors = (uint64_t)size / VBLK_SECTOR;
    vblk_disk_id(&st, bk->id);
    return 0;
}

/* What the old file needs before the swap, done without the transport's lock. */
struct old_file {
    struct vblk *b;
    bool sync;
    int err; /* fdatasync's errno, or 0 */
};

static void finish_old_file(void *ctx)
{
    struct old_file *o = ctx;
    if (o->b->eng.on)
        uring_wait(&o->b->eng);
    if (o->sync && fdatasync(o->b->fd) < 0)
        o->err = errno;
}

/* Swaps the backing file (the update op). With writeback caching the old file is synced
 * first: writes the guest saw complete would otherwise be covered by no FLUSH, since its next
 * one syncs the new file (F14). Returns 0 or -errno (the old file kept). */
static int swap_file(struct vblk *b, struct vmmio_dev *t, struct vblk_backing *bk, const char *path,
                     char *err, size_t errlen)
{
    struct vblk_done d = {b, t};
    struct old_file o = {b, b->cfg.writeback && !b->cfg.read_only, 0};

    /* Requests already submitted finish on the old file (waited for without the lock) and are
     * answered first. */
    vmmio_unlocked(t, finish_old_file, &o);
    if (b->eng.on && uring_drain(&b->eng, vmmio_running(t) ? vblk_async_done : NULL, &d) &&
        vmmio_running(t))
        vblk_signal_used(b, t, clock_ns()); /* an await for them ends in vblk_run_queue */
    if (o.err) {
        vblk_flush_failed(b); /* the error is reported once: the guest's next FLUSH learns it */
        return errf(err, errlen, -EIO,
                    "drive %s: syncing the current file before the swap failed (%s): it stays "
                    "in use",
                    b->cfg.id, strerror(o.err));
    }
    if (b->eng.on) {
        int ret = uring_set_file(&b->eng, bk->fd, err, errlen);
        if (ret < 0)
            return ret;
    }
    close(b->fd);
    b->fd = bk->fd;
    bk->fd = -1;
    b->st.capacity = bk->sectors;
    memcpy(b->id, bk->id, sizeof(b->id));
    b->st.flush_failed = false; /* a new file: its FLUSHes are tried afresh */
    log_debug("drive %s: now on %s", b->cfg.id, path);
    vmmio_config_changed(t); /* spec 4.2.2: generation bumped, config-change interrupt */
    return 0;
}

int vblk_update_op(void *dev, struct vmmio_dev *t, const void *arg, char *err, size_t errlen)
{
    struct vblk *b = dev;
    const struct vblk_update *u = arg;

    if (u->backing) {
        int ret = swap_file(b, t, u->backing, u->path ? u->path : "", err, errlen);
        if (ret < 0)
            return ret;
    }
    if (u->bw) {
        b->cfg.bw = *u->bw;
        tb_init(&b->bw, u->bw);
    }
    if (u->ops) {
        b->cfg.ops = *u->ops;
        tb_init(&b->ops, u->ops);
    }
    if (u->bw || u->ops)
        vblk_unthrottle(b); /* a waiting request is charged again against the new buckets */
    if (vmmio_running(t) && vblk_run_queue(b, t, 0) < 0)
        vmmio_fail(t);
    return 0;
}
