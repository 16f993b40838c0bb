/* Snapshots of a VM (create.c, load.c, cpu_x86_64.c,
 * vm_x86_64.c): the VM's state into ember's snapshot format (snapshot/format.h, the
 * sections of snapshot/layout.h) and its memory into a memory file in Firecracker's layout
 * (the guest RAM regions back to back, no header); and a fresh process's VM built from both. */
#ifndef EMBER_VMM_SNAPSHOT_H
#define EMBER_VMM_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct vm;
struct vcpu;
struct loop;
struct vm_config;
struct snap_writer;
struct snap_file;
struct snap_section;
struct kvm_cpuid2;
struct guest_mem;
struct snap_layer;

/* KVM capabilities the vCPU state depends on (vm->snap_caps, set when the VM is built). */
#define SNAP_CAP_XCRS         1u
#define SNAP_CAP_TSC_CONTROL  2u
#define SNAP_CAP_KVMCLOCK_CTL 4u

/* vm_snapshot_create(vm, snap_path, mem_path, diff, err, errlen): a Full snapshot (or with
 * diff a Diff one: only the pages written since the last snapshot; track_dirty_pages) of a
 * paused VM (event-loop thread): the devices quiesced, the state file and the memory file
 * written (created or truncated). Returns 0, or -errno with a reason in err (the VM is
 * unchanged, still paused). */
int vm_snapshot_create(struct vm *vm, const char *snap_path, const char *mem_path, bool diff,
                       char *err, size_t errlen);

/* A snapshot read and checked, before anything is built from it. */
struct vm_snapshot;
/* vm_snapshot_open(snap_path, cfg, err, errlen): reads and checks a snapshot file (hostile:
 * size cap and CRC first, every section and field bounded) and fills cfg (from cfg_defaults)
 * with the machine and devices it describes. Returns the snapshot, or NULL with a reason. */
struct vm_snapshot *vm_snapshot_open(const char *snap_path, struct vm_config *cfg, char *err,
                                     size_t errlen);
/* vm_snapshot_close(s): frees it (safe on NULL). */
void vm_snapshot_close(struct vm_snapshot *s);
/* Where a restored VM's memory comes from: the memory file (File: mapped MAP_PRIVATE, nothing
 * read now) or a page-fault handler listening on a Unix socket (Uffd, Firecracker's
 * handshake). */
struct snap_mem_backend {
    const char *path;
    bool uffd;
    const char *const *layers; /* File: Diff layers mapped over path, oldest first (ember's) */
    unsigned nlayers;
    const char *ws_path;        /* File: a recorded working set to prefetch (ember's) */
    const char *ws_record_path; /* File: record one there, ws_after_ms after the resume */
    uint64_t ws_after_ms;
};
/* vm_snapshot_restore(vm, cfg, loop, s, mem, err, errlen): builds vm from s and its memory
 * backend, cfg being what vm_snapshot_open filled;
 * the vCPUs are left paused with their saved state, every device restored and each of its
 * queues processed once. Returns 0, or -errno with a reason in err (vm_destroy then frees the
 * partial VM). */
int vm_snapshot_restore(struct vm *vm, const struct vm_config *cfg, struct loop *loop,
                        const struct vm_snapshot *s, const struct snap_mem_backend *mem, char *err,
                        size_t errlen);
/* snap_uffd_memory(vm, sock_path, err, errlen): anonymous guest RAM registered with a new
 * userfaultfd, handed to the handler at sock_path (uffd.c). Returns 0, or -errno with
 * a reason in err. */
int snap_uffd_memory(struct vm *vm, const char *sock_path, char *err, size_t errlen);
/* snap_uffd_close(vm): stops watching the handler and closes the backend's fds (idempotent). */
void snap_uffd_close(struct vm *vm);
/* vm_kvmclock_ctrl(vm): tells KVM that each paused vCPU is about to resume (KVM_KVMCLOCK_CTRL),
 * so the guest's watchdogs do not count the pause as a lockup. */
void vm_kvmclock_ctrl(struct vm *vm);

/* ---- Diff snapshots and layers (diff.c) ---------------------------------------- */
/* snap_dirty_pages(vm, bits, err, errlen): the pages written since the last snapshot (KVM's
 * log, read and cleared, OR the devices' marks, plus the used rings), one bit per page in
 * memory-file order (malloc'd). Returns 0 or -errno with a reason. */
int snap_dirty_pages(struct vm *vm, uint64_t **bits, char *err, size_t errlen);
/* snap_dirty_reset(vm, err, errlen): a snapshot was written: nothing is dirty any more. */
int snap_dirty_reset(struct vm *vm, char *err, size_t errlen);
/* snap_write_diff(vm, fd, bits, layer, err, errlen): the pages of bits into fd at their
 * offsets (a sparse file of the RAM's size); fills layer's digest and page count. */
int snap_write_diff(struct vm *vm, int fd, const uint64_t *bits, struct snap_layer *layer,
                    char *err, size_t errlen);
/* snap_map_layer(mem, path, want, index, err, errlen): checks that the layer file at path is
 * the Diff layer `want` (its runs of pages hash to want's digest) and maps its pages over mem
 * (MAP_PRIVATE, no copy). Returns 0 or -errno with a reason. */
int snap_map_layer(struct guest_mem *mem, const char *path, const struct snap_layer *want,
                   unsigned index, char *err, size_t errlen);
/* snap_chain_read(f, total_pages, chain, n, err, errlen): the chain of memory images a state
 * file stands on (hostile: its length and each image checked against a RAM of total_pages)
 * into chain[SNAP_CHAIN_MAX], with *n their count (a file without one: one image). Returns 0,
 * or -EINVAL with a reason. */
