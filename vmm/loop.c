/* The VMM event loop (the main thread): console input, the i8042 reset line, termination
 * signals and vCPU stop requests, all as fds on one epoll set with typed tokens. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm.h"
#include "../virtio/virtio.h"

enum ev_kind { EV_STOP, EV_RESET, EV_SIGNAL, EV_STDIN, EV_SERIAL_RX, EV_VIRTIO, EV_API };

#define ESCAPE_KEY 0x01 /* Ctrl-A, then x: leave (as QEMU) */

struct loop {
    struct vm *vm;
    int epfd, sigfd;
    bool stdin_armed, stdin_tty, escape;
    struct term term;
};

static int watch(struct loop *l, int op, int fd, enum ev_kind kind, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)kind << 32};
    return epoll_ctl(l->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static void drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
}

/* Console input: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A, the rest goes to the UART. */
static void on_stdin(struct loop *l)
{
    uint8_t in[SERIAL_FIFO], out[SERIAL_FIFO];
    size_t space = serial_rx_space(&l->vm->serial), n = 0;

    if (space == 0) { /* the guest is not reading: wait for it before reading more */
        watch(l, EPOLL_CTL_MOD, STDIN_FILENO, EV_STDIN, 0);
        l->stdin_armed = false;
        return;
    }
    ssize_t got = read(STDIN_FILENO, in, space);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (got <= 0) { /* EOF or error: no more input */
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
        l->stdin_armed = false;
        return;
    }
    for (ssize_t i = 0; i < got; i++) {
        if (l->stdin_tty && l->escape) {
            l->escape = false;
            if (in[i] == 'x' || in[i] == 'X') {
                log_info("Ctrl-A x: stopping the VM");
                vm_request_stop(l->vm, VM_STOP_USER);
                return;
            }
            if (in[i] != ESCAPE_KEY)
                out[n++] = ESCAPE_KEY;
        } else if (l->stdin_tty && in[i] == ESCAPE_KEY) {
            l->escape = true;
            continue;
        }
        if (n < sizeof(out))
            out[n++] = in[i];
    }
    serial_input(&l->vm->serial, out, n);
}

static void dispatch(struct loop *l, const struct epoll_event *ev)
{
    struct signalfd_siginfo si;

    switch ((enum ev_kind)(ev->data.u64 >> 32)) {
    case EV_STOP:
        drain(l->vm->stop_fd);
        break;
    case EV_RESET:
        drain(l->vm->reset_fd);
        log_info("guest reset the CPU through the i8042: stopping the VM");
        vm_request_stop(l->vm, VM_STOP_RESET);
        break;
    case EV_SIGNAL:
        if (read(l->sigfd, &si, sizeof(si)) == sizeof(si)) {
            log_info("received signal %u: stopping the VM", si.ssi_signo);
            l->vm->stop_signal = (int)si.ssi_signo;
            vm_request_stop(l->vm, VM_STOP_SIGNAL);
        }
        break;
    case EV_STDIN:
        on_stdin(l);
        break;
    case EV_VIRTIO: /* queue notifications, io_uring completions, rate-limiter timers */
        virtio_poll(l->vm->virtio);
        break;
    case EV_API: /* the API socket's mailbox (api-socket/run.c) */
        l->vm->api_serve(l->vm->api_opaque);
        break;
    case EV_SERIAL_RX:
        drain(l->vm->serial_rx_fd);
        if (!l->stdin_armed && watch(l, EPOLL_CTL_MOD, STDIN_FILENO, EV_STDIN, EPOLLIN) == 0)
            l->stdin_armed = true;
        break;
    }
}

static int loop_setup(struct loop *l)
{
    struct vm *vm = l->vm;
    sigset_t set;
    struct stat st;

    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        return -errno;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    l->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (l->sigfd < 0)
        return -errno;
    int ret = watch(l, EPOLL_CTL_ADD, vm->stop_fd, EV_STOP, EPOLLIN);
    if (!ret)
        ret = watch(l, EPOLL_CTL_ADD, vm->reset_fd, EV_RESET, EPOLLIN);
    if (!ret)
        ret = watch(l, EPOLL_CTL_ADD, l->sigfd, EV_SIGNAL, EPOLLIN);
    if (!ret)
        ret = watch(l, EPOLL_CTL_ADD, vm->serial_rx_fd, EV_SERIAL_RX, EPOLLIN);
    if (!ret && vm->api_serve)
        ret = watch(l, EPOLL_CTL_ADD, vm->api_fd, EV_API, EPOLLIN);
    if (!ret && virtio_fd(vm->virtio) >= 0)
        ret = watch(l, EPOLL_CTL_ADD, virtio_fd(vm->virtio), EV_VIRTIO, EPOLLIN);
    if (ret)
        return ret;
    /* Input comes from stdin when it is a terminal or a FIFO (as Firecracker). */
    l->stdin_tty = isatty(STDIN_FILENO);
    if (fstat(STDIN_FILENO, &st) == 0 && (l->stdin_tty || S_ISFIFO(st.st_mode)) &&
        watch(l, EPOLL_CTL_ADD, STDIN_FILENO, EV_STDIN, EPOLLIN) == 0)
        l->stdin_armed = true;
    if (l->stdin_tty)
        term_raw(&l->term, STDIN_FILENO);
    return 0;
}

static int exit_code(struct vm *vm)
{
    switch (atomic_load(&vm->stop_reason)) {
    case VM_STOP_RESET:
    case VM_STOP_USER:
        return EXIT_OK;
    case VM_STOP_SIGNAL:
        return 128 + vm->stop_signal;
    default:
        return EXIT_GENERIC;
    }
}

int loop_run(struct vm *vm)
{
    struct loop l = {.vm = vm, .epfd = -1, .sigfd = -1};
    struct epoll_event evs[8];
    int ret = loop_setup(&l);

    /* The legacy devices count into the VM's stats from the guest's first instruction on. */
    vm->serial.stats = &vm->stats;
    vm->i8042.stats = &vm->stats;
    for (unsigned i = 0; !ret && i < vm->nvcpus; i++)
        ret = vcpu_start(&vm->vcpus[i]);
    if (ret) {
        log_err("cannot start the VM: %s", strerror(-ret));
        vm_request_stop(vm, VM_STOP_ERROR);
    }
    for (unsigned i = 0; !ret && i < vm->nvcpus; i++)
        vcpu_request(&vm->vcpus[i], VCPU_CMD_RUN);

    while (atomic_load(&vm->stop_reason) == VM_STOP_NONE) {
        int n = epoll_wait(l.epfd, evs, sizeof(evs) / sizeof(evs[0]), -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            log_err("epoll_wait: %s", strerror(errno));
            vm_request_stop(vm, VM_STOP_ERROR);
            break;
        }
        for (int i = 0; i < n; i++)
            dispatch(&l, &evs[i]);
    }
    for (unsigned i = 0; i < vm->nvcpus; i++)
        vcpu_join(&vm->vcpus[i]);
    term_restore(&l.term, STDIN_FILENO);
    if (l.sigfd >= 0)
        close(l.sigfd);
    if (l.epfd >= 0)
        close(l.epfd);
    return exit_code(vm);
}
