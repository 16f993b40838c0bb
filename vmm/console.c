/* The serial console on the event loop. Input: this process's stdin (a terminal, put in raw
 * mode, or a FIFO, as Firecracker) feeds the UART. Ctrl-A x leaves, Ctrl-A Ctrl-A sends one
 * Ctrl-A (as QEMU). When the guest stops reading, stdin is left unwatched until the UART's
 * FIFO drains (its rx_ready eventfd). The terminal mode is restored on the way out.
 * Output: the UART queues guest bytes and kicks an eventfd; the loop writes them to the
 * console fd, which never blocks, and watches it for EPOLLOUT only while it is full. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "loop.h"
#include "vmm.h"

#define ESCAPE_KEY     0x01
#define FLUSH_BUDGET   OUTBUF_SIZE /* bytes per wake-up: a flood never starves the loop */
#define FINAL_FLUSH_MS 100         /* what the end waits for a slow reader, at most */

int console_open_out(const char *path, char *err, size_t errlen)
{
    struct stat st;

    /* O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking the VMM thread;
     * O_NOFOLLOW: a symlink is refused. Truncated below, once it is known to be a file. */
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        return errf(err, errlen, -e, "The serial output %.256s cannot be opened: %s", path,
                    e == ELOOP   ? "it is a symbolic link (refused)"
                    : e == ENXIO ? "it is a FIFO with no reader"
                                 : strerror(e));
    }
    const char *why = NULL;
    if (fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (S_ISREG(st.st_mode)) {
        if (ftruncate(fd, 0) != 0 || fcntl(fd, F_SETFL, 0) != 0)
            why = strerror(errno);
    } else if (!S_ISFIFO(st.st_mode) && !(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) &&
               !isatty(fd)) {
        why = "not a regular file, a FIFO, /dev/null or a terminal";
    }
    if (why) {
        close(fd);
        return errf(err, errlen, -EINVAL, "The serial output %.256s cannot be used: %s", path, why);
    }
    return fd;
}

static void on_out_writable(void *opaque, uint32_t events);

/* Writes what the UART queued; watches the console fd only while it is full (not watched
 * at all otherwise: epoll reports a pipe whose reader left as EPOLLERR whatever it is asked). */
static void drain_out(struct console *c)
{
    struct serial *s = &c->vm->serial;
    int ret = serial_flush(s, FLUSH_BUDGET);
    bool want = ret == -EAGAIN;

    if (want && !c->out_watched) {
        if (loop_add(c->loop, s->out_fd, EPOLLOUT, on_out_writable, c) == 0)
            c->out_watched = true;
        else /* not pollable: what waits is lost, not waited for */
            serial_discard(s);
    } else if (!want && c->out_watched) {
        loop_remove(c->loop, s->out_fd);
        c->out_watched = false;
    }
    if (ret == 1) { /* more than one round's worth: come back after the other events */
        uint64_t one = 1;
        if (write(s->out_kick_fd, &one, sizeof(one)) < 0) {
            /* an eventfd far below its limit */
        }
    }
}

