/* api-socket controller: phase rules, resources checked at PUT time, GET bodies, and the
 * --config-file path through the same controller. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../api-socket/api.h"

static int starts, pauses, cads, flushes, loggers, metrics_calls, updates;
static int start_ret, update_ret;
static struct {
    char id[API_ID_MAX + 1];
    char path[128]; /* "" = unchanged */
    bool bw, ops;   /* bucket given */
} updated;
static struct api_ctl ctl;

static int op_start(void *o, const struct vm_config *cfg, char *err, size_t errlen)
{
    (void)o;
    assert_true(cfg == &ctl.cfg); /* the VM is built from the controller's configuration */
    starts++;
    if (start_ret)
        snprintf(err, errlen, "start failed");
    return start_ret;
}
static int op_pause(void *o, bool p, char *err, size_t errlen)
{
    (void)o, (void)p, (void)err, (void)errlen;
    pauses++;
    return 0;
}
static int op_cad(void *o, char *err, size_t errlen)
{
    (void)o, (void)err, (void)errlen;
    cads++;
    return 0;
}
static int op_flush(void *o, char *err, size_t errlen)
{
    (void)o, (void)err, (void)errlen;
    flushes++;
    return 0;
}
static int op_logger(void *o, const struct api_logger *l, char *err, size_t errlen)
{
    (void)o, (void)l, (void)err, (void)errlen;
    loggers++;
    return 0;
}
static int op_metrics(void *o, const struct api_metrics *m, char *err, size_t errlen)
{
    (void)o, (void)m, (void)err, (void)errlen;
    metrics_calls++;
    return 0;
}

static int op_update(void *o, const struct vm_drive *d, const char *path,
                     const struct vm_bucket *bw, const struct vm_bucket *bops, char *err,
                     size_t errlen)
{
    (void)o;
    updates++;
    snprintf(updated.id, sizeof(updated.id), "%s", d->id);
    snprintf(updated.path, sizeof(updated.path), "%s", path ? path : "");
    updated.bw = bw != NULL;
    updated.ops = bops != NULL;
    if (update_ret)
        snprintf(err, errlen, "the device said no");
    return update_ret;
}

/* The TAP check at PUT: "bad" is no TAP. */
static int net_checks, net_updates;
static struct vm_bucket net_rx_bw;
static int op_check_net(void *o, const struct vm_net *n, char *err, size_t errlen)
{
    (void)o;
    net_checks++;
    if (!strcmp(n->host_dev_name, "bad"))
        return errf(err, errlen, -ENODEV, "Open tap device failed: no interface %s.",
                    n->host_dev_name);
    return 0;
}
static int op_update_net(void *o, const struct vm_net *n, const struct vm_bucket *rx_bw,
                         const struct vm_bucket *rx_ops, const struct vm_bucket *tx_bw,
                         const struct vm_bucket *tx_ops, char *err, size_t errlen)
{
    (void)o, (void)n, (void)rx_ops, (void)tx_bw, (void)tx_ops, (void)err, (void)errlen;
    net_updates++;
    if (rx_bw)
        net_rx_bw = *rx_bw;
    return 0;
}

/* The bind check at PUT /vsock: a path with "bad" in it cannot be bound. */
static int vsock_checks;
static int op_check_vsock(void *o, const struct vm_vsock *vs, char *err, size_t errlen)
{
    (void)o;
    vsock_checks++;
    if (strstr(vs->uds_path, "bad"))
        return errf(err, errlen, -EADDRINUSE, "Cannot bind the vsock's Unix socket %s: in use",
                    vs->uds_path);
    return 0;
}

static const struct api_vmm_ops ops = {
        .start = op_start,
        .pause = op_pause,
        .ctrl_alt_del = op_cad,
        .flush_metrics = op_flush,
        .logger = op_logger,
        .metrics = op_metrics,
        .update_drive = op_update,
        .check_net = op_check_net,
        .check_vsock = op_check_vsock,
        .update_net = op_update_net,
};
static struct api_request req;
static struct api_response resp;
static char file[64];

static int setup(void **state)
{
    (void)state;
    ctl_init(&ctl, "vm0", "1.2.3", &ops, NULL);
    starts = pauses = cads = flushes = loggers = metrics_calls = start_ret = 0;
    updates = update_ret = 0;
    net_checks = net_updates = vsock_checks = 0;
    memset(&net_rx_bw, 0, sizeof(net_rx_bw));
    snprintf(file, sizeof(file), "/tmp/ember-test-api-ctl-%d", (int)getpid());
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(file);
    ctl_free(&ctl);
    api_response_free(&resp);
    return 0;
}

