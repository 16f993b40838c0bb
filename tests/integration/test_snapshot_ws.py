"""A recorded working set on the probe guest's heartbeat (any /dev/kvm: these run directly). A
first restore records the pages the guest touched until N ms after it resumed; later loads map
them from the one working-set file before the vCPUs run: the guest counts on, and its memory is
exactly the snapshot's (a new Full snapshot of the loaded, never-run VM equals the original
memory file byte for byte). Broken or foreign working-set files are 400s."""
import filecmp
import os
import struct
import time

import pytest

from api_client import Ember, fault
from ember_vm import EMBER
from test_snapshot_probe import start, snapshot, wait_tick  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("dev_kvm")


def body(snap, mem, resume=True, **mb):
    return {"snapshot_path": str(snap), "resume_vm": resume,
            "mem_backend": {"backend_type": "File", "backend_path": str(mem), **mb}}


def record(tmp_path, snap, mem):
    ws = tmp_path / "vm.ws"
    d = tmp_path / "rec"
    d.mkdir()
    e = start(d)
    try:
        r = e.put("/snapshot/load", json=body(snap, mem, record_working_set={
            "path": str(ws), "after_ms": 300}))
        assert r.status_code == 204, r.text
        deadline = time.monotonic() + 30
        while "Recorded a working set" not in e.output():
            assert time.monotonic() < deadline, e.output()[-2000:]
            time.sleep(0.05)
    finally:
        e.close()
    return ws


def test_record_then_prefetch(tmp_path, snapshot):
    snap, mem, last = snapshot
    ws = record(tmp_path, snap, mem)
    head = ws.read_bytes()[:64]
    assert head[:8] == b"EMBERWS1"
    npages = struct.unpack_from("<Q", head, 16)[0]
    assert 0 < npages < (32 << 20) // 4096 // 4, npages  # what it touched, not all of RAM
    d = tmp_path / "pre"
    d.mkdir()
    e = start(d)
    try:
        r = e.put("/snapshot/load", json=body(snap, mem, resume=False, working_set=str(ws)))
        assert r.status_code == 204, r.text
        assert f"Prefetched a working set of {npages} pages" in e.output()
        r = e.put("/snapshot/create", json={"snapshot_path": str(d / "again.snap"),
                                           "mem_file_path": str(d / "again.mem")})
        assert r.status_code == 204, r.text
        assert filecmp.cmp(d / "again.mem", mem, shallow=False)  # the snapshot's memory, exactly
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        assert wait_tick(e, 0) == last + 1
    finally:
        e.close()


def test_bad_working_sets_are_400(tmp_path, snapshot):
    snap, mem, _ = snapshot
    ws = record(tmp_path, snap, mem)
    good = ws.read_bytes()
    npages = struct.unpack_from("<Q", good, 16)[0]
    cases = {
        "truncated": (good[:-4096], "is not a working-set file"),
        "index": (good[:64] + bytes([good[64] ^ 1]) + good[65:], "is not a working-set file"),
        "magic": (b"X" + good[1:], "is not a working-set file"),
        "count": (good[:16] + struct.pack("<Q", npages + 1) + good[24:],
                  "is not a working-set file"),
        "foreign": (good[:24] + struct.pack("<Q", 12345) + good[32:], "another snapshot"),
    }
    d = tmp_path / "bad"
    d.mkdir()
    e = start(d)
    try:
        for name, (data, want) in cases.items():
            p = tmp_path / f"{name}.ws"
            p.write_bytes(data)
            msg = fault(e.put("/snapshot/load", json=body(snap, mem, working_set=str(p))))
            assert want in msg, (name, msg)
        assert "Cannot open the working set" in fault(
            e.put("/snapshot/load", json=body(snap, mem, working_set=str(tmp_path / "none"))))
        assert e.get("/").json()["state"] == "Not started"
        assert e.put("/snapshot/load", json=body(snap, mem, working_set=str(ws))).ok
    finally:
        e.close()
    os.unlink(ws)


def test_the_marker_by_api_call(tmp_path, snapshot):
    """PUT /actions WriteWorkingSet ends the recording when the client says (its after_ms is an
    hour here), and the file it writes prefetches as the timer's does; there is then nothing to
    end, and a VM that records nothing, or has not started, says so."""
    snap, mem, last = snapshot
    ws = tmp_path / "vm.ws"
    e = start(tmp_path)
    try:
        assert "not supported before starting the microVM" in fault(
            e.put("/actions", json={"action_type": "WriteWorkingSet"}))
        r = e.put("/snapshot/load", json=body(snap, mem, record_working_set={
            "path": str(ws), "after_ms": 3600 * 1000}))
        assert r.status_code == 204, r.text
        wait_tick(e, last + 2)
        assert not ws.exists()  # the hour has not passed
        r = e.put("/actions", json={"action_type": "WriteWorkingSet"})
        assert r.status_code == 204, r.text
        assert "Recorded a working set" in e.output()
        assert ws.read_bytes()[:8] == b"EMBERWS1"
        assert "No working set is being recorded" in fault(
            e.put("/actions", json={"action_type": "WriteWorkingSet"}))
        wait_tick(e, last + 3)  # the guest ran on through it
    finally:
        e.close()
    d = tmp_path / "pre"
    d.mkdir()
    e = start(d)
    try:
        r = e.put("/snapshot/load", json=body(snap, mem, working_set=str(ws)))
        assert r.status_code == 204, r.text
        assert "Prefetched a working set of" in e.output()
        assert wait_tick(e, 0) == last + 1
    finally:
        e.close()
