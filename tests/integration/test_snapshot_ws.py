"""A recorded working set on the probe guest's heartbeat (any /dev/kvm: these run directly). A
first restore records the pages the guest touched until N ms after it resumed; later loads map
them from the one working-set file before the vCPUs run: the guest counts on, and its memory is
exactly the snapshot's (a new Full snapshot of the loaded, never-run VM equals the original
memory file byte for byte). Broken or foreign working-set files are 400s."""
import filecmp
import os
import struct
import subprocess
import time

import pytest

from api_client import Ember, fault
from ember_vm import EMBER
from test_snapshot_probe import crc64, start, snapshot, wait_tick  # noqa: F401 (a fixture)

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


def paused_load(tmp_path, snap, mem, ws):
    """A new ember in tmp_path/pre with the snapshot loaded paused over the working set ws."""
    d = tmp_path / "pre"
    d.mkdir()
    e = start(d)
    r = e.put("/snapshot/load", json=body(snap, mem, resume=False, working_set=str(ws)))
    if r.status_code != 204:
        e.close()
        raise AssertionError(r.text)
    return e, d


def test_record_then_prefetch(tmp_path, snapshot):
    snap, mem, last = snapshot
    ws = record(tmp_path, snap, mem)
    head = ws.read_bytes()[:64]
    assert head[:8] == b"EMBERWS1"
    npages = struct.unpack_from("<Q", head, 16)[0]
    assert 0 < npages < (32 << 20) // 4096 // 4, npages  # what it touched, not all of RAM
    e, d = paused_load(tmp_path, snap, mem, ws)
    try:
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
        r = e.put("/snapshot/load", json=body(snap, mem, resume=False, record_working_set={
            "path": str(ws), "after_ms": 3600 * 1000}))
        assert r.status_code == 204, r.text
        assert "it has not run yet" in fault(
            e.put("/actions", json={"action_type": "WriteWorkingSet"}))
        assert not ws.exists()
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
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



def cold(path):
    """The file's pages out of the page cache (written back first: dirty pages stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_pages(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def big_working_set(path, like, mem, first=256, npages=5120):
    """A working-set file of 20 MiB (more than any readahead window: one MADV_WILLNEED would
    read a part of it) naming guest pages first.. first+npages-1 with the memory file's
    content of each, on the memory image `like` (a recorded file) was recorded on."""
    mem_id = struct.unpack_from("<Q", like.read_bytes(), 24)[0]
    index = b"".join(struct.pack("<Q", first + i) for i in range(npages))
    data_off = (64 + len(index) + 4095) // 4096 * 4096
    with open(mem, "rb") as f:
        f.seek(first * 4096)
        pages = f.read(npages * 4096)
    assert len(pages) == npages * 4096
    head = (b"EMBERWS1" + struct.pack("<IIQQQQ", 1, 4096, npages, mem_id, data_off,
                                      crc64(index)) + bytes(16))
    path.write_bytes(head + index + bytes(data_off - 64 - len(index)) + pages)
    return npages


def prefetch_line(output):
    line = [l for l in output.splitlines() if "Prefetched a working set" in l]
    assert line, output[-2000:]
    return line[-1]


def wait_all_cached(path, npages, extra, timeout=20):
    deadline = time.monotonic() + timeout
    while cached_pages(path) < npages + extra:
        assert time.monotonic() < deadline, (cached_pages(path), npages + extra)
        time.sleep(0.05)


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_a_cold_working_set_is_read_and_a_warm_one_mapped(tmp_path, snapshot, cache):
    """A working set out of the page cache has all of its read started and not waited for
    (one MADV_WILLNEED reads a readahead window only: the pages past it would come in one
    window per guest fault), a cached one its page tables filled; either way the guest's
    memory is the snapshot's and it counts on."""
    snap, mem, last = snapshot
    ws = tmp_path / "big.ws"
    npages = big_working_set(ws, record(tmp_path, snap, mem), mem)
    head_pages = os.path.getsize(ws) // 4096 - npages
    cold(ws)
    if cache == "warm":
        ws.read_bytes()
    e, d = paused_load(tmp_path, snap, mem, ws)
    try:
        kib = npages * 4
        want = (f"{kib} KiB cached (page tables filled), 0 KiB being read" if cache == "warm"
                else f"0 KiB cached (page tables filled), {kib} KiB being read")
        assert want in prefetch_line(e.output())
        wait_all_cached(ws, npages, head_pages)  # nobody touches them: the prefetch read all
        r = e.put("/snapshot/create", json={"snapshot_path": str(d / "again.snap"),
                                           "mem_file_path": str(d / "again.mem")})
        assert r.status_code == 204, r.text
        assert filecmp.cmp(d / "again.mem", mem, shallow=False)
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        assert wait_tick(e, 0) == last + 1
    finally:
        e.close()
