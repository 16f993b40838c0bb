/* The serial console's input side: this process's stdin (a terminal, put in raw mode, or a
 * FIFO, as Firecracker) feeds the UART through the event loop. Ctrl-A x leaves, Ctrl-A Ctrl-A
 * sends one Ctrl-A (as QEMU). When the guest stops reading, stdin is left unwatched until the
 * UART's FIFO drains (its rx_ready eventfd). The terminal mode is restored on the way out. */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"
#include "vmm.h"

#define ESCAPE_KEY 0x01

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

static void arm(struct console *c, bool on)
{
    if (c->armed != on && loop_modify(c->loop, STDIN_FILENO, on ? EPOLLIN : 0) == 0)
        c->armed = on;
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
    int ret = loop_add(loop, vm->serial_rx_fd, EPOLLIN, on_rx_ready, c);
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
    if (c->watched)
        loop_remove(c->loop, STDIN_FILENO);
    if (c->rx_watched)
        loop_remove(c->loop, c->vm->serial_rx_fd);
    c->watched = c->armed = c->rx_watched = false;
    if (c->term.raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &c->term.saved);
    c->term.raw = false;
}
