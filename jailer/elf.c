/*
 * elf: refuse an exec file that cannot run in an empty jail. The jail holds nothing but the
 * binary, so a dynamically linked program (PT_INTERP) or a script (#!) would fail at exec,
 * after pivot_root, when the jail can no longer be removed. Checked up front instead.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "jailer.h"

#define ELF_MAX_PHDRS 256

static int check_fd(int fd, const char *path)
{
    Elf64_Ehdr eh;
    ssize_t n;

    n = pread(fd, &eh, sizeof(eh), 0);
    if (n >= 2 && memcmp(&eh, "#!", 2) == 0) {
        env_log(0, "--exec-file '%s' is a script: the jail has no interpreter", path);
        return -ENOEXEC;
    }
    if (n != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64 ||
        (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)) {
        env_log(0, "--exec-file '%s' is not an x86-64 ELF executable", path);
        return -ENOEXEC;
    }
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > ELF_MAX_PHDRS) {
        env_log(0, "--exec-file '%s' has a malformed program header table", path);
        return -ENOEXEC;
    }
    for (unsigned int i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        char interp[256] = "";

        if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) !=
            (ssize_t)sizeof(ph)) {
            env_log(0, "--exec-file '%s' has a truncated program header table", path);
            return -ENOEXEC;
        }
        if (ph.p_type != PT_INTERP)
            continue;
        if (pread(fd, interp, sizeof(interp) - 1, (off_t)ph.p_offset) < 0)
            interp[0] = '\0';
        interp[strcspn(interp, "\n")] = '\0';
        env_log(0,
                "--exec-file '%s' is dynamically linked (loader %s), and the jail has no "
                "loader or libraries: build it static",
                path, interp[0] ? interp : "?");
        return -ENOEXEC;
    }
    return 0;
}

int elf_check_static(const char *path)
{
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        env_log(rc, "--exec-file '%s'", path);
        return rc;
    }
    rc = check_fd(fd, path);
    close(fd);
    return rc;
}
