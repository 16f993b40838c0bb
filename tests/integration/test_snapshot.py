"""Snapshots of a real Linux guest (run through tests/host/run). One boot: the guest keeps a
counter in a tmpfs file, prints a heartbeat with its uptime every `sleep 1`, and writes each
beat to a raw data drive. It is paused, snapshotted and killed with -9; four new processes load
the snapshot at once, each in its own directory with its own copies of the drives (the
snapshot names them by relative path, as a jailed Firecracker's do), and each guest goes on:
the count continues without a reboot, its clock resumes where it stopped, `sleep 1` still
takes about a second of guest time, and what it writes to its drive after the restore is in
that clone's file."""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from api_client import Ember
from ember_vm import BOOT_TIMEOUT, EMBER

pytestmark = pytest.mark.kvm

CLONES = 4
SECTOR = 512
BEAT = re.compile(rb"beat (\d+) ([0-9.]+)")
# The counter lives in /tmp (tmpfs): guest memory. Each beat also goes to /dev/vdb, sector
# (beat % 4096), so the host can read what the guest wrote after it was restored.
SCRIPT = ("echo 0 > /tmp/c; while true; do i=$(( $(cat /tmp/c) + 1 )); echo $i > /tmp/c; "
          "read up x < /proc/uptime; echo beat $i $up; "
          "echo beat $i | dd of=/dev/vdb bs=512 seek=$((i % 4096)) conv=notrunc,fsync "
          "2>/dev/null; sleep 1; done")
CMDLINE = ("console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
           f'i8042.dumbkbd quiet ember.cmd="{SCRIPT}"')


def beats(e):
    return [(int(n), float(up)) for n, up in BEAT.findall(open(e.log_path, "rb").read())]


