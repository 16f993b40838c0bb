/*
 * ember's guest init: PID 1 of the guest root filesystems built by rootfs-tools.
 *
 * 1. mounts /proc, /sys, /dev (+ /dev/pts), /tmp and /run;
 * 2. writes the boot-timer byte (123 at MMIO 0xC000_0000, through /dev/mem) so the VMM
 *    can log Guest-boot-time;
 * 3. with ember.agent=PORT on the kernel command line, starts /sbin/ember-agent PORT (the
 *    host's `ember exec` over vsock; rootfs-tools/agent/);
 * 4. if the kernel command line has ember.cmd="...", runs it with /bin/sh -c (stdin from
 *    /dev/null, output on the console), prints "ember.exit=N" and reboots: with reboot=k
 *    the i8042 reset stops the VMM. Otherwise starts a shell on the console and reboots
 *    when it exits.
 * Ctrl-Alt-Del (SIGINT to init) also reboots, and so do busybox's reboot, halt and poweroff
 * (SIGTERM, SIGUSR1, SIGUSR2 to init): without ACPI the VM can only stop by a reset. Built
 * static: the rootfs has no libc.
 */
#include "cmdline.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BOOT_TIMER_GPA   0xC0000000UL
#define BOOT_TIMER_MAGIC 123
#define CMD_MAX          4096

/* The signals that ask PID 1 to stop the machine: Ctrl-Alt-Del, then busybox's reboot,
 * halt and poweroff. A PID 1 without a handler would ignore them. */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
#define NSTOP_SIGNALS (sizeof(stop_signals) / sizeof(stop_signals[0]))

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Children get the default actions back (a shell must not inherit our handlers' effect). */
static void default_stop_signals(void)
{
    for (size_t i = 0; i < NSTOP_SIGNALS; i++)
        signal(stop_signals[i], SIG_DFL);
}

static void mount_one(const char *src, const char *dst, const char *type, unsigned long flags,
                      const char *data)
{
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) != 0 && errno != EBUSY)
        fprintf(stderr, "init: mount %s on %s: %s\n", type, dst, strerror(errno));
}

static void mount_basics(void)
{
    mount_one("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620");
    mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
}

/* One byte at the boot-timer address tells the VMM that userspace is up. */
static void signal_boot_timer(void)
{
    int fd = open("/dev/mem", O_RDWR | O_SYNC | O_CLOEXEC);
    if (fd < 0)
        return;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, BOOT_TIMER_GPA);
    if (p != MAP_FAILED) {
        *(volatile uint8_t *)p = BOOT_TIMER_MAGIC;
        munmap(p, 4096);
    }
    close(fd);
}

static void reboot_now(void)
{
    sync();
    reboot(RB_AUTOBOOT);
    /* Only reached if reboot failed: keep PID 1 alive rather than panic. */
    for (;;)
        pause();
}

/* Wait for pid while reaping every other child (we are PID 1). Returns its wait status,
 * or -1 if a stop signal (Ctrl-Alt-Del, reboot) arrived first. */
static int wait_for(pid_t pid)
{
    for (;;) {
        int status;
        if (stop_requested) /* also when it came before we blocked in waitpid */
            return -1;
        pid_t r = waitpid(-1, &status, 0);
        if (r == pid)
            return status;
        if (r < 0 && errno == EINTR && stop_requested)
            return -1;
        if (r < 0 && errno == ECHILD)
            return 0;
    }
}

static void redirect_stdin_null(void)
{
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
        dup2(fd, 0);
        if (fd != 0)
            close(fd);
    }
}

static int run_command(const char *cmd)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "init: fork: %s\n", strerror(errno));
        return 127;
    }
    if (pid == 0) {
        default_stop_signals();
        redirect_stdin_null();
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        fprintf(stderr, "init: exec /bin/sh: %s\n", strerror(errno));
        _exit(127);
    }
    int status = wait_for(pid);
    if (status < 0)
        return 130;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

/* The guest agent in the background (it serves until the VM stops; init reaps it). */
static void start_agent(const char *port)
{
    pid_t pid = fork();
    if (pid == 0) {
        default_stop_signals();
        redirect_stdin_null();
        execl("/sbin/ember-agent", "ember-agent", port, (char *)NULL);
        fprintf(stderr, "init: exec /sbin/ember-agent: %s\n", strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        fprintf(stderr, "init: fork: %s\n", strerror(errno));
}

static void run_shell(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        default_stop_signals();
        setsid();
        /* A real tty (not /dev/console) so the shell gets job control and ^C. */
        int fd = open("/dev/ttyS0", O_RDWR);
        if (fd < 0)
            fd = open("/dev/console", O_RDWR);
        if (fd >= 0) {
            ioctl(fd, TIOCSCTTY, 0);
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
            if (fd > 2)
                close(fd);
        }
        execl("/bin/sh", "-sh", (char *)NULL);
        _exit(127);
    }
    wait_for(pid);
}

int main(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal}; /* no SA_RESTART: waitpid returns */
    for (size_t i = 0; i < NSTOP_SIGNALS; i++)
        sigaction(stop_signals[i], &sa, NULL);
    /* Ctrl-Alt-Del becomes SIGINT to us instead of an immediate kernel reboot. */
    reboot(RB_DISABLE_CAD);

    setenv("PATH", "/sbin:/bin:/usr/sbin:/usr/bin", 1);
    setenv("HOME", "/root", 1);
    setenv("TERM", "linux", 0);
    mount_basics();
    sethostname("ember", 5);
    signal_boot_timer();

    static char cmdline[8192];
    static char cmd[CMD_MAX];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, cmdline, sizeof(cmdline) - 1) : -1;
    if (fd >= 0)
        close(fd);
    cmdline[n > 0 ? n : 0] = '\0';

    char port[16];
    if (cmdline_get(cmdline, "ember.agent", port, sizeof(port)) > 0)
        start_agent(port);
    int r = cmdline_get(cmdline, "ember.cmd", cmd, sizeof(cmd));
    if (r >= 0) {
        int code = run_command(cmd);
        printf("ember.exit=%d\n", code);
    } else {
        if (r != -ENOENT)
            fprintf(stderr, "init: ignoring malformed ember.cmd (%s)\n", strerror(-r));
        run_shell();
    }
    fflush(NULL);
    reboot_now();
    return 0;
}
