/* Fuzz target: the kernel loaders (vmm/loader_x86_64.c: ELF vmlinux with its PVH note, bzImage)
 * with the input as the kernel image, read from a memfd as ember reads the file, into fake guest
 * RAM: 1.5 MiB from 0 and 64 KiB above the 32-bit MMIO hole, each region guarded (guest_ram.h).
 * A kernel that loads is then taken further as vm.c does: the PVH entry chosen when the note is
 * there (and the image's last byte asks for it), the same bytes placed as the initrd, and the boot
 * structures written (vmm/boot_x86_64.c: zero page with the bzImage's own setup header, or the
 * PVH start info; e820; MP table). Checked besides the sanitizers: every failure says why, and
 * what a success reports (entry points, kernel end, initrd place) lies inside guest RAM. */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../vmm/vmm.h"
#include "guest_ram.h"

#define LOW_SIZE  0x180000ULL /* 1.5 MiB: the boot structures and 512 KiB above HIMEM_START */
#define HIGH_SIZE 0x10000ULL

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static int img_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    guest_ram_add(&mem, 0, LOW_SIZE);
    guest_ram_add(&mem, MMIO_HOLE_END, HIGH_SIZE);
    img_fd = memfd_create("fuzz-kernel", 0);
    if (img_fd < 0)
        abort();
    return 0;
}

static bool in_ram(uint64_t gpa, uint64_t len)
{
    return gm_ptr(&mem, gpa, len) != NULL;
}

static void check_kernel(const struct boot_info *bi)
{
    if (bi->entry < HIMEM_START || !in_ram(bi->entry, 1) || bi->mode != BOOT_LINUX64)
        abort();
    if (bi->pvh_entry && (bi->pvh_entry < HIMEM_START || !in_ram(bi->pvh_entry, 1)))
        abort();
    if (bi->kernel_end <= HIMEM_START || !in_ram(bi->kernel_end - 1, 1))
        abort();
    /* bzImage: the 64-bit entry lies inside the loaded image */
    if (bi->has_setup_header && (bi->setup_hdr_len > sizeof(bi->setup_hdr) ||
                                 bi->setup_hdr_len < 0x202 - 0x1f1 || bi->entry >= bi->kernel_end))
        abort();
}

static void check_initrd(const struct boot_info *bi, uint64_t size)
{
    if (bi->initrd_size != size || !in_ram(bi->initrd_addr, size) ||
        bi->initrd_addr < bi->kernel_end || (bi->initrd_addr & 0xfff) ||
        bi->initrd_addr + size - 1 > bi->initrd_addr_max ||
        bi->initrd_addr + size > gm_low_end(&mem))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct boot_info bi;
    char err[256];

    if (ftruncate(img_fd, 0) < 0 || (size && pwrite(img_fd, data, size, 0) != (ssize_t)size))
        abort();
    err[0] = 0;
    int ret = loader_load_kernel(&mem, img_fd, size, &bi, err, sizeof(err));
    if (ret) {
        if (ret > 0 || !err[0])
            abort();
        return 0;
    }
    check_kernel(&bi);
    uint8_t choice = data[size - 1]; /* a kernel is at least 1 KiB */
    if (bi.pvh_entry && (choice & 1)) {
        bi.mode = BOOT_PVH;
        bi.entry = bi.pvh_entry;
    }
    err[0] = 0;
    ret = loader_load_initrd(&mem, img_fd, size, &bi, err, sizeof(err));
    if (ret && (ret > 0 || !err[0]))
        abort();
    if (!ret)
        check_initrd(&bi, size);
    /* The RAM holds the boot structures' places, so writing them cannot fail. */
    if (boot_setup(&mem, &bi, "console=ttyS0 reboot=k panic=1", 1 + (choice >> 1) % 4))
        abort();
    return 0;
}
