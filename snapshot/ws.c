/* A recorded working set (REAP's idea, inside the VMM): a first restore records which guest
 * pages the VM touched until a marker (N ms after it resumed), and writes them beside the
 * snapshot as one contiguous file; later loads map its pages over guest RAM before the vCPUs
 * run, everything else still lazy from the memory file, and start the read of all of the file
 * (readahead) without waiting for it: the disk and the guest's start overlap, and a first
 * touch of a page still in flight waits for that page alone (FaaSnap's concurrent paging). A
 * file already cached has its page tables filled at once instead. No thread: the record is
 * the page table itself (which pages of the guest mapping are present, from
 * /proc/self/pagemap, with fault-around off so neighbours of a touched page are not counted),
 * and the prefetch is a mapping of the working-set file (its page cache, shared by every
 * clone) plus the kernel's readahead.
 *
 * The file: a 64-byte header (magic "EMBERWS1", version, page size, page count, the id of the
 * memory image it was recorded on, the data offset, a CRC-64 of the index), the index (page
 * numbers in memory-file order, strictly ascending), then the pages, from the data offset
 * (page-aligned), in index order. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "format.h"
#include "layout.h"
#include "../vmm/loop.h"
#include "snapshot.h"
#include "../vmm/vmm.h"

#define PAGE              4096u
#define WS_MAGIC          "EMBERWS1"
#define WS_HEADER         64u
#define WS_MAPS_MAX       16384
#define WS_COPY_PAGES     256          /* recording: pages copied per read/write (1 MiB) */
#define WS_RESIDENT_PAGES 4096         /* prefetch: pages whose residency one mincore() asks */
#define WS_WILLNEED_BYTES (128u << 10) /* prefetch: a cold read asked for in steps of this */
#define PM_PRESENT        (1ULL << 63)
#define PM_SWAPPED        (1ULL << 62)

struct ws_header {
    char magic[8];
    uint32_t version, page_size;
    uint64_t npages, mem_id, data_off, index_crc;
    uint8_t pad[16];
};
_Static_assert(sizeof(struct ws_header) == WS_HEADER, "ws_header layout");

static uint64_t align_page(uint64_t n)
{
    return (n + PAGE - 1) & ~(uint64_t)(PAGE - 1);
}

/* ---- recording --------------------------------------------------------------------------- */

/* The guest pages present in this process's page table (pagemap: 8 bytes per page). */
static int touched_pages(const struct vm *vm, uint64_t **pages, uint64_t *n)
{
    uint64_t total = vm->mem.total / PAGE, count = 0;
    int fd = sc_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint64_t *out = malloc((total ? total : 1) * sizeof(uint64_t));
    static uint64_t ent[4096];
    int ret = out ? 0 : -ENOMEM;
    uint64_t first = (uint64_t)(uintptr_t)vm->mem.base / PAGE;
    for (uint64_t p = 0; !ret && p < total; p += 4096) {
        uint64_t k = total - p < 4096 ? total - p : 4096;
        ret = snap_pread_all(fd, ent, k * 8, (off_t)((first + p) * 8));
        for (uint64_t i = 0; !ret && i < k; i++)
            if (ent[i] & (PM_PRESENT | PM_SWAPPED))
                out[count++] = p + i;
    }
    close(fd);
    if (ret) {
        free(out);
        return ret;
    }
    *pages = out;
    *n = count;
    return 0;
}

