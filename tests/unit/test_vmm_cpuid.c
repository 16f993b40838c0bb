/* CPUID normalization on a synthetic "supported CPUID" table (Intel- and AMD-shaped). */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

static struct kvm_cpuid2 *table(uint32_t vendor_ebx, uint32_t max_basic)
{
    struct kvm_cpuid2 *c =
            calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
    struct kvm_cpuid_entry2 e[] = {
            {.function = 0, .eax = max_basic, .ebx = vendor_ebx},
            {.function = 1, .ebx = 0xff0000ff, .ecx = 1u << 15, .edx = 1u << 28},
            {.function = 4, .index = 0, .eax = 0x21}, /* L1 data cache */
            {.function = 4, .index = 1, .eax = 0x63}, /* L3 unified */
            {.function = 0xa, .eax = 0x7300403, .ebx = 1, .edx = 0x603},
            {.function = 0xb, .index = 0, .eax = 9, .ebx = 9, .ecx = 9, .edx = 9},
            {.function = 0xb, .index = 3, .eax = 9, .ebx = 9, .ecx = 9, .edx = 9},
            {.function = 0x80000001, .ecx = 1u << 22},
            {.function = 0x80000008, .ecx = 0x3f},
            {.function = 0x8000001d, .index = 0, .eax = 0x121}, /* L1 data */
            {.function = 0x8000001d, .index = 1, .eax = 0x163}, /* L3 */
            {.function = 0x8000001e, .eax = 9, .ebx = 0xffff, .ecx = 0x103},
    };
    memcpy(c->entries, e, sizeof(e));
    c->nent = sizeof(e) / sizeof(e[0]);
    return c;
}

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == idx)
            return &c->entries[i];
    return NULL;
}

static void intel_topology(void **state)
{
    struct kvm_cpuid2 *c = table(0x756e6547, 0xd);
    (void)state;
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 2, 3, false, true), 0);
    struct kvm_cpuid_entry2 *e = find(c, 1, 0);
    assert_int_equal(e->ebx >> 24, 2);          /* initial APIC ID */
    assert_int_equal((e->ebx >> 16) & 0xff, 4); /* 3 rounded up to a power of two */
    assert_int_equal((e->ebx >> 8) & 0xff, 8);  /* CLFLUSH 64 bytes */
    assert_true(e->ecx & (1u << 31));           /* hypervisor */
    assert_true(e->ecx & (1u << 24));           /* TSC deadline */
    assert_false(e->ecx & (1u << 15));          /* no PDCM */
    assert_true(e->edx & (1u << 28));           /* HTT */
    e = find(c, 0xa, 0);
    assert_int_equal(e->eax | e->ebx | e->ecx | e->edx, 0); /* no PMU */
    e = find(c, 0xb, 0);
    assert_int_equal(e->ebx, 1);
    assert_int_equal(e->ecx, 0x100);
    assert_int_equal(e->edx, 2);
    e = find(c, 0xb, 1);
    assert_non_null(e);
    assert_int_equal(e->eax, 2); /* 3 cores need 2 bits */
    assert_int_equal(e->ebx, 3);
    assert_int_equal(e->ecx, 0x201);
    assert_int_equal(e->edx, 2);
    e = find(c, 0xb, 3);
    assert_int_equal(e->ebx, 0);
    assert_int_equal(e->ecx & 0xff00, 0); /* invalid level */
    assert_int_equal(find(c, 4, 0)->eax >> 26, 2);
    assert_int_equal((find(c, 4, 0)->eax >> 14) & 0xfff, 0); /* L1 not shared */
    assert_int_equal((find(c, 4, 1)->eax >> 14) & 0xfff, 2); /* L3 shared by all */
    free(c);
}

static void single_vcpu_amd(void **state)
{
    struct kvm_cpuid2 *c = table(0x68747541, 0xd);
    (void)state;
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 0, 1, false, false), 0);
    struct kvm_cpuid_entry2 *e = find(c, 1, 0);
    assert_int_equal(e->ebx >> 24, 0);
    assert_false(e->ecx & (1u << 24));
    assert_false(e->edx & (1u << 28));
    assert_int_equal(find(c, 0x80000008, 0)->ecx & 0xff, 0);
    free(c);
}

static void no_room_for_leaves(void **state)
{
    struct kvm_cpuid2 *c = table(0x756e6547, 0xd);
    (void)state;
    assert_int_equal(cpuid_normalize(c, c->nent, 0, 2, false, true), -ENOSPC);
    free(c);
}

