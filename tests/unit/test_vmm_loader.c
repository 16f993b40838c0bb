/* The ELF and bzImage loaders against well-formed and malformed images: every bad image gets
 * a clear error, never a crash or a write outside guest RAM. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

#define MiB     (1ULL << 20)
#define IMG_MAX (64 * 1024)

static uint8_t img[IMG_MAX];
static struct guest_mem mem;
static struct boot_info bi;
static char err[256];

/* Writes img[0..len) to a temporary file, as ember reads a real image, and runs a loader. */
static int run_loader(int (*loader)(const struct guest_mem *, int, uint64_t, struct boot_info *,
                                    char *, size_t),
                      size_t len)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, len, f), len);
    fflush(f);
    err[0] = 0;
    int ret = loader(&mem, fileno(f), len, &bi, err, sizeof(err));
    fclose(f);
    if (ret)
        assert_true(strlen(err) > 0); /* every failure says why */
    return ret;
}

static int load(size_t len)
{
    return run_loader(loader_load_kernel, len);
}

static int setup_mem(uint64_t size)
{
    gm_destroy(&mem);
    return gm_create(&mem, size);
}

static int setup(void **state)
{
    (void)state;
    memset(img, 0, sizeof(img));
    return setup_mem(128 * MiB);
}

static int teardown(void **state)
{
    (void)state;
    gm_destroy(&mem);
    return 0;
}

/* A one-segment ELF: headers, then the segment's bytes at file offset 0x1000. */
static size_t make_elf(uint64_t paddr, uint64_t filesz, uint64_t memsz, uint64_t entry)
{
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));

    memset(img, 0, sizeof(img));
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_entry = entry;
    eh->e_phoff = sizeof(*eh);
    eh->e_phentsize = sizeof(*ph);
    eh->e_phnum = 1;
    ph->p_type = PT_LOAD;
    ph->p_offset = 0x1000;
    ph->p_paddr = paddr;
    ph->p_filesz = filesz;
    ph->p_memsz = memsz;
    for (uint64_t i = 0; i < filesz && 0x1000 + i < IMG_MAX; i++)
        img[0x1000 + i] = (uint8_t)(i * 7 + 1);
    return 0x1000 + (size_t)filesz;
}

static void elf_loads(void **state)
{
    (void)state;
    size_t len = make_elf(0x1000000, 0x2000, 0x5000, 0x1000100);
    assert_int_equal(load(len), 0);
    assert_int_equal(bi.entry, 0x1000100);
    assert_int_equal(bi.kernel_end, 0x1005000);
    assert_int_equal(bi.mode, BOOT_LINUX64);
    assert_int_equal(bi.pvh_entry, 0);
    assert_memory_equal(gm_ptr(&mem, 0x1000000, 0x2000), img + 0x1000, 0x2000);
}

static void elf_pvh_note_is_found(void **state)
{
    (void)state;
    size_t len = make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
    uint8_t note[] = {4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0, 0x40, 0, 0, 1};
    eh->e_phnum = 2;
    ph[1] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = 0x2000, .p_filesz = sizeof(note)};
    memcpy(img + 0x2000, note, sizeof(note));
    assert_int_equal(load(0x3000 > len ? 0x3000 : len), 0);
    assert_int_equal(bi.pvh_entry, 0x1000040);
    /* a note whose sizes run past its segment is ignored, not followed */
    note[4] = 0xff;
    memcpy(img + 0x2000, note, sizeof(note));
    assert_int_equal(load(0x3000), 0);
    assert_int_equal(bi.pvh_entry, 0);
}

