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
            {.function = 0x80000008, .ecx = 0x3f},
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
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 2, 3, true), 0);
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
    assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 0, 1, false), 0);
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
    assert_int_equal(cpuid_normalize(c, c->nent, 0, 2, true), -ENOSPC);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(intel_topology),
            cmocka_unit_test(single_vcpu_amd),
            cmocka_unit_test(no_room_for_leaves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
