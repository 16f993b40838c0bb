/* Reading a snapshot's state file: held whole in memory and checked (it is hostile: size cap
 * and CRC before anything is parsed, every section, field and count bounded), and the
 * configuration it describes rebuilt through the same setters every other configuration goes
 * through (cfg_put_drive, cfg_put_net, cfg_put_vsock, cfg_check_machine), so its limits are
 * the same. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "layout.h"
#include "snapshot.h"
#include "snapshot_file.h"
#include "../vmm/vmm.h"

static const uint32_t known_sections[] = {SNAP_SEC_MACHINE, SNAP_SEC_DRIVE,  SNAP_SEC_NET,
                                          SNAP_SEC_VIRTIO,  SNAP_SEC_LEGACY, SNAP_SEC_KVM_VM,
                                          SNAP_SEC_VCPU,    SNAP_SEC_VSOCK};

static int read_file(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        return errf(err, errlen, -errno, "Cannot open the snapshot file %.256s: %s", path,
                    strerror(errno));
    int ret = 0;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode))
        ret = errf(err, errlen, -EINVAL, "The snapshot file %.256s is not a regular file", path);
    else if (st.st_size > SNAP_MAX_FILE || st.st_size < SNAP_HEADER_LEN + 8)
        ret = errf(err, errlen, -EINVAL,
                   "The snapshot file %.256s is not an ember snapshot (%lld bytes)", path,
                   (long long)st.st_size);
    if (!ret && !(*buf = malloc((size_t)st.st_size)))
        ret = errf(err, errlen, -ENOMEM, "out of memory");
    if (!ret && (ret = snap_pread_all(fd, *buf, (size_t)st.st_size, 0)))
        errf(err, errlen, ret, "Cannot read the snapshot file %.256s: %s", path, strerror(-ret));
    *len = ret ? 0 : (size_t)st.st_size;
    close(fd);
    return ret;
}

/* The fields this ember knows, per section: a field marked required that is not here (a newer
 * ember's) refuses the file, as format.h promises. */
static const uint32_t machine_tags[] = {SF_WRITER,      SF_CREATED,  SF_VCPUS,    SF_MEM_MIB,
                                        SF_REGIONS,     SF_SMT,      SF_MEM_FILE, SF_SNAP_TYPE,
                                        SF_TRACK_DIRTY, SF_KVM_CAPS, SF_MEM_CHAIN};
static const uint32_t drive_tags[] = {SF_DRV_ID, SF_DRV_PATH, SF_DRV_FLAGS,
                                      SF_DRV_BW, SF_DRV_OPS,  SF_DRV_PARTUUID};
static const uint32_t net_tags[] = {SF_NET_ID,     SF_NET_TAP,   SF_NET_MAC,   SF_NET_RX_BW,
                                    SF_NET_RX_OPS, SF_NET_TX_BW, SF_NET_TX_OPS};
static const uint32_t virtio_tags[] = {SF_VIO_TYPE,   SF_VIO_ID,         SF_VIO_MMIO,
                                       SF_VIO_QUEUE0, SF_VIO_QUEUE0 + 1, SF_VIO_QUEUE0 + 2,
                                       SF_VIO_DEVICE};
static const uint32_t vsock_tags[] = {SF_VSK_CID, SF_VSK_UDS};
static const uint32_t legacy_tags[] = {SF_LEG_SERIAL, SF_LEG_I8042, SF_LEG_BOOT_TIMER};
static const uint32_t vm_tags[] = {SF_VM_PIT2, SF_VM_CLOCK, SF_VM_PIC0, SF_VM_PIC1, SF_VM_IOAPIC};
static const uint32_t vcpu_tags[] = {SF_CPU_INDEX, SF_CPU_CPUID, SF_CPU_MSRS,   SF_CPU_REGS,
                                     SF_CPU_SREGS, SF_CPU_XSAVE, SF_CPU_XCRS,   SF_CPU_DEBUG,
                                     SF_CPU_LAPIC, SF_CPU_MP,    SF_CPU_EVENTS, SF_CPU_TSC_KHZ};

