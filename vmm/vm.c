/* The VM: open the host resources, load the kernel into fresh guest memory, then build the
 * machine (the KVM VM with irqchip, PIT and memory slots, the legacy devices, the virtio devices
 * attached, the vCPU fds: what a snapshot restore reuses) and cold-boot it (the vCPUs' boot
 * registers). */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"
#include "../snapshot/snapshot.h"
#include "vmm.h"
#include "../virtio/virtio.h"

#define GSI_I8042  1
#define GSI_SERIAL 4

static const struct {
    int cap;
    const char *what;
} required_caps[] = {
        {KVM_CAP_IRQCHIP, "in-kernel irqchip"},
        {KVM_CAP_USER_MEMORY, "user memory regions"},
        {KVM_CAP_SET_TSS_ADDR, "KVM_SET_TSS_ADDR"},
        {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR"},
        {KVM_CAP_PIT2, "in-kernel PIT (KVM_CREATE_PIT2)"},
        {KVM_CAP_EXT_CPUID, "KVM_GET_SUPPORTED_CPUID"},
        {KVM_CAP_IRQFD, "irqfd"},
        {KVM_CAP_IOEVENTFD, "ioeventfd"},
        {KVM_CAP_IMMEDIATE_EXIT, "immediate_exit"},
};

/* Opens a file given on the command line; it must be a non-empty regular file. */
static int open_input(const char *what, const char *path, int *fd, uint64_t *size, char *err,
                      size_t errlen)
{
    struct stat st;

    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return errf(err, errlen, -errno, "%s %s: %s", what, path, strerror(errno));
    if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0)
        return errf(err, errlen, -EINVAL, "%s %s: not a non-empty regular file", what, path);
    *size = (uint64_t)st.st_size;
    return 0;
}

int vm_open_console(struct vm *vm, char *err, size_t errlen)
{
    const char *path = vm->cfg->console_path;
    if (!path)
        return 0;
    vm->console_fd = console_open_out(path, err, errlen);
    return vm->console_fd < 0 ? vm->console_fd : 0;
}

/* Everything that depends only on the configuration: files, guest memory, kernel, initrd, boot
 * structures. No KVM yet, so bad input is reported the same on any host. */
static int vm_load(struct vm *vm, char *err, size_t errlen)
{
    const struct vm_config *cfg = vm->cfg;
    int kfd = -1, ifd = -1, ret;
    uint64_t ksize = 0, isize = 0;
    char why[256];

    ret = open_input("kernel", cfg->kernel_path, &kfd, &ksize, err, errlen);
    if (!ret && cfg->initrd_path)
        ret = open_input("initrd", cfg->initrd_path, &ifd, &isize, err, errlen);
    if (!ret)
        ret = vm_open_console(vm, err, errlen);
    if (ret)
        goto out;
    ret = gm_create(&vm->mem, cfg->mem_mib << 20);
    if (ret) {
        errf(err, errlen, ret, "cannot map %llu MiB of guest memory: %s",
             (unsigned long long)cfg->mem_mib, strerror(-ret));
        goto out;
    }
    ret = loader_load_kernel(&vm->mem, kfd, ksize, &vm->boot, why, sizeof(why));
    if (ret) {
        errf(err, errlen, ret, "kernel %s: %s", cfg->kernel_path, why);
        goto out;
    }
    if (ifd >= 0) {
        ret = loader_load_initrd(&vm->mem, ifd, isize, &vm->boot, why, sizeof(why));
        if (ret) {
            errf(err, errlen, ret, "initrd %s: %s", cfg->initrd_path, why);
            goto out;
        }
    }
    if (cfg->boot == BOOT_PREF_PVH && !vm->boot.pvh_entry) {
        ret = errf(err, errlen, -EINVAL, "kernel %s has no PVH entry note", cfg->kernel_path);
        goto out;
    }
    if (cfg->boot != BOOT_PREF_LINUX && vm->boot.pvh_entry) {
        vm->boot.mode = BOOT_PVH;
        vm->boot.entry = vm->boot.pvh_entry;
    }
    /* Devices: their files opened now (before KVM), announced on the command line. */
    vm->virtio = virtio_open(cfg, &vm->mem, &vm->stats, err, errlen);
    if (!vm->virtio) {
        ret = -EINVAL;
        goto out;
    }
    char cmdline[CMDLINE_MAX];
    memcpy(cmdline, cfg->cmdline, sizeof(cmdline));
    cmdline[sizeof(cmdline) - 1] = '\0';
    ret = virtio_boot_args(cfg, cmdline, sizeof(cmdline));
    if (!ret)
        ret = virtio_cmdline(vm->virtio, cmdline, sizeof(cmdline));
    if (ret) {
        errf(err, errlen, ret, "kernel command line with the devices is longer than %d bytes",
             CMDLINE_MAX - 1);
        goto out;
    }
    ret = boot_setup(&vm->mem, &vm->boot, cmdline, cfg->vcpus);
    if (ret)
        errf(err, errlen, ret, "cannot write the boot structures: %s", strerror(-ret));
out:
    if (kfd >= 0)
        close(kfd);
    if (ifd >= 0)
        close(ifd);
    return ret;
}

