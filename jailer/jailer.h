/* ember-jailer: internal interface. The jailer never links VMM code. */
#ifndef EMBER_JAILER_H
#define EMBER_JAILER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define JAILER_VERSION "0.1.0"

#define JAIL_ID_MAX          64
#define JAIL_MAX_CGROUPS     32
#define JAIL_MAX_RLIMITS     8
#define JAIL_DEFAULT_BASE    "/srv/jailer"
#define JAIL_DEFAULT_NOFILE  2048
#define JAIL_CGROUP_NAME_MAX 128
#define JAIL_CGROUP_VAL_MAX  256
#define JAIL_PATH_MAX        4096

/* Exit codes: one per failure class so an orchestrator can tell them apart. */
enum jail_exit {
    JEXIT_OK = 0,
    JEXIT_USAGE = 2,        /* unknown flag, missing value or required flag, repeated flag */
    JEXIT_BAD_ID = 3,       /* --id not [A-Za-z0-9-]{1,64} */
    JEXIT_BAD_EXEC = 4,     /* --exec-file missing, not a regular file, '..', not static ELF */
    JEXIT_BAD_UID_GID = 5,  /* --uid/--gid not a number in range */
    JEXIT_BAD_CHROOT = 6,   /* --chroot-base-dir not absolute, has '..', too long, or unsafe */
    JEXIT_BAD_NETNS = 7,    /* --netns path cannot be opened or is not a netns */
    JEXIT_BAD_CGROUP = 8,   /* malformed --cgroup, --cgroup-version or --parent-cgroup */
    JEXIT_CGROUP_FILE = 9,  /* cgroup controller or file does not exist */
    JEXIT_BAD_RLIMIT = 10,  /* malformed --resource-limit */
    JEXIT_JAIL_EXISTS = 11, /* the jail is in use (its binary copy, pid file or dev/ exist),
                               unsafe (symlink, owner, mode), or its cgroup exists */
    JEXIT_NOT_ROOT = 12,    /* not running as root */
    JEXIT_SANITIZE = 13,    /* closing inherited fds or clearing the environment failed */
    JEXIT_JAIL = 14,        /* creating the jail, copying the binary or pivot_root failed */
    JEXIT_CGROUP = 15,      /* any other cgroup failure */
    JEXIT_RLIMIT = 16,      /* setrlimit failed */
    JEXIT_DEVICES = 17,     /* creating device nodes failed */
    JEXIT_DAEMON = 18,      /* daemonize or new PID namespace failed */
    JEXIT_PRIVS = 19,       /* dropping capabilities, groups or ids failed */
    JEXIT_EXEC = 20,        /* execve failed */
};

struct jail_cgroup {
    char file[JAIL_CGROUP_NAME_MAX]; /* e.g. "cpuset.cpus" */
    char value[JAIL_CGROUP_VAL_MAX];
};

struct jail_rlimit {
    int resource; /* RLIMIT_NOFILE, RLIMIT_FSIZE or RLIMIT_CORE */
    uint64_t value;
};

/* Everything the command line asks for, validated syntactically by args_parse(). */
struct jail_args {
    const char *id;
    const char *exec_file;
    uid_t uid;
    gid_t gid;
    const char *chroot_base;
    const char *netns;
    struct jail_cgroup cgroups[JAIL_MAX_CGROUPS];
    int n_cgroups;
    int cgroup_version;
    const char *parent_cgroup; /* NULL: defaults to the exec file name */
    struct jail_rlimit rlimits[JAIL_MAX_RLIMITS];
    int n_rlimits;
    bool daemonize;
    bool new_pid_ns;
    bool userfaultfd;    /* --userfaultfd: /dev/userfaultfd in the jail */
    bool strict_sandbox; /* --strict-sandbox: uid/gid 0 refused */
    bool help;
    bool version;
    char **extra_argv; /* arguments after "--" */
    int extra_argc;
    int exit_code; /* on failure: the enum jail_exit to use */
    char err[512]; /* on failure: the one-line message */
};

