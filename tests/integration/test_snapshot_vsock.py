"""Snapshots of a VM with a vsock device, as Firecracker does them: connections do not survive
(the guest is sent VIRTIO_VSOCK_EVENT_TRANSPORT_RESET and every queue is run once), the device
listens again on its uds_path or on `vsock_override.uds_path`, and the guest's CID and the next
host port come back from the snapshot.

Directly on any /dev/kvm (the probe guest, which has no vsock driver): a snapshot with a vsock
device loads; without an override the old path, still bound by nobody but left on disk, is
refused with a reason and the process stays usable; with an override the device listens on
the new path; GET /vm/config shows it; an override for a snapshot without vsock is refused.

In the test host (a Linux guest with the agent, `ember.agent=PORT`): the agent answers, a host
connection to it is held open across the snapshot, the source is killed with -9, and a new
process loads it with `vsock_override`: the agent answers a new connection (`uname -r`, the
exit code of `false`), which is what Firecracker 1.16.0 broke (#5969)."""
import json
import re
import socket
import subprocess
import sys
import time

import pytest
import requests

from api_client import Ember, fault
from ember_vm import BOOT_TIMEOUT, EMBER, PROBE
from test_snapshot_uffd import HANDLER
from test_virtio_vsock import AGENT_PORT, CMDLINE, exec_, hybrid_connect


def load_body(d, **extra):
    body = {"snapshot_path": str(d / "vm.snap"),
            "mem_backend": {"backend_type": "File", "backend_path": str(d / "vm.mem")},
            "resume_vm": True}
    body.update(extra)
    return body


def snapshot(e, d):
    assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
    r = e.put("/snapshot/create", json={"snapshot_path": str(d / "vm.snap"),
                                       "mem_file_path": str(d / "vm.mem")})
    assert r.status_code == 204, r.text


# ---- the probe guest: directly on /dev/kvm ---------------------------------------------------

def probe_snapshot(tmp_path, with_vsock=True):
    """Boots the probe (with a vsock device on src/v.sock), snapshots it into src, kills it -9.
    Returns src (tmp_path/src)."""
    d = tmp_path / "src"
    d.mkdir()
    e = Ember.start(EMBER, d)
    try:
        assert e.put("/machine-config", json={"vcpu_count": 1, "mem_size_mib": 32}).ok
        assert e.put("/boot-source", json={"kernel_image_path": str(PROBE),
                                           "boot_args": "c"}).status_code == 204
        if with_vsock:
            r = e.put("/vsock", json={"guest_cid": 7, "uds_path": str(d / "v.sock")})
            assert r.status_code == 204, r.text
        assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
        time.sleep(0.2)
        snapshot(e, d)
    finally:
        e.proc.kill()
        e.close()
    return d