/* Routes and applies one request; Returns the HTTP status. */
static int call(const char *method, const char *path, const char *body)
{
    char err[API_ERR_MAX];
    api_response_free(&resp);
    if (api_route(method, path, body, body ? strlen(body) : 0, &req, err, sizeof(err))) {
        print_message("route: %s\n", err);
        return -1;
    }
    ctl_handle(&ctl, &req, &resp);
    return resp.status;
}

static void body_has(const char *want)
{
    if (!resp.body || !strstr(resp.body, want))
        fail_msg("body \"%s\" lacks \"%s\"", resp.body ? resp.body : "(none)", want);
}

static void gets_before_boot(void **state)
{
    (void)state;
    assert_int_equal(call("GET", "/", NULL), 200);
    body_has("\"state\":\"Not started\"");
    body_has("\"app_name\":\"Firecracker\"");
    body_has("\"id\":\"vm0\"");
    assert_int_equal(call("GET", "/version", NULL), 200);
    body_has("\"firecracker_version\":\"1.2.3\"");
    assert_int_equal(call("GET", "/machine-config", NULL), 200);
    body_has("\"vcpu_count\":1");
    body_has("\"mem_size_mib\":128");
    assert_int_equal(call("GET", "/vm/config", NULL), 200);
    body_has("\"machine-config\"");
}

static void machine_rules(void **state)
{
    (void)state;
    assert_int_equal(call("PUT", "/machine-config",
                          "{\"vcpu_count\":2,\"mem_size_mib\":256,\"track_dirty_pages\":true}"),
                     204);
    assert_null(resp.body);
    assert_int_equal(call("PATCH", "/machine-config", "{\"vcpu_count\":4}"), 204);
    assert_int_equal(call("GET", "/machine-config", NULL), 200);
    body_has("\"vcpu_count\":4");
    body_has("\"mem_size_mib\":256");
    body_has("\"track_dirty_pages\":true");
    /* PUT resets what it leaves out */
    assert_int_equal(call("PUT", "/machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":64}"), 204);
    assert_int_equal(call("GET", "/machine-config", NULL), 200);
    body_has("\"track_dirty_pages\":false");
    assert_int_equal(call("PUT", "/machine-config",
                          "{\"vcpu_count\":3,\"mem_size_mib\":64,"
                          "\"smt\":true}"),
                     400);
    body_has("The vCPU number can only be 1 or an even number when SMT is enabled.");
    /* SMT: 1 or an even count of vCPUs, as Firecracker on x86 */
    assert_int_equal(
            call("PUT", "/machine-config", "{\"vcpu_count\":2,\"mem_size_mib\":64,\"smt\":true}"),
            204);
    assert_int_equal(call("GET", "/machine-config", NULL), 200);
    body_has("\"smt\":true");
    assert_int_equal(call("PATCH", "/machine-config", "{\"vcpu_count\":1}"), 204);
    assert_int_equal(call("PATCH", "/machine-config", "{\"vcpu_count\":5}"), 400);
    body_has("when SMT is enabled");
    assert_int_equal(call("PATCH", "/machine-config", "{\"vcpu_count\":5,\"smt\":false}"), 204);
    assert_int_equal(call("PATCH", "/machine-config", "{\"smt\":true}"), 400);
    assert_int_equal(call("PATCH", "/machine-config", "{\"vcpu_count\":32,\"smt\":true}"), 204);
    assert_int_equal(call("PUT", "/machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":1}"), 400);
    body_has("memory size");
    assert_int_equal(call("PUT", "/machine-config",
                          "{\"vcpu_count\":1,\"mem_size_mib\":64,\"huge_pages\":\"2M\"}"),
                     400);
    /* a refused call leaves the configuration alone */
    assert_int_equal(call("GET", "/machine-config", NULL), 200);
    body_has("\"mem_size_mib\":64");
}

/* PUT /drives/d<n>: a non-root drive on the test file; Returns the HTTP status. */
static int put_plain_drive(int n, bool ro)
{
    char path[32], body[256];
    snprintf(path, sizeof(path), "/drives/d%d", n);
    snprintf(body, sizeof(body),
             "{\"drive_id\":\"d%d\",\"path_on_host\":\"%s\",\"is_root_device\":false,"
             "\"is_read_only\":%s}",
             n, file, ro ? "true" : "false");
    return call("PUT", path, body);
}

static void resources_opened_at_put(void **state)
{
    char body[256];
    (void)state;
    assert_int_equal(call("PUT", "/boot-source", "{\"kernel_image_path\":\"/nonexistent/k\"}"),
                     400);
    body_has("kernel file /nonexistent/k cannot be opened");
    assert_int_equal(call("PUT", "/boot-source", "{\"kernel_image_path\":\"/tmp\"}"), 400);
    body_has("not a regular file");
    snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\",\"initrd_path\":\"/no/i\"}", file);
    assert_int_equal(call("PUT", "/boot-source", body), 400);
    body_has("initrd file /no/i cannot be opened");
    assert_false(ctl.boot_set);
    snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\",\"boot_args\":\"a b\"}", file);
    assert_int_equal(call("PUT", "/boot-source", body), 204);
    assert_true(ctl.boot_set);
    assert_int_equal(call("PUT", "/drives/r",
                          "{\"drive_id\":\"r\",\"path_on_host\":\"/no/d\",\"is_root_device\":"
                          "true,\"is_read_only\":true}"),
                     400);
    body_has("block device file /no/d cannot be opened");
    snprintf(body, sizeof(body),
             "{\"drive_id\":\"r\",\"path_on_host\":\"%s\",\"is_root_device\":true,"
             "\"is_read_only\":false}",
             file);
    assert_int_equal(call("PUT", "/drives/r", body), 204);
    assert_int_equal(call("PUT", "/drives/r", body), 204); /* replace */
    assert_int_equal(ctl.cfg.ndrives, 1);
    snprintf(body, sizeof(body),
             "{\"drive_id\":\"s\",\"path_on_host\":\"%s\",\"is_root_device\":true,"
             "\"is_read_only\":true}",
             file);
    assert_int_equal(call("PUT", "/drives/s", body), 400);
    body_has("A root block device already exists!");
    assert_int_equal(call("GET", "/vm/config", NULL), 200);
    body_has("\"boot_args\":\"a b\"");
    body_has("\"drive_id\":\"r\"");
    /* one drive per free interrupt line (GSI 5..23): 19 in all, the 20th is refused */
    assert_int_equal(API_DRIVES_MAX, 19);
    for (int i = 1; i < API_DRIVES_MAX; i++)
        assert_int_equal(put_plain_drive(i, true), 204);
    assert_int_equal(ctl.cfg.ndrives, API_DRIVES_MAX);
    assert_int_equal(put_plain_drive(99, true), 400);
    body_has("Too many drives: at most 19");
    assert_int_equal(put_plain_drive(3, false), 204); /* replacing one is still allowed */
}

