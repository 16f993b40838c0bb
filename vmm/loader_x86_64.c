/* Kernel and initrd loaders: ELF vmlinux (64-bit entry, PVH note noted) and bzImage (boot
 * protocol >= 2.12, 64-bit entry). The image is hostile: every offset and size is checked
 * before use, and segments are read straight into guest memory through gm_ptr(). */
#include <elf.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmm.h"

#define ELF_MAX_PHDRS   64
#define NOTE_MAX        (64 * 1024)
#define XEN_PVH_NOTE    18 /* XEN_ELFNOTE_PHYS32_ENTRY */
#define SETUP_HDR_OFF   0x1f1
#define SETUP_HDR_END   0x290 /* end of boot_params' room for the header */
#define HDRS_MAGIC      0x53726448
#define BOOT_FLAG_MAGIC 0xaa55
#define XLF_KERNEL_64   (1 << 0)
#define LOADED_HIGH     (1 << 0)
#define MIN_PROTOCOL    0x020c
#define BZ_ENTRY_64     0x200 /* startup_64: offset of the 64-bit entry in the payload */

/* Reads [off, off+len) of the image, which must lie inside its size. */
static int img_read(int fd, uint64_t size, uint64_t off, void *buf, uint64_t len)
{
    uint64_t end;
    uint8_t *p = buf;

    if (__builtin_add_overflow(off, len, &end) || end > size)
        return -EINVAL;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* the file shrank under us */
        p += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Looks for the PVH entry note in one PT_NOTE segment; notes are 4-byte aligned. */
static uint64_t elf_pvh_note(int fd, uint64_t size, const Elf64_Phdr *ph)
{
    uint8_t buf[NOTE_MAX];
    uint64_t len = ph->p_filesz, off = 0;

    if (len > sizeof(buf) || img_read(fd, size, ph->p_offset, buf, len) < 0)
        return 0;
    while (len - off >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr nh;
        memcpy(&nh, buf + off, sizeof(nh));
        uint64_t name_off = off + sizeof(nh);
        uint64_t desc_off = name_off + ((nh.n_namesz + 3ULL) & ~3ULL);
        uint64_t next = desc_off + ((nh.n_descsz + 3ULL) & ~3ULL);
        if (next > len)
            return 0;
        if (nh.n_type == XEN_PVH_NOTE && nh.n_namesz == 4 && !memcmp(buf + name_off, "Xen", 4) &&
            nh.n_descsz >= 4) {
            uint32_t entry;
            memcpy(&entry, buf + desc_off, sizeof(entry));
            return entry;
        }
        off = next;
    }
    return 0;
}

static int load_elf(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                    char *err, size_t errlen)
{
    Elf64_Ehdr eh;
    Elf64_Phdr ph[ELF_MAX_PHDRS];
    unsigned loaded = 0;
    int ret;

    if (img_read(fd, size, 0, &eh, sizeof(eh)) < 0)
        return errf(err, errlen, -EINVAL, "truncated ELF header");
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return errf(err, errlen, -EINVAL, "not a 64-bit little-endian ELF");
    if (eh.e_machine != EM_X86_64)
        return errf(err, errlen, -EINVAL, "ELF machine %u is not x86_64", eh.e_machine);
    if (eh.e_type != ET_EXEC)
        return errf(err, errlen, -EINVAL, "ELF is not an executable (type %u)", eh.e_type);
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > ELF_MAX_PHDRS)
        return errf(err, errlen, -EINVAL, "ELF program header table is malformed (%u entries)",
                    eh.e_phnum);
    if (img_read(fd, size, eh.e_phoff, ph, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr)) < 0)
        return errf(err, errlen, -EINVAL, "ELF program headers lie outside the file");

    bi->kernel_end = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type == PT_NOTE && !bi->pvh_entry)
            bi->pvh_entry = elf_pvh_note(fd, size, &ph[i]);
        if (ph[i].p_type != PT_LOAD || ph[i].p_memsz == 0)
            continue;
        uint64_t pa = ph[i].p_paddr, memsz = ph[i].p_memsz, filesz = ph[i].p_filesz;
        if (filesz > memsz)
            return errf(err, errlen, -EINVAL, "ELF segment %u: file size exceeds memory size", i);
        if (pa < HIMEM_START)
            return errf(err, errlen, -EINVAL,
                        "ELF segment %u at 0x%llx is below 1 MiB (boot structures live there)", i,
                        (unsigned long long)pa);
        /* The guest RAM is fresh anonymous memory, so the BSS part is already zero. */
        uint8_t *dst = gm_ptr(mem, pa, memsz);
        if (!dst)
            return errf(err, errlen, -EINVAL,
                        "ELF segment %u [0x%llx, +0x%llx) is outside guest RAM or in the MMIO hole",
                        i, (unsigned long long)pa, (unsigned long long)memsz);
        gm_prefault(mem, pa, filesz);
        ret = img_read(fd, size, ph[i].p_offset, dst, filesz);
        if (ret < 0)
            return errf(err, errlen, -EINVAL, "ELF segment %u lies outside the file", i);
        if (pa + memsz > bi->kernel_end)
            bi->kernel_end = pa + memsz;
        loaded++;
    }
    if (!loaded)
        return errf(err, errlen, -EINVAL, "ELF has no loadable segment");
    if (eh.e_entry < HIMEM_START || !gm_ptr(mem, eh.e_entry, 1))
        return errf(err, errlen, -EINVAL, "ELF entry point 0x%llx is not in guest RAM",
                    (unsigned long long)eh.e_entry);
    if (bi->pvh_entry && (bi->pvh_entry < HIMEM_START || !gm_ptr(mem, bi->pvh_entry, 1)))
        bi->pvh_entry = 0; /* a bogus note: fall back to the 64-bit entry */
    bi->entry = eh.e_entry;
    bi->mode = BOOT_LINUX64;
    bi->initrd_addr_max = 0xffffffff;
    return 0;
}

