/* `ember snapshot info FILE [--json]`: what a snapshot holds, read and checked exactly as a load
 * reads it (so "info" says why a file would not load): the format, the machine, the files and
 * devices it refers to, its sections. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "format.h"
#include "layout.h"
#include "snapshot.h"
#include "snapshot_file.h"
#include "../vmm/vmm.h"

static const char *section_name(uint32_t type)
{
    static const char *const names[] = {
            [SNAP_SEC_MACHINE] = "machine", [SNAP_SEC_DRIVE] = "drive",
            [SNAP_SEC_NET] = "net",         [SNAP_SEC_VIRTIO] = "virtio device",
            [SNAP_SEC_LEGACY] = "legacy",   [SNAP_SEC_KVM_VM] = "kvm vm",
            [SNAP_SEC_VCPU] = "vcpu",       [SNAP_SEC_VSOCK] = "vsock",
    };
    return type < sizeof(names) / sizeof(names[0]) && names[type] ? names[type] : "unknown";
}

static void str_field(const struct vm_snapshot *s, uint32_t tag, char *out, size_t size)
{
    if (snap_get_str(&s->f, snap_find(&s->f, SNAP_SEC_MACHINE, 0), tag, out, size))
        snprintf(out, size, "?");
}

static json_t *info_json(const struct vm_snapshot *s, const struct vm_config *cfg)
{
    char writer[64], type[16], mem[CFG_PATH_MAX], mac[18];
    uint64_t created = 0;
    json_t *drives = json_array(), *nets = json_array(), *secs = json_array(),
           *chain = json_array();
    const struct snap_field *fc =
            snap_get(&s->f, snap_find(&s->f, SNAP_SEC_MACHINE, 0), SF_MEM_CHAIN);
    for (size_t i = 0; fc && i < fc->len / sizeof(struct snap_layer); i++) {
        struct snap_layer l;
        char id[17];
        memcpy(&l, fc->data + i * sizeof(l), sizeof(l));
        snprintf(id, sizeof(id), "%016llx", (unsigned long long)l.id);
        json_array_append_new(chain,
                              json_pack("{s:s,s:s,s:I}", "id", id, "kind", i == 0 ? "base" : "diff",
                                        "pages", (json_int_t)l.pages));
    }

    str_field(s, SF_WRITER, writer, sizeof(writer));
    str_field(s, SF_SNAP_TYPE, type, sizeof(type));
    str_field(s, SF_MEM_FILE, mem, sizeof(mem));
    snap_get_u64(&s->f, snap_find(&s->f, SNAP_SEC_MACHINE, 0), SF_CREATED, &created);
    for (unsigned i = 0; i < cfg->ndrives; i++) {
        const struct vm_drive *d = &cfg->drives[i];
        json_array_append_new(drives,
                              json_pack("{s:s,s:s,s:b,s:b,s:s}", "drive_id", d->id, "path_on_host",
                                        d->path, "is_root_device", d->root, "is_read_only",
                                        d->read_only, "io_engine", d->async ? "Async" : "Sync"));
    }
    for (unsigned i = 0; i < cfg->nnets; i++) {
        const struct vm_net *n = &cfg->nets[i];
        json_t *o = json_pack("{s:s,s:s}", "iface_id", n->id, "host_dev_name", n->host_dev_name);
        if (n->has_mac)
            json_object_set_new(o, "guest_mac", json_string(cfg_mac_format(n->mac, mac)));
        json_array_append_new(nets, o);
    }
    for (unsigned i = 0; i < s->f.nsections; i++) {
        const struct snap_section *sec = &s->f.sections[i];
        json_array_append_new(secs, json_pack("{s:i,s:s,s:I,s:i,s:b}", "type", (int)sec->type,
                                              "name", section_name(sec->type), "bytes",
                                              (json_int_t)sec->len, "fields", (int)sec->nfields,
                                              "required", (sec->flags & SNAP_REQUIRED) != 0));
    }
    json_t *j = json_pack("{s:i,s:s,s:s,s:s,s:I,s:i,s:I,s:b,s:s,s:o,s:o,s:o,s:o}", "format_version",
                          (int)s->f.version, "architecture", "x86_64", "writer", writer,
                          "snapshot_type", type, "created", (json_int_t)created, "vcpu_count",
                          (int)cfg->vcpus, "mem_size_mib", (json_int_t)cfg->mem_mib, "smt",
                          cfg->smt, "mem_file_path", mem, "drives", drives, "network_interfaces",
                          nets, "sections", secs, "memory_chain", chain);
    if (cfg->vsock.enabled)
        json_object_set_new(j, "vsock",
                            json_pack("{s:I,s:s}", "guest_cid", (json_int_t)cfg->vsock.guest_cid,
                                      "uds_path", cfg->vsock.uds_path));
    return j;
}

static void print_text(json_t *j)
{
    time_t created = (time_t)json_integer_value(json_object_get(j, "created"));
    char when[64] = "?";
    struct tm tm;
    size_t i;
    json_t *v;

    if (gmtime_r(&created, &tm))
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    printf("ember snapshot, format version %d, %s, written by %s on %s\n",
           (int)json_integer_value(json_object_get(j, "format_version")),
           json_string_value(json_object_get(j, "architecture")),
           json_string_value(json_object_get(j, "writer")), when);
    printf("type:     %s\n", json_string_value(json_object_get(j, "snapshot_type")));
    printf("machine:  %d vCPUs%s, %lld MiB\n",
           (int)json_integer_value(json_object_get(j, "vcpu_count")),
           json_is_true(json_object_get(j, "smt")) ? " (SMT)" : "",
           (long long)json_integer_value(json_object_get(j, "mem_size_mib")));
    printf("memory:   %s (as written; load names the memory file)\n",
           json_string_value(json_object_get(j, "mem_file_path")));
    size_t layers = json_array_size(json_object_get(j, "memory_chain"));
    if (layers > 1)
        printf("layers:   a base and %zu Diff layer%s: load it with them (mem_backend.layers) "
               "or from a merged base\n",
               layers - 1, layers == 2 ? "" : "s");
    json_t *arr = json_object_get(j, "drives");
    for (i = 0; i < json_array_size(arr) && (v = json_array_get(arr, i)); i++)
        printf("drive:    %s %s%s%s\n", json_string_value(json_object_get(v, "drive_id")),
               json_string_value(json_object_get(v, "path_on_host")),
               json_is_true(json_object_get(v, "is_root_device")) ? " (root)" : "",
               json_is_true(json_object_get(v, "is_read_only")) ? " (read-only)" : "");
    arr = json_object_get(j, "network_interfaces");
    for (i = 0; i < json_array_size(arr) && (v = json_array_get(arr, i)); i++) {
        json_t *mac = json_object_get(v, "guest_mac");
        printf("net:      %s on TAP %s%s%s\n", json_string_value(json_object_get(v, "iface_id")),
               json_string_value(json_object_get(v, "host_dev_name")), mac ? ", MAC " : "",
               mac ? json_string_value(mac) : "");
    }
    if ((v = json_object_get(j, "vsock")))
        printf("vsock:    CID %lld on %s (load may override the path)\n",
               (long long)json_integer_value(json_object_get(v, "guest_cid")),
               json_string_value(json_object_get(v, "uds_path")));
    printf("sections:\n");
    arr = json_object_get(j, "sections");
    for (i = 0; i < json_array_size(arr) && (v = json_array_get(arr, i)); i++)
        printf("  %-14s type %2d  %6lld bytes  %3d fields%s\n",
               json_string_value(json_object_get(v, "name")),
               (int)json_integer_value(json_object_get(v, "type")),
               (long long)json_integer_value(json_object_get(v, "bytes")),
               (int)json_integer_value(json_object_get(v, "fields")),
               json_is_true(json_object_get(v, "required")) ? "" : "  (optional)");
}

static int usage(FILE *out, int code)
{
    fprintf(out, "usage: ember snapshot info SNAPSHOT [--json]\n"
                 "       ember snapshot merge [--snapshot SNAPSHOT] BASE_MEM DIFF_MEM...\n"
                 "\n"
                 "Prints what a snapshot file (PUT /snapshot/create's snapshot_path) holds: its\n"
                 "format, the machine, the drives and interfaces it refers to, its sections. The\n"
                 "file is checked as a load checks it: a file that would not load is refused\n"
                 "with the reason (exit 1).\n"
                 "\n"
                 "merge writes the pages of each Diff snapshot's memory file, in the order\n"
                 "given (oldest first), into the base memory file (Firecracker's snapshot-editor\n"
                 "edit-memory rebase); the newest Diff's snapshot file then loads with the base\n"
                 "alone. BASE_MEM is changed in place. With --snapshot (the newest Diff's\n"
                 "snapshot file), nothing is written unless the files are the chain of images\n"
                 "that snapshot stands on, in order: the number of layers, the base's and each\n"
                 "layer's id tag, the pages each layer holds (the checks a load makes).\n"
                 "Without it only the sizes are checked, as Firecracker's rebase does.\n"
                 "The base's id tag (the user xattr user.ember.mem_id, where the file system\n"
                 "keeps user xattrs) then names the newest layer's image with --snapshot, and\n"
                 "is removed without it.\n"
                 "PUT /snapshot/load can instead map the layers over the base without a\n"
                 "merge: \"mem_backend\": {\"backend_type\": \"File\", \"backend_path\": BASE,\n"
                 "\"layers\": [DIFF...]}.\n");
    return code;
}

/* The chain of memory images SNAP stands on, checked against the merge's files before any
 * page is written: as many Diff layers as it has, the base's tag (where the file system keeps
 * it), each layer's tag and the digest of its runs of pages, as a load checks them. *newest:
 * the id of the image the merged base will hold (the newest layer's). */
