"""firecracker-go-sdk's Machine.Start as firectl drives it (issue 20), replayed against ember.

Derived from (read, not copied):
  firecracker-microvm/firecracker-go-sdk @ 6fb280e993d4516ee6d5d20238572fe8752bc7ca
    handlers.go  defaultFcInitHandlerList: SetupNetwork, SetupKernelArgs, StartVMM,
                 CreateLogFiles (mkfifo metrics FIFO, then log FIFO), BootstrapLogging
                 (PUT /logger with show_level true / show_log_origin false, PUT /metrics),
                 CreateMachine (PUT /machine-config, then GET /machine-config),
                 CreateBootSource, AttachDrives, CreateNetworkInterfaces, AddVsocks,
                 ConfigMmds (skipped without an MMDS interface); then InstanceStart
    machine.go   `--api-sock S --id <uuid> --no-seccomp` (seccompArgs: Seccomp.Enabled false);
                 waitForSocket (stat, then GET /machine-config every 10 ms, 3 s);
                 Shutdown = SendCtrlAltDel; StopVMM = SIGTERM
    drives.go    DrivesBuilder.Build: additional drives first, the root drive last
    client/models/*.go  Go omitempty: smt, show_* are pointers (sent when false), cpu_template
                 a string (left out when empty), boot_args/initrd_path left out when empty
    client/operations  each call accepts exactly its documented status (204, or 200 for GETs)
  firecracker-microvm/firectl @ df2fb87a83a215876535b5d9a6471bbd9e57f023
    options.go   defaults: --ncpus 1, --memory 512, SMT on unless --disable-smt, log level
                 Debug, kernel opts "ro console=ttyS0 noapic reboot=k panic=1 pci=off
                 nomodules"; root drive id "1", --add-drive ids "2", "3", ...; with
                 --firecracker-log the log FIFO is read into that file and the metrics FIFO
                 is made too and never read
Not replayed (waiting for their issues, listed in api-socket/CLIENTS.md): --tap-device
(PUT /network-interfaces), --vsock-device (PUT /vsock), --metadata (PUT /mmds).
"""
import json
import os
import uuid

import pytest

from fc_clients import (GO_HEADERS, PROBE, TIMEOUT, Conn, Vmm, go_json, mkfifo,
                        swagger_version, thread_names, wait_go_socket)

FIRECTL_KERNEL_OPTS = "ro console=ttyS0 noapic reboot=k panic=1 pci=off nomodules"


class GoSdk:
    """The SDK's client: each operation accepts exactly one status, anything else is an error
    (a 2xx other than the documented one fails the generated reader too)."""

    def __init__(self, sock):
        self.c = Conn(sock, GO_HEADERS)

    def put(self, path, body, ok=204):
        r = self.c.request("PUT", path, go_json(body))
        assert r.status == ok, (path, r)
        assert r.body == "" if ok == 204 else True
        return r

    def patch(self, path, body, ok=204):
        r = self.c.request("PATCH", path, go_json(body))
        assert r.status == ok, (path, r)
        return r

    def get(self, path, ok=200):
        r = self.c.request("GET", path)
        assert r.status == ok, (path, r)
        assert r.headers["content-type"] == "application/json"
        return r.json()


def start_vmm(ember_bin, scratch, vmid):
    """StartVMM: the default command builder, then waitForSocket."""
    sock = scratch / "firecracker.sock"
    vmm = Vmm([ember_bin, "--api-sock", sock, "--id", vmid, "--no-seccomp"], scratch / "vmm.out")
    sdk = GoSdk(sock)
    wait_go_socket(vmm, sdk.c, sock)
    return vmm, sdk


