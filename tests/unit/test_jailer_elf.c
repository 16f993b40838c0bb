/* Unit tests for jailer/elf.c: only a static x86-64 ELF may be jailed. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../jailer/jailer.h"

static char path[] = "/tmp/ember-test-elf-XXXXXX";

static void write_file(const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* An ELF header followed by two program headers; the second may be PT_INTERP. */
struct image {
    Elf64_Ehdr eh;
    Elf64_Phdr ph[2];
    char interp[32];
};

static void make_image(struct image *im, bool interp)
{
    memset(im, 0, sizeof(*im));
    memcpy(im->eh.e_ident, ELFMAG, SELFMAG);
    im->eh.e_ident[EI_CLASS] = ELFCLASS64;
    im->eh.e_ident[EI_DATA] = ELFDATA2LSB;
    im->eh.e_type = ET_EXEC;
    im->eh.e_machine = EM_X86_64;
    im->eh.e_phoff = offsetof(struct image, ph);
    im->eh.e_phentsize = sizeof(Elf64_Phdr);
    im->eh.e_phnum = 2;
    im->ph[0].p_type = PT_LOAD;
    im->ph[1].p_type = interp ? PT_INTERP : PT_NOTE;
    im->ph[1].p_offset = offsetof(struct image, interp);
    strcpy(im->interp, "/lib/ld-test.so");
}

static int setup(void **state)
{
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void test_static_elf_is_accepted(void **state)
{
    struct image im;

    (void)state;
    make_image(&im, false);
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), 0);
    im.eh.e_type = ET_DYN; /* static-pie */
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), 0);
}

static void test_dynamic_elf_is_refused(void **state)
{
    struct image im;

    (void)state;
    make_image(&im, true);
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
}

static void test_script_is_refused(void **state)
{
    (void)state;
    write_file("#!/bin/sh\nexit 0\n", 17);
    assert_int_equal(elf_check_static(path), -ENOEXEC);
}

static void test_not_elf_or_wrong_machine_is_refused(void **state)
{
    struct image im;

    (void)state;
    write_file("hello", 5);
    assert_int_equal(elf_check_static(path), -ENOEXEC);
    write_file("", 0);
    assert_int_equal(elf_check_static(path), -ENOEXEC);
    make_image(&im, false);
    im.eh.e_machine = EM_AARCH64;
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
    make_image(&im, false);
    im.eh.e_ident[EI_CLASS] = ELFCLASS32;
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
    make_image(&im, false);
    im.eh.e_type = ET_REL;
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
}

static void test_malformed_program_headers_are_refused(void **state)
{
    struct image im;

    (void)state;
    make_image(&im, false);
    im.eh.e_phnum = 1000;
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
    make_image(&im, false);
    im.eh.e_phentsize = 12;
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
    make_image(&im, false);
    im.eh.e_phoff = 1u << 30; /* past the end of the file */
    write_file(&im, sizeof(im));
    assert_int_equal(elf_check_static(path), -ENOEXEC);
}

static void test_missing_file(void **state)
{
    (void)state;
    assert_int_equal(elf_check_static("/nonexistent/ember"), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_static_elf_is_accepted),
            cmocka_unit_test(test_dynamic_elf_is_refused),
            cmocka_unit_test(test_script_is_refused),
            cmocka_unit_test(test_not_elf_or_wrong_machine_is_refused),
            cmocka_unit_test(test_malformed_program_headers_are_refused),
            cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
