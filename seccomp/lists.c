/* ember's per-role allow-lists: what each thread does once its filter is in, derived from the
 * code (and checked by running every test with the filters on). Everything else traps.
 * A device added later adds its syscalls here, to the role that makes them (event-loop I/O: vmm;
 * register writes: vcpu). `ember-seccomp print --markdown` puts these into SECURITY.md. */
#include <asm/ioctls.h>
#include <linux/futex.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "lists.h"

#define KICK_SIGNAL 34 /* glibc's SIGRTMIN: the vCPU kick (vmm/vcpu.c), checked by sc_setup */
#define FLAGS_OPEN  (O_ACCMODE | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | 0100000) /* O_LARGEFILE */
#define AT_EMPTY    0x1000 /* AT_EMPTY_PATH: fstat(fd) is newfstatat(fd, "", st, AT_EMPTY_PATH) */

/* One rule: the syscall with these argument checks. */
#define ANY(name)                  \
    {                              \
        .syscall = name, .ncmp = 0 \
    }
#define EQ(name, a, v, w)                                          \
    {                                                              \
        .syscall = name, .ncmp = 1, .cmp = { {a, SC_EQ, 0, v, w} } \
    }
/* mmap and mprotect: never executable memory. */
#define NOEXEC(name)                                                                           \
    {                                                                                          \
        .syscall = name, .ncmp = 1, .cmp = { {2, SC_MASKED_EQ, PROT_EXEC, 0, "no PROT_EXEC"} } \
    }
/* The futex operations glibc's mutexes, condition variables and pthread_join use. */
#define FUTEX_OPS                                                                       \
    EQ("futex", 1, FUTEX_WAIT, "FUTEX_WAIT"), EQ("futex", 1, FUTEX_WAKE, "FUTEX_WAKE"), \
            EQ("futex", 1, FUTEX_WAIT_BITSET, "FUTEX_WAIT_BITSET"),                     \
            EQ("futex", 1, FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME,                    \
               "FUTEX_WAIT_BITSET|CLOCK_REALTIME"),                                     \
            EQ("futex", 1, FUTEX_WAIT_PRIVATE, "FUTEX_WAIT_PRIVATE"),                   \
            EQ("futex", 1, FUTEX_WAKE_PRIVATE, "FUTEX_WAKE_PRIVATE"),                   \
            EQ("futex", 1, FUTEX_WAIT_BITSET_PRIVATE, "FUTEX_WAIT_BITSET_PRIVATE"),     \
            EQ("futex", 1, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME,            \
               "FUTEX_WAIT_BITSET_PRIVATE|CLOCK_REALTIME")
/* What every thread needs: glibc's allocator (a new arena reserves PROT_NONE, then opens it
 * read-write; free trims with madvise), locks, the clock (the vDSO falls back to the syscall on
 * some clock sources), a thread's end (signals blocked, stack released, exit) and the SIGSYS
 * handler's own line and exit. */
#define COMMON                                                                                 \
    ANY("brk"), NOEXEC("mmap"), NOEXEC("mprotect"), ANY("munmap"),                             \
            EQ("madvise", 2, MADV_DONTNEED, "MADV_DONTNEED"), FUTEX_OPS, ANY("clock_gettime"), \
            ANY("rt_sigprocmask"), ANY("write"), ANY("exit"), ANY("exit_group")
#define GET_NAME EQ("prctl", 0, PR_GET_NAME, "PR_GET_NAME") /* the thread name in log lines */
/* Sending the vCPU kick (vcpu_request) and abort()'s SIGABRT to a thread. */
#define TGKILL_KICK \
    EQ("tgkill", 2, KICK_SIGNAL, "the vCPU kick (SIGRTMIN)"), EQ("tgkill", 2, SIGABRT, "SIGABRT")

/* libmicrohttpd's thread: its epoll set, the ITC eventfd, the connections (recv/send/sendmsg,
 * a TCP_NODELAY/TCP_CORK it tries on every socket, shutdown, close), the mailbox to the VMM
 * thread (eventfd + condition variable), its log lines (a log file at RLIMIT_FSIZE raises
 * SIGXFSZ, which is counted and returns). */
static const struct sc_rule api[] = {
        COMMON,
        GET_NAME,
        EQ("prctl", 0, PR_SET_NAME, "PR_SET_NAME"),
        ANY("epoll_wait"),
        ANY("epoll_ctl"),
        ANY("read"),
        ANY("recvfrom"),
        ANY("sendto"),
        ANY("sendmsg"),
        EQ("setsockopt", 1, IPPROTO_TCP, "IPPROTO_TCP"),
        EQ("shutdown", 1, SHUT_WR, "SHUT_WR"),
        EQ("shutdown", 1, SHUT_RDWR, "SHUT_RDWR"), /* closing connections when it stops */
        ANY("close"),
        ANY("rt_sigreturn"),
};