static int write_ws(struct vm *vm, char *err, size_t errlen)
{
    uint64_t *pages = NULL, n = 0;
    int ret = touched_pages(vm, &pages, &n);
    if (ret)
        return errf(err, errlen, ret, "working set: /proc/self/pagemap: %s", strerror(-ret));
    struct ws_header h = {.version = 1, .page_size = PAGE, .npages = n};
    memcpy(h.magic, WS_MAGIC, 8);
    h.mem_id = vm->nchain ? vm->chain[vm->nchain - 1].id : 0;
    h.data_off = align_page(WS_HEADER + n * 8);
    h.index_crc = snap_crc64(0, pages, n * 8);
    int fd = sc_create(vm->ws_record_path);
    if (fd < 0) {
        ret = errf(err, errlen, -errno, "working set: cannot create %.256s: %s", vm->ws_record_path,
                   strerror(errno));
        free(pages);
        return ret;
    }
    static uint8_t buf[WS_COPY_PAGES * PAGE];
    ret = snap_pwrite_all(fd, &h, sizeof(h), 0);
    if (!ret)
        ret = snap_pwrite_all(fd, pages, n * 8, WS_HEADER);
    /* the snapshot's content of each page (the memory file's, not what the guest has written
     * since the restore), a run of consecutive pages at a time (this runs on the event loop) */
    for (uint64_t i = 0, j; !ret && i < n; i = j) {
        for (j = i + 1; j < n && j - i < WS_COPY_PAGES && pages[j] == pages[j - 1] + 1; j++)
            ;
        ret = snap_pread_all(vm->ws_mem_fd, buf, (j - i) * PAGE, (off_t)(pages[i] * PAGE));
        if (!ret)
            ret = snap_pwrite_all(fd, buf, (j - i) * PAGE, (off_t)(h.data_off + i * PAGE));
    }
    close(fd);
    free(pages);
    if (ret)
        return errf(err, errlen, ret, "working set: writing %.256s: %s", vm->ws_record_path,
                    strerror(-ret));
    log_info("Recorded a working set of %llu pages (%llu KiB) into %s.", (unsigned long long)n,
             (unsigned long long)n * 4, vm->ws_record_path);
    return 0;
}

/* The marker: the recording ends, the file is written, fault-around is back. */
static int end_recording(struct vm *vm, char *err, size_t errlen)
{
    loop_remove(vm->loop, vm->ws_timer_fd);
    int ret = write_ws(vm, err, errlen);
    madvise(vm->mem.base, vm->mem.total, MADV_NORMAL);
    snap_ws_close(vm);
    return ret;
}

static void on_ws_timer(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    char err[512];
    uint64_t ticks;
    (void)events;

    if (read(vm->ws_timer_fd, &ticks, sizeof(ticks)) < 0)
        return;
    if (end_recording(vm, err, sizeof(err)))
        log_err("%s", err);
}

int snap_ws_write_now(struct vm *vm, char *err, size_t errlen)
{
    if (vm->ws_timer_fd < 0)
        return errf(err, errlen, -EINVAL,
                    "No working set is being recorded (a load with "
                    "mem_backend.record_working_set starts one; it ends at its after_ms or at "
                    "the first WriteWorkingSet).");
    if (!vm->ws_armed) /* loaded paused, never resumed: nothing touched yet */
        return errf(err, errlen, -EINVAL,
                    "The working set's recording starts when the microVM first resumes: it has "
                    "not run yet, so it has touched nothing to record.");
    return end_recording(vm, err, errlen);
}

int snap_ws_record(struct vm *vm, const char *path, int mem_fd, uint64_t after_ms, char *err,
                   size_t errlen)
{
    /* Fault-around maps a touched page's neighbours too: off, so present means touched. */
    if (madvise(vm->mem.base, vm->mem.total, MADV_RANDOM) < 0)
        return errf(err, errlen, -errno, "working set: madvise: %s", strerror(errno));
    vm->ws_record_path = strdup(path);
    vm->ws_mem_fd = dup(mem_fd);
    vm->ws_after_ms = after_ms ? after_ms : 1000;
    vm->ws_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (!vm->ws_record_path || vm->ws_mem_fd < 0 || vm->ws_timer_fd < 0)
        return errf(err, errlen, -ENOMEM, "working set: out of resources");
    int ret = loop_add(vm->loop, vm->ws_timer_fd, EPOLLIN, on_ws_timer, vm);
    return ret ? errf(err, errlen, ret, "working set: event loop: %s", strerror(-ret)) : 0;
}

