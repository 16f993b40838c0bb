/* Output descriptors that never block: the guest console and the log may go to a pipe, FIFO
 * or terminal whose reader stalls, and a VMM thread blocked in write() could then neither
 * pause nor stop. A regular file or /dev/null is used as it is (a write there does not wait
 * for a reader). Anything else is reopened through /proc/self/fd with O_NONBLOCK: a private
 * description of the same pipe or terminal, so the flags of the one this process inherited
 * (which the parent shell may share) stay as they were. Where that cannot be opened (no /proc
 * in a jail, a socket, a FIFO whose reader left) the inherited description itself is made
 * non-blocking, and its flags are put back when the process exits. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "vmm.h"

#define OUTFD_MAX 4 /* stdout and stderr, with room */

static struct {
    int from, fd;    /* fd writes where from does, without blocking */
    int saved_flags; /* >= 0: from itself was made non-blocking; its old flags */
} map[OUTFD_MAX];
static unsigned nmap;
static bool restore_registered;

static void restore(void)
{
    for (unsigned i = 0; i < nmap; i++)
        if (map[i].saved_flags >= 0)
            fcntl(map[i].from, F_SETFL, map[i].saved_flags);
}

static bool blocks(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return false; /* closed: writes fail at once */
    return !S_ISREG(st.st_mode) && !(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
}

int outfd_nonblocking(int fd)
{
    char path[32];

    for (unsigned i = 0; i < nmap; i++)
        if (map[i].from == fd)
            return map[i].fd;
    if (fd < 0 || !blocks(fd) || nmap == OUTFD_MAX)
        return fd;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY)
        return fd;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int nfd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    map[nmap].from = fd;
    map[nmap].saved_flags = -1;
    if (nfd >= 0) {
        map[nmap++].fd = nfd;
        return nfd;
    }
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0) {
        map[nmap].saved_flags = flags;
        if (!restore_registered)
            restore_registered = atexit(restore) == 0;
    }
    map[nmap++].fd = fd;
    return fd;
}
