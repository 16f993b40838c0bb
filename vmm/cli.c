/* `ember run` options → struct vm_config, the configuration the API fills too (config.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

void cli_usage(void *out)
{
    fprintf(out,
            "usage: ember run --kernel PATH [options]\n"
            "       ember run --restore SNAPSHOT --mem-file MEM [--console FILE]\n"
            "       ember snapshot info SNAPSHOT [--json]\n"
            "       ember --version | --help\n"
            "\n"
            "Boots a Linux guest on KVM with its serial console on this terminal.\n"
            "\n"
            "  --kernel PATH     ELF vmlinux or bzImage (x86_64)\n"
            "  --initrd PATH     initial ramdisk, loaded at the top of low RAM\n"
            "  --cmdline STR     kernel command line (at most %d bytes); default:\n"
            "                    \"%s\"\n"
            "  --vcpus N         number of vCPUs, 1 to %d (default 1)\n"
            "  --mem MiB         guest RAM in MiB, %d to %d (default 128)\n"
            "  --rootfs PATH     root file system image: the first drive (/dev/vda), root=\n"
            "                    /dev/vda rw on the kernel command line\n"
            "  --drive SPEC      another drive (repeatable, in order): path=PATH[,ro]\n"
            "                    [,engine=sync|async][,cache=unsafe|writeback][,bw=BYTES/s]\n"
            "                    [,iops=N][,id=ID]\n"
            "  --net SPEC        a network interface on an existing host TAP device\n"
            "                    (repeatable): tap=NAME[,mac=xx:xx:xx:xx:xx:xx][,id=ID]\n"
            "  --vsock SPEC      a vsock device on a host Unix socket: cid=N,uds=PATH (N >= 3;\n"
            "                    host clients connect to PATH and send CONNECT <port>; the\n"
            "                    guest's connections to port P reach PATH_P)\n"
            "  --console FILE    write the guest console to FILE instead of stdout\n"
            "  --restore SNAP --mem-file MEM\n"
            "                    resume the VM a snapshot holds (PUT /snapshot/create wrote\n"
            "                    both files) instead of booting one; the machine, drives and\n"
            "                    interfaces are the snapshot's\n"
            "  --boot MODE       auto (default: PVH entry if the ELF has one), linux (64-bit\n"
            "                    Linux boot protocol) or pvh\n"
            "  --log-level LVL   error, warning, info (default) or debug\n"
            "  --allow-core-dumps  stay dumpable, RLIMIT_CORE as inherited (default: not\n"
            "                    dumpable, RLIMIT_CORE 0: a core holds all guest RAM)\n"
            "\n"
            "The guest stops the VM with `reboot` (keyboard-controller reset, reboot=k), as with\n"
            "Firecracker; a guest `poweroff` needs ACPI, which ember does not offer yet.\n"
            "On a terminal, Ctrl-A x leaves and Ctrl-A Ctrl-A sends Ctrl-A.\n",
            CMDLINE_MAX - 1, DEFAULT_CMDLINE, VCPUS_MAX, MEM_MIN_MIB, MEM_MAX_MIB);
}

/* A decimal number with nothing around it. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

static int copy_arg(char **dst, const char *opt, const char *val, char *err, size_t errlen)
{
    size_t len = strlen(val);
    if (len >= CFG_PATH_MAX)
        return errf(err, errlen, -EINVAL, "%s is %zu bytes long, the limit is %d", opt, len,
                    CFG_PATH_MAX - 1);
    if (len == 0)
        return errf(err, errlen, -EINVAL, "%s is empty", opt);
    return cfg_set_path(dst, val, opt, err, errlen);
}

/* A --drive or --rootfs: parsed, then added as the API adds one (same limits and checks). */
static int add_drive(struct vm_config *cfg, const char *spec, bool root, char *err, size_t errlen)
{
    struct vm_drive d;
    int ret = drive_parse(&d, spec, root, err, errlen);
    if (ret)
        return ret;
    if (!d.id[0]) /* an unnamed --drive: drive1, drive2 ... in order */
        snprintf(d.id, sizeof(d.id), "drive%u", cfg->ndrives);
    ret = cfg_put_drive(cfg, &d, err, errlen);
    cfg_drive_free(&d);
    return ret;
}

/* A --net tap=NAME[,mac=MAC][,id=ID]: added as the API adds one (same limits and checks; the
 * TAP itself is opened when the VM is built). */
