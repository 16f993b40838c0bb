/* The register page of a virtio-mmio transport (mmio.h): 4 KiB holding what a driver reads at
 * each offset of the device's window, kept current under the transport lock. Register reads
 * are copies from it, so they take no lock; mapped into the guest as a read-only memory slot,
 * they take no VM exit either (writes still exit: a read-only slot turns them into MMIO).
 *
 * The page lives in a memfd of two pages. The one the guest sees is mapped read-only at
 * t->regs (KVM's memory slot points there: nothing KVM does for the guest can write it); ember
 * writes through a second, writable mapping of both pages (t->regs_bufs). A change the guest
 * made itself (a register write, in its own exit) is stored word by word into the page shown.
 * A change from the host side while the guest may be reading (a drive swapped under a running
 * guest changes its 8-byte capacity, which a driver reads as two words) is written whole into
 * the other page, which then replaces the shown one in one mmap: a driver that read a word
 * before the swap and one after sees two config generations and reads again. */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mmio.h"
#include "mmio_regs.h"

#define PAGE     4096u
#define NWORDS   (PAGE / 4)
#define ISR_WORD (REG_INT_STATUS / 4)
#define GEN_WORD (REG_CONFIG_GEN / 4)
#define NO_MEMFD (-1)

int vmmio_regs_init(struct vmmio_dev *t)
{
    t->regs_fd = memfd_create("ember-virtio-regs", MFD_CLOEXEC);
    if (t->regs_fd < 0)
        return -errno;
    if (ftruncate(t->regs_fd, 2 * PAGE) < 0)
        goto fail;
    t->regs_bufs = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, t->regs_fd, 0);
    if (t->regs_bufs == MAP_FAILED)
        goto fail;
    void *p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, t->regs_fd, 0);
    if (p == MAP_FAILED) {
        munmap(t->regs_bufs, 2 * PAGE);
        goto fail;
    }
    t->regs = p;
    t->regs_active = 0;
    return 0;
fail:;
    int ret = -errno;
    t->regs_bufs = NULL;
    close(t->regs_fd);
    t->regs_fd = NO_MEMFD;
    return ret;
}

void vmmio_regs_free(struct vmmio_dev *t)
{
    if (t->regs)
        munmap((void *)(uintptr_t)t->regs, PAGE);
    if (t->regs_bufs)
        munmap(t->regs_bufs, 2 * PAGE);
    if (t->regs_fd >= 0)
        close(t->regs_fd);
    t->regs = t->regs_bufs = NULL;
    t->regs_fd = NO_MEMFD;
}

/* The page shown, writable (the transport's lock or an atomic: see the callers). */
static uint32_t *shown(const struct vmmio_dev *t)
{
    unsigned active = __atomic_load_n(&t->regs_active, __ATOMIC_ACQUIRE);
    return (uint32_t *)((uint8_t *)t->regs_bufs + active * PAGE);
}

/* The word a driver reads at off (4-byte aligned, below REG_CONFIG) in the state t is in. */
static uint32_t reg_word(const struct vmmio_dev *t, uint32_t off)
{
    const struct vq *q = t->st.queue_sel < t->ops->nqueues ? &t->queues[t->st.queue_sel] : NULL;
    switch (off) {
    case REG_MAGIC:
        return MMIO_MAGIC;
    case REG_VERSION:
        return MMIO_VERSION;
    case REG_DEVICE_ID:
        return t->ops->device_id;
    case REG_DEV_FEATURES:
        return t->st.dev_features_sel < 2
                       ? (uint32_t)(t->ops->features(t->dev) >> (32 * t->st.dev_features_sel))
                       : 0;
    case REG_QUEUE_NUM_MAX:
        return q ? t->ops->queue_max : 0;
    case REG_QUEUE_READY:
        return q ? q->st.ready : 0;
    case REG_STATUS:
        return t->st.status;
    case REG_CONFIG_GEN:
        return t->st.config_generation;
    default: /* write-only registers, reserved offsets, VendorID: 0 */
        return 0;
    }
}

/* The words a driver can find nonzero: registers and config space. The rest of both memfd
 * pages stays as ftruncate left it, zero. */
static unsigned nwords(const struct vmmio_dev *t)
{
    return (REG_CONFIG + t->ops->config_size + 3) / 4;
}

/* The page's first nwords as the state says, InterruptStatus aside (it lives in the page). */
static void render(const struct vmmio_dev *t, uint32_t page[NWORDS])
{
    memset(page, 0, nwords(t) * 4);
    for (uint32_t off = 0; off < REG_CONFIG; off += 4)
        page[off / 4] = reg_word(t, off);
    if (t->ops->config_read && t->ops->config_size)
        t->ops->config_read(t->dev, 0, (uint8_t *)page + REG_CONFIG, t->ops->config_size);
}

