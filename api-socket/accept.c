/* The API socket's acceptor: a small thread that accepts connections and hands them to
 * libmicrohttpd, so the connection limit is ours. At its limit libmicrohttpd would stop
 * accepting and leave new clients hanging in the listen backlog. Like Firecracker, ember answers
 * an excess connection at once with 503 {"error": "Too many open connections"}, whatever the
 * client does, and ends it. Only with --http-api-idle-give-way (ember's own) does a connection
 * idle between two requests give way to the new one first (api_conn_evict_idle). */
#define _GNU_SOURCE /* accept4, pthread_setname_np */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#include "../seccomp/seccomp.h"
#include "api.h"

/* Firecracker's reply, plus the swagger Error's key, so either kind of client reads it. */
#define BUSY_BODY                                                                    \
    "{\"error\": \"Too many open connections\", \"fault_message\": \"Too many open " \
    "connections\"}"
#define BUSY_REPLY                                                    \
    "HTTP/1.1 503 Service Unavailable\r\nServer: Firecracker API\r\n" \
    "Connection: close\r\nContent-Type: application/json\r\n"         \
    "Content-Length: 84\r\n\r\n" BUSY_BODY

_Static_assert(sizeof(BUSY_BODY) - 1 == 84, "Content-Length of the 503 reply");

#define LINGER_MAX 16 /* refused connections kept until their client hangs up */

/* Refused connections: answered and shut for writing, then kept open (their input drained)
 * until the client closes. Closing at once would reset the connection if the client's
 * request were still unread, and the client might never see the 503. */
struct lingering {
    int fd[LINGER_MAX];
    unsigned n;
};

static void linger_drop(struct lingering *l, unsigned i)
{
    close(l->fd[i]);
    memmove(&l->fd[i], &l->fd[i + 1], (l->n - i - 1) * sizeof(l->fd[0]));
    l->n--;
}

static void refuse(struct lingering *l, int fd)
{
    /* a fresh socket's send buffer takes the whole reply */
    ssize_t n = send(fd, BUSY_REPLY, sizeof(BUSY_REPLY) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    shutdown(fd, SHUT_WR);
    if (l->n == LINGER_MAX) /* a flood: the oldest goes */
        linger_drop(l, 0);
    l->fd[l->n++] = fd;
}

/* Input on a refused connection: one read per wake-up (a client that keeps writing must not
 * keep the acceptor from accepting); gone once the client closed. */
static void linger_poll(struct lingering *l, unsigned i)
{
    char sink[4096];
    ssize_t n = recv(l->fd[i], sink, sizeof(sink), MSG_DONTWAIT);

    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        linger_drop(l, i);
}

/* Waits up to 100 ms for the stop request. Returns true if it came. */
static bool backoff(const struct api_server *s)
{
    struct pollfd stop = {.fd = s->stop_fd, .events = POLLIN};
    return poll(&stop, 1, 100) > 0;
}

static void *acceptor(void *arg)
{
    struct api_server *s = arg;
    struct lingering l = {.n = 0};
    struct pollfd p[2 + LINGER_MAX];

    pthread_setname_np(pthread_self(), "fc_api_accept");
    sc_enter(SC_ROLE_ACCEPT); /* before the first accept */
    for (;;) {
        p[0] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        p[1] = (struct pollfd){.fd = s->stop_fd, .events = POLLIN};
        for (unsigned i = 0; i < l.n; i++)
            p[2 + i] = (struct pollfd){.fd = l.fd[i], .events = POLLIN};
        unsigned nl = l.n;
        if (poll(p, 2 + nl, -1) < 0) {
            if (errno != EINTR && backoff(s)) /* ENOMEM: try again shortly */
                break;
            continue;
        }
        if (p[1].revents)
            break;
        for (unsigned i = nl; i-- > 0;) /* backwards: dropping shifts the later ones */
            if (p[2 + i].revents)
                linger_poll(&l, i);
        if (!(p[0].revents & POLLIN))
            continue;
        struct sockaddr_un addr;
        socklen_t len = sizeof(addr);
        int fd =
                accept4(s->listen_fd, (struct sockaddr *)&addr, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: the client waits in the backlog; look again shortly
                 * instead of spinning on a listen socket that stays readable */
                if (backoff(s))
                    break;
            }
            continue;
        }
        /* counted here, uncounted when libmicrohttpd reports it closed (http.c) */
        if (atomic_fetch_add(&s->conns, 1) >= (s->conn_limit ? s->conn_limit : API_CONN_LIMIT) &&
            !(s->idle_give_way && api_conn_evict_idle(s))) {
            atomic_fetch_sub(&s->conns, 1);
            refuse(&l, fd);
            continue;
        }
        /* libmicrohttpd closes fd itself when it cannot take it */
        if (MHD_add_connection(s->daemon, fd, (const struct sockaddr *)&addr, len) != MHD_YES)
            atomic_fetch_sub(&s->conns, 1);
    }
    while (l.n)
        linger_drop(&l, 0);
    return NULL;
}

int api_acceptor_start(struct api_server *s, char *err, size_t errlen)
{
    sigset_t all, old;

    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_fd < 0)
        return errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    sigfillset(&all); /* signals are the VMM thread's business, but for its own faults */
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGSYS); /* a seccomp trap: the handler reports it (blocked, it kills) */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int ret = pthread_create(&s->acceptor, NULL, acceptor, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret)
        return errf(err, errlen, -ret, "cannot start the API acceptor: %s", strerror(ret));
    s->acceptor_up = true;
    return 0;
}

void api_acceptor_stop(struct api_server *s)
{
    uint64_t one = 1;

    if (s->acceptor_up) {
        ssize_t n = write(s->stop_fd, &one, sizeof(one)); /* a fresh eventfd takes it */
        (void)n;
        pthread_join(s->acceptor, NULL);
        s->acceptor_up = false;
    }
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    s->stop_fd = -1;
}
