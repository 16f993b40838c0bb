/* The one configuration of a VM (config.c). The API controller, --config-file and `ember run`
 * all fill this structure, and its limits are the only limits: a request beyond one is refused
 * when it is made, never at InstanceStart. Strings are owned by the structure that holds them
 * (heap copies; NULL: not set). */
#ifndef EMBER_CONFIG_H
#define EMBER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_PATH_MAX 4096 /* bytes of a host path including the NUL (PATH_MAX) */
#define CFG_ID_MAX   64   /* characters of a resource id (drive_id ...), as Firecracker */
#define CMDLINE_MAX  2048 /* bytes including the NUL, as Firecracker on x86 */
#define VCPUS_MAX    32   /* Firecracker's machine-config limit */
#define MEM_MIN_MIB  2
#define MEM_MAX_MIB  (255 * 1024) /* RAM must end below the 64-bit MMIO window at 256 GiB */
#define DEFAULT_CMDLINE                                                        \
    "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux " \
    "i8042.dumbkbd swiotlb=noforce"

/* Interrupt lines: the IOAPIC's 24 pins are GSI 0..23. GSI 0-4 are the PIT (0), i8042 (1),
 * the PIC cascade (2), COM2 (3, not emulated) and COM1 (4); virtio-mmio device n has GSI 5 + n
 * (Firecracker's IRQ_BASE 5 .. IRQ_MAX 23). VM_DEVS_MAX is the one limit on virtio-mmio devices
 * (drives and nets share it; vsock will). */
#define IOAPIC_PINS   24
#define MMIO_GSI_BASE 5
#define VM_DEVS_MAX   (IOAPIC_PINS - MMIO_GSI_BASE) /* 19 */
#define VM_DRIVES_MAX VM_DEVS_MAX
#define VM_NETS_MAX   VM_DEVS_MAX
#define VM_IFNAME_MAX 15  /* characters of a host interface name (IFNAMSIZ - 1) */
#define VM_UDS_MAX    107 /* bytes of a Unix socket path (sun_path without its NUL) */

enum boot_pref { BOOT_PREF_AUTO, BOOT_PREF_LINUX, BOOT_PREF_PVH };
enum vm_huge_pages { VM_HUGE_NONE, VM_HUGE_2M, VM_HUGE_TRANSPARENT };

/* A rate limiter bucket (Firecracker's TokenBucket); size 0 is disabled. Its bounds, checked
 * by the API's body parser, cfg_put_drive and cfg_put_net: the refill time in nanoseconds fits 64
 * bits (as Firecracker's TokenBucket computes it), sizes are the API's int64. */
struct vm_bucket {
    uint64_t size, one_time_burst, refill_time_ms;
};
#define VM_BUCKET_REFILL_MS_MAX (UINT64_MAX / 1000000ULL)
#define VM_BUCKET_SIZE_MAX      ((uint64_t)INT64_MAX)

/* A block device (virtio/blk.c). */
struct vm_drive {
    char id[CFG_ID_MAX + 1];
    char partuuid[CFG_ID_MAX + 1]; /* "" = none; reported, not used (as Firecracker's MBR id) */
    char *path;
    bool root, read_only, writeback, async; /* writeback: FLUSH → fdatasync; async: io_uring */
    struct vm_bucket bw, ops;
};

/* A network interface (virtio/net.c) on a host TAP device. */
struct vm_net {
    char id[CFG_ID_MAX + 1];
    char host_dev_name[VM_IFNAME_MAX + 1];
    bool has_mac; /* false: the guest picks a random one (VIRTIO_NET_F_MAC not offered) */
    uint8_t mac[6];
    struct vm_bucket rx_bw, rx_ops, tx_bw, tx_ops;
};

/* The vsock device (virtio/vsock.c): Firecracker's hybrid vsock on a host Unix socket. */
struct vm_vsock {
    bool enabled;
    uint32_t guest_cid;            /* 3 .. 2^32 - 2 (0-2 are reserved, -1 is VMADDR_CID_ANY) */
    char uds_path[VM_UDS_MAX + 1]; /* host-initiated connections; guest ones: <uds_path>_<port> */
};

struct vm_config {
    char *kernel_path;
    char *initrd_path;            /* NULL: none */
    char *console_path;           /* NULL: stdout */
    struct vm_bucket serial_rate; /* guest output in bytes (size 0: unlimited) */
    char cmdline[CMDLINE_MAX];
    bool cmdline_set; /* the user gave one (else DEFAULT_CMDLINE) */
    uint32_t vcpus;
    bool smt; /* two threads per core in the guest's CPU topology (vcpus 1 or even) */
    bool track_dirty_pages;
    enum vm_huge_pages huge_pages;
    uint64_t mem_mib;
    enum boot_pref boot; /* auto: PVH when the kernel has the PVH note (as Firecracker) */
    struct vm_drive drives[VM_DRIVES_MAX]; /* as configured; attach order is the registry's */
    unsigned ndrives;
    struct vm_net nets[VM_NETS_MAX]; /* attached after the drives, as configured */
    unsigned nnets;                  /* ndrives + nnets <= VM_DEVS_MAX */
    /* `ember run --restore`: the VM comes from this snapshot and memory file instead (NULL:
     * a boot) */
    char *restore_path, *restore_mem;
    struct vm_vsock vsock; /* attached last (one device counted against VM_DEVS_MAX) */
};

