/* COM1: a 16550A-style UART at 0x3F8 (IRQ 4) — enough of it for Linux's 8250 driver and
 * console. Output goes into a bounded ring that the writing vCPU empties itself with
 * non-blocking writes, and the event loop when the reader was full (so a stalled reader can
 * never stop a vCPU); input arrives from the event loop. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm.h"
#include "../virtio/device.h" /* the token bucket */

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

/* One byte of guest output, lock held: rate-limited, queued or dropped. Returns OUT_NONE when
 * nothing was queued, OUT_QUEUED when the event loop knows of output already, OUT_WAKE when it
 * must be woken for what remains (the ring was empty of news for it). */
enum { OUT_NONE, OUT_QUEUED, OUT_WAKE };
static int push_tx(struct serial *s, uint8_t b)
{
    if (s->rate && tb_consume(s->rate, 1)) {
        STAT_ADD(s->stats, uart_rate_dropped, 1);
        return OUT_NONE;
    }
    if (outbuf_put(&s->out, &b, 1) == 0) {
        STAT_ADD(s->stats, uart_missed_write, 1);
        return OUT_NONE;
    }
    if (s->out_kicked)
        return OUT_QUEUED;
    s->out_kicked = true;
    return OUT_WAKE;
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

/* Returns true when an interrupt should be raised; *out says what became of output (push_tx). */
static bool write_reg(struct serial *s, uint64_t off, uint8_t v, int *out)
{
    bool dlab = s->st.lcr & LCR_DLAB;

    switch (off) {
    case 0:
        if (dlab) {
            s->st.dll = v;
            return false;
        }
        if (s->st.mcr & MCR_LOOP)
            push_rx(s, v);
        else if (s->out_fd >= 0)
            *out = push_tx(s, v);
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

static int flush(struct serial *s, size_t budget);

/* The vCPU that queued output writes it out itself when no one else is writing (the console fd
 * does not block: what a stalled reader does not take stays in the ring), and wakes the event
 * loop only for what is left. Waking the loop for each byte cost an eventfd write and a thread
 * hand-off per byte; in the nested test host that hand-off, byte after byte, made the emulated
 * SVM mix up guest and host state (tests/host/README.md). */
static void write_out(struct serial *s, int out)
{
    int left = 1;
    if (pthread_mutex_trylock(&s->flush_lock) == 0) {
        left = flush(s, OUTBUF_SIZE);
        pthread_mutex_unlock(&s->flush_lock);
    }
    /* left: flush saw the ring empty and cleared out_kicked, or another writer is at it and
     * will see this byte, or the loop was told already (OUT_QUEUED) */
    if (left != 0 && out == OUT_WAKE) {
        uint64_t one = 1;
        if (write(s->out_kick_fd, &one, sizeof(one)) < 0) {
            /* cannot fail for an eventfd well below its limit */
        }
    }
}

static void serial_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
    struct serial *s = opaque;
    int out = OUT_NONE;
    (void)len;
    pthread_mutex_lock(&s->lock);
    bool irq = write_reg(s, off, data[0], &out);
    pthread_mutex_unlock(&s->lock);
    if (out != OUT_NONE)
        write_out(s, out);
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
    s->out_kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->out_kick_fd < 0)
        return -errno;
    int ret = -pthread_mutex_init(&s->lock, NULL);
    if (!ret && (ret = -pthread_mutex_init(&s->flush_lock, NULL)))
        pthread_mutex_destroy(&s->lock);
    if (ret) {
        close(s->out_kick_fd);
        s->out_kick_fd = -1;
    }
    return ret;
}

void serial_destroy(struct serial *s)
{
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->flush_lock);
    if (s->out_kick_fd >= 0)
        close(s->out_kick_fd);
    s->out_kick_fd = -1;
    free(s->rate);
    s->rate = NULL;
}

