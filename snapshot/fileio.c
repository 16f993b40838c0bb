/* Whole reads and writes at an offset, for the snapshot files (state, memory, layers, working
 * sets): a short transfer is continued, EINTR retried, end of file an error. */
#include <errno.h>
#include <unistd.h>

#include "snapshot.h"

int snap_pread_all(int fd, void *buf, size_t len, off_t off)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, off + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        got += (size_t)n;
    }
    return 0;
}

int snap_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    for (size_t put = 0; put < len;) {
        ssize_t n = pwrite(fd, (const uint8_t *)buf + put, len - put, off + (off_t)put);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        put += (size_t)n;
    }
    return 0;
}
