/* ember VMM: the internal header of vmm/ (guest memory, VM, vCPUs, legacy devices, logging);
 * the configuration is config.h, the event loop loop.h. */
#ifndef EMBER_VMM_H
#define EMBER_VMM_H

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>
#include <time.h>

#define EMBER_VERSION "0.1.0"
/* The Firecracker API version ember implements: the swagger's info.version. `--version`,
 * GET /version and GET / report it (Kata requires a semver >= 0.21.1 as the 2nd word). */
#define EMBER_FC_VERSION "1.17.0-dev"

/* Exit codes, as Firecracker's. */
#define EXIT_OK         0
#define EXIT_GENERIC    1
#define EXIT_BAD_CONFIG 152
#define EXIT_BAD_ARGS   153

#include "config.h"

/* Counters with Firecracker's metric names (docs/metrics.md: vcpu, block, net, vsock, uart, i8042),
 * bumped from any thread with relaxed atomics. The VMM never reads them; the API layer copies them
 * into its metrics at each flush, so the VMM and devices need not know about metrics files. */
struct vm_stats {
    /* Each group on its own cache line: the vCPUs' exit counters and the event loop's block
     * counters must not bounce one line between CPUs on every exit and request. */
    _Alignas(64) _Atomic uint64_t vcpu_exit_io_in;
    _Atomic uint64_t vcpu_exit_io_out, vcpu_exit_mmio_read, vcpu_exit_mmio_write, vcpu_failures;
    _Alignas(64) _Atomic uint64_t block_read_bytes;
    _Atomic uint64_t block_write_bytes, block_read_count, block_write_count, block_flush_count,
            block_invalid_reqs;
    _Alignas(64) _Atomic uint64_t net_rx_bytes;
    _Atomic uint64_t net_rx_packets, net_rx_fails, net_rx_rate_limiter_throttled,
            net_no_rx_avail_buffer;
    _Alignas(64) _Atomic uint64_t net_tx_bytes;
    _Atomic uint64_t net_tx_packets, net_tx_malformed_frames, net_tx_fails,
            net_tx_rate_limiter_throttled;
    _Alignas(64) _Atomic uint64_t vsock_rx_bytes;
    _Atomic uint64_t vsock_tx_bytes, vsock_conns_added, vsock_conns_killed, vsock_conns_removed,
            vsock_conns_refused, vsock_tx_write_fails, vsock_rx_read_fails,
            vsock_tx_malformed_packets;
    _Alignas(64) _Atomic uint64_t uart_read;
    _Atomic uint64_t uart_write, uart_errors;
    _Atomic uint64_t uart_missed_write, uart_rate_dropped; /* bytes dropped: stalled or by limit */
    _Atomic uint64_t i8042_reset, i8042_read, i8042_write, i8042_missed_read, i8042_missed_write,
            i8042_errors;
};
/* STAT_ADD(stats, field, n): adds n to one counter (stats may be NULL: unit tests). */
#define STAT_ADD(stats, field, n)                                                  \
    do {                                                                           \
        if (stats)                                                                 \
            atomic_fetch_add_explicit(&(stats)->field, (n), memory_order_relaxed); \
    } while (0)

/* ---- logging ---------------------------------------------------------------------------- */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern enum log_level log_level;
/* log_at(level, file, line, fmt, ...): one line on stderr, "ember: [level: ]message"; once
 * log_configure ran, Firecracker's "<ts> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] message"
 * on its sink (file NULL: no origin). The log_* macros pass their own origin. */
