"""End to end, as an orchestrator runs a VM: ember-jailer jails the static build/ember, which
serves its API socket inside the jail; the test links the kernel and rootfs into the jail and
boots the guest with curl, naming files by their jail-relative paths. Needs a KVM that can boot
Linux (tests/host/run) and root."""
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from ember_vm import BOOT_TIMEOUT, wait_for
from test_api_boot import curl  # the request exactly as a Firecracker user's script sends it
from test_jailer_helpers import JAILER, TIMEOUT, wait_for as wait_until

pytestmark = pytest.mark.kvm

REPO = pathlib.Path(__file__).resolve().parents[2]
EMBER = REPO / "build" / "ember"
UID, GID = 12345, 23456
BASE_ARGS = "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd"


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def seccomp_modes(pid):
    """{thread name: (Seccomp, Seccomp_filters)}, without the kernel's user workers (KVM's NX
    recovery worker runs no user code)."""
    modes = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        if int((task / "stat").read_text().rsplit(")", 1)[1].split()[6]) & 0x4000:
            continue
        st = proc_status(f"{pid}/task/{task.name}")
        modes[" ".join(st["Name"])] = (int(st["Seccomp"][0]), int(st["Seccomp_filters"][0]))
    return modes


@pytest.fixture
def jailed_ember(tmp_path, guest_assets):
    """ember-jailer → ember with --api-sock /run/api.sock; yields (proc, jail root, output)."""
    assert os.geteuid() == 0, "the jailer needs root"
    base = tmp_path / "jails"
    base.mkdir()
    out = tmp_path / "ember.out"
    jail_id = "e2e-vm"
    root = base / "ember" / jail_id / "root"
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [str(JAILER), "--id", jail_id, "--exec-file", str(EMBER), "--uid", str(UID),
             "--gid", str(GID), "--chroot-base-dir", str(base), "--",
             "--api-sock", "/run/api.sock"],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        sock = root / "run" / "api.sock"
        wait_until(lambda: sock.exists() or proc.poll() is not None, "the API socket")
        assert proc.poll() is None, out.read_text()
        # The operator's part: the VM's files go into the jail, owned by the VM's uid.
        for name in ("vmlinux", "rootfs"):
            dst = root / guest_assets[name].name
            shutil.copy(guest_assets[name], dst)
            os.chown(dst, UID, GID)
        yield proc, root, out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        shutil.rmtree(base, ignore_errors=True)


def test_jailer_ember_curl_boot(jailed_ember):
    proc, root, out = jailed_ember
    sock = root / "run" / "api.sock"

    # What the jail did to ember, seen from the host while its API serves.
    st = proc_status(proc.pid)
    assert st["Uid"][:3] == [str(UID)] * 3 and st["Gid"][:3] == [str(GID)] * 3
    assert st["CapEff"] == ["0000000000000000"] and st["CapBnd"] == ["0000000000000000"]
    assert st["NoNewPrivs"] == ["1"]
    assert {"ember", "dev", "run", "vmlinux", "rootfs.ext4"} <= set(
        os.listdir(f"/proc/{proc.pid}/root")), "ember's / is not the jail"
    # Jailed, ember finds its sandbox in order (no warning), and its API-side threads and the
    # opener run under their seccomp filters; the VMM thread's comes at InstanceStart.
    assert "not sandboxed" not in out.read_text(), out.read_text()
    assert seccomp_modes(proc.pid)["ember_opener"] == (2, 1)
    assert seccomp_modes(proc.pid)["fc_api_accept"] == (2, 1)

    # Paths are resolved inside the jail: a host path that is not there is refused.
    code, body = curl(sock, "PUT", "/boot-source",
                      {"kernel_image_path": str(REPO / "build" / "guest" / "vmlinux")})
    assert code == 400 and "fault_message" in json.loads(body), body
    code, body = curl(sock, "PUT", "/drives/rootfs",
                      {"drive_id": "rootfs", "path_on_host": "/no-such-rootfs.ext4",
                       "is_root_device": True, "is_read_only": False})
    assert code == 400 and "no-such-rootfs.ext4" in body, body

    cmd = "cat /proc/cmdline; grep ' / ' /proc/mounts; echo jailed-guest-ok"
    assert curl(sock, "PUT", "/boot-source", {
        "kernel_image_path": "/vmlinux",
        "boot_args": f'{BASE_ARGS} ember.cmd="{cmd}"'}) == (204, "")
    assert curl(sock, "PUT", "/drives/rootfs", {
        "drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": True,
        "is_read_only": False}) == (204, "")
    assert curl(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128}) == \
        (204, "")
    assert curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"}) == (204, "")
    modes = {}
    for _ in range(200):  # every thread filtered while the guest runs (before it exits)
        try:
            modes = seccomp_modes(proc.pid)
        except OSError:
            break
        if "fc_vcpu 0" in modes and all(m == (2, 1) for m in modes.values()):
            break
        time.sleep(0.05)
    assert modes.get("fc_vmm") == (2, 1) and modes.get("fc_vcpu 0") == (2, 1), modes

    finished = wait_for(out, "ember.exit=", proc, BOOT_TIMEOUT)
    code = proc.wait(timeout=BOOT_TIMEOUT if not finished else TIMEOUT * 4)
    text = out.read_text(errors="replace")
    assert "jailed-guest-ok" in text and "ember.exit=0" in text, text[-4000:]
    assert "root=/dev/vda rw" in text, text[-4000:]
    assert "/dev/root / ext4 rw" in text or "/dev/vda / ext4 rw" in text, text[-4000:]
    assert code == 0, text[-4000:]