static void on_out_kick(void *opaque, uint32_t events)
{
    struct console *c = opaque;
    uint64_t v;
    (void)events;
    if (read(c->vm->serial.out_kick_fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
    drain_out(c);
}

static void on_out_writable(void *opaque, uint32_t events)
{
    (void)events;
    drain_out(opaque);
}

/* The end: what the guest wrote before it stopped still reaches a reader that keeps up, but
 * a stalled one is waited for FINAL_FLUSH_MS at most. */
static void final_flush(struct console *c)
{
    if (serial_drain(&c->vm->serial, FINAL_FLUSH_MS))
        serial_discard(&c->vm->serial);
}

static int term_raw(struct term *t, int fd)
{
    struct termios raw;

    t->raw = false;
    if (!isatty(fd) || tcgetattr(fd, &t->saved) < 0)
        return -ENOTTY;
    raw = t->saved;
    /* Keys go to the guest (Ctrl-C included); output post-processing stays on. */
    raw.c_iflag &= (tcflag_t) ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_lflag &= (tcflag_t) ~(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(fd, TCSANOW, &raw) < 0)
        return -errno;
    t->raw = true;
    return 0;
}

static void on_stdin(void *opaque, uint32_t events);

static void arm(struct console *c, bool on)
{
    /* off: not watched at all (a hung-up FIFO reports EPOLLHUP whatever it is asked for) */
    if (on && !c->armed && loop_add(c->loop, STDIN_FILENO, EPOLLIN, on_stdin, c) == 0) {
        c->armed = true;
    } else if (!on && c->armed) {
        loop_remove(c->loop, STDIN_FILENO);
        c->armed = false;
    }
}

static void on_stdin(void *opaque, uint32_t events)
{
    struct console *c = opaque;
    uint8_t in[SERIAL_FIFO], out[SERIAL_FIFO];
    size_t space = serial_rx_space(&c->vm->serial), n = 0;
    (void)events;

    if (space == 0) { /* the guest is not reading: wait for it before reading more */
        arm(c, false);
        return;
    }
    ssize_t got = read(STDIN_FILENO, in, space);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (got <= 0) { /* EOF or error: no more input */
        loop_remove(c->loop, STDIN_FILENO);
        c->watched = c->armed = false;
        return;
    }
    for (ssize_t i = 0; i < got; i++) {
        if (c->tty && c->escape) {
            c->escape = false;
            if (in[i] == 'x' || in[i] == 'X') {
                log_info("Ctrl-A x: stopping the VM");
                vm_request_stop(c->vm, VM_STOP_USER);
                return;
            }
            if (in[i] != ESCAPE_KEY)
                out[n++] = ESCAPE_KEY;
        } else if (c->tty && in[i] == ESCAPE_KEY) {
            c->escape = true;
            continue;
        }
        if (n < sizeof(out))
            out[n++] = in[i];
    }
    serial_input(&c->vm->serial, out, n);
}

static void on_rx_ready(void *opaque, uint32_t events)
{
    struct console *c = opaque;
    uint64_t v;
    (void)events;
    if (read(c->vm->serial_rx_fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
    if (c->watched)
        arm(c, true);
}

int console_start(struct console *c, struct vm *vm, struct loop *loop)
{
    struct stat st;

    c->vm = vm;
    c->loop = loop;
    int ret = serial_set_rate(&vm->serial, &vm->cfg->serial_rate);
    if (!ret)
        ret = loop_add(loop, vm->serial.out_kick_fd, EPOLLIN, on_out_kick, c);
    if (ret)
        return ret;
    c->kick_watched = true;
    ret = loop_add(loop, vm->serial_rx_fd, EPOLLIN, on_rx_ready, c);
    if (ret)
        return ret;
    c->rx_watched = true;
    /* Input comes from stdin when it is a terminal or a FIFO (as Firecracker). */
    c->tty = isatty(STDIN_FILENO);
    if (fstat(STDIN_FILENO, &st) == 0 && (c->tty || S_ISFIFO(st.st_mode)) &&
        loop_add(loop, STDIN_FILENO, EPOLLIN, on_stdin, c) == 0)
        c->watched = c->armed = true;
    if (c->tty)
        term_raw(&c->term, STDIN_FILENO);
    return 0;
}

void console_stop(struct console *c)
{
    if (c->armed)
        loop_remove(c->loop, STDIN_FILENO);
    if (c->rx_watched)
        loop_remove(c->loop, c->vm->serial_rx_fd);
    if (c->kick_watched) {
        final_flush(c);
        loop_remove(c->loop, c->vm->serial.out_kick_fd);
    }
    if (c->out_watched)
        loop_remove(c->loop, c->vm->serial.out_fd);
    c->watched = c->armed = c->rx_watched = c->kick_watched = c->out_watched = false;
    console_restore_terminal(c);
    c->term.raw = false;
}

void console_restore_terminal(const struct console *c)
{
    if (c->term.raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &c->term.saved);
}