/* cfg_defaults(cfg): an empty configuration with the defaults (1 vCPU, 128 MiB, the default
 * command line). */
void cfg_defaults(struct vm_config *cfg);
/* cfg_free(cfg): frees its strings (cfg is then empty; cfg_defaults makes it usable again). */
void cfg_free(struct vm_config *cfg);
/* cfg_set_path(dst, path, what, err, errlen): replaces *dst with a copy of path (NULL or "":
 * none). Returns 0, or -EINVAL/-ENOMEM with a reason naming what in err. */
int cfg_set_path(char **dst, const char *path, const char *what, char *err, size_t errlen);
/* cfg_set_cmdline(cfg, cmdline, err, errlen): Returns 0, or -EINVAL if it is too long. */
int cfg_set_cmdline(struct vm_config *cfg, const char *cmdline, char *err, size_t errlen);
/* cfg_check_machine(vcpus, mem_mib, smt, err, errlen): the machine limits (Firecracker's
 * messages). Returns 0 or -EINVAL with a reason in err. */
int cfg_check_machine(uint32_t vcpus, uint64_t mem_mib, bool smt, char *err, size_t errlen);
/* cfg_drive(cfg, id): Returns the drive with that id, or NULL. */
struct vm_drive *cfg_drive(struct vm_config *cfg, const char *id);
/* cfg_put_drive(cfg, d, err, errlen): adds drive d, or replaces the one with its id: the id
 * must be valid, at most one root drive, at most VM_DRIVES_MAX drives. cfg takes d's strings
 * on success (d is then cleared); on failure d keeps them. Returns 0, or -EINVAL / -ENOSPC
 * with a reason in err. */
int cfg_put_drive(struct vm_config *cfg, struct vm_drive *d, char *err, size_t errlen);
/* cfg_net(cfg, id): Returns the network interface with that id, or NULL. */
struct vm_net *cfg_net(struct vm_config *cfg, const char *id);
/* cfg_put_net(cfg, n, err, errlen): adds interface n, or replaces the one with its id: valid
 * id and host_dev_name, MAC and host_dev_name not used by another interface, at most
 * VM_DEVS_MAX devices, room on the kernel command line. Returns 0, or -EINVAL / -ENOSPC with
 * a reason (Firecracker's messages) in err. */
int cfg_put_net(struct vm_config *cfg, const struct vm_net *n, char *err, size_t errlen);
/* cfg_put_vsock(cfg, vs, err, errlen): sets the vsock device: a guest_cid of at least 3 (below
 * VMADDR_CID_ANY), a non-empty uds_path short enough for a Unix socket, room among the devices.
 * Returns 0, or -EINVAL / -ENOSPC with a reason (Firecracker's messages) in err. */
int cfg_put_vsock(struct vm_config *cfg, const struct vm_vsock *vs, char *err, size_t errlen);
/* cfg_mac_parse(s, mac): "xx:xx:xx:xx:xx:xx" (hex digits, either case) into mac.
 * Returns 0 or -EINVAL. */
int cfg_mac_parse(const char *s, uint8_t mac[6]);
/* cfg_mac_format(mac, buf): writes "xx:xx:xx:xx:xx:xx" (lower case) into buf. Returns buf. */
char *cfg_mac_format(const uint8_t mac[6], char buf[18]);
/* cfg_drive_free(d): frees a drive's strings. */
void cfg_drive_free(struct vm_drive *d);
/* cfg_id_valid(id): Returns true for a non-empty id of [A-Za-z0-9_] up to CFG_ID_MAX chars. */
bool cfg_id_valid(const char *id);
/* cfg_validate(cfg, err, errlen): what every configuration must satisfy before a VM is built.
 * Returns 0, or -EINVAL with a one-line reason in err. */
int cfg_validate(const struct vm_config *cfg, char *err, size_t errlen);

/* cli_parse(cfg, argc, argv, err, errlen): parses `run` options into cfg (cli.c).
 * Returns 0, 1 if --help was printed, or -EINVAL with a reason in err. */
int cli_parse(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* cli_usage(out): prints the usage text. */
void cli_usage(void *out);
/* drive_parse(d, spec, root, err, errlen): fills d (its path a heap copy) from a --drive spec,
 * or from a --rootfs path when root (drive.c). Returns 0, or -EINVAL with a reason in err. */
int drive_parse(struct vm_drive *d, const char *spec, bool root, char *err, size_t errlen);

#endif
