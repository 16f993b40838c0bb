/* What the virtio-blk unit tests share (blk_harness.c): fake guest RAM with one queue of
 * QSIZE at fixed addresses, a device on a temporary backing file behind the real mmio
 * transport, and the driver's side: initialization, requests, kicks, PATCH /drives. Each test
 * program starts a device with start() and ends it with stop() (its teardown). */
#ifndef EMBER_TEST_BLK_HARNESS_H
#define EMBER_TEST_BLK_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../virtio/blk.h"
#include "../../virtio/mmio.h"

#define RAM   0x40000ULL
#define DESC  0x1000ULL
#define AVAIL 0x2000ULL
#define USED  0x3000ULL
#define HDR   0x4000ULL /* request headers, 16 bytes each */
#define STAT  0x5000ULL /* status bytes */
#define DATA  0x10000ULL
#define QSIZE 16
#define DISK  (64 * 512)

extern uint8_t ram[RAM];
extern struct guest_mem mem;
extern struct vmmio_dev t;
extern struct vblk *blk;
extern char path[64], path2[64]; /* the backing file, a second one (unlinked by stop) */
extern uint16_t next_avail, next_desc;
extern struct vm_stats stats;

/* wr(off, v), rd(off): a 32-bit register access of the driver. */
void wr(uint64_t off, uint32_t v);
uint32_t rd(uint64_t off);
/* make_file(p, sectors, xor): a temporary file (its name into p, 64 bytes) of sectors
 * sectors, sector i filled with (i ^ xor) & 0xff. */
void make_file(char *p, unsigned sectors, uint8_t xor);
/* driver_init(): the driver's initialization (spec 3.1.1), queue 0 of QSIZE at DESC/AVAIL/USED:
 * driver_negotiate() (up to FEATURES_OK), then driver_ready() (the queue, DRIVER_OK). */
void driver_negotiate(void);
void driver_ready(void);
void driver_init(void);
/* start(d): RAM cleared, a fresh backing file of DISK bytes at path, a device for drive d
 * (its path set) behind t, initialized by the driver. */
void start(struct vm_drive *d);
/* stop(state): the teardown of every test that called start(). Returns 0. */
int stop(void **state);
/* desc(addr, len, flags): the next descriptor (chained to the one after it). Returns its index. */
uint16_t desc(uint64_t addr, uint32_t len, uint16_t flags);
/* request(type, sector, data, len, write): queues a request with a 16-byte header, one data
 * buffer of len bytes at data (none if 0) and a status byte. Returns its number n (status(n)). */
uint16_t request(uint32_t type, uint64_t sector, uint64_t data, uint32_t len, bool write);
/* used_idx(): Returns the used ring's index. */
uint16_t used_idx(void);
/* status(n): Returns request n's status byte (0xee until answered). */
uint8_t status(uint16_t n);
/* dev_fd(which): Returns the device's fd number which (VBLK_FD_*). */
int dev_fd(unsigned which);
/* kick(want): notifies and, for the Async engine, waits (bounded) for completions until the
 * used index is want; asserts it is. */
void kick(uint16_t want);
/* patch_drive(d, p, bw, ops, err, errlen): PATCH /drives as the registry does it: the new file
 * p (NULL: unchanged) opened first, then the update under the lock. Returns its result. */
int patch_drive(const struct vm_drive *d, const char *p, const struct vm_bucket *bw,
                const struct vm_bucket *ops, char *err, size_t errlen);
/* file_bytes(off, buf, len): len bytes of the backing file at path from off. */
void file_bytes(uint64_t off, uint8_t *buf, size_t len);
/* expect_disk_id(file): GET_ID's answer at DATA is Firecracker's for file: decimal st_dev,
 * st_rdev, st_ino run together, the first 20 bytes, zero-padded. */
void expect_disk_id(const char *file);
/* backing_to_pipe(async, p): the file the engine uses (the Sync fd, or the ring's registered
 * file) becomes the read end of a new pipe p (syncs on it fail with EINVAL, reads wait for
 * bytes written to p[1]). Returns a dup of the old fd (the caller closes it and p). */
int backing_to_pipe(bool async, int p[2]);
/* backing_set(async, fd): the file the engine uses becomes fd. */
void backing_set(bool async, int fd);
/* capacity(): Returns the config space's capacity (sectors). */
uint64_t capacity(void);

#endif
