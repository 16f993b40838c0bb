/* api-socket routing and strict JSON bodies: method + path + body → typed request or fault. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../api-socket/api.h"

static struct api_request req;
static char err[API_ERR_MAX];

static int route(const char *method, const char *path, const char *body)
{
    err[0] = '\0';
    return api_route(method, path, body, body ? strlen(body) : 0, &req, err, sizeof(err));
}

/* The call fails with a fault message containing want. */
static void fails_with(const char *method, const char *path, const char *body, const char *want)
{
    int ret = route(method, path, body);
    if (ret != -EINVAL || !strstr(err, want))
        fail_msg("%s %s %s: ret %d, err \"%s\", wanted \"%s\"", method, path, body ? body : "", ret,
                 err, want);
}

static void gets(void **state)
{
    (void)state;
    assert_int_equal(route("GET", "/", NULL), 0);
    assert_int_equal(req.kind, API_REQ_INSTANCE_INFO);
    assert_int_equal(route("GET", "/version", NULL), 0);
    assert_int_equal(req.kind, API_REQ_VERSION);
    assert_int_equal(route("GET", "/vm/config", NULL), 0);
    assert_int_equal(req.kind, API_REQ_VM_CONFIG);
    assert_int_equal(route("GET", "/machine-config", NULL), 0);
    assert_int_equal(req.kind, API_REQ_GET_MACHINE);
    fails_with("GET", "/", "{}", "GET request cannot have a body.");
}

static void unknown_paths(void **state)
{
    (void)state;
    fails_with("GET", "/nope", NULL, "Invalid request method and/or path: GET /nope.");
    fails_with("POST", "/actions", "{}", "Invalid request method and/or path: POST /actions.");
    fails_with("GET", "/actions", NULL, "Invalid request method and/or path");
    fails_with("DELETE", "/drives/x", NULL, "Invalid request method and/or path");
    fails_with("PUT", "/machine-config/", "{}", "Invalid request method and/or path");
    fails_with("PUT", "/network-interfaces/eth0", "{\"iface_id\":\"eth0\"}",
               "missing field `host_dev_name`");
    fails_with("PUT", "/network-interfaces/eth0",
               "{\"iface_id\":\"eth0\",\"host_dev_name\":\"t\",\"guest_mac\":\"06:00:ac:10:00\"}",
               "invalid MAC address `06:00:ac:10:00`");
    fails_with(
            "PUT", "/network-interfaces/eth0",
            "{\"iface_id\":\"eth0\",\"host_dev_name\":\"t\",\"guest_mac\":\"06:00:ac:10:00:0g\"}",
            "invalid MAC address");
    fails_with("PUT", "/network-interfaces/eth0", "{\"iface_id\":\"eth1\",\"host_dev_name\":\"t\"}",
               "does not match the id from the body");
    fails_with("PATCH", "/network-interfaces/eth0",
               "{\"iface_id\":\"eth0\",\"host_dev_name\":\"t\"}", "unknown field `host_dev_name`");
    fails_with("PUT", "/network-interfaces/eth0",
               "{\"iface_id\":\"eth0\",\"host_dev_name\":\"t\",\"mtu\":1500}",
               "unknown field `mtu`");
    fails_with("PUT", "/vsock", "{}", "missing field `guest_cid`");
    fails_with("PUT", "/vsock", "{\"guest_cid\":3}", "missing field `uds_path`");
    fails_with("PUT", "/vsock", "{\"guest_cid\":3,\"uds_path\":\"/v\",\"x\":1}",
               "unknown field `x`");
    fails_with("PUT", "/vsock", "{\"guest_cid\":4294967296,\"uds_path\":\"/v\"}", "out of range");
    fails_with("PUT", "/vsock", "{\"guest_cid\":-1,\"uds_path\":\"/v\"}", "non-negative");
    fails_with("GET", "/vsock", NULL, "Invalid request method and/or path");
    /* the snapshot bodies: Firecracker's fields, exactly one memory backend */
    fails_with("PUT", "/snapshot/create", "{}", "missing field `snapshot_path`");
    fails_with("PUT", "/snapshot/create", "{\"snapshot_path\":\"s\"}",
               "missing field `mem_file_path`");
    fails_with("PUT", "/snapshot/create",
               "{\"snapshot_path\":\"s\",\"mem_file_path\":\"m\",\"snapshot_type\":\"Half\"}",
               "unknown variant `Half`");
    fails_with("PUT", "/snapshot/load", "{\"snapshot_path\":\"s\"}",
               "either `mem_backend` or `mem_file_path`");
    fails_with("PUT", "/snapshot/load",
               "{\"snapshot_path\":\"s\",\"mem_file_path\":\"m\",\"mem_backend\":{"
               "\"backend_type\":\"File\",\"backend_path\":\"m\"}}",
               "too many fields");
    fails_with("PUT", "/snapshot/load",
               "{\"snapshot_path\":\"s\",\"mem_backend\":{\"backend_type\":\"Disk\","
               "\"backend_path\":\"m\"}}",
               "unknown variant `Disk`");
    /* a working set is the File backend's: refused before a handler gets the memory */
    fails_with("PUT", "/snapshot/load",
               "{\"snapshot_path\":\"s\",\"mem_backend\":{\"backend_type\":\"Uffd\","
               "\"backend_path\":\"h\",\"working_set\":\"w\"}}",
               "`mem_backend.working_set` goes with the File backend only");
    fails_with("PUT", "/snapshot/load",
               "{\"snapshot_path\":\"s\",\"mem_backend\":{\"backend_type\":\"Uffd\","
               "\"backend_path\":\"h\",\"record_working_set\":{\"path\":\"w\"}}}",
               "`mem_backend.record_working_set` goes with the File backend only");
    fails_with("PUT", "/snapshot/load",
               "{\"snapshot_path\":\"s\",\"mem_file_path\":\"m\",\"network_overrides\":[{"
               "\"iface_id\":\"eth0\"}]}",
               "missing field `host_dev_name`");
    fails_with("PUT", "/snapshot/load",
               "{\"snapshot_path\":\"s\",\"mem_file_path\":\"m\",\"huge_pages\":\"2M\"}",
               "not supported by this build");
    fails_with("GET", "/mmds", NULL, "not supported by this build");
    fails_with("PUT", "/balloon", "{}", "not supported by this build");
    fails_with("PUT", "/entropy", "{}", "not supported by this build");
    fails_with("GET", "/vsockets", NULL, "Invalid request method and/or path");
}

