/* The one configuration (config.h): defaults, the setters every front end uses, and the checks
 * every configuration passes whoever filled it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

void cfg_defaults(struct vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->vcpus = 1;
    cfg->mem_mib = 128;
    snprintf(cfg->cmdline, sizeof(cfg->cmdline), "%s", DEFAULT_CMDLINE);
}

void cfg_drive_free(struct vm_drive *d)
{
    free(d->path);
    d->path = NULL;
}

void cfg_free(struct vm_config *cfg)
{
    free(cfg->kernel_path);
    free(cfg->initrd_path);
    free(cfg->console_path);
    free(cfg->restore_path);
    free(cfg->restore_mem);
    for (unsigned i = 0; i < cfg->ndrives; i++)
        cfg_drive_free(&cfg->drives[i]);
    memset(cfg, 0, sizeof(*cfg));
}

int cfg_set_path(char **dst, const char *path, const char *what, char *err, size_t errlen)
{
    char *copy = NULL;

    if (path && path[0]) {
        if (strnlen(path, CFG_PATH_MAX) >= CFG_PATH_MAX)
            return errf(err, errlen, -EINVAL, "The %s path is longer than %d bytes.", what,
                        CFG_PATH_MAX - 1);
        copy = strdup(path);
        if (!copy)
            return errf(err, errlen, -ENOMEM, "out of memory");
    }
    free(*dst);
    *dst = copy;
    return 0;
}

/* The kernel command line the VM will get is the configured one plus what the devices add
 * (virtio/registry.c: " root=/dev/vda rw", one " virtio_mmio.device=4K@0x…:N" each): it must
 * fit CMDLINE_MAX, checked whenever either part grows, so InstanceStart never finds it long. */
#define CMDLINE_ROOT_ARG   17 /* " root=/dev/vda rw" */
#define CMDLINE_DEVICE_ARG 36 /* " virtio_mmio.device=4K@0xc0013000:23" */
static int cmdline_fits(size_t len, unsigned ndevices, bool root, char *err, size_t errlen)
{
    size_t devices = (size_t)ndevices * CMDLINE_DEVICE_ARG + (root ? CMDLINE_ROOT_ARG : 0);
    if (len + devices >= CMDLINE_MAX)
        return errf(err, errlen, -EINVAL,
                    "The kernel command line (%zu bytes) and the devices' arguments (%zu bytes) "
                    "are longer than %d bytes.",
                    len, devices, CMDLINE_MAX - 1);
    return 0;
}

/* The virtio-mmio devices cfg asks for: drives, network interfaces, the vsock device. */
static unsigned cfg_ndevs(const struct vm_config *cfg)
{
    return cfg->ndrives + cfg->nnets + (cfg->vsock.enabled ? 1u : 0u);
}

static bool has_root(const struct vm_config *cfg)
{
    for (unsigned i = 0; i < cfg->ndrives; i++)
        if (cfg->drives[i].root)
            return true;
    return false;
}

int cfg_set_cmdline(struct vm_config *cfg, const char *cmdline, char *err, size_t errlen)
{
    size_t len = strnlen(cmdline, CMDLINE_MAX);
    if (len >= CMDLINE_MAX)
        return errf(err, errlen, -EINVAL, "The kernel command line is longer than %d bytes.",
                    CMDLINE_MAX - 1);
    int ret = cmdline_fits(len, cfg_ndevs(cfg), has_root(cfg), err, errlen);
    if (ret)
        return ret;
    memcpy(cfg->cmdline, cmdline, len + 1);
    cfg->cmdline_set = true;
    return 0;
}

int cfg_check_machine(uint32_t vcpus, uint64_t mem_mib, bool smt, char *err, size_t errlen)
{
    if (vcpus < 1 || vcpus > VCPUS_MAX)
        return errf(err, errlen, -EINVAL,
                    "The number of vCPUs must be greater than 0, less than %d and must be 1 or "
                    "an even number if SMT is enabled.",
                    VCPUS_MAX + 1);
    if (smt && vcpus > 1 && vcpus % 2) /* Firecracker's InvalidVcpuCount */
        return errf(err, errlen, -EINVAL,
                    "The vCPU number is invalid! The vCPU number can only be 1 or an even number "
                    "when SMT is enabled.");
    if (mem_mib < MEM_MIN_MIB || mem_mib > MEM_MAX_MIB)
        return errf(err, errlen, -EINVAL,
                    "The memory size (MiB) is invalid: %llu (ember supports %d to %d MiB).",
                    (unsigned long long)mem_mib, MEM_MIN_MIB, MEM_MAX_MIB);
    return 0;
}

