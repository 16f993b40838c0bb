/* The fake driver of the virtio-vsock unit tests (vsock_harness.c): guest memory, the mmio
 * transport over it, the device on real Unix sockets in a temporary directory, and the
 * driver's side of the three queues. Used by test_virtio_vsock.c and
 * test_virtio_vsock_restore.c. */
#ifndef EMBER_TESTS_UNIT_VSOCK_HARNESS_H
#define EMBER_TESTS_UNIT_VSOCK_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../virtio/mmio.h"
#include "../../virtio/vsock.h"

#define RAM      0x400000ULL
#define QSIZE    32
#define RXBUF    0x10000ULL             /* rx buffers, 0x2000 apart */
#define RXLEN    (VSOCK_HDR_LEN + 4096) /* as Linux posts them */
#define TXBUF    0x100000ULL            /* tx packets, 0x11000 apart */
#define CID      42
#define GPORT    5000 /* the guest's port of its connections */
#define ANY_PORT UINT32_MAX

extern uint8_t ram[RAM];
extern struct guest_mem mem;
extern struct vmmio_dev t;
extern struct vsock *dev;
extern struct vm_stats stats;
extern char dir[40], uds[64];
extern uint16_t next_avail[3], next_desc[3], seen_used[3];

/* The guest address of queue q's part: 0 desc, 1 avail, 2 used. */
uint64_t ring(unsigned q, unsigned part);
/* A 32-bit register write and read of the transport. */
void wr(uint64_t off, uint32_t v);
uint32_t rd(uint64_t off);
/* The driver's bring-up: features, the three queues of QSIZE, DRIVER_OK. */
void driver_init(void);
/* A fresh device on <tmp>/v.sock with the driver up; stop (a teardown) ends it. */
void start(void);
int stop(void **state);
/* A descriptor in queue q; publish puts a chain's head in the avail ring. */
uint16_t desc(unsigned q, uint64_t addr, uint32_t len, uint16_t flags);
void publish(unsigned q, uint16_t head);
/* Queue q's used index as the device wrote it. */
uint16_t used_idx(unsigned q);
/* Posts rx buffers until QSIZE are out, and kicks. */
void fill_rx(void);
/* The guest sends a packet (one descriptor: header and payload) and kicks; send_op a control
 * packet with the usual credit. */
void send_pkt(uint16_t op, uint32_t src, uint32_t dst, uint32_t flags, const void *data,
              uint32_t len, uint32_t buf_alloc, uint32_t fwd_cnt);
void send_op(uint16_t op, uint32_t src, uint32_t dst);
/* The next packet the device put in the rx queue: false if there is none. */
bool next_rx(struct vsock_hdr *h, uint8_t *payload);
/* Runs the device's host side: every ready socket event, then what it owes the guest. */
void pump(void);
/* pump, then the next rx packet must be op from src (ANY_PORT: any) to dst. */
void expect_rx(uint16_t op, uint32_t src, uint32_t dst, struct vsock_hdr *out);
/* A host client connected to the device's socket. */
int client(void);
/* Bytes the peer fd has now (waits up to 1 s for the first), -1 on EOF or error. */
ssize_t recv_some(int fd, void *buf, size_t len);
/* A host client through CONNECT, REQUEST, RESPONSE and OK. Returns its fd. */
int host_connect(uint32_t port, uint32_t *host_port);

#endif
