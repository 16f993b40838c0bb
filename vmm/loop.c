/* The VMM event loop (loop.h). Watches live in a fixed table; the epoll cookie is the slot's
 * index and generation, so an event that was already collected for a watch a handler removed
 * (or replaced) in the same round is recognised and dropped. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"

struct watch {
    int fd; /* -1: free */
    uint32_t gen;
    loop_fn *fn;
    void *opaque;
};

struct loop {
    int epfd;
    struct watch w[LOOP_MAX_WATCHES];
};

struct loop *loop_create(void)
{
    struct loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    for (unsigned i = 0; i < LOOP_MAX_WATCHES; i++)
        l->w[i].fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int e = errno;
        free(l);
        errno = e;
        return NULL;
    }
    return l;
}

void loop_destroy(struct loop *l)
{
    if (!l)
        return;
    close(l->epfd);
    free(l);
}

static uint64_t cookie(const struct loop *l, const struct watch *w)
{
    return (uint64_t)w->gen << 32 | (uint64_t)(w - l->w);
}

static struct watch *find(struct loop *l, int fd)
{
    for (unsigned i = 0; fd >= 0 && i < LOOP_MAX_WATCHES; i++)
        if (l->w[i].fd == fd)
            return &l->w[i];
    return NULL;
}

int loop_add(struct loop *l, int fd, uint32_t events, loop_fn *fn, void *opaque)
{
    if (fd < 0 || !fn)
        return -EINVAL;
    if (find(l, fd))
        return -EEXIST;
    struct watch *w = NULL;
    for (unsigned i = 0; i < LOOP_MAX_WATCHES && !w; i++)
        if (l->w[i].fd < 0)
            w = &l->w[i];
    if (!w)
        return -ENOSPC;
    struct epoll_event ev = {.events = events, .data.u64 = cookie(l, w)};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    w->fd = fd;
    w->fn = fn;
    w->opaque = opaque;
    return 0;
}

int loop_modify(struct loop *l, int fd, uint32_t events)
{
    struct watch *w = find(l, fd);
    if (!w)
        return -ENOENT;
    struct epoll_event ev = {.events = events, .data.u64 = cookie(l, w)};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void loop_remove(struct loop *l, int fd)
{
    struct watch *w = find(l, fd);
    if (!w)
        return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    *w = (struct watch){.fd = -1, .gen = w->gen + 1};
}

int loop_wait(struct loop *l, int timeout_ms)
{
    struct epoll_event evs[32];
    int n = epoll_wait(l->epfd, evs, sizeof(evs) / sizeof(evs[0]), timeout_ms);

    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        struct watch *w = &l->w[evs[i].data.u64 & 0xffffffffu];
        if (w->fd < 0 || w->gen != (uint32_t)(evs[i].data.u64 >> 32))
            continue; /* removed by an earlier handler of this round */
        w->fn(w->opaque, evs[i].events);
    }
    return n;
}