bool cfg_id_valid(const char *id)
{
    size_t n = 0;

    for (; id[n]; n++) {
        char c = id[n];
        if (n >= CFG_ID_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                 (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return n > 0;
}

struct vm_drive *cfg_drive(struct vm_config *cfg, const char *id)
{
    for (unsigned i = 0; id && i < cfg->ndrives; i++)
        if (strcmp(cfg->drives[i].id, id) == 0)
            return &cfg->drives[i];
    return NULL;
}

/* A bucket whose arithmetic fits (the rate limiter would otherwise clamp or saturate). */
static bool bucket_ok(const struct vm_bucket *b)
{
    return b->size <= VM_BUCKET_SIZE_MAX && b->one_time_burst <= VM_BUCKET_SIZE_MAX &&
           b->refill_time_ms <= VM_BUCKET_REFILL_MS_MAX;
}

int cfg_put_drive(struct vm_config *cfg, struct vm_drive *d, char *err, size_t errlen)
{
    if (!cfg_id_valid(d->id))
        return errf(err, errlen, -EINVAL,
                    "API Resource IDs can only contain alphanumeric characters and underscores "
                    "(at most %d).",
                    CFG_ID_MAX);
    if (!d->path)
        return errf(err, errlen, -EINVAL, "The block device %s needs a path.", d->id);
    if (!bucket_ok(&d->bw) || !bucket_ok(&d->ops))
        return errf(err, errlen, -EINVAL,
                    "The block device %s: a rate limiter's size or one_time_burst is above %llu "
                    "or its refill_time above %llu ms.",
                    d->id, (unsigned long long)VM_BUCKET_SIZE_MAX,
                    (unsigned long long)VM_BUCKET_REFILL_MS_MAX);
    struct vm_drive *slot = cfg_drive(cfg, d->id);
    for (unsigned j = 0; d->root && j < cfg->ndrives; j++)
        if (&cfg->drives[j] != slot && cfg->drives[j].root)
            return errf(err, errlen, -EINVAL, "A root block device already exists!");
    if (!slot && cfg_ndevs(cfg) >= VM_DEVS_MAX)
        return errf(err, errlen, -ENOSPC,
                    "Too many drives: at most %d drives (one virtio-mmio device per free "
                    "interrupt line, GSI 5 to 23).",
                    VM_DRIVES_MAX);
    int ret = cmdline_fits(strlen(cfg->cmdline), cfg_ndevs(cfg) + (slot ? 0 : 1),
                           d->root || has_root(cfg), err, errlen);
    if (ret)
        return ret;
    if (slot)
        cfg_drive_free(slot);
    else
        slot = &cfg->drives[cfg->ndrives++];
    *slot = *d;
    d->path = NULL;
    return 0;
}

struct vm_net *cfg_net(struct vm_config *cfg, const char *id)
{
    for (unsigned i = 0; id && i < cfg->nnets; i++)
        if (strcmp(cfg->nets[i].id, id) == 0)
            return &cfg->nets[i];
    return NULL;
}

int cfg_mac_parse(const char *s, uint8_t mac[6])
{
    for (unsigned i = 0; i < 6; i++, s += 3) {
        unsigned v = 0;
        for (unsigned k = 0; k < 2; k++) {
            char c = s[k];
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                         : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                                : 16;
            if (d > 15)
                return -EINVAL;
            v = v << 4 | d;
        }
        if (s[2] != (i == 5 ? '\0' : ':'))
            return -EINVAL;
        mac[i] = (uint8_t)v;
    }
    return 0;
}

char *cfg_mac_format(const uint8_t mac[6], char buf[18])
{
    snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
    return buf;
}

static bool ifname_valid(const char *name)
{
    size_t n = strnlen(name, VM_IFNAME_MAX + 1);
    if (n == 0 || n > VM_IFNAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (name[i] == '/' || name[i] == ':' || name[i] <= ' ' || name[i] == 0x7f)
            return false;
    return true;
}

int cfg_put_net(struct vm_config *cfg, const struct vm_net *n, char *err, size_t errlen)
{
    char mac[18];

    if (!cfg_id_valid(n->id))
        return errf(err, errlen, -EINVAL,
                    "API Resource IDs can only contain alphanumeric characters and underscores "
                    "(at most %d).",
                    CFG_ID_MAX);
    if (!ifname_valid(n->host_dev_name))
        return errf(err, errlen, -EINVAL,
                    "Invalid host device name '%.32s': 1 to %d characters, no '/', ':' or "
                    "whitespace.",
                    n->host_dev_name, VM_IFNAME_MAX);
    if (!bucket_ok(&n->rx_bw) || !bucket_ok(&n->rx_ops) || !bucket_ok(&n->tx_bw) ||
        !bucket_ok(&n->tx_ops))
        return errf(err, errlen, -EINVAL,
                    "The network interface %s: a rate limiter's size or one_time_burst is above "
                    "%llu or its refill_time above %llu ms.",
                    n->id, (unsigned long long)VM_BUCKET_SIZE_MAX,
                    (unsigned long long)VM_BUCKET_REFILL_MS_MAX);
    struct vm_net *slot = cfg_net(cfg, n->id);
    for (unsigned i = 0; i < cfg->nnets; i++) {
        const struct vm_net *o = &cfg->nets[i];
        if (o == slot)
            continue;
        if (n->has_mac && o->has_mac && !memcmp(n->mac, o->mac, 6))
            return errf(err, errlen, -EINVAL, "The MAC address is already in use: %s",
                        cfg_mac_format(n->mac, mac));
        if (!strcmp(n->host_dev_name, o->host_dev_name))
            return errf(err, errlen, -EINVAL,
                        "The host device name is already in use: %s (network interface %s).",
                        n->host_dev_name, o->id);
    }
    if (!slot && cfg_ndevs(cfg) >= VM_DEVS_MAX)
        return errf(err, errlen, -ENOSPC,
                    "Too many network interfaces: at most %d devices in all, drives and "
                    "network interfaces (one virtio-mmio device per free interrupt line, GSI 5 "
                    "to 23).",
                    VM_DEVS_MAX);
    int ret = cmdline_fits(strlen(cfg->cmdline), cfg_ndevs(cfg) + (slot ? 0 : 1), has_root(cfg),
                           err, errlen);
    if (ret)
        return ret;
    if (!slot)
        slot = &cfg->nets[cfg->nnets++];
    *slot = *n;
    return 0;
}

int cfg_put_vsock(struct vm_config *cfg, const struct vm_vsock *vs, char *err, size_t errlen)
{
    /* Firecracker: guest_cid is a u32 of at least 3 (0 hypervisor, 1 local, 2 host). */
    if (vs->guest_cid < 3 || vs->guest_cid == UINT32_MAX)
        return errf(err, errlen, -EINVAL,
                    "Invalid guest CID %u: it must be at least 3 and below 4294967295 (0, 1 and 2 "
                    "are reserved: hypervisor, local, host).",
                    vs->guest_cid);
    size_t n = strnlen(vs->uds_path, sizeof(vs->uds_path));
    if (n == 0 || n > VM_UDS_MAX)
        return errf(err, errlen, -EINVAL, "Invalid uds_path: 1 to %d bytes (a Unix socket path).",
                    VM_UDS_MAX);
    if (!cfg->vsock.enabled) {
        if (cfg_ndevs(cfg) >= VM_DEVS_MAX)
            return errf(err, errlen, -ENOSPC,
                        "No room for the vsock device: at most %d devices in all (one "
                        "virtio-mmio device per free interrupt line, GSI 5 to 23).",
                        VM_DEVS_MAX);
        int ret =
                cmdline_fits(strlen(cfg->cmdline), cfg_ndevs(cfg) + 1, has_root(cfg), err, errlen);
        if (ret)
            return ret;
    }
    cfg->vsock = *vs;
    cfg->vsock.enabled = true;
    return 0;
}

int cfg_validate(const struct vm_config *cfg, char *err, size_t errlen)
{
    if (!cfg->kernel_path)
        return errf(err, errlen, -EINVAL, "--kernel PATH is required");
    int ret = cfg_check_machine(cfg->vcpus, cfg->mem_mib, cfg->smt, err, errlen);
    if (ret)
        return ret;
    if (strnlen(cfg->cmdline, CMDLINE_MAX) >= CMDLINE_MAX)
        return errf(err, errlen, -EINVAL, "kernel command line is longer than %d bytes",
                    CMDLINE_MAX - 1);
    if (cfg->ndrives > VM_DRIVES_MAX)
        return errf(err, errlen, -EINVAL, "at most %d drives", VM_DRIVES_MAX);
    if (cfg_ndevs(cfg) > VM_DEVS_MAX)
        return errf(err, errlen, -EINVAL, "at most %d devices (drives, network interfaces, vsock)",
                    VM_DEVS_MAX);
    return 0;
}