/* The acceptor: poll, accept4, the 503 answer and its drain, shutting an idle connection that
 * gives way to a new one, handing a connection to libmicrohttpd (it checks the fd's flags,
 * allocates and wakes its thread through the ITC). */
static const struct sc_rule accept_[] = {
        COMMON,
        ANY("poll"),
        EQ("accept4", 3, SOCK_CLOEXEC | SOCK_NONBLOCK, "SOCK_CLOEXEC|SOCK_NONBLOCK"),
        EQ("fcntl", 1, F_GETFL, "F_GETFL"),
        ANY("sendto"),
        ANY("recvfrom"),
        EQ("shutdown", 1, SHUT_WR, "SHUT_WR"),
        EQ("shutdown", 1, SHUT_RDWR, "SHUT_RDWR"),
        ANY("close"),
};

#define SNAP_GET(req) EQ("ioctl", 1, req, #req)

/* The VMM thread once the VM runs: the event loop (epoll, eventfds, signalfd, timerfds), the
 * block devices (Sync: preadv/pwritev/fdatasync; Async: io_uring; PATCH /drives swaps the file
 * the opener opened), the network devices (TAP read/writev, TUNSETOFFLOAD at the first wake-up
 * after the driver set DRIVER_OK), the vsock device (its Unix sockets), the Uffd backend (letting
 * the faults of a hung or dead page-fault handler go), the API mailbox, metrics
 * and log lines, pausing and kicking vCPUs, the console (stdin, guest output to a non-blocking fd
 * and a last bounded wait for it with poll, the terminal mode and stdout's flags restored at the
 * end) and the clean end (joining threads, freeing the VM, re-raising SIGTERM/SIGINT to die by it
 * as Firecracker). */
static const struct sc_rule vmm[] = {
        COMMON,
        GET_NAME,
        ANY("epoll_wait"),
        ANY("epoll_ctl"),
        ANY("poll"),
        ANY("read"),
        ANY("preadv"),
        ANY("pwritev"),
        ANY("fdatasync"),
        ANY("writev"),
        EQ("ioctl", 1, TUNSETOFFLOAD, "TUNSETOFFLOAD"),
        /* virtio-vsock: host clients from its listener, the guest's connections to
         * <uds_path>_<port> (Unix stream sockets only), their data both ways */
        {.syscall = "socket",
         .ncmp = 2,
         .cmp = {{0, SC_EQ, 0, AF_UNIX, "AF_UNIX"},
                 {1, SC_EQ, 0, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  "SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC"}}},
        ANY("connect"),
        EQ("accept4", 3, SOCK_CLOEXEC | SOCK_NONBLOCK, "SOCK_CLOEXEC|SOCK_NONBLOCK"),
        ANY("readv"),
        ANY("sendmsg"),
        ANY("poll"), /* at a host socket's EOF: closed (HUP) or half-closed */
        EQ("shutdown", 1, SHUT_WR, "SHUT_WR"),
        EQ("fcntl", 1, F_GETFL, "F_GETFL"),
        EQ("fcntl", 1, F_SETFL, "F_SETFL"),
        EQ("newfstatat", 3, AT_EMPTY, "AT_EMPTY_PATH"),
        ANY("lseek"),
        ANY("close"),
        ANY("io_uring_enter"),
        EQ("io_uring_register", 1, IORING_REGISTER_FILES_UPDATE, "IORING_REGISTER_FILES_UPDATE"),
        EQ("timerfd_settime", 1, 0, "flags 0"),
        EQ("ioctl", 1, TCGETS, "TCGETS"),
        EQ("ioctl", 1, TCSETS, "TCSETS"),
        TGKILL_KICK,
        EQ("tgkill", 2, SIGTERM, "SIGTERM"),
        EQ("tgkill", 2, SIGINT, "SIGINT"),
        ANY("getpid"),
        ANY("gettid"),
        EQ("rt_sigaction", 0, SIGTERM, "SIGTERM"),
        EQ("rt_sigaction", 0, SIGINT, "SIGINT"),
        EQ("rt_sigaction", 0, SIGABRT, "SIGABRT"),
        ANY("rt_sigreturn"),
        /* PUT /snapshot/create on the paused VM: the vCPUs' and the VM's state (the KVM GETs),
         * the memory file (its untouched pages found with mincore; sysinfo says if swap makes
         * that unreliable), the files created by the opener; KVMCLOCK_CTRL before a resume. */
        SNAP_GET(KVM_GET_MP_STATE),
        SNAP_GET(KVM_GET_SREGS),
        SNAP_GET(KVM_GET_XSAVE),
        SNAP_GET(KVM_GET_XSAVE2),
        SNAP_GET(KVM_GET_XCRS),
        SNAP_GET(KVM_GET_DEBUGREGS),
        SNAP_GET(KVM_GET_LAPIC),
        SNAP_GET(KVM_GET_TSC_KHZ),
        SNAP_GET(KVM_GET_CPUID2),
        SNAP_GET(KVM_GET_MSRS),
        SNAP_GET(KVM_GET_VCPU_EVENTS),
        SNAP_GET(KVM_GET_PIT2),
        SNAP_GET(KVM_GET_CLOCK),
        SNAP_GET(KVM_GET_IRQCHIP),
        SNAP_GET(KVM_GET_MSR_INDEX_LIST),
        SNAP_GET(KVM_CHECK_EXTENSION),
        SNAP_GET(KVM_KVMCLOCK_CTRL),
        SNAP_GET(KVM_GET_REGS),
        SNAP_GET(KVM_GET_DIRTY_LOG),
        ANY("pwrite64"),
        ANY("ftruncate"),
        ANY("mincore"),
        ANY("sysinfo"),
        ANY("fsetxattr"),
        ANY("pread64"),
        EQ("madvise", 2, MADV_RANDOM, "MADV_RANDOM"),
        EQ("madvise", 2, MADV_NORMAL, "MADV_NORMAL"),
        /* PUT /snapshot/load with a working set: how much of it is cached (cachestat), a
         * cached run's page tables filled at once, an uncached run's read started */
        ANY("cachestat"),
        EQ("madvise", 2, MADV_POPULATE_READ, "MADV_POPULATE_READ"),
        EQ("madvise", 2, MADV_WILLNEED, "MADV_WILLNEED"),
};