static int add_net(struct vm_config *cfg, const char *spec, char *err, size_t errlen)
{
    struct vm_net n = {0};
    char buf[256];
    if (strlen(spec) >= sizeof(buf))
        return errf(err, errlen, -EINVAL, "--net '%.32s...' is too long", spec);
    snprintf(buf, sizeof(buf), "%s", spec);
    snprintf(n.id, sizeof(n.id), "net%u", cfg->nnets);
    char *save = NULL;
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *val = strchr(kv, '=');
        if (!val)
            return errf(err, errlen, -EINVAL, "--net: '%.32s' is not KEY=VALUE", kv);
        *val++ = '\0';
        if (!strcmp(kv, "tap")) {
            if (strlen(val) > VM_IFNAME_MAX)
                return errf(err, errlen, -EINVAL, "--net: tap name '%.32s' is longer than %d", val,
                            VM_IFNAME_MAX);
            snprintf(n.host_dev_name, sizeof(n.host_dev_name), "%s", val);
        } else if (!strcmp(kv, "mac")) {
            if (cfg_mac_parse(val, n.mac))
                return errf(err, errlen, -EINVAL,
                            "--net: mac '%.32s' is not xx:xx:xx:xx:xx:xx (hex digits)", val);
            n.has_mac = true;
        } else if (!strcmp(kv, "id")) {
            if (strlen(val) >= sizeof(n.id))
                return errf(err, errlen, -EINVAL, "--net: id '%.32s...' is too long", val);
            snprintf(n.id, sizeof(n.id), "%s", val);
        } else {
            return errf(err, errlen, -EINVAL, "--net: unknown option '%.32s' (tap, mac, id)", kv);
        }
    }
    if (!n.host_dev_name[0])
        return errf(err, errlen, -EINVAL, "--net needs tap=NAME");
    if (cfg_net(cfg, n.id))
        return errf(err, errlen, -EINVAL, "--net: id %s is given twice", n.id);
    return cfg_put_net(cfg, &n, err, errlen);
}

/* A --vsock cid=N,uds=PATH: set as the API sets it (same checks; bound when the VM is built). */
static int set_vsock(struct vm_config *cfg, const char *spec, char *err, size_t errlen)
{
    struct vm_vsock vs = {.enabled = true};
    bool has_cid = false;
    char buf[256];
    if (strlen(spec) >= sizeof(buf))
        return errf(err, errlen, -EINVAL, "--vsock '%.32s...' is too long", spec);
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL;
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *val = strchr(kv, '='), *end;
        if (!val)
            return errf(err, errlen, -EINVAL, "--vsock: '%.32s' is not KEY=VALUE", kv);
        *val++ = '\0';
        if (!strcmp(kv, "cid")) {
            errno = 0;
            unsigned long long n = strtoull(val, &end, 10);
            if (!val[0] || *end || errno || n > UINT32_MAX || val[0] == '-')
                return errf(err, errlen, -EINVAL, "--vsock: cid '%.32s' is not a number", val);
            vs.guest_cid = (uint32_t)n;
            has_cid = true;
        } else if (!strcmp(kv, "uds")) {
            if (strlen(val) > VM_UDS_MAX)
                return errf(err, errlen, -EINVAL, "--vsock: uds path longer than %d bytes",
                            VM_UDS_MAX);
            snprintf(vs.uds_path, sizeof(vs.uds_path), "%s", val);
        } else {
            return errf(err, errlen, -EINVAL, "--vsock: unknown option '%.32s' (cid, uds)", kv);
        }
    }
    if (!has_cid || !vs.uds_path[0])
        return errf(err, errlen, -EINVAL, "--vsock needs cid=N and uds=PATH");
    return cfg_put_vsock(cfg, &vs, err, errlen);
}

