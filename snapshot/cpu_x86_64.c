/* A vCPU's state in a snapshot (x86): saved and restored in the orders KVM needs
 * (shared/reference/snapshots.md §3). Save: MP_STATE first (reading it settles pending LAPIC
 * events), then REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC, TSC_KHZ, CPUID (the table ember
 * set, not KVM_GET_CPUID2's, which PVM fills from the host), MSRs, and VCPU_EVENTS last. Restore:
 * CPUID, TSC_KHZ, MP_STATE, REGS (it clears pending exceptions, so before VCPU_EVENTS), SREGS (the
 * APIC base, so before LAPIC), XSAVE, XCRS, DEBUGREGS, LAPIC (before the TSC-deadline MSR), MSRs
 * with IA32_TSC_DEADLINE after IA32_TSC, VCPU_EVENTS. The VM is paused (no vCPU in KVM_RUN)
 * throughout; everything read from a file is checked or left to KVM's own checks, whose refusal
 * becomes a one-line reason. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "format.h"
#include "layout.h"
#include "snapshot.h"
#include "../vmm/vmm.h"

#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_CHUNK             64
#define MSRS_MAX              1024
#define TSC_PPM_TOLERANCE     250

static int kvm_err(char *err, size_t errlen, unsigned index, const char *what)
{
    int e = errno;
    return errf(err, errlen, -e, "vCPU %u: %s: %s", index, what, strerror(e));
}

/* ---- MSRs -------------------------------------------------------------------------------- */

int snap_msr_list(struct vm *vm, uint32_t **list, unsigned *n)
{
    struct kvm_msr_list probe = {.nmsrs = 0};

    *list = NULL;
    *n = 0;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return -errno;
    if (probe.nmsrs == 0 || probe.nmsrs > MSRS_MAX)
        return -EINVAL;
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
    if (!l)
        return -ENOMEM;
    l->nmsrs = probe.nmsrs;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        int ret = -errno;
        free(l);
        return ret;
    }
    *list = malloc(l->nmsrs * sizeof(uint32_t));
    if (!*list) {
        free(l);
        return -ENOMEM;
    }
    memcpy(*list, l->indices, l->nmsrs * sizeof(uint32_t));
    *n = l->nmsrs;
    free(l);
    return 0;
}

/* Reads every MSR of the list KVM can read for this vCPU (KVM_GET_MSRS stops at the first it
 * cannot: that one is skipped, the rest read on). Returns the count in out, or -errno. */
static int read_msrs(struct vcpu *vcpu, const uint32_t *idx, unsigned n, struct kvm_msr_entry *out)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e[MSR_CHUNK];
    } b;
    unsigned got = 0, i = 0;

    while (i < n) {
        unsigned k = n - i < MSR_CHUNK ? n - i : MSR_CHUNK;
        memset(&b, 0, sizeof(b));
        b.h.nmsrs = k;
        for (unsigned j = 0; j < k; j++)
            b.e[j].index = idx[i + j];
        int r = ioctl(vcpu->fd, KVM_GET_MSRS, &b);
        if (r < 0)
            return -errno;
        memcpy(out + got, b.e, (size_t)r * sizeof(b.e[0]));
        got += (unsigned)r;
        i += (unsigned)r + ((unsigned)r < k); /* skip the one KVM refused */
    }
    return (int)got;
}

/* Writes n MSRs; all must be taken. Returns 0 or -errno with the first refused in err. */
static int write_msrs(struct vcpu *vcpu, const struct kvm_msr_entry *e, unsigned n, char *err,
                      size_t errlen)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e[MSR_CHUNK];
    } b;

    for (unsigned i = 0; i < n;) {
        unsigned k = n - i < MSR_CHUNK ? n - i : MSR_CHUNK;
        memset(&b, 0, sizeof(b));
        b.h.nmsrs = k;
        memcpy(b.e, e + i, k * sizeof(e[0]));
        int r = ioctl(vcpu->fd, KVM_SET_MSRS, &b);
        if (r < 0)
            return kvm_err(err, errlen, vcpu->index, "KVM_SET_MSRS");
        if ((unsigned)r < k)
            return errf(err, errlen, -EINVAL,
                        "vCPU %u: this host's KVM refused MSR 0x%x of the snapshot", vcpu->index,
                        e[i + (unsigned)r].index);
        i += k;
    }
    return 0;
}

