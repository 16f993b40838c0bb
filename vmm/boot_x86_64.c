/* x86_64 boot structures at Firecracker's addresses: GDT/IDT, identity page tables, command
 * line, zero page with e820 (Linux boot protocol) or hvm_start_info (PVH), and the MP table. */
#include <asm/bootparam.h>
#include <errno.h>
#include <string.h>

#include "vmm.h"

#define E820_RAM      1
#define E820_RESERVED 2
#define PVH_MAGIC     0x336ec578

static uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
    return ((uint64_t)(base & 0xff000000u) << 32) | ((uint64_t)(flags & 0xf0ff) << 40) |
           ((uint64_t)(limit & 0x000f0000u) << 32) | ((uint64_t)(base & 0x00ffffffu) << 16) |
           (uint64_t)(limit & 0x0000ffffu);
}

void boot_gdt(enum boot_mode mode, uint64_t gdt[4])
{
    gdt[0] = 0;
    if (mode == BOOT_PVH) { /* flat 32-bit protected mode */
        gdt[1] = gdt_entry(0xc09b, 0, 0xffffffff);
        gdt[2] = gdt_entry(0xc093, 0, 0xffffffff);
        gdt[3] = gdt_entry(0x008b, 0, 0x67);
    } else { /* 64-bit code, data, busy TSS */
        gdt[1] = gdt_entry(0xa09b, 0, 0xfffff);
        gdt[2] = gdt_entry(0xc093, 0, 0xfffff);
        gdt[3] = gdt_entry(0x808b, 0, 0xfffff);
    }
}

/* Identity-maps the first 1 GiB with 2 MiB pages: PML4 -> PDPT -> PD. */
static int write_page_tables(const struct guest_mem *mem)
{
    uint64_t pml4e = PDPT_ADDR | 0x03, pdpte = PD_ADDR | 0x03;
    uint64_t *pd = gm_ptr(mem, PD_ADDR, 512 * sizeof(uint64_t));

    if (!pd || gm_write(mem, PML4_ADDR, &pml4e, sizeof(pml4e)) ||
        gm_write(mem, PDPT_ADDR, &pdpte, sizeof(pdpte)))
        return -EFAULT;
    for (uint64_t i = 0; i < 512; i++)
        pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB page */
    return 0;
}

struct e820 {
    uint64_t addr, size;
    uint32_t type;
};

/* The guest's memory map: Firecracker's layout. Returns the number of entries (at most 4). */
static unsigned build_e820(const struct guest_mem *mem, struct e820 *e)
{
    unsigned n = 0;
    uint64_t low_end = gm_low_end(mem);

    e[n++] = (struct e820){0, SYSMEM_START, E820_RAM};
    e[n++] = (struct e820){SYSMEM_START, SYSMEM_END - SYSMEM_START, E820_RESERVED};
    if (low_end > HIMEM_START)
        e[n++] = (struct e820){HIMEM_START, low_end - HIMEM_START, E820_RAM};
    if (mem->nregions > 1)
        e[n++] = (struct e820){mem->regions[1].gpa, mem->regions[1].size, E820_RAM};
    return n;
}

static int write_zero_page(const struct guest_mem *mem, const struct boot_info *bi, size_t cmdlen)
{
    struct boot_params *bp = gm_ptr(mem, ZERO_PAGE_ADDR, sizeof(*bp));
    struct e820 e[4];

    if (!bp)
        return -EFAULT;
    memset(bp, 0, sizeof(*bp));
    if (bi->has_setup_header) /* bzImage: the image's own header seeds the zero page */
        memcpy(&bp->hdr, bi->setup_hdr, bi->setup_hdr_len);
    else
        bp->hdr.kernel_alignment = 0x01000000;
    bp->hdr.type_of_loader = 0xff;
    bp->hdr.boot_flag = 0xaa55;
    bp->hdr.header = 0x53726448;
    bp->hdr.cmd_line_ptr = CMDLINE_ADDR;
    bp->hdr.cmdline_size = (uint32_t)cmdlen;
    if (bi->initrd_size) {
        bp->hdr.ramdisk_image = (uint32_t)bi->initrd_addr;
        bp->hdr.ramdisk_size = (uint32_t)bi->initrd_size;
    }
    unsigned n = build_e820(mem, e);
    for (unsigned i = 0; i < n; i++) {
        bp->e820_table[i].addr = e[i].addr;
        bp->e820_table[i].size = e[i].size;
        bp->e820_table[i].type = e[i].type;
    }
    bp->e820_entries = (uint8_t)n;
    return 0;
}

/* PVH: hvm_start_info at 0x6000, the memory map at 0x7000, the initrd module at 0x6040. */
static int write_pvh_info(const struct guest_mem *mem, const struct boot_info *bi)
{
    struct {
        uint32_t magic, version, flags, nr_modules;
        uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
        uint32_t memmap_entries, reserved;
    } info = {.magic = PVH_MAGIC,
              .version = 1,
              .cmdline_paddr = CMDLINE_ADDR,
              .memmap_paddr = ZERO_PAGE_ADDR};
    struct {
        uint64_t addr, size;
        uint32_t type, reserved;
    } map[4];
    struct {
        uint64_t paddr, size, cmdline_paddr, reserved;
    } mod = {bi->initrd_addr, bi->initrd_size, 0, 0};
    struct e820 e[4];

    unsigned n = build_e820(mem, e);
    for (unsigned i = 0; i < n; i++)
        map[i] = (typeof(map[0])){e[i].addr, e[i].size, e[i].type, 0};
    info.memmap_entries = n;
    if (bi->initrd_size) {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_ADDR;
        if (gm_write(mem, PVH_MODLIST_ADDR, &mod, sizeof(mod)))
            return -EFAULT;
    }
    if (gm_write(mem, ZERO_PAGE_ADDR, map, n * sizeof(map[0])) ||
        gm_write(mem, PVH_INFO_ADDR, &info, sizeof(info)))
        return -EFAULT;
    return 0;
}

int boot_setup(const struct guest_mem *mem, const struct boot_info *bi, const char *cmdline,
               unsigned nvcpus)
{
    uint64_t gdt[4], idt = 0;
    size_t cmdlen = strnlen(cmdline, CMDLINE_MAX);
    int ret;

    if (cmdlen >= CMDLINE_MAX)
        return -E2BIG;
    if (gm_low_end(mem) < HIMEM_START)
        return -ENOMEM;
    boot_gdt(bi->mode, gdt);
    if (gm_write(mem, BOOT_GDT_ADDR, gdt, sizeof(gdt)) ||
        gm_write(mem, BOOT_IDT_ADDR, &idt, sizeof(idt)) ||
        gm_write(mem, CMDLINE_ADDR, cmdline, cmdlen + 1))
        return -EFAULT;
    ret = write_page_tables(mem);
    if (ret)
        return ret;
    ret = bi->mode == BOOT_PVH ? write_pvh_info(mem, bi) : write_zero_page(mem, bi, cmdlen);
    if (ret)
        return ret;
    return mptable_write(mem, nvcpus);
}
