/* x86_64: the guest-physical boot layout (Firecracker's), the kernel and initrd loaders, the
 * boot structures, and vCPU set-up (loader_, boot_, mptable_, cpu_, cpuid_x86_64.c). */
#ifndef EMBER_BOOT_X86_64_H
#define EMBER_BOOT_X86_64_H

#include <stdbool.h>
#include <stdint.h>

struct guest_mem;
struct vm;
struct vcpu;
struct kvm_cpuid2;

#define BOOT_GDT_ADDR    0x500ULL
#define BOOT_IDT_ADDR    0x520ULL
#define PVH_INFO_ADDR    0x6000ULL
#define PVH_MODLIST_ADDR 0x6040ULL
#define ZERO_PAGE_ADDR   0x7000ULL
#define BOOT_STACK_ADDR  0x8ff0ULL
#define PML4_ADDR        0x9000ULL
#define PDPT_ADDR        0xa000ULL
#define PD_ADDR          0xb000ULL
#define CMDLINE_ADDR     0x20000ULL
#define SYSMEM_START     0x9fc00ULL /* MP table lives here; e820-reserved up to 0xE0000 */
#define SYSMEM_END       0xe0000ULL
#define HIMEM_START      0x100000ULL
#define KVM_TSS_ADDR     0xfffbd000ULL
#define KVM_IDMAP_ADDR   0xfffbc000ULL
#define IOAPIC_ADDR      0xfec00000ULL
#define LAPIC_ADDR       0xfee00000ULL

enum boot_mode { BOOT_LINUX64, BOOT_PVH };

/* Where the loaders put things, consumed by the zero-page builder and vCPU setup. */
struct boot_info {
    enum boot_mode mode;
    uint64_t entry;      /* 64-bit entry (or 32-bit PVH entry) */
    uint64_t pvh_entry;  /* from the ELF note XEN_ELFNOTE_PHYS32_ENTRY, 0 if none */
    uint64_t kernel_end; /* first GPA after the loaded kernel image */
    uint64_t initrd_addr, initrd_size;
    uint32_t initrd_addr_max; /* highest address the initrd may end at (inclusive) */
    bool has_setup_header;    /* bzImage: setup_hdr holds the image's header */
    uint8_t setup_hdr[0x290 - 0x1f1];
    uint32_t setup_hdr_len;
};

/* loader_load_kernel(mem, fd, size, bi, err, errlen): loads an ELF vmlinux or a bzImage from fd
 * into guest memory and fills bi. Returns 0, or -errno with a one-line reason in err. */
int loader_load_kernel(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                       char *err, size_t errlen);
/* loader_load_initrd(mem, fd, size, bi, err, errlen): places the initrd at the top of low RAM.
 * Returns 0, or -errno with a reason in err. */
int loader_load_initrd(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                       char *err, size_t errlen);

/* boot_setup(mem, bi, cmdline, nvcpus): writes GDT/IDT, page tables, command line, zero page
 * (or PVH start info) with e820, and the MP table. Returns 0 or -errno. */
int boot_setup(const struct guest_mem *mem, const struct boot_info *bi, const char *cmdline,
               unsigned nvcpus);
/* boot_gdt(mode, gdt): the four boot GDT entries (null, code, data, TSS) for a boot mode. */
void boot_gdt(enum boot_mode mode, uint64_t gdt[4]);
/* mptable_write(mem, nvcpus): writes the MP floating pointer and table at SYSMEM_START.
 * Returns 0 or -errno. */
int mptable_write(const struct guest_mem *mem, unsigned nvcpus);

/* cpu_setup(vm, vcpu): CPUID, MSRs, registers, FPU and LAPIC for boot. Returns 0 or -errno. */
int cpu_setup(struct vm *vm, struct vcpu *vcpu);
#define CPUID_MAX_ENTRIES 256
/* cpuid_normalize(cpuid, cap, index, nvcpus, smt, tsc_deadline): adjusts a copy of the
 * supported CPUID (room for cap entries) for one vCPU in place; smt: two threads per core.
 * Returns 0 or -ENOSPC. */
int cpuid_normalize(struct kvm_cpuid2 *cpuid, unsigned cap, unsigned index, unsigned nvcpus,
                    bool smt, bool tsc_deadline);

#endif