static int kvm_open(struct vm *vm, char *err, size_t errlen)
{
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        int e = errno;
        return errf(err, errlen, -e, "/dev/kvm: %s%s", strerror(e),
                    e == ENOENT   ? " (is the kvm module loaded? is virtualization enabled?)"
                    : e == EACCES ? " (add your user to the kvm group)"
                                  : "");
    }
    int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION)
        return errf(err, errlen, -EINVAL, "KVM API version %d, need %d", api, KVM_API_VERSION);
    for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++)
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0)
            return errf(err, errlen, -ENOTSUP, "this host's KVM lacks %s", required_caps[i].what);
    int max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max <= 0)
        max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    if (max > 0 && vm->nvcpus > (unsigned)max)
        return errf(err, errlen, -EINVAL, "%u vCPUs requested, this host's KVM allows %d",
                    vm->nvcpus, max);
    vm->tsc_deadline = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    static const struct {
        int cap;
        unsigned bit;
    } snap_caps[] = {{KVM_CAP_XCRS, SNAP_CAP_XCRS},
                     {KVM_CAP_TSC_CONTROL, SNAP_CAP_TSC_CONTROL},
                     {KVM_CAP_KVMCLOCK_CTRL, SNAP_CAP_KVMCLOCK_CTL}};
    for (size_t i = 0; i < sizeof(snap_caps) / sizeof(snap_caps[0]); i++)
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, snap_caps[i].cap) > 0)
            vm->snap_caps |= snap_caps[i].bit;
    int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz < (int)sizeof(struct kvm_run))
        return errf(err, errlen, -EINVAL, "KVM_GET_VCPU_MMAP_SIZE failed");
    vm->run_size = (size_t)sz;
    return 0;
}

static int get_cpuid(struct vm *vm)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    vm->cpuid = calloc(1, sz);
    if (!vm->cpuid)
        return -ENOMEM;
    vm->cpuid->nent = CPUID_MAX_ENTRIES;
    return ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) < 0 ? -errno : 0;
}

