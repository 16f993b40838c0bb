/* COM1: a 16550A-style UART at 0x3F8 (IRQ 4) — enough of it for Linux's 8250 driver and
 * console. Output goes straight to a file descriptor; input arrives from the event loop. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmm.h"

#define SERIAL_PORT 0x3f8
#define IER_RDI     0x01
#define IER_THRI    0x02
#define IIR_NONE    0x01
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_FIFO    0xc0
#define LCR_DLAB    0x80
#define LSR_DR      0x01
#define LSR_THRE    0x20
#define LSR_TEMT    0x40
#define MCR_LOOP    0x10
#define MSR_IDLE    0xb0 /* DCD | DSR | CTS */

static void raise_irq(struct serial *s)
{
    uint64_t one = 1;
    if (write(s->irq_fd, &one, sizeof(one)) < 0) {
        /* eventfd counter saturation is impossible in practice; nothing to do */
    }
}

/* Called with the lock held. Returns true when an interrupt should be raised. */
static bool push_rx(struct serial *s, uint8_t b)
{
    if (s->st.rx_count >= SERIAL_FIFO)
        return false;
    s->st.rx[(s->st.rx_head + s->st.rx_count++) % SERIAL_FIFO] = b;
    return (s->st.ier & IER_RDI) != 0;
}

static uint8_t read_reg(struct serial *s, uint64_t off, bool *wake_input)
{
    uint8_t v = 0;
    bool dlab = s->st.lcr & LCR_DLAB;

    switch (off) {
    case 0:
        if (dlab)
            return s->st.dll;
        STAT_ADD(s->stats, uart_read, 1);
        if (s->st.rx_count) {
            v = s->st.rx[s->st.rx_head];
            s->st.rx_head = (s->st.rx_head + 1) % SERIAL_FIFO;
            s->st.rx_count--;
        }
        if (s->rx_blocked && s->st.rx_count == 0) { /* let the host send more */
            s->rx_blocked = false;
            *wake_input = true;
        }
        return v;
    case 1:
        return dlab ? s->st.dlm : s->st.ier;
    case 2:
        if ((s->st.ier & IER_RDI) && s->st.rx_count) {
            v = IIR_RDI;
        } else if ((s->st.ier & IER_THRI) && s->st.iir_thri) {
            v = IIR_THRI;
            s->st.iir_thri = 0; /* reading IIR acknowledges THR-empty */
        } else {
            v = IIR_NONE;
        }
        return v | ((s->st.fcr & 1) ? IIR_FIFO : 0);
    case 3:
        return s->st.lcr;
    case 4:
        return s->st.mcr;
    case 5:
        return (s->st.rx_count ? LSR_DR : 0) | LSR_THRE | LSR_TEMT;
    case 6:
        if (!(s->st.mcr & MCR_LOOP))
            return MSR_IDLE;
        /* loopback: the modem outputs come back as inputs */
        return (uint8_t)(((s->st.mcr & 0x02) << 3) | ((s->st.mcr & 0x01) << 5) |
                         ((s->st.mcr & 0x04) << 4) | ((s->st.mcr & 0x08) << 4));
    default:
        return s->st.scr;
    }
}

/* Returns true when an interrupt should be raised. */
static bool write_reg(struct serial *s, uint64_t off, uint8_t v)
{
    bool dlab = s->st.lcr & LCR_DLAB;

    switch (off) {
    case 0:
        if (dlab) {
            s->st.dll = v;
            return false;
        }
        if (s->st.mcr & MCR_LOOP) {
            push_rx(s, v);
        } else if (s->out_fd >= 0) {
            ssize_t n;
            while ((n = write(s->out_fd, &v, 1)) < 0 && errno == EINTR)
                ;
            if (n == 1)
                STAT_ADD(s->stats, uart_write, 1);
            else
                STAT_ADD(s->stats, uart_errors, 1); /* the byte is lost */
        }
        s->st.iir_thri = 1;
        return (s->st.ier & (IER_THRI | IER_RDI)) != 0;
    case 1:
        if (dlab) {
            s->st.dlm = v;
            return false;
        }
        s->st.ier = v & 0x0f;
        if (s->st.ier & IER_THRI)
            s->st.iir_thri = 1;
        return (s->st.ier & IER_THRI) || ((s->st.ier & IER_RDI) && s->st.rx_count);
    case 2:
        s->st.fcr = v;
        if (v & 0x02) { /* clear the receive FIFO */
            s->st.rx_head = s->st.rx_count = 0;
        }
        return false;
    case 3:
        s->st.lcr = v;
        return false;
    case 4:
        s->st.mcr = v & 0x1f;
        return false;
    case 7:
        s->st.scr = v;
        return false;
    default: /* LSR and MSR are read-only */
        return false;
    }
}