static void empty_and_bad_json(void **state)
{
    (void)state;
    fails_with("PUT", "/boot-source", NULL, "Empty PUT request.");
    fails_with("PATCH", "/vm", "", "Empty PATCH request.");
    fails_with("PUT", "/boot-source", "{", "An error occurred when deserializing the json");
    fails_with("PUT", "/boot-source", "[]", "expected a JSON object");
    fails_with("PUT", "/boot-source", "{\"kernel_image_path\":\"a\"} x", "deserializing");
    fails_with("PUT", "/boot-source", "{\"kernel_image_path\":\"a\",\"kernel_image_path\":\"b\"}",
               "duplicate");
    fails_with("PUT", "/boot-source", "{\"kernel_image_path\":\"a\\u0000b\"}", "deserializing");
}

static void boot_source(void **state)
{
    (void)state;
    assert_int_equal(route("PUT", "/boot-source",
                           "{\"kernel_image_path\":\"/k\",\"boot_args\":\"console=ttyS0\","
                           "\"initrd_path\":\"/i\"}"),
                     0);
    assert_int_equal(req.kind, API_REQ_BOOT_SOURCE);
    assert_string_equal(req.u.boot.kernel_image_path, "/k");
    assert_string_equal(req.u.boot.initrd_path, "/i");
    assert_true(req.u.boot.has_boot_args);
    assert_string_equal(req.u.boot.boot_args, "console=ttyS0");
    assert_int_equal(route("PUT", "/boot-source", "{\"kernel_image_path\":\"/k\"}"), 0);
    assert_false(req.u.boot.has_boot_args);
    assert_int_equal(
            route("PUT", "/boot-source", "{\"kernel_image_path\":\"/k\",\"initrd_path\":null}"), 0);
    fails_with("PUT", "/boot-source", "{}", "missing field `kernel_image_path`");
    fails_with("PUT", "/boot-source", "{\"kernel_image_path\":1}",
               "invalid type for `kernel_image_path`");
    fails_with("PUT", "/boot-source", "{\"kernel_image_path\":\"k\",\"foo\":1}",
               "unknown field `foo`, expected one of `kernel_image_path`");
    char big[3000] = "{\"kernel_image_path\":\"k\",\"boot_args\":\"";
    memset(big + strlen(big), 'a', 2100);
    strcpy(big + strlen(big), "\"}");
    fails_with("PUT", "/boot-source", big, "the limit is 2047");
}

