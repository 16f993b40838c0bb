/* ember's snapshot file format (format.c): a header, typed length-prefixed sections holding
 * tagged fields, and a CRC64 over everything. Nothing here knows what a VM is: layout.h names
 * the sections and fields ember writes, vmm/snapshot*.c fills and reads them.
 *
 *   header   8  magic "EMBERSNP"
 *            4  format version (SNAP_FORMAT_VERSION)      all integers little-endian
 *            4  architecture (SNAP_ARCH_X86_64)
 *            8  file length, CRC included
 *            4  header length (32: a later version may grow it; readers skip the rest)
 *            4  0
 *   section  4 type, 4 flags (SNAP_REQUIRED: a reader that does not know the type refuses the
 *            file), 8 payload length, payload padded to 8 bytes: a sequence of
 *   field    4 tag (bit 31 SNAP_REQUIRED: the same for fields), 4 length, data padded to 8
 *   trailer  8  CRC-64/XZ of every byte before it
 *
 * Compatibility rules: a reader skips sections and fields it does not know unless they are
 * required; a field that holds a record (snap_get_record) may be longer or shorter than the
 * reader's struct: a shorter one reads with its missing tail zero, a longer one only if the
 * part the reader does not know is zero. So a newer ember adds sections, fields and record
 * tails, and loads every older file; the format version changes only for what cannot be
 * expressed that way. */
#ifndef EMBER_SNAPSHOT_FORMAT_H
#define EMBER_SNAPSHOT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_MAGIC          "EMBERSNP"
#define SNAP_FORMAT_VERSION 1
#define SNAP_ARCH_X86_64    1
#define SNAP_HEADER_LEN     32
#define SNAP_MAX_FILE       (32u << 20) /* a snapshot of 32 vCPUs and 19 devices is < 1 MiB */
#define SNAP_MAX_SECTIONS   256
#define SNAP_MAX_FIELDS     8192
#define SNAP_REQUIRED       0x80000000u /* section flags bit; field tag bit */

/* ---- writing: the file is built in memory, then written in one go ----------------------- */
struct snap_writer {
    uint8_t *buf;
    size_t len, cap;
    size_t section; /* offset of the open section's header, or 0 */
    bool failed;    /* out of memory or over SNAP_MAX_FILE: snapw_finish says so */
};

/* snapw_init(w, arch): an empty file of architecture arch. */
void snapw_init(struct snap_writer *w, uint32_t arch);
/* snapw_section(w, type, flags): closes the open section, if any, and opens a new one. */
void snapw_section(struct snap_writer *w, uint32_t type, uint32_t flags);
/* snapw_field(w, tag, data, len): appends a field to the open section. */
void snapw_field(struct snap_writer *w, uint32_t tag, const void *data, size_t len);
void snapw_u64(struct snap_writer *w, uint32_t tag, uint64_t v);
void snapw_str(struct snap_writer *w, uint32_t tag, const char *s); /* without its NUL */
/* snapw_finish(w, len): closes the file (length, CRC). Returns the buffer (w keeps owning
 * it) with *len its size, or NULL if it could not be built. */
const uint8_t *snapw_finish(struct snap_writer *w, size_t *len);
/* snapw_free(w): frees the buffer. */
void snapw_free(struct snap_writer *w);

/* ---- reading: everything checked before anything is looked up ---------------------------- */
struct snap_field {
    uint32_t tag; /* without SNAP_REQUIRED */
    bool required;
    uint32_t len;
    const uint8_t *data;
};

struct snap_section {
    uint32_t type;
    uint32_t flags;
    uint64_t len;
    unsigned first, nfields; /* its fields in snap_file.fields */
};

struct snap_file {
    uint32_t version, arch;
    uint64_t len;
    struct snap_section *sections;
    unsigned nsections;
    struct snap_field *fields;
    unsigned nfields;
};

/* snap_parse(f, buf, len, err, errlen): checks a whole file held in buf (the caller keeps buf
 * alive while f is used): size cap, magic, CRC (before anything else is read), version and
 * every section and field length. Returns 0, or -EINVAL with a one-line reason in err. */
int snap_parse(struct snap_file *f, const uint8_t *buf, size_t len, char *err, size_t errlen);
/* snap_free(f): frees what snap_parse allocated. */
void snap_free(struct snap_file *f);
/* snap_crc64(crc, data, len): CRC-64/XZ (ECMA-182 polynomial, reflected), continued from crc
 * (start with 0). */
uint64_t snap_crc64(uint64_t crc, const void *data, size_t len);

/* snap_find(f, type, nth): Returns the nth (from 0) section of a type, or NULL. */
const struct snap_section *snap_find(const struct snap_file *f, uint32_t type, unsigned nth);
/* snap_count(f, type): Returns how many sections of a type the file has. */
unsigned snap_count(const struct snap_file *f, uint32_t type);
/* snap_get(f, s, tag): Returns the first field with tag in section s, or NULL. */
const struct snap_field *snap_get(const struct snap_file *f, const struct snap_section *s,
                                  uint32_t tag);
/* snap_get_u64(f, s, tag, v): Returns 0 with *v, or -ENOENT (missing) / -EINVAL (not 8
 * bytes). */
int snap_get_u64(const struct snap_file *f, const struct snap_section *s, uint32_t tag,
                 uint64_t *v);
/* snap_get_str(f, s, tag, out, size): copies a string field (no NUL inside, shorter than size).
 * Returns 0, -ENOENT or -EINVAL. */
int snap_get_str(const struct snap_file *f, const struct snap_section *s, uint32_t tag, char *out,
                 size_t size);
/* snap_get_record(f, s, tag, out, size): copies a record field into out (size bytes) by the
 * compatibility rule above (shorter: tail zeroed; longer: its extra tail must be zero).
 * Returns 0, -ENOENT or -EINVAL. */
int snap_get_record(const struct snap_file *f, const struct snap_section *s, uint32_t tag,
                    void *out, size_t size);
/* snap_unknown_required(f, known, nknown, fields_known): Returns the first required section
 * whose type is not in known[], or NULL (fields: see snap_check_fields). */
const struct snap_section *snap_unknown_required(const struct snap_file *f, const uint32_t *known,
                                                 unsigned nknown);
/* snap_check_fields(f, s, known, nknown): Returns the tag of the first required field of s
 * that is not in known[], or 0. */
uint32_t snap_check_fields(const struct snap_file *f, const struct snap_section *s,
                           const uint32_t *known, unsigned nknown);

#endif