static void serial_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
    struct serial *s = opaque;
    bool wake = false;

    memset(data, 0, len);
    pthread_mutex_lock(&s->lock);
    data[0] = read_reg(s, off, &wake);
    pthread_mutex_unlock(&s->lock);
    if (wake) {
        uint64_t one = 1;
        if (write(s->rx_ready_fd, &one, sizeof(one)) < 0) {
            /* cannot fail for an eventfd well below its limit */
        }
    }
}

static void serial_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
    struct serial *s = opaque;
    (void)len;
    pthread_mutex_lock(&s->lock);
    bool irq = write_reg(s, off, data[0]);
    pthread_mutex_unlock(&s->lock);
    if (irq)
        raise_irq(s);
}

int serial_init(struct serial *s, int out_fd, int irq_fd, int rx_ready_fd)
{
    memset(s, 0, sizeof(*s));
    s->out_fd = out_fd;
    s->irq_fd = irq_fd;
    s->rx_ready_fd = rx_ready_fd;
    s->st.dll = 0x0c; /* 9600 baud, as after a BIOS */
    s->st.lcr = 0x03; /* 8N1 */
    s->st.mcr = 0x08; /* OUT2 */
    return -pthread_mutex_init(&s->lock, NULL);
}

void serial_destroy(struct serial *s)
{
    pthread_mutex_destroy(&s->lock);
}

struct bus_dev serial_bus_dev(struct serial *s)
{
    return (struct bus_dev){
            .base = SERIAL_PORT, .len = 8, .read = serial_read, .write = serial_write, .opaque = s};
}

size_t serial_input(struct serial *s, const uint8_t *buf, size_t len)
{
    size_t n = 0;
    bool irq = false;

    pthread_mutex_lock(&s->lock);
    while (n < len && s->st.rx_count < SERIAL_FIFO)
        irq |= push_rx(s, buf[n++]);
    if (s->st.rx_count >= SERIAL_FIFO)
        s->rx_blocked = true;
    pthread_mutex_unlock(&s->lock);
    if (irq)
        raise_irq(s);
    return n;
}

size_t serial_rx_space(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    size_t space = SERIAL_FIFO - s->st.rx_count;
    if (!space)
        s->rx_blocked = true;
    pthread_mutex_unlock(&s->lock);
    return space;
}

void serial_save(struct serial *s, struct serial_state *st)
{
    pthread_mutex_lock(&s->lock);
    *st = s->st;
    pthread_mutex_unlock(&s->lock);
}

int serial_restore(struct serial *s, const struct serial_state *st, char *err, size_t errlen)
{
    const char *why = NULL;

    if (st->rx_count > SERIAL_FIFO || st->rx_head >= SERIAL_FIFO)
        why = "receive FIFO count or head beyond the FIFO";
    else if (st->ier & ~0x0fu)
        why = "reserved IER bits";
    else if (st->mcr & ~0x1fu)
        why = "reserved MCR bits";
    else if (st->iir_thri > 1)
        why = "THR-empty flag neither 0 nor 1";
    if (why)
        return errf(err, errlen, -EINVAL, "serial: %s", why);
    pthread_mutex_lock(&s->lock);
    s->st = *st;
    s->rx_blocked = false; /* the console asks for room again (serial_rx_space) */
    pthread_mutex_unlock(&s->lock);
    return 0;
}