/* A vCPU: KVM_RUN (KVM_GET_REGS only for the RIP of a diagnostic), the register files' side
 * effects (UART output, irqfd/ioeventfd/reset eventfd writes, a device reset draining its
 * io_uring and disarming its timers), the kick's sigreturn, the mailbox, log lines. */
static const struct sc_rule vcpu[] = {
        COMMON,
        GET_NAME,
        EQ("ioctl", 1, KVM_RUN, "KVM_RUN"),
        EQ("ioctl", 1, KVM_GET_REGS, "KVM_GET_REGS"),
        ANY("io_uring_enter"),
        EQ("timerfd_settime", 1, 0, "flags 0"),
        ANY("rt_sigreturn"),
        TGKILL_KICK,
        ANY("getpid"),
        ANY("gettid"),
        EQ("rt_sigaction", 0, SIGABRT, "SIGABRT"),
};

/* The opener: open read-only or read-write without O_CREAT/O_TRUNC/O_PATH/O_TMPFILE, or create
 * a snapshot's output file (O_CREAT|O_TRUNC|O_NOFOLLOW, write-only), look at what it opened, close
 * what it refuses, unlink the API socket at the end; the clock and write for sc_enter's timing and
 * the SIGSYS line. */
static const struct sc_rule opener[] = {
        {.syscall = "openat",
         .ncmp = 1,
         .cmp = {{2, SC_MASKED_EQ, ~(uint64_t)FLAGS_OPEN, 0, "no O_CREAT/O_TRUNC/O_PATH"}}},
        {.syscall = "openat",
         .ncmp = 1,
         .cmp = {{2, SC_MASKED_EQ, ~(uint64_t)(SC_CREATE_FLAGS | 0100000), 0,
                  "a snapshot's output file: O_CREAT|O_TRUNC|O_NOFOLLOW, no O_PATH"}}},
        EQ("newfstatat", 3, AT_EMPTY, "AT_EMPTY_PATH"),
        ANY("close"),
        ANY("unlink"),
        FUTEX_OPS,
        ANY("clock_gettime"),
        ANY("write"),
        ANY("exit_group"),
};

#define LIST(a)                     \
    {                               \
        a, sizeof(a) / sizeof(a[0]) \
    }
const struct sc_list sc_builtin_lists[SC_ROLES] = {
        [SC_ROLE_API] = LIST(api),   [SC_ROLE_ACCEPT] = LIST(accept_), [SC_ROLE_VMM] = LIST(vmm),
        [SC_ROLE_VCPU] = LIST(vcpu), [SC_ROLE_OPENER] = LIST(opener),
};

const unsigned sc_firecracker_sizes[SC_ROLES] = {
        [SC_ROLE_API] = 31, [SC_ROLE_VMM] = 50, [SC_ROLE_VCPU] = 27};