static void machine_config(void **state)
{
    (void)state;
    assert_int_equal(route("PUT", "/machine-config",
                           "{\"vcpu_count\":2,\"mem_size_mib\":256,\"smt\":false,"
                           "\"track_dirty_pages\":true,\"huge_pages\":\"None\"}"),
                     0);
    assert_int_equal(req.kind, API_REQ_PUT_MACHINE);
    assert_int_equal(req.u.machine.vcpu_count, 2);
    assert_int_equal(req.u.machine.mem_size_mib, 256);
    assert_true(req.u.machine.track_dirty_pages);
    assert_int_equal(route("PATCH", "/machine-config", "{\"mem_size_mib\":512}"), 0);
    assert_true(req.u.machine.has_mem);
    assert_false(req.u.machine.has_vcpus);
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":2}", "missing field `mem_size_mib`");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":\"2\",\"mem_size_mib\":1}",
               "invalid type for `vcpu_count`");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":-1,\"mem_size_mib\":1}",
               "non-negative integer");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":1.5,\"mem_size_mib\":1}", "invalid type");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":33,\"mem_size_mib\":1}", "out of range");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":0,\"mem_size_mib\":1}", "at least 1");
    fails_with("PUT", "/machine-config",
               "{\"vcpu_count\":1,\"mem_size_mib\":1,\"huge_pages\":\"1G\"}",
               "unknown variant `1G` for `huge_pages`");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":1,\"smt\":1}",
               "expected a boolean");
    fails_with("PATCH", "/machine-config", "{}", "empty machine configuration update");
    fails_with("PUT", "/machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":99999999999999999999}",
               "deserializing");
}

static void drives(void **state)
{
    (void)state;
    assert_int_equal(route("PUT", "/drives/rootfs",
                           "{\"drive_id\":\"rootfs\",\"path_on_host\":\"/r\",\"is_root_device\":"
                           "true,\"is_read_only\":false,\"cache_type\":\"Writeback\","
                           "\"rate_limiter\":{\"bandwidth\":{\"size\":1,\"refill_time\":2}}}"),
                     0);
    assert_int_equal(req.kind, API_REQ_PUT_DRIVE);
    assert_string_equal(req.u.drive.drive_id, "rootfs");
    assert_true(req.u.drive.is_root_device);
    assert_int_equal(req.u.drive.cache_type, API_CACHE_WRITEBACK);
    assert_true(req.u.drive.rate_limiter.bandwidth.set);
    assert_int_equal(req.u.drive.rate_limiter.bandwidth.refill_time, 2);
    fails_with("PUT", "/drives/other",
               "{\"drive_id\":\"rootfs\",\"path_on_host\":\"/r\",\"is_root_device\":true,"
               "\"is_read_only\":false}",
               "The id from the path does not match the id from the body!");
    fails_with("PUT", "/drives/bad-id", "{}", "API Resource IDs can only contain");
    fails_with("PUT", "/drives/", "{}", "API Resource IDs can only contain");
    fails_with("PUT", "/drives/a/b", "{}", "API Resource IDs can only contain");
    fails_with("PUT", "/drives/r",
               "{\"drive_id\":\"r\",\"path_on_host\":\"/r\",\"is_root_device\":true}",
               "missing field `is_read_only`");
    fails_with("PUT", "/drives/r",
               "{\"drive_id\":\"r\",\"path_on_host\":\"/r\",\"is_root_device\":true,"
               "\"is_read_only\":true,\"rate_limiter\":{\"bandwidth\":{\"size\":1}}}",
               "missing field `refill_time`");
    fails_with("PUT", "/drives/r",
               "{\"drive_id\":\"r\",\"path_on_host\":\"/r\",\"is_root_device\":true,"
               "\"is_read_only\":true,\"socket\":\"/s\"}",
               "vhost-user");
    assert_int_equal(route("PATCH", "/drives/r", "{\"drive_id\":\"r\",\"path_on_host\":\"/x\"}"),
                     0);
    assert_int_equal(req.kind, API_REQ_PATCH_DRIVE);
    fails_with("PATCH", "/drives/r", "{\"drive_id\":\"r\",\"is_read_only\":true}",
               "unknown field `is_read_only`");
}

