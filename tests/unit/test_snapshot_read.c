/* Reading a snapshot's state file into a configuration (vmm/snapshot_read.c): a consistent file
 * gives the machine and devices it describes; a file whose parts disagree (vCPU count, memory
 * layout, devices, limits the configuration enforces) is refused with a reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../snapshot/layout.h"
#include "../../snapshot/snapshot.h"
#include "../../snapshot/snapshot_file.h"
#include "../../vmm/vmm.h"

struct shape {
    unsigned vcpus, vcpu_sections, drives, virtio_sections;
    uint64_t mem_mib, region0_size;
    bool two_roots, no_legacy, bad_index, required_field;
    unsigned vsocks;       /* vsock sections */
    uint64_t vsock_cid;    /* their guest_cid */
    const char *vsock_uds; /* their uds_path (NULL: the field left out) */
    uint32_t arch, extra_required;
};

static const struct shape good = {.vcpus = 2,
                                  .vcpu_sections = 2,
                                  .drives = 1,
                                  .virtio_sections = 1,
                                  .mem_mib = 256,
                                  .region0_size = 256ULL << 20,
                                  .arch = SNAP_ARCH_X86_64};

static uint8_t *build(const struct shape *sh, size_t *len)
{
    struct snap_writer w;
    struct snap_region r = {0, sh->region0_size};

    snapw_init(&w, sh->arch);
    snapw_section(&w, SNAP_SEC_MACHINE, SNAP_REQUIRED);
    snapw_u64(&w, SF_VCPUS, sh->vcpus);
    snapw_u64(&w, SF_MEM_MIB, sh->mem_mib);
    snapw_u64(&w, SF_SMT, 0);
    snapw_field(&w, SF_REGIONS, &r, sizeof(r));
    snapw_u64(&w, 98, 1); /* a newer ember's optional field: skipped */
    if (sh->required_field)
        snapw_u64(&w, 99 | SNAP_REQUIRED, 1);
    for (unsigned i = 0; i < sh->drives; i++) {
        char id[16];
        snprintf(id, sizeof(id), "d%u", i);
        snapw_section(&w, SNAP_SEC_DRIVE, SNAP_REQUIRED);
        snapw_str(&w, SF_DRV_ID, id);
        snapw_str(&w, SF_DRV_PATH, "/tmp/disk.img");
        snapw_u64(&w, SF_DRV_FLAGS, (i == 0 || sh->two_roots) ? SNAP_DRV_ROOT : 0);
    }
    for (unsigned i = 0; i < sh->vsocks; i++) {
        snapw_section(&w, SNAP_SEC_VSOCK, SNAP_REQUIRED);
        snapw_u64(&w, SF_VSK_CID, sh->vsock_cid);
        if (sh->vsock_uds)
            snapw_str(&w, SF_VSK_UDS, sh->vsock_uds);
    }
    for (unsigned i = 0; i < sh->vcpu_sections; i++) {
        snapw_section(&w, SNAP_SEC_VCPU, SNAP_REQUIRED);
        snapw_u64(&w, SF_CPU_INDEX, sh->bad_index ? 7 : i);
    }
    snapw_section(&w, SNAP_SEC_KVM_VM, SNAP_REQUIRED);
    if (!sh->no_legacy)
        snapw_section(&w, SNAP_SEC_LEGACY, SNAP_REQUIRED);
    for (unsigned i = 0; i < sh->virtio_sections; i++)
        snapw_section(&w, SNAP_SEC_VIRTIO, SNAP_REQUIRED);
    if (sh->extra_required)
        snapw_section(&w, sh->extra_required, SNAP_REQUIRED);
    const uint8_t *b = snapw_finish(&w, len);
    assert_non_null(b);
    uint8_t *copy = malloc(*len);
    memcpy(copy, b, *len);
    snapw_free(&w);
    return copy;
}

