/* ember VMM: the one internal header of vmm/ (config, guest memory, VM, vCPUs, devices). */
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

/* ---- configuration (filled by the CLI now, by the API later) ---------------------------- */
#define CMDLINE_MAX 2048 /* bytes including the NUL, as Firecracker on x86 */
#define VCPUS_MAX   32   /* Firecracker's machine-config limit */
#define MEM_MIN_MIB 2
#define MEM_MAX_MIB (255 * 1024) /* RAM must end below the 64-bit MMIO window at 256 GiB */
#define DEFAULT_CMDLINE                                                        \
    "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux " \
    "i8042.dumbkbd swiotlb=noforce"

enum boot_pref { BOOT_PREF_AUTO, BOOT_PREF_LINUX, BOOT_PREF_PVH };

/* Interrupt lines: the IOAPIC's 24 pins are GSI 0..23. GSI 0-4 are the PIT (0), i8042 (1),
 * the PIC cascade (2), COM2 (3, not emulated) and COM1 (4); virtio-mmio device n has GSI 5 + n
 * (Firecracker's IRQ_BASE 5 .. IRQ_MAX 23). VM_DEVS_MAX is the one limit on virtio-mmio devices
 * (drives now; nets and vsock share it), used by the API, --config-file, ember run and virtio. */
#define IOAPIC_PINS   24
#define MMIO_GSI_BASE 5
#define VM_DEVS_MAX   (IOAPIC_PINS - MMIO_GSI_BASE) /* 19 */

/* Block devices (virtio/blk.c); a rate limiter bucket with size 0 is disabled. */
#define VM_DRIVES_MAX VM_DEVS_MAX
struct vm_bucket {
    uint64_t size, one_time_burst, refill_time_ms;
};
struct vm_drive {
    char id[64];
    char path[PATH_MAX];
    bool root, read_only, writeback, async; /* writeback: FLUSH → fdatasync; async: io_uring */
    struct vm_bucket bw, ops;
};

/* Counters with Firecracker's metric names (docs/metrics.md: vcpu, block, uart, i8042), bumped
 * from any thread with relaxed atomics. The VMM never reads them; the API layer copies them into
 * its metrics at each flush, so the VMM and devices need not know about metrics files. */
struct vm_stats {
    /* Each group on its own cache line: the vCPUs' exit counters and the event loop's block
     * counters must not bounce one line between CPUs on every exit and request. */
    _Alignas(64) _Atomic uint64_t vcpu_exit_io_in;
    _Atomic uint64_t vcpu_exit_io_out, vcpu_exit_mmio_read, vcpu_exit_mmio_write, vcpu_failures;
    _Alignas(64) _Atomic uint64_t block_read_bytes;
    _Atomic uint64_t block_write_bytes, block_read_count, block_write_count, block_flush_count,
            block_invalid_reqs;
    _Alignas(64) _Atomic uint64_t uart_read;
    _Atomic uint64_t uart_write, uart_errors;
    _Atomic uint64_t i8042_reset, i8042_read, i8042_write, i8042_missed_read, i8042_missed_write,
            i8042_errors;
};
/* STAT_ADD(stats, field, n): adds n to one counter (stats may be NULL: unit tests). */
#define STAT_ADD(stats, field, n)                                                  \
    do {                                                                           \
        if (stats)                                                                 \
            atomic_fetch_add_explicit(&(stats)->field, (n), memory_order_relaxed); \
    } while (0)

struct vm_config {
    char kernel_path[PATH_MAX];
    char initrd_path[PATH_MAX];  /* "" = none */
    char console_path[PATH_MAX]; /* "" = stdout */
    char cmdline[CMDLINE_MAX];
    uint32_t vcpus;
    bool smt; /* two threads per core in the guest's CPU topology (vcpus 1 or even) */
    uint64_t mem_mib;
    enum boot_pref boot; /* auto: PVH when the kernel has the PVH note (as Firecracker) */
    struct vm_drive drives[VM_DRIVES_MAX]; /* attach order: the root drive first */
    unsigned ndrives;
};

/* cfg_defaults(cfg): fills in the defaults (1 vCPU, 128 MiB, default command line). */
void cfg_defaults(struct vm_config *cfg);
/* cfg_validate(cfg, err, errlen): Returns 0, or -EINVAL with a one-line reason in err. */
int cfg_validate(const struct vm_config *cfg, char *err, size_t errlen);

/* cli_parse(cfg, argc, argv, err, errlen): parses `run` options into cfg.
 * Returns 0, 1 if --help was printed, or -EINVAL with a reason in err. */