void snap_ws_resumed(struct vm *vm)
{
    if (vm->ws_timer_fd < 0 || vm->ws_armed)
        return;
    struct itimerspec at = {.it_value = {.tv_sec = (time_t)(vm->ws_after_ms / 1000),
                                         .tv_nsec = (long)(vm->ws_after_ms % 1000) * 1000000}};
    timerfd_settime(vm->ws_timer_fd, 0, &at, NULL);
    vm->ws_armed = true;
}

void snap_ws_close(struct vm *vm)
{
    if (vm->ws_timer_fd >= 0) {
        loop_remove(vm->loop, vm->ws_timer_fd);
        close(vm->ws_timer_fd);
    }
    if (vm->ws_mem_fd >= 0)
        close(vm->ws_mem_fd);
    free(vm->ws_record_path);
    vm->ws_record_path = NULL;
    vm->ws_timer_fd = vm->ws_mem_fd = -1;
}

/* ---- prefetch ---------------------------------------------------------------------------- */

static int check_index(const struct ws_header *h, const uint64_t *idx, uint64_t total_pages)
{
    for (uint64_t i = 0; i < h->npages; i++)
        if (idx[i] >= total_pages || (i && idx[i] <= idx[i - 1]))
            return -1;
    return 0;
}

int snap_ws_read_index(int fd, uint64_t total_pages, uint64_t want_id, uint64_t **index,
                       uint64_t *npages, uint64_t *data_off)
{
    struct stat st;
    struct ws_header h;
    uint64_t *idx = NULL;

    int ret = fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < (off_t)WS_HEADER
                      ? -EINVAL
                      : snap_pread_all(fd, &h, sizeof(h), 0);
    if (!ret && (memcmp(h.magic, WS_MAGIC, 8) || h.version != 1 || h.page_size != PAGE ||
                 h.npages > total_pages || h.data_off != align_page(WS_HEADER + h.npages * 8) ||
                 (uint64_t)st.st_size != h.data_off + h.npages * PAGE))
        ret = -EINVAL;
    if (!ret && h.mem_id != want_id)
        ret = -ESTALE;
    if (!ret && !(idx = malloc((h.npages ? h.npages : 1) * 8)))
        ret = -ENOMEM;
    if (!ret)
        ret = snap_pread_all(fd, idx, h.npages * 8, WS_HEADER);
    if (!ret &&
        (snap_crc64(0, idx, h.npages * 8) != h.index_crc || check_index(&h, idx, total_pages)))
        ret = -EINVAL;
    if (ret) {
        free(idx);
        return ret;
    }
    *index = idx;
    *npages = h.npages;
    *data_off = h.data_off;
    return 0;
}

/* cachestat(2) (Linux 6.5): how much of a file range the page cache holds, in one call. */
struct ws_cachestat_range {
    uint64_t off, len;
};
struct ws_cachestat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
#define WS_NR_CACHESTAT 451

/* Does the page cache hold all of the file's [off, off + len), which p maps? Asked of
 * cachestat; before 6.5, of mincore, but only for a file this process owns: for another's
 * file that it cannot write (a jail's shared working set), mincore answers "resident" for
 * every page (a side channel closed in 5.0), which would send a cold file down the blocking
 * path. Unknown counts as not cached: the read is then started and not waited for. */
static bool run_cached(const void *p, int fd, bool owner, uint64_t off, uint64_t len)
{
    static unsigned char resident[WS_RESIDENT_PAGES];
    struct ws_cachestat_range range = {.off = off, .len = len};
    struct ws_cachestat cs;

    if (syscall(WS_NR_CACHESTAT, fd, &range, &cs, 0) == 0)
        return cs.nr_cache >= len / PAGE;
    if (errno != ENOSYS || !owner)
        return false;
    for (uint64_t at = 0; at < len; at += sizeof(resident) * PAGE) {
        uint64_t n = (len - at) / PAGE < sizeof(resident) ? (len - at) / PAGE : sizeof(resident);
        if (mincore((uint8_t *)p + at, n * PAGE, resident))
            return false;
        for (uint64_t k = 0; k < n; k++)
            if (!(resident[k] & 1)) /* bit 0: the page is in memory */
                return false;
    }
    return true;
}