#define TAGS(a) a, (unsigned)(sizeof(a) / sizeof(a[0]))
static const struct {
    uint32_t type;
    const uint32_t *tags;
    unsigned n;
} known_fields[] = {
        {SNAP_SEC_MACHINE, TAGS(machine_tags)}, {SNAP_SEC_DRIVE, TAGS(drive_tags)},
        {SNAP_SEC_NET, TAGS(net_tags)},         {SNAP_SEC_VIRTIO, TAGS(virtio_tags)},
        {SNAP_SEC_LEGACY, TAGS(legacy_tags)},   {SNAP_SEC_KVM_VM, TAGS(vm_tags)},
        {SNAP_SEC_VCPU, TAGS(vcpu_tags)},       {SNAP_SEC_VSOCK, TAGS(vsock_tags)},
};

/* Returns the tag of the first required field this ember does not know, or 0. */
static uint32_t unknown_required_field(const struct snap_file *f, uint32_t *type)
{
    for (unsigned i = 0; i < f->nsections; i++)
        for (size_t k = 0; k < sizeof(known_fields) / sizeof(known_fields[0]); k++)
            if (known_fields[k].type == f->sections[i].type) {
                uint32_t tag = snap_check_fields(f, &f->sections[i], known_fields[k].tags,
                                                 known_fields[k].n);
                if (tag) {
                    *type = f->sections[i].type;
                    return tag;
                }
            }
    return 0;
}

static int bucket(const struct snap_file *f, const struct snap_section *s, uint32_t tag,
                  struct vm_bucket *b)
{
    struct snap_bucket sb;
    int ret = snap_get_record(f, s, tag, &sb, sizeof(sb));
    if (ret == -ENOENT)
        return 0;
    if (ret || sb.size > VM_BUCKET_SIZE_MAX || sb.one_time_burst > VM_BUCKET_SIZE_MAX ||
        sb.refill_time_ms > VM_BUCKET_REFILL_MS_MAX || (sb.size && !sb.refill_time_ms))
        return -EINVAL;
    *b = (struct vm_bucket){sb.size, sb.one_time_burst, sb.refill_time_ms};
    return 0;
}

static int load_drive(const struct snap_file *f, const struct snap_section *s,
                      struct vm_config *cfg, char *err, size_t errlen)
{
    struct vm_drive d;
    char path[CFG_PATH_MAX];
    uint64_t flags;

    memset(&d, 0, sizeof(d));
    if (snap_get_str(f, s, SF_DRV_ID, d.id, sizeof(d.id)) ||
        snap_get_str(f, s, SF_DRV_PATH, path, sizeof(path)) ||
        snap_get_u64(f, s, SF_DRV_FLAGS, &flags) || (flags & ~(uint64_t)15) ||
        bucket(f, s, SF_DRV_BW, &d.bw) || bucket(f, s, SF_DRV_OPS, &d.ops))
        return errf(err, errlen, -EINVAL, "a drive section is malformed");
    int r = snap_get_str(f, s, SF_DRV_PARTUUID, d.partuuid, sizeof(d.partuuid));
    if (r && r != -ENOENT)
        return errf(err, errlen, -EINVAL, "drive %s: a malformed partuuid", d.id);
    d.root = flags & SNAP_DRV_ROOT;
    d.read_only = flags & SNAP_DRV_RO;
    d.writeback = flags & SNAP_DRV_WRITEBACK;
    d.async = flags & SNAP_DRV_ASYNC;
    int ret = cfg_set_path(&d.path, path, "block device", err, errlen);
    if (!ret)
        ret = cfg_put_drive(cfg, &d, err, errlen);
    cfg_drive_free(&d);
    return ret;
}

static int load_net(const struct snap_file *f, const struct snap_section *s, struct vm_config *cfg,
                    char *err, size_t errlen)
{
    struct vm_net n;
    const struct snap_field *mac = snap_get(f, s, SF_NET_MAC);

    memset(&n, 0, sizeof(n));
    if (snap_get_str(f, s, SF_NET_ID, n.id, sizeof(n.id)) ||
        snap_get_str(f, s, SF_NET_TAP, n.host_dev_name, sizeof(n.host_dev_name)) ||
        (mac && mac->len != 6) || bucket(f, s, SF_NET_RX_BW, &n.rx_bw) ||
        bucket(f, s, SF_NET_RX_OPS, &n.rx_ops) || bucket(f, s, SF_NET_TX_BW, &n.tx_bw) ||
        bucket(f, s, SF_NET_TX_OPS, &n.tx_ops))
        return errf(err, errlen, -EINVAL, "a network interface section is malformed");
    if (mac) {
        n.has_mac = true;
        memcpy(n.mac, mac->data, 6);
    }
    return cfg_put_net(cfg, &n, err, errlen);
}

