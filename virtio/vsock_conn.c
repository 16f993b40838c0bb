/* virtio-vsock's connections (Firecracker's hybrid host side): a bounded table of stream
 * connections, each joined to a host Unix socket, hashed by (host port, guest port). Host
 * sockets sit in the device's own epoll set, armed one-shot for what the connection can use
 * now (EPOLLIN only while the guest has credit and nothing read is waiting, EPOLLOUT only while
 * bytes wait for the host), so a connection that cannot move never wakes the loop: no busy
 * polling, and back-pressure reaches the peer as a full socket or an exhausted credit.
 *
 * The hybrid protocol: a host client connects to uds_path and writes "CONNECT <port>\n"; the
 * guest is sent REQUEST from a host port (2^30 upwards) and, once it answers RESPONSE, the
 * client reads "OK <host port>\n" and the stream is joined. A guest listener that answers RST,
 * a line that is not CONNECT, an over-long line, or 2 s without a line or an answer: the
 * client is closed. Everything runs on the event loop under the transport's lock; the sockets
 * are non-blocking. */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vsock_dev.h"

#define LOG_NS     (10 * 1000000000ULL)
#define ACCEPT_MAX 64 /* host clients taken per wake-up */

static uint32_t hash_of(uint32_t local, uint32_t peer)
{
    return (local * 2654435761u ^ peer * 40503u) % VSOCK_HASH;
}

static int32_t idx(const struct vsock *v, const struct vconn *c)
{
    return (int32_t)(c - v->conns);
}

static void warn(struct vsock *v, const char *what, int err)
{
    uint64_t dropped;
    if (ratelog_allow(&v->log, clock_ns(), LOG_NS, &dropped))
        log_warn("vsock %s: %s: %s (%llu more not logged)", v->cfg.uds_path, what, strerror(err),
                 (unsigned long long)dropped);
}

struct vconn *vc_find(struct vsock *v, uint32_t local, uint32_t peer)
{
    for (int32_t i = v->hash[hash_of(local, peer)]; i >= 0; i = v->conns[i].hnext)
        if (v->conns[i].local_port == local && v->conns[i].peer_port == peer)
            return &v->conns[i];
    return NULL;
}

static void hash_insert(struct vsock *v, struct vconn *c)
{
    uint32_t h = hash_of(c->local_port, c->peer_port);
    c->hnext = v->hash[h];
    v->hash[h] = idx(v, c);
    c->in_table = true;
}

static void hash_remove(struct vsock *v, struct vconn *c)
{
    int32_t *p = &v->hash[hash_of(c->local_port, c->peer_port)];
    while (*p >= 0 && *p != idx(v, c))
        p = &v->conns[*p].hnext;
    if (*p >= 0)
        *p = c->hnext;
    c->in_table = false;
}

uint32_t vc_host_port(struct vsock *v)
{
    for (;;) {
        uint32_t p = v->st.next_port;
        v->st.next_port = p + 1 < VSOCK_HOST_PORT_END ? p + 1 : VSOCK_HOST_PORT_FIRST;
        bool used = false;
        /* At most VSOCK_CONNS_MAX ports are taken: a free one comes within as many tries. */
        for (unsigned i = 0; i < VSOCK_CONNS_MAX && !used; i++)
            used = v->conns[i].state != VC_FREE && v->conns[i].local_port == p;
        if (!used)
            return p;
    }
}