def wait_beats(e, count, after=0, timeout=BOOT_TIMEOUT):
    """Waits until `count` beats numbered above `after` are on the console; Returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [b for b in beats(e) if b[0] > after]
        if len(got) >= count:
            return got
        assert e.proc.poll() is None, e.output()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{count} beats after {after} did not come: {e.output()[-3000:]}")


def drive_beats(path):
    """The beat numbers the guest wrote to a data drive."""
    data = open(path, "rb").read()
    out = set()
    for off in range(0, len(data), SECTOR):
        m = re.match(rb"beat (\d+)\n", data[off:off + 16])
        if m:
            out.add(int(m.group(1)))
    return out


def test_linux_guest_restored_four_times(guest_assets, scratch, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(guest_assets["rootfs"], src / "rootfs.ext4")
    with open(src / "data.img", "wb") as f:
        f.truncate(4096 * SECTOR)
    snap_dir = scratch / "snap"  # local tmpfs in the test host: the memory file is mapped
    snap_dir.mkdir()
    (scratch / "src").mkdir()
    e = Ember.start(EMBER, scratch / "src", cwd=src)
    try:
        assert e.put("/machine-config", json={"vcpu_count": 2, "mem_size_mib": 128}).ok
        assert e.put("/boot-source", json={"kernel_image_path": str(guest_assets["vmlinux"]),
                                           "boot_args": CMDLINE}).status_code == 204
        for drive, root in (("rootfs.ext4", True), ("data.img", False)):
            r = e.put(f"/drives/{'root' if root else 'data'}",
                      json={"drive_id": "root" if root else "data", "path_on_host": drive,
                            "is_root_device": root, "is_read_only": False})
            assert r.status_code == 204, r.text
        assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
        wait_beats(e, 4)
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        paused_at = time.monotonic()
        time.sleep(0.5)
        last, last_up = beats(e)[-1]
        # the guest's own time for one turn of its loop (`sleep 1` plus the slow commands)
        turn = max(b[1] - a[1] for a, b in zip(beats(e), beats(e)[1:]))
        r = e.put("/snapshot/create", json={"snapshot_path": str(snap_dir / "vm.snap"),
                                           "mem_file_path": str(snap_dir / "vm.mem")})
        assert r.status_code == 204, r.text
    finally:
        e.proc.kill()  # kill -9: nothing of the source is left but the files
        e.close()
    before = drive_beats(src / "data.img")

    clones = []
    try:
        for i in range(CLONES):
            d = tmp_path / f"clone{i}"
            d.mkdir()
            for f in ("rootfs.ext4", "data.img"):
                shutil.copy(src / f, d / f)
            (scratch / f"c{i}").mkdir()
            clones.append((d, Ember.start(EMBER, scratch / f"c{i}", cwd=d)))
        # Long enough after the pause that a guest clock following the host's would show it
        time.sleep(max(0.0, paused_at + turn + 20 - time.monotonic()))
        for _, c in clones:  # all four loaded before any is checked: they run together
            r = c.put("/snapshot/load", json={
                "snapshot_path": str(snap_dir / "vm.snap"),
                "mem_backend": {"backend_type": "File", "backend_path": str(snap_dir / "vm.mem")},
                "resume_vm": True})
            assert r.status_code == 204, r.text
        for d, c in clones:
            after = wait_beats(c, 3, after=last)
            out = open(c.log_path, "rb").read()
            # the count goes on from the snapshot: no reboot, no beat lost or repeated
            assert [n for n, _ in after[:3]] == [last + 1, last + 2, last + 3], after
            assert b"ember.exit" not in out and b"Linux version" not in out
            # the guest clock resumed where it stopped (not by the 20+ s of wall time since
            # the pause) and a `sleep 1` is still at least a second of guest time. The first
            # turn after a load also pays for faulting the mapped memory in while the guest's
            # clock runs (four clones at once in the nested test host: 4 s of guest time seen),
            # hence the room; a clock that followed the host's would be 20 s or more ahead.
            assert 0 < after[0][1] - last_up <= turn + 8, (last_up, turn, after)
            gaps = [b[1] - a[1] for a, b in zip(after, after[1:])]
            assert all(0.9 < g <= 2 * turn + 2 for g in gaps), (gaps, turn)
            for bad in (b"soft lockup", b"rcu_sched self-detected", b"BUG:", b"Oops"):
                assert bad not in out, (bad, out[-3000:])
            # the ordinary operations on a restored VM
            assert c.patch("/vm", json={"state": "Paused"}).status_code == 204
            assert c.patch("/vm", json={"state": "Resumed"}).status_code == 204
        for d, c in clones:  # the Ctrl-Alt-Del ends each guest cleanly (init reboots)
            n = beats(c)[-1][0]
            wait_beats(c, 1, after=n)
            assert c.put("/actions", json={"action_type": "SendCtrlAltDel"}).status_code == 204
        for d, c in clones:
            assert c.wait(BOOT_TIMEOUT) == 0, c.output()[-3000:]
            seen = {n for n, _ in beats(c) if n >= last}
            written = drive_beats(d / "data.img") - before
            assert seen and written, (seen, written)
            # what each clone's guest wrote after the restore is in that clone's own file; the
            # guest echoes a beat before its dd, so the pause can fall between the two: then
            # beat `last` reaches the drive only after the restore (seen in a test host run)
            assert written <= seen | {last, max(seen) + 1}, (written, seen, last)
            assert max(seen) in written or max(seen) - 1 in written, (written, seen)
    finally:
        for _, c in clones:
            c.close()


# The second guest keeps 64 MiB of random data in tmpfs and prints its MD5 every 8 beats.
SUM = re.compile(rb"sum ([0-9a-f]{32})")
SCRIPT2 = ("dd if=/dev/urandom of=/tmp/buf bs=1M count=64 2>/dev/null; "
           "echo sum $(md5sum < /tmp/buf); echo 0 > /tmp/c; while true; do "
           "i=$(( $(cat /tmp/c) + 1 )); echo $i > /tmp/c; read up x < /proc/uptime; "
           "echo beat $i $up; if [ $((i % 8)) = 0 ]; then echo sum $(md5sum < /tmp/buf); fi; "
           "sleep 1; done")
CMDLINE2 = ("console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
            f'i8042.dumbkbd quiet ember.cmd="{SCRIPT2}"')
HANDLER = pathlib.Path(__file__).resolve().parent / "uffd_handler.py"


def sums(e):
    return SUM.findall(open(e.log_path, "rb").read())


def step(e):
    assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
    wait_beats(e, 2, after=beats(e)[-1][0])
    assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
    time.sleep(0.3)


def snapshot(e, d, name, kind):
    r = e.put("/snapshot/create", json={"snapshot_type": kind,
                                       "snapshot_path": str(d / f"{name}.snap"),
                                       "mem_file_path": str(d / f"{name}.mem")})
    assert r.status_code == 204, r.text
    return d / f"{name}.snap", d / f"{name}.mem"


def resumed_ok(e, last, want_sum, timeout=BOOT_TIMEOUT):
    """The restored guest counts on from `last` and its 64 MiB buffer has the same MD5."""
    after = wait_beats(e, 1, after=last, timeout=timeout)
    assert after[0][0] == last + 1, after
    deadline = time.monotonic() + timeout
    while not sums(e):
        assert time.monotonic() < deadline and e.proc.poll() is None, e.output()[-3000:]
        time.sleep(0.3)
    assert sums(e)[0] == want_sum, (sums(e), want_sum)


def test_linux_guest_diff_layers_uffd_and_working_set(guest_assets, scratch, tmp_path):
    """Full, then two Diffs of a guest holding 64 MiB of data; restored as layers, from a merged
    base, through a Firecracker-style page-fault handler, and with a recorded working set: each
    time the count goes on and the data's MD5 is the one the guest computed before."""
    d = scratch / "chain"  # local tmpfs in the test host: sparse files, sockets
    d.mkdir()
    (scratch / "src").mkdir()
    e = Ember.start(EMBER, scratch / "src")
    try:
        assert e.put("/machine-config", json={"vcpu_count": 1, "mem_size_mib": 256,
                                              "track_dirty_pages": True}).ok
        assert e.put("/boot-source", json={"kernel_image_path": str(guest_assets["vmlinux"]),
                                           "boot_args": CMDLINE2}).status_code == 204
        assert e.put("/drives/root", json={"drive_id": "root",
                                           "path_on_host": str(guest_assets["rootfs"]),
                                           "is_root_device": True,
                                           "is_read_only": True}).status_code == 204
        assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
        wait_beats(e, 2)
        want = sums(e)[0]
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        time.sleep(0.3)
        base = snapshot(e, d, "base", "Full")
        step(e)
        snapshot(e, d, "d1", "Diff")
        step(e)
        d2 = snapshot(e, d, "d2", "Diff")
        last = beats(e)[-1][0]
    finally:
        e.close()
    assert os.stat(d / "d2.mem").st_blocks * 512 < os.stat(base[1]).st_blocks * 512 / 4

    def load(name, mb):
        (scratch / name).mkdir()
        c = Ember.start(EMBER, scratch / name)
        r = c.put("/snapshot/load", json={"snapshot_path": str(d2[0]), "resume_vm": True,
                                          "mem_backend": mb})
        assert r.status_code == 204, r.text
        return c

    c = load("layers", {"backend_type": "File", "backend_path": str(base[1]),
                        "layers": [str(d / "d1.mem"), str(d / "d2.mem")]})
    try:
        resumed_ok(c, last, want)
    finally:
        c.close()
    merged = d / "merged.mem"
    shutil.copyfile(base[1], merged)
    subprocess.run([str(EMBER), "snapshot", "merge", "--snapshot", str(d2[0]), str(merged),
                    str(d / "d1.mem"), str(d / "d2.mem")], check=True, capture_output=True,
                   timeout=600)
    c = load("merged", {"backend_type": "File", "backend_path": str(merged)})
    try:
        resumed_ok(c, last, want)
    finally:
        c.close()
    sock = scratch / "uffd.sock"
    h = subprocess.Popen([sys.executable, str(HANDLER), str(sock), str(merged), "serve"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert h.stdout.readline().strip() == "listening"
        c = load("uffd", {"backend_type": "Uffd", "backend_path": str(sock)})
        try:
            resumed_ok(c, last, want)
        finally:
            c.close()
    finally:
        h.terminate()
        h.wait(timeout=60)
    ws = d / "vm.ws"
    c = load("record", {"backend_type": "File", "backend_path": str(merged),
                        "record_working_set": {"path": str(ws), "after_ms": 3000}})
    try:
        resumed_ok(c, last, want)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while "Recorded a working set" not in c.output():
            assert time.monotonic() < deadline, c.output()[-3000:]
            time.sleep(0.3)
    finally:
        c.close()
    c = load("prefetch", {"backend_type": "File", "backend_path": str(merged),
                          "working_set": str(ws)})
    try:
        assert "Prefetched a working set" in c.output()
        resumed_ok(c, last, want)
    finally:
        c.close()
