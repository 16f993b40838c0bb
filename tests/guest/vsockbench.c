/* Guest-side vsock benchmark server (static; `make bench-vsock`, tests/bench/vsock-vs-qemu).
 *
 *   vsockbench PORT
 *
 * Listens on vsock PORT (any CID), prints "vsockbench: ready" on stdout, and serves one
 * command line per connection, each connection in a process of its own:
 *
 *   sink      reads until the peer's EOF, then answers "done <bytes>\n"
 *   source S  writes a pattern for S seconds (1 to 600), then closes
 *   echo      writes back what it reads until EOF
 *   irqs      answers "<n>\n": the virtio interrupts so far (/proc/interrupts, every CPU)
 *   quit      answers "bye\n" and ends the listener (the caller reboots the guest)
 *
 * A line that is none of these is answered "error\n". Failures: one "vsockbench: ..." line,
 * exit 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define LINE_MAX_LEN 64
#define CHUNK        65536

static char buf[CHUNK];

static void die(const char *what)
{
    fprintf(stderr, "vsockbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The command line, a byte at a time so nothing after it is taken. Returns its length, -1. */
static int read_line(int fd, char *line)
{
    int n = 0;
    while (n < LINE_MAX_LEN - 1) {
        ssize_t r = read(fd, line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (line[n] == '\n') {
            line[n] = 0;
            return n;
        }
        n++;
    }
    return -1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long virtio_irqs(void)
{
    FILE *f = fopen("/proc/interrupts", "r");
    char l[1024];
    unsigned long long sum = 0;
    if (!f)
        return 0;
    while (fgets(l, sizeof(l), f)) {
        if (!strstr(l, "virtio"))
            continue;
        char *p = strchr(l, ':');
        if (!p)
            continue;
        for (p++;;) { /* the per-CPU counts, up to the first word that is not a number */
            char *end;
            unsigned long long v = strtoull(p, &end, 10);
            if (end == p)
                break;
            sum += v;
            p = end;
        }
    }
    fclose(f);
    return sum;
}

static void serve(int fd)
{
    char line[LINE_MAX_LEN], out[64];
    if (read_line(fd, line) < 0)
        exit(1);
    if (!strcmp(line, "sink")) {
        unsigned long long total = 0;
        for (;;) {
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            total += (unsigned long long)r;
        }
        int n = snprintf(out, sizeof(out), "done %llu\n", total);
        write_all(fd, out, (size_t)n);
    } else if (!strncmp(line, "source ", 7)) {
        int secs = atoi(line + 7);
        if (secs < 1 || secs > 600) {
            write_all(fd, "error\n", 6);
            exit(1);
        }
        memset(buf, 'v', sizeof(buf));
        double end = now() + secs;
        while (now() < end)
            if (write_all(fd, buf, sizeof(buf)) < 0)
                break;
    } else if (!strcmp(line, "echo")) {
        for (;;) {
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0 || write_all(fd, buf, (size_t)r) < 0)
                break;
        }
    } else if (!strcmp(line, "quit")) {
        write_all(fd, "bye\n", 4);
        kill(getppid(), SIGTERM); /* the listener ends */
    } else if (!strcmp(line, "irqs")) {
        int n = snprintf(out, sizeof(out), "%llu\n", virtio_irqs());
        write_all(fd, out, (size_t)n);
    } else {
        write_all(fd, "error\n", 6);
    }
    close(fd);
    exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: vsockbench PORT\n");
        return 2;
    }
    struct sockaddr_vm sa = {
            .svm_family = AF_VSOCK, .svm_port = (unsigned)atoi(argv[1]), .svm_cid = VMADDR_CID_ANY};
    int l = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 64) < 0)
        die("listen");
    signal(SIGCHLD, SIG_IGN); /* no zombies */
    printf("vsockbench: ready\n");
    fflush(stdout);
    for (;;) {
        int fd = accept(l, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept");
        }
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            close(l);
            serve(fd);
        }
        close(fd);
    }
}