struct vconn *vc_new(struct vsock *v, int fd, enum vconn_state state, uint32_t local, uint32_t peer)
{
    struct vconn *c = NULL;
    for (unsigned i = 0; i < VSOCK_CONNS_MAX && !c; i++)
        if (v->conns[i].state == VC_FREE)
            c = &v->conns[i];
    if (!c) {
        close(fd);
        STAT_ADD(v->stats, vsock_conns_refused, 1);
        return NULL;
    }
    bool in_ready = c->in_ready; /* a killed connection's index may still be in the ring */
    uint8_t *buf = c->buf;
    *c = (struct vconn){.state = state,
                        .fd = fd,
                        .local_port = local,
                        .peer_port = peer,
                        .hnext = -1,
                        .in_ready = in_ready,
                        .buf = buf};
    /* One-shot from the start: epoll reports a hang-up even with no events asked for, and
     * level-triggered it would do so on every wake-up. */
    struct epoll_event ev = {.events = EPOLLONESHOT, .data.u64 = (uint64_t)idx(v, c) + 1};
    if (epoll_ctl(v->ep_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        warn(v, "epoll_ctl", errno);
        close(fd);
        c->state = VC_FREE;
        STAT_ADD(v->stats, vsock_conns_refused, 1);
        return NULL;
    }
    if (state != VC_LINE)
        hash_insert(v, c);
    v->nconns++;
    STAT_ADD(v->stats, vsock_conns_added, 1);
    return c;
}

void vc_rst(struct vsock *v, uint32_t local, uint32_t peer)
{
    if (v->rst_n == VSOCK_RST_MAX) /* dropped: the guest's own timeout ends its socket */
        return;
    unsigned i = (v->rst_head + v->rst_n++) % VSOCK_RST_MAX;
    v->rst[i].local = local;
    v->rst[i].peer = peer;
}

void vc_set_deadline(struct vsock *v, struct vconn *c, uint64_t ns)
{
    if (!c->deadline != !ns)
        v->ndeadlines += ns ? 1 : (unsigned)-1;
    c->deadline = ns;
}

static void release(struct vsock *v, struct vconn *c)
{
    epoll_ctl(v->ep_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->in_table)
        hash_remove(v, c);
    vc_set_deadline(v, c, 0);
    c->state = VC_FREE;
    c->buf_len = c->buf_head = 0;
    v->nconns--;
    if (v->spare_fd < 0) /* an fd came free: the spare first, then clients again */
        vc_spare(v);
}

bool vc_spare(struct vsock *v)
{
    if (v->spare_fd < 0)
        v->spare_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool on = v->spare_fd >= 0;
    if (on == !v->listen_off)
        return on;
    struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.u64 = 0};
    if (epoll_ctl(v->ep_fd, EPOLL_CTL_MOD, v->listen_fd, &ev) < 0)
        warn(v, "epoll_ctl", errno);
    v->listen_off = !on;
    return on;
}

/* The process has no fd for a client waiting in the backlog: the spare makes room to accept
 * it and close it at once, as refused (a client left in the backlog would wait for an answer
 * that never comes, and the listener would wake the loop on every wait). Returns true if a
 * client was refused, false when there is no spare either: the listener is not watched until
 * a connection ends and gives an fd back. */
static bool refuse_one(struct vsock *v)
{
    if (v->spare_fd < 0 && !vc_spare(v))
        return false;
    close(v->spare_fd);
    v->spare_fd = -1;
    int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        STAT_ADD(v->stats, vsock_conns_refused, 1);
    }
    if (!vc_spare(v))
        warn(v, "no fd for the spare: host clients wait until a connection ends", EMFILE);
    return fd >= 0;
}

void vc_kill(struct vsock *v, struct vconn *c, bool rst)
{
    /* A host client still at its line has told the guest nothing. */
    if (rst && c->state != VC_LINE)
        vc_rst(v, c->local_port, c->peer_port);
    STAT_ADD(v->stats, vsock_conns_killed, 1);
    release(v, c);
}

/* The end of a connection both sides shut down: an RST completes the guest's close. */
static void finish(struct vsock *v, struct vconn *c)
{
    vc_rst(v, c->local_port, c->peer_port);
    STAT_ADD(v->stats, vsock_conns_removed, 1);
    release(v, c);
}

void vc_kill_all(struct vsock *v)
{
    for (unsigned i = 0; i < VSOCK_CONNS_MAX; i++)
        if (v->conns[i].state != VC_FREE)
            vc_kill(v, &v->conns[i], false);
    for (unsigned i = 0; i < VSOCK_CONNS_MAX; i++)
        v->conns[i].in_ready = false;
    v->rst_n = v->rst_head = 0;
    v->ready_n = v->ready_head = 0;
}

void vc_ready(struct vsock *v, struct vconn *c)
{
    if (c->in_ready)
        return;
    c->in_ready = true;
    v->ready[(v->ready_head + v->ready_n++) % VSOCK_CONNS_MAX] = (uint16_t)idx(v, c);
}

