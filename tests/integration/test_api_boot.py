"""Booting Linux through the API socket, exactly as a Firecracker user would (curl), and
through --config-file. Needs a KVM that can boot Linux (run through tests/host/run); boots
are slow there, so each test checks several things in one boot."""
import json
import shutil
import subprocess
import time

import pytest

from api_client import Ember, fault
from ember_vm import BOOT_TIMEOUT, wait_for

pytestmark = pytest.mark.kvm

# The guest prints its uptime every second until it is told to stop.
TICKER = "while true; do cat /proc/uptime; sleep 1; done"
BASE_ARGS = "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd"


def curl(sock, method, path, body=None):
    """One request with curl, as in Firecracker's getting-started guide. Returns
    (status, body text)."""
    args = ["curl", "-sS", "--unix-socket", str(sock), "-X", method,
            "-w", "\n%{http_code}", f"http://localhost{path}"]
    if body is not None:
        args[1:1] = ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r
    text, _, code = r.stdout.rpartition("\n")
    return int(code), text


def expect(console, text, proc, timeout=BOOT_TIMEOUT):
    if not wait_for(console, text, proc, timeout):
        raise AssertionError(f"{text!r} never showed; console:\n"
                             + (console.read_text(errors="replace")[-3000:]
                                if console.exists() else "(none)"))


def uptimes(console):
    out = []
    for line in console.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append(float(parts[0]))
            except ValueError:
                pass
    return out


def ctrl_alt_del_ends(vm, log=None):
    """After SendCtrlAltDel the guest init reboots and ember exits 0."""
    code = vm.wait(BOOT_TIMEOUT / 4)
    assert code == 0, vm.output() + (log.read_text() if log and log.exists() else "")


def test_curl_boot_pause_resume_ctrl_alt_del(ember_bin, scratch, guest_assets, tmp_path):
    vm = Ember.start(ember_bin, scratch, "--id", "curl-vm", "--boot-timer")
    try:
        sock, console = vm.sock, tmp_path / "console.txt"
        log, metrics = tmp_path / "fc.log", tmp_path / "metrics.json"
        assert curl(sock, "PUT", "/logger", {"log_path": str(log), "level": "Info",
                                             "show_level": True,
                                             "show_log_origin": True})[0] == 204
        assert curl(sock, "PUT", "/metrics", {"metrics_path": str(metrics)})[0] == 204
        assert curl(sock, "PUT", "/boot-source", {
            "kernel_image_path": str(guest_assets["vmlinux"]),
            "initrd_path": str(guest_assets["initramfs"]),
            "boot_args": f'{BASE_ARGS} ember.cmd="{TICKER}"'})[0] == 204
        assert curl(sock, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256,
                                                     "smt": False})[0] == 204
        assert curl(sock, "PUT", "/serial", {"serial_out_path": str(console)})[0] == 204
        assert curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204

        code, body = curl(sock, "GET", "/")
        assert code == 200 and json.loads(body)["state"] == "Running"
        # post-boot rules
        code, body = curl(sock, "PUT", "/boot-source",
                          {"kernel_image_path": str(guest_assets["vmlinux"])})
        assert code == 400 and "after starting" in body
        code, body = curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
        assert code == 400 and "after starting" in body

        # the guest runs: its uptime advances
        deadline = time.monotonic() + BOOT_TIMEOUT
        while len(uptimes(console)) < 3 and time.monotonic() < deadline:
            assert vm.proc.poll() is None, vm.output()
            time.sleep(0.2)
        assert len(uptimes(console)) >= 3, console.read_text(errors="replace")[-3000:]

        # pause: no more output and the state says Paused; resume: output again
        assert curl(sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204
        assert json.loads(curl(sock, "GET", "/")[1])["state"] == "Paused"
        time.sleep(0.5)  # a line in flight at the pause may still land
        seen = len(uptimes(console))
        time.sleep(5)
        assert len(uptimes(console)) == seen, "the guest ran while paused"
        assert curl(sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204  # idempotent
        assert curl(sock, "PATCH", "/vm", {"state": "Resumed"})[0] == 204
        assert json.loads(curl(sock, "GET", "/")[1])["state"] == "Running"
        deadline = time.monotonic() + BOOT_TIMEOUT
        while len(uptimes(console)) <= seen + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        after = uptimes(console)
        assert len(after) > seen + 1, "the guest did not run again after Resumed"
        assert after[-1] > after[seen - 1]

        assert curl(sock, "PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
        # Ctrl-Alt-Del: the guest init reboots, and ember exits 0
        assert curl(sock, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0] == 204
        ctrl_alt_del_ends(vm, log)

        text = log.read_text()
        assert 'The API server received a Put request on "/actions" with body' in text, text
        assert "[curl-vm:fc_api:INFO:api-socket/http.c:" in text, text
        assert "ember exiting successfully. exit_code=0" in text, text
        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
        assert len(lines) >= 2  # at boot, FlushMetrics (and at exit)
        assert lines[0]["put_api_requests"]["boot_source_count"] == 1
        assert lines[0]["api_server"]["process_startup_time_us"] > 0
        # deltas: the second line counts only the refused post-boot PUT /boot-source
        assert lines[1]["put_api_requests"]["boot_source_count"] == 1
        assert lines[1]["put_api_requests"]["boot_source_fails"] == 1
        assert lines[0]["put_api_requests"]["boot_source_fails"] == 0
        assert sum(x["put_api_requests"]["actions_count"] for x in lines) >= 2
    finally:
        vm.close()


def test_config_file_boot_and_api_after_boot(ember_bin, scratch, guest_assets, tmp_path):
    # --no-api, booting from the ext4 root file system as a Firecracker config does: the guest
    # runs its command and reboots; ember exits 0 with no API call
    rootfs = tmp_path / "rootfs.ext4"
    shutil.copy(guest_assets["rootfs"], rootfs)
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(guest_assets["vmlinux"]),
                        "boot_args": f'{BASE_ARGS} ember.cmd="echo config-file-$((6*7)); '
                                     'cat /proc/cmdline"'},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "drives": [{"drive_id": "rootfs", "path_on_host": str(rootfs), "is_root_device": True,
                    "is_read_only": True}],
        "network-interfaces": [],
    }))
    r = subprocess.run([str(ember_bin), "--no-api", "--config-file", str(cfg)],
                       capture_output=True, text=True, timeout=BOOT_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r
    assert "config-file-42" in r.stdout, r.stdout[-3000:]
    assert "ember.exit=0" in r.stdout, r.stdout[-3000:]
    assert "root=/dev/vda ro" in r.stdout, r.stdout[-3000:]
    assert "VFS: Mounted root (ext4 filesystem) readonly" in r.stdout, r.stdout[-3000:]

    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(guest_assets["vmlinux"]),
                        "initrd_path": str(guest_assets["initramfs"]),
                        "boot_args": f'{BASE_ARGS} ember.cmd="{TICKER}"'},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
    }))

    # with the API: the VM is running at once; post-boot requests are served
    vm = Ember.start(ember_bin, scratch, "--config-file", cfg, wait=False)
    try:
        vm.wait_ready()
        info = vm.get("/").json()
        assert info["state"] == "Running"
        assert "after starting" in fault(vm.put("/machine-config", {"vcpu_count": 1,
                                                                   "mem_size_mib": 64}))
        assert vm.get("/vm/config").json()["machine-config"]["mem_size_mib"] == 128
        assert "not configured" in fault(vm.put("/actions", {"action_type": "FlushMetrics"}))
        # Ctrl-Alt-Del once the guest init runs (before, the keyboard driver would drop it)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not uptimes(vm.log_path) and time.monotonic() < deadline:
            assert vm.proc.poll() is None, vm.output()
            time.sleep(0.2)
        assert vm.put("/actions", {"action_type": "SendCtrlAltDel"}).status_code == 204
        ctrl_alt_del_ends(vm)
    finally:
        vm.close()