/* ---- save -------------------------------------------------------------------------------- */

/* One fixed-size KVM structure read with a GET ioctl into a field. */
static int save_blob(struct vcpu *vcpu, struct snap_writer *w, uint32_t tag, unsigned long req,
                     size_t size, const char *what, char *err, size_t errlen)
{
    uint8_t buf[4096];
    if (size > sizeof(buf))
        return errf(err, errlen, -EINVAL, "%s: too large", what);
    memset(buf, 0, size);
    if (ioctl(vcpu->fd, req, buf) < 0)
        return kvm_err(err, errlen, vcpu->index, what);
    snapw_field(w, tag, buf, size);
    return 0;
}

static int save_xsave(struct vm *vm, struct vcpu *vcpu, struct snap_writer *w, char *err,
                      size_t errlen)
{
    int size2 = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    size_t size = size2 > (int)sizeof(struct kvm_xsave) ? (size_t)size2 : sizeof(struct kvm_xsave);
    void *x = calloc(1, size);
    if (!x)
        return errf(err, errlen, -ENOMEM, "out of memory");
    int ret = ioctl(vcpu->fd, size2 > 0 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, x);
    if (ret < 0)
        ret = kvm_err(err, errlen, vcpu->index, "KVM_GET_XSAVE");
    else
        snapw_field(w, SF_CPU_XSAVE, x, size);
    free(x);
    return ret < 0 ? ret : 0;
}

static int save_cpuid(struct vcpu *vcpu, struct snap_writer *w, char *err, size_t errlen)
{
    if (!vcpu->cpuid)
        return errf(err, errlen, -EINVAL, "vCPU %u: no CPUID was set", vcpu->index);
    snapw_field(w, SF_CPU_CPUID, vcpu->cpuid->entries,
                vcpu->cpuid->nent * sizeof(vcpu->cpuid->entries[0]));
    return 0;
}

static int save_msrs(struct vm *vm, struct vcpu *vcpu, struct snap_writer *w, char *err,
                     size_t errlen)
{
    struct kvm_msr_entry *e = calloc(vm->snap_nmsrs ? vm->snap_nmsrs : 1, sizeof(*e));
    if (!e)
        return errf(err, errlen, -ENOMEM, "out of memory");
    int n = read_msrs(vcpu, vm->snap_msrs, vm->snap_nmsrs, e);
    if (n < 0) {
        errno = -n;
        free(e);
        return kvm_err(err, errlen, vcpu->index, "KVM_GET_MSRS");
    }
    uint64_t tsc = 0;
    for (int i = 0; i < n; i++)
        if (e[i].index == MSR_IA32_TSC)
            tsc = e[i].data;
    for (int i = 0; i < n; i++) /* a zero deadline would leave the guest without its timer */
        if (e[i].index == MSR_IA32_TSC_DEADLINE && e[i].data == 0)
            e[i].data = tsc;
    snapw_field(w, SF_CPU_MSRS, e, (size_t)n * sizeof(*e));
    free(e);
    return 0;
}

int cpu_state_save(struct vm *vm, struct vcpu *vcpu, struct snap_writer *w, char *err,
                   size_t errlen)
{
    int ret;

    snapw_section(w, SNAP_SEC_VCPU, SNAP_REQUIRED);
    snapw_u64(w, SF_CPU_INDEX, vcpu->index);
#define BLOB(tag, req, type, what)                                           \
    do {                                                                     \
        ret = save_blob(vcpu, w, tag, req, sizeof(type), what, err, errlen); \
        if (ret)                                                             \
            return ret;                                                      \
    } while (0)
    BLOB(SF_CPU_MP, KVM_GET_MP_STATE, struct kvm_mp_state, "KVM_GET_MP_STATE");
    BLOB(SF_CPU_REGS, KVM_GET_REGS, struct kvm_regs, "KVM_GET_REGS");
    BLOB(SF_CPU_SREGS, KVM_GET_SREGS, struct kvm_sregs, "KVM_GET_SREGS");
    ret = save_xsave(vm, vcpu, w, err, errlen);
    if (ret)
        return ret;
    if (vm->snap_caps & SNAP_CAP_XCRS)
        BLOB(SF_CPU_XCRS, KVM_GET_XCRS, struct kvm_xcrs, "KVM_GET_XCRS");
    BLOB(SF_CPU_DEBUG, KVM_GET_DEBUGREGS, struct kvm_debugregs, "KVM_GET_DEBUGREGS");
    BLOB(SF_CPU_LAPIC, KVM_GET_LAPIC, struct kvm_lapic_state, "KVM_GET_LAPIC");
#undef BLOB
    int khz = ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
    if (khz > 0)
        snapw_u64(w, SF_CPU_TSC_KHZ, (uint64_t)khz);
    ret = save_cpuid(vcpu, w, err, errlen);
    if (!ret)
        ret = save_msrs(vm, vcpu, w, err, errlen);
    if (!ret)
        ret = save_blob(vcpu, w, SF_CPU_EVENTS, KVM_GET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events),
                        "KVM_GET_VCPU_EVENTS", err, errlen);
    return ret;
}

