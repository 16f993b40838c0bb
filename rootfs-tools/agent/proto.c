/* The guest agent's wire format (proto.h): pure encoding and checks, for the agent and for
 * `ember exec`. Fuzzed by tests/fuzz/fuzz_agent_proto.c. */
#include <errno.h>
#include <string.h>

#include "proto.h"

uint32_t agent_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void agent_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

int agent_req_encode(char *const *argv, unsigned argc, uint8_t *buf, size_t cap)
{
    size_t len = 4;
    if (argc < 1 || argc > AGENT_ARGS_MAX)
        return -E2BIG;
    for (unsigned i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    if (len > AGENT_REQ_MAX || len + 4 > cap)
        return -E2BIG;
    agent_put32(buf, (uint32_t)len);
    agent_put32(buf + 4, argc);
    size_t at = 8;
    for (unsigned i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        memcpy(buf + at, argv[i], n);
        at += n;
    }
    return (int)at;
}

int agent_req_parse(const uint8_t *body, size_t len, const char **argv, unsigned max)
{
    if (len < 4 || len > AGENT_REQ_MAX)
        return -EINVAL;
    uint32_t argc = agent_le32(body);
    if (argc < 1 || argc > AGENT_ARGS_MAX || argc > max)
        return -EINVAL;
    size_t at = 4;
    for (uint32_t i = 0; i < argc; i++) {
        const uint8_t *nul = at < len ? memchr(body + at, 0, len - at) : NULL;
        if (!nul)
            return -EINVAL;
        argv[i] = (const char *)body + at;
        at = (size_t)(nul - body) + 1;
    }
    if (at != len || !argv[0][0])
        return -EINVAL; /* bytes after the last argument, or no program */
    argv[argc] = NULL;
    return (int)argc;
}

void agent_frame_hdr(uint8_t type, uint32_t len, uint8_t hdr[AGENT_FRAME_HDR])
{
    hdr[0] = type;
    agent_put32(hdr + 1, len);
}

int agent_frame_check(const uint8_t hdr[AGENT_FRAME_HDR], uint8_t *type, uint32_t *len)
{
    *type = hdr[0];
    *len = agent_le32(hdr + 1);
    if (*type < AGENT_STDOUT || *type > AGENT_EXIT || *len > AGENT_CHUNK_MAX)
        return -EPROTO;
    if (*type == AGENT_EXIT && *len != 4)
        return -EPROTO;
    return 0;
}