static void elf_malformed(void **state)
{
    (void)state;
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
    size_t len;

    len = make_elf(0x1000000, 0x2000, 0x2000, 0x1000000);
    assert_int_equal(load(0x1800), -EINVAL); /* truncated inside the segment */
    assert_non_null(strstr(err, "outside the file"));
    assert_true(load(100) < 0); /* truncated to nothing */

    make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    eh->e_ident[EI_CLASS] = ELFCLASS32;
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "64-bit"));

    make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    eh->e_machine = EM_AARCH64;
    assert_true(load(len) < 0);

    make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    eh->e_phnum = 0xffff;
    assert_true(load(len) < 0);

    make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    eh->e_phoff = UINT64_MAX - 8;
    assert_true(load(len) < 0);

    make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    ph->p_offset = UINT64_MAX - 0x10;
    assert_true(load(len) < 0);

    make_elf(0x1000000, 0x200, 0x100, 0x1000000); /* filesz > memsz */
    assert_true(load(len) < 0);

    make_elf(0x1000000, 0x100, UINT64_MAX, 0x1000000); /* absurd size */
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "outside guest RAM"));

    make_elf(UINT64_MAX - 0xff, 0x100, 0x100, 0x1000000); /* wraps around */
    assert_true(load(len) < 0);

    make_elf(512 * MiB, 0x100, 0x100, 512 * MiB); /* beyond 128 MiB of RAM */
    assert_true(load(len) < 0);

    make_elf(0x7000, 0x100, 0x100, 0x7000); /* over the zero page */
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "below 1 MiB"));

    make_elf(0x1000000, 0x100, 0x100, 0x9000000); /* entry outside RAM */
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "entry"));

    make_elf(0x1000000, 0x100, 0x100, 0x1000000);
    ph->p_type = PT_NULL; /* nothing to load */
    assert_true(load(len) < 0);
}

static void elf_segment_in_mmio_hole(void **state)
{
    (void)state;
    assert_int_equal(setup_mem(4ULL << 30), 0);
    size_t len = make_elf(MMIO_HOLE_START - 0x1000, 0x100, 0x2000, 0x1000000);
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "MMIO hole"));
    make_elf(MMIO_HOLE_START + 0x1000, 0x100, 0x100, 0x1000000);
    assert_true(load(len) < 0);
}

/* A bzImage: one setup sector after the boot sector, then the payload. */
static size_t make_bzimage(uint16_t version, size_t payload)
{
    memset(img, 0, sizeof(img));
    img[0x1f1] = 1;                       /* setup_sects */
    img[0x1fe] = 0x55, img[0x1ff] = 0xaa; /* boot_flag */
    img[0x200] = 0xeb, img[0x201] = 0x66; /* jump: header ends at 0x268 */
    memcpy(img + 0x202, "HdrS", 4);
    memcpy(img + 0x206, &version, 2);
    img[0x211] = 1; /* LOADED_HIGH */
    uint32_t initrd_max = 0x7fffffff, init_size = 0x100000;
    uint64_t pref = 0x1000000;
    memcpy(img + 0x22c, &initrd_max, 4);
    img[0x234] = 1; /* relocatable */
    img[0x236] = 1; /* XLF_KERNEL_64 */
    memcpy(img + 0x258, &pref, 8);
    memcpy(img + 0x260, &init_size, 4);
    for (size_t i = 0; i < payload; i++)
        img[0x400 + i] = (uint8_t)(i + 3);
    return 0x400 + payload;
}

static void bzimage_loads(void **state)
{
    (void)state;
    size_t len = make_bzimage(0x020f, 0x3000);
    assert_int_equal(load(len), 0);
    assert_int_equal(bi.entry, 0x1000200);
    assert_int_equal(bi.kernel_end, 0x1100000);
    assert_true(bi.has_setup_header);
    assert_int_equal(bi.setup_hdr_len, 0x268 - 0x1f1);
    assert_memory_equal(bi.setup_hdr, img + 0x1f1, bi.setup_hdr_len);
    assert_int_equal(bi.initrd_addr_max, 0x7fffffff);
    assert_memory_equal(gm_ptr(&mem, 0x1000000, 0x3000), img + 0x400, 0x3000);
}

