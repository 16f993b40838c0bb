/* ember's seccomp filter file (format in seccomp.h): parse and check a hostile-shaped file
 * without trusting any count in it, and write one. The checks are the kernel's for a seccomp
 * program (kernel/seccomp.c seccomp_check_filter, net/core/filter.c bpf_check_classic), so a
 * file that passes here is not refused later by a thread's install. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "seccomp.h"

#define HDR_LEN  24
#define PROG_HDR 24 /* role[16], count, reserved */

static const char *const role_names[SC_ROLES] = {"api", "accept", "vmm", "vcpu", "opener"};

const char *sc_role_name(enum sc_role role)
{
    return (unsigned)role < SC_ROLES ? role_names[role] : NULL;
}

int sc_role_parse(const char *name)
{
    for (int i = 0; i < SC_ROLES; i++)
        if (strcmp(name, role_names[i]) == 0)
            return i;
    return -1;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* The instructions a seccomp program may hold. */
static bool code_allowed(uint16_t code)
{
    switch (code) {
    case BPF_LD | BPF_W | BPF_ABS:
    case BPF_LD | BPF_W | BPF_LEN:
    case BPF_LDX | BPF_W | BPF_LEN:
    case BPF_LD | BPF_IMM:
    case BPF_LDX | BPF_IMM:
    case BPF_MISC | BPF_TAX:
    case BPF_MISC | BPF_TXA:
    case BPF_RET | BPF_K:
    case BPF_RET | BPF_A:
    case BPF_ALU | BPF_ADD | BPF_K:
    case BPF_ALU | BPF_ADD | BPF_X:
    case BPF_ALU | BPF_SUB | BPF_K:
    case BPF_ALU | BPF_SUB | BPF_X:
    case BPF_ALU | BPF_MUL | BPF_K:
    case BPF_ALU | BPF_MUL | BPF_X:
    case BPF_ALU | BPF_DIV | BPF_K:
    case BPF_ALU | BPF_DIV | BPF_X:
    case BPF_ALU | BPF_AND | BPF_K:
    case BPF_ALU | BPF_AND | BPF_X:
    case BPF_ALU | BPF_OR | BPF_K:
    case BPF_ALU | BPF_OR | BPF_X:
    case BPF_ALU | BPF_XOR | BPF_K:
    case BPF_ALU | BPF_XOR | BPF_X:
    case BPF_ALU | BPF_LSH | BPF_K:
    case BPF_ALU | BPF_LSH | BPF_X:
    case BPF_ALU | BPF_RSH | BPF_K:
    case BPF_ALU | BPF_RSH | BPF_X:
    case BPF_ALU | BPF_NEG:
    case BPF_JMP | BPF_JA:
    case BPF_JMP | BPF_JEQ | BPF_K:
    case BPF_JMP | BPF_JEQ | BPF_X:
    case BPF_JMP | BPF_JGE | BPF_K:
    case BPF_JMP | BPF_JGE | BPF_X:
    case BPF_JMP | BPF_JGT | BPF_K:
    case BPF_JMP | BPF_JGT | BPF_X:
    case BPF_JMP | BPF_JSET | BPF_K:
    case BPF_JMP | BPF_JSET | BPF_X:
        return true;
    default:
        return false; /* scratch memory (LD/ST MEM) too: libseccomp never emits it */
    }
}

int sc_prog_check(const struct sock_filter *insns, unsigned len, char *err, size_t errlen)
{
    if (len == 0 || len > SC_PROG_MAX)
        return bad(err, errlen, "a program has %u instructions (1 to %u)", len, SC_PROG_MAX);
    for (unsigned pc = 0; pc < len; pc++) {
        const struct sock_filter *f = &insns[pc];
        unsigned left = len - pc - 1; /* instructions after this one */
        if (!code_allowed(f->code))
            return bad(err, errlen, "instruction %u: opcode 0x%x is not allowed in seccomp", pc,
                       f->code);
        if (f->code == (BPF_LD | BPF_W | BPF_ABS) &&
            (f->k >= sizeof(struct seccomp_data) || f->k % 4))
            return bad(err, errlen, "instruction %u: load at offset %u is outside seccomp_data", pc,
                       f->k);
        if (f->code == (BPF_ALU | BPF_DIV | BPF_K) && f->k == 0)
            return bad(err, errlen, "instruction %u: division by zero", pc);
        if ((f->code == (BPF_ALU | BPF_LSH | BPF_K) || f->code == (BPF_ALU | BPF_RSH | BPF_K)) &&
            f->k >= 32)
            return bad(err, errlen, "instruction %u: shift by %u", pc, f->k);
        if (BPF_CLASS(f->code) == BPF_JMP) {
            if (BPF_OP(f->code) == BPF_JA) {
                if (f->k >= left)
                    return bad(err, errlen, "instruction %u: jump past the end (%u)", pc, f->k);
            } else if (f->jt >= left || f->jf >= left) {
                return bad(err, errlen, "instruction %u: jump past the end", pc);
            }
        }
    }
    if (BPF_CLASS(insns[len - 1].code) != BPF_RET)
        return bad(err, errlen, "a program ends with opcode 0x%x, not a return",
                   insns[len - 1].code);
    return 0;
}

int sc_file_parse(struct sc_filters *f, const uint8_t *data, size_t len, char *err, size_t errlen)
{
    bool seen[SC_ROLES] = {false};
    size_t off = HDR_LEN;

    if (len > SC_FILE_MAX)
        return bad(err, errlen, "the file is too long (%zu bytes, at most %u)", len,
                   (unsigned)SC_FILE_MAX);
    if (len < HDR_LEN || memcmp(data, SC_FILE_MAGIC, 8) != 0)
        return bad(err, errlen, "not an ember seccomp filter file (no " SC_FILE_MAGIC " header)");
    if (get32(data + 8) != SC_FILE_VERSION)
        return bad(err, errlen, "file format version %u, ember reads version %u", get32(data + 8),
                   SC_FILE_VERSION);
    if (get32(data + 12) != AUDIT_ARCH_X86_64)
        return bad(err, errlen, "the filters are for audit arch 0x%x, not x86_64 (0x%x)",
                   get32(data + 12), AUDIT_ARCH_X86_64);
    uint32_t n = get32(data + 16);
    if (n > SC_ROLES || get32(data + 20) != 0)
        return bad(err, errlen, "the file has %u programs, ember has %u roles", n, SC_ROLES);
    for (uint32_t i = 0; i < n; i++) {
        char name[SC_ROLE_LEN + 1];
        if (len - off < PROG_HDR)
            return bad(err, errlen, "the file ends inside program %u's header", i);
        memcpy(name, data + off, SC_ROLE_LEN);
        name[SC_ROLE_LEN] = '\0';
        size_t nlen = strnlen(name, SC_ROLE_LEN);
        int role = nlen < SC_ROLE_LEN ? sc_role_parse(name) : -1;
        for (size_t k = nlen; role >= 0 && k < SC_ROLE_LEN; k++)
            if (data[off + k])
                role = -1; /* NUL-padded, as written */
        if (role < 0)
            return bad(err, errlen,
                       "program %u has an unknown role (api, accept, vmm, vcpu, opener)", i);
        if (seen[role])
            return bad(err, errlen, "program %u: role %s is given twice", i, name);
        seen[role] = true;
        uint32_t count = get32(data + off + 16);
        if (get32(data + off + 20) != 0)
            return bad(err, errlen, "program %u: reserved field is not 0", i);
        if (count == 0 || count > SC_PROG_MAX)
            return bad(err, errlen, "role %s: %u instructions (1 to %u: the kernel's limit)", name,
                       count, SC_PROG_MAX);
        off += PROG_HDR;
        if ((len - off) / 8 < count)
            return bad(err, errlen, "the file ends inside program %u (%u instructions)", i, count);
        struct sc_prog *p = &f->prog[role];
        for (uint32_t k = 0; k < count; k++, off += 8) {
            const uint8_t *q = data + off;
            p->insns[k] =
                    (struct sock_filter){(uint16_t)(q[0] | q[1] << 8), q[2], q[3], get32(q + 4)};
        }
        p->len = count;
        char why[160];
        if (sc_prog_check(p->insns, p->len, why, sizeof(why)))
            return bad(err, errlen, "role %s: %s", name, why);
    }
    if (off != len)
        return bad(err, errlen, "%zu bytes after the last program", len - off);
    for (unsigned r = 0; r < SC_ROLES; r++)
        if (!seen[r])
            return bad(err, errlen, "the file has no program for role %s", role_names[r]);
    return 0;
}

size_t sc_file_size(const struct sc_filters *f)
{
    size_t n = HDR_LEN;
    for (unsigned r = 0; r < SC_ROLES; r++)
        n += PROG_HDR + (size_t)f->prog[r].len * 8;
    return n;
}

void sc_file_write(const struct sc_filters *f, uint8_t *out)
{
    memcpy(out, SC_FILE_MAGIC, 8);
    put32(out + 8, SC_FILE_VERSION);
    put32(out + 12, AUDIT_ARCH_X86_64);
    put32(out + 16, SC_ROLES);
    put32(out + 20, 0);
    out += HDR_LEN;
    for (unsigned r = 0; r < SC_ROLES; r++) {
        const struct sc_prog *p = &f->prog[r];
        memset(out, 0, SC_ROLE_LEN);
        memcpy(out, role_names[r], strlen(role_names[r]));
        put32(out + 16, p->len);
        put32(out + 20, 0);
        out += PROG_HDR;
        for (unsigned k = 0; k < p->len; k++, out += 8) {
            out[0] = (uint8_t)p->insns[k].code;
            out[1] = (uint8_t)(p->insns[k].code >> 8);
            out[2] = p->insns[k].jt;
            out[3] = p->insns[k].jf;
            put32(out + 4, p->insns[k].k);
        }
    }
}