void vc_rearm(struct vsock *v, struct vconn *c)
{
    uint32_t want = 0;
    if (c->state == VC_LINE && !v->reset_unacked) /* its line is read once the gate opens */
        want = EPOLLIN;
    if (c->state == VC_OPEN) {
        uint32_t credit = vsock_peer_free(c->peer_buf_alloc, c->peer_fwd_cnt, c->rx_cnt);
        if (!c->readable && !c->host_eof && !(c->peer_shut & VSOCK_SHUTDOWN_RCV) && credit)
            want |= EPOLLIN;
        if (c->buf_len)
            want |= EPOLLOUT;
    }
    if (want == c->armed)
        return;
    struct epoll_event ev = {.events = want | EPOLLONESHOT, .data.u64 = (uint64_t)idx(v, c) + 1};
    if (epoll_ctl(v->ep_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        warn(v, "epoll_ctl", errno);
    c->armed = want;
}

void vc_credit_check(struct vsock *v, struct vconn *c)
{
    uint32_t seen_free = vsock_peer_free(VSOCK_BUF_ALLOC, c->fwd_told, c->in_cnt);
    if (c->fwd_cnt != c->fwd_told && seen_free < VSOCK_CREDIT_THRESH) {
        c->pending |= VP_CREDIT_UPDATE;
        vc_ready(v, c);
    }
}

/* Both directions over, nothing left for the host: the connection ends. */
static bool done(const struct vconn *c)
{
    return c->peer_shut == (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND) ||
           (c->host_eof && !(c->pending & VP_SHUTDOWN) && c->peer_shut & VSOCK_SHUTDOWN_SEND);
}

void vc_flush(struct vsock *v, struct vconn *c)
{
    while (c->buf_len) {
        uint32_t first = VSOCK_RING - c->buf_head;
        struct iovec iov[2] = {{c->buf + c->buf_head, c->buf_len < first ? c->buf_len : first},
                               {c->buf, c->buf_len > first ? c->buf_len - first : 0}};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = iov[1].iov_len ? 2 : 1};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            break;
        if (w < 0) {
            STAT_ADD(v->stats, vsock_tx_write_fails, 1);
            vc_kill(v, c, true);
            return;
        }
        c->buf_head = (uint32_t)((c->buf_head + (uint32_t)w) % VSOCK_RING);
        c->buf_len -= (uint32_t)w;
        uint32_t own = (uint32_t)w < c->own ? (uint32_t)w : c->own;
        c->own -= own;
        c->fwd_cnt += (uint32_t)w - own; /* the guest's bytes only */
    }
    if (!c->buf_len && c->peer_shut & VSOCK_SHUTDOWN_SEND && !c->wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = true;
    }
    if (!c->buf_len && c->state == VC_OPEN && done(c)) {
        finish(v, c);
        return;
    }
    vc_credit_check(v, c);
    vc_rearm(v, c);
}

int vc_to_host(struct vsock *v, struct vconn *c, const struct iovec *iov, unsigned n, uint32_t len)
{
    uint32_t sent = 0;
    if (c->buf_len - c->own + (uint64_t)len > VSOCK_BUF_ALLOC) { /* beyond its credit */
        STAT_ADD(v->stats, vsock_tx_malformed_packets, 1);
        vc_kill(v, c, true);
        return -1;
    }
    c->in_cnt += len;
    if (!c->buf_len) { /* straight from guest memory when nothing waits before it */
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
        ssize_t w;
        do
            w = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w < 0 && errno != EAGAIN) {
            STAT_ADD(v->stats, vsock_tx_write_fails, 1);
            vc_kill(v, c, true);
            return -1;
        }
        sent = w > 0 ? (uint32_t)w : 0;
        c->fwd_cnt += sent;
    }
    if (sent < len && !c->buf) {
        c->buf = malloc(VSOCK_RING);
        if (!c->buf) {
            warn(v, "out of memory for a connection's buffer", ENOMEM);
            vc_kill(v, c, true);
            return -1;
        }
    }
    /* What the socket did not take waits in the ring buffer, in order. */
    uint64_t skip = sent;
    for (unsigned i = 0; i < n && sent < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        const uint8_t *p = (const uint8_t *)iov[i].iov_base + skip;
        size_t left = iov[i].iov_len - skip;
        skip = 0;
        while (left) {
            uint32_t tail = (c->buf_head + c->buf_len) % VSOCK_RING;
            size_t room = VSOCK_RING - tail;
            size_t k = left < room ? left : room;
            memcpy(c->buf + tail, p, k);
            c->buf_len += (uint32_t)k;
            sent += (uint32_t)k;
            p += k;
            left -= k;
        }
    }
    STAT_ADD(v->stats, vsock_tx_bytes, len);
    vc_credit_check(v, c);
    vc_rearm(v, c);
    return 0;
}

int vc_open(struct vsock *v, struct vconn *c)
{
    if (!c->buf && !(c->buf = malloc(VSOCK_RING))) {
        warn(v, "out of memory for a connection's buffer", ENOMEM);
        vc_kill(v, c, true);
        return -1;
    }
    /* The client's answer goes before any of the guest's bytes, through the same buffer. */
    c->state = VC_OPEN;
    c->buf_head = 0;
    c->buf_len = (uint32_t)snprintf((char *)c->buf, VSOCK_RING, "OK %u\n", c->local_port);
    c->own = c->buf_len;
    return 0;
}

void vc_guest_shutdown(struct vsock *v, struct vconn *c, uint32_t flags)
{
    c->peer_shut |= flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
    if (c->peer_shut & VSOCK_SHUTDOWN_RCV)
        c->readable = false; /* what the host still sends is not read */
    if (done(c))
        vc_set_deadline(v, c, clock_ns() + VSOCK_TIMEOUT_NS); /* to drain what waits */
    vc_flush(v, c);
}

