/*
 * restore-floor: the least a VMM must do to restore a guest from a memory file, timed phase by
 * phase in one fresh process (issue 13's "in-run floor" for make bench-restore):
 *
 *   open /dev/kvm, KVM_CREATE_VM, the TSS/identity map + in-kernel irqchip + PIT (as ember
 *   creates them), mmap the memory file MAP_PRIVATE as ember's regions (gpa 0 up to the 3 GiB
 *   MMIO hole, the rest from 4 GiB), KVM_SET_USER_MEMORY_REGION, the vCPUs, one register set
 *   (CPUID, long-mode special registers on the page tables and GDT found in guest memory,
 *   general registers), then KVM_RUN until the guest's first exit.
 *
 * usage: restore-floor --mem-file F --rip ADDR [--rsp ADDR] [--cr3 ADDR] [--gdt ADDR]
 *                      [--vcpus N] [--poke HEX] [--pt ADDR]
 *   The defaults for --cr3/--gdt/--rsp are where ember's boot put them (vmm/boot_x86_64.h).
 *   --poke writes those bytes at RIP first (one page copied on write), e.g. "e680" (out %al,
 *   $0x80) to get an exit out of a guest whose code at RIP would not exit by itself; --pt
 *   writes a 1 GiB identity map and a GDT in the 4 pages at ADDR first and uses them (for a
 *   memory file whose guest left no such tables at known places: a Linux guest's).
 * Prints one JSON object: each phase in µs, the total, the first exit (reason, port), the
 * page faults the process took, and the CLOCK_MONOTONIC time of the first exit (ns), so a
 * caller can time spawn -> first exit on the same clock. Exit 0 when the guest exited.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ember's layout (vmm/vmm.h, vmm/vm.c, vmm/boot_x86_64.h). */
#define HOLE_START 0xC0000000ULL
#define HOLE_END   0x100000000ULL
#define TSS_ADDR   0xfffbd000UL
#define IDMAP_ADDR 0xfffbc000ULL
#define MAX_VCPUS  32
#define MAX_CPUID  256
#define MAX_POKE   16

enum phase { P_OPEN, P_VM, P_IRQCHIP, P_MMAP, P_SLOTS, P_VCPUS, P_REGS, P_RUN, NPHASES };
static const char *const phase_names[NPHASES] = {
        "open_kvm", "create_vm", "irqchip_pit", "mmap_mem", "memslots", "vcpus", "regs", "run",
};

struct opts {
    const char *mem_file;
    uint64_t rip, rsp, cr3, gdt, pt;
    unsigned vcpus;
    int have_pt;
    uint8_t poke[MAX_POKE];
    size_t npoke;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int die(const char *what)
{
    fprintf(stderr, "restore-floor: %s: %s\n", what, strerror(errno));
    return 1;
}

static int bad(const char *what, const char *val)
{
    fprintf(stderr, "restore-floor: bad %s: '%s'\n", what, val ? val : "");
    return 2;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    *v = strtoull(s, &end, 0);
    return errno || *end ? -1 : 0;
}

static int parse_hex(const char *s, struct opts *o)
{
    size_t n = strlen(s);
    if (n == 0 || n % 2 || n / 2 > MAX_POKE)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned b;
        if (sscanf(s + 2 * i, "%2x", &b) != 1)
            return -1;
        o->poke[i] = (uint8_t)b;
    }
    o->npoke = n / 2;
    return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
    int have_rip = 0;
    *o = (struct opts){.rsp = 0x8ff0, .cr3 = 0x9000, .gdt = 0x500, .vcpus = 1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        if (!v)
            return bad("argument (a value is missing)", k);
        i++;
        if (!strcmp(k, "--mem-file"))
            o->mem_file = v;
        else if (!strcmp(k, "--poke")) {
            if (parse_hex(v, o))
                return bad("--poke (1-16 bytes in hex)", v);
        } else if (parse_u64(v, &n))
            return bad(k, v);
        else if (!strcmp(k, "--rip"))
            o->rip = n, have_rip = 1;
        else if (!strcmp(k, "--rsp"))
            o->rsp = n;
        else if (!strcmp(k, "--cr3"))
            o->cr3 = n;
        else if (!strcmp(k, "--gdt"))
            o->gdt = n;
        else if (!strcmp(k, "--pt") && !(n & 0xfff))
            o->pt = n, o->have_pt = 1;
        else if (!strcmp(k, "--vcpus") && n >= 1 && n <= MAX_VCPUS)
            o->vcpus = (unsigned)n;
        else
            return bad("option", k);
    }
    if (!o->mem_file || !have_rip)
        return bad("usage: --mem-file F and --rip ADDR are needed", NULL);
    return 0;
}

