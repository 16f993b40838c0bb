/* args: the command line, Firecracker jailer compatible. Syntax only; no file system access. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "jailer.h"

void args_usage(FILE *f)
{
    fprintf(f,
            "usage: ember-jailer --id ID --exec-file PATH --uid UID --gid GID [options] [-- ARGS]\n"
            "  --id ID                    VM id: letters, digits and '-', at most 64\n"
            "  --exec-file PATH           binary copied into the jail and executed\n"
            "  --uid UID, --gid GID       ids the binary runs as\n"
            "  --chroot-base-dir DIR      jail is DIR/<exec name>/<id>/root (default %s)\n"
            "  --netns PATH               join this network namespace (e.g. /var/run/netns/x)\n"
            "  --cgroup FILE=VALUE        write VALUE to FILE in the VM's cgroup (repeatable)\n"
            "  --cgroup-version 1|2       cgroup hierarchy to use (default 1)\n"
            "  --parent-cgroup PATH       parent of the VM's cgroup (default: exec name)\n"
            "  --resource-limit RES=N     no-file=N, fsize=N or core=N (repeatable; default\n"
            "                             no-file=%d core=0)\n"
            "  --daemonize                detach: double fork, setsid, stdio to /dev/null\n"
            "  --new-pid-ns               run the binary as PID 1 of a new PID namespace\n"
            "  --userfaultfd              create /dev/userfaultfd in the jail (snapshot loads\n"
            "                             with a UFFD backend); without it there is none\n"
            "  --strict-sandbox           refuse --uid 0 and --gid 0 (accepted with a warning\n"
            "                             otherwise, as Firecracker's jailer accepts them)\n"
            "  --version, --help\n"
            "  -- ARGS                    passed to the binary after --id and the start times\n",
            JAIL_DEFAULT_BASE, JAIL_DEFAULT_NOFILE);
}

__attribute__((format(printf, 3, 4))) static int fail(struct jail_args *a, int code,
                                                      const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->err, sizeof(a->err), fmt, ap);
    va_end(ap);
    a->exit_code = code;
    return -EINVAL;
}

bool args_valid_id(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > JAIL_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    return true;
}

bool args_no_dot_components(const char *path)
{
    const char *p = path;

    while (*p) {
        const char *e = strchrnul(p, '/');
        size_t n = (size_t)(e - p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p = *e ? e + 1 : e;
    }
    return true;
}

/* Decimal only, no sign, no overflow past max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        if (v > (max - (uint64_t)(*s - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* Cgroup file names are "<controller>.<name>": letters, digits, '_', '-', '.'. */
static bool valid_cgroup_file(const char *f)
{
    const char *dot = strchr(f, '.');

    if (!dot || dot == f || !dot[1] || strstr(f, ".."))
        return false;
    for (; *f; f++) {
        char c = *f;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Relative, no "."/".." components, no empty components, safe characters. */
static bool valid_parent_cgroup(const char *p)
{
    size_t n = strlen(p);

    if (n == 0 || n >= JAIL_PATH_MAX / 4 || p[0] == '/' || p[n - 1] == '/' || strstr(p, "//"))
        return false;
    if (!args_no_dot_components(p))
        return false;
    for (; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '/' || c == ':' || c == '@'))
            return false;
    }
    return true;
}

static int add_cgroup(struct jail_args *a, const char *spec)
{
    const char *eq = strchr(spec, '=');
    struct jail_cgroup *cg;
    size_t flen;

    if (a->n_cgroups >= JAIL_MAX_CGROUPS)
        return fail(a, JEXIT_BAD_CGROUP, "too many --cgroup values (at most %d)", JAIL_MAX_CGROUPS);
    if (!eq)
        return fail(a, JEXIT_BAD_CGROUP, "--cgroup '%s': expected FILE=VALUE", spec);
    flen = (size_t)(eq - spec);
    cg = &a->cgroups[a->n_cgroups];
    if (flen == 0 || flen >= sizeof(cg->file))
        return fail(a, JEXIT_BAD_CGROUP, "--cgroup '%s': bad file name", spec);
    memcpy(cg->file, spec, flen);
    cg->file[flen] = '\0';
    if (!valid_cgroup_file(cg->file))
        return fail(a, JEXIT_BAD_CGROUP,
                    "--cgroup '%s': file must be <controller>.<name> without '/' or '..'", spec);
    if (!eq[1] || strlen(eq + 1) >= sizeof(cg->value) || strpbrk(eq + 1, "\n"))
        return fail(a, JEXIT_BAD_CGROUP, "--cgroup '%s': value must be one non-empty line", spec);
    strcpy(cg->value, eq + 1);
    a->n_cgroups++;
    return 0;
}