def test_curl_boot_from_rootfs_drive(ember_bin, scratch, guest_assets, tmp_path):
    # Firecracker's getting-started sequence, byte for byte what its shell users send:
    # boot-source, the rootfs as a drive, machine-config, InstanceStart. The guest runs from
    # /dev/vda, reports its root mount and reboots; ember exits 0 and its last metrics line
    # counts what the guest did through the devices.
    rootfs, metrics = tmp_path / "rootfs.ext4", tmp_path / "metrics.json"
    shutil.copy(guest_assets["rootfs"], rootfs)
    vm = Ember.start(ember_bin, scratch, "--id", "fc-rootfs", "--metrics-path", metrics)
    try:
        sock = vm.sock
        cmd = "grep ' / ' /proc/mounts; echo rootfs-guest-ok"
        assert curl(sock, "PUT", "/boot-source", {
            "kernel_image_path": str(guest_assets["vmlinux"]),
            "boot_args": f'{BASE_ARGS} ember.cmd="{cmd}"'}) == (204, "")
        assert curl(sock, "PUT", "/drives/rootfs", {
            "drive_id": "rootfs", "path_on_host": str(rootfs), "is_root_device": True,
            "is_read_only": False}) == (204, "")
        assert curl(sock, "PUT", "/machine-config", {"vcpu_count": 2,
                                                     "mem_size_mib": 256}) == (204, "")
        assert curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"}) == (204, "")
        code, body = curl(sock, "GET", "/vm/config")
        assert code == 200 and json.loads(body)["drives"][0]["path_on_host"] == str(rootfs)

        code = vm.wait(BOOT_TIMEOUT)
        text = vm.output()
        assert code == 0, text[-4000:]
        assert "rootfs-guest-ok" in text and "ember.exit=0" in text, text[-4000:]
        assert "root=/dev/vda rw" in text, text[-4000:]
        assert "VFS: Mounted root (ext4 filesystem) on device" in text, text[-4000:]
        assert "/dev/root / ext4 rw" in text or "/dev/vda / ext4 rw" in text, text[-4000:]

        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
        total = {sec: {k: sum(x[sec][k] for x in lines) for k in lines[0][sec]}
                 for sec in ("vcpu", "uart", "block", "i8042")}
        assert total["uart"]["write_count"] >= len("rootfs-guest-ok"), total
        # The virtio register pages are read-only memory slots (virtio/README.md): the guest's
        # whole virtio probe reads them without one MMIO read exit; its writes still exit.
        assert total["vcpu"]["exit_io_out"] > 0 and total["vcpu"]["exit_mmio_read"] == 0, total
        assert total["vcpu"]["exit_mmio_write"] > 0 and total["vcpu"]["failures"] == 0, total
        assert total["block"]["read_count"] > 0 and total["block"]["read_bytes"] > 0, total
        assert total["i8042"]["reset_count"] >= 1, total  # reboot=k (Linux may pulse it twice)
    finally:
        vm.close()
