/* The HTTP server (http.c: libmicrohttpd on its one internal thread, the API thread) and the
 * acceptor thread (accept.c). Included by api.h, after the types it uses. */
#ifndef EMBER_API_HTTP_H
#define EMBER_API_HTTP_H

struct MHD_Daemon;
struct api_conn;

/* api_log_fn(level, file, line, fmt, ...): where the server writes its log lines. */
typedef void (*api_log_fn)(enum api_log_level level, const char *file, int line, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));

#define API_CONN_LIMIT     10 /* open connections, as Firecracker (the 11th gets a 503) */
#define API_CONN_LIMIT_MAX 1024
#define API_IDLE_TIMEOUT_S                                            \
    60 /* a connection with nothing sent or received for this long is \
          closed, so idle or slowloris clients cannot hold every slot */
#define API_IDLE_TIMEOUT_MAX_S 86400
/* Connections at most this many above the limit while idle ones that gave way close. */
#define API_CONN_SLACK 4

struct api_server {
    struct MHD_Daemon *daemon;
    int listen_fd;
    int stop_fd; /* eventfd: the acceptor thread leaves */
    pthread_t acceptor;
    bool acceptor_up;
    atomic_uint conns; /* connections libmicrohttpd has open */
    /* Every open connection (http.c), and whether it sits idle between requests: at the limit
     * the acceptor shuts the longest-idle one so that a new client gets in (accept.c). */
    pthread_mutex_t conn_lock;
    struct api_conn *conn_list;
    uint64_t idle_seq; /* stamps connections as they go idle: the smallest went first */
    unsigned evicting; /* shut by the acceptor, not yet reported closed */
    int req_fd;        /* eventfd: a request waits in the mailbox (the VMM thread polls it) */
    char path[108];
    size_t max_payload;
    unsigned conn_limit;     /* 0: API_CONN_LIMIT */
    unsigned idle_timeout_s; /* 0: API_IDLE_TIMEOUT_S */
    bool idle_give_way;      /* at the limit an idle connection gives way (off: 503) */
    api_log_fn log;          /* may be NULL */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct api_request *pending; /* the one-slot mailbox, guarded by lock */
    struct api_response resp;
    bool has_resp, stopping;
    uint64_t last_latency_us; /* API thread: receive → response queued, last request */
};

/* api_server_start(s, path, max_payload, err, errlen): binds path (fails if it exists;
 * mode 0600) and starts the API thread, with s->conn_limit and s->idle_timeout_s (0: the
 * defaults) as set by the caller. Returns 0 or -errno with a reason in err. */
int api_server_start(struct api_server *s, const char *path, size_t max_payload, char *err,
                     size_t errlen);
/* api_server_serve(s, c): on the VMM thread when s->req_fd is readable: runs the waiting
 * request through the controller and wakes the API thread. Returns ctl_handle's result. */
int api_server_serve(struct api_server *s, struct api_ctl *c);
/* api_server_stop(s): stops the API thread, removes the socket file. */
void api_server_stop(struct api_server *s);

/* api_acceptor_start(s, err, errlen): starts the thread that accepts on s->listen_fd and hands
 * connections to s->daemon, answering 503 beyond API_CONN_LIMIT (accept.c). Returns 0 or
 * -errno with a reason in err. */
int api_acceptor_start(struct api_server *s, char *err, size_t errlen);
/* api_conn_evict_idle(s): shuts down the connection idle longest between two requests (at most
 * API_CONN_SLACK at a time); libmicrohttpd then closes it. Returns true if one was shut. */
bool api_conn_evict_idle(struct api_server *s);
/* api_acceptor_stop(s): stops and joins it (safe if it never started). */
void api_acceptor_stop(struct api_server *s);

/* api_response_json(resp, status, fmt, ...): sets a response whose body is the JSON built
 * by json_pack(fmt, ...). Returns 0 or -ENOMEM. */
int api_response_json(struct api_response *resp, int status, const char *fmt, ...);
/* api_response_fault(resp, msg): sets a 400 {"fault_message": msg}. Returns -EINVAL. */
int api_response_fault(struct api_response *resp, const char *msg);
/* api_response_free(resp): frees the body. */
void api_response_free(struct api_response *resp);

#endif
