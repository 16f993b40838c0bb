/* SIGUSR2: where each vCPU is, one log line per vCPU, then the interrupt controllers, with the
 * VM paused for the moment it takes. For a guest that stalls with no output (seen rarely in the
 * nested test host, issue 11): the registers, the run state and the local APIC's pending and
 * in-service vectors tell a guest spinning (with or without interrupts) from one halted with an
 * interrupt that never came. Reads only: the VM resumes as it was. */
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "config.h"
#include "vmm.h"

#define APIC_ISR 0x100
#define APIC_IRR 0x200
#define APIC_TPR 0x80

/* The highest vector set in the 256-bit APIC register at off (8 32-bit words 16 bytes apart),
 * or -1. */
static int apic_highest(const struct kvm_lapic_state *l, unsigned off)
{
    for (int w = 7; w >= 0; w--) {
        uint32_t v;
        memcpy(&v, l->regs + off + 16 * (unsigned)w, sizeof(v));
        if (v)
            return w * 32 + 31 - __builtin_clz(v);
    }
    return -1;
}

static const char *mp_state_name(uint32_t s)
{
    static const char *const names[] = {"runnable", "uninitialized", "init-received", "halted",
                                        "sipi-received"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "other";
}

static void dump_one(const struct vcpu *v)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events ev;
    struct kvm_lapic_state l;

    if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0 ||
        ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0 ||
        ioctl(v->fd, KVM_GET_LAPIC, &l) < 0) {
        log_warn("vCPU %u: its state cannot be read: %m", v->index);
        return;
    }
    uint32_t tpr;
    memcpy(&tpr, l.regs + APIC_TPR, sizeof(tpr));
    log_warn("vCPU %u: %s rip=%#" PRIx64 " rsp=%#" PRIx64 " rflags=%#" PRIx64 " (IF=%u) cpl=%u "
             "cr0=%#" PRIx64 " cr3=%#" PRIx64 " cr4=%#" PRIx64 " efer=%#" PRIx64
             " apic: irr=%d isr=%d tpr=%#x; pending: interrupt=%s nmi=%u exception=%s",
             v->index, mp_state_name(mp.mp_state), (uint64_t)r.rip, (uint64_t)r.rsp,
             (uint64_t)r.rflags, (unsigned)((r.rflags >> 9) & 1), (unsigned)(s.cs.selector & 3),
             (uint64_t)s.cr0, (uint64_t)s.cr3, (uint64_t)s.cr4, (uint64_t)s.efer,
             apic_highest(&l, APIC_IRR), apic_highest(&l, APIC_ISR), tpr & 0xff,
             ev.interrupt.injected ? "injected" : "none", (unsigned)ev.nmi.pending,
             ev.exception.injected || ev.exception.pending ? "yes" : "none");
}

/* The IOAPIC pins a device uses (unmasked), and the PICs' pending and in-service bits: an
 * edge lost or a level pin whose remote IRR never clears shows here. */
static void dump_irqchip(const struct vm *vm)
{
    struct kvm_irqchip c = {.chip_id = KVM_IRQCHIP_IOAPIC};
    char pins[512];
    size_t off = 0;

    if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &c) < 0) {
        log_warn("IOAPIC: its state cannot be read: %m");
        return;
    }
    pins[0] = '\0';
    for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS && off < sizeof(pins) - 64; i++) {
        const __typeof__(c.chip.ioapic.redirtbl[0].fields) *f = &c.chip.ioapic.redirtbl[i].fields;
        if (f->mask)
            continue;
        off += (size_t)snprintf(pins + off, sizeof(pins) - off,
                                " pin %u: vector %u %s%s dest %u%s;", i, f->vector,
                                f->trig_mode ? "level" : "edge", f->remote_irr ? " remote-irr" : "",
                                f->dest_id, (c.chip.ioapic.irr >> i) & 1 ? " pending" : "");
    }
    log_warn("IOAPIC:%s", off ? pins : " every pin masked");
    for (unsigned id = KVM_IRQCHIP_PIC_MASTER; id <= KVM_IRQCHIP_PIC_SLAVE; id++) {
        struct kvm_irqchip p = {.chip_id = id};
        if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &p) == 0)
            log_warn("PIC %s: irr=%#x isr=%#x imr=%#x",
                     id == KVM_IRQCHIP_PIC_MASTER ? "master" : "slave", p.chip.pic.irr,
                     p.chip.pic.isr, p.chip.pic.imr);
    }
}

void vcpu_dump_all(struct vm *vm)
{
    bool was_running[VCPUS_MAX];
    unsigned n = vm->nvcpus < VCPUS_MAX ? vm->nvcpus : VCPUS_MAX;

    /* Paused by the API or stopping: left so. A vCPU whose thread has not taken its run
     * command yet is running: left alone, it would enter KVM_RUN meanwhile and dump_one's
     * KVM_GET_REGS would wait on it for ever (an AP in wait-for-SIPI never exits). */
    for (unsigned i = 0; i < n; i++)
        was_running[i] = vcpu_pause_if_running(&vm->vcpus[i]);
    for (unsigned i = 0; i < n; i++)
        if (was_running[i])
            vcpu_wait_state(&vm->vcpus[i], VCPU_PAUSED);
    for (unsigned i = 0; i < n; i++)
        dump_one(&vm->vcpus[i]);
    dump_irqchip(vm);
    /* A vCPU that stopped the VM meanwhile parked itself (the stop is set before it parks):
     * nothing runs again then. */
    for (unsigned i = 0; i < n && !vm_stopped(vm); i++)
        if (was_running[i])
            vcpu_request(&vm->vcpus[i], VCPU_CMD_RUN);
}