/* Stores the words of page that differ from w's, InterruptStatus aside, ConfigGeneration last:
 * a driver that sees the new generation sees the config words stored before it. */
static void store_changes(uint32_t *w, const uint32_t page[NWORDS], unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (i != ISR_WORD && i != GEN_WORD && __atomic_load_n(&w[i], __ATOMIC_RELAXED) != page[i])
            __atomic_store_n(&w[i], page[i], __ATOMIC_RELEASE);
    __atomic_store_n(&w[GEN_WORD], page[GEN_WORD], __ATOMIC_RELEASE);
}

void vmmio_regs_sync(struct vmmio_dev *t)
{
    uint32_t page[NWORDS];
    render(t, page);
    store_changes(shown(t), page, nwords(t)); /* each word in one store: old or new, never half */
}

void vmmio_regs_publish(struct vmmio_dev *t)
{
    unsigned spare = t->regs_active ^ 1;
    uint32_t *next = (uint32_t *)((uint8_t *)t->regs_bufs + spare * PAGE);
    uint32_t page[NWORDS];

    render(t, page);
    page[ISR_WORD] = vmmio_regs_isr(t);
    memcpy(next, page, nwords(t) * 4);
    void *at = (void *)(uintptr_t)t->regs;
    if (mmap(at, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, t->regs_fd, (off_t)spare * PAGE) ==
        MAP_FAILED) {
        /* A failed MAP_FIXED may have unmapped the old page: map it again, then change it in
         * place (generation last). */
        int err = errno;
        if (mmap(at, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, t->regs_fd,
                 (off_t)t->regs_active * PAGE) == MAP_FAILED)
            log_err("virtio-mmio %#llx: the register page is gone: %s", (unsigned long long)t->base,
                    strerror(errno));
        log_warn("virtio-mmio %#llx: register page swap: %s", (unsigned long long)t->base,
                 strerror(err));
        store_changes(shown(t), page, nwords(t));
        return;
    }
    /* Interrupt bits are set under the lock held here; an acknowledgement of CONFIG that went to
     * the old page in between is lost, which leaves CONFIG set: one needless config read. */
    __atomic_store_n(&t->regs_active, spare, __ATOMIC_RELEASE);
}

uint32_t vmmio_regs_isr(const struct vmmio_dev *t)
{
    return __atomic_load_n(&shown(t)[ISR_WORD], __ATOMIC_ACQUIRE);
}

void vmmio_regs_isr_set(struct vmmio_dev *t, uint32_t bits)
{
    __atomic_fetch_or(&shown(t)[ISR_WORD], bits, __ATOMIC_SEQ_CST);
}

void vmmio_regs_isr_clear(struct vmmio_dev *t, uint32_t bits)
{
    __atomic_fetch_and(&shown(t)[ISR_WORD], ~bits, __ATOMIC_SEQ_CST);
}

void vmmio_regs_isr_store(struct vmmio_dev *t, uint32_t v)
{
    __atomic_store_n(&shown(t)[ISR_WORD], v, __ATOMIC_SEQ_CST);
}

void vmmio_regs_read(const struct vmmio_dev *t, uint64_t off, uint8_t *data, uint32_t len)
{
    if (len == 4 && off < PAGE && !(off & 3)) {
        uint32_t v = __atomic_load_n(&t->regs[off / 4], __ATOMIC_ACQUIRE);
        memcpy(data, &v, 4);
        return;
    }
    const uint8_t *bytes = (const uint8_t *)t->regs;
    for (uint32_t i = 0; i < len; i++) /* past the window (a bus access that overruns): 0xff */
        data[i] = off + i < PAGE ? __atomic_load_n(&bytes[off + i], __ATOMIC_RELAXED) : 0xff;
}

bool vmmio_regs_current(const struct vmmio_dev *t)
{
    uint32_t page[NWORDS];
    unsigned n = nwords(t);
    render(t, page);
    for (unsigned i = 0; i < NWORDS; i++) /* past nwords: zero */
        if (i != ISR_WORD &&
            __atomic_load_n(&t->regs[i], __ATOMIC_RELAXED) != (i < n ? page[i] : 0))
            return false;
    return true;
}

int vmmio_regs_map(struct vmmio_dev *t, int vm_fd, unsigned slot)
{
    if (ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) <= 0)
        return -ENOTSUP;
    struct kvm_userspace_memory_region r = {
            .slot = slot,
            .flags = KVM_MEM_READONLY, /* never dirty-logged, never in a snapshot's memory */
            .guest_phys_addr = t->base,
            .memory_size = PAGE,
            .userspace_addr = (uint64_t)(uintptr_t)t->regs,
    };
    return ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}
