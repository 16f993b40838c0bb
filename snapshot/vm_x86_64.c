/* The KVM VM's own state in a snapshot (x86): the in-kernel PIT, the KVM clock and the
 * interrupt controllers (PIC master, PIC slave, IOAPIC), saved with the VM paused and restored
 * after every vCPU's state, in Firecracker's order: PIT, clock, PICs, IOAPIC. */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>

#include "format.h"
#include "layout.h"
#include "snapshot.h"
#include "../vmm/vmm.h"

static int vm_err(char *err, size_t errlen, const char *what)
{
    int e = errno;
    return errf(err, errlen, -e, "%s: %s", what, strerror(e));
}

int vm_state_save(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    struct kvm_irqchip chip;

    memset(&pit, 0, sizeof(pit));
    memset(&clock, 0, sizeof(clock));
    snapw_section(w, SNAP_SEC_KVM_VM, SNAP_REQUIRED);
    if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0)
        return vm_err(err, errlen, "KVM_GET_PIT2");
    snapw_field(w, SF_VM_PIT2, &pit, sizeof(pit));
    if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0)
        return vm_err(err, errlen, "KVM_GET_CLOCK");
    snapw_field(w, SF_VM_CLOCK, &clock, sizeof(clock));
    for (uint32_t id = 0; id < 3; id++) {
        memset(&chip, 0, sizeof(chip));
        chip.chip_id = id;
        if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
            return vm_err(err, errlen, "KVM_GET_IRQCHIP");
        snapw_field(w, SF_VM_PIC0 + id, &chip, sizeof(chip));
    }
    return 0;
}

/* A field of exactly one KVM structure, copied out (file bytes are not aligned). */
static int take(const struct snap_file *f, const struct snap_section *s, uint32_t tag, void *out,
                size_t size, const char *what, char *err, size_t errlen)
{
    const struct snap_field *fd = snap_get(f, s, tag);
    if (!fd)
        return errf(err, errlen, -EINVAL, "the snapshot has no %s state", what);
    if (fd->len != size)
        return errf(err, errlen, -EINVAL, "the %s state is %u bytes, expected %zu", what, fd->len,
                    size);
    memcpy(out, fd->data, size);
    return 0;
}

static int check_pit(const struct kvm_pit_state2 *p, char *err, size_t errlen)
{
    for (int i = 0; i < 3; i++) {
        const struct kvm_pit_channel_state *c = &p->channels[i];
        /* mode 0xff: never programmed (as KVM creates it) */
        if ((c->mode > 5 && c->mode != 0xff) || c->rw_mode > 3 || c->read_state > 4 ||
            c->write_state > 4 || c->bcd > 1 || c->gate > 1 || c->status_latched > 1 ||
            c->count_latched > 3)
            return errf(err, errlen, -EINVAL, "PIT channel %d: a state the PIT cannot be in", i);
    }
    if (p->flags & ~(uint32_t)(KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON))
        return errf(err, errlen, -EINVAL, "PIT: unknown flags 0x%x", p->flags);
    return 0;
}

int vm_state_restore(struct vm *vm, const struct snap_file *f, const struct snap_section *s,
                     char *err, size_t errlen)
{
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock, set;
    struct kvm_irqchip chip[3];
    static const char *const names[] = {"PIC master", "PIC slave", "IOAPIC"};

    int ret = take(f, s, SF_VM_PIT2, &pit, sizeof(pit), "PIT", err, errlen);
    if (!ret)
        ret = check_pit(&pit, err, errlen);
    if (!ret)
        ret = take(f, s, SF_VM_CLOCK, &clock, sizeof(clock), "KVM clock", err, errlen);
    for (uint32_t id = 0; !ret && id < 3; id++) {
        ret = take(f, s, SF_VM_PIC0 + id, &chip[id], sizeof(chip[id]), names[id], err, errlen);
        if (!ret && chip[id].chip_id != id)
            ret = errf(err, errlen, -EINVAL, "the %s state names chip %u", names[id],
                       chip[id].chip_id);
    }
    if (!ret && chip[2].chip.ioapic.base_address != IOAPIC_ADDR)
        ret = errf(err, errlen, -EINVAL, "the IOAPIC state has base 0x%llx, not 0x%llx",
                   (unsigned long long)chip[2].chip.ioapic.base_address,
                   (unsigned long long)IOAPIC_ADDR);
    if (ret)
        return ret;
    if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0)
        return vm_err(err, errlen, "KVM_SET_PIT2");
    /* The clock resumes where it was when the snapshot was taken (Firecracker's default): the
     * guest sees no time pass while it was not running. */
    memset(&set, 0, sizeof(set));
    set.clock = clock.clock;
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &set) < 0)
        return vm_err(err, errlen, "KVM_SET_CLOCK");
    for (int id = 0; id < 3; id++)
        if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chip[id]) < 0)
            return vm_err(err, errlen, "KVM_SET_IRQCHIP");
    return 0;
}

void vm_kvmclock_ctrl(struct vm *vm)
{
    if (!(vm->snap_caps & SNAP_CAP_KVMCLOCK_CTL))
        return;
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if (ioctl(vm->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
            log_debug("vCPU %u: KVM_KVMCLOCK_CTRL: %s", i, strerror(errno));
    /* EINVAL: the guest never enabled its pvclock (nothing to tell it) */
}
