/*
 * kvm-probe: the smallest real KVM guest. Creates a VM, one vCPU and one memory slot,
 * runs a few real-mode instructions that compute 2 + 2, write the digit and a newline
 * to I/O port 0x10 and halt, and checks what came out. Runs on any /dev/kvm (PVM
 * included), so it tells "KVM works here at all" apart from "Linux guests boot here".
 *
 * usage: kvm-probe [/dev/kvm]      exit 0 when the guest printed "4\n" and halted
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUEST_BASE 0x1000
#define GUEST_SIZE 0x10000
#define PROBE_PORT 0x10
#define MAX_EXITS  64

/* Real mode, loaded at GUEST_BASE; rbx = 2 on entry. */
static const uint8_t guest_code[] = {
        0xba, PROBE_PORT, 0x00, /* mov dx, PROBE_PORT */
        0xb0, 0x02,             /* mov al, 2 */
        0x00, 0xd8,             /* add al, bl */
        0x04, '0',              /* add al, '0' */
        0xee,                   /* out dx, al */
        0xb0, '\n',             /* mov al, '\n' */
        0xee,                   /* out dx, al */
        0xf4,                   /* hlt */
};

static int fail(const char *what)
{
    fprintf(stderr, "kvm-probe: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "/dev/kvm";
    char out[16] = {0};
    size_t outlen = 0;
    unsigned io_exits = 0;

    alarm(60); /* never hang a test run, however slow the host */
    int kvm = open(dev, O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return fail(dev);
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        fprintf(stderr, "kvm-probe: KVM API version %d, expected %d\n", api, KVM_API_VERSION);
        return 1;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        return fail("KVM_CREATE_VM");

    uint8_t *mem =
            mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return fail("mmap guest memory");
    memcpy(mem, guest_code, sizeof(guest_code));
    struct kvm_userspace_memory_region region = {
            .slot = 0,
            .guest_phys_addr = GUEST_BASE,
            .memory_size = GUEST_SIZE,
            .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return fail("KVM_SET_USER_MEMORY_REGION");

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        return fail("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        return fail("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        return fail("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        return fail("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        return fail("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = GUEST_BASE, .rbx = 2, .rflags = 0x2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        return fail("KVM_SET_REGS");

    for (int i = 0; i < MAX_EXITS; i++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            return fail("KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != PROBE_PORT ||
                run->io.size != 1 || outlen + run->io.count >= sizeof(out)) {
                fprintf(stderr, "kvm-probe: unexpected I/O: port 0x%x size %u\n", run->io.port,
                        run->io.size);
                return 1;
            }
            memcpy(out + outlen, (uint8_t *)run + run->io.data_offset, run->io.count);
            outlen += run->io.count;
            io_exits++;
            break;
        case KVM_EXIT_HLT:
            if (strcmp(out, "4\n") != 0) {
                fprintf(stderr, "kvm-probe: guest printed \"%s\", expected \"4\\n\"\n", out);
                return 1;
            }
            printf("kvm-probe: ok: guest computed 4 and halted after %u port writes\n", io_exits);
            return 0;
        default:
            fprintf(stderr, "kvm-probe: unexpected exit reason %u\n", run->exit_reason);
            return 1;
        }
    }
    fprintf(stderr, "kvm-probe: guest did not halt after %d exits\n", MAX_EXITS);
    return 1;
}
