/* netrr: request/response latency over TCP and UDP (netperf's TCP_RR and UDP_RR, small), for
 * tests/bench/net-vs-qemu. Static: the same binary is the guest's server and the host's client.
 *
 *   netrr server PORT
 *       echoes on TCP PORT (one connection at a time, each message back as it comes) and on
 *       UDP PORT (each datagram back to its sender), forever; prints "netrr: ready".
 *   netrr client tcp|udp ADDR PORT COUNT SIZE
 *       COUNT round trips of SIZE bytes (1..1400), one in flight (TCP_NODELAY), after 10 not
 *       timed; prints "netrr tcp n=COUNT p50_us=.. p90_us=.. p99_us=.. mean_us=..". A UDP
 *       answer that does not come within 1 s is counted lost (lost=N) and not timed.
 * Exit 0, or 1 with a one-line reason. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 1400
#define WARMUP   10

static int die(const char *what)
{
    fprintf(stderr, "netrr: %s: %s\n", what, strerror(errno));
    return 1;
}

static int bound(int type, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, s = socket(AF_INET, type, 0);

    if (s < 0)
        return -1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) || (type == SOCK_STREAM && listen(s, 4))) {
        close(s);
        return -1;
    }
    return s;
}

static int server(int port)
{
    int tcp = bound(SOCK_STREAM, port), udp = bound(SOCK_DGRAM, port), conn = -1, one = 1;
    char buf[65536];

    if (tcp < 0 || udp < 0)
        return die("bind");
    printf("netrr: ready\n");
    fflush(stdout);
    for (;;) {
        struct pollfd p[2] = {{.fd = conn >= 0 ? conn : tcp, .events = POLLIN},
                              {.fd = udp, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return die("poll");
        if (p[1].revents & POLLIN) {
            struct sockaddr_in from;
            socklen_t len = sizeof(from);
            ssize_t n = recvfrom(udp, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
            if (n > 0)
                sendto(udp, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (conn < 0) {
            conn = accept(tcp, NULL, NULL);
            if (conn >= 0)
                setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            continue;
        }
        ssize_t n = read(conn, buf, sizeof(buf));
        if (n <= 0 || write(conn, buf, (size_t)n) != n) {
            close(conn);
            conn = -1;
        }
    }
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* One round trip: size bytes out, size bytes back (TCP: as many reads as it takes; UDP: one
 * datagram within 1 s). Returns 0, 1 if a UDP answer was lost, -1 on an error. */
static int round_trip(int s, bool tcp, char *buf, size_t size)
{
    if (send(s, buf, size, 0) != (ssize_t)size)
        return -1;
    for (size_t got = 0; got < size;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        int r = poll(&p, 1, tcp ? 10000 : 1000);
        if (r == 0)
            return tcp ? -1 : 1;
        ssize_t n = r < 0 ? -1 : recv(s, buf + got, size - got, 0);
        if (n <= 0)
            return -1;
        got += tcp ? (size_t)n : size;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The round trips on the connected socket s; prints the line. Returns the exit code. */
static int time_round_trips(int s, bool tcp, long count, long size, uint64_t *t)
{
    char buf[MAX_SIZE];
    uint64_t sum = 0;
    long n = 0, lost = 0;

    memset(buf, 'r', sizeof(buf));
    for (long i = 0; i < count + WARMUP; i++) {
        uint64_t t0 = now_ns();
        int r = round_trip(s, tcp, buf, (size_t)size);
        if (r < 0)
            return die(tcp ? "tcp round trip" : "udp round trip");
        if (r > 0)
            lost++;
        else if (i >= WARMUP)
            sum += t[n++] = now_ns() - t0;
    }
    if (!n) {
        fprintf(stderr, "netrr: every answer was lost\n");
        return 1;
    }
    qsort(t, (size_t)n, sizeof(*t), cmp_u64);
    printf("netrr %s n=%ld lost=%ld p50_us=%.1f p90_us=%.1f p99_us=%.1f mean_us=%.1f\n",
           tcp ? "tcp" : "udp", n, lost, t[n / 2] / 1e3, t[n * 9 / 10] / 1e3, t[n * 99 / 100] / 1e3,
           (double)sum / (double)n / 1e3);
    return 0;
}

static int client(bool tcp, const char *addr, int port, long count, long size)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;

    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
        fprintf(stderr, "netrr: %s is not an IPv4 address\n", addr);
        return 1;
    }
    int s = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a))) {
        int ret = die("connect");
        if (s >= 0)
            close(s);
        return ret;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t *t = calloc((size_t)count, sizeof(*t));
    int ret = t ? time_round_trips(s, tcp, count, size, t) : die("calloc");
    free(t);
    close(s);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "server"))
        return server(atoi(argv[2]));
    if (argc == 7 && !strcmp(argv[1], "client") &&
        (!strcmp(argv[2], "tcp") || !strcmp(argv[2], "udp"))) {
        long count = atol(argv[5]), size = atol(argv[6]);
        if (count < 1 || count > 10000000 || size < 1 || size > MAX_SIZE) {
            fprintf(stderr, "netrr: COUNT must be 1..10000000 and SIZE 1..%d\n", MAX_SIZE);
            return 1;
        }
        return client(!strcmp(argv[2], "tcp"), argv[3], atoi(argv[4]), count, size);
    }
    fprintf(stderr, "usage: netrr server PORT | netrr client tcp|udp ADDR PORT COUNT SIZE\n");
    return 1;
}