static int kvm_vm(struct vm *vm, char *err, size_t errlen)
{
    uint64_t idmap = KVM_IDMAP_ADDR;
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};

    do
        vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    while (vm->vm_fd < 0 && errno == EINTR);
    if (vm->vm_fd < 0)
        return errf(err, errlen, -errno, "KVM_CREATE_VM: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0 ||
        ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        return errf(err, errlen, -errno, "setting the TSS/identity map: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return errf(err, errlen, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return errf(err, errlen, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        struct kvm_userspace_memory_region r = {
                .slot = i,
                .guest_phys_addr = vm->mem.regions[i].gpa,
                .memory_size = vm->mem.regions[i].size,
                .userspace_addr = (uint64_t)(uintptr_t)vm->mem.regions[i].host,
                .flags = vm->cfg->track_dirty_pages ? KVM_MEM_LOG_DIRTY_PAGES : 0,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            return errf(err, errlen, -errno, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
    }
    if (get_cpuid(vm))
        return errf(err, errlen, -errno, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
    return 0;
}

/* One eventfd bound to a GSI through irqfd. */
static int irq_line(struct vm *vm, unsigned gsi, int *fd)
{
    *fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (*fd < 0)
        return -errno;
    struct kvm_irqfd irqfd = {.fd = (uint32_t)*fd, .gsi = gsi};
    return ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0 ? -errno : 0;
}

static void drain(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0) {
        /* spurious wake-up */
    }
}

/* vm_request_stop's wake-up: the loop's caller sees vm_stopped() after this round. */
static void on_stop(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    (void)events;
    drain(vm->stop_fd);
}

static void on_reset(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    (void)events;
    drain(vm->reset_fd);
    /* the vCPU that pulsed the line has stopped the VM already (vcpu.c); this wakes the
     * loop. The line is logged at the end, after the guest's last console bytes (app.c). */
    vm_request_stop(vm, VM_STOP_RESET);
}

static int devices(struct vm *vm, char *err, size_t errlen)
{
    int ret = irq_line(vm, GSI_SERIAL, &vm->irq_fds[0]);
    if (!ret)
        ret = irq_line(vm, GSI_I8042, &vm->irq_fds[1]);
    if (ret)
        return errf(err, errlen, ret, "KVM_IRQFD: %s", strerror(-ret));
    vm->serial_rx_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    vm->reset_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    vm->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->serial_rx_fd < 0 || vm->reset_fd < 0 || vm->stop_fd < 0)
        return errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    int out = vm->console_fd >= 0 ? vm->console_fd : outfd_nonblocking(STDOUT_FILENO);
    if (serial_init(&vm->serial, out, vm->irq_fds[0], vm->serial_rx_fd) ||
        i8042_init(&vm->i8042, vm->irq_fds[1], vm->reset_fd))
        return errf(err, errlen, -ENOMEM, "device init failed");
    /* The legacy devices count into the VM's stats from the guest's first instruction on. */
    vm->serial.stats = &vm->stats;
    vm->i8042.stats = &vm->stats;
    struct bus_dev com1 = serial_bus_dev(&vm->serial), kbd = i8042_bus_dev(&vm->i8042);
    struct bus_dev timer = boot_timer_bus_dev(&vm->boot_timer);
    if (bus_add(&vm->pio, &com1) || bus_add(&vm->pio, &kbd) || bus_add(&vm->mmio, &timer))
        return errf(err, errlen, -EBUSY, "device address conflict");
    ret = loop_add(vm->loop, vm->stop_fd, EPOLLIN, on_stop, vm);
    if (!ret) {
        ret = loop_add(vm->loop, vm->reset_fd, EPOLLIN, on_reset, vm);
        if (ret)
            loop_remove(vm->loop, vm->stop_fd);
    }
    if (ret)
        return errf(err, errlen, ret, "event loop: %s", strerror(-ret));
    vm->watching = true;
    ret = virtio_attach(vm->virtio, vm->vm_fd, &vm->mmio, vm->loop);
    if (ret)
        return errf(err, errlen, ret, "virtio devices: %s", strerror(-ret));
    return 0;
}

void vm_init(struct vm *vm, const struct vm_config *cfg, struct loop *loop)
{
    vm->cfg = cfg;
    vm->loop = loop;
    vm->nvcpus = cfg->vcpus;
    vm->kvm_fd = vm->vm_fd = vm->console_fd = -1;
    vm->irq_fds[0] = vm->irq_fds[1] = -1;
    vm->serial_rx_fd = vm->reset_fd = vm->stop_fd = -1;
    vm->uffd = vm->uffd_sock = vm->uffd_pidfd = vm->uffd_watch_quit = -1;
    vm->ws_mem_fd = vm->ws_timer_fd = -1;
    if (getrandom(&vm->snap_seed, sizeof(vm->snap_seed), GRND_NONBLOCK) != sizeof(vm->snap_seed))
        vm->snap_seed = clock_ns() ^ ((uint64_t)getpid() << 32);
    atomic_store(&vm->stop_reason, VM_STOP_NONE);
    boot_timer_start(&vm->boot_timer); /* the InstanceStart equivalent */
}

int vm_build(struct vm *vm, char *err, size_t errlen)
{
    /* Diff snapshots: the devices' writes from now on (a booted VM's pages are all new: its
     * first Diff holds everything; a restored one's stand on the snapshot's) */
    bool restored = vm->mem.file_backed || vm->uffd >= 0;
    if (vm->cfg->track_dirty_pages && gm_track_dirty(&vm->mem, !restored))
        return errf(err, errlen, -ENOMEM, "out of memory");
    int ret = kvm_open(vm, err, errlen);
    if (!ret)
        ret = kvm_vm(vm, err, errlen);
    if (!ret)
        ret = devices(vm, err, errlen);
    if (ret)
        return ret;
    vm->vcpus = calloc(vm->nvcpus, sizeof(*vm->vcpus));
    if (!vm->vcpus)
        return errf(err, errlen, -ENOMEM, "out of memory");
    for (unsigned i = 0; i < vm->nvcpus; i++)
        vm->vcpus[i].fd = -1;
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        ret = vcpu_init(vm, &vm->vcpus[i], i);
        if (ret)
            return errf(err, errlen, ret, "KVM_CREATE_VCPU %u: %s", i, strerror(-ret));
    }
    return 0;
}

