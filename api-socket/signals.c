/* The process's signals, as Firecracker handles them. Fatal ones (SIGBUS, SIGSEGV, SIGXFSZ,
 * SIGXCPU, SIGILL, and SIGFPE, which Firecracker does not catch) are counted, logged, flush the
 * metrics and exit with Firecracker's code; SIGPIPE is counted and otherwise ignored. Unlike
 * Firecracker, the SIGXFSZ of one of ember's own writes past RLIMIT_FSIZE (the guest filling
 * its console file) is only counted: that write fails with EFBIG and the VM runs on; a
 * SIGXFSZ another process sends still ends ember with 151. The stopping
 * ones (SIGTERM, SIGINT, SIGHUP, SIGQUIT) are blocked here and read from a signalfd by the event
 * loops, which stop the VM cleanly; sig_stop_code and sig_exit then give the process Firecracker's
 * end for them. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../vmm/vmm.h"
#include "../seccomp/seccomp.h"
#include "api.h"

static struct api_metrics_counters *counters;
static void (*flush_last)(void);
static pid_t self; /* getpid() at sig_setup: no syscall in the handler */

static const struct {
    int sig, code;
    enum metric_id metric;
    const char *msg;
} fatal[] = {
        {SIGBUS, 149, M_SIG_BUS, "Shutting down VM after intercepting signal SIGBUS.\n"},
        {SIGSEGV, 150, M_SIG_SEGV, "Shutting down VM after intercepting signal SIGSEGV.\n"},
        {SIGXFSZ, 151, M_SIG_XFSZ, "Shutting down VM after intercepting signal SIGXFSZ.\n"},
        {SIGXCPU, 154, M_SIG_XCPU, "Shutting down VM after intercepting signal SIGXCPU.\n"},
        {SIGILL, 157, M_SIG_ILL, "Shutting down VM after intercepting signal SIGILL.\n"},
        /* No code of Firecracker's: 128 + 8, as the default action would have ended us. */
        {SIGFPE, 136, M_SIG_FPE, "Shutting down VM after intercepting signal SIGFPE.\n"},
};

/* Async-signal-safe calls only (the flush allocates nothing). */
static void on_fatal(int sig)
{
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        if (fatal[i].sig == sig) {
            metrics_add(counters, fatal[i].metric, 1);
            ssize_t w = write(STDERR_FILENO, fatal[i].msg, strlen(fatal[i].msg));
            (void)w;
            if (flush_last)
                flush_last();
            _exit(fatal[i].code);
        }
    _exit(EXIT_GENERIC);
}

/* The kernel's SIGXFSZ for a write past RLIMIT_FSIZE comes as SI_USER from this very process
 * (send_sig without info); anything else is fatal as before. */
static void on_xfsz(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (si && si->si_code == SI_USER && si->si_pid == self) {
        metrics_add(counters, M_SIG_XFSZ, 1);
        return; /* the write returns EFBIG: the caller drops and counts */
    }
    on_fatal(sig);
}

/* A seccomp violation (the SIGSYS handler, seccomp/install.c): counted and flushed. */
static void on_seccomp_fault(void)
{
    metrics_add(counters, M_SECCOMP_FAULTS, 1);
    if (flush_last)
        flush_last();
}

/* A client hung up: counted, and the write sees EPIPE. */
static void on_sigpipe(int sig)
{
    (void)sig;
    metrics_add(counters, M_SIG_PIPE, 1);
}

int sig_setup(struct api_metrics_counters *c, void (*flush)(void), sigset_t *term)
{
    struct sigaction sa = {.sa_handler = on_fatal};

    counters = c;
    flush_last = flush;
    self = getpid();
    sigfillset(&sa.sa_mask); /* nothing interrupts the last flush */
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        sigaction(fatal[i].sig, &sa, NULL);
    struct sigaction xfsz = {.sa_sigaction = on_xfsz, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigfillset(&xfsz.sa_mask);
    sigaction(SIGXFSZ, &xfsz, NULL);
    struct sigaction pipe_sa = {.sa_handler = on_sigpipe, .sa_flags = SA_RESTART};
    sigaction(SIGPIPE, &pipe_sa, NULL);
    sc_on_fault(on_seccomp_fault);
    sigemptyset(term);
    sigaddset(term, SIGTERM);
    sigaddset(term, SIGINT);
    sigaddset(term, SIGHUP);
    sigaddset(term, SIGQUIT);
    /* Blocked before any thread exists, so every thread inherits the mask; the event loop
     * (and the pre-boot loop) read them from a signalfd. */
    pthread_sigmask(SIG_BLOCK, term, NULL);
    return vcpu_signal_init();
}

int sig_stop_code(bool fc_mode, int sig, int *raise_sig)
{
    if (fc_mode && sig == SIGHUP) {
        metrics_add(counters, M_SIG_HUP, 1);
        return 156;
    }
    if (fc_mode && (sig == SIGTERM || sig == SIGINT))
        *raise_sig = sig;
    return 128 + sig;
}

int sig_exit(int raise_sig, int code)
{
    if (raise_sig) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, raise_sig);
        signal(raise_sig, SIG_DFL);
        raise(raise_sig); /* pending while blocked: delivered on unblocking */
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    }
    return code; /* the signal could not end us (PID 1 of a PID namespace ignores it) */
}
