/* Allow-lists → BPF with libseccomp (ember-seccomp only; ember itself reads the result): one
 * filter context per role, default action trap, each rule an allow with its comparisons, then
 * seccomp_export_bpf into a memfd and back into struct sc_prog. */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lists.h"

static int add_rule(scmp_filter_ctx ctx, const struct sc_rule *r, char *err, size_t errlen)
{
    struct scmp_arg_cmp cmp[SC_CMP_MAX];
    int nr = seccomp_syscall_resolve_name(r->syscall);

    if (nr == __NR_SCMP_ERROR)
        return snprintf(err, errlen, "unknown syscall \"%.64s\"", r->syscall), -EINVAL;
    if (r->ncmp > SC_CMP_MAX)
        return snprintf(err, errlen, "%s: more than %d argument checks", r->syscall, SC_CMP_MAX),
               -EINVAL;
    for (unsigned i = 0; i < r->ncmp; i++) {
        const struct sc_cmp *c = &r->cmp[i];
        if (c->arg > 5)
            return snprintf(err, errlen, "%s: argument index %u (0 to 5)", r->syscall, c->arg),
                   -EINVAL;
        cmp[i] = c->op == SC_EQ
                         ? (struct scmp_arg_cmp){c->arg, SCMP_CMP_EQ, c->value, 0}
                         : (struct scmp_arg_cmp){c->arg, SCMP_CMP_MASKED_EQ, c->mask, c->value};
    }
    int ret = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, r->ncmp, cmp);
    if (ret)
        snprintf(err, errlen, "libseccomp refused the rule for %s: %s", r->syscall, strerror(-ret));
    return ret;
}

/* The exported program of ctx into p. */
static int export(scmp_filter_ctx ctx, struct sc_prog *p, char *err, size_t errlen)
{
    struct stat st;
    int fd = memfd_create("ember-seccomp", MFD_CLOEXEC);

    if (fd < 0)
        return snprintf(err, errlen, "memfd_create: %s", strerror(errno)), -errno;
    int ret = seccomp_export_bpf(ctx, fd);
    if (ret) {
        snprintf(err, errlen, "seccomp_export_bpf: %s", strerror(-ret));
    } else if (fstat(fd, &st) || st.st_size % 8 || st.st_size / 8 > SC_PROG_MAX) {
        snprintf(err, errlen, "the program is too long (%lld instructions, at most %d)",
                 (long long)st.st_size / 8, SC_PROG_MAX);
        ret = -E2BIG;
    } else {
        p->len = (unsigned)(st.st_size / 8);
        if (pread(fd, p->insns, (size_t)st.st_size, 0) != st.st_size)
            ret = (snprintf(err, errlen, "reading the exported program failed"), -EIO);
    }
    close(fd);
    return ret;
}

int sc_compile(const struct sc_list *lists, struct sc_filters *f, char *err, size_t errlen)
{
    char why[200];

    for (unsigned role = 0; role < SC_ROLES; role++) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
        int ret = ctx ? 0 : -ENOMEM;
        /* a binary tree over the syscall numbers: fewer jumps per syscall than a list */
        if (!ret)
            ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
        for (unsigned i = 0; !ret && i < lists[role].nrules; i++)
            ret = add_rule(ctx, &lists[role].rules[i], why, sizeof(why));
        if (!ret)
            ret = export(ctx, &f->prog[role], why, sizeof(why));
        seccomp_release(ctx);
        if (!ret)
            ret = sc_prog_check(f->prog[role].insns, f->prog[role].len, why, sizeof(why));
        if (ret)
            return snprintf(err, errlen, "role %s: %s", sc_role_name(role), why), ret;
    }
    return 0;
}