/* Maps the file MAP_PRIVATE as ember's regions and registers each as a memory slot. */
static int map_memory(int vm, int fd, uint64_t size, uint8_t **low, uint64_t *low_size,
                      uint64_t t[NPHASES])
{
    uint64_t t0 = now_ns();
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return die("mmap of the memory file");
    uint64_t t1 = now_ns();
    *low = p;
    *low_size = size < HOLE_START ? size : HOLE_START;
    struct kvm_userspace_memory_region r = {
            .slot = 0, .memory_size = *low_size, .userspace_addr = (uintptr_t)p};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return die("KVM_SET_USER_MEMORY_REGION");
    if (size > *low_size) {
        r = (struct kvm_userspace_memory_region){.slot = 1,
                                                 .guest_phys_addr = HOLE_END,
                                                 .memory_size = size - *low_size,
                                                 .userspace_addr = (uintptr_t)(p + *low_size)};
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            return die("KVM_SET_USER_MEMORY_REGION (high)");
    }
    t[P_MMAP] = t1 - t0;
    t[P_SLOTS] = now_ns() - t1;
    return 0;
}

static struct kvm_segment flat(uint16_t sel, uint8_t type, int code)
{
    return (struct kvm_segment){.base = 0,
                                .limit = 0xfffff,
                                .selector = sel,
                                .type = type,
                                .present = 1,
                                .dpl = 0,
                                .db = code ? 0 : 1,
                                .s = 1,
                                .l = code ? 1 : 0,
                                .g = 1};
}

/* An identity map of the first 1 GiB (2 MiB pages) and ember's long-mode GDT at pt. */
static void write_tables(uint8_t *low, struct opts *o)
{
    uint64_t *pml4 = (uint64_t *)(low + o->pt), *pdpt = pml4 + 512, *pd = pdpt + 512;
    uint64_t *gdt = pd + 512;
    pml4[0] = (o->pt + 0x1000) | 3;
    pdpt[0] = (o->pt + 0x2000) | 3;
    for (uint64_t i = 0; i < 512; i++)
        pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB */
    gdt[0] = 0;
    gdt[1] = 0x00af9b000000ffffULL; /* 64-bit code */
    gdt[2] = 0x00cf93000000ffffULL; /* data */
    gdt[3] = 0x008f8b000000ffffULL; /* TSS */
    o->cr3 = o->pt;
    o->gdt = o->pt + 0x3000;
}