/* ---- restore ----------------------------------------------------------------------------- */

/* A required fixed-size field, exactly its structure's size. */
static const struct snap_field *need(const struct snap_file *f, const struct snap_section *s,
                                     uint32_t tag, size_t size, const char *what, unsigned index,
                                     char *err, size_t errlen)
{
    const struct snap_field *fd = snap_get(f, s, tag);
    if (!fd)
        errf(err, errlen, -EINVAL, "vCPU %u: the snapshot has no %s", index, what);
    else if (size && fd->len != size)
        errf(err, errlen, -EINVAL, "vCPU %u: %s is %u bytes, expected %zu", index, what, fd->len,
             size);
    else
        return fd;
    return NULL;
}

/* Sets a fixed-size KVM structure from a field (copied: the file's bytes are not aligned). */
static int set_blob(struct vcpu *vcpu, const struct snap_field *fd, unsigned long req,
                    const char *what, char *err, size_t errlen)
{
    uint8_t buf[4096] __attribute__((aligned(16)));
    if (fd->len > sizeof(buf))
        return errf(err, errlen, -EINVAL, "vCPU %u: %s too large", vcpu->index, what);
    memcpy(buf, fd->data, fd->len);
    if (ioctl(vcpu->fd, req, buf) < 0) {
        int e = errno;
        return errf(err, errlen, -EINVAL, "vCPU %u: this host's KVM refused the saved %s: %s",
                    vcpu->index, what, strerror(e));
    }
    return 0;
}

static int restore_cpuid(struct vm *vm, struct vcpu *vcpu, const struct snap_field *fd, char *err,
                         size_t errlen)
{
    size_t esz = sizeof(struct kvm_cpuid_entry2);
    if (fd->len == 0 || fd->len % esz || fd->len / esz > CPUID_MAX_ENTRIES)
        return errf(err, errlen, -EINVAL, "vCPU %u: a CPUID table of %u bytes", vcpu->index,
                    fd->len);
    unsigned n = (unsigned)(fd->len / esz);
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * esz);
    if (!c)
        return errf(err, errlen, -ENOMEM, "out of memory");
    c->nent = n;
    memcpy(c->entries, fd->data, fd->len);
    int ret = snap_cpuid_check(vm, vcpu->index, c, err, errlen);
    if (!ret && ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0) {
        int e = errno;
        ret = errf(err, errlen, -EINVAL, "vCPU %u: this host's KVM refused the saved CPUID: %s",
                   vcpu->index, strerror(e));
    }
    if (ret) {
        free(c);
        return ret;
    }
    free(vcpu->cpuid);
    vcpu->cpuid = c; /* the next snapshot saves it again */
    return 0;
}

static int restore_tsc_khz(struct vm *vm, struct vcpu *vcpu, const struct snap_file *f,
                           const struct snap_section *s, char *err, size_t errlen)
{
    uint64_t saved;
    if (snap_get_u64(f, s, SF_CPU_TSC_KHZ, &saved))
        return 0; /* the source could not tell: run at this host's rate */
    if (saved == 0 || saved > 100000000)
        return errf(err, errlen, -EINVAL, "vCPU %u: a TSC of %llu kHz", vcpu->index,
                    (unsigned long long)saved);
    int host = ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
    uint64_t diff =
            host > 0 ? (saved > (uint64_t)host ? saved - (uint64_t)host : (uint64_t)host - saved)
                     : saved;
    if (host > 0 && diff * 1000000 <= saved * TSC_PPM_TOLERANCE)
        return 0;
    if (!(vm->snap_caps & SNAP_CAP_TSC_CONTROL) ||
        ioctl(vcpu->fd, KVM_SET_TSC_KHZ, (unsigned long)saved) < 0)
        return errf(err, errlen, -EINVAL,
                    "vCPU %u: the snapshot's TSC runs at %llu kHz, this host's at %d kHz, and "
                    "this host's KVM cannot scale it (KVM_CAP_TSC_CONTROL)",
                    vcpu->index, (unsigned long long)saved, host);
    return 0;
}

