/* The boot structures: zero page (header, command line, initrd, e820), page tables, GDT, MP
 * table, PVH start info — checked in guest memory as a guest would read them. */
#include <asm/bootparam.h>
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

static struct guest_mem mem;

static int teardown(void **state)
{
    (void)state;
    gm_destroy(&mem);
    return 0;
}

static uint8_t sum(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t s = 0;
    while (len--)
        s += *b++;
    return s;
}

static void zero_page_for_vmlinux(void **state)
{
    struct boot_info bi = {.mode = BOOT_LINUX64,
                           .entry = 0x1000000,
                           .kernel_end = 0x2000000,
                           .initrd_addr = 0x7000000,
                           .initrd_size = 0x12345};
    (void)state;
    assert_int_equal(gm_create(&mem, 128 * MiB), 0);
    assert_int_equal(boot_setup(&mem, &bi, "console=ttyS0 panic=1", 1), 0);

    struct boot_params *bp = gm_ptr(&mem, ZERO_PAGE_ADDR, sizeof(*bp));
    assert_int_equal(bp->hdr.boot_flag, 0xaa55);
    assert_int_equal(bp->hdr.header, 0x53726448);
    assert_int_equal(bp->hdr.type_of_loader, 0xff);
    assert_int_equal(bp->hdr.cmd_line_ptr, CMDLINE_ADDR);
    assert_int_equal(bp->hdr.cmdline_size, strlen("console=ttyS0 panic=1"));
    assert_int_equal(bp->hdr.kernel_alignment, 0x1000000);
    assert_int_equal(bp->hdr.ramdisk_image, 0x7000000);
    assert_int_equal(bp->hdr.ramdisk_size, 0x12345);
    assert_string_equal((char *)gm_ptr(&mem, CMDLINE_ADDR, 1), "console=ttyS0 panic=1");

    assert_int_equal(bp->e820_entries, 3);
    assert_int_equal(bp->e820_table[0].addr, 0);
    assert_int_equal(bp->e820_table[0].size, SYSMEM_START);
    assert_int_equal(bp->e820_table[0].type, 1);
    assert_int_equal(bp->e820_table[1].addr, SYSMEM_START);
    assert_int_equal(bp->e820_table[1].type, 2);
    assert_int_equal(bp->e820_table[2].addr, HIMEM_START);
    assert_int_equal(bp->e820_table[2].size, 128 * MiB - HIMEM_START);
    assert_int_equal(bp->e820_table[2].type, 1);

    /* identity map: PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB */
    uint64_t *pml4 = gm_ptr(&mem, PML4_ADDR, 8), *pdpt = gm_ptr(&mem, PDPT_ADDR, 8);
    uint64_t *pd = gm_ptr(&mem, PD_ADDR, 4096);
    assert_int_equal(pml4[0], PDPT_ADDR | 3);
    assert_int_equal(pdpt[0], PD_ADDR | 3);
    assert_int_equal(pd[0], 0x83);
    assert_int_equal(pd[511], (511ULL << 21) | 0x83);

    uint64_t *gdt = gm_ptr(&mem, BOOT_GDT_ADDR, 32);
    assert_int_equal(gdt[0], 0);
    assert_int_equal(gdt[1], 0x00af9b000000ffffULL); /* 64-bit code */
    assert_int_equal(gdt[2], 0x00cf93000000ffffULL); /* data */
    assert_int_equal(gdt[3], 0x008f8b000000ffffULL); /* TSS */
}

static void zero_page_for_bzimage_and_high_ram(void **state)
{
    struct boot_info bi = {
            .mode = BOOT_LINUX64, .has_setup_header = true, .setup_hdr_len = 0x268 - 0x1f1};
    (void)state;
    memset(bi.setup_hdr, 0, sizeof(bi.setup_hdr));
    bi.setup_hdr[0] = 7;                /* setup_sects, copied through */
    bi.setup_hdr[0x206 - 0x1f1] = 0x0f; /* version 2.15 */
    bi.setup_hdr[0x206 - 0x1f1 + 1] = 0x02;
    bi.setup_hdr[0x210 - 0x1f1] = 0x42; /* type_of_loader: overwritten */
    assert_int_equal(gm_create(&mem, 4 * GiB), 0);
    assert_int_equal(boot_setup(&mem, &bi, "", 2), 0);

    struct boot_params *bp = gm_ptr(&mem, ZERO_PAGE_ADDR, sizeof(*bp));
    assert_int_equal(bp->hdr.setup_sects, 7);
    assert_int_equal(bp->hdr.version, 0x020f);
    assert_int_equal(bp->hdr.type_of_loader, 0xff);
    assert_int_equal(bp->hdr.kernel_alignment, 0); /* the image's own value */
    assert_int_equal(bp->hdr.ramdisk_size, 0);
    assert_int_equal(bp->e820_entries, 4);
    assert_int_equal(bp->e820_table[2].addr + bp->e820_table[2].size, MMIO_HOLE_START);
    assert_int_equal(bp->e820_table[3].addr, MMIO_HOLE_END);
    assert_int_equal(bp->e820_table[3].size, GiB);
}