/* Resolved state while the jail is being built; undo information for failures. */
struct jail {
    const struct jail_args *args;
    char exec_path[JAIL_PATH_MAX]; /* canonical --exec-file */
    const char *exec_name;         /* its file name (points into exec_path) */
    char base[JAIL_PATH_MAX];      /* canonical chroot base */
    char id_dir[JAIL_PATH_MAX];    /* <base>/<exec_name>/<id> */
    char root[JAIL_PATH_MAX];      /* <id_dir>/root */
    int base_depth;                /* components of base ("/" has 0) */
    int anchor_fd;                 /* deepest directory of <base>/<exec> that existed (undo) */
    size_t anchor_len;             /* length of its path */
    size_t way_len;                /* the same while walking */
    bool way_complete;             /* <base>/<exec> exists */
    int id_fd;                     /* <id>/ and root/, opened without following symlinks (or -1) */
    int root_fd;
    char created[16][JAIL_PATH_MAX / 4]; /* directories above id_dir that we made */
    int n_created;
    bool made_id_dir;
    bool existed;     /* <base>/<exec>/<id> was there (an orchestrator's tree, as Kata's) */
    bool had_root;    /* ... and so was its root/ */
    bool had_run;     /* ... and root/run */
    bool made_root;   /* this jailer made root/ */
    bool made_binary; /* our copy of the binary is in the jail: the claim on it */
    bool bound;       /* chroot_enter bind-mounted root/ (in the jailer's own mount namespace) */
    bool pivoted;     /* past pivot_root: host paths are gone, undo goes through fds */
    int netns_fd;
    int devnull_fd;
    int uffd_minor; /* -1 when the host has no /dev/userfaultfd */
    uint64_t start_us;
    uint64_t start_cpu_us;
    uint64_t jailer_cpu_us;
    /* cgroup undo, through fds so that it also works after pivot_root */
    int cg_mount_fd[JAIL_MAX_CGROUPS]; /* O_PATH of each hierarchy we made directories in */
    int n_cg_mount;
    char cg_made[24][JAIL_PATH_MAX / 4]; /* made directories, relative to their mount */
    int cg_made_mount[24];               /* index into cg_mount_fd */
    int n_cg_made;
    int cg_return_fd[JAIL_MAX_CGROUPS]; /* cgroup.procs of each cgroup we left */
    int n_cg_return;
};

/* args.c */
/* Parses argv into *a. Returns 0, or -EINVAL with a->err and a->exit_code set. */
int args_parse(struct jail_args *a, int argc, char **argv);
/* Returns true if s is a valid --id: [A-Za-z0-9-], 1..64 characters. */
bool args_valid_id(const char *s);
/* Returns true if path has no "." or ".." component. */
bool args_no_dot_components(const char *path);
/* Prints the usage text to f. */
void args_usage(FILE *f);

/* env.c */
/* Closes fds above 2, empties the environment, resets signals. Returns 0 or -errno. */
int env_sanitize(void);
/* Returns the CLOCK_MONOTONIC time in microseconds. */
uint64_t env_mono_us(void);
/* Returns this process's CPU time in microseconds. */
uint64_t env_cpu_us(void);
/* Prints "ember-jailer: <msg>" on stderr; with err != 0 appends ": strerror(-err)". */
void env_log(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a path into out. Returns 0, or -ENAMETOOLONG if it did not fit. */
int env_path(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* elf.c */
/* Checks that path is a static x86-64 ELF executable (no loader needed). Returns 0/-ENOEXEC. */
int elf_check_static(const char *path);

/* chroot.c */
/* Resolves and checks exec file and base dir into j. Returns 0 or -errno (logged). */
int chroot_resolve(struct jail *j, int *exit_code);
/* Creates <base>/<exec>/<id>/root and copies the binary in. Returns 0, -EEXIST, or -errno. */
int chroot_create(struct jail *j);
/* Removes what chroot_create and devices_create made (best effort, also after the pivot). */
void chroot_undo(struct jail *j);
/* New mount namespace, slave mounts, bind the jail on itself, pivot_root. Returns 0/-errno. */
int chroot_enter(struct jail *j);

/* cgroup.c */
/* Checks cgroup arguments against the mounted hierarchies. Returns 0, -ENOENT, or -errno. */
int cgroup_check(struct jail *j);
/* Creates and joins the per-VM cgroup(s). Returns 0, -ENOENT (no such file), -EEXIST, -errno. */
int cgroup_setup(struct jail *j);
/* Moves the process back and removes the cgroups cgroup_setup made (also after the pivot). */
void cgroup_undo(struct jail *j);

/* rlimits.c */
/* Applies --resource-limit values (default no-file=2048, core=0). Returns 0 or -errno. */
int rlimits_apply(const struct jail_args *a);

/* ns.c */
/* Opens the --netns file (if any). Returns 0 or -errno. */
int ns_open_netns(struct jail *j);
/* Joins the opened network namespace. Returns 0 or -errno. */
int ns_join_netns(struct jail *j);
/* Daemonizes and/or enters a new PID namespace, writes /<exec>.pid. Returns 0 or -errno. */
int ns_detach(struct jail *j);

/* devices.c */
/* Reads the userfaultfd misc minor from /proc/misc into j (-1 if absent). Returns 0/-errno. */
int devices_probe(struct jail *j);
/* Creates /dev, /dev/net, /run and the device nodes inside the jail. Returns 0 or -errno. */
int devices_create(const struct jail *j);

/* caps.c */
/* Clears the bounding, ambient and inheritable capability sets. Returns 0 or -errno. */
int caps_drop_inheritable(void);
/* setgroups(0), setresgid, setresuid to the jail ids. Returns 0 or -errno. */
int caps_set_ids(uid_t uid, gid_t gid);
/* Clears permitted and effective sets, verifies all five are empty. Returns 0 or -errno. */
int caps_clear_all(void);
/* Sets PR_SET_NO_NEW_PRIVS. Returns 0 or -errno. */
int caps_no_new_privs(void);

#endif