/* CPUID (KVM refuses EFER.LME without long mode in it), long mode, the general registers. */
static int set_regs(int kvm, int vcpu, const struct opts *o)
{
    struct {
        struct kvm_cpuid2 hdr;
        struct kvm_cpuid_entry2 e[MAX_CPUID];
    } c = {.hdr.nent = MAX_CPUID};
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &c) < 0 || ioctl(vcpu, KVM_SET_CPUID2, &c) < 0)
        return die("CPUID");
    struct kvm_sregs s;
    if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0)
        return die("KVM_GET_SREGS");
    s.cs = flat(0x8, 0xb, 1);
    s.ds = s.es = s.fs = s.gs = s.ss = flat(0x10, 0x3, 0);
    s.tr = flat(0x18, 0xb, 0);
    s.tr.s = 0;
    s.gdt.base = o->gdt;
    s.gdt.limit = 31;
    s.cr0 = 0x80000011; /* PG | ET | PE */
    s.cr3 = o->cr3;
    s.cr4 = 0x20;   /* PAE */
    s.efer = 0x500; /* LMA | LME */
    if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0)
        return die("KVM_SET_SREGS");
    struct kvm_regs r = {.rip = o->rip, .rsp = o->rsp, .rbp = o->rsp, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &r) < 0)
        return die("KVM_SET_REGS");
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    uint64_t t[NPHASES] = {0}, start = now_ns(), t0;
    int ret = parse(argc, argv, &o);
    if (ret)
        return ret;
    alarm(60); /* never hang a bench, whatever the guest does */

    t0 = now_ns();
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return die("/dev/kvm");
    t[P_OPEN] = now_ns() - t0;

    t0 = now_ns();
    int vm;
    do
        vm = ioctl(kvm, KVM_CREATE_VM, 0);
    while (vm < 0 && errno == EINTR);
    if (vm < 0)
        return die("KVM_CREATE_VM");
    t[P_VM] = now_ns() - t0;

    t0 = now_ns();
    uint64_t idmap = IDMAP_ADDR;
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(vm, KVM_SET_TSS_ADDR, TSS_ADDR) < 0 ||
        ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 || ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0 ||
        ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
        return die("TSS/identity map/irqchip/PIT");
    t[P_IRQCHIP] = now_ns() - t0;

    int fd = open(o.mem_file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return die(o.mem_file);
    if (st.st_size <= 0 || st.st_size % 4096)
        return bad("memory file size (a positive multiple of 4096)", o.mem_file);
    uint8_t *low = NULL;
    uint64_t low_size = 0;
    if (map_memory(vm, fd, (uint64_t)st.st_size, &low, &low_size, t))
        return 1;
    if (o.rip > low_size || low_size - o.rip < o.npoke)
        return bad("--rip (outside the low region)", o.mem_file);
    if (o.have_pt && (o.pt > low_size || low_size - o.pt < 0x4000 || o.pt > (1ULL << 30)))
        return bad("--pt (4 pages in the low region, below 1 GiB)", o.mem_file);

    t0 = now_ns();
    int vcpu[MAX_VCPUS];
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        return die("KVM_GET_VCPU_MMAP_SIZE");
    for (unsigned i = 0; i < o.vcpus; i++)
        if ((vcpu[i] = ioctl(vm, KVM_CREATE_VCPU, i)) < 0)
            return die("KVM_CREATE_VCPU");
    struct kvm_run *run =
            mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu[0], 0);
    if (run == MAP_FAILED)
        return die("mmap kvm_run");
    t[P_VCPUS] = now_ns() - t0;

    t0 = now_ns();
    if (o.npoke)
        memcpy(low + o.rip, o.poke, o.npoke);
    if (o.have_pt)
        write_tables(low, &o);
    if (set_regs(kvm, vcpu[0], &o))
        return 1;
    t[P_REGS] = now_ns() - t0;

    t0 = now_ns();
    while (ioctl(vcpu[0], KVM_RUN, 0) < 0)
        if (errno != EINTR && errno != EAGAIN)
            return die("KVM_RUN");
    uint64_t t_exit = now_ns();
    t[P_RUN] = t_exit - t0;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{");
    for (int i = 0; i < NPHASES; i++)
        printf("\"%s_us\": %.1f, ", phase_names[i], (double)t[i] / 1000);
    printf("\"total_us\": %.1f, \"exit_reason\": %u, \"port\": %d, \"minflt\": %ld, "
           "\"exit_ns\": %llu}\n",
           (double)(t_exit - start) / 1000, run->exit_reason,
           run->exit_reason == KVM_EXIT_IO ? run->io.port : -1, ru.ru_minflt,
           (unsigned long long)t_exit);
    return 0;
}