def machine_start(sdk, scratch, kernel, kernel_opts, root, extra_drives=(), ncpus=1, mem=512,
                  smt=True):
    """firectl's Config through the SDK's FcInit handlers, up to (not including)
    InstanceStart. Returns (log FIFO reader fd, metrics FIFO path)."""
    # CreateLogFilesHandler: metrics FIFO, then log FIFO; FifoLogWriter copies the log FIFO
    metrics_fifo = mkfifo(scratch / "fc_metrics_fifo")
    log_fifo = mkfifo(scratch / "fc_fifo")
    reader = os.open(log_fifo, os.O_RDONLY | os.O_NONBLOCK)
    # BootstrapLoggingHandler
    sdk.put("/logger", {"level": "Debug", "log_path": str(log_fifo), "show_level": True,
                        "show_log_origin": False})
    sdk.put("/metrics", {"metrics_path": str(metrics_fifo)})  # nobody ever reads this one
    # CreateMachineHandler (field order of models.MachineConfiguration; cpu_template "")
    sdk.put("/machine-config", {"mem_size_mib": mem, "smt": smt, "vcpu_count": ncpus})
    cfg = sdk.get("/machine-config")  # refreshMachineConfiguration
    assert (cfg["vcpu_count"], cfg["mem_size_mib"], cfg["smt"]) == (ncpus, mem, smt), cfg
    # CreateBootSourceHandler (initrd_path "" left out)
    sdk.put("/boot-source", {"boot_args": kernel_opts, "kernel_image_path": str(kernel)})
    # AttachDrivesHandler: --add-drive ones first ("2", "3", ...), the root drive "1" last
    for i, (path, ro) in enumerate(extra_drives):
        sdk.put(f"/drives/{i + 2}", {"drive_id": str(i + 2), "is_read_only": ro,
                                     "is_root_device": False, "path_on_host": str(path)})
    sdk.put("/drives/1", {"drive_id": "1", "is_read_only": False, "is_root_device": True,
                          "path_on_host": str(root)})
    return reader, metrics_fifo


def read_fifo(fd):
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_firectl_sequence_with_the_probe_guest(ember_bin, scratch, tmp_path):
    # Pre-boot on this machine: the whole Machine.Start with the probe as kernel (it says
    # hello and resets through the i8042, so ember exits 0 right after InstanceStart).
    vmid = str(uuid.uuid4())
    root, extra = tmp_path / "root.img", tmp_path / "data.img"
    root.write_bytes(b"\0" * 65536)
    extra.write_bytes(b"\0" * 4096)
    vmm, sdk = start_vmm(ember_bin, scratch, vmid)
    try:
        reader, metrics_fifo = machine_start(sdk, scratch, PROBE, FIRECTL_KERNEL_OPTS, root,
                                             extra_drives=[(extra, True)])
        try:
            # the metrics FIFO had no reader at PUT time; open one now to see the boot flush
            mreader = os.open(metrics_fifo, os.O_RDONLY | os.O_NONBLOCK)
            cfg = sdk.get("/vm/config")
            assert [d["drive_id"] for d in cfg["drives"]] == ["2", "1"]
            assert cfg["machine-config"]["smt"] is True
            info = sdk.get("/")
            assert info["state"] == "Not started" and info["vmm_version"] == swagger_version()
            sdk.put("/actions", {"action_type": "InstanceStart"})
            assert vmm.wait(TIMEOUT) == 0, vmm.output()
            log = read_fifo(reader).decode(errors="replace")
            metrics = read_fifo(mreader).decode(errors="replace")
        finally:
            os.close(reader)
        assert f"[{vmid}:fc_api:DEBUG] The API server received a Put request" in log or \
            f"[{vmid}:fc_api:INFO] The API server received a Put request" in log, log[:2000]
        lines = [json.loads(x) for x in metrics.splitlines()]  # boot flush and exit flush
        puts = {k: sum(x["put_api_requests"][k] for x in lines) for k in lines[0]["put_api_requests"]}
        assert puts["drive_count"] == 2 and puts["actions_count"] == 1, puts
        assert "ember-probe: hello" in vmm.output()
    finally:
        vmm.kill()


def test_full_log_fifo_never_blocks_and_is_counted(ember_bin, scratch, tmp_path):
    # firectl without --firecracker-log reader: a log FIFO that fills up. Every request still
    # gets its answer at once; lost lines are counted in logger.missed_log_count.
    vmm, sdk = start_vmm(ember_bin, scratch, "full-fifo")
    try:
        log_fifo = mkfifo(scratch / "unread.fifo")
        metrics = tmp_path / "metrics.json"
        sdk.put("/logger", {"level": "Debug", "log_path": str(log_fifo), "show_level": True,
                            "show_log_origin": False})
        sdk.put("/metrics", {"metrics_path": str(metrics)})
        for _ in range(1500):  # ~100 bytes of log per request: far past a 64 KiB pipe
            sdk.get("/machine-config")
        sdk.put("/boot-source", {"boot_args": "i", "kernel_image_path": str(PROBE)})
        sdk.put("/actions", {"action_type": "InstanceStart"})
        sdk.put("/actions", {"action_type": "FlushMetrics"})
        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
        missed = sum(x["logger"]["missed_log_count"] for x in lines)
        assert missed > 0, lines[-1]["logger"]
        # Kata and the SDK find the threads by Firecracker's names
        names = thread_names(vmm.proc.pid)
        assert "fc_api" in names and "fc_vmm" in names and "fc_vcpu 0" in names, names
        sdk.put("/actions", {"action_type": "SendCtrlAltDel"})  # Machine.Shutdown
    finally:
        vmm.kill()


