"""The Uffd backend in a jail, as an orchestrator runs it: ember-jailer --userfaultfd runs ember
as an unprivileged uid, where vm.unprivileged_userfaultfd=0 refuses it the syscall's
kernel-fault userfaultfds; ember falls back to the jail's /dev/userfaultfd, and the handler
(outside the jail, on a socket inside it) serves the probe guest, which counts on. Without
--userfaultfd there is no node, and the load is a 400 that says why. Any /dev/kvm."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from test_api_boot import curl
from test_jailer_helpers import JAILER, TIMEOUT, wait_for
from test_snapshot_probe import TICK, snapshot  # noqa: F401 (a fixture)
from test_snapshot_uffd import HANDLER
from ember_vm import EMBER

pytestmark = pytest.mark.usefixtures("dev_kvm")

UID, GID = 12346, 23457


def jail(base, jail_id, extra):
    out = base / f"{jail_id}.out"
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [str(JAILER), "--id", jail_id, "--exec-file", str(EMBER), "--uid", str(UID),
             "--gid", str(GID), "--chroot-base-dir", str(base), *extra, "--",
             "--api-sock", "/run/api.sock"],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    root = base / "ember" / jail_id / "root"
    wait_for(lambda: (root / "run" / "api.sock").exists() or proc.poll() is not None,
             "the API socket")
    assert proc.poll() is None, out.read_text()
    return proc, root, out


def serve_in(root, snap, mem):
    """The snapshot's files in the jail (the VM's uid owns them), a handler on root/uffd.sock."""
    for p in (snap, mem):
        shutil.copy(p, root / p.name)
        os.chown(root / p.name, UID, GID)
    h = subprocess.Popen([sys.executable, str(HANDLER), str(root / "uffd.sock"), str(mem),
                          "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert h.stdout.readline().strip() == "listening", h.communicate()
    os.chown(root / "uffd.sock", UID, GID)
    return h


def load(root, snap):
    return curl(root / "run" / "api.sock", "PUT", "/snapshot/load", {
        "snapshot_path": snap.name, "resume_vm": True,
        "mem_backend": {"backend_type": "Uffd", "backend_path": "/uffd.sock"}})


@pytest.fixture
def base(tmp_path):
    assert os.geteuid() == 0, "the jailer needs root"
    if open("/proc/sys/vm/unprivileged_userfaultfd").read().strip() != "0":
        pytest.fail("vm.unprivileged_userfaultfd is 1 here: the fallback cannot be shown")
    b = tmp_path / "jails"
    b.mkdir()
    yield b
    shutil.rmtree(b, ignore_errors=True)


def test_a_jailed_vm_gets_its_uffd_from_dev_userfaultfd(base, snapshot):
    snap, mem, last = snapshot
    proc, root, out = jail(base, "uffd-vm", ["--userfaultfd"])
    h = serve_in(root, snap, mem)
    try:
        code, text = load(root, snap)
        assert code == 204, text + out.read_text()
        deadline = time.monotonic() + TIMEOUT
        while not [t for t in TICK.findall(out.read_bytes()) if int(t) > last + 1]:
            assert time.monotonic() < deadline and proc.poll() is None, out.read_text()[-2000:]
            time.sleep(0.05)
        assert "using /dev/userfaultfd" in out.read_text()
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        h.terminate()
        err = h.communicate(timeout=30)[1]
    assert [l for l in err.splitlines() if l.startswith("served")], err


def test_without_the_node_the_load_says_why(base, snapshot):
    snap, mem, _ = snapshot
    proc, root, out = jail(base, "uffd-none", [])
    h = serve_in(root, snap, mem)
    try:
        code, text = load(root, snap)
        assert code == 400, text
        assert "Cannot create a userfaultfd (the syscall, then /dev/userfaultfd)" in text, text
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        h.kill()
        h.wait(timeout=30)
