"""The UART's output ring and snapshots (issue 19 item 1 with the snapshot work).

The ring is not part of a snapshot: what the guest wrote before the pause is the source VM's
console output, so PUT /snapshot/create writes it out first (a VMM is often killed right
after its snapshot), waiting for a stalled reader 100 ms at most; what such a reader did not
take stays queued in the source, neither dropped nor carried into the snapshot. Probe guests
only, so these run wherever /dev/kvm exists (PVM too).
"""
import json
import os
import pathlib
import re
import subprocess

import pytest

from api_client import Ember, wait_until
from ember_vm import EMBER, PROBE

pytestmark = pytest.mark.usefixtures("dev_kvm")

TICK = re.compile(rb"tick (\d+)\r\n")
RING = 65536  # OUTBUF_SIZE in vmm/legacy.h


def read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def load_body(snap, mem):
    return {"snapshot_path": str(snap), "resume_vm": True,
            "mem_backend": {"backend_type": "File", "backend_path": str(mem)}}


def snapshot_body(d):
    return {"snapshot_type": "Full", "snapshot_path": str(d / "vm.snap"),
            "mem_file_path": str(d / "vm.mem")}


def console_vm(d, kernel_args):
    e = Ember.start(EMBER, d)
    e.console = pathlib.Path(d) / "console.txt"
    assert e.put("/serial", json={"serial_out_path": str(e.console)}).status_code == 204
    if kernel_args is not None:
        assert e.put("/machine-config", json={"vcpu_count": 1, "mem_size_mib": 32}).ok
        assert e.put("/boot-source", json={"kernel_image_path": str(PROBE),
                                           "boot_args": kernel_args}).status_code == 204
        assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
    return e


def test_snapshot_then_kill_loses_no_console_output(tmp_path):
    # pause, snapshot and kill -9 at once (no wait for the console): the source's console
    # and the clone's, one after the other, are the guest's heartbeat without a gap
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    e = console_vm(src, "c")
    try:
        assert wait_until(lambda: len(TICK.findall(read(e.console))) >= 3), e.output()
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        r = e.put("/snapshot/create", json=snapshot_body(tmp_path))
        assert r.status_code == 204, r.text
        e.proc.kill()
        e.proc.wait(timeout=30)
    finally:
        e.close()
    before = read(e.console)
    clone = console_vm(dst, None)
    try:
        r = clone.put("/snapshot/load", json=load_body(tmp_path / "vm.snap", tmp_path / "vm.mem"))
        assert r.status_code == 204, r.text
        assert wait_until(lambda: len(TICK.findall(read(clone.console))) >= 3)
        after = read(clone.console)
    finally:
        clone.close()
    assert b"ember-probe" not in after  # nothing of the source's output is replayed
    n = [int(x) for x in TICK.findall(before + after)]
    assert len(n) >= 6 and n == list(range(n[0], n[0] + len(n))), (before[-200:], after[:200])


def uart(e, metrics):
    assert e.put("/actions", json={"action_type": "FlushMetrics"}).status_code == 204
    total = {}
    for line in metrics.read_text().splitlines():
        for k, v in json.loads(line).get("uart", {}).items():
            total[k] = total.get(k, 0) + v
    return total


def test_snapshot_with_a_stalled_console_keeps_the_queue(tmp_path):
    # the flooding probe guest, its console a pipe nobody reads: the ring is full when the VM
    # is paused. The snapshot still comes (no hang), drops nothing, and once the reader reads,
    # the queued 64 KiB reach it from the source; the clone starts from the guest's state only.
    sock = tmp_path / "api.sock"
    r, w = os.pipe()
    proc = subprocess.Popen([str(EMBER), "--api-sock", str(sock), "--id", "stalled"],
                            stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.STDOUT)
    os.close(w)
    e = Ember(proc, sock, os.devnull)
    try:
        e.wait_ready()
        metrics = tmp_path / "metrics.json"
        assert e.put("/metrics", json={"metrics_path": str(metrics)}).status_code == 204
        assert e.put("/boot-source", json={"kernel_image_path": str(PROBE),
                                           "boot_args": "f"}).status_code == 204
        assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
        assert wait_until(lambda: uart(e, metrics).get("missed_write_count", 0) > 0)
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        paused = uart(e, metrics)
        resp = e.put("/snapshot/create", json=snapshot_body(tmp_path))
        assert resp.status_code == 204, resp.text
        assert uart(e, metrics)["missed_write_count"] == paused["missed_write_count"]
        assert uart(e, metrics)["write_count"] == paused["write_count"]  # the pipe is full

        os.set_blocking(r, False)

        def read_some():
            try:
                while os.read(r, 65536):
                    pass
            except BlockingIOError:
                pass
            return uart(e, metrics)["write_count"] - paused["write_count"] >= RING

        assert wait_until(read_some), uart(e, metrics)
        got = uart(e, metrics)
        assert got["write_count"] - paused["write_count"] == RING  # all of it, once
        assert got["missed_write_count"] == paused["missed_write_count"]
    finally:
        os.close(r)
        e.close()

    (tmp_path / "c").mkdir()
    clone = console_vm(tmp_path / "c", None)
    try:
        resp = clone.put("/snapshot/load",
                         json=load_body(tmp_path / "vm.snap", tmp_path / "vm.mem"))
        assert resp.status_code == 204, resp.text
        assert wait_until(lambda: len(read(clone.console)) > 10000)
        out = read(clone.console)
        assert b"ember-probe: hello" not in out and b"ember-flood 0123" in out, out[:300]
        assert clone.get("/").status_code == 200
    finally:
        clone.close()