@pytest.mark.parametrize("target", ["fifo", "file"])
def test_sink_through_a_symlink_is_followed(ember_bin, scratch, target):
    # As Firecracker (a plain open): a symlink to a FIFO or a file is used.
    vmm, sdk = start_vmm(ember_bin, scratch, "symlink-ok")
    try:
        real = scratch / f"real.{target}"
        if target == "fifo":
            mkfifo(real)
        else:
            real.write_text("")
        link = scratch / "link"
        link.symlink_to(real)
        sdk.put("/metrics", {"metrics_path": str(link)})
    finally:
        vmm.kill()


@pytest.mark.parametrize("kind,message", [
    ("dangling", "a dangling symlink"),  # O_EXCL: never creates a file through it
    ("dir", "Is a directory"),
    ("device", "not a regular file or a FIFO"),
    ("socket", "No such device or address"),
])
def test_hostile_sink_paths_are_refused(ember_bin, scratch, tmp_path, kind, message):
    vmm, sdk = start_vmm(ember_bin, scratch, "symlink-bad")
    try:
        target = tmp_path / "created-through-the-link"
        path = scratch / "sink"
        if kind == "dangling":
            path.symlink_to(target)
        elif kind == "dir":
            path.mkdir()
        elif kind == "device":
            path.symlink_to("/dev/zero")
        else:
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(path))
            s.close()
        for route, key in (("/logger", "log_path"), ("/metrics", "metrics_path")):
            r = sdk.c.request("PUT", route, go_json({key: str(path)}))
            assert r.status == 400 and message in r.fault(), (route, r)
        assert not target.exists()
        # ember carries on and /dev/null is a valid sink
        sdk.put("/logger", {"log_path": "/dev/null"})
    finally:
        vmm.kill()


def test_smt_rules(ember_bin, scratch):
    # firectl --ncpus N with SMT on (its default): 1 or an even count, as Firecracker on x86.
    vmm, sdk = start_vmm(ember_bin, scratch, "smt-rules")
    try:
        for n in (1, 2, 32):
            sdk.put("/machine-config", {"mem_size_mib": 512, "smt": True, "vcpu_count": n})
        for n in (3, 31):
            r = sdk.c.request("PUT", "/machine-config",
                              go_json({"mem_size_mib": 512, "smt": True, "vcpu_count": n}))
            assert r.status == 400, r
            assert r.fault() == ("The vCPU number is invalid! The vCPU number can only be 1 or "
                                 "an even number when SMT is enabled."), r
        assert sdk.get("/machine-config")["vcpu_count"] == 32  # a refused PUT changes nothing
        sdk.put("/machine-config", {"mem_size_mib": 512, "smt": False, "vcpu_count": 3})
        r = sdk.c.request("PATCH", "/machine-config", go_json({"smt": True}))
        assert r.status == 400, r
    finally:
        vmm.kill()