/* The vsock device, if the file has one (at most one). */
static int load_vsock(const struct snap_file *f, struct vm_config *cfg, char *err, size_t errlen)
{
    const struct snap_section *s = snap_find(f, SNAP_SEC_VSOCK, 0);
    struct vm_vsock vs = {.enabled = true};
    uint64_t cid;

    if (!s)
        return 0;
    if (snap_count(f, SNAP_SEC_VSOCK) > 1 || snap_get_u64(f, s, SF_VSK_CID, &cid) ||
        cid > UINT32_MAX || snap_get_str(f, s, SF_VSK_UDS, vs.uds_path, sizeof(vs.uds_path)))
        return errf(err, errlen, -EINVAL, "the vsock section is malformed");
    vs.guest_cid = (uint32_t)cid;
    return cfg_put_vsock(cfg, &vs, err, errlen);
}

/* The machine section against what this ember builds for that much RAM. */
static int load_machine(const struct snap_file *f, struct vm_config *cfg, char *err, size_t errlen)
{
    const struct snap_section *m = snap_find(f, SNAP_SEC_MACHINE, 0);
    uint64_t vcpus, mem, smt;

    if (!m || snap_get_u64(f, m, SF_VCPUS, &vcpus) || snap_get_u64(f, m, SF_MEM_MIB, &mem) ||
        snap_get_u64(f, m, SF_SMT, &smt) || smt > 1)
        return errf(err, errlen, -EINVAL, "the machine section is missing or malformed");
    if (vcpus == 0 || vcpus > VCPUS_MAX || mem > MEM_MAX_MIB)
        return errf(err, errlen, -EINVAL, "a machine of %llu vCPUs and %llu MiB",
                    (unsigned long long)vcpus, (unsigned long long)mem);
    int ret = cfg_check_machine((uint32_t)vcpus, mem, smt, err, errlen);
    if (ret)
        return ret;
    struct snap_region r[GM_MAX_REGIONS];
    const struct snap_field *fr = snap_get(f, m, SF_REGIONS);
    /* the regions this ember makes of that RAM (memory.c's layout) */
    uint64_t size = mem << 20, low = size < MMIO_HOLE_START ? size : MMIO_HOLE_START;
    unsigned nreg = size > low ? 2 : 1;
    if (!fr || fr->len != nreg * sizeof(r[0]))
        return errf(err, errlen, -EINVAL, "the memory layout does not match %llu MiB of RAM",
                    (unsigned long long)mem);
    memcpy(r, fr->data, fr->len);
    if (r[0].gpa != 0 || r[0].size != low ||
        (nreg == 2 && (r[1].gpa != MMIO_HOLE_END || r[1].size != size - low)))
        return errf(err, errlen, -EINVAL, "the memory layout does not match %llu MiB of RAM",
                    (unsigned long long)mem);
    if (snap_count(f, SNAP_SEC_VCPU) != vcpus)
        return errf(err, errlen, -EINVAL, "a machine of %llu vCPUs with state for %u",
                    (unsigned long long)vcpus, snap_count(f, SNAP_SEC_VCPU));
    for (unsigned i = 0; i < vcpus; i++) {
        uint64_t idx;
        if (snap_get_u64(f, snap_find(f, SNAP_SEC_VCPU, i), SF_CPU_INDEX, &idx) || idx != i)
            return errf(err, errlen, -EINVAL, "vCPU state %u is out of order", i);
    }
    cfg->vcpus = (uint32_t)vcpus;
    cfg->mem_mib = mem;
    cfg->smt = smt;
    return 0;
}

struct vm_snapshot *vm_snapshot_open(const char *snap_path, struct vm_config *cfg, char *err,
                                     size_t errlen)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    if (read_file(snap_path, &buf, &len, err, errlen)) {
        free(buf);
        return NULL;
    }
    return vm_snapshot_parse(buf, len, snap_path, cfg, err, errlen);
}