def connects(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.mark.usefixtures("dev_kvm")
def test_probe_snapshot_with_vsock(tmp_path):
    src = probe_snapshot(tmp_path)
    assert (src / "v.sock").exists()  # left behind by the killed process
    info = subprocess.run([str(EMBER), "snapshot", "info", str(src / "vm.snap"), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["vsock"] == {"guest_cid": 7, "uds_path": str(src / "v.sock")}
    # no override: the old path cannot be bound, a reason, the process still answers
    (tmp_path / "a").mkdir()
    e = Ember.start(EMBER, tmp_path / "a")
    try:
        r = e.put("/snapshot/load", json=load_body(src))
        assert r.status_code == 400
        assert "Address already in use" in fault(r), fault(r)
        assert e.get("/").status_code == 200 and e.proc.poll() is None
    finally:
        e.close()
    # too long an override: refused before anything is built
    (tmp_path / "b").mkdir()
    e = Ember.start(EMBER, tmp_path / "b")
    try:
        r = e.put("/snapshot/load",
                  json=load_body(src, vsock_override={"uds_path": "/" + "x" * 200}))
        assert r.status_code == 400 and "uds_path" in fault(r), r.text
        r = e.put("/snapshot/load", json=load_body(src, vsock_override={"path": "/y"}))
        assert r.status_code == 400, r.text
    finally:
        e.close()
    # the override: the device listens on the new path with the snapshot's CID
    (tmp_path / "c").mkdir()
    new = tmp_path / "c" / "new.sock"
    e = Ember.start(EMBER, tmp_path / "c")
    try:
        r = e.put("/snapshot/load", json=load_body(src, vsock_override={"uds_path": str(new)}))
        assert r.status_code == 204, r.text
        assert new.exists() and connects(new)
        cfg = e.get("/vm/config").json()
        assert cfg["vsock"] == {"guest_cid": 7, "uds_path": str(new)}, cfg
        # the probe has no vsock driver: a CONNECT is closed, never answered; the VMM goes on
        s, line = hybrid_connect(new, 52, timeout=30)
        assert s is None and line == b""
        assert e.get("/").json()["state"] == "Running"
    finally:
        e.close()


@pytest.mark.usefixtures("dev_kvm")
def test_probe_snapshot_without_vsock_refuses_override(tmp_path):
    src = probe_snapshot(tmp_path, with_vsock=False)
    (tmp_path / "a").mkdir()
    e = Ember.start(EMBER, tmp_path / "a")
    try:
        r = e.put("/snapshot/load",
                  json=load_body(src, vsock_override={"uds_path": str(tmp_path / "v.sock")}))
        assert r.status_code == 400
        assert "the snapshot has no vsock device" in fault(r), fault(r)
        assert not (tmp_path / "v.sock").exists()
        assert e.get("/").status_code == 200 and e.proc.poll() is None
    finally:
        e.close()


# ---- a Linux guest with the agent: in the test host -------------------------------------------

def wait_agent(uds, e, timeout=BOOT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        r = exec_(uds, "uname", "-r", timeout=30)
        if r.returncode == 0:
            return r
        assert e.proc.poll() is None, e.output()[-3000:]
        assert time.monotonic() < deadline, (r, e.output()[-3000:])
        time.sleep(1)


@pytest.mark.kvm
def test_restored_agent_answers(guest_assets, scratch, tmp_path):
    before = agent_snapshot(guest_assets, scratch, tmp_path)
    (scratch / "dst").mkdir()
    new = tmp_path / "new.sock"
    c = Ember.start(EMBER, scratch / "dst")
    try:
        r = c.put("/snapshot/load",
                  json=load_body(scratch, vsock_override={"uds_path": str(new)}))
        assert r.status_code == 204, r.text
        t0 = time.monotonic()
        # The first connection must work: the device holds it until the guest has handled
        # the load's TRANSPORT_RESET (virtio/README.md "reset, snapshots").
        r = exec_(new, "uname", "-r", timeout=120)
        answered = time.monotonic() - t0
        assert r.returncode == 0 and r.stdout == before.stdout, (r, c.output()[-3000:])
        assert exec_(new, "false", timeout=60).returncode == 1
        r = exec_(new, "sh", "-c", "echo out; echo err >&2; exit 3", timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n"), r
        print(f"restore -> first agent answer: {answered * 1000:.0f} ms (test host, nested)")
        assert c.get("/").json()["state"] == "Running"
    finally:
        c.close()


@pytest.mark.kvm
def test_a_hung_handler_cannot_hold_the_vmm_thread(guest_assets, scratch, tmp_path):
    """Through the Uffd backend with a handler that takes the handshake and never serves: the
    load's resume has the VMM thread itself write the TRANSPORT_RESET event into the guest's
    event queue, a page nobody serves, so ember's own event loop is stuck in that fault. The
    handler's watch is a thread of its own: after 10 s without a page it gives the handler up,
    and as the VM cannot be stopped in order (its faults are not let go: they would be filled
    with zeros, which a device would write out), the process ends with the reason (exit 1)."""
    agent_snapshot(guest_assets, scratch, tmp_path)
    sock = scratch / "uffd.sock"
    h = subprocess.Popen([sys.executable, str(HANDLER), str(sock), str(scratch / "vm.mem"),
                          "silent"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (scratch / "dst").mkdir()
    c = Ember.start(EMBER, scratch / "dst")
    try:
        assert h.stdout.readline().strip() == "listening"
        body = load_body(scratch, vsock_override={"uds_path": str(tmp_path / "new.sock")})
        body["mem_backend"] = {"backend_type": "Uffd", "backend_path": str(sock)}
        t0 = time.monotonic()
        try:
            c.put("/snapshot/load", json=body, timeout=120)
        except requests.ConnectionError:
            pass  # the process ended during the load, as it should
        assert c.wait(120) == 1, c.output()[-3000:]
        took = time.monotonic() - t0
        out = c.output()
        assert "has left a page fault unread and served none for 10 s" in out, out[-3000:]
        assert "cannot be stopped in order" in out, out[-3000:]
        assert took >= 10, took
    finally:
        c.close()
        h.kill()
        h.wait(timeout=30)


def agent_snapshot(guest_assets, scratch, tmp_path):
    """Boots the Linux guest with the agent on vsock, holds a connection to it open, snapshots
    it into scratch (vm.snap, vm.mem) and kills the process -9. Returns the agent's answer to
    `uname -r` before."""
    src = tmp_path / "src"
    src.mkdir()
    (scratch / "src").mkdir()
    uds = src / "v.sock"
    boot_args = f'{CMDLINE} ember.agent={AGENT_PORT} ember.cmd="exec sleep 100000"'
    e = Ember.start(EMBER, scratch / "src")
    held = None
    try:
        for path, body in (
                ("/boot-source", {"kernel_image_path": str(guest_assets["vmlinux"]),
                                  "initrd_path": str(guest_assets["initramfs"]),
                                  "boot_args": boot_args}),
                ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 128}),
                ("/vsock", {"guest_cid": 5, "uds_path": str(uds)}),
                ("/actions", {"action_type": "InstanceStart"})):
            r = e.put(path, json=body)
            assert r.status_code == 204, (path, r.text)
        before = wait_agent(uds, e)
        # a connection the agent holds open (it waits for a request) across the snapshot
        held, line = hybrid_connect(uds, AGENT_PORT, timeout=60)
        assert held and re.fullmatch(rb"OK \d+\n", line), line
        snapshot(e, scratch)  # the memory file on the test host's local tmpfs
    finally:
        e.proc.kill()
        e.close()
    # the host end of that connection is gone with the process
    held.settimeout(30)
    assert held.recv(1) == b""
    held.close()
    return before
