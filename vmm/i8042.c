/* A partial i8042 PS/2 controller at 0x60/0x64 (IRQ 1): enough for Linux to probe it, for
 * `reboot=k` (command 0xFE = CPU reset, which stops the VM) and for Ctrl-Alt-Del injection. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmm.h"

#define I8042_PORT  0x60
#define ST_OBF      0x01
#define ST_SYS      0x04
#define ST_CMD      0x08
#define ST_UNLOCKED 0x10
#define CTR_KBD_INT 0x01
#define CTR_SYS     0x04
#define CTR_KBD_OFF 0x10

static void kick(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* an eventfd far below its limit cannot fail */
    }
}

/* Called with the lock held. Returns true when IRQ 1 should be raised. */
static bool push(struct i8042 *k, uint8_t b)
{
    if (k->st.count >= sizeof(k->st.buf)) {
        STAT_ADD(k->stats, i8042_missed_write, 1);
        return false;
    }
    k->st.buf[(k->st.head + k->st.count++) % sizeof(k->st.buf)] = b;
    return (k->st.ctr & CTR_KBD_INT) != 0;
}

static bool push_n(struct i8042 *k, const uint8_t *b, unsigned n)
{
    bool irq = false;
    for (unsigned i = 0; i < n; i++)
        irq |= push(k, b[i]);
    return irq;
}

/* A command on port 0x64. Returns true when IRQ 1 should be raised. */
static bool command(struct i8042 *k, uint8_t cmd, bool *reset)
{
    k->st.cmd = 0;
    switch (cmd) {
    case 0x20: /* read the control byte */
        return push(k, k->st.ctr);
    case 0xaa: /* controller self-test: passed */
        return push(k, 0x55);
    case 0xab: /* keyboard interface test: no error */
    case 0xc0: /* read input port */
        return push(k, 0x00);
    case 0xad:
        k->st.ctr |= CTR_KBD_OFF;
        return false;
    case 0xae:
        k->st.ctr &= (uint8_t)~CTR_KBD_OFF;
        return false;
    case 0x60: /* the next data byte is the control byte */
    case 0xd1: /* ... the output port */
    case 0xd2: /* ... a byte "from the keyboard" */
    case 0xd3: /* ... a byte "from the mouse" */
    case 0xd4: /* ... a byte for the mouse */
        k->st.cmd = cmd;
        return false;
    case 0xfe: /* pulse the reset line */
        STAT_ADD(k->stats, i8042_reset, 1);
        atomic_store(&k->reset_line, true);
        *reset = true;
        return false;
    default: /* aux enable/disable and the rest: accepted, no effect */
        return false;
    }
}

/* A byte on port 0x60. Returns true when IRQ 1 should be raised. */
static bool data(struct i8042 *k, uint8_t v)
{
    static const uint8_t ack_reset[] = {0xfa, 0xaa}, ack_id[] = {0xfa, 0xab, 0x83};
    uint8_t pending = k->st.cmd;

    k->st.cmd = 0;
    switch (pending) {
    case 0x60:
        k->st.ctr = v;
        return false;
    case 0xd2:
        return push(k, v);
    case 0xd1:
    case 0xd3:
    case 0xd4:
        return false;
    default: /* a keyboard command: acknowledge it */
        if (v == 0xff)
            return push_n(k, ack_reset, sizeof(ack_reset));
        if (v == 0xf2)
            return push_n(k, ack_id, sizeof(ack_id));
        if (v == 0xee) /* echo */
            return push(k, 0xee);
        return push(k, 0xfa);
    }
}

