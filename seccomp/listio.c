/* The allow-lists in and out of ember-seccomp: printed (plain, or the section of SECURITY.md,
 * so the document shows what the code installs) and read from a JSON file of per-role lists. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lists.h"

static const char *const threads[SC_ROLES] = {"fc_api", "fc_api_accept", "fc_vmm", "fc_vcpu N",
                                              "ember_opener"};

/* Is rules[i] the first rule of its syscall? */
static bool first_of(const struct sc_list *l, unsigned i)
{
    for (unsigned j = 0; j < i; j++)
        if (strcmp(l->rules[j].syscall, l->rules[i].syscall) == 0)
            return false;
    return true;
}

unsigned sc_list_distinct(const struct sc_list *l)
{
    unsigned n = 0;
    for (unsigned i = 0; i < l->nrules; i++)
        n += first_of(l, i);
    return n;
}

static unsigned with_args(const struct sc_list *l)
{
    unsigned n = 0;
    for (unsigned i = 0; i < l->nrules; i++)
        n += l->rules[i].ncmp > 0;
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void print_cmp(const struct sc_cmp *c, FILE *out)
{
    if (c->what)
        fprintf(out, "%s", c->what);
    else if (c->op == SC_EQ)
        fprintf(out, "arg%u == %#llx", c->arg, (unsigned long long)c->value);
    else
        fprintf(out, "arg%u & %#llx == %#llx", c->arg, (unsigned long long)c->mask,
                (unsigned long long)c->value);
}

/* One syscall with its allowed argument values: "ioctl (KVM_RUN | KVM_GET_REGS)". */
static void print_syscall(const struct sc_list *l, const char *name, FILE *out, bool md)
{
    bool any = false, first = true;

    for (unsigned i = 0; i < l->nrules; i++)
        any |= strcmp(l->rules[i].syscall, name) == 0 && l->rules[i].ncmp == 0;
    fprintf(out, md ? "`%s`" : "%s", name);
    if (any)
        return;
    fprintf(out, " (");
    for (unsigned i = 0; i < l->nrules; i++) {
        const struct sc_rule *r = &l->rules[i];
        if (strcmp(r->syscall, name) != 0)
            continue;
        fprintf(out, "%s", first ? "" : " | ");
        first = false;
        for (unsigned k = 0; k < r->ncmp; k++) {
            fprintf(out, "%s", k ? ", " : "");
            print_cmp(&r->cmp[k], out);
        }
    }
    fprintf(out, ")");
}

void sc_lists_print(const struct sc_list *lists, FILE *out, int markdown)
{
    if (markdown) {
        fprintf(out, "| role | thread | syscalls | rules | rules with argument checks | "
                     "Firecracker's thread |\n|---|---|---|---|---|---|\n");
        for (unsigned r = 0; r < SC_ROLES; r++) {
            fprintf(out, "| %s | `%s` | %u | %u | %u | ", sc_role_name(r), threads[r],
                    sc_list_distinct(&lists[r]), lists[r].nrules, with_args(&lists[r]));
            if (sc_firecracker_sizes[r])
                fprintf(out, "%u syscalls |\n", sc_firecracker_sizes[r]);
            else
                fprintf(out, "none |\n");
        }
        fprintf(out, "\n");
    }
    for (unsigned r = 0; r < SC_ROLES; r++) {
        const struct sc_list *l = &lists[r];
        const char *names[256] = {NULL};
        unsigned n = 0;
        for (unsigned i = 0; i < l->nrules && n < 256; i++)
            if (first_of(l, i))
                names[n++] = l->rules[i].syscall;
        qsort(names, n, sizeof(names[0]), by_name);
        fprintf(out, markdown ? "- **%s** (%u): " : "%s (%u):", sc_role_name(r), n);
        for (unsigned i = 0; i < n; i++) {
            fprintf(out, markdown ? (i ? ", " : "") : "\n  ");
            print_syscall(l, names[i], out, markdown);
        }
        fprintf(out, markdown ? ".\n" : "\n");
    }
}

void sc_lists_json(const struct sc_list *lists, FILE *out)
{
    fprintf(out, "{");
    for (unsigned r = 0; r < SC_ROLES; r++) {
        fprintf(out, "%s\n  \"%s\": [", r ? "," : "", sc_role_name(r));
        for (unsigned i = 0; i < lists[r].nrules; i++) {
            const struct sc_rule *rule = &lists[r].rules[i];
            fprintf(out, "%s\n    ", i ? "," : "");
            if (!rule->ncmp) {
                fprintf(out, "\"%s\"", rule->syscall);
                continue;
            }
            fprintf(out, "{\"syscall\": \"%s\", \"args\": [", rule->syscall);
            for (unsigned k = 0; k < rule->ncmp; k++) {
                const struct sc_cmp *c = &rule->cmp[k];
                fprintf(out, "%s{\"index\": %u, \"op\": \"%s\", \"value\": %llu", k ? ", " : "",
                        c->arg, c->op == SC_EQ ? "eq" : "masked_eq", (unsigned long long)c->value);
                if (c->op == SC_MASKED_EQ)
                    fprintf(out, ", \"mask\": %lld", (long long)c->mask);
                fprintf(out, "}");
            }
            fprintf(out, "]}");
        }
        fprintf(out, "\n  ]");
    }
    fprintf(out, "\n}\n");
}

/* One entry of a JSON list: "name" or {"syscall": name, "args": [...]}. */
static int json_rule(json_t *v, struct sc_rule *r, char *err, size_t errlen)
{
    json_t *args = NULL;
    json_error_t je;

    memset(r, 0, sizeof(*r));
    if (json_is_string(v)) {
        r->syscall = strdup(json_string_value(v));
        return r->syscall ? 0 : -ENOMEM;
    }
    const char *name;
    if (json_unpack_ex(v, &je, JSON_STRICT, "{s:s, s?o}", "syscall", &name, "args", &args))
        return snprintf(err, errlen, "a rule: %s", je.text), -EINVAL;
    r->syscall = strdup(name);
    if (!r->syscall)
        return -ENOMEM;
    if (args && (!json_is_array(args) || json_array_size(args) > SC_CMP_MAX))
        return snprintf(err, errlen, "%s: args is a list of at most %d checks", name, SC_CMP_MAX),
               -EINVAL;
    for (size_t i = 0; args && i < json_array_size(args); i++) {
        const char *op;
        json_int_t idx, value, mask = 0;
        if (json_unpack_ex(json_array_get(args, i), &je, JSON_STRICT, "{s:I, s:s, s:I, s?I}",
                           "index", &idx, "op", &op, "value", &value, "mask", &mask))
            return snprintf(err, errlen, "%s: a check: %s", name, je.text), -EINVAL;
        bool masked = strcmp(op, "masked_eq") == 0;
        if ((!masked && strcmp(op, "eq") != 0) || idx < 0 || idx > 5)
            return snprintf(err, errlen, "%s: a check is {index 0-5, op eq|masked_eq, value}",
                            name),
                   -EINVAL;
        r->cmp[i] = (struct sc_cmp){(unsigned)idx, masked ? SC_MASKED_EQ : SC_EQ, (uint64_t)mask,
                                    (uint64_t)value, NULL};
        r->ncmp++;
    }
    return 0;
}

int sc_json_lists(const char *text, struct sc_list *lists, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    const char *key;
    json_t *v;
    int ret = 0;

    if (!root)
        return snprintf(err, errlen, "line %d column %d: %s", je.line, je.column, je.text), -EINVAL;
    if (!json_is_object(root))
        ret = (snprintf(err, errlen, "the file is a JSON object of role lists"), -EINVAL);
    memset(lists, 0, sizeof(*lists) * SC_ROLES);
    json_object_foreach(root, key, v)
    {
        int role = sc_role_parse(key);
        if (ret)
            break;
        if (role < 0 || !json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 1024) {
            snprintf(err, errlen,
                     "\"%.32s\": a role (api, accept, vmm, vcpu, opener) with a list of 1 to "
                     "1024 rules",
                     key);
            ret = -EINVAL;
            break;
        }
        struct sc_rule *rules = calloc(json_array_size(v), sizeof(*rules));
        if (!rules) {
            ret = -ENOMEM;
            break;
        }
        lists[role] = (struct sc_list){rules, (unsigned)json_array_size(v)};
        for (size_t i = 0; !ret && i < json_array_size(v); i++)
            ret = json_rule(json_array_get(v, i), &rules[i], err, errlen);
    }
    for (unsigned r = 0; !ret && r < SC_ROLES; r++)
        if (!lists[r].rules)
            ret = (snprintf(err, errlen, "no list for role %s", sc_role_name(r)), -EINVAL);
    json_decref(root);
    return ret;
}