int cli_parse(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    enum {
        O_KERNEL = 256,
        O_INITRD,
        O_CMDLINE,
        O_VCPUS,
        O_MEM,
        O_CONSOLE,
        O_LOG,
        O_BOOT,
        O_ROOTFS,
        O_DRIVE,
        O_NET,
        O_RESTORE,
        O_MEM_FILE,
        O_VSOCK
    };
    static const struct option opts[] = {
            {"kernel", required_argument, NULL, O_KERNEL},
            {"initrd", required_argument, NULL, O_INITRD},
            {"cmdline", required_argument, NULL, O_CMDLINE},
            {"vcpus", required_argument, NULL, O_VCPUS},
            {"mem", required_argument, NULL, O_MEM},
            {"console", required_argument, NULL, O_CONSOLE},
            {"log-level", required_argument, NULL, O_LOG},
            {"boot", required_argument, NULL, O_BOOT},
            {"rootfs", required_argument, NULL, O_ROOTFS},
            {"drive", required_argument, NULL, O_DRIVE},
            {"allow-core-dumps", no_argument, NULL, 'c'}, /* read by proc_hygiene */
            {"net", required_argument, NULL, O_NET},
            {"restore", required_argument, NULL, O_RESTORE},
            {"mem-file", required_argument, NULL, O_MEM_FILE},
            {"vsock", required_argument, NULL, O_VSOCK},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    static const char *const levels[] = {"error", "warning", "info", "debug"};
    uint64_t v;
    int c, ret = 0;
    const char *machine_opt = NULL; /* the first option a snapshot's machine replaces */

    optind = 1;
    opterr = 0;
    while (!ret && (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        for (const struct option *o = opts; !machine_opt && o->name; o++)
            if (o->val == c && c >= O_KERNEL && c <= O_NET && c != O_CONSOLE && c != O_LOG)
                machine_opt = o->name;
        switch (c) {
        case O_RESTORE:
            ret = copy_arg(&cfg->restore_path, "--restore", optarg, err, errlen);
            break;
        case O_MEM_FILE:
            ret = copy_arg(&cfg->restore_mem, "--mem-file", optarg, err, errlen);
            break;
        case O_KERNEL:
            ret = copy_arg(&cfg->kernel_path, "--kernel", optarg, err, errlen);
            break;
        case O_INITRD:
            ret = copy_arg(&cfg->initrd_path, "--initrd", optarg, err, errlen);
            break;
        case O_CONSOLE:
            ret = copy_arg(&cfg->console_path, "--console", optarg, err, errlen);
            break;
        case O_ROOTFS:
        case O_DRIVE:
            ret = add_drive(cfg, optarg, c == O_ROOTFS, err, errlen);
            break;
        case O_NET:
            ret = add_net(cfg, optarg, err, errlen);
            break;
        case O_VSOCK:
            ret = set_vsock(cfg, optarg, err, errlen);
            break;
        case O_CMDLINE:
            if (!optarg[0] || strlen(optarg) >= CMDLINE_MAX)
                return errf(err, errlen, -EINVAL, "--cmdline is empty or longer than %d bytes",
                            CMDLINE_MAX - 1);
            ret = cfg_set_cmdline(cfg, optarg, err, errlen);
            break;
        case O_VCPUS:
            if (parse_u64(optarg, UINT32_MAX, &v))
                return errf(err, errlen, -EINVAL, "--vcpus '%s' is not a number of vCPUs", optarg);
            cfg->vcpus = (uint32_t)v;
            break;
        case O_MEM:
            if (parse_u64(optarg, UINT64_MAX >> 20, &v))
                return errf(err, errlen, -EINVAL, "--mem '%s' is not a size in MiB", optarg);
            cfg->mem_mib = v;
            break;
        case O_LOG:
            ret = -EINVAL;
            for (int i = 0; i < 4; i++)
                if (!strcmp(optarg, levels[i])) {
                    log_level = (enum log_level)i;
                    ret = 0;
                }
            if (ret)
                return errf(err, errlen, ret,
                            "--log-level '%s' is not one of error, warning, "
                            "info, debug",
                            optarg);
            break;
        case O_BOOT:
            if (!strcmp(optarg, "auto"))
                cfg->boot = BOOT_PREF_AUTO;
            else if (!strcmp(optarg, "linux"))
                cfg->boot = BOOT_PREF_LINUX;
            else if (!strcmp(optarg, "pvh"))
                cfg->boot = BOOT_PREF_PVH;
            else
                return errf(err, errlen, -EINVAL, "--boot '%s' is not auto, linux or pvh", optarg);
            break;
        case 'c':
            break;
        case 'h':
            cli_usage(stdout);
            return 1;
        case ':':
            return errf(err, errlen, -EINVAL, "%s needs a value", argv[optind - 1]);
        default:
            return errf(err, errlen, -EINVAL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!ret && optind < argc)
        return errf(err, errlen, -EINVAL, "unexpected argument '%s'", argv[optind]);
    if (!ret && (cfg->restore_path || cfg->restore_mem)) {
        if (!cfg->restore_path || !cfg->restore_mem)
            return errf(err, errlen, -EINVAL, "--restore SNAPSHOT and --mem-file MEM go together");
        if (machine_opt)
            return errf(err, errlen, -EINVAL,
                        "--%s: a restored VM is the snapshot's machine (only --console and "
                        "--log-level go with --restore)",
                        machine_opt);
    }
    return ret;
}