static void i8042_read(void *opaque, uint64_t off, uint8_t *out, uint32_t len)
{
    struct i8042 *k = opaque;
    bool irq = false;

    memset(out, 0xff, len);
    pthread_mutex_lock(&k->lock);
    if (off == 0) {
        STAT_ADD(k->stats, i8042_read, 1);
        if (k->st.count) {
            out[0] = k->st.buf[k->st.head];
            k->st.head = (k->st.head + 1) % sizeof(k->st.buf);
            k->st.count--;
        } else {
            STAT_ADD(k->stats, i8042_missed_read, 1);
            out[0] = 0;
        }
        /* The IRQ is an edge and Linux reads one byte per interrupt: raise it again while
         * bytes are left (a Ctrl-Alt-Del is four of them). */
        irq = k->st.count && (k->st.ctr & CTR_KBD_INT);
    } else if (off == 4) {
        STAT_ADD(k->stats, i8042_read, 1);
        out[0] = (uint8_t)(k->st.status | (k->st.count ? ST_OBF : 0));
    }
    pthread_mutex_unlock(&k->lock);
    if (irq)
        kick(k->irq_fd);
}

static void i8042_write(void *opaque, uint64_t off, const uint8_t *in, uint32_t len)
{
    struct i8042 *k = opaque;
    bool irq = false, reset = false;

    (void)len;
    pthread_mutex_lock(&k->lock);
    if (off == 0 || off == 4)
        STAT_ADD(k->stats, i8042_write, 1);
    if (off == 0) {
        k->st.status &= (uint8_t)~ST_CMD;
        irq = data(k, in[0]);
    } else if (off == 4) {
        k->st.status |= ST_CMD;
        irq = command(k, in[0], &reset);
    }
    pthread_mutex_unlock(&k->lock);
    if (irq)
        kick(k->irq_fd);
    if (reset)
        kick(k->reset_fd);
}

int i8042_init(struct i8042 *k, int irq_fd, int reset_fd)
{
    memset(k, 0, sizeof(*k));
    k->st.status = ST_SYS | ST_UNLOCKED;
    k->st.ctr = CTR_KBD_INT | CTR_SYS;
    k->irq_fd = irq_fd;
    k->reset_fd = reset_fd;
    return -pthread_mutex_init(&k->lock, NULL);
}

bool i8042_reset_pulsed(struct i8042 *k)
{
    return atomic_load(&k->reset_line);
}

void i8042_destroy(struct i8042 *k)
{
    pthread_mutex_destroy(&k->lock);
}

struct bus_dev i8042_bus_dev(struct i8042 *k)
{
    return (struct bus_dev){
            .base = I8042_PORT, .len = 5, .read = i8042_read, .write = i8042_write, .opaque = k};
}

int i8042_ctrl_alt_del(struct i8042 *k)
{
    static const uint8_t keys[] = {0x14, 0x11, 0xe0, 0x71}; /* Ctrl, Alt, Del (set 2) */
    int ret = 0;
    bool irq = false;

    pthread_mutex_lock(&k->lock);
    if (k->st.count + sizeof(keys) > sizeof(k->st.buf)) {
        STAT_ADD(k->stats, i8042_errors, 1);
        ret = -ENOSPC;
    } else
        irq = push_n(k, keys, sizeof(keys));
    pthread_mutex_unlock(&k->lock);
    if (irq)
        kick(k->irq_fd);
    return ret;
}

void i8042_save(struct i8042 *k, struct i8042_state *st)
{
    pthread_mutex_lock(&k->lock);
    *st = k->st;
    pthread_mutex_unlock(&k->lock);
}

int i8042_restore(struct i8042 *k, const struct i8042_state *st, char *err, size_t errlen)
{
    const char *why = NULL;

    if (st->count > sizeof(st->buf) || st->head >= sizeof(st->buf))
        why = "output buffer count or head beyond the buffer";
    else if ((st->status & ~ST_CMD) != (ST_SYS | ST_UNLOCKED))
        why = "status bits the controller never sets";
    else if (st->cmd && st->cmd != 0x60 && (st->cmd < 0xd1 || st->cmd > 0xd4))
        why = "a pending command that takes no data byte";
    else if (st->pad)
        why = "nonzero padding";
    if (why)
        return errf(err, errlen, -EINVAL, "i8042: %s", why);
    pthread_mutex_lock(&k->lock);
    k->st = *st;
    pthread_mutex_unlock(&k->lock);
    return 0;
}