static int load_bzimage(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                        char *err, size_t errlen)
{
    struct setup_hdr_min {
        uint8_t setup_sects;
        uint8_t pad0[0x1fe - 0x1f2];
        uint16_t boot_flag;
        uint8_t jump[2];
        uint32_t header;
        uint16_t version;
        uint8_t pad1[0x211 - 0x208];
        uint8_t loadflags;
        uint8_t pad2[0x22c - 0x212];
        uint32_t initrd_addr_max;
        uint32_t kernel_alignment;
        uint8_t relocatable_kernel;
        uint8_t min_alignment;
        uint16_t xloadflags;
        uint8_t pad3[0x258 - 0x238];
        uint64_t pref_address;
        uint32_t init_size;
    } __attribute__((packed)) h;
    _Static_assert(sizeof(h) == 0x264 - SETUP_HDR_OFF, "setup header layout");

    if (img_read(fd, size, SETUP_HDR_OFF, &h, sizeof(h)) < 0)
        return errf(err, errlen, -EINVAL, "bzImage is truncated inside its setup header");
    if (h.boot_flag != BOOT_FLAG_MAGIC)
        return errf(err, errlen, -EINVAL, "bzImage boot flag is 0x%04x, not 0xaa55", h.boot_flag);
    if (h.version < MIN_PROTOCOL)
        return errf(err, errlen, -EINVAL, "bzImage boot protocol %u.%02u is older than 2.12",
                    h.version >> 8, h.version & 0xff);
    if (!(h.loadflags & LOADED_HIGH))
        return errf(err, errlen, -EINVAL, "zImage (loaded low) is not supported; need a bzImage");
    if (!(h.xloadflags & XLF_KERNEL_64))
        return errf(err, errlen, -EINVAL, "bzImage has no 64-bit entry point (XLF_KERNEL_64)");

    uint64_t setup_size = ((uint64_t)(h.setup_sects ? h.setup_sects : 4) + 1) * 512;
    if (setup_size >= size)
        return errf(err, errlen, -EINVAL, "bzImage is truncated: no kernel after the setup code");
    uint64_t payload = size - setup_size;
    if (payload <= BZ_ENTRY_64)
        return errf(err, errlen, -EINVAL,
                    "bzImage is truncated: its 64-bit entry at +0x200 lies past the kernel");
    uint64_t need = h.init_size > payload ? h.init_size : payload;
    /* Loading at the preferred address lets the decompressor work in place. */
    uint64_t load = h.pref_address >= HIMEM_START ? h.pref_address : HIMEM_START;
    uint8_t *dst = gm_ptr(mem, load, need);
    if (!dst)
        return errf(err, errlen, -EINVAL,
                    "bzImage needs [0x%llx, +%llu MiB) which is not in guest RAM",
                    (unsigned long long)load, (unsigned long long)(need >> 20) + 1);
    gm_prefault(mem, load, payload);
    if (img_read(fd, size, setup_size, dst, payload) < 0)
        return errf(err, errlen, -EIO, "cannot read the bzImage payload");

    /* The header runs from 0x1f1 to 0x202 + the jump offset at 0x201 (boot protocol). */
    uint64_t hdr_end = 0x202 + (uint64_t)h.jump[1];
    if (hdr_end > SETUP_HDR_END)
        hdr_end = SETUP_HDR_END;
    if (hdr_end > size)
        return errf(err, errlen, -EINVAL, "bzImage setup header runs past the end of the file");
    bi->setup_hdr_len = (uint32_t)(hdr_end - SETUP_HDR_OFF);
    if (img_read(fd, size, SETUP_HDR_OFF, bi->setup_hdr, bi->setup_hdr_len) < 0)
        return errf(err, errlen, -EIO, "cannot read the bzImage setup header");
    bi->has_setup_header = true;
    bi->entry = load + BZ_ENTRY_64;
    bi->kernel_end = load + need;
    bi->mode = BOOT_LINUX64;
    bi->initrd_addr_max = h.initrd_addr_max ? h.initrd_addr_max : 0x37ffffff;
    return 0;
}

