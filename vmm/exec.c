/* `ember exec --vsock UDS [--port N] [--timeout S] -- CMD [ARGS...]`: runs a command in the
 * guest through its agent (rootfs-tools/agent/) over the VM's hybrid vsock: connects to UDS,
 * asks for the agent's port with "CONNECT N\n", sends the request, copies the command's stdout
 * and stderr to ours and exits with its code, as docker exec does. Its own failures are one
 * line on stderr and exit 125 (no answer within the timeout: 124, as timeout(1)). */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../rootfs-tools/agent/proto.h"
#include "app.h"

#define EXIT_EXEC     125
#define EXIT_TIMEDOUT 124

struct conn {
    int fd;
    uint64_t deadline_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Waits for fd to be ready for events. Returns 0, or -ETIMEDOUT past the deadline. */
static int wait_fd(const struct conn *c, short events)
{
    for (;;) {
        uint64_t now = now_ns();
        if (now >= c->deadline_ns)
            return -ETIMEDOUT;
        struct pollfd p = {c->fd, events, 0};
        int ms = (int)((c->deadline_ns - now) / 1000000ULL) + 1;
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

/* Reads exactly len bytes. Returns 0, -EPIPE at EOF (or a reset), -ETIMEDOUT, or -errno. */
static int read_full(const struct conn *c, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        int ret = wait_fd(c, POLLIN);
        if (ret)
            return ret;
        ssize_t n = read(c->fd, p, len);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return -EPIPE;
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return -errno;
        if (n > 0)
            p += n, len -= (size_t)n;
    }
    return 0;
}

static int write_full(const struct conn *c, int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            int ret = wait_fd(c, POLLOUT);
            if (ret)
                return ret;
            continue;
        }
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            p += n, len -= (size_t)n;
    }
    return 0;
}

/* Output to our own stdout/stderr (blocking: a slow terminal slows the command, no loss). */
static int out_full(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n, len -= (size_t)n;
    }
    return 0;
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ember exec: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static int io_fail(int ret, unsigned timeout_s, const char *what)
{
    if (ret == -ETIMEDOUT)
        return fail(EXIT_TIMEDOUT, "no answer from the guest within %u s (%s)", timeout_s, what);
    if (ret == -EPIPE)
        return fail(EXIT_EXEC, "the connection closed %s", what);
    return fail(EXIT_EXEC, "%s: %s", what, strerror(-ret));
}

/* The hybrid vsock handshake: "CONNECT port\n", then "OK <host port>\n" or a closed stream. */
static int handshake(struct conn *c, const char *uds, unsigned port, unsigned timeout_s)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
    int ret = write_full(c, c->fd, line, (size_t)n);
    if (ret)
        return io_fail(ret, timeout_s, "sending CONNECT");
    for (size_t len = 0;; len++) {
        if (len == sizeof(line) - 1)
            return fail(EXIT_EXEC, "protocol error: an over-long answer from %s", uds);
        ret = read_full(c, line + len, 1);
        if (ret == -EPIPE)
            return fail(EXIT_EXEC,
                        "port %u refused: nothing listens on it in the guest (is the agent "
                        "running? ember.agent=%u on the kernel command line)",
                        port, port);
        if (ret)
            return io_fail(ret, timeout_s, "waiting for OK");
        if (line[len] == '\n') {
            line[len] = '\0';
            break;
        }
    }
    if (strncmp(line, "OK ", 3) != 0)
        return fail(EXIT_EXEC, "protocol error: %.40s answered CONNECT with '%.32s'", uds, line);
    return 0;
}

static int run(struct conn *c, const char *uds, unsigned port, unsigned timeout_s,
               char *const *argv, unsigned argc)
{
    static uint8_t buf[AGENT_REQ_MAX + 8];
    int ret = handshake(c, uds, port, timeout_s);
    if (ret)
        return ret;
    int len = agent_req_encode(argv, argc, buf, sizeof(buf));
    if (len < 0)
        return fail(EXIT_EXEC, "the command is too long (at most %d arguments, %d bytes)",
                    AGENT_ARGS_MAX, AGENT_REQ_MAX);
    if ((ret = write_full(c, c->fd, buf, (size_t)len)))
        return io_fail(ret, timeout_s, "sending the command");
    for (;;) {
        uint8_t hdr[AGENT_FRAME_HDR], type;
        uint32_t n;
        if ((ret = read_full(c, hdr, sizeof(hdr))))
            return io_fail(ret, timeout_s, "before the command's exit code");
        if (agent_frame_check(hdr, &type, &n))
            return fail(EXIT_EXEC, "protocol error: a bad frame from the agent (type %u, %u bytes)",
                        hdr[0], agent_le32(hdr + 1));
        if ((ret = read_full(c, buf, n)))
            return io_fail(ret, timeout_s, "inside a frame");
        if (type == AGENT_EXIT) {
            uint32_t code = agent_le32(buf);
            return code > 255 ? fail(EXIT_EXEC, "protocol error: exit code %u", code) : (int)code;
        }
        out_full(type == AGENT_STDOUT ? 1 : 2, buf, n);
    }
}

int cmd_exec(int argc, char **argv)
{
    static const struct option opts[] = {
            {"vsock", required_argument, NULL, 'v'},
            {"port", required_argument, NULL, 'p'},
            {"timeout", required_argument, NULL, 't'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    const char *uds = NULL;
    unsigned long port = AGENT_PORT_DEFAULT, timeout_s = 60;
    char *end;
    int o;

    optind = 1;
    while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (o) {
        case 'v':
            uds = optarg;
            break;
        case 'p':
            port = strtoul(optarg, &end, 10);
            if (!optarg[0] || *end || port > UINT32_MAX)
                return fail(EXIT_EXEC, "--port '%.32s' is not a port number", optarg);
            break;
        case 't':
            timeout_s = strtoul(optarg, &end, 10);
            if (!optarg[0] || *end || timeout_s < 1 || timeout_s > 86400)
                return fail(EXIT_EXEC, "--timeout '%.32s' is not 1 to 86400 seconds", optarg);
            break;
        case 'h':
            printf("usage: ember exec --vsock UDS [--port N] [--timeout S] -- CMD [ARGS...]\n"
                   "  runs CMD in the guest through its agent (ember.agent=N on the kernel\n"
                   "  command line; default port %d), prints its stdout and stderr and exits\n"
                   "  with its code; 125: ember exec failed, 124: no answer within S seconds\n"
                   "  (default 60)\n",
                   AGENT_PORT_DEFAULT);
            return 0;
        default:
            return fail(EXIT_EXEC, "bad option (see ember exec --help)");
        }
    }
    if (!uds)
        return fail(EXIT_EXEC, "--vsock UDS is required (the vsock's uds_path)");
    if (optind >= argc)
        return fail(EXIT_EXEC, "no command given (ember exec --vsock UDS -- CMD [ARGS...])");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(uds) >= sizeof(sa.sun_path))
        return fail(EXIT_EXEC, "%.40s...: a Unix socket path is at most %zu bytes", uds,
                    sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, uds, strlen(uds));
    struct conn c = {.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0),
                     .deadline_ns = now_ns() + timeout_s * 1000000000ULL};
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        return fail(EXIT_EXEC, "cannot connect to %s: %s%s", uds, strerror(e),
                    e == ENOENT || e == ECONNREFUSED ? " (is the VM running with this vsock?)"
                                                     : "");
    }
    int code = run(&c, uds, (unsigned)port, (unsigned)timeout_s, argv + optind,
                   (unsigned)(argc - optind));
    close(c.fd);
    return code;
}