/* Parses sh's file into a fresh configuration. Returns 0 or -EINVAL with err filled. */
static int parse(const struct shape *sh, struct vm_config *cfg, char *err, size_t errlen)
{
    size_t len;
    uint8_t *b = build(sh, &len);
    cfg_defaults(cfg);
    err[0] = '\0';
    struct vm_snapshot *s = vm_snapshot_parse(b, len, "t.snap", cfg, err, errlen);
    if (!s)
        return -EINVAL;
    vm_snapshot_close(s);
    return 0;
}

static void refused(const struct shape *sh, const char *want)
{
    struct vm_config cfg;
    char err[512];
    assert_int_equal(parse(sh, &cfg, err, sizeof(err)), -EINVAL);
    if (!strstr(err, want))
        fail_msg("got \"%s\", wanted \"%s\"", err, want);
    cfg_free(&cfg);
}

static void consistent_file(void **state)
{
    struct vm_config cfg;
    char err[512];
    (void)state;

    assert_int_equal(parse(&good, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.vcpus, 2);
    assert_int_equal(cfg.mem_mib, 256);
    assert_int_equal(cfg.ndrives, 1);
    assert_string_equal(cfg.drives[0].path, "/tmp/disk.img");
    assert_true(cfg.drives[0].root);
    assert_false(cfg.vsock.enabled);
    cfg_free(&cfg);
}

/* A vsock device: its section gives the configuration (the device's own state follows in its
 * virtio section); a hostile one is refused. */
static void vsock_device(void **state)
{
    struct vm_config cfg;
    struct shape s = good;
    char err[512], longpath[200];
    (void)state;

    s.vsocks = 1, s.vsock_cid = 3, s.vsock_uds = "/tmp/v.sock", s.virtio_sections = 2;
    assert_int_equal(parse(&s, &cfg, err, sizeof(err)), 0);
    assert_true(cfg.vsock.enabled);
    assert_int_equal(cfg.vsock.guest_cid, 3);
    assert_string_equal(cfg.vsock.uds_path, "/tmp/v.sock");
    cfg_free(&cfg);
    struct shape b = s;
    b.virtio_sections = 1; /* the device's state missing */
    refused(&b, "1 device states for 2 devices");
    b = s, b.vsock_cid = 2;
    refused(&b, "Invalid guest CID 2");
    b = s, b.vsock_cid = 1ULL << 32;
    refused(&b, "the vsock section is malformed");
    b = s, b.vsock_uds = NULL;
    refused(&b, "the vsock section is malformed");
    b = s, b.vsock_uds = "";
    refused(&b, "Invalid uds_path");
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    b = s, b.vsock_uds = longpath;
    refused(&b, "the vsock section is malformed");
    b = s, b.vsocks = 2, b.virtio_sections = 3;
    refused(&b, "the vsock section is malformed");
}

static void disagreeing_files(void **state)
{
    struct shape s;
    (void)state;

    s = good, s.vcpu_sections = 1;
    refused(&s, "2 vCPUs with state for 1");
    s = good, s.bad_index = true;
    refused(&s, "out of order");
    s = good, s.region0_size = 128ULL << 20;
    refused(&s, "memory layout does not match 256 MiB");
    s = good, s.virtio_sections = 2;
    refused(&s, "2 device states for 1 devices");
    s = good, s.drives = 2, s.two_roots = true, s.virtio_sections = 2;
    refused(&s, "root");
    s = good, s.no_legacy = true;
    refused(&s, "no legacy-device or VM state");
    s = good, s.arch = 9;
    refused(&s, "architecture 9");
    s = good, s.extra_required = 77;
    refused(&s, "needs a newer ember (section type 77)");
    s = good, s.required_field = true;
    refused(&s, "needs a newer ember (field 99 of section type 1)");
    s = good, s.vcpus = 0, s.vcpu_sections = 0;
    refused(&s, "0 vCPUs");
    s = good, s.mem_mib = 1ULL << 40;
    refused(&s, "MiB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(consistent_file),
            cmocka_unit_test(disagreeing_files),
            cmocka_unit_test(vsock_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