static int add_rlimit(struct jail_args *a, const char *spec)
{
    const char *eq = strchr(spec, '=');
    struct jail_rlimit *rl;
    int res;

    if (!eq)
        return fail(a, JEXIT_BAD_RLIMIT, "--resource-limit '%s': expected RES=N", spec);
    if ((size_t)(eq - spec) == 7 && !strncmp(spec, "no-file", 7))
        res = RLIMIT_NOFILE;
    else if ((size_t)(eq - spec) == 5 && !strncmp(spec, "fsize", 5))
        res = RLIMIT_FSIZE;
    else if ((size_t)(eq - spec) == 4 && !strncmp(spec, "core", 4))
        res = RLIMIT_CORE;
    else
        return fail(a, JEXIT_BAD_RLIMIT,
                    "--resource-limit '%s': resource must be no-file, fsize or core", spec);
    for (int i = 0; i < a->n_rlimits; i++)
        if (a->rlimits[i].resource == res)
            return fail(a, JEXIT_BAD_RLIMIT, "--resource-limit '%s': given twice", spec);
    if (a->n_rlimits >= JAIL_MAX_RLIMITS)
        return fail(a, JEXIT_BAD_RLIMIT, "too many --resource-limit values");
    rl = &a->rlimits[a->n_rlimits];
    if (parse_u64(eq + 1, UINT64_MAX - 1, &rl->value))
        return fail(a, JEXIT_BAD_RLIMIT, "--resource-limit '%s': N must be a decimal number", spec);
    rl->resource = res;
    a->n_rlimits++;
    return 0;
}

static int set_id(struct jail_args *a, const char *flag, const char *v, uint32_t *out)
{
    uint64_t n;

    /* (uid_t)-1 means "unchanged" to setresuid, so it is not a valid id. */
    if (parse_u64(v, UINT32_MAX - 1, &n))
        return fail(a, JEXIT_BAD_UID_GID, "%s '%s': expected a number from 0 to %u", flag, v,
                    UINT32_MAX - 1);
    *out = (uint32_t)n;
    return 0;
}

enum opt {
    O_ID,
    O_EXEC,
    O_UID,
    O_GID,
    O_BASE,
    O_NETNS,
    O_CGROUP,
    O_CGVER,
    O_PARENT,
    O_RLIMIT,
    O_DAEMON,
    O_PIDNS,
    O_UFFD,
    O_STRICT,
    O_VERSION,
    O_HELP,
    O_COUNT
};

static const struct {
    const char *name;
    bool has_value;
    bool repeatable;
} opts[O_COUNT] = {
        [O_ID] = {"--id", true, false},
        [O_EXEC] = {"--exec-file", true, false},
        [O_UID] = {"--uid", true, false},
        [O_GID] = {"--gid", true, false},
        [O_BASE] = {"--chroot-base-dir", true, false},
        [O_NETNS] = {"--netns", true, false},
        [O_CGROUP] = {"--cgroup", true, true},
        [O_CGVER] = {"--cgroup-version", true, false},
        [O_PARENT] = {"--parent-cgroup", true, false},
        [O_RLIMIT] = {"--resource-limit", true, true},
        [O_DAEMON] = {"--daemonize", false, false},
        [O_PIDNS] = {"--new-pid-ns", false, false},
        [O_UFFD] = {"--userfaultfd", false, false},
        [O_STRICT] = {"--strict-sandbox", false, false},
        [O_VERSION] = {"--version", false, false},
        [O_HELP] = {"--help", false, false},
};

