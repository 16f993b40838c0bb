/* The Uffd memory backend of a snapshot load, exactly Firecracker's handshake, so a page-fault
 * handler written for Firecracker serves ember unchanged: anonymous guest RAM, a userfaultfd
 * (the syscall, or /dev/userfaultfd where the syscall is refused; never user-mode-only: KVM's own
 * accesses to guest memory fault too) with UFFD_FEATURE_EVENT_REMOVE, every region registered
 * for missing pages, then one connect() to the handler's socket and one message: the JSON array
 * of regions with the uffd as SCM_RIGHTS. Nothing else is ever exchanged; the socket stays open
 * for the VM's life (a close must not overtake the message). Beyond Firecracker, the handler is
 * watched (its process by SO_PEERCRED and a pidfd, and its work: uffd_watch.c): if it dies or
 * hangs, the VM ends with an error instead of hanging silently. */
#define _GNU_SOURCE /* struct ucred */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "snapshot.h"
#include "uffd.h"
#include "../vmm/vmm.h"

#define HANDSHAKE_MAX 1024 /* Firecracker's example handler reads the message into 1 KiB */
#define PAGE_SIZE     4096u

static int open_uffd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0)
        return fd;
    /* Refused (no CAP_SYS_PTRACE for kernel-mode faults, or vm.unprivileged_userfaultfd=0):
     * /dev/userfaultfd gives a full one to whoever may open it (the jailer makes it). */
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0)
        return -1;
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int e = errno;
    close(dev);
    if (fd >= 0)
        log_info("userfaultfd(2) was refused: using /dev/userfaultfd");
    errno = e;
    return fd;
}

static int make_uffd(struct vm *vm, char *err, size_t errlen)
{
    vm->uffd = open_uffd();
    if (vm->uffd < 0)
        return errf(err, errlen, -errno,
                    "Cannot create a userfaultfd (the syscall, then /dev/userfaultfd): %s",
                    strerror(errno));
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
    if (ioctl(vm->uffd, UFFDIO_API, &api) < 0)
        return errf(err, errlen, -errno, "UFFDIO_API: %s", strerror(errno));
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        struct uffdio_register reg = {
                .range = {.start = (uint64_t)(uintptr_t)vm->mem.regions[i].host,
                          .len = vm->mem.regions[i].size},
                .mode = UFFDIO_REGISTER_MODE_MISSING,
        };
        if (ioctl(vm->uffd, UFFDIO_REGISTER, &reg) < 0)
            return errf(err, errlen, -errno, "UFFDIO_REGISTER: %s", strerror(errno));
    }
    return 0;
}

/* The regions as Firecracker describes them (page_size_kib is its deprecated duplicate, in
 * bytes despite its name). Returns the length, or -1 if it does not fit. */
static int regions_json(const struct guest_mem *mem, char *out, size_t size)
{
    size_t used = 0;
    uint64_t offset = 0;

    for (unsigned i = 0; i < mem->nregions; i++) {
        int n = snprintf(out + used, size - used,
                         "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu,"
                         "\"page_size\":%u,\"page_size_kib\":%u}",
                         i ? "," : "[", (unsigned long long)(uintptr_t)mem->regions[i].host,
                         (unsigned long long)mem->regions[i].size, (unsigned long long)offset,
                         PAGE_SIZE, PAGE_SIZE);
        if (n < 0 || (size_t)n >= size - used)
            return -1;
        used += (size_t)n;
        offset += mem->regions[i].size;
    }
    if (used + 2 > size)
        return -1;
    out[used++] = ']';
    out[used] = '\0';
    return (int)used;
}

static int send_handshake(struct vm *vm, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    char json[HANDSHAKE_MAX];
    int len = regions_json(&vm->mem, json, sizeof(json));

    if (len < 0)
        return errf(err, errlen, -EINVAL, "the regions do not fit Firecracker's 1 KiB handshake");
    if (strlen(path) >= sizeof(addr.sun_path))
        return errf(err, errlen, -ENAMETOOLONG, "The page-fault handler's socket path is too long");
    memcpy(addr.sun_path, path, strlen(path) + 1);
    vm->uffd_sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (vm->uffd_sock < 0)
        return errf(err, errlen, -errno, "socket: %s", strerror(errno));
    if (connect(vm->uffd_sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return errf(err, errlen, -errno, "Cannot connect to the page-fault handler at %.256s: %s",
                    path, strerror(errno));
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = json, .iov_len = (size_t)len};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &vm->uffd, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(vm->uffd_sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != len)
        return errf(err, errlen, n < 0 ? -errno : -EIO,
                    "The page-fault handler at %.256s did not take the handshake: %s", path,
                    n < 0 ? strerror(errno) : "a short write");
    return 0;
}

/* The handler's process, for the watch (best effort: a handler in another pid namespace or a
 * kernel without pidfd_open is not watched, as with Firecracker). */
static void watch_handler(struct vm *vm)
{
    struct ucred cred = {0};
    socklen_t len = sizeof(cred);

    int got = getsockopt(vm->uffd_sock, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    if (got < 0 || cred.pid <= 0) {
        /* pid 0: the handler lives in a pid namespace ember cannot see (a jail's --new-pid-ns) */
        log_warn("the page-fault handler's process cannot be watched (%s): if it exits, the "
                 "guest waits for its memory",
                 got < 0 ? strerror(errno) : "it is in another pid namespace");
        return;
    }
    vm->uffd_pid = cred.pid;
    vm->uffd_pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
    if (vm->uffd_pidfd < 0)
        log_warn("the page-fault handler (pid %d) cannot be watched: %s", cred.pid,
                 strerror(errno));
}

int snap_uffd_memory(struct vm *vm, const char *sock_path, char *err, size_t errlen)
{
    int ret = gm_create(&vm->mem, vm->cfg->mem_mib << 20);
    if (ret)
        return errf(err, errlen, ret, "cannot map %llu MiB of guest memory: %s",
                    (unsigned long long)vm->cfg->mem_mib, strerror(-ret));
    ret = make_uffd(vm, err, errlen);
    if (!ret)
        ret = send_handshake(vm, sock_path, err, errlen);
    if (!ret)
        watch_handler(vm);
    return ret ? ret : snap_uffd_watch_start(vm, err, errlen);
}

void snap_uffd_close(struct vm *vm)
{
    snap_uffd_watch_stop(vm);
    int *fds[] = {&vm->uffd_pidfd, &vm->uffd_sock, &vm->uffd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}