/* SMT on: two threads per core; vCPU 5 of 4 is thread 1 of core 2 (APIC ID bit 0 = thread). */
static void intel_smt_topology(void **state)
{
    struct kvm_cpuid2 *c = table(0x756e6547, 0xd);
    (void)state;
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 5, 6, true, true), 0);
    struct kvm_cpuid_entry2 *e = find(c, 0xb, 0);
    assert_int_equal(e->eax, 1); /* shift past the thread bit to reach the core */
    assert_int_equal(e->ebx, 2); /* threads per core */
    assert_int_equal(e->ecx, 0x100);
    assert_int_equal(e->edx, 5);
    e = find(c, 0xb, 1);
    assert_int_equal(e->eax, 3); /* 6 logical processors need 3 bits */
    assert_int_equal(e->ebx, 6);
    assert_int_equal(e->ecx, 0x201);
    assert_int_equal(find(c, 4, 0)->eax >> 26, 2);           /* 3 cores */
    assert_int_equal((find(c, 4, 0)->eax >> 14) & 0xfff, 1); /* L1: a core's 2 threads */
    assert_int_equal((find(c, 4, 1)->eax >> 14) & 0xfff, 5); /* L3: all 6 */
    assert_true(find(c, 1, 0)->edx & (1u << 28));            /* HTT */
    assert_int_equal((find(c, 1, 0)->ebx >> 16) & 0xff, 8);  /* 6 → 8 logical IDs */
    free(c);
}

static void amd_smt_topology(void **state)
{
    struct kvm_cpuid2 *c = table(0x68747541, 0xd);
    (void)state;
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 3, 4, true, false), 0);
    assert_true(find(c, 0x80000001, 0)->ecx & (1u << 22)); /* TOPOEXT on */
    struct kvm_cpuid_entry2 *e = find(c, 0x8000001e, 0);
    assert_int_equal(e->eax, 3);     /* extended APIC ID */
    assert_int_equal(e->ebx, 0x101); /* 2 threads per compute unit, unit 1 */
    assert_int_equal(e->ecx, 0);     /* one node */
    assert_int_equal((find(c, 0x8000001d, 0)->eax >> 14) & 0xfff, 1);
    assert_int_equal((find(c, 0x8000001d, 1)->eax >> 14) & 0xfff, 3);
    assert_int_equal(find(c, 0x80000008, 0)->ecx & 0xff, 3);
    assert_int_equal(find(c, 0xb, 0)->ebx, 2);
    free(c);
}

/* SMT on an AMD host whose CPUID stops before 0x8000001E (QEMU's TCG CPU): TOPOEXT goes on
 * all the same, with a 0x8000001E of our own and the extended range raised to reach it. */
static void amd_smt_adds_topoext_leaf(void **state)
{
    struct kvm_cpuid2 *c = table(0x68747541, 0xd);
    (void)state;
    c->nent -= 3; /* drop 0x8000001d (both) and 0x8000001e: the last three entries */
    c->entries[c->nent++] = (struct kvm_cpuid_entry2){.function = 0x80000000, .eax = 0x80000008};
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 1, 4, true, false), 0);
    assert_true(find(c, 0x80000001, 0)->ecx & (1u << 22));
    assert_int_equal(find(c, 0x80000000, 0)->eax, 0x8000001e);
    struct kvm_cpuid_entry2 *e = find(c, 0x8000001e, 0);
    assert_non_null(e);
    assert_int_equal(e->eax, 1);
    assert_int_equal(e->ebx, 0x100); /* 2 threads per unit, unit 0 */
    assert_int_equal(find(c, 0x80000008, 0)->ecx & 0xff, 3);
    free(c);
    /* no room for the new leaf */
    c = table(0x68747541, 0xd);
    c->nent -= 3;
    assert_int_equal(cpuid_normalize(c, c->nent, 0, 2, true, false), -ENOSPC);
    free(c);
}

/* Without SMT (or with one vCPU, or an odd count the API refuses anyway): one thread per core,
 * TOPOEXT off on AMD, as before. */
static void no_smt_keeps_single_threads(void **state)
{
    const unsigned counts[][2] = {{4, 0}, {1, 1}, {3, 1}};
    (void)state;
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        struct kvm_cpuid2 *c = table(0x68747541, 0xd);
        assert_int_equal(
                cpuid_normalize(c, CPUID_MAX_ENTRIES, 0, counts[i][0], counts[i][1], false), 0);
        assert_false(find(c, 0x80000001, 0)->ecx & (1u << 22));
        assert_int_equal(find(c, 0xb, 0)->ebx, 1);
        assert_int_equal(find(c, 0xb, 0)->eax, 0);
        assert_int_equal((find(c, 0x8000001e, 0)->ebx >> 8) & 0xff, 0);
        free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(intel_topology),
            cmocka_unit_test(single_vcpu_amd),
            cmocka_unit_test(no_room_for_leaves),
            cmocka_unit_test(intel_smt_topology),
            cmocka_unit_test(amd_smt_topology),
            cmocka_unit_test(amd_smt_adds_topoext_leaf),
            cmocka_unit_test(no_smt_keeps_single_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
