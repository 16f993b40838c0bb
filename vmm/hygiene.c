/* Process hygiene at start (security review F8): a VMM's core dump, or ptrace and /proc/<pid>/mem
 * access by a process of its own uid, would expose all of its guest's RAM. */
#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "vmm.h"

void proc_hygiene(int argc, char **argv)
{
    /* The one flag read here, before any parser: it must be spelt out in full (the parsers
     * accept and ignore it; an abbreviation they take leaves core dumps off). */
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--allow-core-dumps"))
            return;
    /* Not dumpable: no core, and /proc/<pid> and ptrace are root's only (same uid included). */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        log_warn("prctl(PR_SET_DUMPABLE, 0): %s", strerror(errno));
    /* Hard limit too, so a compromised VMM cannot raise it again. */
    if (setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0}) != 0)
        log_warn("setrlimit(RLIMIT_CORE, 0): %s", strerror(errno));
}
