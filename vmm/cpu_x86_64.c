/* Per-vCPU boot state on x86_64: CPUID, boot MSRs, segment and control registers for the
 * Linux 64-bit entry or the PVH 32-bit entry, FPU/MXCSR, and the LAPIC's LINT0/LINT1. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm.h"

#define CR0_PE   (1ULL << 0)
#define CR0_ET   (1ULL << 4)
#define CR0_PG   (1ULL << 31)
#define CR4_PAE  (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)

#define APIC_LVT0     0x350
#define APIC_LVT1     0x360
#define APIC_MODE_NMI 0x4
#define APIC_MODE_EXT 0x7

static struct kvm_segment seg_from_gdt(uint64_t e, unsigned index)
{
    uint32_t limit = (uint32_t)((e & 0xffff) | ((e >> 32) & 0xf0000));
    struct kvm_segment s = {
            .base = ((e >> 16) & 0xffffff) | (((e >> 56) & 0xff) << 24),
            .selector = (uint16_t)(index * 8),
            .type = (e >> 40) & 0xf,
            .s = (e >> 44) & 1,
            .dpl = (e >> 45) & 3,
            .present = (e >> 47) & 1,
            .avl = (e >> 52) & 1,
            .l = (e >> 53) & 1,
            .db = (e >> 54) & 1,
            .g = (e >> 55) & 1,
    };
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.unusable = !s.present;
    return s;
}

static int setup_sregs(struct vm *vm, struct vcpu *vcpu)
{
    struct kvm_sregs sregs;
    uint64_t gdt[4];

    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
        return -errno;
    boot_gdt(vm->boot.mode, gdt);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = sizeof(gdt) - 1;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = sizeof(uint64_t) - 1;
    sregs.cs = seg_from_gdt(gdt[1], 1);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg_from_gdt(gdt[2], 2);
    sregs.tr = seg_from_gdt(gdt[3], 3);
    if (vm->boot.mode == BOOT_PVH) {
        sregs.cr0 = CR0_PE | CR0_ET;
        sregs.cr4 = 0;
    } else {
        sregs.cr0 |= CR0_PE | CR0_PG;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 |= CR4_PAE;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    return ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0 ? -errno : 0;
}

static int setup_regs(struct vm *vm, struct vcpu *vcpu)
{
    struct kvm_regs regs = {.rflags = 0x2, .rip = vm->boot.entry};

    if (vm->boot.mode == BOOT_PVH) {
        regs.rbx = PVH_INFO_ADDR;
    } else {
        regs.rsp = regs.rbp = BOOT_STACK_ADDR;
        regs.rsi = ZERO_PAGE_ADDR;
    }
    return ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

static int setup_msrs(struct vcpu *vcpu)
{
    static const struct {
        uint32_t index;
        uint64_t data;
    } boot_msrs[] = {
            {0x174, 0},              /* IA32_SYSENTER_CS */
            {0x175, 0},              /* IA32_SYSENTER_ESP */
            {0x176, 0},              /* IA32_SYSENTER_EIP */
            {0xc0000081, 0},         /* STAR */
            {0xc0000083, 0},         /* CSTAR */
            {0xc0000102, 0},         /* KERNEL_GS_BASE */
            {0xc0000084, 0},         /* SYSCALL_MASK */
            {0xc0000082, 0},         /* LSTAR */
            {0x10, 0},               /* IA32_TSC */
            {0x1a0, 1},              /* IA32_MISC_ENABLE: fast strings */
            {0x2ff, (1u << 11) | 6}, /* MTRRdefType: enabled, write-back */
    };
    enum { N = sizeof(boot_msrs) / sizeof(boot_msrs[0]) };
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[N];
    } m;

    memset(&m, 0, sizeof(m));
    m.hdr.nmsrs = N;
    for (unsigned i = 0; i < N; i++) {
        m.e[i].index = boot_msrs[i].index;
        m.e[i].data = boot_msrs[i].data;
    }
    int n = ioctl(vcpu->fd, KVM_SET_MSRS, &m);
    if (n < 0)
        return -errno;
    if (n < N) {
        log_err("vCPU %u: KVM refused MSR 0x%x", vcpu->index, boot_msrs[n].index);
        return -EINVAL;
    }
    return 0;
}

static int setup_fpu_lapic(struct vcpu *vcpu)
{
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    struct kvm_lapic_state lapic;
    uint32_t v;

    if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0 || ioctl(vcpu->fd, KVM_GET_LAPIC, &lapic) < 0)
        return -errno;
    /* LINT0 delivers the PIC's ExtINT, LINT1 the NMI, as the MP table says. */
    memcpy(&v, &lapic.regs[APIC_LVT0], sizeof(v));
    v = (v & ~0x700u) | (APIC_MODE_EXT << 8);
    memcpy(&lapic.regs[APIC_LVT0], &v, sizeof(v));
    memcpy(&v, &lapic.regs[APIC_LVT1], sizeof(v));
    v = (v & ~0x700u) | (APIC_MODE_NMI << 8);
    memcpy(&lapic.regs[APIC_LVT1], &v, sizeof(v));
    return ioctl(vcpu->fd, KVM_SET_LAPIC, &lapic) < 0 ? -errno : 0;
}

static int setup_cpuid(struct vm *vm, struct vcpu *vcpu)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = malloc(sz);
    int ret;

    if (!c)
        return -ENOMEM;
    memcpy(c, vm->cpuid, sizeof(*c) + vm->cpuid->nent * sizeof(struct kvm_cpuid_entry2));
    ret = cpuid_normalize(c, CPUID_MAX_ENTRIES, vcpu->index, vm->nvcpus, vm->cfg->smt,
                          vm->tsc_deadline);
    if (!ret && ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0)
        ret = -errno;
    if (ret) {
        free(c);
        return ret;
    }
    free(vcpu->cpuid);
    vcpu->cpuid = c; /* what a snapshot saves: the guest's CPUID as ember gave it */
    return 0;
}

int cpu_setup(struct vm *vm, struct vcpu *vcpu)
{
    const char *step = "CPUID";
    int ret = setup_cpuid(vm, vcpu);

    if (!ret && (ret = setup_msrs(vcpu)))
        step = "MSRs";
    if (!ret && (ret = setup_sregs(vm, vcpu)))
        step = "special registers";
    if (!ret && (ret = setup_regs(vm, vcpu)))
        step = "registers";
    if (!ret && (ret = setup_fpu_lapic(vcpu)))
        step = "FPU/LAPIC";
    if (ret)
        log_err("vCPU %u: setting up %s failed: %s", vcpu->index, step, strerror(-ret));
    return ret;
}
