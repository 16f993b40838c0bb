/* Guest-side vsock peer for the integration tests (static, run through the agent):
 *
 *   vsock_peer listen PORT        accept one connection; copy it to stdout and stdin to it
 *   vsock_peer connect PORT       connect to the host (CID 2); the same copying
 *   vsock_peer echo PORT N        accept N connections at once, echo each until it closes
 *   vsock_peer hold PORT N        accept N connections and keep them open (prints "held K"
 *                                 after each 100 and at N), until killed
 *   vsock_peer connect-many PORT N  open N connections to the host, print "connected K
 *                                 refused R", keep them open for 5 s
 *
 * A stdin that ends shuts the connection's sending side (half-close); the program ends when
 * both directions have ended. Prints one "vsock_peer: ..." line on failure, exit 1. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int die(const char *what)
{
    fprintf(stderr, "vsock_peer: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int listener(unsigned port)
{
    struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
    int l = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 2048) < 0)
        die("listen");
    return l;
}

static int dial(unsigned port)
{
    struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = 2};
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* Copies fd → stdout and stdin → fd until both have ended. */
static void pump(int fd)
{
    static char buf[65536];
    struct pollfd p[2] = {{fd, POLLIN, 0}, {0, POLLIN, 0}};
    while (p[0].fd >= 0 || p[1].fd >= 0) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            die("poll");
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (i == 1)
                    shutdown(fd, SHUT_WR);
                p[i].fd = -1;
                continue;
            }
            write_all(i ? fd : 1, buf, (size_t)n);
        }
    }
}

static void more_files(void)
{
    struct rlimit rl = {8192, 8192};
    setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return fprintf(stderr, "usage: vsock_peer MODE PORT [N]\n"), 2;
    unsigned port = (unsigned)strtoul(argv[2], NULL, 10);
    unsigned n = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 1;
    const char *mode = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(mode, "listen") || !strcmp(mode, "connect")) {
        int fd = mode[0] == 'l' ? accept(listener(port), NULL, NULL) : dial(port);
        if (fd < 0)
            die(mode);
        pump(fd);
        return 0;
    }
    if (!strcmp(mode, "echo")) {
        int l = listener(port);
        for (unsigned i = 0; i < n; i++) {
            int c = accept(l, NULL, NULL);
            if (c < 0)
                die("accept");
            if (fork() == 0) {
                char buf[65536];
                ssize_t r;
                while ((r = read(c, buf, sizeof(buf))) > 0)
                    write_all(c, buf, (size_t)r);
                _exit(0);
            }
            close(c);
        }
        while (wait(NULL) > 0) {
        }
        return 0;
    }
    more_files();
    if (!strcmp(mode, "hold")) {
        int l = listener(port);
        for (unsigned i = 1; i <= n; i++) {
            if (accept(l, NULL, NULL) < 0)
                die("accept");
            if (i % 100 == 0 || i == n)
                printf("held %u\n", i);
        }
        for (;;)
            pause();
    }
    if (!strcmp(mode, "connect-many")) {
        unsigned ok = 0, refused = 0;
        for (unsigned i = 0; i < n; i++)
            dial(port) >= 0 ? ok++ : refused++;
        printf("connected %u refused %u\n", ok, refused);
        sleep(5);
        return 0;
    }
    return fprintf(stderr, "vsock_peer: unknown mode %s\n", mode), 2;
}