int snap_chain_read(const struct snap_file *f, uint64_t total_pages, struct snap_layer *chain,
                    size_t *n, char *err, size_t errlen);
/* snap_check_layer(fd, size, want, index, path, err, errlen): the checks of snap_map_layer
 * alone, on an open file of size bytes (path and index for the message). */
int snap_check_layer(int fd, uint64_t size, const struct snap_layer *want, unsigned index,
                     const char *path, char *err, size_t errlen);
/* snap_merge_layer(base, layer, size, pages): copies a Diff layer's pages into the base file
 * at their offsets (ember snapshot merge), with *pages the count. Returns 0 or -errno. */
int snap_merge_layer(int base, int layer, uint64_t size, uint64_t *pages);
/* snap_tag_memory(fd, id): marks a memory file written for chain image id (a user xattr, where
 * the file system has them); snap_untag_memory(fd): removes the mark (a file whose image is
 * no longer known); both return 0 (also without xattrs) or -errno. snap_memory_tag(fd, id):
 * reads it. Returns 0, or -1 if none. */
int snap_tag_memory(int fd, uint64_t id);
int snap_untag_memory(int fd);
/* snap_base_image(chain, n, tag_valid, tag): which image of the chain a base memory file
 * holds, by its tag: k for a base merged up to layer k (its layers k+1.. still to come), 0 for
 * an untagged file. Returns k, or -1 if the tag names no image of this chain. */
int snap_base_image(const struct snap_layer *chain, size_t n, bool tag_valid, uint64_t tag);
int snap_memory_tag(int fd, uint64_t *id);

/* ---- working sets (ws.c) -------------------------------------------------------- */
/* snap_ws_record(vm, path, mem_fd, after_ms, err, errlen): the restored VM records the pages it
 * touches until after_ms (default 1000) after it resumes, then writes them with their content
 * from mem_fd into path. Returns 0 or -errno with a reason. */
int snap_ws_record(struct vm *vm, const char *path, int mem_fd, uint64_t after_ms, char *err,
                   size_t errlen);
/* snap_ws_resumed(vm): the VM runs: the recording's marker timer starts (once). */
void snap_ws_resumed(struct vm *vm);
/* snap_ws_write_now(vm, err, errlen): the marker by API call: a recording in progress ends
 * now and its file is written. Returns 0, or -errno with a reason in err (-EINVAL: none). */
int snap_ws_write_now(struct vm *vm, char *err, size_t errlen);
/* snap_ws_close(vm): stops a recording (idempotent). */
void snap_ws_close(struct vm *vm);
/* snap_ws_map(vm, path, err, errlen): reads a working-set file (hostile: header, index and
 * sizes checked; recorded on this snapshot's memory) in one sequential read and maps its pages
 * over guest RAM. Returns 0 or -errno with a reason. */
int snap_ws_map(struct vm *vm, const char *path, char *err, size_t errlen);
/* snap_ws_read_index(fd, total_pages, want_id, index, npages, data_off): a working-set file's
 * header and index, checked. Returns 0 (the index malloc'd), -ESTALE (recorded on another
 * memory image), -EINVAL (not a valid file) or -errno. */
int snap_ws_read_index(int fd, uint64_t total_pages, uint64_t want_id, uint64_t **index,
                       uint64_t *npages, uint64_t *data_off);

/* snap_pread_all / snap_pwrite_all(fd, buf, len, off): all len bytes at off (fileio.c).
 * Return 0, or -errno (-EIO at end of file). */
int snap_pread_all(int fd, void *buf, size_t len, off_t off);
int snap_pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* snapshot_tool(argc, argv): `ember snapshot info FILE [--json]` (info.c). Returns
 * the exit code. */
int snapshot_tool(int argc, char **argv);

/* ---- per-architecture parts (x86) --------------------------------------------------------- */
/* cpu_state_save(vm, vcpu, w, err, errlen): one SNAP_SEC_VCPU section. */
int cpu_state_save(struct vm *vm, struct vcpu *vcpu, struct snap_writer *w, char *err,
                   size_t errlen);
/* cpu_state_restore(vm, vcpu, f, s, err, errlen): a fresh vCPU takes section s. */
int cpu_state_restore(struct vm *vm, struct vcpu *vcpu, const struct snap_file *f,
                      const struct snap_section *s, char *err, size_t errlen);
/* snap_cpuid_check(vm, index, saved, err, errlen): every feature the saved CPUID shows the
 * guest is one this host's KVM offers (with ember's normalization). Returns 0 or -EINVAL with
 * the missing feature bits named in err. */
int snap_cpuid_check(struct vm *vm, unsigned index, const struct kvm_cpuid2 *saved, char *err,
                     size_t errlen);
/* snap_msr_list(vm, list, n): the MSRs KVM can save (KVM_GET_MSR_INDEX_LIST; malloc'd).
 * Returns 0 or -errno. */
int snap_msr_list(struct vm *vm, uint32_t **list, unsigned *n);
/* vm_state_save(vm, w, err, errlen): the SNAP_SEC_KVM_VM section (PIT, clock, PICs, IOAPIC). */
int vm_state_save(struct vm *vm, struct snap_writer *w, char *err, size_t errlen);
/* vm_state_restore(vm, f, s, err, errlen): after every vCPU's state, the VM's. */
int vm_state_restore(struct vm *vm, const struct snap_file *f, const struct snap_section *s,
                     char *err, size_t errlen);

#endif