int vm_cold_boot(struct vm *vm, char *err, size_t errlen)
{
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        int ret = cpu_setup(vm, &vm->vcpus[i]);
        if (ret)
            return errf(err, errlen, ret, "vCPU %u setup failed: %s", i, strerror(-ret));
    }
    return 0;
}

int vm_create(struct vm *vm, const struct vm_config *cfg, struct loop *loop, char *err,
              size_t errlen)
{
    vm_init(vm, cfg, loop);
    int ret = vm_load(vm, err, errlen);
    if (ret) {
        vm->config_error = true;
        return ret;
    }
    ret = vm_build(vm, err, errlen);
    return ret ? ret : vm_cold_boot(vm, err, errlen);
}

int vm_start(struct vm *vm, bool run)
{
    int ret = console_start(&vm->console, vm, vm->loop);

    for (unsigned i = 0; !ret && i < vm->nvcpus; i++)
        ret = vcpu_start(&vm->vcpus[i]);
    if (ret) {
        log_err("cannot start the VM: %s", strerror(-ret));
        vm_request_stop(vm, VM_STOP_ERROR);
        return ret;
    }
    for (unsigned i = 0; run && i < vm->nvcpus; i++)
        vcpu_request(&vm->vcpus[i], VCPU_CMD_RUN);
    return 0;
}

bool vm_stopped(struct vm *vm)
{
    return atomic_load(&vm->stop_reason) != VM_STOP_NONE;
}

int vm_exit_code(struct vm *vm)
{
    switch (atomic_load(&vm->stop_reason)) {
    case VM_STOP_RESET:
    case VM_STOP_USER:
        return EXIT_OK;
    case VM_STOP_SIGNAL:
        return 128 + vm->stop_signal;
    default:
        return EXIT_GENERIC;
    }
}

void vm_halt(struct vm *vm)
{
    console_stop(&vm->console); /* the terminal's mode back first, whatever follows */
    for (unsigned i = 0; vm->vcpus && i < vm->nvcpus; i++)
        vcpu_join(&vm->vcpus[i]);
}

void vm_destroy(struct vm *vm)
{
    vm_halt(vm);
    if (vm->vcpus) {
        for (unsigned i = 0; i < vm->nvcpus; i++)
            if (vm->vcpus[i].fd >= 0)
                vcpu_destroy(&vm->vcpus[i]);
        free(vm->vcpus);
        vm->vcpus = NULL;
    }
    virtio_destroy(vm->virtio); /* after the vCPUs: they reach the registers */
    vm->virtio = NULL;
    snap_uffd_close(vm); /* its watch may stop the VM (stop_fd) until then */
    if (vm->watching) {
        loop_remove(vm->loop, vm->stop_fd);
        loop_remove(vm->loop, vm->reset_fd);
        vm->watching = false;
    }
    if (vm->stop_fd >= 0) { /* devices were initialised */
        serial_destroy(&vm->serial);
        i8042_destroy(&vm->i8042);
    }
    int *fds[] = {&vm->irq_fds[0], &vm->irq_fds[1], &vm->serial_rx_fd, &vm->reset_fd,
                  &vm->stop_fd,    &vm->vm_fd,      &vm->kvm_fd,       &vm->console_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    free(vm->cpuid);
    vm->cpuid = NULL;
    free(vm->snap_msrs);
    vm->snap_msrs = NULL;
    free(vm->chain);
    vm->chain = NULL;
    snap_ws_close(vm);
    gm_destroy(&vm->mem);
}

void vm_request_stop(struct vm *vm, enum vm_stop reason)
{
    int none = VM_STOP_NONE;
    uint64_t one = 1;

    atomic_compare_exchange_strong(&vm->stop_reason, &none, (int)reason);
    if (vm->stop_fd >= 0 && write(vm->stop_fd, &one, sizeof(one)) < 0) {
        /* the loop also checks stop_reason; nothing else to do */
    }
}