static void phases(void **state)
{
    char body[256];
    (void)state;
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 400);
    body_has("without kernel configuration");
    assert_int_equal(call("PATCH", "/vm", "{\"state\":\"Paused\"}"), 400);
    body_has("not supported before starting");
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"FlushMetrics\"}"), 400);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"SendCtrlAltDel\"}"), 400);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"WriteWorkingSet\"}"), 400);
    body_has("not supported before starting");
    assert_int_equal(call("PATCH", "/drives/r", "{\"drive_id\":\"r\"}"), 400);
    body_has("before starting");
    assert_int_equal(call("PUT", "/logger", "{\"level\":\"Info\"}"), 204);
    assert_int_equal(call("PUT", "/metrics", "{\"metrics_path\":\"/m\"}"), 204);
    assert_int_equal(loggers, 1);
    assert_int_equal(metrics_calls, 1);
    snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\"}", file);
    assert_int_equal(call("PUT", "/boot-source", body), 204);
    start_ret = -EIO;
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 400);
    body_has("start failed");
    assert_int_equal(ctl.state, API_VM_NOT_STARTED);
    start_ret = 0;
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 204);
    assert_int_equal(starts, 2);
    assert_int_equal(call("GET", "/", NULL), 200);
    body_has("\"state\":\"Running\"");
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 400);
    body_has("not supported after starting");
    assert_int_equal(call("PUT", "/boot-source", body), 400);
    assert_int_equal(call("PUT", "/machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":64}"), 400);
    assert_int_equal(call("PUT", "/logger", "{\"level\":\"Info\"}"), 400);
    assert_int_equal(call("PUT", "/serial", "{\"serial_out_path\":\"/s\"}"), 400);
    assert_int_equal(call("PATCH", "/vm", "{\"state\":\"Paused\"}"), 204);
    assert_int_equal(call("GET", "/", NULL), 200);
    body_has("\"state\":\"Paused\"");
    assert_int_equal(call("PATCH", "/vm", "{\"state\":\"Resumed\"}"), 204);
    assert_int_equal(pauses, 2);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"SendCtrlAltDel\"}"), 204);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"FlushMetrics\"}"), 204);
    assert_int_equal(cads, 1);
    assert_int_equal(flushes, 1);
    /* this controller's VMM records no working set (the op is NULL) */
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"WriteWorkingSet\"}"), 400);
    body_has("No working set is being recorded");
}

