/* The watch on a Uffd backend's page-fault handler (beyond Firecracker, where a dead or hung
 * handler freezes the guest silently): its process (a pidfd: if it exits, the guest can no
 * longer get its memory), and its work (a fault left unread while no page is served, for
 * UFFD_STALL_S seconds in a row: hung, or it closed the uffd). Either ends the VM with an error
 * and lets every waiting fault go.
 *
 * On a thread of its own (ember_uffd), not on the event loop: the VMM thread itself faults on
 * guest memory when a device reads a page nobody has served yet (a drive's request, a ring
 * restored at load), and a handler that never serves it would leave the VMM thread, and with
 * it the loop's timers, stuck in that fault for good. The thread needs nothing the VMM
 * thread's seccomp list lacks (poll, mincore, the UFFDIO_UNREGISTER ioctl, the log's write),
 * so it runs under that list. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "snapshot.h"
#include "uffd.h"
#include "../vmm/vmm.h"

#define PAGE_SIZE    4096u
#define UFFD_STALL_S 10 /* an unread fault this long with nothing served: the handler is hung */

/* Lets every fault waiting on the uffd go (they get empty pages, which no longer matters once
 * the VM stops): the vCPUs, and the VMM thread if a device touched unserved memory, can then
 * be stopped instead of waiting forever. A live handler holds its own copy of the uffd (and a
 * dead one's child may), so closing ember's would not wake them; unregistering the regions
 * does. */
static void release_faults(struct vm *vm)
{
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        struct uffdio_range range = {.start = (uint64_t)(uintptr_t)vm->mem.regions[i].host,
                                     .len = vm->mem.regions[i].size};
        if (ioctl(vm->uffd, UFFDIO_UNREGISTER, &range) < 0)
            log_warn("UFFDIO_UNREGISTER: %s", strerror(errno));
    }
}

/* The VM ends (stop first, so that no snapshot taken from here on passes for whole), then the
 * faults are let go. */
static void give_up(struct vm *vm)
{
    atomic_store(&vm->uffd_failed, true);
    vm_request_stop(vm, VM_STOP_ERROR);
    release_faults(vm);
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
static bool stalled(struct vm *vm, unsigned *unread_s, uint64_t *present)
{
    struct pollfd p = {.fd = vm->uffd, .events = POLLIN};

    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) {
        *unread_s = 0;
        return false;
    }
    uint64_t now = present_pages(vm);
    if (!*unread_s || now != *present) {
        *present = now; /* the first look, or progress: the count starts again */
        *unread_s = 1;
        return false;
    }
    return ++*unread_s > UFFD_STALL_S;
}

static void *watch_thread(void *opaque)
{
    struct vm *vm = opaque;
    struct pollfd p[2] = {{.fd = vm->uffd_watch_quit, .events = POLLIN},
                          {.fd = vm->uffd_pidfd, .events = POLLIN}}; /* -1: not watched */
    unsigned unread_s = 0;
    uint64_t present = 0, next = now_ms() + 1000;

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
        if (now_ms() < next)
            continue; /* EINTR */
        next += 1000;
        if (stalled(vm, &unread_s, &present)) {
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
