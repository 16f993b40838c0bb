/* The snapshot file format (format.h): an in-memory writer and a reader that checks the whole
 * file (cap, CRC, every length) before the caller looks anything up. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../vmm/vmm.h"
#include "format.h"

#define SEC_HDR   16
#define FIELD_HDR 8

static uint64_t crc_table[256];

static void crc_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint64_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0xC96C5795D7870F42ULL : c >> 1;
        crc_table[i] = c;
    }
}

uint64_t snap_crc64(uint64_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;

    if (!crc_table[1])
        crc_init(); /* idempotent: a racing second caller writes the same values */
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* Room for n more bytes (zeroed). Returns a pointer to them, or NULL (w->failed). */
static uint8_t *grow(struct snap_writer *w, size_t n)
{
    if (w->failed || n > SNAP_MAX_FILE || w->len + n > SNAP_MAX_FILE) {
        w->failed = true;
        return NULL;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = true;
            return NULL;
        }
        w->buf = b;
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    memset(p, 0, n);
    w->len += n;
    return p;
}

void snapw_init(struct snap_writer *w, uint32_t arch)
{
    memset(w, 0, sizeof(*w));
    uint8_t *h = grow(w, SNAP_HEADER_LEN);
    if (!h)
        return;
    memcpy(h, SNAP_MAGIC, 8);
    put32(h + 8, SNAP_FORMAT_VERSION);
    put32(h + 12, arch);
    put32(h + 24, SNAP_HEADER_LEN);
}

static void close_section(struct snap_writer *w)
{
    if (w->section && !w->failed)
        put64(w->buf + w->section + 8, w->len - w->section - SEC_HDR);
    w->section = 0;
}

void snapw_section(struct snap_writer *w, uint32_t type, uint32_t flags)
{
    close_section(w);
    uint8_t *h = grow(w, SEC_HDR);
    if (!h)
        return;
    put32(h, type);
    put32(h + 4, flags);
    w->section = (size_t)(h - w->buf);
}

void snapw_field(struct snap_writer *w, uint32_t tag, const void *data, size_t len)
{
    if (!w->section || len > UINT32_MAX) {
        w->failed = true;
        return;
    }
    uint8_t *h = grow(w, FIELD_HDR + pad8(len));
    if (!h)
        return;
    put32(h, tag);
    put32(h + 4, (uint32_t)len);
    if (len)
        memcpy(h + FIELD_HDR, data, len);
}

void snapw_u64(struct snap_writer *w, uint32_t tag, uint64_t v)
{
    uint8_t b[8];
    put64(b, v);
    snapw_field(w, tag, b, sizeof(b));
}

void snapw_str(struct snap_writer *w, uint32_t tag, const char *s)
{
    snapw_field(w, tag, s, strlen(s));
}

const uint8_t *snapw_finish(struct snap_writer *w, size_t *len)
{
    close_section(w);
    uint8_t *t = grow(w, 8);
    if (!t || w->failed)
        return NULL;
    put64(w->buf + 16, w->len);
    put64(t, snap_crc64(0, w->buf, w->len - 8));
    *len = w->len;
    return w->buf;
}

