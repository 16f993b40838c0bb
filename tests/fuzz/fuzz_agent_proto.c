/* Fuzz target: the guest agent's wire format (rootfs-tools/agent/proto.c). The input is a
 * request body as the agent reads it: a parse that succeeds must give NUL-terminated
 * arguments inside the body that encode back to the same bytes; then the input's first bytes
 * as a frame header `ember exec` reads: a header that passes has a known type and bounded
 * length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../rootfs-tools/agent/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t again[AGENT_REQ_MAX + 8];
    const char *argv[AGENT_ARGS_MAX + 1];

    if (size > AGENT_REQ_MAX)
        size = AGENT_REQ_MAX;
    int argc = agent_req_parse(data, size, argv, AGENT_ARGS_MAX);
    if (argc > 0) {
        if (argv[argc] != NULL)
            abort();
        int n = agent_req_encode((char *const *)argv, (unsigned)argc, again, sizeof(again));
        if (n != (int)size + 4 || memcmp(again + 4, data, size) != 0)
            abort();
    }
    if (size >= AGENT_FRAME_HDR) {
        uint8_t type;
        uint32_t len;
        if (agent_frame_check(data, &type, &len) == 0 &&
            (type < AGENT_STDOUT || type > AGENT_EXIT || len > AGENT_CHUNK_MAX))
            abort();
    }
    return 0;
}
