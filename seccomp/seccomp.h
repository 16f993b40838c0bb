/* ember seccomp: one filter per thread role, compiled with libseccomp by ember-seccomp (at
 * build time for the built-in lists, embedded in ember), installed by each thread before its
 * first untrusted input, and a SIGSYS handler that counts, logs and exits with 148.
 *
 *   roles   api (libmicrohttpd's thread), accept (the API acceptor), vmm (the event loop),
 *           vcpu (each vCPU), opener (the one thread that may open files after boot)
 *   file    ember's filter file (filefmt.c): one classic-BPF program per role
 *   lists   the built-in allow-lists (lists.c, used by ember-seccomp only)
 */
#ifndef EMBER_SECCOMP_H
#define EMBER_SECCOMP_H

#include <fcntl.h>
#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

enum sc_role { SC_ROLE_API, SC_ROLE_ACCEPT, SC_ROLE_VMM, SC_ROLE_VCPU, SC_ROLE_OPENER, SC_ROLES };

/* sc_role_name(role): Returns "api", "accept", "vmm", "vcpu" or "opener" (NULL if out of range). */
const char *sc_role_name(enum sc_role role);
/* sc_role_parse(name): Returns the role called name, or -1. */
int sc_role_parse(const char *name);

/* ---- the filter file (filefmt.c) ----------------------------------------------------------
 * Little-endian. Header (24 bytes): magic "EMBERSCF", u32 version (1), u32 audit arch
 * (AUDIT_ARCH_X86_64), u32 number of programs, u32 0. Then per program: char role[16]
 * (NUL-padded), u32 instruction count (1..4096), u32 0, then the instructions as struct
 * sock_filter (u16 code, u8 jt, u8 jf, u32 k). Every role exactly once, nothing after. */
#define SC_FILE_MAGIC   "EMBERSCF"
#define SC_FILE_VERSION 1
#define SC_FILE_MAX     (SC_ROLES * (24 + SC_PROG_MAX * 8) + 24)
#define SC_PROG_MAX     4096 /* BPF_MAXINSNS: the kernel's limit for one program */
#define SC_ROLE_LEN     16

struct sc_prog {
    unsigned len;
    struct sock_filter insns[SC_PROG_MAX];
};

struct sc_filters {
    struct sc_prog prog[SC_ROLES];
};

/* sc_file_parse(f, data, len, err, errlen): checks a filter file (header, every role once,
 * sizes, each program a valid seccomp BPF program ending in a return) and fills f.
 * Returns 0, or -EINVAL with a one-line reason in err. */
int sc_file_parse(struct sc_filters *f, const uint8_t *data, size_t len, char *err, size_t errlen);
/* sc_prog_check(insns, len, err, errlen): the kernel's rules for a seccomp program (known
 * opcodes, loads inside seccomp_data, jumps inside the program, a return at the end).
 * Returns 0, or -EINVAL with a reason in err. */
int sc_prog_check(const struct sock_filter *insns, unsigned len, char *err, size_t errlen);
/* sc_file_size(f): Returns the size of f written as a file. */
size_t sc_file_size(const struct sc_filters *f);
/* sc_file_write(f, out): writes f in the file format into out (sc_file_size bytes). */
void sc_file_write(const struct sc_filters *f, uint8_t *out);

/* ---- the built-in filters and names (generated into build/gen/sc_builtin.c) -------------- */
extern const uint8_t sc_builtin_file[];
extern const size_t sc_builtin_file_len;
/* The x86_64 syscall names by number (NULL where there is none), for the SIGSYS line. */
extern const char *const sc_syscall_names[];
extern const unsigned sc_syscall_names_len;

/* ---- running ember (install.c) ------------------------------------------------------------- */
struct sc_options {
    bool off;            /* --no-seccomp: install nothing */
    const char *file;    /* --seccomp-filter FILE, or NULL for the built-in filters */
    bool opener;         /* start the opener thread (the API can open drives after boot) */
    bool strict_sandbox; /* --strict-sandbox: refuse to start outside a sandbox */
    bool check_sandbox;  /* log a warning when not sandboxed (the firecracker front end) */
};