#define XSAVE_HDR_BV 512  /* XSTATE_BV: the components the area holds state for (SDM 13.4.2) */
#define XCR0_DEFAULT 3ULL /* x87 | SSE: XCR0 of a snapshot without XCRs */

/* The XSAVE components this host's KVM can restore (CPUID 0xD.0 EDX:EAX). */
static uint64_t host_xfeatures(const struct vm *vm)
{
    for (uint32_t i = 0; vm->cpuid && i < vm->cpuid->nent; i++)
        if (vm->cpuid->entries[i].function == 0xd && vm->cpuid->entries[i].index == 0)
            return vm->cpuid->entries[i].eax | (uint64_t)vm->cpuid->entries[i].edx << 32;
    return XCR0_DEFAULT;
}

/* The guest's XCR0 as saved (x87 | SSE without XCRs). */
static uint64_t saved_xcr0(const struct snap_field *xcrs)
{
    if (!xcrs)
        return XCR0_DEFAULT;
    struct kvm_xcrs x;
    memcpy(&x, xcrs->data, sizeof(x)); /* the caller checked its size */
    for (uint32_t i = 0; i < x.nr_xcrs && i < KVM_MAX_XCRS; i++)
        if (x.xcrs[i].xcr == 0)
            return x.xcrs[i].value;
    return XCR0_DEFAULT;
}

/* A component in the saved XSAVE that this host lacks: refused if the guest enabled it in
 * XCR0; dropped otherwise, since a guest can reach a component's state only through XCR0 and
 * this host's CPUID (cut to it already) lets it enable none it lacks. KVM saves PKRU whatever
 * the guest's XCR0, so a snapshot from a host with PKU moves to one without only this way. */
static int xsave_movable(struct vm *vm, struct vcpu *vcpu, uint8_t *x, uint64_t xcr0, char *err,
                         size_t errlen)
{
    uint64_t bv;
    memcpy(&bv, x + XSAVE_HDR_BV, sizeof(bv));
    uint64_t host = host_xfeatures(vm), lacking = bv & ~host;
    if (xcr0 & ~host)
        return errf(err, errlen, -EINVAL,
                    "vCPU %u: the guest enabled XSAVE components 0x%llx (XCR0 0x%llx) that this "
                    "host lacks",
                    vcpu->index, (unsigned long long)(xcr0 & ~host), (unsigned long long)xcr0);
    if (lacking) {
        log_info("vCPU %u: XSAVE state of components 0x%llx, which the guest never enabled and "
                 "this host lacks, dropped",
                 vcpu->index, (unsigned long long)lacking);
        bv &= ~lacking;
        memcpy(x + XSAVE_HDR_BV, &bv, sizeof(bv));
    }
    return 0;
}

static int restore_xsave(struct vm *vm, struct vcpu *vcpu, const struct snap_field *fd,
                         uint64_t xcr0, char *err, size_t errlen)
{
    int size2 = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    size_t host = size2 > (int)sizeof(struct kvm_xsave) ? (size_t)size2 : sizeof(struct kvm_xsave);
    if (fd->len < sizeof(struct kvm_xsave) || fd->len > host)
        return errf(err, errlen, -EINVAL,
                    "vCPU %u: an XSAVE area of %u bytes (this host's KVM takes %zu)", vcpu->index,
                    fd->len, host);
    void *x = calloc(1, host);
    if (!x)
        return errf(err, errlen, -ENOMEM, "out of memory");
    memcpy(x, fd->data, fd->len);
    int ret = xsave_movable(vm, vcpu, x, xcr0, err, errlen);
    if (!ret && ioctl(vcpu->fd, KVM_SET_XSAVE, x) < 0) {
        int e = errno;
        ret = errf(err, errlen, -EINVAL, "vCPU %u: this host's KVM refused the saved XSAVE: %s",
                   vcpu->index, strerror(e));
    }
    free(x);
    return ret;
}

