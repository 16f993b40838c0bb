/* The snapshot file format (snapshot/format.c): what the writer makes the reader takes back,
 * and every way a file can be broken is refused with a reason before anything is looked up. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../snapshot/format.h"

/* A small file: two sections of two fields each; returns a malloc'd copy. */
static uint8_t *sample(size_t *len)
{
    struct snap_writer w;
    snapw_init(&w, SNAP_ARCH_X86_64);
    snapw_section(&w, 1, SNAP_REQUIRED);
    snapw_u64(&w, 1, 42);
    snapw_str(&w, 2, "hello");
    snapw_section(&w, 2, 0);
    uint32_t rec[3] = {1, 2, 3};
    snapw_field(&w, 7, rec, sizeof(rec));
    snapw_field(&w, 8, NULL, 0);
    const uint8_t *b = snapw_finish(&w, len);
    assert_non_null(b);
    uint8_t *copy = malloc(*len);
    memcpy(copy, b, *len);
    snapw_free(&w);
    return copy;
}

/* Recomputes the trailer after a deliberate change (so the CRC is not what refuses it). */
static void reseal(uint8_t *b, size_t len)
{
    uint64_t crc = snap_crc64(0, b, len - 8);
    for (int i = 0; i < 8; i++)
        b[len - 8 + i] = (uint8_t)(crc >> (8 * i));
}

static void refused(const uint8_t *b, size_t len, const char *want)
{
    struct snap_file f;
    char err[256] = "";
    assert_int_equal(snap_parse(&f, b, len, err, sizeof(err)), -EINVAL);
    if (!strstr(err, want))
        fail_msg("got \"%s\", wanted \"%s\"", err, want);
}