int cli_parse(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* cli_usage(out): prints the usage text. */
void cli_usage(void *out);

/* ---- logging ---------------------------------------------------------------------------- */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern enum log_level log_level;
/* log_msg(level, fmt, ...): one line on stderr, "ember: [level: ]message"; once log_configure
 * ran, Firecracker's "<ts> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] message" on its sink. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_at(level, file, line, fmt, ...): log_msg with the origin (the log_* macros). */
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
/* log_missed(): Returns how many log lines could not be written (logger.missed_log_count). */
uint64_t log_missed(void);
/* errf(err, errlen, code, fmt, ...): formats a one-line reason into err. Returns code. */
int errf(char *err, size_t errlen, int code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
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
    void *base; /* the one anonymous mapping behind all regions */
    size_t total;
};

/* gm_create(mem, size): maps size bytes of anonymous guest RAM (lazily, nothing touched),
 * split around the 32-bit MMIO hole. Returns 0 or -errno. */
int gm_create(struct guest_mem *mem, uint64_t size);
/* gm_destroy(mem): unmaps the guest RAM. */
void gm_destroy(struct guest_mem *mem);
/* gm_ptr(mem, gpa, len): Returns a host pointer to [gpa, gpa+len) if that range lies inside
 * one region (overflow-checked; len 0 counts as 1), else NULL. The only GPA→pointer path. */
void *gm_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* gm_write(mem, gpa, src, len) / gm_read(...): Returns 0 or -EFAULT. */
int gm_write(const struct guest_mem *mem, uint64_t gpa, const void *src, uint64_t len);
int gm_read(const struct guest_mem *mem, uint64_t gpa, void *dst, uint64_t len);
/* gm_prefault(mem, gpa, len): populates the pages of a range about to be written in bulk (the
 * kernel and initrd images), which is much cheaper than faulting them one by one. */
void gm_prefault(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* gm_low_end(mem): Returns the end GPA of the RAM below the MMIO hole. */
uint64_t gm_low_end(const struct guest_mem *mem);

/* ---- x86_64 boot ------------------------------------------------------------------------ */
#define BOOT_GDT_ADDR    0x500ULL
#define BOOT_IDT_ADDR    0x520ULL
#define PVH_INFO_ADDR    0x6000ULL
#define PVH_MODLIST_ADDR 0x6040ULL
#define ZERO_PAGE_ADDR   0x7000ULL
#define BOOT_STACK_ADDR  0x8ff0ULL
#define PML4_ADDR        0x9000ULL
#define PDPT_ADDR        0xa000ULL
#define PD_ADDR          0xb000ULL
#define CMDLINE_ADDR     0x20000ULL
#define SYSMEM_START     0x9fc00ULL /* MP table lives here; e820-reserved up to 0xE0000 */
#define SYSMEM_END       0xe0000ULL
#define HIMEM_START      0x100000ULL
#define KVM_TSS_ADDR     0xfffbd000ULL
#define KVM_IDMAP_ADDR   0xfffbc000ULL
#define IOAPIC_ADDR      0xfec00000ULL
#define LAPIC_ADDR       0xfee00000ULL

enum boot_mode { BOOT_LINUX64, BOOT_PVH };

/* Where the loaders put things, consumed by the zero-page builder and vCPU setup. */
struct boot_info {
    enum boot_mode mode;
    uint64_t entry;      /* 64-bit entry (or 32-bit PVH entry) */
    uint64_t pvh_entry;  /* from the ELF note XEN_ELFNOTE_PHYS32_ENTRY, 0 if none */
    uint64_t kernel_end; /* first GPA after the loaded kernel image */
    uint64_t initrd_addr, initrd_size;
    uint32_t initrd_addr_max; /* highest address the initrd may end at (inclusive) */
    bool has_setup_header;    /* bzImage: setup_hdr holds the image's header */
    uint8_t setup_hdr[0x290 - 0x1f1];
    uint32_t setup_hdr_len;
};

/* loader_load_kernel(mem, fd, size, bi, err, errlen): loads an ELF vmlinux or a bzImage from fd
 * into guest memory and fills bi. Returns 0, or -errno with a one-line reason in err. */
int loader_load_kernel(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                       char *err, size_t errlen);
/* loader_load_initrd(mem, fd, size, bi, err, errlen): places the initrd at the top of low RAM.
 * Returns 0, or -errno with a reason in err. */
int loader_load_initrd(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                       char *err, size_t errlen);

/* boot_setup(mem, bi, cmdline, nvcpus): writes GDT/IDT, page tables, command line, zero page
 * (or PVH start info) with e820, and the MP table. Returns 0 or -errno. */
int boot_setup(const struct guest_mem *mem, const struct boot_info *bi, const char *cmdline,
               unsigned nvcpus);
/* boot_gdt(mode, gdt): the four boot GDT entries (null, code, data, TSS) for a boot mode. */
void boot_gdt(enum boot_mode mode, uint64_t gdt[4]);
/* mptable_write(mem, nvcpus): writes the MP floating pointer and table at SYSMEM_START.
 * Returns 0 or -errno. */
int mptable_write(const struct guest_mem *mem, unsigned nvcpus);

/* ---- devices on the legacy buses ---------------------------------------------------------- */
struct bus_dev {
    uint64_t base, len;
    void (*read)(void *opaque, uint64_t off, uint8_t *data, uint32_t len);
    void (*write)(void *opaque, uint64_t off, const uint8_t *data, uint32_t len);
    void *opaque;
};

#define BUS_MAX_DEVS (VM_DEVS_MAX + 8) /* every virtio-mmio device and the platform ones */
struct bus {
    struct bus_dev devs[BUS_MAX_DEVS];
    unsigned ndevs;
};

/* bus_add(bus, dev): Returns 0, -EBUSY on overlap, -ENOSPC when full. */
int bus_add(struct bus *bus, const struct bus_dev *dev);
/* bus_access(bus, addr, data, len, is_write): dispatches; unclaimed reads return all-ones.
 * Returns true if a device claimed the access. */
bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#define SERIAL_FIFO 64
struct serial {
    pthread_mutex_t lock;
    uint8_t ier, iir_thri, lcr, mcr, lsr_extra, msr, scr, dll, dlm, fcr;
    uint8_t rx[SERIAL_FIFO];
    unsigned rx_head, rx_count;
    bool rx_blocked;        /* the host stopped reading input because the FIFO was full */
    int out_fd;             /* where guest output goes */
    int irq_fd;             /* irqfd eventfd for GSI 4 */
    int rx_ready_fd;        /* eventfd: FIFO drained, host may read input again */
    struct vm_stats *stats; /* uart_* counters; NULL = none (set before the vCPUs run) */
};

/* serial_init(s, out_fd, irq_fd, rx_ready_fd): Returns 0 or -errno. */
int serial_init(struct serial *s, int out_fd, int irq_fd, int rx_ready_fd);
/* serial_destroy(s): releases the lock. */
void serial_destroy(struct serial *s);
/* serial_bus_dev(s): Returns the PIO device for COM1 (0x3F8, 8 ports). */
struct bus_dev serial_bus_dev(struct serial *s);
/* serial_input(s, buf, len): queues host input. Returns the number of bytes accepted. */
size_t serial_input(struct serial *s, const uint8_t *buf, size_t len);
/* serial_rx_space(s): Returns free FIFO space (0 marks the input blocked). */
size_t serial_rx_space(struct serial *s);

struct i8042 {
    pthread_mutex_t lock;
    uint8_t status, ctr, cmd;
    uint8_t buf[16];
    unsigned head, count;
    int irq_fd;             /* irqfd eventfd for GSI 1 */
    int reset_fd;           /* eventfd: guest asked for a CPU reset */
    struct vm_stats *stats; /* i8042_* counters; NULL = none (set before the vCPUs run) */
};

/* i8042_init(k, irq_fd, reset_fd): Returns 0 or -errno. */
int i8042_init(struct i8042 *k, int irq_fd, int reset_fd);
/* i8042_destroy(k): releases the lock. */
void i8042_destroy(struct i8042 *k);
/* i8042_bus_dev(k): Returns the PIO device (0x60..0x64). */
struct bus_dev i8042_bus_dev(struct i8042 *k);
/* i8042_ctrl_alt_del(k): injects Ctrl-Alt-Del scancodes. Returns 0 or -ENOSPC. */
int i8042_ctrl_alt_del(struct i8042 *k);

struct boot_timer {
    struct timespec start_wall, start_cpu;
    atomic_bool fired;
};

/* boot_timer_bus_dev(bt): Returns the MMIO device at 0xC000_0000. */
struct bus_dev boot_timer_bus_dev(struct boot_timer *bt);
/* boot_timer_start(bt): records the start of the boot (wall and process CPU time). */
void boot_timer_start(struct boot_timer *bt);
/* boot_timer_detach(mmio, bt): takes the boot timer off the MMIO bus (Firecracker attaches it
 * only with --boot-timer); before the vCPUs run. */
void boot_timer_detach(struct bus *mmio, const struct boot_timer *bt);

/* ---- VM and vCPUs ----------------------------------------------------------------------- */
enum vcpu_state { VCPU_PAUSED, VCPU_RUNNING, VCPU_EXITING, VCPU_EXITED };
enum vcpu_cmd { VCPU_CMD_NONE, VCPU_CMD_RUN, VCPU_CMD_PAUSE, VCPU_CMD_EXIT };

struct vm;
struct virtio_devs;
struct loop;

struct term {
    bool raw;
    struct termios saved;
};

/* The serial console's input (console.c): stdin → UART, Ctrl-A x. */
struct console {
    struct vm *vm;
    struct loop *loop;
    bool watched, armed, rx_watched, tty, escape;
    struct term term;
};
/* console_start(c, vm, loop): watches stdin (a terminal, put in raw mode, or a FIFO) and the
 * UART's rx_ready eventfd on the loop. Returns 0 or -errno. */
int console_start(struct console *c, struct vm *vm, struct loop *loop);
/* console_stop(c): stops watching and restores the terminal (safe if never started). */
void console_stop(struct console *c);

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
    bool config_error; /* vm_create failed on the configuration, not on KVM */
    bool watching;     /* stop_fd and reset_fd are on the loop */
    struct timespec process_start;
};

/* vm_create(vm, cfg, loop, err, errlen): opens /dev/kvm, checks capabilities, creates the VM
 * with irqchip + PIT, guest memory, devices and vCPUs, loads the kernel, and registers the
 * devices' fds with loop. Returns 0 or -errno. */
int vm_create(struct vm *vm, const struct vm_config *cfg, struct loop *loop, char *err,
              size_t errlen);
/* vm_start(vm): starts the console input and the vCPU threads, running. Returns 0 or -errno
 * (the VM is then stopping with VM_STOP_ERROR). */
int vm_start(struct vm *vm);
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

/* cpu_setup(vm, vcpu): CPUID, MSRs, registers, FPU and LAPIC for boot. Returns 0 or -errno. */
int cpu_setup(struct vm *vm, struct vcpu *vcpu);
#define CPUID_MAX_ENTRIES 256
/* cpuid_normalize(cpuid, cap, index, nvcpus, smt, tsc_deadline): adjusts a copy of the
 * supported CPUID (room for cap entries) for one vCPU in place; smt: two threads per core.
 * Returns 0 or -ENOSPC. */
int cpuid_normalize(struct kvm_cpuid2 *cpuid, unsigned cap, unsigned index, unsigned nvcpus,
                    bool smt, bool tsc_deadline);

/* vcpu_init(vm, vcpu, index): creates the KVM vCPU and maps kvm_run. Returns 0 or -errno. */
int vcpu_init(struct vm *vm, struct vcpu *vcpu, unsigned index);
/* vcpu_start(vcpu): starts the thread in VCPU_PAUSED. Returns 0 or -errno. */
int vcpu_start(struct vcpu *vcpu);
/* vcpu_request(vcpu, cmd): posts a command and kicks the vCPU out of KVM_RUN. */
void vcpu_request(struct vcpu *vcpu, enum vcpu_cmd cmd);
/* vcpu_wait_state(vcpu, state): waits until the vCPU acknowledged the state. */
void vcpu_wait_state(struct vcpu *vcpu, enum vcpu_state state);
/* vcpu_join(vcpu): asks the vCPU to exit and joins its thread. */
void vcpu_join(struct vcpu *vcpu);
/* vcpu_destroy(vcpu): unmaps kvm_run and closes the fd. */
void vcpu_destroy(struct vcpu *vcpu);
/* vcpu_signal_init(): installs the kick signal handler. Returns 0 or -errno. */
int vcpu_signal_init(void);

/* ---- the front ends (api-socket/) --------------------------------------------------------- */
/* api_main(argc, argv, t0): the firecracker-compatible process (`ember --api-sock ...`,
 * api-socket/run.c). Returns the exit code. */
int api_main(int argc, char **argv, const struct timespec *t0);
/* api_run_cli(cfg, t0): `ember run`: the options go through the API's configuration path,
 * then the VM runs. Returns the exit code. */
int api_run_cli(const struct vm_config *cfg, const struct timespec *t0);
/* args_usage(out): the firecracker flags' usage text (api-socket/args.c). */
void args_usage(void *out);

#endif