static void command_line_limit(void **state)
{
    struct boot_info bi = {.mode = BOOT_LINUX64};
    char line[CMDLINE_MAX + 1];
    (void)state;
    assert_int_equal(gm_create(&mem, 64 * MiB), 0);
    memset(line, 'a', sizeof(line));
    line[CMDLINE_MAX - 1] = 0; /* 2047 characters + NUL: fits */
    assert_int_equal(boot_setup(&mem, &bi, line, 1), 0);
    assert_int_equal(strlen(gm_ptr(&mem, CMDLINE_ADDR, 1)), CMDLINE_MAX - 1);
    line[CMDLINE_MAX - 1] = 'a';
    line[CMDLINE_MAX] = 0; /* one too many */
    assert_int_equal(boot_setup(&mem, &bi, line, 1), -E2BIG);
}

static void mp_table(void **state)
{
    struct boot_info bi = {.mode = BOOT_LINUX64};
    (void)state;
    assert_int_equal(gm_create(&mem, 64 * MiB), 0);
    for (unsigned n = 1; n <= VCPUS_MAX; n += 31) {
        assert_int_equal(boot_setup(&mem, &bi, "x", n), 0);
        uint8_t *mpf = gm_ptr(&mem, SYSMEM_START, 16);
        assert_memory_equal(mpf, "_MP_", 4);
        assert_int_equal(sum(mpf, 16), 0);
        uint32_t table;
        memcpy(&table, mpf + 4, 4);
        uint8_t *t = gm_ptr(&mem, table, 44);
        assert_memory_equal(t, "PCMP", 4);
        uint16_t len, count;
        memcpy(&len, t + 4, 2);
        memcpy(&count, t + 34, 2);
        assert_true(table + len <= SYSMEM_END);
        assert_int_equal(sum(t, len), 0);
        assert_int_equal(count, n + 1 + 1 + 24 + 2); /* CPUs, bus, IOAPIC, 24 IRQs, 2 LINTs */
        /* CPU entries: APIC IDs 0..n-1, the first one is the BSP */
        for (unsigned i = 0; i < n; i++) {
            uint8_t *c = t + 44 + i * 20;
            assert_int_equal(c[0], 0);
            assert_int_equal(c[1], i);
            assert_int_equal(c[3], i == 0 ? 3 : 1);
        }
        uint8_t *ioapic = t + 44 + n * 20 + 8;
        assert_int_equal(ioapic[0], 2);
        assert_int_equal(ioapic[1], n + 1);
    }
    assert_int_equal(mptable_write(&mem, 0), -EINVAL);
    assert_int_equal(mptable_write(&mem, VCPUS_MAX + 1), -EINVAL);
}

static void pvh_start_info(void **state)
{
    struct boot_info bi = {.mode = BOOT_PVH, .initrd_addr = 0x3000000, .initrd_size = 0x1000};
    (void)state;
    assert_int_equal(gm_create(&mem, 64 * MiB), 0);
    assert_int_equal(boot_setup(&mem, &bi, "pvh", 1), 0);
    uint32_t *info = gm_ptr(&mem, PVH_INFO_ADDR, 56);
    assert_int_equal(info[0], 0x336ec578);
    assert_int_equal(info[1], 1);
    assert_int_equal(info[3], 1); /* nr_modules */
    uint64_t *mod = gm_ptr(&mem, PVH_MODLIST_ADDR, 16);
    assert_int_equal(mod[0], 0x3000000);
    assert_int_equal(mod[1], 0x1000);
    uint64_t *gdt = gm_ptr(&mem, BOOT_GDT_ADDR, 32);
    assert_int_equal(gdt[1], 0x00cf9b000000ffffULL); /* flat 32-bit code */
}

static void tiny_memory_is_refused(void **state)
{
    struct boot_info bi = {.mode = BOOT_LINUX64};
    (void)state;
    assert_int_equal(gm_create(&mem, 512 * 1024), 0);
    assert_true(boot_setup(&mem, &bi, "", 1) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(zero_page_for_vmlinux, teardown),
            cmocka_unit_test_teardown(zero_page_for_bzimage_and_high_ram, teardown),
            cmocka_unit_test_teardown(command_line_limit, teardown),
            cmocka_unit_test_teardown(mp_table, teardown),
            cmocka_unit_test_teardown(pvh_start_info, teardown),
            cmocka_unit_test_teardown(tiny_memory_is_refused, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