/* sc_setup(opts, err, errlen): before any other thread exists: checks the sandbox, loads and
 * checks the filters, installs the SIGSYS handler, warms up what opens files lazily (libc's
 * time zone, jansson's hash seed) and starts the opener thread with its filter.
 * Returns 0, or -errno with a one-line reason in err (exit 1 for a refused sandbox). */
int sc_setup(const struct sc_options *opts, char *err, size_t errlen);
/* sc_enter(role): installs role's filter on the calling thread (no-op with --no-seccomp or
 * before sc_setup). Never returns on failure: the process exits 1 with a log line. */
void sc_enter(enum sc_role role);
/* sc_next_thread(role, name): the next pthread_create of the calling thread makes a thread
 * that takes name and installs role's filter before it runs any of its own code (for
 * libmicrohttpd's thread, which ember does not create itself; ember links with
 * --wrap=pthread_create). */
void sc_next_thread(enum sc_role role, const char *name);
/* sc_next_thread_done(): forgets a pending sc_next_thread that no pthread_create took (the
 * creating call failed before it made its thread). */
void sc_next_thread_done(void);
/* sc_filtered_threads(): Returns how many threads have installed a filter so far. */
unsigned sc_filtered_threads(void);
/* sc_on_fault(hook): hook runs in the SIGSYS handler before the exit (count, flush metrics);
 * it must be async-signal-safe. */
void sc_on_fault(void (*hook)(void));
/* sc_install_ns(): Returns the nanoseconds the last sc_enter took (for the measurements). */
uint64_t sc_install_ns(void);

/* ---- opening files after the checkpoint (opener.c) ------------------------------------------
 * No filtered thread but the opener may open or unlink: a filtered thread asks it. The opener
 * opens read-only or read-write (never O_CREAT, O_TRUNC, O_PATH, ...), keeps only regular files,
 * block devices and directories (callers refuse directories), and passes the fd back (one fd
 * table: no SCM_RIGHTS needed). */
/* sc_opener_start(err, errlen): starts the opener thread. Returns 0 or -errno. */
int sc_opener_start(char *err, size_t errlen);
/* sc_opener_open(path, flags): open(path, flags) on the opener thread. Returns the fd or -1
 * with errno set. Weak so that code linked without the opener (unit tests) uses open(). */
int sc_opener_open(const char *path, int flags) __attribute__((weak));
/* sc_opener_unlink(path): unlink(path) on the opener thread. Returns 0 or -1 with errno. */
int sc_opener_unlink(const char *path) __attribute__((weak));
/* The flags of an output file (a snapshot's): created or truncated, write-only, no symlink. */
#define SC_CREATE_FLAGS (O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW)
/* sc_opener_create(path): open(path, SC_CREATE_FLAGS, 0600) on the opener thread, kept only if
 * it is a regular file. Returns the fd or -1 with errno set. */
int sc_opener_create(const char *path) __attribute__((weak));
/* sc_thread_filtered(): Returns true if the calling thread runs under a filter. */
bool sc_thread_filtered(void) __attribute__((weak));

/* sc_open(path, flags): open(path, flags), through the opener when the calling thread is
 * filtered. Returns the fd, or -1 with errno set. */
static inline int sc_open(const char *path, int flags)
{
    if (sc_thread_filtered && sc_thread_filtered())
        return sc_opener_open(path, flags);
    return open(path, flags);
}

/* sc_create(path): an output file (SC_CREATE_FLAGS, mode 0600), through the opener when the
 * calling thread is filtered. Returns the fd, or -1 with errno set. */
static inline int sc_create(const char *path)
{
    if (sc_thread_filtered && sc_thread_filtered())
        return sc_opener_create(path);
    return open(path, SC_CREATE_FLAGS, 0600);
}

/* sc_unlink(path): unlink(path), through the opener when the calling thread is filtered.
 * Returns 0, or -1 with errno set. */
static inline int sc_unlink(const char *path)
{
    if (sc_thread_filtered && sc_thread_filtered())
        return sc_opener_unlink(path);
    return unlink(path);
}

/* ---- the sandbox self-check (sandbox.c) ------------------------------------------------------ */
/* sc_sandbox_check(why, len): Returns true when ember runs sandboxed: not root with
 * capabilities, and started by ember-jailer (no_new_privs set); else false with the reasons in
 * why. */
bool sc_sandbox_check(char *why, size_t len);

#endif
