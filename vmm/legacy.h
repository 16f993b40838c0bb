/* The legacy devices (bus.c, serial.c, i8042.c, boot_timer.c): the PIO and MMIO buses, COM1,
 * the i8042 keyboard controller (reset line, Ctrl-Alt-Del) and the boot timer. */
#ifndef EMBER_LEGACY_H
#define EMBER_LEGACY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h" /* VM_DEVS_MAX */

struct vm_stats;

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

/* A byte ring (serial.c) for output that must never block its producer; the caller's lock
 * orders producer and consumer. */
#define OUTBUF_SIZE 65536
struct outbuf {
    uint32_t head, len; /* len bytes from data[head], wrapping */
    uint8_t data[OUTBUF_SIZE];
};
/* outbuf_put(b, p, n): appends what fits of p[0..n). Returns the bytes taken (the rest is the
 * caller's to drop and count). */
size_t outbuf_put(struct outbuf *b, const uint8_t *p, size_t n);
/* outbuf_peek(b, p): Returns the length of the oldest contiguous run of bytes, *p its start
 * (0: empty). */
size_t outbuf_peek(const struct outbuf *b, const uint8_t **p);
/* outbuf_drop(b, n): removes the n oldest bytes (at most all of them). */
void outbuf_drop(struct outbuf *b, size_t n);

/* outfd_nonblocking(fd): Returns a descriptor that writes where fd does and never blocks (outfd.c):
 * fd itself for a regular file or /dev/null, else a private O_NONBLOCK reopening of it, else fd
 * made O_NONBLOCK (its flags restored at exit). The same answer for the same fd every time. */
int outfd_nonblocking(int fd);

#define SERIAL_FIFO 64
/* The UART's state that a snapshot carries (plain data, fixed layout: 80 bytes): the
 * registers and the receive FIFO (rx_count bytes from rx[rx_head], wrapping). */
struct serial_state {
    uint8_t ier, iir_thri, lcr, mcr, scr, dll, dlm, fcr;
    uint32_t rx_head, rx_count;
    uint8_t rx[SERIAL_FIFO];
};
_Static_assert(sizeof(struct serial_state) == 80, "serial_state layout");
struct tbucket;
struct vm_bucket;
/* Guest output never waits for the host: a byte the guest writes goes into out (under lock)
 * and the event loop writes it to out_fd, which never blocks (serial_flush). Bytes the ring
 * has no room for (the reader stalls) or out_fd refuses (a reader gone, a file at
 * RLIMIT_FSIZE) are dropped and counted in uart_missed_write; bytes beyond the rate limit in
 * uart_rate_dropped. */
struct serial {
    struct serial_state st;
    pthread_mutex_t lock;
    pthread_mutex_t flush_lock; /* held while writing to out_fd (serial_flush): one writer */
    bool rx_blocked;            /* the host stopped reading input because the FIFO was full */
    int out_fd;                 /* where guest output goes (non-blocking, or a regular file) */
    int irq_fd;                 /* irqfd eventfd for GSI 4 */
    int rx_ready_fd;            /* eventfd: FIFO drained, host may read input again */
    int out_kick_fd;            /* eventfd: output waits in out (serial_init makes it) */
    bool out_kicked;            /* out_kick_fd written, out not emptied since (under lock) */
    struct tbucket *rate;       /* the output rate limit (serial_set_rate); NULL: none */
    struct vm_stats *stats;     /* uart_* counters; NULL = none (set before the vCPUs run) */
    struct outbuf out;          /* guest output on its way to out_fd */
};

/* serial_init(s, out_fd, irq_fd, rx_ready_fd): with its out_kick_fd. Returns 0 or -errno. */
int serial_init(struct serial *s, int out_fd, int irq_fd, int rx_ready_fd);
/* serial_destroy(s): releases the lock, the kick eventfd and the rate limit. */
void serial_destroy(struct serial *s);
/* serial_set_rate(s, b): limits guest output to bucket b in bytes (size 0: no limit); before
 * the vCPUs run. Returns 0 or -ENOMEM. */
int serial_set_rate(struct serial *s, const struct vm_bucket *b);
/* serial_flush(s, budget): writes waiting output to out_fd until it is empty, out_fd would
 * block, or budget bytes went (event loop thread). Returns 0 (empty), -EAGAIN (wait until
 * out_fd is writable) or 1 (budget spent, more waits: call again after other work). */
