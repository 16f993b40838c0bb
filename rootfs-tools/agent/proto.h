/* The guest agent's protocol (rootfs-tools/agent/README.md), shared by the agent in the guest
 * and `ember exec` on the host. Little-endian, over one vsock stream per command:
 *
 *   request  (host → agent): u32 len, then len bytes: u32 argc, then argc NUL-terminated
 *            arguments (argv[0] is the program, looked up in PATH), nothing after the last NUL
 *   response (agent → host): frames of u8 type, u32 len, len bytes:
 *            AGENT_STDOUT / AGENT_STDERR: output as it comes (at most AGENT_CHUNK_MAX bytes);
 *            AGENT_EXIT: 4 bytes, the exit code (0-255; 128 + N for a signal N), the last frame.
 */
#ifndef EMBER_AGENT_PROTO_H
#define EMBER_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define AGENT_PORT_DEFAULT 10789
#define AGENT_REQ_MAX      65536 /* bytes of a request after its length */
#define AGENT_ARGS_MAX     256
#define AGENT_CHUNK_MAX    65536
#define AGENT_FRAME_HDR    5

enum agent_frame { AGENT_STDOUT = 1, AGENT_STDERR = 2, AGENT_EXIT = 3 };

/* agent_req_encode(argv, argc, buf, cap): the whole request (its length first) into buf.
 * Returns its size, or -E2BIG when it does not fit cap or the limits. */
int agent_req_encode(char *const *argv, unsigned argc, uint8_t *buf, size_t cap);
/* agent_req_parse(body, len, argv, max): a request's body (after its length; len at most
 * AGENT_REQ_MAX) into argv (pointers into body, NULL after the last; room for max + 1).
 * Returns argc (at least 1), or -EINVAL for a malformed body. */
int agent_req_parse(const uint8_t *body, size_t len, const char **argv, unsigned max);
/* agent_frame_hdr(type, len, hdr): encodes a frame header. */
void agent_frame_hdr(uint8_t type, uint32_t len, uint8_t hdr[AGENT_FRAME_HDR]);
/* agent_frame_check(hdr, type, len): decodes a frame header: a known type, at most
 * AGENT_CHUNK_MAX bytes, exactly 4 for AGENT_EXIT. Returns 0 or -EPROTO. */
int agent_frame_check(const uint8_t hdr[AGENT_FRAME_HDR], uint8_t *type, uint32_t *len);
/* agent_le32(p) / agent_put32(p, v): a little-endian u32. */
uint32_t agent_le32(const uint8_t *p);
void agent_put32(uint8_t *p, uint32_t v);

#endif
