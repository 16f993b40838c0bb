/* Raw terminal mode for the serial console, restored on every way out of the event loop. */
#include <errno.h>
#include <unistd.h>

#include "vmm.h"

int term_raw(struct term *t, int fd)
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

void term_restore(struct term *t, int fd)
{
    if (t->raw)
        tcsetattr(fd, TCSANOW, &t->saved);
    t->raw = false;
}