static void patch_drive_after_boot(void **state)
{
    static struct api_metrics_counters counters;
    char body[512];
    (void)state;
    ctl.counters = &counters;
    snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\"}", file);
    assert_int_equal(call("PUT", "/boot-source", body), 204);
    snprintf(body, sizeof(body),
             "{\"drive_id\":\"d\",\"path_on_host\":\"%s\",\"is_root_device\":false,"
             "\"is_read_only\":true}",
             file);
    assert_int_equal(call("PUT", "/drives/d", body), 204);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 204);

    assert_int_equal(call("PATCH", "/drives/d", "{\"drive_id\":\"d\"}"), 400);
    body_has("at least one property to patch: path_on_host, rate_limiter");
    assert_int_equal(call("PATCH", "/drives/x", "{\"drive_id\":\"x\",\"path_on_host\":\"/\"}"),
                     400);
    body_has("Invalid block device ID");
    assert_int_equal(call("PATCH", "/drives/d", "{\"drive_id\":\"d\",\"path_on_host\":\"/no/f\"}"),
                     400);
    body_has("block device file /no/f cannot be opened");
    assert_int_equal(updates, 0); /* none of these reached the VMM */

    /* a rate limiter alone: only the bucket named changes */
    assert_int_equal(call("PATCH", "/drives/d",
                          "{\"drive_id\":\"d\",\"rate_limiter\":{\"ops\":{\"size\":10,"
                          "\"refill_time\":100}}}"),
                     204);
    assert_int_equal(updates, 1);
    assert_string_equal(updated.path, "");
    assert_true(updated.ops && !updated.bw);
    assert_int_equal(ctl.cfg.drives[0].ops.size, 10);

    /* a new file: checked, handed over, and the configuration follows */
    snprintf(body, sizeof(body), "{\"drive_id\":\"d\",\"path_on_host\":\"%s2\"}", file);
    assert_int_equal(call("PATCH", "/drives/d", body), 400); /* does not exist yet */
    char other[80];
    snprintf(other, sizeof(other), "%s2", file);
    FILE *f = fopen(other, "w");
    assert_non_null(f);
    fclose(f);
    update_ret = -EINVAL;
    assert_int_equal(call("PATCH", "/drives/d", body), 400);
    body_has("the device said no");
    assert_string_equal(ctl.cfg.drives[0].path, file);
    update_ret = 0;
    assert_int_equal(call("PATCH", "/drives/d", body), 204);
    assert_string_equal(updated.path, other);
    assert_string_equal(ctl.cfg.drives[0].path, other);
    assert_int_equal(ctl.cfg.drives[0].ops.size, 10);
    unlink(other);
    /* block.update_*: the updates that reached the device */
    assert_int_equal(atomic_load(&counters.v[M_BLOCK_UPDATE]), 2);
    assert_int_equal(atomic_load(&counters.v[M_BLOCK_UPDATE_FAILS]), 1);
    assert_int_equal(atomic_load(&counters.v[M_PATCH_DRIVE]), 7);
}

/* PUT /vsock: CIDs 0-2 refused before the bind check, the bind check's reason, a second PUT
 * replaces, the device counted against the 19 lines; GET /vm/config; refused after boot. */
