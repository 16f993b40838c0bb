/* The virtio-mmio register offsets (spec 4.2.2), shared by the register file (mmio.c) and its
 * page (mmio_regs.c). */
#ifndef EMBER_VIRTIO_MMIO_REGS_H
#define EMBER_VIRTIO_MMIO_REGS_H

enum {
    REG_MAGIC = 0x000,
    REG_VERSION = 0x004,
    REG_DEVICE_ID = 0x008,
    REG_VENDOR_ID = 0x00c,
    REG_DEV_FEATURES = 0x010,
    REG_DEV_FEATURES_SEL = 0x014,
    REG_DRV_FEATURES = 0x020,
    REG_DRV_FEATURES_SEL = 0x024,
    REG_QUEUE_SEL = 0x030,
    REG_QUEUE_NUM_MAX = 0x034,
    REG_QUEUE_NUM = 0x038,
    REG_QUEUE_READY = 0x044,
    REG_QUEUE_NOTIFY = 0x050,
    REG_INT_STATUS = 0x060,
    REG_INT_ACK = 0x064,
    REG_STATUS = 0x070,
    REG_QUEUE_DESC_LO = 0x080,
    REG_QUEUE_DESC_HI = 0x084,
    REG_QUEUE_AVAIL_LO = 0x090,
    REG_QUEUE_AVAIL_HI = 0x094,
    REG_QUEUE_USED_LO = 0x0a0,
    REG_QUEUE_USED_HI = 0x0a4,
    REG_CONFIG_GEN = 0x0fc,
    REG_CONFIG = 0x100,
};

#define MMIO_MAGIC   0x74726976 /* "virt" */
#define MMIO_VERSION 2

#endif
