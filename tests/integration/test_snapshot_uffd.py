"""The Uffd memory backend with Firecracker's handshake, on the probe guest's heartbeat (any
/dev/kvm: these run directly). A handler written as Firecracker's example (uffd_handler.py)
serves every page from the memory file and the guest counts on; a handler that is absent, goes
away at the handshake, or dies later gives a clear error and nothing hangs."""
import filecmp
import subprocess
import sys
import time

import pytest

from api_client import Ember, fault
from ember_vm import EMBER, REPO
from test_seccomp import by_name
from test_snapshot_probe import start, snapshot, ticks, wait_tick  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("dev_kvm")

HANDLER = REPO / "tests" / "integration" / "uffd_handler.py"
UFFD_FEATURE_EVENT_REMOVE = 1 << 3


def handler(sock, mem, mode):
    p = subprocess.Popen([sys.executable, str(HANDLER), str(sock), str(mem), mode],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "listening", p.communicate()
    return p


def uffd_body(snap, sock, resume=True):
    return {"snapshot_path": str(snap),
            "mem_backend": {"backend_type": "Uffd", "backend_path": str(sock)},
            "resume_vm": resume}


def test_a_firecracker_style_handler_serves_the_guest(tmp_path, snapshot):
    snap, mem, last = snapshot
    sock = tmp_path / "uffd.sock"
    h = handler(sock, mem, "serve")
    e = start(tmp_path)
    try:
        r = e.put("/snapshot/load", json=uffd_body(snap, sock))
        assert r.status_code == 204, r.text
        assert wait_tick(e, 0) == last + 1
        wait_tick(e, last + 3)
        assert "served by the handler at" in e.output()
        # the handler's watch: a thread of its own, under the VMM thread's filter
        assert by_name(e.proc.pid)["ember_uffd"] == by_name(e.proc.pid)["fc_vmm"] == (2, 1)
    finally:
        e.close()
        h.terminate()
        out = h.communicate(timeout=30)[1]
    served = [int(l.split()[1]) for l in out.splitlines() if l.startswith("served")]
    assert served and served[-1] > 0, out  # the pages came through the handler
    features = [int(l.split()[1], 16) for l in out.splitlines() if l.startswith("features")]
    assert features and features[0] & UFFD_FEATURE_EVENT_REMOVE, out  # as Firecracker asks


def test_a_full_snapshot_of_a_uffd_vm_holds_the_pages_not_served_yet(tmp_path, snapshot):
    """A VM loaded through a handler and never run has almost no page present: a Full
    snapshot of it must still hold all of its memory (the pages it reads come through the
    handler), not holes where the handler has not served yet."""
    snap, mem, last = snapshot
    sock = tmp_path / "uffd.sock"
    h = handler(sock, mem, "serve")
    e = start(tmp_path)
    try:
        r = e.put("/snapshot/load", json=uffd_body(snap, sock, resume=False))
        assert r.status_code == 204, r.text
        r = e.put("/snapshot/create", json={"snapshot_path": str(tmp_path / "again.snap"),
                                           "mem_file_path": str(tmp_path / "again.mem")})
        assert r.status_code == 204, r.text
        assert filecmp.cmp(tmp_path / "again.mem", mem, shallow=False)
    finally:
        e.close()
        h.terminate()
        h.wait(timeout=30)
    (tmp_path / "again").mkdir()
    e = start(tmp_path / "again")
    try:
        r = e.put("/snapshot/load", json={
            "snapshot_path": str(tmp_path / "again.snap"), "resume_vm": True,
            "mem_backend": {"backend_type": "File",
                            "backend_path": str(tmp_path / "again.mem")}})
        assert r.status_code == 204, r.text
        assert wait_tick(e, 0) == last + 1
    finally:
        e.close()


def test_an_absent_handler_is_a_400(tmp_path, snapshot):
    snap, _, last = snapshot
    e = start(tmp_path)
    try:
        msg = fault(e.put("/snapshot/load", json=uffd_body(snap, tmp_path / "nobody.sock")))
        assert "Cannot connect to the page-fault handler" in msg, msg
        assert e.get("/").json()["state"] == "Not started"
    finally:
        e.close()


@pytest.mark.parametrize("mode", ["close", "exit"])
def test_a_handler_that_goes_away_ends_the_vm_with_a_reason(tmp_path, snapshot, mode):
    snap, mem, _ = snapshot
    sock = tmp_path / "uffd.sock"
    h = handler(sock, mem, mode)
    e = start(tmp_path)
    try:
        r = e.put("/snapshot/load", json=uffd_body(snap, sock), timeout=30)
        h.wait(timeout=30)
        if mode == "close" and r.status_code == 400:  # gone before the handshake went through
            assert "page-fault handler" in r.json()["fault_message"], r.text
            assert e.proc.poll() is None
        else:  # gone after: the guest cannot get a page; the VM ends, it does not hang
            assert r.status_code == 204, r.text
            assert e.wait(30) == 1, e.output()[-2000:]
            assert "page-fault handler (pid" in e.output() and "exited" in e.output()
    finally:
        e.close()


def test_a_handler_killed_later_ends_the_vm(tmp_path, snapshot):
    snap, mem, last = snapshot
    sock = tmp_path / "uffd.sock"
    h = handler(sock, mem, "serve")
    e = start(tmp_path)
    try:
        assert e.put("/snapshot/load", json=uffd_body(snap, sock)).status_code == 204
        wait_tick(e, last)
        h.kill()
        h.wait(timeout=30)
        t0 = time.monotonic()
        assert e.wait(30) == 1, e.output()[-2000:]
        assert time.monotonic() - t0 < 10
        assert "page-fault handler (pid" in e.output()
    finally:
        e.close()


@pytest.mark.parametrize("mode", ["silent", "drop"])
def test_a_handler_that_never_serves_ends_the_vm_with_a_reason(tmp_path, snapshot, mode):
    """A handler that takes the handshake, then lives on without reading a fault (silent), or
    closes the uffd and the connection but not its process (drop): the guest's first fault is
    never read; after 10 s of that the VM ends with an error, and the process does not hang."""
    snap, mem, _ = snapshot
    sock = tmp_path / "uffd.sock"
    h = handler(sock, mem, mode)
    e = start(tmp_path)
    try:
        r = e.put("/snapshot/load", json=uffd_body(snap, sock), timeout=30)
        assert r.status_code == 204, r.text
        t0 = time.monotonic()
        assert e.wait(40) == 1, e.output()[-2000:]
        assert time.monotonic() - t0 >= 8, e.output()[-2000:]  # not before it was 10 s unread
        assert "has left a page fault unread and served none for 10 s" in e.output(), \
            e.output()[-2000:]
        assert f"process: pid {h.pid}" in e.output(), e.output()[-2000:]
        assert h.poll() is None  # the handler itself was left alone
    finally:
        e.close()
        h.kill()
        h.wait(timeout=30)


def test_a_slow_handler_is_not_cut_off(tmp_path, snapshot):
    """A handler 3 s late for every fault has one unread whenever ember looks, for longer than
    the 10 s a hung one gets, yet it serves: after 20 s the VM still runs and the guest has
    counted on (a look at the uffd alone would have ended it)."""
    snap, mem, last = snapshot
    sock = tmp_path / "uffd.sock"
    h = handler(sock, mem, "lag")
    e = start(tmp_path)
    try:
        assert e.put("/snapshot/load", json=uffd_body(snap, sock)).status_code == 204
        time.sleep(20)
        assert e.proc.poll() is None, e.output()[-2000:]
        assert "unread" not in e.output(), e.output()[-2000:]
        assert wait_tick(e, 0, timeout=60) == last + 1
    finally:
        e.close()
        h.terminate()
        out = h.communicate(timeout=30)[1]
    served = [int(l.split()[1]) for l in out.splitlines() if l.startswith("served")]
    assert served and served[-1] >= 4, out  # a page per 3 s, back to back: > 10 s unread
