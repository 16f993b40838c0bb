/* Guest-side block benchmark (static, no libc beyond glibc-static): O_DIRECT I/O on a block
 * device for a fixed time per case, printed as one line per case.
 *
 *   blkbench DEVICE SECONDS JOBS
 *
 * Cases: sequential 1 MiB read and write (one stream), random 4 KiB read and write (JOBS
 * processes, each with one request in flight, so the device sees a queue depth of JOBS).
 * Output: "blkbench: <case> <value> <unit>" with MB/s (10^6 bytes) or IOPS. */
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

/* One worker: I/O of bs bytes for secs seconds. Returns the number of requests done. */
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
        ssize_t got =
                write ? pwrite(fd, buf, bs, (off_t)(b * bs)) : pread(fd, buf, bs, (off_t)(b * bs));
        if (got != (ssize_t)bs)
            return -1;
        n++;
    }
    close(fd);
    return n;
}

static int run_case(const char *name, const char *dev, uint64_t size, size_t bs, int write,
                    int random, double secs, int jobs)
{
    int pipes[2];
    if (pipe(pipes) < 0)
        return -1;
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
        printf("blkbench: %s %.1f MB/s\n", name, (double)total * (double)bs / dt / 1e6);
    else
        printf("blkbench: %s %.0f IOPS\n", name, (double)total / dt);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: blkbench DEVICE SECONDS JOBS\n");
        return 2;
    }
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
    int bad = 0;
    bad |= run_case("seq-read-1M", dev, size, 1 << 20, 0, 0, secs, 1);
    bad |= run_case("seq-write-1M", dev, size, 1 << 20, 1, 0, secs, 1);
    bad |= run_case("rand-read-4K", dev, size, 4096, 0, 1, secs, jobs);
    bad |= run_case("rand-write-4K", dev, size, 4096, 1, 1, secs, jobs);
    return bad ? 1 : 0;
}