static bool host_lists(const struct vm *vm, uint32_t index)
{
    for (unsigned i = 0; i < vm->snap_nmsrs; i++)
        if (vm->snap_msrs[i] == index)
            return true;
    return false;
}

/* The saved MSRs, IA32_TSC_DEADLINE last. An MSR this host's KVM does not list at all (another
 * KVM flavour's own, e.g. PVM's) is skipped with a warning; one it lists but refuses fails the
 * load. */
static int restore_msrs(struct vm *vm, struct vcpu *vcpu, const struct snap_field *fd, char *err,
                        size_t errlen)
{
    if (!vm->snap_msrs) {
        int r = snap_msr_list(vm, &vm->snap_msrs, &vm->snap_nmsrs);
        if (r)
            return errf(err, errlen, r, "KVM_GET_MSR_INDEX_LIST: %s", strerror(-r));
    }
    size_t esz = sizeof(struct kvm_msr_entry);
    if (fd->len % esz || fd->len / esz > MSRS_MAX)
        return errf(err, errlen, -EINVAL, "vCPU %u: an MSR list of %u bytes", vcpu->index, fd->len);
    unsigned n = (unsigned)(fd->len / esz), k = 0;
    struct kvm_msr_entry *e = calloc(n ? n : 1, esz), deadline;
    bool has_deadline = false;
    if (!e)
        return errf(err, errlen, -ENOMEM, "out of memory");
    unsigned skipped = 0;
    uint32_t first_skipped = 0;
    for (unsigned i = 0; i < n; i++) {
        struct kvm_msr_entry m;
        memcpy(&m, fd->data + i * esz, esz);
        if (!host_lists(vm, m.index)) {
            if (!skipped++)
                first_skipped = m.index;
            continue;
        }
        if (m.index == MSR_IA32_TSC_DEADLINE) {
            deadline = m;
            has_deadline = true;
        } else {
            e[k++] = m;
        }
    }
    if (skipped)
        log_warn("vCPU %u: %u saved MSRs (the first 0x%x) are unknown to this host's KVM: not "
                 "restored",
                 vcpu->index, skipped, first_skipped);
    int ret = write_msrs(vcpu, e, k, err, errlen);
    if (!ret && has_deadline) /* after IA32_TSC and the LAPIC: it is relative to both */
        ret = write_msrs(vcpu, &deadline, 1, err, errlen);
    free(e);
    return ret;
}

int cpu_state_restore(struct vm *vm, struct vcpu *vcpu, const struct snap_file *f,
                      const struct snap_section *s, char *err, size_t errlen)
{
    const unsigned i = vcpu->index;
    const struct snap_field *cpuid, *mp, *regs, *sregs, *xsave, *xcrs, *dbg, *lapic, *msrs, *ev;

    if (!(cpuid = need(f, s, SF_CPU_CPUID, 0, "CPUID", i, err, errlen)) ||
        !(mp = need(f, s, SF_CPU_MP, sizeof(struct kvm_mp_state), "MP_STATE", i, err, errlen)) ||
        !(regs = need(f, s, SF_CPU_REGS, sizeof(struct kvm_regs), "REGS", i, err, errlen)) ||
        !(sregs = need(f, s, SF_CPU_SREGS, sizeof(struct kvm_sregs), "SREGS", i, err, errlen)) ||
        !(xsave = need(f, s, SF_CPU_XSAVE, 0, "XSAVE", i, err, errlen)) ||
        !(dbg = need(f, s, SF_CPU_DEBUG, sizeof(struct kvm_debugregs), "DEBUGREGS", i, err,
                     errlen)) ||
        !(lapic = need(f, s, SF_CPU_LAPIC, sizeof(struct kvm_lapic_state), "LAPIC", i, err,
                       errlen)) ||
        !(msrs = need(f, s, SF_CPU_MSRS, 0, "MSRs", i, err, errlen)) ||
        !(ev = need(f, s, SF_CPU_EVENTS, sizeof(struct kvm_vcpu_events), "VCPU_EVENTS", i, err,
                    errlen)))
        return -EINVAL;
    xcrs = snap_get(f, s, SF_CPU_XCRS);
    if (xcrs && xcrs->len != sizeof(struct kvm_xcrs))
        return errf(err, errlen, -EINVAL, "vCPU %u: XCRS is %u bytes", i, xcrs->len);
    if (xcrs && !(vm->snap_caps & SNAP_CAP_XCRS))
        return errf(err, errlen, -EINVAL,
                    "vCPU %u: the snapshot has XCRs, this host's KVM lacks "
                    "KVM_CAP_XCRS",
                    i);
    int ret = restore_cpuid(vm, vcpu, cpuid, err, errlen);
    if (!ret)
        ret = restore_tsc_khz(vm, vcpu, f, s, err, errlen);
    if (!ret)
        ret = set_blob(vcpu, mp, KVM_SET_MP_STATE, "MP_STATE", err, errlen);
    if (!ret)
        ret = set_blob(vcpu, regs, KVM_SET_REGS, "REGS", err, errlen);
    if (!ret)
        ret = set_blob(vcpu, sregs, KVM_SET_SREGS, "SREGS", err, errlen);
    if (!ret)
        ret = restore_xsave(vm, vcpu, xsave, saved_xcr0(xcrs), err, errlen);
    if (!ret && xcrs)
        ret = set_blob(vcpu, xcrs, KVM_SET_XCRS, "XCRS", err, errlen);
    if (!ret)
        ret = set_blob(vcpu, dbg, KVM_SET_DEBUGREGS, "DEBUGREGS", err, errlen);
    if (!ret)
        ret = set_blob(vcpu, lapic, KVM_SET_LAPIC, "LAPIC", err, errlen);
    if (!ret)
        ret = restore_msrs(vm, vcpu, msrs, err, errlen);
    if (!ret)
        ret = set_blob(vcpu, ev, KVM_SET_VCPU_EVENTS, "VCPU_EVENTS", err, errlen);
    return ret;
}

