/* gm_ptr(): the one GPA → pointer path. Regions, their ends, the MMIO hole, overflow. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void small_vm_has_one_region(void **state)
{
    struct guest_mem m;
    (void)state;
    assert_int_equal(gm_create(&m, 128 * MiB), 0);
    assert_int_equal(m.nregions, 1);
    assert_int_equal(gm_low_end(&m), 128 * MiB);
    assert_non_null(gm_ptr(&m, 0, 1));
    assert_ptr_equal(gm_ptr(&m, 0x1000, 16), (uint8_t *)m.base + 0x1000);
    assert_non_null(gm_ptr(&m, 128 * MiB - 1, 1));
    assert_non_null(gm_ptr(&m, 0, 128 * MiB));
    assert_null(gm_ptr(&m, 0, 128 * MiB + 1));
    assert_null(gm_ptr(&m, 128 * MiB, 1));
    assert_null(gm_ptr(&m, 128 * MiB - 4, 8));
    assert_null(gm_ptr(&m, MMIO_HOLE_START, 1));
    gm_destroy(&m);
}

static void large_vm_splits_around_the_hole(void **state)
{
    struct guest_mem m;
    (void)state;
    assert_int_equal(gm_create(&m, 4 * GiB), 0);
    assert_int_equal(m.nregions, 2);
    assert_int_equal(gm_low_end(&m), MMIO_HOLE_START);
    assert_int_equal(m.regions[1].gpa, MMIO_HOLE_END);
    assert_int_equal(m.regions[1].size, GiB);
    assert_non_null(gm_ptr(&m, MMIO_HOLE_START - 8, 8));
    assert_null(gm_ptr(&m, MMIO_HOLE_START - 8, 9)); /* runs into the hole */
    assert_null(gm_ptr(&m, MMIO_HOLE_START, 1));
    assert_null(gm_ptr(&m, 0xfee00000, 4));        /* LAPIC */
    assert_null(gm_ptr(&m, MMIO_HOLE_END - 1, 2)); /* straddles hole and high RAM */
    assert_ptr_equal(gm_ptr(&m, MMIO_HOLE_END, 1), (uint8_t *)m.base + MMIO_HOLE_START);
    assert_non_null(gm_ptr(&m, MMIO_HOLE_END + GiB - 1, 1));
    assert_null(gm_ptr(&m, MMIO_HOLE_END + GiB, 1));
    /* a range spanning both regions is refused even though both ends are RAM */
    assert_null(gm_ptr(&m, 0, 5 * GiB));
    gm_destroy(&m);
}

static void overflow_is_refused(void **state)
{
    struct guest_mem m;
    (void)state;
    assert_int_equal(gm_create(&m, 4 * GiB), 0);
    assert_null(gm_ptr(&m, UINT64_MAX, 1));
    assert_null(gm_ptr(&m, UINT64_MAX, 2));
    assert_null(gm_ptr(&m, 0x1000, UINT64_MAX));
    assert_null(gm_ptr(&m, MMIO_HOLE_END, UINT64_MAX - MMIO_HOLE_END + 2)); /* wraps to 0 */
    assert_null(gm_ptr(&m, 16, UINT64_MAX - 15));
    assert_non_null(gm_ptr(&m, 16, 0)); /* len 0 is checked as 1 byte */
    assert_null(gm_ptr(&m, MMIO_HOLE_START, 0));
    gm_destroy(&m);
}

static void copy_helpers(void **state)
{
    struct guest_mem m;
    uint32_t v = 0xdeadbeef, r = 0;
    (void)state;
    assert_int_equal(gm_create(&m, 2 * MiB), 0);
    assert_int_equal(gm_write(&m, 0x100, &v, sizeof(v)), 0);
    memcpy(&r, gm_ptr(&m, 0x100, sizeof(r)), sizeof(r));
    assert_int_equal(r, v);
    assert_int_equal(gm_write(&m, 2 * MiB - 2, &v, sizeof(v)), -EFAULT);
    assert_null(gm_ptr(&m, 2 * MiB, sizeof(r)));
    gm_destroy(&m);
}

static void bad_sizes(void **state)
{
    struct guest_mem m;
    (void)state;
    assert_int_equal(gm_create(&m, 0), -EINVAL);
    assert_int_equal(gm_create(&m, 4097), -EINVAL);
    assert_int_equal(gm_create(&m, UINT64_MAX & ~0xfffULL), -EINVAL);
    assert_null(gm_ptr(&m, 0, 1)); /* a failed create leaves an empty map */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(small_vm_has_one_region),
            cmocka_unit_test(large_vm_splits_around_the_hole),
            cmocka_unit_test(overflow_is_refused),
            cmocka_unit_test(copy_helpers),
            cmocka_unit_test(bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
