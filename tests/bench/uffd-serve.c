/* A plain on-demand page-fault handler for ember's Uffd backend, as Firecracker's example
 * on_demand handler works, for tests/bench/restore-lazy (the "Uffd on demand" figures):
 *
 *     uffd-serve SOCKET MEMFILE
 *
 * Binds SOCKET, prints "listening" on stdout, accepts one connection and reads the one
 * handshake message (the JSON array of regions, the userfaultfd as SCM_RIGHTS), checks that
 * the regions tile MEMFILE, then serves every missing-page fault by UFFDIO_COPY of that page
 * from MEMFILE, mapped MAP_PRIVATE (so a cold page cache is read from disk page by page, as
 * faults come). Nothing is prefetched: that is what "on demand" means. Ends when the VMM's
 * end of the socket closes or on SIGTERM, printing "served N" on stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE     4096u
#define REGS_MAX 32

struct region {
    uint64_t base, size, offset;
};

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static int die(const char *what)
{
    fprintf(stderr, "uffd-serve: %s\n", what);
    return 1;
}

/* The handshake: one message, at most 1 KiB of JSON (Firecracker's example reads that much),
 * with one descriptor. Returns the uffd, or -1. */
static int handshake(int conn, struct region *r, unsigned *n)
{
    char buf[1025], ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
    struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
    ssize_t len = recvmsg(conn, &m, MSG_CMSG_CLOEXEC);
    struct cmsghdr *c = len > 0 ? CMSG_FIRSTHDR(&m) : NULL;
    int uffd = -1;

    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(&uffd, CMSG_DATA(c), sizeof(int));
    if (uffd < 0)
        return -1;
    buf[len] = 0;
    json_t *arr = json_loads(buf, 0, NULL);
    size_t i;
    json_t *e;
    *n = 0;
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > REGS_MAX) {
        json_decref(arr);
        close(uffd);
        return -1;
    }
    json_array_foreach(arr, i, e)
    {
        json_t *b = json_object_get(e, "base_host_virt_addr"), *s = json_object_get(e, "size"),
               *o = json_object_get(e, "offset"), *p = json_object_get(e, "page_size");
        if (!json_is_integer(b) || !json_is_integer(s) || !json_is_integer(o) ||
            json_integer_value(p) != PAGE) {
            json_decref(arr);
            close(uffd);
            return -1;
        }
        r[*n].base = (uint64_t)json_integer_value(b);
        r[*n].size = (uint64_t)json_integer_value(s);
        r[*n].offset = (uint64_t)json_integer_value(o);
        (*n)++;
    }
    json_decref(arr);
    return uffd;
}

/* One page fault at addr: copy its page from the memory file's mapping. */
static int serve(int uffd, const struct region *r, unsigned n, const uint8_t *mem, uint64_t addr)
{
    addr &= ~(uint64_t)(PAGE - 1);
    for (unsigned i = 0; i < n; i++) {
        if (addr < r[i].base || addr - r[i].base >= r[i].size)
            continue;
        struct uffdio_copy cp = {
                .dst = addr,
                .src = (uint64_t)(uintptr_t)(mem + r[i].offset + (addr - r[i].base)),
                .len = PAGE};
        while (ioctl(uffd, UFFDIO_COPY, &cp) < 0) {
            if (errno == EEXIST) /* another fault on the same page was served first */
                return 0;
            if (errno != EAGAIN) /* EAGAIN: the mapping changed meanwhile; copy again */
                return -1;
            cp.copy = 0;
        }
        return 1;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct region r[REGS_MAX];
    unsigned n = 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;

    if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path))
        return die("usage: uffd-serve SOCKET MEMFILE");
    signal(SIGTERM, on_term);
    int mfd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (mfd < 0 || fstat(mfd, &st) || st.st_size <= 0)
        return die("cannot open the memory file");
    const uint8_t *mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, mfd, 0);
    if (mem == MAP_FAILED)
        return die("cannot map the memory file");
    strcpy(sa.sun_path, argv[1]);
    int srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv < 0 || bind(srv, (struct sockaddr *)&sa, sizeof(sa)) || listen(srv, 1))
        return die("cannot listen on the socket");
    printf("listening\n");
    fflush(stdout);
    int conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);
    int uffd = conn < 0 ? -1 : handshake(conn, r, &n);
    if (uffd < 0)
        return die("no valid handshake");
    uint64_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        if (r[i].offset != total || r[i].size % PAGE)
            return die("the regions do not tile the memory file in order");
        total += r[i].size;
    }
    if (total != (uint64_t)st.st_size)
        return die("the regions' sizes do not add up to the memory file");

    unsigned long long served = 0;
    struct pollfd p[2] = {{.fd = uffd, .events = POLLIN}, {.fd = conn, .events = POLLIN}};
    while (!stop) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) /* the VMM is gone */
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        struct uffd_msg msg[16];
        ssize_t len = read(uffd, msg, sizeof(msg));
        if (len < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (len <= 0)
            break;
        for (size_t i = 0; i < (size_t)len / sizeof(msg[0]); i++) {
            if (msg[i].event != UFFD_EVENT_PAGEFAULT)
                continue; /* REMOVE and others: nothing to do for a read-only source */
            int s = serve(uffd, r, n, mem, msg[i].arg.pagefault.address);
            if (s < 0) {
                fprintf(stderr, "uffd-serve: cannot serve 0x%llx: %s\n",
                        (unsigned long long)msg[i].arg.pagefault.address, strerror(errno));
                return 1;
            }
            served += (unsigned)s;
        }
    }
    fprintf(stderr, "served %llu\n", served);
    return 0;
}