/* ---- CPUID against this host ------------------------------------------------------------- */

/* Feature words a guest may have seen: each must be offered by this host. Bits KVM computes at
 * run time from the guest's own registers (OSXSAVE, OSPKE, the APIC bit) are not features. */
static const struct {
    uint32_t fn, idx;
    int reg; /* 0 eax 1 ebx 2 ecx 3 edx */
    uint32_t dynamic;
    const char *name;
} feature_words[] = {
        {1, 0, 2, 1u << 27, "CPUID.1:ECX"},
        {1, 0, 3, 1u << 9, "CPUID.1:EDX"},
        {7, 0, 1, 0, "CPUID.7.0:EBX"},
        {7, 0, 2, 1u << 4, "CPUID.7.0:ECX"},
        {7, 0, 3, 0, "CPUID.7.0:EDX"},
        {0xd, 1, 0, 0, "CPUID.0xD.1:EAX"},
        {0x80000001, 0, 2, 0, "CPUID.0x80000001:ECX"},
        {0x80000001, 0, 3, 0, "CPUID.0x80000001:EDX"},
};

static const struct kvm_cpuid_entry2 *leaf(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn &&
            (c->entries[i].index == idx ||
             !(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)))
            return &c->entries[i];
    return NULL;
}

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, int reg)
{
    const uint32_t r[4] = {e->eax, e->ebx, e->ecx, e->edx};
    return r[reg];
}

int snap_cpuid_check(struct vm *vm, unsigned index, const struct kvm_cpuid2 *saved, char *err,
                     size_t errlen)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *host = malloc(sz);
    if (!host)
        return errf(err, errlen, -ENOMEM, "out of memory");
    memcpy(host, vm->cpuid, sizeof(*host) + vm->cpuid->nent * sizeof(vm->cpuid->entries[0]));
    int ret = cpuid_normalize(host, CPUID_MAX_ENTRIES, index, vm->nvcpus, vm->cfg->smt,
                              vm->tsc_deadline);
    for (size_t i = 0; !ret && i < sizeof(feature_words) / sizeof(feature_words[0]); i++) {
        const struct kvm_cpuid_entry2 *s = leaf(saved, feature_words[i].fn, feature_words[i].idx);
        const struct kvm_cpuid_entry2 *h = leaf(host, feature_words[i].fn, feature_words[i].idx);
        uint32_t want = s ? reg_of(s, feature_words[i].reg) & ~feature_words[i].dynamic : 0;
        uint32_t have = h ? reg_of(h, feature_words[i].reg) : 0;
        if (want & ~have)
            ret = errf(err, errlen, -EINVAL,
                       "the snapshot's CPU has features this host's KVM does not offer: %s bits "
                       "0x%08x (a snapshot loads only on a host with the same CPU features)",
                       feature_words[i].name, want & ~have);
    }
    free(host);
    return ret;
}
