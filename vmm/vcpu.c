/* vCPU threads: an explicit state machine (paused / running / exiting) driven by a mailbox,
 * kicked out of KVM_RUN with a signal plus immediate_exit. Exits are an allowlist: anything
 * unexpected stops the VM with a diagnostic naming the exit and the RIP. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../seccomp/seccomp.h"
#include "vmm.h"

#define VCPU_KICK_SIGNAL (SIGRTMIN + 0)

static void kick_handler(int sig)
{
    (void)sig; /* interrupting KVM_RUN is the whole point */
}

int vcpu_signal_init(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN must return EINTR */
    sigemptyset(&sa.sa_mask);
    return sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0 ? -errno : 0;
}

int vcpu_init(struct vm *vm, struct vcpu *vcpu, unsigned index)
{
    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->vm = vm;
    vcpu->index = index;
    vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (vcpu->fd < 0)
        return -errno;
    vcpu->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        int ret = -errno;
        vcpu->run = NULL;
        close(vcpu->fd);
        vcpu->fd = -1;
        return ret;
    }
    pthread_mutex_init(&vcpu->lock, NULL);
    pthread_cond_init(&vcpu->cond, NULL);
    vcpu->state = VCPU_PAUSED;
    return 0;
}

void vcpu_destroy(struct vcpu *vcpu)
{
    if (vcpu->run)
        munmap(vcpu->run, vcpu->vm->run_size);
    if (vcpu->fd >= 0) {
        close(vcpu->fd);
        pthread_mutex_destroy(&vcpu->lock);
        pthread_cond_destroy(&vcpu->cond);
    }
    vcpu->run = NULL;
    vcpu->fd = -1;
    free(vcpu->cpuid);
    vcpu->cpuid = NULL;
}

