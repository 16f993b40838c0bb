/* ember-agent: the guest side of `ember exec` (README.md). Listens on a vsock port (argument,
 * default AGENT_PORT_DEFAULT) for the host; each connection carries one request: the agent
 * runs its argv (stdin /dev/null, PATH lookup) in a child of its own and streams stdout and
 * stderr back as frames, then the exit code. One process per connection, so commands run in
 * parallel and one that hangs blocks nobody else. Started by the guest init when the kernel
 * command line has ember.agent=PORT. Built static: the rootfs has no libc. */
#define _GNU_SOURCE /* accept4, pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "proto.h"

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static int send_frame(int fd, uint8_t type, const void *data, uint32_t len)
{
    uint8_t hdr[AGENT_FRAME_HDR];
    agent_frame_hdr(type, len, hdr);
    return write_all(fd, hdr, sizeof(hdr)) || write_all(fd, data, len) ? -1 : 0;
}

static void send_exit(int fd, uint32_t code)
{
    uint8_t b[4];
    agent_put32(b, code);
    send_frame(fd, AGENT_EXIT, b, sizeof(b));
}

/* The command's child: its output on the pipes, stdin /dev/null. */
static void run_child(const char *const *argv, int out, int err)
{
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, 0);
    dup2(out, 1);
    dup2(err, 2);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], (char *const *)argv);
    int e = errno;
    dprintf(2, "ember-agent: %s: %s\n", argv[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

/* One connection: the request, the command, its output and exit code. */
static void serve(int conn)
{
    static uint8_t body[AGENT_REQ_MAX], chunk[AGENT_CHUNK_MAX];
    const char *argv[AGENT_ARGS_MAX + 1];
    uint8_t lenb[4];
    int out[2], err[2];

    if (read_all(conn, lenb, 4) || agent_le32(lenb) > AGENT_REQ_MAX ||
        read_all(conn, body, agent_le32(lenb)) ||
        agent_req_parse(body, agent_le32(lenb), argv, AGENT_ARGS_MAX) < 0) {
        static const char msg[] = "ember-agent: a malformed request\n";
        send_frame(conn, AGENT_STDERR, msg, sizeof(msg) - 1);
        send_exit(conn, 125);
        return;
    }
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
        send_exit(conn, 125);
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        run_child(argv, out[1], err[1]);
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        send_exit(conn, 125);
        return;
    }
    struct pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    unsigned open_pipes = 2;
    while (open_pipes) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            ssize_t n = read(p[i].fd, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                open_pipes--;
                continue;
            }
            if (send_frame(conn, i ? AGENT_STDERR : AGENT_STDOUT, chunk, (uint32_t)n)) {
                kill(pid, SIGKILL); /* the host went away */
                open_pipes = 0;
                break;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    send_exit(conn,
              WIFEXITED(status) ? (uint32_t)WEXITSTATUS(status) : 128 + (uint32_t)WTERMSIG(status));
}

int main(int argc, char **argv)
{
    unsigned port = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : AGENT_PORT_DEFAULT;
    struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};

    signal(SIGCHLD, SIG_IGN); /* connection handlers are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    int l = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 64) < 0) {
        fprintf(stderr, "ember-agent: vsock port %u: %s\n", port, strerror(errno));
        return 1;
    }
    fprintf(stderr, "ember-agent: listening on vsock port %u\n", port);
    for (;;) {
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                usleep(10000); /* out of fds or memory: try again soon, not at once */
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(l);
            signal(SIGCHLD, SIG_DFL); /* the handler waits for its command */
            serve(c);
            _exit(0);
        }
        close(c);
    }
}
