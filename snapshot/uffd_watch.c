/* The watch on a Uffd backend's page-fault handler (beyond Firecracker, where a dead or hung
 * handler freezes the guest silently): its process (a pidfd: if it exits, the guest can no
 * longer get its memory), and its work (a fault left unread while no page is served, for
 * UFFD_STALL_S seconds in a row: hung, or it closed the uffd). Either ends the VM with an error
 * (give_up).
 *
 * On a thread of its own (ember_uffd), not on the event loop: the VMM thread itself faults on
 * guest memory when a device reads a page nobody has served yet (a drive's request, a ring
 * restored at load), and a handler that never serves it would leave the VMM thread, and with
 * it the loop's timers, stuck in that fault for good. The thread needs nothing the VMM
 * thread's seccomp list lacks (poll, mincore, the log's write, TCSETS for the terminal), so it
 * runs under that list. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "snapshot.h"
#include "uffd.h"
#include "../vmm/vmm.h"

#define PAGE_SIZE          4096u
#define UFFD_STALL_S       10   /* a fault unread this long, nothing served: the handler is hung */
#define UFFD_EXIT_GRACE_MS 3000 /* the time an in-order stop gets once the handler is given up */

/* The VM ends with an error. As usual, if it can: the loop pauses and ends the vCPUs (the kick
 * cuts a vCPU's wait for a page short) and the teardown stops this thread. If a thread of
 * ember waits for a page the handler will never serve (the VMM thread inside a device's
 * request, a vCPU whose wait no signal ends on an older kernel), the stop cannot complete, and
 * the process ends here after UFFD_EXIT_GRACE_MS. Letting the faults go instead
 * (UFFDIO_UNREGISTER) would hand them zero-filled pages: a device in the middle of a request
 * would write those zeros to its disk or socket, a vCPU run on them. */
static void give_up(struct vm *vm)
{
    struct pollfd quit = {.fd = vm->uffd_watch_quit, .events = POLLIN};

    atomic_store(&vm->uffd_failed, true);
    vm_request_stop(vm, VM_STOP_ERROR);
    while (poll(&quit, 1, UFFD_EXIT_GRACE_MS) < 0 && errno == EINTR) {
    }
    if (quit.revents)
        return; /* the teardown reached snap_uffd_watch_stop */
    log_err("the VM cannot be stopped in order: a thread of ember waits for a page the "
            "handler will never serve; exiting");
    console_restore_terminal(&vm->console);
    _exit(EXIT_GENERIC);
}

/* The guest pages present in memory: what the handler has served so far (UFFDIO_COPY and
 * ZEROPAGE make pages present). */
static uint64_t present_pages(const struct vm *vm)
{
    static unsigned char vec[4096]; /* this thread's alone: one watch per process */
    uint64_t n = 0;

    for (unsigned r = 0; r < vm->mem.nregions; r++)
        for (uint64_t off = 0; off < vm->mem.regions[r].size; off += sizeof(vec) * PAGE_SIZE) {
            uint64_t len = vm->mem.regions[r].size - off < sizeof(vec) * PAGE_SIZE
                                   ? vm->mem.regions[r].size - off
                                   : sizeof(vec) * PAGE_SIZE;
            if (mincore((uint8_t *)vm->mem.regions[r].host + off, len, vec) < 0)
                return UINT64_MAX;
            for (uint64_t i = 0; i < len / PAGE_SIZE; i++)
                n += vec[i] & 1;
        }
    return n;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Once a second: is a fault waiting that the handler has not read (a fault it has read no
 * longer makes the uffd readable), and has it served nothing since the last look? The pages
 * present are counted only while a fault waits unread, so a handler that keeps up but always
 * has a queue (many vCPUs faulting) shows progress and is never cut off. Returns whether the
 * handler is taken for hung. */
struct stall {
    unsigned looks;    /* looks in a row with a fault unread and nothing served */
    uint64_t since_ms; /* when the first of them was */
    uint64_t present;  /* guest pages present at the last look */
};

static bool stalled(struct vm *vm, struct stall *st)
{
    struct pollfd p = {.fd = vm->uffd, .events = POLLIN};

    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) {
        st->looks = 0;
        return false;
    }
    uint64_t now = present_pages(vm);
    if (!st->looks || now != st->present) {
        *st = (struct stall){.looks = 1, .since_ms = now_ms(), .present = now};
        return false; /* the first look, or progress: the count starts again */
    }
    /* both: the looks, and the time (a process frozen for a while, then thawed, must not
     * count as a hung handler in its first microseconds) */
    return ++st->looks > UFFD_STALL_S && now_ms() - st->since_ms >= UFFD_STALL_S * 1000u;
}

static void *watch_thread(void *opaque)
{
    struct vm *vm = opaque;
    struct pollfd p[2] = {{.fd = vm->uffd_watch_quit, .events = POLLIN},
                          {.fd = vm->uffd_pidfd, .events = POLLIN}}; /* -1: not watched */
    struct stall st = {0};
    uint64_t next = now_ms() + 1000;

    pthread_setname_np(pthread_self(), "ember_uffd");
    sc_enter(SC_ROLE_VMM);
    for (;;) {
        uint64_t t = now_ms();
        int n = poll(p, 2, t >= next ? 0 : (int)(next - t));
        if (n > 0 && p[0].revents)
            return NULL; /* the VM ends: snap_uffd_watch_stop */
        if (n > 0 && p[1].revents) {
            log_err("the page-fault handler (pid %d) exited: the guest can no longer get its "
                    "memory; stopping the VM",
                    vm->uffd_pid);
            give_up(vm);
            return NULL;
        }
        t = now_ms();
        if (t < next)
            continue;                                    /* EINTR */
        next = t > next + 1000 ? t + 1000 : next + 1000; /* late (frozen): from now on */
        if (stalled(vm, &st)) {
            log_err("the page-fault handler%s has left a page fault unread and served none for "
                    "%d s: the guest cannot get its memory; stopping the VM",
                    vm->uffd_pid > 0 ? "" : " (its process not watched)", UFFD_STALL_S);
            if (vm->uffd_pid > 0)
                log_err("the page-fault handler's process: pid %d", vm->uffd_pid);
            give_up(vm);
            return NULL;
        }
    }
}

int snap_uffd_watch_start(struct vm *vm, char *err, size_t errlen)
{
    vm->uffd_watch_quit = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->uffd_watch_quit < 0)
        return errf(err, errlen, -errno, "the page-fault handler's watch: eventfd: %s",
                    strerror(errno));
    int ret = pthread_create(&vm->uffd_watcher, NULL, watch_thread, vm);
    if (ret) {
        close(vm->uffd_watch_quit);
        vm->uffd_watch_quit = -1;
        return errf(err, errlen, -ret, "the page-fault handler's watch: a thread: %s",
                    strerror(ret));
    }
    return 0;
}

void snap_uffd_watch_stop(struct vm *vm)
{
    uint64_t one = 1;

    if (vm->uffd_watch_quit < 0)
        return;
    if (write(vm->uffd_watch_quit, &one, sizeof(one)) != sizeof(one))
        log_warn("the page-fault handler's watch: %s", strerror(errno));
    pthread_join(vm->uffd_watcher, NULL);
    close(vm->uffd_watch_quit);
    vm->uffd_watch_quit = -1;
}