static const char *exit_name(uint32_t reason)
{
    static const char *const names[] = {
            [KVM_EXIT_UNKNOWN] = "UNKNOWN",
            [KVM_EXIT_EXCEPTION] = "EXCEPTION",
            [KVM_EXIT_IO] = "IO",
            [KVM_EXIT_HYPERCALL] = "HYPERCALL",
            [KVM_EXIT_DEBUG] = "DEBUG",
            [KVM_EXIT_HLT] = "HLT",
            [KVM_EXIT_MMIO] = "MMIO",
            [KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
            [KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
            [KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
            [KVM_EXIT_INTR] = "INTR",
            [KVM_EXIT_SET_TPR] = "SET_TPR",
            [KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
            [KVM_EXIT_NMI] = "NMI",
            [KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
            [KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
    };
    if (reason < sizeof(names) / sizeof(names[0]) && names[reason])
        return names[reason];
    return "?";
}

static uint64_t vcpu_rip(struct vcpu *vcpu)
{
    struct kvm_regs regs;
    return ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0 ? 0 : regs.rip;
}

/* A vCPU error: counted (vcpu.failures), logged, and the VM stops. */
static void stop_with(struct vcpu *vcpu, const char *what)
{
    STAT_ADD(&vcpu->vm->stats, vcpu_failures, 1);
    log_err("vCPU %u: %s (KVM_EXIT_%s) at RIP 0x%" PRIx64, vcpu->index, what,
            exit_name(vcpu->run->exit_reason), vcpu_rip(vcpu));
    vm_request_stop(vcpu->vm, VM_STOP_ERROR);
}

static void internal_error(struct vcpu *vcpu)
{
    char what[96];
    uint32_t sub = vcpu->run->internal.suberror;

    snprintf(what, sizeof(what), "KVM internal error, suberror %u%s", sub,
             sub == KVM_INTERNAL_ERROR_EMULATION ? " (instruction emulation failed)" : "");
    stop_with(vcpu, what);
    if (sub == KVM_INTERNAL_ERROR_EMULATION)
        log_err("hint: this host's KVM may not be hardware-backed (e.g. PVM, kvm_pvm): stock "
                "guest kernels need VMX or SVM; use a host with kvm_intel/kvm_amd or "
                "tests/host/run");
}

/* Handles one exit. Returns true while the vCPU should keep running. */
static bool handle_exit(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    struct vm *vm = vcpu->vm;

    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        uint64_t size = run->io.size, total = size * run->io.count;
        if (size == 0 || size > 4 || run->io.data_offset > vm->run_size ||
            total > vm->run_size - run->io.data_offset) {
            stop_with(vcpu, "malformed port I/O exit");
            return false;
        }
        uint8_t *p = (uint8_t *)run + run->io.data_offset;
        if (run->io.direction == KVM_EXIT_IO_OUT)
            STAT_ADD(&vm->stats, vcpu_exit_io_out, 1);
        else
            STAT_ADD(&vm->stats, vcpu_exit_io_in, 1);
        for (uint32_t i = 0; i < run->io.count; i++, p += size)
            bus_access(&vm->pio, run->io.port, p, (uint32_t)size,
                       run->io.direction == KVM_EXIT_IO_OUT);
        /* A reset pulse stops this vCPU before its next instruction, not when the event loop
         * gets to the reset eventfd: by then the guest may have triple-faulted (an error). */
        if (run->io.direction == KVM_EXIT_IO_OUT && i8042_reset_pulsed(&vm->i8042)) {
            vm_request_stop(vm, VM_STOP_RESET); /* logged once the console is out (app.c) */
            return false;
        }
        return true;
    }
    case KVM_EXIT_MMIO:
        if (run->mmio.len == 0 || run->mmio.len > sizeof(run->mmio.data)) {
            stop_with(vcpu, "malformed MMIO exit");
            return false;
        }
        if (run->mmio.is_write)
            STAT_ADD(&vm->stats, vcpu_exit_mmio_write, 1);
        else
            STAT_ADD(&vm->stats, vcpu_exit_mmio_read, 1);
        bus_access(&vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
                   run->mmio.is_write);
        return true;
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_SHUTDOWN:
        stop_with(vcpu, "triple fault, the guest CPU shut down");
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN ||
            run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
            log_info("vCPU %u: guest requested %s", vcpu->index,
                     run->system_event.type == KVM_SYSTEM_EVENT_RESET ? "a reset" : "shutdown");
            vm_request_stop(vm, VM_STOP_RESET);
        } else {
            stop_with(vcpu, "system event (crash)");
        }
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        internal_error(vcpu);
        return false;
    case KVM_EXIT_FAIL_ENTRY: {
        char what[80];
        snprintf(what, sizeof(what), "VM entry failed, hardware reason 0x%llx",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        stop_with(vcpu, what);
        return false;
    }
    default:
        stop_with(vcpu, "unhandled exit");
        return false;
    }
}

/* Takes the pending mailbox command, if any, and acknowledges the new state. Lock held. */
static void take_command(struct vcpu *vcpu)
{
    switch (vcpu->cmd) {
    case VCPU_CMD_RUN:
        if (vcpu->state == VCPU_PAUSED)
            vcpu->state = VCPU_RUNNING;
        break;
    case VCPU_CMD_PAUSE:
        if (vcpu->state == VCPU_RUNNING)
            vcpu->state = VCPU_PAUSED;
        break;
    case VCPU_CMD_EXIT:
        vcpu->state = VCPU_EXITING;
        break;
    case VCPU_CMD_NONE:
        return;
    }
    vcpu->cmd = VCPU_CMD_NONE;
    pthread_cond_broadcast(&vcpu->cond);
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *vcpu = arg;
    sigset_t kick;

    sigemptyset(&kick);
    sigaddset(&kick, VCPU_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
    sc_enter(SC_ROLE_VCPU); /* before the first KVM_RUN */
    /* this vCPU's log lines (Guest-boot-time, its errors) follow the console bytes before them */
    log_thread_before_line(serial_flush_before_log, &vcpu->vm->serial);

    for (;;) {
        pthread_mutex_lock(&vcpu->lock);
        take_command(vcpu);
        while (vcpu->state == VCPU_PAUSED && vcpu->cmd == VCPU_CMD_NONE)
            pthread_cond_wait(&vcpu->cond, &vcpu->lock);
        take_command(vcpu);
        enum vcpu_state st = vcpu->state;
        pthread_mutex_unlock(&vcpu->lock);
        if (st == VCPU_EXITING)
            break;
        if (st != VCPU_RUNNING)
            continue;

        if (!vcpu->first_run_logged && vcpu->index == 0) {
            vcpu->first_run_logged = true;
            log_debug("vCPU 0 enters the guest %" PRIu64 " us after process start",
                      log_us_since(&vcpu->vm->process_start, CLOCK_MONOTONIC));
        }
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
                continue; /* kicked: look at the mailbox */
            }
            log_err("vCPU %u: KVM_RUN failed: %s", vcpu->index, strerror(errno));
            STAT_ADD(&vcpu->vm->stats, vcpu_failures, 1);
            vm_request_stop(vcpu->vm, VM_STOP_ERROR);
        } else if (handle_exit(vcpu)) {
            continue;
        }
        /* The VM is stopping: park until the VMM thread says exit. */
        pthread_mutex_lock(&vcpu->lock);
        if (vcpu->state == VCPU_RUNNING)
            vcpu->state = VCPU_PAUSED;
        pthread_mutex_unlock(&vcpu->lock);
    }
    pthread_mutex_lock(&vcpu->lock);
    vcpu->state = VCPU_EXITED;
    pthread_cond_broadcast(&vcpu->cond);
    pthread_mutex_unlock(&vcpu->lock);
    return NULL;
}

int vcpu_start(struct vcpu *vcpu)
{
    char name[16], mine[16] = "";

    /* Firecracker's name "fc_vcpu N", which Kata looks up in /proc/<pid>/task/<tid>/comm
     * right after the VM says Running. A thread inherits its creator's name, so it is born
     * with it: no window in which it has another, and no /proc needed (a jail has none). */
    snprintf(name, sizeof(name), "fc_vcpu %u", vcpu->index);
    pthread_getname_np(pthread_self(), mine, sizeof(mine));
    pthread_setname_np(pthread_self(), name);
    int ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
    pthread_setname_np(pthread_self(), mine);
    if (ret)
        return -ret;
    vcpu->thread_started = true;
    return 0;
}

/* Kicks the vCPU out of KVM_RUN to look at its mailbox (a command posted before). */
static void kick(struct vcpu *vcpu)
{
    if (vcpu->thread_started) {
        /* immediate_exit catches the window between the mailbox check and KVM_RUN */
        __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
    }
}

void vcpu_request(struct vcpu *vcpu, enum vcpu_cmd cmd)
{
    pthread_mutex_lock(&vcpu->lock);
    vcpu->cmd = cmd;
    pthread_cond_broadcast(&vcpu->cond);
    pthread_mutex_unlock(&vcpu->lock);
    kick(vcpu);
}

bool vcpu_pause_if_running(struct vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->lock);
    /* The state the vCPU is headed for: a run command not taken yet (just after vm_start, or
     * a resume) counts as running, as the thread enters KVM_RUN as soon as it takes it. */
    bool running = vcpu->cmd == VCPU_CMD_RUN ||
                   (vcpu->state == VCPU_RUNNING && vcpu->cmd == VCPU_CMD_NONE);
    if (running) {
        vcpu->cmd = VCPU_CMD_PAUSE;
        pthread_cond_broadcast(&vcpu->cond);
    }
    pthread_mutex_unlock(&vcpu->lock);
    if (running)
        kick(vcpu);
    return running;
}

void vcpu_wait_state(struct vcpu *vcpu, enum vcpu_state state)
{
    pthread_mutex_lock(&vcpu->lock);
    while (vcpu->state != state && vcpu->state != VCPU_EXITED)
        pthread_cond_wait(&vcpu->cond, &vcpu->lock);
    pthread_mutex_unlock(&vcpu->lock);
}

void vcpu_join(struct vcpu *vcpu)
{
    if (!vcpu->thread_started)
        return;
    vcpu_request(vcpu, VCPU_CMD_EXIT);
    pthread_join(vcpu->thread, NULL);
    vcpu->thread_started = false;
}