static void vsock_device(void **state)
{
    char body[256];
    (void)state;
    for (int cid = 0; cid < 3; cid++) {
        snprintf(body, sizeof(body), "{\"guest_cid\":%d,\"uds_path\":\"/v\"}", cid);
        assert_int_equal(call("PUT", "/vsock", body), 400);
        body_has("Invalid guest CID");
    }
    assert_int_equal(vsock_checks, 0);
    assert_int_equal(call("PUT", "/vsock", "{\"guest_cid\":3,\"uds_path\":\"/bad\"}"), 400);
    body_has("Cannot bind the vsock's Unix socket /bad");
    assert_false(ctl.cfg.vsock.enabled);
    assert_int_equal(
            call("PUT", "/vsock", "{\"vsock_id\":\"v\",\"guest_cid\":3,\"uds_path\":\"/v\"}"), 204);
    assert_int_equal(call("PUT", "/vsock", "{\"guest_cid\":9,\"uds_path\":\"/w\"}"), 204);
    assert_int_equal(vsock_checks, 3);
    assert_int_equal(ctl.cfg.vsock.guest_cid, 9);
    assert_string_equal(ctl.cfg.vsock.uds_path, "/w");
    assert_int_equal(call("GET", "/vm/config", NULL), 200);
    body_has("\"vsock\":{\"guest_cid\":9,\"uds_path\":\"/w\"}");
    /* it takes one of the 19 interrupt lines */
    for (int i = 1; i < API_DRIVES_MAX; i++)
        assert_int_equal(put_plain_drive(i, true), 204);
    assert_int_equal(put_plain_drive(98, true), 400);
    body_has("Too many drives");
    snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\"}", file);
    assert_int_equal(call("PUT", "/boot-source", body), 204);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 204);
    assert_int_equal(call("PUT", "/vsock", "{\"guest_cid\":3,\"uds_path\":\"/v\"}"), 400);
    body_has("not supported after starting");
}

static int put_net(const char *id, const char *tap, const char *mac)
{
    char path[96], body[256];
    snprintf(path, sizeof(path), "/network-interfaces/%s", id);
    int n = snprintf(body, sizeof(body), "{\"iface_id\":\"%s\",\"host_dev_name\":\"%s\"", id, tap);
    if (mac)
        n += snprintf(body + n, sizeof(body) - (size_t)n, ",\"guest_mac\":\"%s\"", mac);
    snprintf(body + n, sizeof(body) - (size_t)n, "}");
    return call("PUT", path, body);
}

/* PUT /network-interfaces: the TAP checked at PUT, MAC and TAP unique, an id replaces, the
 * device limit shared with drives; PATCH only after boot, reaching the device; GET /vm/config
 * and --config-file carry them. */