static void round_trip(void **state)
{
    struct snap_file f;
    char err[256], s[16];
    uint64_t v;
    size_t len;
    uint8_t *b = sample(&len);
    (void)state;

    assert_int_equal(snap_parse(&f, b, len, err, sizeof(err)), 0);
    assert_int_equal(f.version, SNAP_FORMAT_VERSION);
    assert_int_equal(f.arch, SNAP_ARCH_X86_64);
    assert_int_equal(f.nsections, 2);
    assert_int_equal(snap_count(&f, 1), 1);
    const struct snap_section *s1 = snap_find(&f, 1, 0), *s2 = snap_find(&f, 2, 0);
    assert_non_null(s1);
    assert_null(snap_find(&f, 1, 1));
    assert_int_equal(snap_get_u64(&f, s1, 1, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(snap_get_str(&f, s1, 2, s, sizeof(s)), 0);
    assert_string_equal(s, "hello");
    assert_int_equal(snap_get_str(&f, s1, 2, s, 5), -EINVAL); /* no room for it */
    assert_int_equal(snap_get_u64(&f, s1, 2, &v), -EINVAL);   /* not 8 bytes */
    assert_int_equal(snap_get_u64(&f, s1, 9, &v), -ENOENT);
    assert_non_null(snap_get(&f, s2, 8));
    assert_int_equal(snap_get(&f, s2, 8)->len, 0);
    snap_free(&f);
    free(b);
}

/* Records grow at their end: a shorter one reads with a zero tail, a longer one only when
 * the part the reader does not know is zero. */
static void records(void **state)
{
    struct snap_file f;
    char err[256];
    size_t len;
    uint8_t *b = sample(&len);
    uint32_t two[2], four[4];
    (void)state;

    assert_int_equal(snap_parse(&f, b, len, err, sizeof(err)), 0);
    const struct snap_section *s2 = snap_find(&f, 2, 0);
    memset(four, 0xff, sizeof(four));
    assert_int_equal(snap_get_record(&f, s2, 7, four, sizeof(four)), 0);
    assert_int_equal(four[2], 3);
    assert_int_equal(four[3], 0); /* the newer reader's field: zero */
    assert_int_equal(snap_get_record(&f, s2, 7, two, sizeof(two)), -EINVAL); /* 3 != 0 */
    snap_free(&f);
    free(b);
}

static void broken_files(void **state)
{
    size_t len;
    uint8_t *b = sample(&len);
    (void)state;

    refused(b, len - 1, "truncated");
    refused(b, 20, "not an ember snapshot");
    uint8_t *c = malloc(len);
    for (size_t i = 0; i < len; i += 7) { /* a flipped byte anywhere */
        memcpy(c, b, len);
        c[i] ^= 0x40;
        struct snap_file f;
        char err[256];
        assert_int_equal(snap_parse(&f, c, len, err, sizeof(err)), -EINVAL);
    }
    memcpy(c, b, len);
    c[len - 20] ^= 1;
    refused(c, len, "CRC mismatch");
    memcpy(c, b, len);
    c[8] = SNAP_FORMAT_VERSION + 1; /* a newer format */
    reseal(c, len);
    refused(c, len, "format version 2");
    memcpy(c, b, len);
    c[32 + 8] = 0xf0; /* the first section's length past the end */
    reseal(c, len);
    refused(c, len, "bad length");
    memcpy(c, b, len);
    c[32 + 16 + 4] = 0xf8; /* its first field's length past its section */
    reseal(c, len);
    refused(c, len, "runs past its section");
    refused(b, (size_t)SNAP_MAX_FILE + 1, "larger than");
    free(c);
    free(b);
}

/* Unknown sections and fields are skipped unless marked required. */
static void unknown_parts(void **state)
{
    struct snap_writer w;
    struct snap_file f;
    char err[256];
    size_t len;
    const uint32_t known[] = {1};
    (void)state;

    snapw_init(&w, SNAP_ARCH_X86_64);
    snapw_section(&w, 1, SNAP_REQUIRED);
    snapw_u64(&w, 1, 1);
    snapw_u64(&w, 99, 1); /* an optional field this reader does not know */
    snapw_section(&w, 50, 0);
    const uint8_t *b = snapw_finish(&w, &len);
    assert_int_equal(snap_parse(&f, b, len, err, sizeof(err)), 0);
    assert_null(snap_unknown_required(&f, known, 1));
    assert_int_equal(snap_check_fields(&f, snap_find(&f, 1, 0), (const uint32_t[]){1}, 1), 0);
    snap_free(&f);
    snapw_free(&w);

    snapw_init(&w, SNAP_ARCH_X86_64);
    snapw_section(&w, 1, SNAP_REQUIRED);
    snapw_u64(&w, 5 | SNAP_REQUIRED, 1);
    snapw_section(&w, 51, SNAP_REQUIRED);
    b = snapw_finish(&w, &len);
    assert_int_equal(snap_parse(&f, b, len, err, sizeof(err)), 0);
    const struct snap_section *u = snap_unknown_required(&f, known, 1);
    assert_non_null(u);
    assert_int_equal(u->type, 51);
    assert_int_equal(snap_check_fields(&f, snap_find(&f, 1, 0), (const uint32_t[]){1}, 1), 5);
    snap_free(&f);
    snapw_free(&w);
}

/* The writer refuses to grow past the cap instead of writing a file no reader takes. */
static void writer_cap(void **state)
{
    struct snap_writer w;
    size_t len;
    static uint8_t big[1 << 20];
    (void)state;

    snapw_init(&w, SNAP_ARCH_X86_64);
    snapw_section(&w, 1, 0);
    for (unsigned i = 0; i < (SNAP_MAX_FILE >> 20) + 1; i++)
        snapw_field(&w, 1, big, sizeof(big));
    assert_null(snapw_finish(&w, &len));
    snapw_free(&w);
    snapw_init(&w, SNAP_ARCH_X86_64);
    snapw_field(&w, 1, big, 8); /* a field outside any section */
    assert_null(snapw_finish(&w, &len));
    snapw_free(&w);
}

static void crc64_check_value(void **state)
{
    (void)state;
    /* CRC-64/XZ of "123456789" */
    assert_true(snap_crc64(0, "123456789", 9) == 0x995DC9BBDF1939FAULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(round_trip),   cmocka_unit_test(records),
            cmocka_unit_test(broken_files), cmocka_unit_test(unknown_parts),
            cmocka_unit_test(writer_cap),   cmocka_unit_test(crc64_check_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