int serial_set_rate(struct serial *s, const struct vm_bucket *b)
{
    if (!b || b->size == 0 || b->refill_time_ms == 0)
        return 0;
    struct tbucket *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    tb_init(t, b);
    pthread_mutex_lock(&s->lock);
    free(s->rate);
    s->rate = t;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int serial_flush(struct serial *s, size_t budget)
{
    pthread_mutex_lock(&s->flush_lock); /* one writer at a time: the loop or a logging vCPU */
    int ret = flush(s, budget);
    pthread_mutex_unlock(&s->flush_lock);
    return ret;
}

void serial_flush_before_log(void *opaque)
{
    serial_flush(opaque, OUTBUF_SIZE); /* what does not fit now is the loop's, as always */
}

/* serial_flush with flush_lock held: bytes leave the ring only after they were written. */
static int flush(struct serial *s, size_t budget)
{
    const uint8_t *p;
    size_t sent = 0;

    for (;;) {
        pthread_mutex_lock(&s->lock);
        size_t n = outbuf_peek(&s->out, &p);
        if (n == 0) /* the next byte the guest writes wakes the loop again */
            s->out_kicked = false;
        pthread_mutex_unlock(&s->lock);
        if (n == 0)
            return 0;
        if (sent >= budget)
            return 1;
        if (n > budget - sent)
            n = budget - sent;
        /* p..p+n stays put: the vCPUs only write into the free part of the ring */
        ssize_t w = write(s->out_fd, p, n);
        int e = errno;
        if (w < 0 && e == EINTR)
            continue;
        if (w < 0 && e == EAGAIN)
            return -EAGAIN;
        pthread_mutex_lock(&s->lock);
        if (w > 0) {
            outbuf_drop(&s->out, (size_t)w);
            STAT_ADD(s->stats, uart_write, (uint64_t)w);
            sent += (size_t)w;
        } else { /* EPIPE (no reader), EFBIG (RLIMIT_FSIZE), EIO ...: these bytes are lost */
            outbuf_drop(&s->out, n);
            STAT_ADD(s->stats, uart_errors, 1);
            STAT_ADD(s->stats, uart_missed_write, n);
            sent += n;
        }
        pthread_mutex_unlock(&s->lock);
    }
}

int serial_drain(struct serial *s, int timeout_ms)
{
    uint64_t deadline = clock_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ULL;

    /* at most OUTBUF_SIZE is queued and nothing adds to it (paused or stopped vCPUs), so a
     * few rounds always suffice; a vCPU still writing cannot keep this going either */
    for (int rounds = 0; rounds < 8;) {
        int ret = serial_flush(s, OUTBUF_SIZE);
        if (ret == 0)
            return 0;
        if (ret == 1) {
            rounds++;
            continue;
        }
        uint64_t now = clock_ns();
        struct pollfd p = {.fd = s->out_fd, .events = POLLOUT};
        if (now >= deadline || poll(&p, 1, (int)((deadline - now) / 1000000 + 1)) <= 0)
            return -EAGAIN;
    }
    return -EAGAIN;
}

void serial_discard(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    STAT_ADD(s->stats, uart_missed_write, s->out.len);
    outbuf_drop(&s->out, s->out.len);
    pthread_mutex_unlock(&s->lock);
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

/* ---- the output ring: the vCPUs put, the event loop drains; s->lock orders them --------- */
size_t outbuf_put(struct outbuf *b, const uint8_t *p, size_t n)
{
    size_t room = OUTBUF_SIZE - b->len;
    if (n > room)
        n = room;
    size_t tail = (b->head + b->len) % OUTBUF_SIZE, first = OUTBUF_SIZE - tail;
    if (first > n)
        first = n;
    memcpy(&b->data[tail], p, first);
    memcpy(b->data, p + first, n - first);
    b->len += (uint32_t)n;
    return n;
}

size_t outbuf_peek(const struct outbuf *b, const uint8_t **p)
{
    size_t n = OUTBUF_SIZE - b->head;
    *p = &b->data[b->head];
    return n < b->len ? n : b->len;
}

void outbuf_drop(struct outbuf *b, size_t n)
{
    if (n > b->len)
        n = b->len;
    b->head = (uint32_t)((b->head + n) % OUTBUF_SIZE);
    b->len -= (uint32_t)n;
    if (b->len == 0)
        b->head = 0; /* the next chunk starts at the beginning: one write instead of two */
}
