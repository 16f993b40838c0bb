/* The VMM event loop: one epoll set on the VMM thread that every layer registers its fds with
 * (API mailbox, timers, signals, console, devices' queue notifiers and completions), before and
 * after InstanceStart. One epoll_wait per wake-up; each ready fd calls its own handler. */
#ifndef EMBER_LOOP_H
#define EMBER_LOOP_H

#include <stdint.h>

#define LOOP_MAX_WATCHES 256 /* 19 devices × (3 queues + 3 fds) and the process's own */

struct loop;

/* loop_fn(opaque, events): fd is ready with events (EPOLLIN, EPOLLOUT, EPOLLHUP ...). */
typedef void loop_fn(void *opaque, uint32_t events);

/* loop_create(): Returns an empty loop, or NULL (errno set). */
struct loop *loop_create(void);
/* loop_destroy(l): closes the epoll set (the watched fds stay open; safe on NULL). */
void loop_destroy(struct loop *l);
/* loop_add(l, fd, events, fn, opaque): watches fd (events as epoll's: EPOLLET makes it
 * edge-triggered). Returns 0, -EEXIST if fd is watched already, -ENOSPC, or -errno. */
int loop_add(struct loop *l, int fd, uint32_t events, loop_fn *fn, void *opaque);
/* loop_modify(l, fd, events): changes what fd is watched for (0: nothing, the watch stays).
 * Returns 0, -ENOENT, or -errno. */
int loop_modify(struct loop *l, int fd, uint32_t events);
/* loop_remove(l, fd): stops watching fd; a handler may remove any fd, its own included, and
 * a removed fd's pending event of this round is dropped. */
void loop_remove(struct loop *l, int fd);
/* loop_wait(l, timeout_ms): one epoll_wait (-1: no timeout), then every ready handler.
 * Returns the number of events handled (0 on timeout or EINTR), or -errno. */
int loop_wait(struct loop *l, int timeout_ms);

#endif