void log_at(enum log_level level, const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* log_configure(id, fd, level, off, show_level, show_origin): switches to Firecracker's line
 * format on fd (-1: stdout); off silences everything. */
void log_configure(const char *id, int fd, enum log_level level, bool off, bool show_level,
                   bool show_origin);
#define log_err(...)   log_at(LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...)  log_at(LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
/* log_std_fds(out, err): the descriptors log lines for stdout and stderr are written to
 * (outfd_nonblocking's, so that a stalled reader drops lines instead of stopping a thread). */
void log_std_fds(int out, int err);
/* log_thread_before_line(fn, arg): fn(arg) runs before each line this thread logs (NULL: none).
 * A vCPU writes the console bytes it queued first, so its own lines never overtake them on a
 * terminal or pipe the two share. */
void log_thread_before_line(void (*fn)(void *), void *arg);
/* log_missed(): Returns how many log lines could not be written (logger.missed_log_count). */
uint64_t log_missed(void);
/* log_sink_fd(id): Returns the fd log lines go to (-1: logging is off), with *id the instance
 * id of Firecracker's line format, or NULL for ember run's. Async-signal-safe (the SIGSYS line). */
int log_sink_fd(const char **id);
/* errf(err, errlen, code, fmt, ...): formats a one-line reason into err. Returns code. */
int errf(char *err, size_t errlen, int code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* clock_ns(): Returns CLOCK_MONOTONIC in nanoseconds (the one clock helper). */
uint64_t clock_ns(void);
/* A rate limit for one log line. */
struct ratelog {
    bool used;
    uint64_t last_ns, suppressed;
};
/* ratelog_allow(r, now_ns, interval_ns, suppressed): Returns true if the line may be logged now
 * (none in the last interval_ns), with *suppressed the lines dropped since the last one;
 * otherwise counts one more dropped line. */
bool ratelog_allow(struct ratelog *r, uint64_t now_ns, uint64_t interval_ns, uint64_t *suppressed);
/* log_us_since(t0, clock): Returns microseconds elapsed on clock since t0. */
uint64_t log_us_since(const struct timespec *t0, clockid_t clock);

/* ---- guest memory ----------------------------------------------------------------------- */
#define GM_MAX_REGIONS  2
#define MMIO_HOLE_START 0xC0000000ULL
#define MMIO_HOLE_END   0x100000000ULL

struct gm_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *host;
};

struct guest_mem {
    struct gm_region regions[GM_MAX_REGIONS];
    unsigned nregions;
    void *base; /* the one mapping behind all regions */
    size_t total;
    bool file_backed; /* mapped from a snapshot's memory file (gm_map_file) */
    /* Pages the VMM's devices wrote since the last snapshot (track_dirty_pages; NULL: not
     * tracked): one bit per page in memory-file order; KVM's dirty log has the guest's own. */
    _Atomic uint64_t *dirty;
};

/* gm_create(mem, size): maps size bytes of anonymous guest RAM (lazily, nothing touched),
 * split around the 32-bit MMIO hole. Returns 0 or -errno. */
int gm_create(struct guest_mem *mem, uint64_t size);
/* gm_map_file(mem, size, fd): guest RAM of size bytes mapped MAP_PRIVATE from fd, a memory
 * file holding the regions back to back (the caller checked its size): no page is read now.
 * Returns 0 or -errno. */
int gm_map_file(struct guest_mem *mem, uint64_t size, int fd);
/* gm_track_dirty(mem, all): starts the device-write bitmap, every page dirty (all: nothing is
 * on disk yet, so a first Diff snapshot holds everything) or none. Returns 0 or -ENOMEM. */
int gm_track_dirty(struct guest_mem *mem, bool all);
/* gm_mark_dirty(mem, gpa, len): the VMM (a device) is about to write [gpa, gpa+len) of guest
 * RAM: marked for the next Diff snapshot (a no-op unless tracked). */
void gm_mark_dirty(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* gm_page_index(mem, gpa): Returns the page's index in memory-file order, or UINT64_MAX. */
uint64_t gm_page_index(const struct guest_mem *mem, uint64_t gpa);
/* gm_destroy(mem): unmaps the guest RAM. */
void gm_destroy(struct guest_mem *mem);
/* gm_ptr(mem, gpa, len): Returns a host pointer to [gpa, gpa+len) if that range lies inside
 * one region (overflow-checked; len 0 counts as 1), else NULL. The only GPA→pointer path. */
void *gm_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* gm_write(mem, gpa, src, len): Returns 0 or -EFAULT. */
int gm_write(const struct guest_mem *mem, uint64_t gpa, const void *src, uint64_t len);
/* gm_prefault(mem, gpa, len): populates the pages of a range about to be written in bulk (the
 * kernel and initrd images), which is much cheaper than faulting them one by one. */
void gm_prefault(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* gm_low_end(mem): Returns the end GPA of the RAM below the MMIO hole. */
uint64_t gm_low_end(const struct guest_mem *mem);

#include "boot_x86_64.h"

#include "legacy.h"

/* ---- VM and vCPUs ----------------------------------------------------------------------- */
enum vcpu_state { VCPU_PAUSED, VCPU_RUNNING, VCPU_EXITING, VCPU_EXITED };
enum vcpu_cmd { VCPU_CMD_NONE, VCPU_CMD_RUN, VCPU_CMD_PAUSE, VCPU_CMD_EXIT };

struct vm;
struct virtio_devs;
struct loop;
struct snap_layer;

struct term {
    bool raw;
    struct termios saved;
};

/* The serial console's input (console.c): stdin → UART, Ctrl-A x. */
struct console {
    struct vm *vm;
    struct loop *loop;
    bool watched, armed, rx_watched, tty, escape;
    bool kick_watched, out_watched; /* the output side's watches */
    struct term term;
};
/* console_open_out(path, err, errlen): opens a serial output path (serial_out_path, --console)
 * without blocking: created 0600 or truncated; a symlink, a FIFO with no reader or anything
 * but a regular file, a FIFO, /dev/null or a terminal is refused. Returns the fd, or -errno
 * with a one-line reason in err. */
int console_open_out(const char *path, char *err, size_t errlen);
/* console_start(c, vm, loop): watches stdin (a terminal, put in raw mode, or a FIFO), the
 * UART's rx_ready and output eventfds on the loop, and sets the output rate limit.
 * Returns 0 or -errno. */
int console_start(struct console *c, struct vm *vm, struct loop *loop);
/* console_stop(c): writes the output still queued (waiting for a stalled reader 100 ms at
 * most), stops watching and restores the terminal (safe if never started). */
void console_stop(struct console *c);
/* console_restore_terminal(c): the terminal's mode as it was before console_start (for a
 * process that ends without the teardown). */
void console_restore_terminal(const struct console *c);

struct vcpu {
    struct vm *vm;
    unsigned index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock; /* guards state and cmd (the mailbox) */
    pthread_cond_t cond;
    enum vcpu_state state;
    enum vcpu_cmd cmd;
    bool first_run_logged;
    /* the CPUID table set with KVM_SET_CPUID2 (a snapshot saves it: KVM_GET_CPUID2 is not
     * what was set on every KVM, PVM returns the host's) */
    struct kvm_cpuid2 *cpuid;
};

/* Why the VM stopped; decides the exit code. */
enum vm_stop {
    VM_STOP_NONE,
    VM_STOP_RESET,  /* i8042 reset or KVM system event: exit 0 */
    VM_STOP_USER,   /* escape sequence on the console: exit 0 */
    VM_STOP_SIGNAL, /* SIGTERM and friends */
    VM_STOP_ERROR,  /* triple fault, unknown exit, KVM error */
};

struct vm {
    const struct vm_config *cfg;
    int kvm_fd, vm_fd;
    size_t run_size;
    struct guest_mem mem;
    struct boot_info boot;
    struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID, normalized per vCPU before use */
    bool tsc_deadline;
    struct vcpu *vcpus;
    unsigned nvcpus;
    struct bus pio, mmio;
    struct serial serial;
    struct i8042 i8042;
    struct boot_timer boot_timer;
    struct vm_stats stats;
    /* virtio-mmio devices (virtio/virtio.c) */
    struct virtio_devs *virtio;
    struct loop *loop; /* the event loop the devices and the VM's own fds are watched on */
    struct console console;
    int console_fd; /* file opened for --console, or -1 */
    int irq_fds[2]; /* eventfds bound to GSI 4 (serial) and GSI 1 (i8042) */
    int serial_rx_fd, reset_fd, stop_fd;
    atomic_int stop_reason;
    int stop_signal;
    bool config_error;  /* vm_create failed on the configuration, not on KVM */
    unsigned snap_caps; /* SNAP_CAP_* (snapshot.h) of this host's KVM */
    /* the Uffd memory backend (snapshot/uffd.c): the userfaultfd, the handler's socket (open
     * for the VM's life), a pidfd of its process and its pid; -1: none. The thread that
     * watches the handler (snapshot/uffd_watch.c), the eventfd that ends it (-1: none), and
     * whether it gave the handler up (the guest's memory is no longer what it served). */
    int uffd, uffd_sock, uffd_pidfd, uffd_pid, uffd_watch_quit;
    pthread_t uffd_watcher;
    atomic_bool uffd_failed;
    /* the chain of memory images the VM's RAM stands on (snapshot/diff.c): empty after a boot,
     * the loaded snapshot's after a load, extended by each snapshot created */
    struct snap_layer *chain;
    unsigned nchain;
    uint64_t snap_seed; /* for layer ids */
    uint64_t mem_tag;   /* the loaded memory file's chain id (snap_memory_tag), if valid */
    bool mem_tag_valid;
    /* recording a working set (snapshot/ws.c): the file to write, the memory file to copy the
     * pages from, the marker's timer (armed at resume), -1/NULL: not recording */
    char *ws_record_path;
    int ws_mem_fd, ws_timer_fd;
    uint64_t ws_after_ms;
    bool ws_armed;
    uint32_t *snap_msrs; /* the MSRs a snapshot saves (read when first needed) */
    unsigned snap_nmsrs;
    bool watching; /* stop_fd and reset_fd are on the loop */
    struct timespec process_start;
};

/* vm_create(vm, cfg, loop, err, errlen): opens /dev/kvm, checks capabilities, creates the VM
 * with irqchip + PIT, guest memory, devices and vCPUs, loads the kernel, and registers the
 * devices' fds with loop. Returns 0 or -errno. */
int vm_create(struct vm *vm, const struct vm_config *cfg, struct loop *loop, char *err,
              size_t errlen);
/* vm_create is vm_init, the configuration's files, guest memory, kernel, boot structures and
 * devices (vm.c's vm_load: no KVM yet, so bad input is a configuration error on any host), then
 * vm_build and vm_cold_boot. A snapshot restore calls vm_init, makes memory and devices its
 * own way, then vm_build, and sets the vCPUs' saved state instead of vm_cold_boot. */
/* vm_init(vm, cfg, loop): the VM's fields before anything is opened (every fd -1, the boot
 * timer started). */
void vm_init(struct vm *vm, const struct vm_config *cfg, struct loop *loop);
/* vm_build(vm, err, errlen): builds the machine around vm->mem and vm->virtio: the KVM VM
 * (irqchip, PIT, memory slots), the legacy devices, the virtio devices attached to KVM, the
 * MMIO bus and loop, and the vCPU fds (no register set). Returns 0, or -errno with a reason in
 * err. */
int vm_build(struct vm *vm, char *err, size_t errlen);
/* vm_cold_boot(vm, err, errlen): the boot registers of every vCPU (cpu_setup) for the kernel
 * vm->boot describes. Returns 0, or -errno with a reason in err. */
int vm_cold_boot(struct vm *vm, char *err, size_t errlen);
/* vm_start(vm, run): starts the console input and the vCPU threads, running (or paused: a
 * restored VM that is not resumed yet). Returns 0 or -errno (the VM is then stopping with
 * VM_STOP_ERROR). */
int vm_start(struct vm *vm, bool run);
/* vm_open_console(vm, err, errlen): opens the configured console file (none: stdout).
 * Returns 0, or -errno with a reason in err. */
int vm_open_console(struct vm *vm, char *err, size_t errlen);
/* vm_stopped(vm): Returns true once a stop was requested (the loop then ends the VM). */
bool vm_stopped(struct vm *vm);
/* vm_halt(vm): ends the vCPU threads and the console input (idempotent). */
void vm_halt(struct vm *vm);
/* vm_exit_code(vm): Returns the process exit code for the VM's stop reason. */
int vm_exit_code(struct vm *vm);
/* vm_destroy(vm): frees everything vm_create made (safe on a partly created vm). */
void vm_destroy(struct vm *vm);
/* vm_request_stop(vm, reason): records the first stop reason and wakes the event loop. */
void vm_request_stop(struct vm *vm, enum vm_stop reason);

/* vcpu_init(vm, vcpu, index): creates the KVM vCPU and maps kvm_run. Returns 0 or -errno. */
int vcpu_init(struct vm *vm, struct vcpu *vcpu, unsigned index);
/* vcpu_start(vcpu): starts the thread in VCPU_PAUSED. Returns 0 or -errno. */
int vcpu_start(struct vcpu *vcpu);
/* vcpu_request(vcpu, cmd): posts a command and kicks the vCPU out of KVM_RUN. */
void vcpu_request(struct vcpu *vcpu, enum vcpu_cmd cmd);
/* vcpu_pause_if_running(vcpu): posts a pause if the vCPU runs or is about to (a run command
 * not taken yet), deciding and posting under one lock. Returns whether it did. */
bool vcpu_pause_if_running(struct vcpu *vcpu);
/* vcpu_wait_state(vcpu, state): waits until the vCPU acknowledged the state. */
void vcpu_wait_state(struct vcpu *vcpu, enum vcpu_state state);
/* vcpu_join(vcpu): asks the vCPU to exit and joins its thread. */
void vcpu_join(struct vcpu *vcpu);
/* vcpu_destroy(vcpu): unmaps kvm_run and closes the fd. */
void vcpu_destroy(struct vcpu *vcpu);
/* vcpu_dump_all(vm): logs each vCPU's registers, run state and APIC vectors (SIGUSR2), the
 * running ones paused for the moment it takes (vcpu_dump.c). */
void vcpu_dump_all(struct vm *vm);
/* vcpu_signal_init(): installs the kick signal handler. Returns 0 or -errno. */
int vcpu_signal_init(void);

/* proc_hygiene(argc, argv): first thing in main (vmm/hygiene.c): not dumpable and RLIMIT_CORE
 * 0 (soft and hard), unless argv has --allow-core-dumps. */
void proc_hygiene(int argc, char **argv);

#endif