static int check_chain(const char *snap, int base, uint64_t size, int ndiffs, char **paths,
                       const int *fds, uint64_t *newest)
{
    struct vm_config cfg;
    char err[512] = "";
    uint64_t tag = 0;
    int ret = -EINVAL;

    cfg_defaults(&cfg);
    struct vm_snapshot *s = vm_snapshot_open(snap, &cfg, err, sizeof(err));
    struct snap_layer chain[SNAP_CHAIN_MAX];
    size_t n = 0;

    int k = -1;
    bool tagged = snap_memory_tag(base, &tag) == 0;
    if (!s || snap_chain_read(&s->f, size / 4096, chain, &n, err, sizeof(err)))
        log_err("%s", err);
    else if ((k = snap_base_image(chain, n, tagged, tag)) < 0)
        log_err("the base memory file %s is not the base of %s (it was written for another "
                "snapshot)",
                paths[0], snap);
    else if (n - 1 - (size_t)k != (size_t)ndiffs && k)
        log_err("the base memory file %s holds %s's memory merged up to layer %d: it takes the "
                "%zu layer%s after that; %d were given",
                paths[0], snap, k, n - 1 - (size_t)k, n - 1 - (size_t)k == 1 ? "" : "s", ndiffs);
    else if (n - 1 != (size_t)ndiffs && !k)
        log_err("%s stands on a base and %zu Diff layer%s; %d were given", snap, n - 1,
                n == 2 ? "" : "s", ndiffs);
    else
        ret = 0;
    if (!ret)
        *newest = chain[n - 1].id;
    for (int i = 0; !ret && i < ndiffs; i++) {
        unsigned at = (unsigned)k + 1 + (unsigned)i;
        if ((ret = snap_check_layer(fds[i], size, &chain[at], at, paths[i + 1], err, sizeof(err))))
            log_err("%s", err);
    }
    vm_snapshot_close(s);
    cfg_free(&cfg);
    return ret;
}