static void network_interfaces(void **state)
{
    char body[512], err[API_ERR_MAX];
    (void)state;
    assert_int_equal(put_net("eth0", "tap0", "06:00:AC:10:00:02"), 204);
    assert_int_equal(net_checks, 1);
    assert_int_equal(put_net("eth0", "tap0", "06:00:ac:10:00:03"), 204); /* replaces */
    assert_int_equal(ctl.cfg.nnets, 1);
    assert_int_equal(ctl.cfg.nets[0].mac[5], 3);
    assert_int_equal(put_net("eth1", "tap1", "06:00:ac:10:00:03"), 400);
    body_has("The MAC address is already in use: 06:00:ac:10:00:03");
    assert_int_equal(put_net("eth1", "tap0", NULL), 400);
    body_has("The host device name is already in use: tap0");
    assert_int_equal(put_net("eth1", "bad", NULL), 400);
    body_has("Open tap device failed");
    assert_int_equal(put_net("eth1", "tap/1", NULL), 400);
    body_has("Invalid host device name");
    assert_int_equal(put_net("eth1", "a_name_too_long_for_ifnamsiz", NULL), 400);
    body_has("Invalid host device name");
    assert_int_equal(ctl.cfg.nnets, 1);
    assert_int_equal(call("PATCH", "/network-interfaces/eth0", "{\"iface_id\":\"eth0\"}"), 400);
    body_has("before starting");
    assert_int_equal(call("GET", "/vm/config", NULL), 200);
    body_has("\"network-interfaces\":[{\"iface_id\":\"eth0\",\"host_dev_name\":\"tap0\","
             "\"guest_mac\":\"06:00:ac:10:00:03\"}]");
    /* drives and nets share the 19 interrupt lines */
    for (int i = 1; i < API_DRIVES_MAX; i++)
        assert_int_equal(put_plain_drive(i, true), 204);
    assert_int_equal(put_net("eth2", "tap2", NULL), 400);
    body_has("Too many network interfaces: at most 19 devices");
    assert_int_equal(put_plain_drive(99, true), 400);
    body_has("Too many drives");
    /* after boot: PUT refused, PATCH of a limiter reaches the device and the configuration */
    snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\"}", file);
    assert_int_equal(call("PUT", "/boot-source", body), 204);
    assert_int_equal(call("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 204);
    assert_int_equal(put_net("eth0", "tap0", NULL), 400);
    body_has("not supported after starting");
    assert_int_equal(call("PATCH", "/network-interfaces/eth9", "{\"iface_id\":\"eth9\"}"), 400);
    body_has("Invalid network interface ID");
    assert_int_equal(call("PATCH", "/network-interfaces/eth0",
                          "{\"iface_id\":\"eth0\",\"rx_rate_limiter\":{\"bandwidth\":{\"size\":"
                          "1000,\"refill_time\":100}}}"),
                     204);
    assert_int_equal(net_updates, 1);
    assert_int_equal(net_rx_bw.size, 1000);
    assert_int_equal(ctl.cfg.nets[0].rx_bw.refill_time_ms, 100);
    assert_int_equal(call("GET", "/vm/config", NULL), 200);
    body_has("\"rx_rate_limiter\":{\"bandwidth\":{\"size\":1000,\"one_time_burst\":0,"
             "\"refill_time\":100}}");

    ctl_init(&ctl, "vm0", "1", &ops, NULL);
    snprintf(
            body, sizeof(body),
            "{\"boot-source\":{\"kernel_image_path\":\"%s\"},\"network-interfaces\":["
            "{\"iface_id\":\"a\",\"host_dev_name\":\"tap0\"},"
            "{\"iface_id\":\"b\",\"host_dev_name\":\"tap1\",\"guest_mac\":\"02:00:00:00:00:01\"}]}",
            file);
    assert_int_equal(ctl_config_file(&ctl, body, strlen(body), err, sizeof(err)), 0);
    assert_int_equal(ctl.cfg.nnets, 2);
    assert_true(ctl.cfg.nets[1].has_mac);
    ctl_init(&ctl, "vm0", "1", &ops, NULL);
    snprintf(body, sizeof(body),
             "{\"boot-source\":{\"kernel_image_path\":\"%s\"},\"network-interfaces\":["
             "{\"iface_id\":\"a\",\"host_dev_name\":\"bad\"}]}",
             file);
    assert_int_not_equal(ctl_config_file(&ctl, body, strlen(body), err, sizeof(err)), 0);
    if (!strstr(err, "network-interfaces: Open tap device failed"))
        fail_msg("\"%s\"", err);
}

static void config_file(void **state)
{
    char text[1024], err[API_ERR_MAX];
    (void)state;
    snprintf(text, sizeof(text),
             "{\"boot-source\":{\"kernel_image_path\":\"%s\",\"boot_args\":\"x\"},"
             "\"drives\":[{\"drive_id\":\"rootfs\",\"path_on_host\":\"%s\","
             "\"is_root_device\":true,\"is_read_only\":true}],"
             "\"machine-config\":{\"vcpu_count\":2,\"mem_size_mib\":64},"
             "\"network-interfaces\":[]}",
             file, file);
    assert_int_equal(ctl_config_file(&ctl, text, strlen(text), err, sizeof(err)), 0);
    assert_true(ctl.boot_set);
    assert_int_equal(ctl.cfg.vcpus, 2);
    assert_int_equal(ctl.cfg.ndrives, 1);

    ctl_init(&ctl, "vm0", "1", &ops, NULL);
    const char *bad[][2] = {
            {"{\"boot_source\":{}}", "unknown configuration section 'boot_source'"},
            {"{\"machine-config\":{\"vcpu_count\":2}}", "machine-config: "},
            {"{\"drives\":{}}", "must be an array"},
            {"{\"vsock\":{\"guest_cid\":2,\"uds_path\":\"/v\"}}", "vsock: Invalid guest CID 2"},
            {"{\"balloon\":{}}", "not supported"},
            {"[]", "must be a JSON object"},
            {"{", "invalid JSON"},
            {"{}", "'boot-source' is required"},
            {"{\"boot-source\":{\"kernel_image_path\":\"/no/k\"}}", "boot-source: The kernel"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_not_equal(ctl_config_file(&ctl, bad[i][0], strlen(bad[i][0]), err, sizeof(err)),
                             0);
        if (!strstr(err, bad[i][1]))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i][0], err, bad[i][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(gets_before_boot, setup, teardown),
            cmocka_unit_test_setup_teardown(machine_rules, setup, teardown),
            cmocka_unit_test_setup_teardown(resources_opened_at_put, setup, teardown),
            cmocka_unit_test_setup_teardown(phases, setup, teardown),
            cmocka_unit_test_setup_teardown(patch_drive_after_boot, setup, teardown),
            cmocka_unit_test_setup_teardown(config_file, setup, teardown),
            cmocka_unit_test_setup_teardown(network_interfaces, setup, teardown),
            cmocka_unit_test_setup_teardown(vsock_device, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
