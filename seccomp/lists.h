/* The allow-lists as data (ember-seccomp's side): a rule allows one syscall when all of its
 * argument comparisons hold; several rules for one syscall are alternatives. */
#ifndef EMBER_SECCOMP_LISTS_H
#define EMBER_SECCOMP_LISTS_H

#include <stdint.h>
#include <stdio.h>

#include "seccomp.h"

#define SC_CMP_MAX 3

enum sc_op { SC_EQ, SC_MASKED_EQ };

struct sc_cmp {
    unsigned arg;  /* 0..5 */
    enum sc_op op; /* SC_EQ: arg == value; SC_MASKED_EQ: (arg & mask) == value */
    uint64_t mask, value;
    const char *what; /* how the docs name the value ("KVM_RUN"), or NULL */
};

struct sc_rule {
    const char *syscall;
    unsigned ncmp;
    struct sc_cmp cmp[SC_CMP_MAX];
};

struct sc_list {
    const struct sc_rule *rules;
    unsigned nrules;
};

/* sc_builtin_lists[role]: ember's own allow-lists (lists.c). */
extern const struct sc_list sc_builtin_lists[SC_ROLES];
/* Firecracker's distinct-syscall counts (x86_64, resources/seccomp), beside ours in the docs;
 * 0 where Firecracker has no such thread. */
extern const unsigned sc_firecracker_sizes[SC_ROLES];

/* sc_list_distinct(l): Returns how many different syscalls l allows. */
unsigned sc_list_distinct(const struct sc_list *l);
/* sc_lists_print(lists, out, markdown): prints the lists (plain, or SECURITY.md's section). */
void sc_lists_print(const struct sc_list *lists, FILE *out, int markdown);

/* sc_lists_json(lists, out): prints the lists in the JSON form sc_json_lists reads. */
void sc_lists_json(const struct sc_list *lists, FILE *out);

/* sc_compile(lists, f, err, errlen): builds one program per role with libseccomp (default
 * action trap, the rules allow) and exports it into f. Returns 0, or -errno with a reason. */
int sc_compile(const struct sc_list *lists, struct sc_filters *f, char *err, size_t errlen);

/* sc_json_lists(text, lists, err, errlen): reads a JSON object of per-role lists:
 * {"api": ["read", {"syscall": "ioctl", "args": [{"index": 1, "op": "eq", "value": 21505}]},
 * ...], ...} with every role. Returns 0 (lists point into allocated memory, freed at exit), or
 * -EINVAL with a reason in err. */
int sc_json_lists(const char *text, struct sc_list *lists, char *err, size_t errlen);

#endif
