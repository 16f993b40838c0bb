/* CPUID normalization (after Firecracker's): start from KVM_GET_SUPPORTED_CPUID and make each
 * vCPU see its own APIC ID, a topology of one socket with N cores of one thread (or, with SMT,
 * N/2 cores of two threads: APIC ID bit 0 is the thread), the hypervisor bit, TSC-deadline, and
 * no PMU. */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>

#include "vmm.h"

#define INTEL_EBX 0x756e6547 /* "Genu" */
#define AMD_EBX   0x68747541 /* "Auth" */
#define HYGON_EBX 0x6f677948 /* "Hygo" */

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == idx)
            return &c->entries[i];
    return NULL;
}

static int set_leaf(struct kvm_cpuid2 *c, unsigned cap, uint32_t fn, uint32_t idx,
                    const uint32_t r[4])
{
    struct kvm_cpuid_entry2 *e = find(c, fn, idx);
    if (!e) {
        if (c->nent >= cap)
            return -ENOSPC;
        e = &c->entries[c->nent++];
        memset(e, 0, sizeof(*e));
        e->function = fn;
        e->index = idx;
    }
    e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e->eax = r[0], e->ebx = r[1], e->ecx = r[2], e->edx = r[3];
    return 0;
}

static unsigned bits_for(unsigned n) /* ceil(log2(n)) */
{
    unsigned b = 0;
    while ((1u << b) < n)
        b++;
    return b;
}

/* Extended topology (0xB / 0x1F): level 0 = SMT (tpc threads per core), level 1 = core (all N
 * logical processors of the package). EAX: how far to shift the x2APIC ID for the next level. */
static int set_topology_leaf(struct kvm_cpuid2 *c, unsigned cap, uint32_t fn, unsigned index,
                             unsigned nvcpus, unsigned tpc)
{
    const uint32_t smt[4] = {bits_for(tpc), tpc, (1u << 8) | 0, index};
    const uint32_t core[4] = {bits_for(nvcpus), nvcpus, (2u << 8) | 1, index};
    int ret = set_leaf(c, cap, fn, 0, smt);
    if (!ret)
        ret = set_leaf(c, cap, fn, 1, core);
    for (uint32_t i = 0; i < c->nent && !ret; i++) { /* any deeper level becomes "invalid" */
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == fn && e->index >= 2) {
            e->eax = e->ebx = 0;
            e->ecx = e->index & 0xff;
            e->edx = index;
        }
    }
    if (!ret && !find(c, fn, 2)) {
        const uint32_t end[4] = {0, 0, 2, index};
        ret = set_leaf(c, cap, fn, 2, end);
    }
    return ret;
}

int cpuid_normalize(struct kvm_cpuid2 *c, unsigned cap, unsigned index, unsigned nvcpus, bool smt,
                    bool tsc_deadline)
{
    struct kvm_cpuid_entry2 *e0 = find(c, 0, 0), *e;
    uint32_t max_basic = e0 ? e0->eax : 0;
    bool intel = e0 && e0->ebx == INTEL_EBX;
    bool amd = e0 && (e0->ebx == AMD_EBX || e0->ebx == HYGON_EBX);
    /* Firecracker: with SMT, two threads per core (the API allows only 1 or an even count) */
    unsigned tpc = smt && nvcpus > 1 && nvcpus % 2 == 0 ? 2 : 1;
    /* AMD guests learn of threads only through TOPOEXT (0x8000001E; Linux has no other AMD
     * path to SMT siblings), so SMT turns it on, adding 0x8000001E where the host's CPUID
     * stops short of it; without SMT it stays off and 0xB / 0x80000008 describe the cores. */
    bool topoext = amd && tpc > 1;
    int ret = 0;

    if (topoext && !find(c, 0x8000001e, 0)) {
        const uint32_t none[4] = {0, 0, 0, 0}; /* filled in below */
        if ((ret = set_leaf(c, cap, 0x8000001e, 0, none)))
            return ret;
        if ((e = find(c, 0x80000000, 0)) && e->eax < 0x8000001e)
            e->eax = 0x8000001e; /* the leaves in between read as zeros */
    }
    if ((e = find(c, 1, 0))) {
        /* EBX[23:16]: addressable logical IDs per package, a power of two */
        e->ebx = (e->ebx & 0xff) | (8u << 8) | (((1u << bits_for(nvcpus)) & 0xff) << 16) |
                 (index << 24);
        e->ecx &= ~(1u << 15); /* PDCM: no perfmon capabilities MSR */
        e->ecx |= 1u << 31;    /* running under a hypervisor */
        if (tsc_deadline)
            e->ecx |= 1u << 24;
        if (nvcpus > 1)
            e->edx |= 1u << 28; /* HTT: more than one logical processor */
        else
            e->edx &= ~(1u << 28);
    }
    for (uint32_t i = 0; i < c->nent; i++) {
        e = &c->entries[i];
        if (e->function == 4 && intel && (e->eax & 0x1f)) { /* deterministic cache params */
            /* EAX[25:14]: logical processors sharing the cache - 1 (L1/L2: a core's threads,
             * L3: all); EAX[31:26]: cores in the package - 1 */
            unsigned level = (e->eax >> 5) & 7;
            unsigned sharing = level >= 3 ? nvcpus - 1 : tpc - 1;
            e->eax = (e->eax & 0x3fff) | ((sharing & 0xfff) << 14) |
                     (((nvcpus / tpc - 1) & 0x3f) << 26);
        } else if (e->function == 6) {
            e->eax &= ~(1u << 1); /* turbo boost */
            e->ecx &= ~(1u << 3); /* performance-energy bias */
        } else if (e->function == 7 && e->index == 0) {
            if (intel) {
                e->ebx |= (1u << 6) | (1u << 13); /* FDP_EXCPTN_ONLY, FPU CS/DS deprecated */
                e->ecx &= ~(1u << 5);             /* WAITPKG */
            } else if (amd) {
                e->edx &= ~(1u << 29); /* ARCH_CAPABILITIES */
            }
        } else if (e->function == 0xa || e->function == 0x80000022) { /* PMU */
            e->eax = e->ebx = e->ecx = e->edx = 0;
        } else if (e->function == 0x80000001 && amd) {
            if (topoext)
                e->ecx |= 1u << 22;
            else
                e->ecx &= ~(1u << 22); /* TOPOEXT off: 0xB and 0x80000008 describe it */
        } else if (e->function == 0x80000008 && amd) {
            /* NC: logical processors - 1 (with SMT, TOPOEXT tells threads from cores) */
            e->ecx = (e->ecx & ~0xf0ffu) | (bits_for(nvcpus) << 12) | ((nvcpus - 1) & 0xff);
        } else if (e->function == 0x8000001d && amd && (e->eax & 0x1f)) { /* cache topology */
            unsigned level = (e->eax >> 5) & 7;
            unsigned sharing = level >= 3 ? nvcpus - 1 : tpc - 1;
            e->eax = (e->eax & ~(0xfffu << 14)) | ((sharing & 0xfff) << 14);
        } else if (e->function == 0x8000001e && amd) {
            /* extended APIC ID; EBX: compute unit (core) ID, threads per unit - 1; one node */
            e->eax = index;
            e->ebx = ((tpc - 1) << 8) | ((index / tpc) & 0xff);
            e->ecx = 0;
        }
    }
    if (max_basic >= 0xb)
        ret = set_topology_leaf(c, cap, 0xb, index, nvcpus, tpc);
    if (!ret && max_basic >= 0x1f)
        ret = set_topology_leaf(c, cap, 0x1f, index, nvcpus, tpc);
    return ret;
}