int serial_flush(struct serial *s, size_t budget);
/* serial_flush_before_log(s): serial_flush with one round's budget, before a vCPU's log line
 * (log_thread_before_line): the line then follows the guest bytes that came before it. The
 * fd never blocks; the vCPU may wait for the loop's write in progress (flush_lock). */
void serial_flush_before_log(void *s);
/* serial_drain(s, timeout_ms): writes all waiting output, waiting for a stalled out_fd at
 * most timeout_ms in all (event loop thread, vCPUs paused or stopped). Returns 0 (nothing
 * waits) or -EAGAIN (the reader did not take it all: the rest stays queued, not counted). */
int serial_drain(struct serial *s, int timeout_ms);
/* serial_discard(s): drops (and counts) the output still waiting, at the end. */
void serial_discard(struct serial *s);
/* serial_bus_dev(s): Returns the PIO device for COM1 (0x3F8, 8 ports). */
struct bus_dev serial_bus_dev(struct serial *s);
/* serial_input(s, buf, len): queues host input. Returns the number of bytes accepted. */
size_t serial_input(struct serial *s, const uint8_t *buf, size_t len);
/* serial_rx_space(s): Returns free FIFO space (0 marks the input blocked). */
size_t serial_rx_space(struct serial *s);
/* serial_save(s, st): the registers and the receive FIFO into st (under the lock). */
void serial_save(struct serial *s, struct serial_state *st);
/* serial_restore(s, st, err, errlen): takes a saved state, which is hostile (a snapshot file):
 * a FIFO count or head beyond the FIFO, reserved IER/MCR bits or a THR-empty flag other than
 * 0/1 are refused. Returns 0, or -EINVAL with a one-line reason in err (s unchanged). */
int serial_restore(struct serial *s, const struct serial_state *st, char *err, size_t errlen);

/* The i8042's state that a snapshot carries (plain data, fixed layout: 28 bytes): status and
 * control bytes, the command waiting for its data byte, and the output buffer (count bytes from
 * buf[head], wrapping). */
struct i8042_state {
    uint8_t status, ctr, cmd;
    uint8_t buf[16];
    uint8_t pad; /* 0 */
    uint32_t head, count;
};
_Static_assert(sizeof(struct i8042_state) == 28, "i8042_state layout");
struct i8042 {
    struct i8042_state st;
    pthread_mutex_t lock;
    int irq_fd;             /* irqfd eventfd for GSI 1 */
    int reset_fd;           /* eventfd: guest asked for a CPU reset */
    atomic_bool reset_line; /* the reset line was pulsed: the vCPU that did it stops at once */
    struct vm_stats *stats; /* i8042_* counters; NULL = none (set before the vCPUs run) */
};

/* i8042_init(k, irq_fd, reset_fd): Returns 0 or -errno. */
int i8042_init(struct i8042 *k, int irq_fd, int reset_fd);
/* i8042_destroy(k): releases the lock. */
void i8042_destroy(struct i8042 *k);
/* i8042_bus_dev(k): Returns the PIO device (0x60..0x64). */
struct bus_dev i8042_bus_dev(struct i8042 *k);
/* i8042_reset_pulsed(k): Returns true once the guest pulsed the reset line (command 0xFE).
 * The vCPU that wrote it checks this before it runs on: a CPU in reset executes nothing, and
 * Linux's reboot=k falls through to a triple fault a few microseconds later. */
bool i8042_reset_pulsed(struct i8042 *k);
/* i8042_ctrl_alt_del(k): injects Ctrl-Alt-Del scancodes. Returns 0 or -ENOSPC. */
int i8042_ctrl_alt_del(struct i8042 *k);
/* i8042_save(k, st): status, control byte, pending command and output buffer into st. */
void i8042_save(struct i8042 *k, struct i8042_state *st);
/* i8042_restore(k, st, err, errlen): takes a saved state, which is hostile (a snapshot file):
 * a buffer count or head beyond the buffer, status bits the controller never sets, a pending
 * command that takes no data byte or nonzero padding are refused. Returns 0, or -EINVAL with
 * a one-line reason in err (k unchanged). */
int i8042_restore(struct i8042 *k, const struct i8042_state *st, char *err, size_t errlen);

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

#endif