static void bzimage_malformed(void **state)
{
    (void)state;
    size_t len = make_bzimage(0x020b, 0x1000);
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "2.12"));

    make_bzimage(0x020f, 0x1000);
    img[0x1fe] = 0;
    assert_true(load(len) < 0);

    make_bzimage(0x020f, 0x1000);
    img[0x236] = 0; /* no 64-bit entry */
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "64-bit"));

    make_bzimage(0x020f, 0x1000);
    img[0x211] = 0; /* zImage */
    assert_true(load(len) < 0);

    make_bzimage(0x020f, 0x1000);
    img[0x1f1] = 0xff; /* setup runs past the end of the file */
    assert_true(load(len) < 0);
    assert_non_null(strstr(err, "truncated"));

    make_bzimage(0x020f, 0x1000);
    memset(img + 0x260, 0xff, 4); /* init_size of 4 GiB in 128 MiB of RAM */
    assert_true(load(len) < 0);

    make_bzimage(0x020f, 0x1000);
    memset(img + 0x258, 0xff, 8); /* absurd preferred address */
    assert_true(load(len) < 0);

    make_bzimage(0x020f, 0x1000);
    assert_true(load(0x260) < 0); /* truncated inside the header */
}

/* Found by tests/fuzz/fuzz_vmm_loader.c: a payload too short to reach the 64-bit entry at
 * +0x200 was loaded, with the entry past the image and, at the end of RAM, outside guest RAM. */
static void bzimage_entry_outside_payload(void **state)
{
    (void)state;
    uint64_t pref = 128 * MiB - 0x100;
    uint32_t init_size = 0;
    size_t len = make_bzimage(0x020f, 0x100);
    memcpy(img + 0x258, &pref, 8);
    memcpy(img + 0x260, &init_size, 4);
    assert_true(load(len) < 0); /* the entry would be at 128 MiB + 0x100 */
    assert_non_null(strstr(err, "entry"));
    assert_true(load(make_bzimage(0x020f, 0x200)) < 0); /* entry just past the image */
    assert_int_equal(load(make_bzimage(0x020f, 0x201)), 0);
    assert_int_equal(bi.entry, 0x1000200);
}

static void not_a_kernel(void **state)
{
    (void)state;
    memset(img, 'A', 0x2000);
    assert_int_equal(load(0x2000), -ENOEXEC);
    assert_non_null(strstr(err, "not a kernel"));
}

static int load_initrd(size_t len)
{
    return run_loader(loader_load_initrd, len);
}

static void initrd_at_top_of_low_ram(void **state)
{
    (void)state;
    assert_int_equal(load(make_elf(0x1000000, 0x100, 0x100, 0x1000000)), 0);
    memset(img, 0x5a, 0x1801);
    assert_int_equal(load_initrd(0x1801), 0);
    assert_int_equal(bi.initrd_addr, (128 * MiB - 0x1801) & ~0xfffULL);
    assert_int_equal(bi.initrd_size, 0x1801);
    assert_memory_equal(gm_ptr(&mem, bi.initrd_addr, 0x1801), img, 0x1801);
    assert_int_equal(load_initrd(0), -EINVAL);

    /* an initrd that would overlap the kernel is refused */
    assert_int_equal(setup_mem(16 * MiB + 0x2000), 0);
    assert_int_equal(load(make_elf(0x1000000, 0x100, 0x1000, 0x1000000)), 0);
    assert_int_equal(load_initrd(0x800), 0);
    assert_true(load_initrd(0x1800) < 0);
    assert_non_null(strstr(err, "does not fit"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(elf_loads, setup, teardown),
            cmocka_unit_test_setup_teardown(elf_pvh_note_is_found, setup, teardown),
            cmocka_unit_test_setup_teardown(elf_malformed, setup, teardown),
            cmocka_unit_test_setup_teardown(elf_segment_in_mmio_hole, setup, teardown),
            cmocka_unit_test_setup_teardown(bzimage_loads, setup, teardown),
            cmocka_unit_test_setup_teardown(bzimage_malformed, setup, teardown),
            cmocka_unit_test_setup_teardown(bzimage_entry_outside_payload, setup, teardown),
            cmocka_unit_test_setup_teardown(not_a_kernel, setup, teardown),
            cmocka_unit_test_setup_teardown(initrd_at_top_of_low_ram, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
