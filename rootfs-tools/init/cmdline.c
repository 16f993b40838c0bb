/* Kernel command-line lookup for ember's guest init (see cmdline.h). */
#include "cmdline.h"

#include <errno.h>
#include <string.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

int cmdline_get(const char *cmdline, const char *key, char *out, size_t outlen)
{
    size_t keylen = strlen(key);
    const char *p = cmdline;

    if (outlen == 0 || keylen == 0)
        return -EINVAL;
    while (*p) {
        while (is_space(*p))
            p++;
        if (!*p)
            break;
        const char *start = p;
        /* Skip this parameter, honouring quotes the way the kernel does. */
        int quoted = 0;
        while (*p && (quoted || !is_space(*p))) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        if (strncmp(start, key, keylen) != 0 || start[keylen] != '=')
            continue;

        const char *v = start + keylen + 1;
        const char *end;
        if (*v == '"') {
            v++;
            end = strchr(v, '"');
            if (!end)
                return -EINVAL;
        } else {
            end = p;
        }
        size_t len = (size_t)(end - v);
        if (len >= outlen)
            return -ENAMETOOLONG;
        memcpy(out, v, len);
        out[len] = '\0';
        return (int)len;
    }
    return -ENOENT;
}
