/* The HTTP server: libmicrohttpd on the Unix socket, on its one internal thread (the API
 * thread). Each request is routed and validated here, then handed to the VMM thread through a
 * one-slot mailbox + eventfd; the API thread waits for the typed response and writes it, so
 * requests are processed one at a time, in order. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "../seccomp/seccomp.h"
#include "api.h"

/* libmicrohttpd's own limit is above ours: it never refuses silently */
#define CONN_SLACK   (API_CONN_SLACK + 4)
#define BODY_LOG_MAX 256

/* A log line with its origin, when the server has a logger. */
#define SLOG(s, level, ...)                                   \
    do {                                                      \
        if ((s)->log)                                         \
            (s)->log(level, __FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

/* What the API thread keeps per connection (its socket context), for the acceptor. */
struct api_conn {
    struct api_conn *prev, *next;
    int fd;
    bool idle;    /* a response went out and no next request has begun */
    bool evicted; /* shut down by the acceptor */
    uint64_t idle_since;
};

/* The connection's record, from any of libmicrohttpd's callbacks (API thread). */
static struct api_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void conn_set_idle(struct api_server *s, struct api_conn *c, bool idle)
{
    if (!c)
        return;
    pthread_mutex_lock(&s->conn_lock);
    c->idle = idle;
    if (idle)
        c->idle_since = ++s->idle_seq;
    pthread_mutex_unlock(&s->conn_lock);
}

/*
 * At the limit an idle keep-alive connection gives way to a new client, as HTTP lets a server
 * close an idle persistent connection at any time: a client that keeps one per URL (python's
 * requests-unixsocket pools by the full URL, so PUT /drives/d0, /drives/d1 ... each hold one)
 * would otherwise lock itself out with 503. Only a connection between requests is chosen; one
 * with a request under way, or one that never sent any, keeps its slot. The shutdown only
 * wakes libmicrohttpd, which closes and reports it; the lock keeps the fd from being closed
 * meanwhile (the CLOSED notification takes it before libmicrohttpd closes the socket).
 */
bool api_conn_evict_idle(struct api_server *s)
{
    struct api_conn *oldest = NULL;

    pthread_mutex_lock(&s->conn_lock);
    for (struct api_conn *c = s->conn_list; c && s->evicting < API_CONN_SLACK; c = c->next)
        if (c->idle && !c->evicted && (!oldest || c->idle_since < oldest->idle_since))
            oldest = c;
    if (oldest) {
        shutdown(oldest->fd, SHUT_RDWR);
        oldest->evicted = true;
        s->evicting++;
    }
    pthread_mutex_unlock(&s->conn_lock);
    return oldest != NULL;
}

/* What the API thread keeps per HTTP request while the body arrives. */
struct upload {
    char *buf;
    size_t len;
    bool too_big;
    uint64_t length_hdr;
};

static void logf_cb(void *cls, const char *fmt, va_list ap)
{
    struct api_server *s = cls;
    char line[256];

    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    if (s->log)
        SLOG(s, API_LOG_DEBUG, "libmicrohttpd: %s", line);
}

/*
 * libmicrohttpd's default percent-decodes the request target before handing it over; as
 * Firecracker, ember routes on the raw target, so "%00" or "%0a" can never become part of an id
 * or a log line (an id with '%' is refused as any other bad id). Returns the length unchanged.
 */
static size_t no_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls, (void)conn;
    return strlen(s);
}

static enum MHD_Result send_json(struct MHD_Connection *conn, int status, char *body)
{
    struct MHD_Response *r;

    if (body)
        r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    else
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Server", "Firecracker API");
    if (body)
        MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_fault(struct MHD_Connection *conn, const char *msg)
{
    struct api_response resp = {0};
    api_response_fault(&resp, msg);
    return send_json(conn, 400, resp.body);
}

/* Hands req to the VMM thread and waits for its response (API thread). */
static int hand_off(struct api_server *s, struct api_request *req, struct api_response *resp)
{
    uint64_t one = 1;

    pthread_mutex_lock(&s->lock);
    s->pending = req;
    s->has_resp = false;
    if (write(s->req_fd, &one, sizeof(one)) != sizeof(one)) {
        s->pending = NULL;
        pthread_mutex_unlock(&s->lock);
        return -EIO;
    }
    while (!s->has_resp && !s->stopping)
        pthread_cond_wait(&s->cond, &s->lock);
    int ret = s->has_resp ? 0 : -ESHUTDOWN;
    if (s->has_resp)
        *resp = s->resp;
    s->pending = NULL;
    s->has_resp = false;
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static void log_request(struct api_server *s, const char *method, const char *url,
                        const struct upload *u)
{
    if (!s->log)
        return;
    if (u->len)
        SLOG(s, API_LOG_INFO,
             "The API server received a %s request on \"%.128s\" with body \"%.*s\".",
             api_method_name(api_method_parse(method)), url,
             (int)(u->len > BODY_LOG_MAX ? BODY_LOG_MAX : u->len), u->buf);
    else
        SLOG(s, API_LOG_INFO, "The API server received a %s request on \"%.128s\".",
             api_method_name(api_method_parse(method)), url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct api_server *s = cls;
    struct upload *u = *con_cls;
    char err[API_ERR_MAX];
    static __thread bool named;
    (void)version;

    if (!named) { /* the API thread, as Firecracker names it in log lines */
        pthread_setname_np(pthread_self(), "fc_api");
        named = true;
    }
    if (!u) { /* headers are in: check the announced size before any 100 Continue */
        conn_set_idle(s, conn_of(conn), false);
        u = calloc(1, sizeof(*u));
        if (!u)
            return MHD_NO;
        *con_cls = u;
        const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            u->length_hdr = strtoull(cl, &end, 10);
            if (errno || *end)
                u->length_hdr = UINT64_MAX;
        }
        if (u->length_hdr > s->max_payload) {
            snprintf(err, sizeof(err),
                     "Request payload with size %llu is larger than the limit of %zu allowed by "
                     "server.",
                     (unsigned long long)u->length_hdr, s->max_payload);
            return send_fault(conn, err);
        }
        return MHD_YES;
    }
    if (*upload_data_size) { /* a piece of the body */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (u->too_big || u->len + n > s->max_payload) {
            u->too_big = true;
            return MHD_YES;
        }
        char *grown = realloc(u->buf, u->len + n + 1);
        if (!grown)
            return MHD_NO;
        u->buf = grown;
        memcpy(u->buf + u->len, upload_data, n);
        u->len += n;
        u->buf[u->len] = '\0';
        return MHD_YES;
    }
    if (u->too_big) {
        snprintf(err, sizeof(err),
                 "Request payload is larger than the limit of %zu allowed by server.",
                 s->max_payload);
        return send_fault(conn, err);
    }

    /* The whole request is in: route, validate, hand over. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    log_request(s, method, url, u);
    struct api_request *req = malloc(sizeof(*req));
    if (!req)
        return MHD_NO;
    struct api_response resp = {0};
    int ret = api_route(method, url, u->buf, u->len, req, err, sizeof(err));
    if (!ret)
        ret = hand_off(s, req, &resp);
    else if (ret == -EINVAL)
        api_response_fault(&resp, err);
    free(req);
    if (ret && ret != -EINVAL) {
        snprintf(err, sizeof(err), "Internal error: %s", strerror(-ret));
        api_response_fault(&resp, err);
    }
    if (s->log) {
        if (resp.status >= 400)
            SLOG(s, API_LOG_ERROR, "Received Error. Status code: 400 Bad Request. Message: %s",
                 resp.body ? resp.body : "");
        else if (resp.status == 204)
            SLOG(s, API_LOG_INFO,
                 "The request was executed successfully. Status code: 204 No Content.");
        else
            SLOG(s, API_LOG_INFO, "The request was executed successfully. Status code: 200 OK.");
    }
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s->last_latency_us =
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)) / 1000;
    return send_json(conn, resp.status, resp.body);
}

/* A connection starts (recorded for the acceptor), or one the acceptor counted is gone. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct api_server *s = cls;
    struct api_conn *c = *socket_context;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = ci ? calloc(1, sizeof(*c)) : NULL;
        if (!c) /* not recorded: never chosen to give way, otherwise as any other */
            return;
        c->fd = ci->connect_fd;
        pthread_mutex_lock(&s->conn_lock);
        c->next = s->conn_list;
        if (c->next)
            c->next->prev = c;
        s->conn_list = c;
        pthread_mutex_unlock(&s->conn_lock);
        *socket_context = c;
        return;
    }
    if (toe != MHD_CONNECTION_NOTIFY_CLOSED)
        return;
    if (c) {
        pthread_mutex_lock(&s->conn_lock);
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conn_list = c->next;
        if (c->next)
            c->next->prev = c->prev;
        if (c->evicted)
            s->evicting--;
        pthread_mutex_unlock(&s->conn_lock);
        free(c);
        *socket_context = NULL;
    }
    atomic_fetch_sub(&s->conns, 1);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct upload *u = *con_cls;
    (void)toe;

    if (u) /* a request ran on this connection: until the next begins, it is idle */
        conn_set_idle(cls, conn_of(conn), true);

    if (u) {
        free(u->buf);
        free(u);
        *con_cls = NULL;
    }
}

/* Binds and listens on a socket at path, mode 0600. Returns the fd or -errno. */
static int bind_listen(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    mode_t old = umask(0177); /* the socket file is created 0600 */
    int r = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    int e = errno;
    umask(old);
    if (r == 0 && listen(fd, 64) < 0) {
        e = errno;
        unlink(path);
        r = -1;
    }
    if (r < 0) {
        close(fd);
        return -e;
    }
    return fd;
}

/* Creates the socket: fails if the path exists (as Firecracker), mode 0600. The file appears
 * only once the socket listens: it is bound and listening under a temporary name beside path
 * first, then linked to path. A client that connects as soon as the file exists (as
 * runtime-rs and many scripts do) is never refused; bound at path itself, the file would exist
 * for a moment before listen(). A path too long for a temporary name beside it, or on a file
 * system without hard links, is bound directly. (The temporary name has the pid: two embers of
 * one pid, in two pid namespaces, would have to share path's directory to collide.) */
static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un addr;
    char tmp[sizeof(addr.sun_path)];
    size_t len = strlen(path);
    int fd, e;

    if (len >= sizeof(addr.sun_path))
        return errf(err, errlen, -ENAMETOOLONG,
                    "API socket path is too long (%zu bytes, at most %zu): %s", len,
                    sizeof(addr.sun_path) - 1, path);
    int n = snprintf(tmp, sizeof(tmp), "%s.%ld~", path, (long)getpid());
    if (n > 0 && (size_t)n < sizeof(tmp)) {
        if (access(path, F_OK) == 0) {
            e = EADDRINUSE; /* what bind says of an existing path, as Firecracker reports it */
            goto failed;
        }
        unlink(tmp); /* left by a process of this pid that died before it linked (a reused pid) */
        fd = bind_listen(tmp);
        if (fd < 0) {
            e = -fd;
            goto failed;
        }
        int r = link(tmp, path);
        e = errno;
        unlink(tmp);
        if (r == 0)
            return fd;
        close(fd);
        if (e == EEXIST) {
            e = EADDRINUSE;
            goto failed;
        }
        /* no hard links here (EPERM, EOPNOTSUPP): bound at path itself, as Firecracker does */
    }
    fd = bind_listen(path);
    if (fd >= 0)
        return fd;
    e = -fd;
failed:
    snprintf(err, errlen, "Failed to open the API socket at %s: %s%s", path, strerror(e),
             e == EADDRINUSE ? " (remove the stale socket file first)" : "");
    return -e;
}

int api_server_start(struct api_server *s, const char *path, size_t max_payload, char *err,
                     size_t errlen)
{
    int ret;

    s->listen_fd = s->req_fd = s->stop_fd = -1;
    s->max_payload = max_payload;
    if (!s->conn_limit)
        s->conn_limit = API_CONN_LIMIT;
    if (!s->idle_timeout_s)
        s->idle_timeout_s = API_IDLE_TIMEOUT_S;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->conn_lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->req_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->req_fd < 0)
        return errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    ret = listen_unix(path, err, errlen);
    if (ret < 0)
        return ret;
    s->listen_fd = ret;
    snprintf(s->path, sizeof(s->path), "%s", path);
    /* No listen socket for libmicrohttpd: accept.c accepts and hands connections over. */
    sc_next_thread(SC_ROLE_API, "fc_api"); /* its thread installs the api filter first */
    s->daemon = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                    MHD_USE_SUPPRESS_DATE_NO_CLOCK | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC,
            0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, logf_cb, s,
            MHD_OPTION_CONNECTION_LIMIT, s->conn_limit + CONN_SLACK, MHD_OPTION_CONNECTION_TIMEOUT,
            s->idle_timeout_s, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, s,
            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
            MHD_OPTION_END);
    sc_next_thread_done();
    if (!s->daemon) {
        unlink(s->path);
        return errf(err, errlen, -EIO, "cannot start the HTTP server on %s", path);
    }
    ret = api_acceptor_start(s, err, errlen);
    if (ret) {
        MHD_stop_daemon(s->daemon);
        s->daemon = NULL;
        unlink(s->path);
    }
    return ret;
}

int api_server_serve(struct api_server *s, struct api_ctl *c)
{
    uint64_t v;
    struct api_response resp;

    if (read(s->req_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return -errno;
    pthread_mutex_lock(&s->lock);
    struct api_request *req = s->pending;
    pthread_mutex_unlock(&s->lock);
    if (!req)
        return 0;
    int ret = ctl_handle(c, req, &resp);
    pthread_mutex_lock(&s->lock);
    s->resp = resp;
    s->has_resp = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

void api_server_stop(struct api_server *s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    api_acceptor_stop(s); /* first: it hands connections to the daemon */
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->path[0])
        sc_unlink(s->path);
    if (s->req_fd >= 0)
        close(s->req_fd);
    s->listen_fd = s->req_fd = -1;
}
