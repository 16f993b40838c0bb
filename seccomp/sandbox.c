/* The VMM's look at its own sandbox (DESIGN.md: "the VMM verifies it holds none"): no
 * capability in the effective or permitted set, and no_new_privs already set, which
 * ember-jailer does just before it executes ember (nothing else in a normal start sets it). */
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "seccomp.h"

bool sc_sandbox_check(char *why, size_t len)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    size_t n = 0;

    why[0] = '\0';
    memset(data, 0, sizeof(data));
    bool caps_known = syscall(SYS_capget, &hdr, data) == 0;
    unsigned long long eff = (unsigned long long)data[1].effective << 32 | data[0].effective;
    unsigned long long prm = (unsigned long long)data[1].permitted << 32 | data[0].permitted;
    if (!caps_known || eff || prm)
        n += (size_t)snprintf(why + n, len - n, "%s with capabilities (CapEff %#llx, CapPrm %#llx)",
                              geteuid() == 0 ? "runs as root" : "runs", eff, prm);
    if (n < len && prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        n += (size_t)snprintf(why + n, len - n,
                              "%swas not started by ember-jailer (no_new_privs is not set)",
                              n ? "; " : "");
    return n == 0;
}