void vc_host_eof(struct vsock *v, struct vconn *c)
{
    /* A Unix socket whose peer closed it polls HUP; one the peer only shut for writing does
     * not (it may still read what the guest sends). */
    struct pollfd p = {c->fd, POLLIN, 0};
    c->host_eof = true;
    c->readable = false;
    c->host_gone = poll(&p, 1, 0) == 1 && p.revents & POLLHUP;
    c->pending |= VP_SHUTDOWN;
    if (c->host_gone) {
        c->buf_len = c->own = 0; /* nobody to write them to */
        vc_set_deadline(v, c, clock_ns() + VSOCK_TIMEOUT_NS);
    }
}

/* A host client's first line, a byte at a time so that nothing after it is taken. */
static void read_line(struct vsock *v, struct vconn *c)
{
    for (;;) {
        ssize_t got = read(c->fd, c->line + c->line_len, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN)
            break;
        if (got <= 0) { /* EOF or an error before the line */
            vc_kill(v, c, false);
            return;
        }
        c->line_len++;
        if (c->line[c->line_len - 1] != '\n' && c->line_len < VSOCK_LINE_MAX)
            continue;
        uint32_t port;
        if (vsock_connect_parse(c->line, c->line_len, &port) < 0) {
            vc_kill(v, c, false); /* garbage or an over-long line: closed */
            return;
        }
        c->peer_port = port;
        hash_insert(v, c); /* its host port is unique: no clash */
        c->state = VC_CONNECTING;
        c->pending |= VP_REQUEST;
        vc_set_deadline(v, c, clock_ns() + VSOCK_ANSWER_TIMEOUT_NS);
        vc_ready(v, c);
        break;
    }
    vc_rearm(v, c);
}

void vc_host_event(struct vsock *v, struct vconn *c, uint32_t events)
{
    c->armed = 0; /* one-shot: it fired */
    if (c->state == VC_LINE) {
        if (!v->reset_unacked)
            read_line(v, c);
        else if (events & (EPOLLHUP | EPOLLERR)) /* gone before the gate opened */
            vc_kill(v, c, false);
        else
            vc_rearm(v, c);
        return;
    }
    if (c->state != VC_OPEN) {
        vc_rearm(v, c);
        return;
    }
    if (events & EPOLLERR) {
        STAT_ADD(v->stats, vsock_rx_read_fails, 1);
        vc_kill(v, c, true);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP) && !c->host_eof) {
        c->readable = true; /* read when the rx queue has room (vsock.c) */
        vc_ready(v, c);
    }
    if (events & (EPOLLOUT | EPOLLHUP) && c->buf_len) {
        vc_flush(v, c);
        return;
    }
    vc_rearm(v, c);
}

void vc_accept(struct vsock *v, bool running)
{
    for (unsigned i = 0; i < ACCEPT_MAX; i++) {
        int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if ((e == EMFILE || e == ENFILE) && refuse_one(v)) {
                warn(v, "accept (a host client refused)", e);
                continue;
            }
            if (e != EAGAIN)
                warn(v, "accept", e);
            return;
        }
        if (!running) { /* no driver to ask: as a guest listener that is absent */
            close(fd);
            STAT_ADD(v->stats, vsock_conns_refused, 1);
            continue;
        }
        struct vconn *c = vc_new(v, fd, VC_LINE, vc_host_port(v), 0);
        if (c) { /* while gated, its 2 s for the line start when the gate opens */
            if (!v->reset_unacked)
                vc_set_deadline(v, c, clock_ns() + VSOCK_TIMEOUT_NS);
            vc_rearm(v, c);
        }
    }
}

uint64_t vc_deadlines(struct vsock *v, uint64_t now)
{
    uint64_t next = 0;
    for (unsigned i = 0; i < VSOCK_CONNS_MAX && v->ndeadlines; i++) {
        struct vconn *c = &v->conns[i];
        if (c->state == VC_FREE || !c->deadline)
            continue;
        if (c->deadline <= now) {
            uint64_t dropped;
            if (c->state == VC_CONNECTING && ratelog_allow(&v->log, now, LOG_NS, &dropped))
                log_warn("vsock %s: guest port %u did not answer a host client within %llu s: "
                         "closed (%llu more not logged)",
                         v->cfg.uds_path, c->peer_port,
                         (unsigned long long)(VSOCK_ANSWER_TIMEOUT_NS / 1000000000ULL),
                         (unsigned long long)dropped);
            vc_kill(v, c, true);
            continue;
        }
        if (!next || c->deadline < next)
            next = c->deadline;
    }
    return next;
}

int vsock_listen(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return errf(err, errlen, -ENAMETOOLONG,
                    "Cannot bind the vsock's Unix socket %.64s: longer than %zu bytes.", path,
                    sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errf(err, errlen, -errno, "Cannot create the vsock's Unix socket: %s",
                    strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, -e, "Cannot bind the vsock's Unix socket %s: %s%s", path,
                    strerror(e), e == EADDRINUSE ? " (remove the old socket first)" : "");
    }
    return fd;
}