void snapw_free(struct snap_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

/* ---- reading ----------------------------------------------------------------------------- */

/* Counts, then (out non-NULL) records the fields of one section's payload. */
static int walk_fields(const uint8_t *p, uint64_t len, struct snap_field *out, unsigned *n,
                       char *err, size_t errlen)
{
    uint64_t off = 0;
    unsigned count = 0;

    while (off < len) {
        if (len - off < FIELD_HDR)
            return errf(err, errlen, -EINVAL, "a field header runs past its section");
        uint32_t tag = get32(p + off), flen = get32(p + off + 4);
        if (pad8(flen) > len - off - FIELD_HDR)
            return errf(err, errlen, -EINVAL, "field 0x%x (%u bytes) runs past its section",
                        tag & ~SNAP_REQUIRED, flen);
        if (*n + count >= SNAP_MAX_FIELDS)
            return errf(err, errlen, -EINVAL, "more than %d fields", SNAP_MAX_FIELDS);
        if (out)
            out[count] = (struct snap_field){.tag = tag & ~SNAP_REQUIRED,
                                             .required = (tag & SNAP_REQUIRED) != 0,
                                             .len = flen,
                                             .data = p + off + FIELD_HDR};
        count++;
        off += FIELD_HDR + pad8(flen);
    }
    *n += count;
    return 0;
}

/* The sections after the header; with f->sections/fields NULL only counts them. */
static int walk(struct snap_file *f, const uint8_t *buf, size_t body_end, size_t hdr_len, char *err,
                size_t errlen)
{
    size_t off = hdr_len;
    unsigned ns = 0, nf = 0;

    while (off < body_end) {
        if (body_end - off < SEC_HDR)
            return errf(err, errlen, -EINVAL, "a section header runs past the end");
        uint32_t type = get32(buf + off), flags = get32(buf + off + 4);
        uint64_t len = get64(buf + off + 8);
        if (len > body_end - off - SEC_HDR || (len & 7))
            return errf(err, errlen, -EINVAL, "section 0x%x has a bad length (%llu bytes)", type,
                        (unsigned long long)len);
        if (ns >= SNAP_MAX_SECTIONS)
            return errf(err, errlen, -EINVAL, "more than %d sections", SNAP_MAX_SECTIONS);
        unsigned first = nf;
        int ret = walk_fields(buf + off + SEC_HDR, len, f->fields ? f->fields + nf : NULL, &nf, err,
                              errlen);
        if (ret)
            return ret;
        if (f->sections)
            f->sections[ns] = (struct snap_section){.type = type,
                                                    .flags = flags,
                                                    .len = len,
                                                    .first = first,
                                                    .nfields = nf - first};
        ns++;
        off += SEC_HDR + len;
    }
    f->nsections = ns;
    f->nfields = nf;
    return 0;
}

int snap_parse(struct snap_file *f, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    if (len > SNAP_MAX_FILE)
        return errf(err, errlen, -EINVAL, "larger than %u MiB: not an ember snapshot",
                    SNAP_MAX_FILE >> 20);
    if (len < SNAP_HEADER_LEN + 8 || memcmp(buf, SNAP_MAGIC, 8))
        return errf(err, errlen, -EINVAL, "not an ember snapshot (no EMBERSNP header)");
    uint64_t flen = get64(buf + 16);
    if (flen != len)
        return errf(err, errlen, -EINVAL,
                    "truncated or extended: the header says %llu bytes, the file has %zu",
                    (unsigned long long)flen, len);
    if (snap_crc64(0, buf, len - 8) != get64(buf + len - 8))
        return errf(err, errlen, -EINVAL, "CRC mismatch: the file is corrupt");
    f->version = get32(buf + 8);
    f->arch = get32(buf + 12);
    f->len = flen;
    uint32_t hdr = get32(buf + 24);
    if (f->version == 0 || f->version > SNAP_FORMAT_VERSION)
        return errf(err, errlen, -EINVAL,
                    "format version %u: this ember reads versions 1 to %d (a newer ember wrote "
                    "it)",
                    f->version, SNAP_FORMAT_VERSION);
    if (hdr < SNAP_HEADER_LEN || hdr > len - 8 || (hdr & 7))
        return errf(err, errlen, -EINVAL, "bad header length %u", hdr);
    int ret = walk(f, buf, len - 8, hdr, err, errlen);
    if (ret)
        return ret;
    f->sections = calloc(f->nsections ? f->nsections : 1, sizeof(*f->sections));
    f->fields = calloc(f->nfields ? f->nfields : 1, sizeof(*f->fields));
    if (!f->sections || !f->fields) {
        snap_free(f);
        return errf(err, errlen, -ENOMEM, "out of memory");
    }
    ret = walk(f, buf, len - 8, hdr, err, errlen); /* the same walk, now recording */
    if (ret)
        snap_free(f);
    return ret;
}

void snap_free(struct snap_file *f)
{
    free(f->sections);
    free(f->fields);
    memset(f, 0, sizeof(*f));
}

const struct snap_section *snap_find(const struct snap_file *f, uint32_t type, unsigned nth)
{
    for (unsigned i = 0; i < f->nsections; i++)
        if (f->sections[i].type == type && nth-- == 0)
            return &f->sections[i];
    return NULL;
}

unsigned snap_count(const struct snap_file *f, uint32_t type)
{
    unsigned n = 0;
    for (unsigned i = 0; i < f->nsections; i++)
        n += f->sections[i].type == type;
    return n;
}

const struct snap_field *snap_get(const struct snap_file *f, const struct snap_section *s,
                                  uint32_t tag)
{
    if (!s)
        return NULL;
    for (unsigned i = 0; i < s->nfields; i++)
        if (f->fields[s->first + i].tag == tag)
            return &f->fields[s->first + i];
    return NULL;
}

int snap_get_u64(const struct snap_file *f, const struct snap_section *s, uint32_t tag, uint64_t *v)
{
    const struct snap_field *fd = snap_get(f, s, tag);
    if (!fd)
        return -ENOENT;
    if (fd->len != 8)
        return -EINVAL;
    *v = get64(fd->data);
    return 0;
}

int snap_get_str(const struct snap_file *f, const struct snap_section *s, uint32_t tag, char *out,
                 size_t size)
{
    const struct snap_field *fd = snap_get(f, s, tag);
    if (!fd)
        return -ENOENT;
    if (fd->len >= size || memchr(fd->data, 0, fd->len))
        return -EINVAL;
    memcpy(out, fd->data, fd->len);
    out[fd->len] = '\0';
    return 0;
}

int snap_get_record(const struct snap_file *f, const struct snap_section *s, uint32_t tag,
                    void *out, size_t size)
{
    const struct snap_field *fd = snap_get(f, s, tag);
    if (!fd)
        return -ENOENT;
    for (size_t i = size; i < fd->len; i++)
        if (fd->data[i])
            return -EINVAL; /* a newer ember's field this one cannot honour */
    size_t n = fd->len < size ? fd->len : size;
    memcpy(out, fd->data, n);
    memset((uint8_t *)out + n, 0, size - n);
    return 0;
}

static bool in(uint32_t v, const uint32_t *set, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (set[i] == v)
            return true;
    return false;
}

const struct snap_section *snap_unknown_required(const struct snap_file *f, const uint32_t *known,
                                                 unsigned nknown)
{
    for (unsigned i = 0; i < f->nsections; i++)
        if ((f->sections[i].flags & SNAP_REQUIRED) && !in(f->sections[i].type, known, nknown))
            return &f->sections[i];
    return NULL;
}

uint32_t snap_check_fields(const struct snap_file *f, const struct snap_section *s,
                           const uint32_t *known, unsigned nknown)
{
    for (unsigned i = 0; i < s->nfields; i++) {
        const struct snap_field *fd = &f->fields[s->first + i];
        if (fd->required && !in(fd->tag, known, nknown))
            return fd->tag ? fd->tag : SNAP_REQUIRED;
    }
    return 0;
}
