/* Parsing of the kernel command line for ember's guest init. */
#ifndef EMBER_INIT_CMDLINE_H
#define EMBER_INIT_CMDLINE_H

#include <stddef.h>

/*
 * cmdline_get(cmdline, key, out, outlen): find the parameter `key=` in a kernel command
 * line (as read from /proc/cmdline) and copy its value into out (NUL-terminated). A value
 * in double quotes runs to the closing quote and may contain spaces; otherwise it runs
 * to the next space. The key must start a parameter (at the start or after whitespace).
 * Returns the value length, -ENOENT if the key is absent, -EINVAL if a quote is not
 * closed, -ENAMETOOLONG if the value does not fit in outlen - 1 bytes.
 */
int cmdline_get(const char *cmdline, const char *key, char *out, size_t outlen);

#endif
