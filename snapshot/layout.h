/* What ember writes into a snapshot file (format.h): the section types and their field tags.
 * Numbers are forever: never reuse or renumber one; add new ones (optional unless an older
 * ember must refuse a file that has them). */
#ifndef EMBER_SNAPSHOT_LAYOUT_H
#define EMBER_SNAPSHOT_LAYOUT_H

/* The machine: one section, first. */
#define SNAP_SEC_MACHINE 1
#define SF_WRITER        1  /* string: "ember 0.1.0" */
#define SF_CREATED       2  /* u64: seconds since the epoch */
#define SF_VCPUS         3  /* u64 */
#define SF_MEM_MIB       4  /* u64 */
#define SF_REGIONS       5  /* array of struct snap_region: the memory file's layout */
#define SF_SMT           6  /* u64 0/1 */
#define SF_MEM_FILE      7  /* string: the memory file written with it (informational) */
#define SF_SNAP_TYPE     8  /* string: "Full" */
#define SF_TRACK_DIRTY   9  /* u64 0/1 */
#define SF_KVM_CAPS      10 /* u64: bit mask of SNAP_CAP_* the state was read with */
#define SF_MEM_CHAIN                                                        \
    11 /* array of struct snap_layer: the memory images this one stands on, \
        * the base first, this snapshot's own last */

/* One per drive (the configuration it was opened with), in vm_config order. */
#define SNAP_SEC_DRIVE     2
#define SF_DRV_ID          1 /* string */
#define SF_DRV_PATH        2 /* string: as configured (jail-relative when jailed) */
#define SF_DRV_FLAGS       3 /* u64: SNAP_DRV_* */
#define SF_DRV_BW          4 /* record struct snap_bucket */
#define SF_DRV_OPS         5 /* record struct snap_bucket */
#define SF_DRV_PARTUUID    6 /* string */
#define SNAP_DRV_ROOT      1
#define SNAP_DRV_RO        2
#define SNAP_DRV_WRITEBACK 4
#define SNAP_DRV_ASYNC     8

/* One per network interface, in vm_config order. */
#define SNAP_SEC_NET  3
#define SF_NET_ID     1 /* string */
#define SF_NET_TAP    2 /* string: host_dev_name */
#define SF_NET_MAC    3 /* 6 bytes (absent: no MAC configured) */
#define SF_NET_RX_BW  4 /* record struct snap_bucket */
#define SF_NET_RX_OPS 5
#define SF_NET_TX_BW  6
#define SF_NET_TX_OPS 7

/* The vsock device's configuration, when there is one (required: an ember without vsock
 * refuses the file rather than restore the device's state into nothing). */
#define SNAP_SEC_VSOCK 8
#define SF_VSK_CID     1 /* u64: guest_cid */
#define SF_VSK_UDS     2 /* string: uds_path (vsock_override on load replaces it) */

/* One per virtio-mmio device, in slot order (the registry's attach order). */
#define SNAP_SEC_VIRTIO 4
#define SF_VIO_TYPE     1 /* u64: virtio device id */
#define SF_VIO_ID       2 /* string: the configured id */
#define SF_VIO_MMIO     3 /* record struct vmmio_state */
#define SF_VIO_QUEUE0   4 /* record struct vq_state; queue i is SF_VIO_QUEUE0 + i (i < 3) */
#define SF_VIO_DEVICE   8 /* the device's state_size bytes */

/* The legacy devices. */
#define SNAP_SEC_LEGACY   5
#define SF_LEG_SERIAL     1 /* record struct serial_state */
#define SF_LEG_I8042      2 /* record struct i8042_state */
#define SF_LEG_BOOT_TIMER 3 /* u64: 1 once the guest wrote its boot-done value */

/* The KVM VM (x86): in-kernel PIT, clock and interrupt controllers, as KVM's ABI defines them. */
#define SNAP_SEC_KVM_VM 6
#define SF_VM_PIT2      1 /* struct kvm_pit_state2 */
#define SF_VM_CLOCK     2 /* struct kvm_clock_data */
#define SF_VM_PIC0      3 /* struct kvm_irqchip, chip_id 0 */
#define SF_VM_PIC1      4 /* struct kvm_irqchip, chip_id 1 */
#define SF_VM_IOAPIC    5 /* struct kvm_irqchip, chip_id 2 */

/* One per vCPU, in index order (x86): KVM's ABI structures. */
#define SNAP_SEC_VCPU  7
#define SF_CPU_INDEX   1  /* u64 */
#define SF_CPU_CPUID   2  /* array of struct kvm_cpuid_entry2 */
#define SF_CPU_MSRS    3  /* array of struct kvm_msr_entry */
#define SF_CPU_REGS    4  /* struct kvm_regs */
#define SF_CPU_SREGS   5  /* struct kvm_sregs */
#define SF_CPU_XSAVE   6  /* struct kvm_xsave, KVM_CAP_XSAVE2's size (at least 4096) */
#define SF_CPU_XCRS    7  /* struct kvm_xcrs */
#define SF_CPU_DEBUG   8  /* struct kvm_debugregs */
#define SF_CPU_LAPIC   9  /* struct kvm_lapic_state */
#define SF_CPU_MP      10 /* struct kvm_mp_state */
#define SF_CPU_EVENTS  11 /* struct kvm_vcpu_events */
#define SF_CPU_TSC_KHZ 12 /* u64 (absent: the host could not tell) */

#include <stdint.h>

/* A memory region of the memory file: file offsets are the running sum of sizes. */
struct snap_region {
    uint64_t gpa, size;
};
/* One memory image of a chain: a Full snapshot's (digest 0) or a Diff layer's (the CRC-64 of
 * its runs of pages, snapshot/diff.c). */
struct snap_layer {
    uint64_t id;     /* random, nonzero */
    uint64_t digest; /* 0 for a Full image */
    uint64_t pages;  /* pages it holds */
};
#define SNAP_CHAIN_MAX 64

/* A rate-limiter bucket (struct vm_bucket). */
struct snap_bucket {
    uint64_t size, one_time_burst, refill_time_ms;
};

#endif