static void actions_vm_logger_metrics_serial(void **state)
{
    (void)state;
    assert_int_equal(route("PUT", "/actions", "{\"action_type\":\"InstanceStart\"}"), 0);
    assert_int_equal(req.u.action, API_ACTION_INSTANCE_START);
    assert_int_equal(route("PUT", "/actions", "{\"action_type\":\"SendCtrlAltDel\"}"), 0);
    assert_int_equal(req.u.action, API_ACTION_CTRL_ALT_DEL);
    assert_int_equal(route("PUT", "/actions", "{\"action_type\":\"FlushMetrics\"}"), 0);
    assert_int_equal(req.u.action, API_ACTION_FLUSH_METRICS);
    assert_int_equal(route("PUT", "/actions", "{\"action_type\":\"WriteWorkingSet\"}"), 0);
    assert_int_equal(req.u.action, API_ACTION_WRITE_WORKING_SET);
    fails_with("PUT", "/actions", "{\"action_type\":\"Reboot\"}", "unknown variant `Reboot`");
    fails_with("PUT", "/actions", "{}", "missing field `action_type`");
    assert_int_equal(route("PATCH", "/vm", "{\"state\":\"Paused\"}"), 0);
    assert_true(req.u.pause);
    assert_int_equal(route("PATCH", "/vm", "{\"state\":\"Resumed\"}"), 0);
    assert_false(req.u.pause);
    fails_with("PATCH", "/vm", "{\"state\":\"paused\"}", "unknown variant");
    fails_with("PUT", "/vm", "{\"state\":\"Paused\"}", "Invalid request method");
    assert_int_equal(route("PUT", "/logger",
                           "{\"log_path\":\"/l\",\"level\":\"debug\",\"show_level\":true}"),
                     0);
    assert_int_equal(req.u.logger.level, API_LOG_DEBUG);
    assert_true(req.u.logger.show_level);
    assert_int_equal(route("PUT", "/logger", "{\"level\":\"Warn\"}"), 0);
    assert_int_equal(req.u.logger.level, API_LOG_WARN);
    fails_with("PUT", "/logger", "{\"level\":\"loud\"}", "`level` must be one of");
    assert_int_equal(
            route("PUT", "/metrics",
                  "{\"metrics_path\":\"/m\",\"emit_id\":true,\"properties\":{\"a\":\"b\"}}"),
            0);
    assert_true(req.u.metrics.emit_id);
    assert_string_equal(req.u.metrics.properties, "{\"a\":\"b\"}");
    fails_with("PUT", "/metrics", "{\"metrics_path\":\"/m\",\"properties\":{\"a\":1}}",
               "properties.a");
    assert_int_equal(route("PUT", "/serial", "{\"serial_out_path\":\"/s\"}"), 0);
    assert_string_equal(req.u.serial.serial_out_path, "/s");
}

static void snapshots(void **state)
{
    struct api_request r;
    (void)state;

    const char *create = "{\"snapshot_type\":\"Full\",\"snapshot_path\":\"./s\","
                         "\"mem_file_path\":\"./m\"}";
    assert_int_equal(
            api_route("PUT", "/snapshot/create", create, strlen(create), &r, err, sizeof(err)), 0);
    assert_int_equal(r.kind, API_REQ_SNAP_CREATE);
    assert_string_equal(r.u.snap_create.snapshot_path, "./s");
    assert_string_equal(r.u.snap_create.mem_file_path, "./m");
    assert_false(r.u.snap_create.diff);

    const char *load = "{\"snapshot_path\":\"s\",\"mem_backend\":{\"backend_type\":\"File\","
                       "\"backend_path\":\"m\"},\"resume_vm\":true,\"enable_diff_snapshots\":"
                       "true,\"network_overrides\":[{\"iface_id\":\"eth0\",\"host_dev_name\":"
                       "\"tap7\"}]}";
    assert_int_equal(api_route("PUT", "/snapshot/load", load, strlen(load), &r, err, sizeof(err)),
                     0);
    assert_int_equal(r.kind, API_REQ_SNAP_LOAD);
    assert_string_equal(r.u.snap_load.mem_path, "m");
    assert_true(r.u.snap_load.resume_vm);
    assert_true(r.u.snap_load.track_dirty_pages); /* the deprecated alias */
    assert_false(r.u.snap_load.uffd);
    assert_int_equal(r.u.snap_load.noverrides, 1);
    assert_string_equal(r.u.snap_load.overrides[0].host_dev_name, "tap7");

    const char *old = "{\"snapshot_path\":\"s\",\"mem_file_path\":\"m2\"}";
    assert_int_equal(api_route("PUT", "/snapshot/load", old, strlen(old), &r, err, sizeof(err)), 0);
    assert_string_equal(r.u.snap_load.mem_path, "m2");
    assert_false(r.u.snap_load.resume_vm);
}

static void ids(void **state)
{
    (void)state;
    assert_true(api_id_valid("a_B9"));
    assert_false(api_id_valid(""));
    assert_false(api_id_valid("a-b"));
    assert_false(api_id_valid("a.b"));
    char long_id[API_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_false(api_id_valid(long_id));
    long_id[API_ID_MAX] = '\0';
    assert_true(api_id_valid(long_id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(gets),
            cmocka_unit_test(unknown_paths),
            cmocka_unit_test(empty_and_bad_json),
            cmocka_unit_test(boot_source),
            cmocka_unit_test(machine_config),
            cmocka_unit_test(drives),
            cmocka_unit_test(actions_vm_logger_metrics_serial),
            cmocka_unit_test(ids),
            cmocka_unit_test(snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