/* `ember snapshot merge [--snapshot SNAP] BASE DIFF...`: Firecracker's `snapshot-editor
 * edit-memory rebase`, for several layers in order: each Diff memory file's pages are written
 * into BASE; with SNAP, only once every file is checked to be the chain SNAP stands on. */
static int merge(int argc, char **argv)
{
    const char *snap = NULL;
    if (argc >= 2 && !strcmp(argv[0], "--snapshot"))
        snap = argv[1], argc -= 2, argv += 2;
    if (argc < 2)
        return usage(stderr, EXIT_BAD_ARGS);
    int base = open(argv[0], O_RDWR | O_CLOEXEC | O_NOCTTY), ndiffs = argc - 1;
    int open_errno = errno; /* before calloc may change it */
    int *fds = calloc((size_t)ndiffs, sizeof(int));
    struct stat st, ls;
    uint64_t newest = 0;

    if (!fds || base < 0 || fstat(base, &st) || !S_ISREG(st.st_mode)) {
        log_err("the base memory file %s: %s", argv[0],
                !fds       ? strerror(ENOMEM)
                : base < 0 ? strerror(open_errno)
                           : "not a regular file");
        free(fds);
        if (base >= 0)
            close(base);
        return EXIT_GENERIC;
    }
    int code = EXIT_OK, opened = 0;
    for (; opened < ndiffs && code == EXIT_OK; opened++) {
        const char *path = argv[opened + 1];
        int fd = fds[opened] = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &ls) || !S_ISREG(ls.st_mode) || ls.st_size != st.st_size) {
            log_err("the Diff memory file %s: %s", path,
                    fd < 0 ? strerror(errno) : "not a memory file of the base's size");
            code = EXIT_GENERIC;
        }
    }
    if (code == EXIT_OK && snap &&
        check_chain(snap, base, (uint64_t)st.st_size, ndiffs, argv, fds, &newest))
        code = EXIT_GENERIC;
    /* The old tag goes before the first page changes: a merge cut short must not leave a base
     * that still claims to be the old image. */
    if (code == EXIT_OK && (errno = -snap_untag_memory(base))) {
        log_err("%s: its id tag cannot be removed: %s", argv[0], strerror(errno));
        code = EXIT_GENERIC;
    }
    for (int i = 0; i < ndiffs && code == EXIT_OK; i++) {
        uint64_t pages = 0;
        if ((errno = -snap_merge_layer(base, fds[i], (uint64_t)st.st_size, &pages))) {
            log_err("merging %s into %s: %s", argv[i + 1], argv[0], strerror(errno));
            code = EXIT_GENERIC;
        } else {
            printf("%s: %llu pages merged into %s\n", argv[i + 1], (unsigned long long)pages,
                   argv[0]);
        }
    }
    /* The base now holds the newest layer's image: its tag says so when SNAP named the chain
     * (a later Diff of a VM loaded from it then stacks on it alone), and stays removed
     * otherwise (the image is not known). */
    if (code == EXIT_OK && snap && (errno = -snap_tag_memory(base, newest))) {
        log_err("%s: merged, but its id tag cannot be set: %s", argv[0], strerror(errno));
        code = EXIT_GENERIC;
    }
    if (code == EXIT_OK && fsync(base)) {
        log_err("%s: %s", argv[0], strerror(errno));
        code = EXIT_GENERIC;
    }
    for (int i = 0; i < opened; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    close(base);
    return code;
}

int snapshot_tool(int argc, char **argv)
{
    struct vm_config cfg;
    char err[512];
    bool json = false;
    const char *path = NULL;

    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
        return usage(stdout, EXIT_OK);
    if (argc >= 2 && !strcmp(argv[1], "merge"))
        return merge(argc - 2, argv + 2);
    if (argc < 3 || strcmp(argv[1], "info"))
        return usage(stderr, EXIT_BAD_ARGS);
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!path && argv[i][0] != '-')
            path = argv[i];
        else
            return usage(stderr, EXIT_BAD_ARGS);
    }
    if (!path)
        return usage(stderr, EXIT_BAD_ARGS);
    cfg_defaults(&cfg);
    struct vm_snapshot *s = vm_snapshot_open(path, &cfg, err, sizeof(err));
    if (!s) {
        log_err("%s", err);
        cfg_free(&cfg);
        return EXIT_GENERIC;
    }
    json_t *j = info_json(s, &cfg);
    if (json) {
        char *text = json_dumps(j, JSON_INDENT(2));
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        print_text(j);
    }
    json_decref(j);
    vm_snapshot_close(s);
    cfg_free(&cfg);
    return EXIT_OK;
}
