/*
 * jail-probe: run by ember-jailer in place of ember in the tests. Reports, as JSON, what a
 * process inside the jail sees: ids, groups, the five capability sets, no_new_privs, the file
 * tree, rlimits, open fds, environment, argv, its start clocks, and whether it can push input
 * into the terminal on fd 0 (TIOCSTI) and still has it as its controlling terminal. Built static
 * (the jail has no libc). Options (after the jailer's own): --out PATH (default /run/probe.json),
 * --wait (stay alive until SIGTERM, at most 60 s, so the test can inspect /proc/<pid>), --quick
 * (report only the clocks and argv: for jailer/measure-launch).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

extern char **environ;

static uint64_t clock_us(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void caps(FILE *f)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[2];
    uint64_t bnd = 0, amb = 0;

    memset(d, 0, sizeof(d));
    syscall(SYS_capget, &hdr, d);
    for (int c = 0; c < 64; c++) {
        if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
            bnd |= 1ull << c;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1)
            amb |= 1ull << c;
    }
    fprintf(f,
            "\"caps\":{\"effective\":%llu,\"permitted\":%llu,\"inheritable\":%llu,"
            "\"bounding\":%llu,\"ambient\":%llu},",
            (unsigned long long)d[0].effective | (unsigned long long)d[1].effective << 32,
            (unsigned long long)d[0].permitted | (unsigned long long)d[1].permitted << 32,
            (unsigned long long)d[0].inheritable | (unsigned long long)d[1].inheritable << 32,
            (unsigned long long)bnd, (unsigned long long)amb);
}

/* Every entry below dir (depth-first, at most depth levels) with its type, mode, owner, rdev. */
static void tree(FILE *f, const char *dir, int depth, int *first)
{
    struct dirent *e;
    DIR *d = opendir(dir);

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[512];
        struct stat st;

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof(path), "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", e->d_name);
        if (lstat(path, &st) != 0)
            continue;
        fputs(*first ? "" : ",", f);
        *first = 0;
        json_str(f, path);
        fprintf(f, ":{\"type\":\"%s\",\"mode\":%u,\"uid\":%u,\"gid\":%u,\"major\":%u,\"minor\":%u}",
                S_ISDIR(st.st_mode)   ? "dir"
                : S_ISREG(st.st_mode) ? "file"
                : S_ISCHR(st.st_mode) ? "chr"
                : S_ISLNK(st.st_mode) ? "link"
                                      : "other",
                st.st_mode & 07777, st.st_uid, st.st_gid, major(st.st_rdev), minor(st.st_rdev));
        if (S_ISDIR(st.st_mode) && depth > 1)
            tree(f, path, depth - 1, first);
    }
    closedir(d);
}

static void file_or_null(FILE *f, const char *key, const char *path)
{
    char buf[8192];
    ssize_t n = -1;
    int fd = open(path, O_RDONLY);

    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
    }
    fprintf(f, "\"%s\":", key);
    if (n < 0) {
        fputs("null,", f);
        return;
    }
    buf[n] = '\0';
    json_str(f, buf);
    fputc(',', f);
}

static void on_signal(int sig)
{
    _exit(sig == SIGTERM ? 0 : 3);
}

int main(int argc, char **argv)
{
    uint64_t mono = clock_us(CLOCK_MONOTONIC), cpu = clock_us(CLOCK_PROCESS_CPUTIME_ID);
    const char *out = "/run/probe.json";
    char tmp[512], cwd[512];
    uid_t ru, eu, su;
    gid_t rg, eg, sg, groups[64];
    struct rlimit nofile, fsize, core;
    int wait = 0, quick = 0, first = 1, ngroups, fd;
    FILE *f;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--wait"))
            wait = 1;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
    }
    /* As PID 1 of a PID namespace only signals with a handler get through. */
    signal(SIGTERM, on_signal);
    signal(SIGALRM, on_signal);

    snprintf(tmp, sizeof(tmp), "%s.tmp", out);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !(f = fdopen(fd, "w"))) {
        perror("jail-probe: output");
        return 2;
    }
    fprintf(f, "{\"mono_us\":%llu,\"cpu_us\":%llu,", (unsigned long long)mono,
            (unsigned long long)cpu);
    fputs("\"argv\":[", f);
    for (int i = 0; i < argc; i++) {
        fputs(i ? "," : "", f);
        json_str(f, argv[i]);
    }
    if (quick) {
        fputs("]}\n", f);
        goto done;
    }
    fputs("],\"env\":[", f);
    for (char **e = environ; e && *e; e++) {
        fputs(e == environ ? "" : ",", f);
        json_str(f, *e);
    }
    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    ngroups = getgroups(64, groups);
    fprintf(f, "],\"pid\":%d,\"ppid\":%d,\"sid\":%d,\"uid\":[%u,%u,%u],\"gid\":[%u,%u,%u],",
            (int)getpid(), (int)getppid(), (int)getsid(0), ru, eu, su, rg, eg, sg);
    fputs("\"groups\":[", f);
    for (int i = 0; i < ngroups; i++)
        fprintf(f, "%s%u", i ? "," : "", groups[i]);
    fputs("],", f);
    caps(f);
    fprintf(f, "\"no_new_privs\":%d,", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    getrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_FSIZE, &fsize);
    getrlimit(RLIMIT_CORE, &core);
    fprintf(f, "\"rlimits\":{\"nofile\":[%llu,%llu],\"fsize\":[%llu,%llu],\"core\":[%llu,%llu]},",
            (unsigned long long)nofile.rlim_cur, (unsigned long long)nofile.rlim_max,
            (unsigned long long)fsize.rlim_cur, (unsigned long long)fsize.rlim_max,
            (unsigned long long)core.rlim_cur, (unsigned long long)core.rlim_max);
    /* A terminal on fd 0: can this process inject a keystroke (a space) into it? */
    if (isatty(0)) {
        pid_t tty_sid;
        char c = ' ';
        int sti = ioctl(0, TIOCSTI, &c) == 0 ? 0 : errno;
        int ctty = ioctl(0, TIOCGSID, &tty_sid) == 0;
        fprintf(f, "\"tty\":{\"tiocsti\":%d,\"ctty\":%d},", sti, ctty);
    }
    fputs("\"fds\":[", f);
    for (int i = 0, n = 0; i < 4096; i++) {
        if (i != fd && fcntl(i, F_GETFD) >= 0)
            fprintf(f, "%s%d", n++ ? "," : "", i);
    }
    fputs("],\"cwd\":", f);
    json_str(f, getcwd(cwd, sizeof(cwd)) ? cwd : "?");
    fputc(',', f);
    /* No /proc in the jail: these are expected to be null; the test reads them from outside. */
    file_or_null(f, "mountinfo", "/proc/self/mountinfo");
    file_or_null(f, "cgroup", "/proc/self/cgroup");
    fputs("\"tree\":{", f);
    tree(f, "/", 3, &first);
    fputs("}}\n", f);
done:
    if (fclose(f) != 0 || rename(tmp, out) != 0) {
        perror("jail-probe: output");
        return 2;
    }
    if (wait) {
        alarm(60);
        for (;;)
            pause();
    }
    return 0;
}
