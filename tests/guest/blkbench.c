/* Guest-side block benchmark (static, no libc beyond glibc-static): O_DIRECT I/O on a block
 * device for a fixed time per case, printed as one line per case.
 *
 *   blkbench DEVICE SECONDS JOBS [CASE,CASE...]
 *
 * Cases: sequential 1 MiB read and write (one stream), random 4 KiB read and write (JOBS
 * processes, each with one request in flight, so the device sees a queue depth of JOBS), and
 * random 4 KiB reads at queue depth 1 timed one by one (latency percentiles).
 * Output: "blkbench: begin <case>" when a case starts (a host-side profiler attaches then),
 * then "blkbench: <case> <value> <unit> <n> reqs" with MB/s (10^6 bytes) or IOPS; the latency
 * case prints its p50 and, as case "<case>-p99", its p99 in microseconds. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Latencies of the QD1 case, in microseconds (a sample of the first LAT_MAX requests). */
#define LAT_MAX (1 << 20)
static float *lat;
static long nlat;

/* One worker: I/O of bs bytes for secs seconds (each request timed into lat if set).
 * Returns the number of requests done. */
static long worker(const char *dev, uint64_t size, size_t bs, int write, int random, double secs,
                   unsigned seed)
{
    int fd = open(dev, (write ? O_WRONLY : O_RDONLY) | O_DIRECT);
    void *buf = mmap(NULL, bs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fd < 0 || buf == MAP_FAILED)
        return -1;
    memset(buf, 0x5a, bs);
    uint64_t blocks = size / bs, s = 0x9e3779b97f4a7c15ULL ^ seed, next = 0;
    long n = 0;
    double end = now() + secs;
    while (now() < end) {
        uint64_t b = random ? rng(&s) % blocks : next++ % blocks;
        double t0 = lat ? now() : 0;
        ssize_t got =
                write ? pwrite(fd, buf, bs, (off_t)(b * bs)) : pread(fd, buf, bs, (off_t)(b * bs));
        if (got != (ssize_t)bs)
            return -1;
        if (lat && nlat < LAT_MAX)
            lat[nlat++] = (float)((now() - t0) * 1e6);
        n++;
    }
    close(fd);
    return n;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The latency case: one request at a time in this process, each timed. */
static int run_latency(const char *name, const char *dev, uint64_t size, double secs)
{
    printf("blkbench: begin %s\n", name);
    fflush(stdout);
    lat = malloc(LAT_MAX * sizeof(*lat));
    nlat = 0;
    long n = lat ? worker(dev, size, 4096, 0, 1, secs, 7) : -1;
    if (n <= 0 || !nlat) {
        printf("blkbench: %s failed\n", name);
        return -1;
    }
    qsort(lat, (size_t)nlat, sizeof(*lat), cmp_float);
    printf("blkbench: %s %.1f us-p50 %ld reqs\n", name, lat[nlat / 2], n);
    printf("blkbench: %s-p99 %.1f us %ld reqs\n", name, lat[nlat * 99 / 100], n);
    fflush(stdout);
    free(lat);
    lat = NULL;
    return 0;
}

static int run_case(const char *name, const char *dev, uint64_t size, size_t bs, int write,
                    int random, double secs, int jobs)
{
    int pipes[2];
    if (pipe(pipes) < 0)
        return -1;
    printf("blkbench: begin %s\n", name);
    fflush(stdout);
    double t0 = now();
    for (int j = 0; j < jobs; j++) {
        if (fork() == 0) {
            long n = worker(dev, size, bs, write, random, secs, (unsigned)j + 1);
            _exit(dprintf(pipes[1], "%ld\n", n) > 0 ? 0 : 1);
        }
    }
    close(pipes[1]);
    long total = 0, bad = 0;
    FILE *f = fdopen(pipes[0], "r");
    long n;
    while (f && fscanf(f, "%ld", &n) == 1) {
        if (n < 0)
            bad++;
        else
            total += n;
    }
    while (wait(NULL) > 0)
        ;
    double dt = now() - t0;
    if (f)
        fclose(f);
    if (bad) {
        printf("blkbench: %s failed\n", name);
        return -1;
    }
    if (bs >= (1 << 20))
        printf("blkbench: %s %.1f MB/s %ld reqs\n", name, (double)total * (double)bs / dt / 1e6,
               total);
    else
        printf("blkbench: %s %.0f IOPS %ld reqs\n", name, (double)total / dt, total);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: blkbench DEVICE SECONDS JOBS [CASE,CASE...]\n");
        return 2;
    }
    const char *only = argc == 5 ? argv[4] : NULL;
    const char *dev = argv[1];
    double secs = atof(argv[2]);
    int jobs = atoi(argv[3]);
    uint64_t size = 0;
    int fd = open(dev, O_RDONLY);
    if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0 || size < (8 << 20) || jobs < 1) {
        fprintf(stderr, "blkbench: %s: %s\n", dev, strerror(errno));
        return 1;
    }
    close(fd);
    static const struct {
        const char *name;
        size_t bs;
        int write, random, qd1;
    } cases[] = {
            {"seq-read-1M", 1 << 20, 0, 0, 0},   {"seq-write-1M", 1 << 20, 1, 0, 0},
            {"rand-read-4K", 4096, 0, 1, 0},     {"rand-write-4K", 4096, 1, 1, 0},
            {"rand-read-4K-qd1", 4096, 0, 1, 1},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].name);
        const char *p = only ? strstr(only, cases[i].name) : NULL;
        if (only && !(p && (p == only || p[-1] == ',') && (p[n] == ',' || !p[n])))
            continue;
        if (cases[i].qd1)
            bad |= run_latency(cases[i].name, dev, size, secs);
        else
            bad |= run_case(cases[i].name, dev, size, cases[i].bs, cases[i].write, cases[i].random,
                            secs, cases[i].bs >= (1 << 20) ? 1 : jobs);
    }
    return bad ? 1 : 0;
}