/* A cached run's page tables filled now, read-only (the pages stay the shared page cache; a
 * guest write still copies one): the guest's first touch is then KVM's fault alone, without
 * a host page fault. A run not (all) cached: its read started and not waited for. One
 * MADV_WILLNEED reads at most the device's readahead window (max of read_ahead_kb and the
 * largest request: 128 KiB by default, 8 MiB on some virtual disks), so it is asked for each
 * WS_WILLNEED_BYTES; each call only queues the reads. Best effort: without
 * MADV_POPULATE_READ (before 5.14) the pages fault in as touched. Returns whether the run
 * was cached. */
static bool prefetch_run(void *p, int fd, bool owner, uint64_t off, uint64_t len)
{
    bool cached = run_cached(p, fd, owner, off, len);

    if (cached) {
        if (madvise(p, len, MADV_POPULATE_READ) && errno != EINVAL)
            log_debug("working set: madvise(POPULATE_READ): %s", strerror(errno));
        return true;
    }
    for (uint64_t at = 0; at < len; at += WS_WILLNEED_BYTES)
        if (madvise((uint8_t *)p + at, len - at < WS_WILLNEED_BYTES ? len - at : WS_WILLNEED_BYTES,
                    MADV_WILLNEED)) {
            log_debug("working set: madvise(WILLNEED): %s", strerror(errno));
            break;
        }
    return false;
}

int snap_ws_map(struct vm *vm, const char *path, char *err, size_t errlen)
{
    uint64_t total = vm->mem.total / PAGE, *idx = NULL, npages = 0, data_off = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        return errf(err, errlen, -errno, "Cannot open the working set %.256s: %s", path,
                    strerror(errno));
    int ret = snap_ws_read_index(fd, total, vm->nchain ? vm->chain[vm->nchain - 1].id : 0, &idx,
                                 &npages, &data_off);
    if (ret == -ESTALE)
        errf(err, errlen, -EINVAL,
             "The working set %.256s was recorded on another snapshot's memory", path);
    else if (ret)
        errf(err, errlen, -EINVAL,
             "The working set %.256s is not a working-set file of this "
             "snapshot%s",
             path, ret == -EINVAL ? "" : " (it cannot be read)");
    if (ret)
        ret = -EINVAL;
    struct ws_header h = {.npages = npages, .data_off = data_off};
    /* Each run of pages is mapped over guest RAM. Where the page cache holds a run already
     * (a warm file, shared by every clone), its page tables are filled now; otherwise the
     * disk's read of it is started and the vCPUs run meanwhile (a first touch of a page still
     * in flight waits for it): the read and the guest's start overlap. */
    struct stat st;
    bool owner = !fstat(fd, &st) && st.st_uid == geteuid(); /* mincore tells it the truth */
    uint64_t cached = 0;
    unsigned maps = 0;
    for (uint64_t i = 0; !ret && i < h.npages;) {
        uint64_t j = i + 1;
        while (j < h.npages && idx[j] == idx[j - 1] + 1)
            j++;
        void *p = ++maps > WS_MAPS_MAX
                          ? MAP_FAILED
                          : mmap((uint8_t *)vm->mem.base + idx[i] * PAGE, (j - i) * PAGE,
                                 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE,
                                 fd, (off_t)(h.data_off + i * PAGE));
        if (p == MAP_FAILED)
            ret = errf(err, errlen, maps > WS_MAPS_MAX ? -E2BIG : -errno,
                       "Cannot map the working set %.256s: %s", path,
                       maps > WS_MAPS_MAX ? "too many runs of pages" : strerror(errno));
        else if (prefetch_run(p, fd, owner, h.data_off + i * PAGE, (j - i) * PAGE))
            cached += j - i;
        i = j;
    }
    if (!ret)
        log_info("Prefetched a working set of %llu pages (%llu KiB) from %s: %llu KiB cached "
                 "(page tables filled), %llu KiB being read.",
                 (unsigned long long)h.npages, (unsigned long long)h.npages * 4, path,
                 (unsigned long long)cached * 4, (unsigned long long)(h.npages - cached) * 4);
    free(idx);
    close(fd);
    return ret;
}
