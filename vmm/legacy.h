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

#define SERIAL_FIFO 64
/* The UART's state that a snapshot carries (plain data, fixed layout: 80 bytes): the
 * registers and the receive FIFO (rx_count bytes from rx[rx_head], wrapping). */
struct serial_state {
    uint8_t ier, iir_thri, lcr, mcr, scr, dll, dlm, fcr;
    uint32_t rx_head, rx_count;
    uint8_t rx[SERIAL_FIFO];
};
_Static_assert(sizeof(struct serial_state) == 80, "serial_state layout");
struct serial {
    struct serial_state st;
    pthread_mutex_t lock;
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