int loader_load_kernel(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                       char *err, size_t errlen)
{
    uint8_t magic[SELFMAG];
    uint32_t hdrs;

    memset(bi, 0, sizeof(*bi));
    if (size < 0x400)
        return errf(err, errlen, -EINVAL, "file of %llu bytes is too small to be a kernel",
                    (unsigned long long)size);
    if (size > mem->total)
        return errf(err, errlen, -EFBIG, "kernel image (%llu MiB) is larger than guest RAM",
                    (unsigned long long)(size >> 20));
    if (img_read(fd, size, 0, magic, sizeof(magic)) < 0)
        return errf(err, errlen, -EIO, "cannot read the image");
    if (!memcmp(magic, ELFMAG, SELFMAG))
        return load_elf(mem, fd, size, bi, err, errlen);
    if (img_read(fd, size, 0x202, &hdrs, sizeof(hdrs)) == 0 && hdrs == HDRS_MAGIC)
        return load_bzimage(mem, fd, size, bi, err, errlen);
    return errf(err, errlen, -ENOEXEC, "not a kernel image (neither ELF nor bzImage)");
}

int loader_load_initrd(const struct guest_mem *mem, int fd, uint64_t size, struct boot_info *bi,
                       char *err, size_t errlen)
{
    uint64_t top = gm_low_end(mem);

    if (size == 0)
        return errf(err, errlen, -EINVAL, "initrd is empty");
    if ((uint64_t)bi->initrd_addr_max + 1 < top)
        top = (uint64_t)bi->initrd_addr_max + 1;
    if (size > top || ((top - size) & ~0xfffULL) < bi->kernel_end)
        return errf(err, errlen, -EFBIG,
                    "initrd (%llu MiB) does not fit in guest RAM above the kernel",
                    (unsigned long long)(size >> 20));
    uint64_t addr = (top - size) & ~0xfffULL;
    uint8_t *dst = gm_ptr(mem, addr, size);
    if (!dst)
        return errf(err, errlen, -EFAULT, "initrd does not fit in guest RAM");
    gm_prefault(mem, addr, size);
    if (img_read(fd, size, 0, dst, size) < 0)
        return errf(err, errlen, -EIO, "cannot read the initrd");
    bi->initrd_addr = addr;
    bi->initrd_size = size;
    return 0;
}