@pytest.mark.kvm
def test_firectl_boot(ember_bin, scratch, guest_assets, tmp_path):
    # The boot part (test host): firectl --ncpus 2 (SMT on) with the rootfs as root drive and
    # an extra read-only drive; Linux reaches init, sees both drives and two CPUs, and the guest
    # reboots (ember exits 0). The kernel opts are firectl's default plus the i8042 options of
    # our guest kernel and the init's command (a firectl user passes them with --kernel-opts).
    import shutil
    rootfs, extra = tmp_path / "rootfs.ext4", tmp_path / "extra.img"
    shutil.copy(guest_assets["rootfs"], rootfs)
    extra.write_bytes(b"\0" * (1 << 20))
    cmd = "echo cpus=$(nproc) vdb=$(cat /sys/block/vdb/size); echo firectl-guest-ok"
    opts = f'{FIRECTL_KERNEL_OPTS} i8042.noaux i8042.nomux i8042.dumbkbd ember.cmd="{cmd}"'
    vmm, sdk = start_vmm(ember_bin, scratch, str(uuid.uuid4()))
    try:
        reader, _ = machine_start(sdk, scratch, guest_assets["vmlinux"], opts, rootfs,
                                  extra_drives=[(extra, True)], ncpus=2, mem=256)
        try:
            sdk.put("/actions", {"action_type": "InstanceStart"})
            assert sdk.get("/")["state"] == "Running"
            code = vmm.wait(TIMEOUT)
            log = read_fifo(reader).decode(errors="replace")
        finally:
            os.close(reader)
        text = vmm.output()
        assert code == 0, text[-4000:] + log[-2000:]
        assert "firectl-guest-ok" in text and "cpus=2 vdb=2048" in text, text[-4000:]
        assert "VFS: Mounted root (ext4 filesystem)" in text, text[-4000:]
    finally:
        vmm.kill()


@pytest.mark.kvm
def test_smt_topology_seen_by_linux(ember_bin, scratch, guest_assets, tmp_path):
    # machine-config smt: true with 2 vCPUs: the guest's CPU topology has one core with two
    # threads (CPUID leaf 0xB, or TOPOEXT's 0x8000001E on AMD).
    cmd = ("echo siblings=$(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list) "
           "cores=$(cat /sys/devices/system/cpu/cpu1/topology/core_id)")
    opts = (f"console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
            f'i8042.dumbkbd ember.cmd="{cmd}"')
    vmm, sdk = start_vmm(ember_bin, scratch, "smt-vm")
    try:
        sdk.put("/machine-config", {"mem_size_mib": 256, "smt": True, "vcpu_count": 2})
        sdk.put("/boot-source", {"boot_args": opts, "kernel_image_path":
                                 str(guest_assets["vmlinux"]),
                                 "initrd_path": str(guest_assets["initramfs"])})
        sdk.put("/actions", {"action_type": "InstanceStart"})
        code = vmm.wait(TIMEOUT)
        text = vmm.output()
        assert code == 0, text[-4000:]
        assert "siblings=0-1 cores=0" in text, text[-4000:]
    finally:
        vmm.kill()


def test_version_as_clients_read_it(ember_bin, scratch):
    # `firecracker --version`: "Firecracker v<API version> (ember <own version>)"; GET /version
    # and GET / carry the same API version (the swagger's info.version).
    import subprocess
    out = subprocess.run([str(ember_bin), "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    words = out.splitlines()[0].split(" ")
    assert words[0] == "Firecracker" and words[1] == "v" + swagger_version(), out
    assert words[2] == "(ember" and words[3].endswith(")"), out
    vmm, sdk = start_vmm(ember_bin, scratch, "version")
    try:
        assert sdk.get("/version") == {"firecracker_version": swagger_version()}
        assert sdk.get("/")["vmm_version"] == swagger_version()
    finally:
        vmm.kill()


def test_drives_past_the_limit_are_refused(ember_bin, scratch, tmp_path):
    # firectl --add-drive 18 times plus the root drive: 19, the machine's free interrupt lines
    # (GSI 5..23). One more is refused with 400 and changes nothing; replacing one still works.
    img = tmp_path / "d.img"
    img.write_bytes(b"\0" * 4096)
    vmm, sdk = start_vmm(ember_bin, scratch, "many-drives")
    try:
        for i in range(2, 20):
            sdk.put(f"/drives/{i}", {"drive_id": str(i), "is_read_only": True,
                                     "is_root_device": False, "path_on_host": str(img)})
        sdk.put("/drives/1", {"drive_id": "1", "is_read_only": False, "is_root_device": True,
                              "path_on_host": str(img)})
        r = sdk.c.request("PUT", "/drives/20", go_json({"drive_id": "20", "is_read_only": True,
                                                        "is_root_device": False,
                                                        "path_on_host": str(img)}))
        assert r.status == 400 and "Too many drives: at most 19" in r.fault(), r
        assert len(sdk.get("/vm/config")["drives"]) == 19
        sdk.put("/drives/7", {"drive_id": "7", "is_read_only": False, "is_root_device": False,
                              "path_on_host": str(img)})
    finally:
        vmm.kill()