struct vm_snapshot *vm_snapshot_parse(uint8_t *buf, size_t len, const char *snap_path,
                                      struct vm_config *cfg, char *err, size_t errlen)
{
    struct vm_snapshot *s = calloc(1, sizeof(*s));
    char why[256];

    if (!s) {
        free(buf);
        errf(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    s->buf = buf;
    int ret = 0;
    if (snap_parse(&s->f, s->buf, len, why, sizeof(why)))
        ret = errf(err, errlen, -EINVAL, "The snapshot file %.256s: %s", snap_path, why);
    const struct snap_section *unknown = NULL;
    if (!ret && s->f.arch != SNAP_ARCH_X86_64)
        ret = errf(err, errlen, -EINVAL,
                   "The snapshot file %.256s is of architecture %u, not "
                   "x86_64",
                   snap_path, s->f.arch);
    if (!ret && (unknown = snap_unknown_required(&s->f, known_sections,
                                                 sizeof(known_sections) / sizeof(uint32_t))))
        ret = errf(err, errlen, -EINVAL,
                   "The snapshot file %.256s needs a newer ember (section type %u)", snap_path,
                   unknown->type);
    uint32_t ftype = 0, ftag = 0;
    if (!ret && (ftag = unknown_required_field(&s->f, &ftype)))
        ret = errf(err, errlen, -EINVAL,
                   "The snapshot file %.256s needs a newer ember (field %u of section type %u)",
                   snap_path, ftag & ~SNAP_REQUIRED, ftype);
    if (!ret)
        ret = load_machine(&s->f, cfg, why, sizeof(why));
    for (unsigned i = 0; !ret && i < snap_count(&s->f, SNAP_SEC_DRIVE); i++)
        ret = load_drive(&s->f, snap_find(&s->f, SNAP_SEC_DRIVE, i), cfg, why, sizeof(why));
    for (unsigned i = 0; !ret && i < snap_count(&s->f, SNAP_SEC_NET); i++)
        ret = load_net(&s->f, snap_find(&s->f, SNAP_SEC_NET, i), cfg, why, sizeof(why));
    if (!ret)
        ret = load_vsock(&s->f, cfg, why, sizeof(why));
    unsigned ndevs = cfg->ndrives + cfg->nnets + (cfg->vsock.enabled ? 1u : 0u);
    if (!ret && snap_count(&s->f, SNAP_SEC_VIRTIO) != ndevs)
        ret = errf(why, sizeof(why), -EINVAL, "%u device states for %u devices",
                   snap_count(&s->f, SNAP_SEC_VIRTIO), ndevs);
    if (!ret && (!snap_find(&s->f, SNAP_SEC_LEGACY, 0) || !snap_find(&s->f, SNAP_SEC_KVM_VM, 0)))
        ret = errf(why, sizeof(why), -EINVAL, "no legacy-device or VM state");
    if (ret && !err[0])
        errf(err, errlen, ret, "The snapshot file %.256s: %s", snap_path, why);
    if (ret) {
        vm_snapshot_close(s);
        return NULL;
    }
    return s;
}

void vm_snapshot_close(struct vm_snapshot *s)
{
    if (!s)
        return;
    snap_free(&s->f);
    free(s->buf);
    free(s);
}

int snap_chain_read(const struct snap_file *f, uint64_t total_pages, struct snap_layer *chain,
                    size_t *n, char *err, size_t errlen)
{
    const struct snap_field *fc = snap_get(f, snap_find(f, SNAP_SEC_MACHINE, 0), SF_MEM_CHAIN);

    *n = fc ? fc->len / sizeof(struct snap_layer) : 1;
    if (fc && (fc->len % sizeof(struct snap_layer) || *n == 0 || *n > SNAP_CHAIN_MAX))
        return errf(err, errlen, -EINVAL, "the memory chain is malformed");
    if (fc)
        memcpy(chain, fc->data, fc->len);
    else /* a format-1 file, written before chains: one image */
        chain[0] = (struct snap_layer){.id = 1, .pages = total_pages};
    for (size_t i = 0; i < *n; i++)
        if (!chain[i].id || chain[i].pages > total_pages)
            return errf(err, errlen, -EINVAL, "the memory chain is malformed");
    return 0;
}