static int apply(struct jail_args *a, enum opt o, const char *v)
{
    switch (o) {
    case O_ID:
        if (!args_valid_id(v))
            return fail(a, JEXIT_BAD_ID, "--id '%s': must be 1 to %d letters, digits or '-'", v,
                        JAIL_ID_MAX);
        a->id = v;
        return 0;
    case O_EXEC:
        if (!*v || strlen(v) >= JAIL_PATH_MAX)
            return fail(a, JEXIT_BAD_EXEC, "--exec-file: empty or too long path");
        if (!args_no_dot_components(v))
            return fail(a, JEXIT_BAD_EXEC, "--exec-file '%s': '.' and '..' are not allowed", v);
        a->exec_file = v;
        return 0;
    case O_UID:
        return set_id(a, "--uid", v, &a->uid);
    case O_GID:
        return set_id(a, "--gid", v, &a->gid);
    case O_BASE:
        if (v[0] != '/' || strlen(v) >= JAIL_PATH_MAX / 2)
            return fail(a, JEXIT_BAD_CHROOT,
                        "--chroot-base-dir '%s': must be an absolute path shorter than %d", v,
                        JAIL_PATH_MAX / 2);
        if (!args_no_dot_components(v))
            return fail(a, JEXIT_BAD_CHROOT, "--chroot-base-dir '%s': '.' and '..' are not allowed",
                        v);
        a->chroot_base = v;
        return 0;
    case O_NETNS:
        if (v[0] != '/' || strlen(v) >= JAIL_PATH_MAX)
            return fail(a, JEXIT_BAD_NETNS, "--netns '%s': must be an absolute path", v);
        a->netns = v;
        return 0;
    case O_CGROUP:
        return add_cgroup(a, v);
    case O_CGVER:
        if (strcmp(v, "1") && strcmp(v, "2"))
            return fail(a, JEXIT_BAD_CGROUP, "--cgroup-version '%s': must be 1 or 2", v);
        a->cgroup_version = v[0] - '0';
        return 0;
    case O_PARENT:
        if (!valid_parent_cgroup(v))
            return fail(a, JEXIT_BAD_CGROUP,
                        "--parent-cgroup '%s': must be a relative path without '.' or '..'", v);
        a->parent_cgroup = v;
        return 0;
    case O_RLIMIT:
        return add_rlimit(a, v);
    case O_DAEMON:
        a->daemonize = true;
        return 0;
    case O_PIDNS:
        a->new_pid_ns = true;
        return 0;
    case O_UFFD:
        a->userfaultfd = true;
        return 0;
    case O_STRICT:
        a->strict_sandbox = true;
        return 0;
    case O_VERSION:
        a->version = true;
        return 0;
    case O_HELP:
        a->help = true;
        return 0;
    case O_COUNT:
        break;
    }
    return fail(a, JEXIT_USAGE, "internal: bad option");
}

/* Finds the option named by arg ("--x" or "--x=value"); *value gets the inline value. */
static int lookup(const char *arg, const char **value)
{
    size_t n = strcspn(arg, "=");

    for (int o = 0; o < O_COUNT; o++) {
        if (strlen(opts[o].name) == n && !strncmp(opts[o].name, arg, n)) {
            *value = arg[n] ? arg + n + 1 : NULL;
            return o;
        }
    }
    return -1;
}

int args_parse(struct jail_args *a, int argc, char **argv)
{
    bool seen[O_COUNT] = {false};
    int i, rc;

    memset(a, 0, sizeof(*a));
    a->chroot_base = JAIL_DEFAULT_BASE;
    a->cgroup_version = 1;
    a->netns = NULL;

    for (i = 1; i < argc; i++) {
        const char *value = NULL;
        int o;

        if (!strcmp(argv[i], "--")) {
            a->extra_argv = argv + i + 1;
            a->extra_argc = argc - i - 1;
            break;
        }
        o = lookup(argv[i], &value);
        if (o < 0)
            return fail(a, JEXIT_USAGE, "unknown argument '%s' (see --help)", argv[i]);
        if (seen[o] && !opts[o].repeatable)
            return fail(a, JEXIT_USAGE, "%s given more than once", opts[o].name);
        seen[o] = true;
        if (opts[o].has_value && !value) {
            if (i + 1 >= argc)
                return fail(a, JEXIT_USAGE, "%s needs a value", opts[o].name);
            value = argv[++i];
        } else if (!opts[o].has_value && value) {
            return fail(a, JEXIT_USAGE, "%s takes no value", opts[o].name);
        }
        rc = apply(a, (enum opt)o, value ? value : "");
        if (rc)
            return rc;
    }
    if (a->help || a->version)
        return 0;
    if (!a->id)
        return fail(a, JEXIT_USAGE, "missing --id");
    if (!a->exec_file)
        return fail(a, JEXIT_USAGE, "missing --exec-file");
    if (!seen[O_UID])
        return fail(a, JEXIT_USAGE, "missing --uid");
    if (!seen[O_GID])
        return fail(a, JEXIT_USAGE, "missing --gid");
    if (a->strict_sandbox && (a->uid == 0 || a->gid == 0))
        return fail(a, JEXIT_BAD_UID_GID, "--strict-sandbox: --uid and --gid must not be 0");
    return 0;
}
