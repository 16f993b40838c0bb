"""A guest can never stall or end its VMM through the console (issue 19, review F4/F5/F15).

The probe guest's 'f' mode (tests/guest/probe.S) writes COM1 as fast as it can. Its console
goes to a pipe the test never reads, or to a file under a small RLIMIT_FSIZE: the API keeps
answering, pause works, SIGTERM ends the VM at once, and every byte that could not be
written is counted (uart.missed_write_count). These run wherever /dev/kvm exists (PVM too).
"""
import json
import os
import pathlib
import re
import resource
import signal
import subprocess
import time

import pytest

from api_client import Ember, wait_until
from ember_vm import EMBER, PROBE

pytestmark = pytest.mark.usefixtures("dev_kvm")

FSIZE = 200000


def start_api(scratch, stdout, preexec_fn=None, extra=()):
    """ember --api-sock with stdout wherever the test says (a pipe it never reads)."""
    sock = pathlib.Path(scratch) / "api.sock"
    proc = subprocess.Popen([str(EMBER), "--api-sock", str(sock), "--id", "flood", *extra],
                            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                            preexec_fn=preexec_fn)
    vm = Ember(proc, sock, os.devnull)
    vm.wait_ready()
    return vm


def boot_flood(vm, tmp_path, serial=None):
    metrics = tmp_path / "metrics.json"
    assert vm.put("/metrics", {"metrics_path": str(metrics)}).status_code == 204
    if serial is not None:
        r = vm.put("/serial", serial)
        assert r.status_code == 204, r.text
    assert vm.put("/boot-source", {"kernel_image_path": str(PROBE),
                                   "boot_args": "f"}).status_code == 204
    r = vm.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 204, r.text
    return metrics


def uart(vm, metrics):
    """The uart and signals sections summed over every metrics line so far (deltas)."""
    assert vm.put("/actions", {"action_type": "FlushMetrics"}, timeout=5).status_code == 204
    total = {}
    for line in metrics.read_text().splitlines():
        m = json.loads(line)
        for sec in ("uart", "signals"):
            for k, v in m.get(sec, {}).items():
                total[f"{sec}.{k}"] = total.get(f"{sec}.{k}", 0) + v
    return total


def stop_on_sigterm(proc):
    """SIGTERM ends ember whatever the guest does; 10 s is a hang bound, not a speed claim
    (no timed assertions in tests: the end waits 100 ms at most for a stalled reader)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("SIGTERM did not end ember within 10 s")
    return proc.returncode


def test_flood_into_an_unread_pipe(scratch, tmp_path):
    # stdout (console and log lines alike) is a pipe the test holds and never reads
    r, w = os.pipe()
    try:
        vm = start_api(scratch, w)
        os.close(w)
        w = -1
        metrics = boot_flood(vm, tmp_path)
        # the pipe fills, then the ring: from then on every guest byte is dropped and counted
        assert wait_until(lambda: uart(vm, metrics).get("uart.missed_write_count", 0) > 0), \
            uart(vm, metrics)
        for _ in range(3):
            assert vm.get("/", timeout=5).status_code == 200
        assert vm.patch("/vm", {"state": "Paused"}, timeout=5).status_code == 204
        paused = uart(vm, metrics)
        time.sleep(0.3)
        assert uart(vm, metrics)["uart.missed_write_count"] == paused["uart.missed_write_count"]
        assert vm.patch("/vm", {"state": "Resumed"}, timeout=5).status_code == 204
        assert wait_until(lambda: uart(vm, metrics)["uart.missed_write_count"] >
                          paused["uart.missed_write_count"])
        got = uart(vm, metrics)
        assert got["uart.write_count"] > 0 and got.get("uart.rate_limiter_dropped_bytes", 0) == 0
        # nothing the guest wrote reached the pipe beyond what it holds
        assert got["uart.write_count"] <= 1 << 20
        vm.session.close()
        assert stop_on_sigterm(vm.proc) == -signal.SIGTERM
        out = b""
        os.set_blocking(r, False)
        try:
            while chunk := os.read(r, 65536):
                out += chunk
        except BlockingIOError:
            pass
        # the log's lines share the pipe: each is one write, so it may fall between any two
        # bytes of the guest's (as with Firecracker); without them the guest's text is whole
        guest = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} \[flood:[^\n]*\n", b"", out)
        assert guest.startswith(b"ember-probe: hello\r\nember-flood 0123"), out[:2000]
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        if vm.proc.poll() is None:
            vm.proc.kill()
            vm.proc.wait()


def test_flood_ember_run_into_an_unread_pipe(tmp_path):
    # ember run: console on stdout, log lines on stderr, both the same unread pipe
    r, w = os.pipe()
    proc = subprocess.Popen([str(EMBER), "run", "--kernel", str(PROBE), "--cmdline", "f"],
                            stdin=subprocess.DEVNULL, stdout=w, stderr=w)
    os.close(w)
    try:
        time.sleep(1.5)  # the pipe is full long before this
        assert proc.poll() is None
        assert stop_on_sigterm(proc) == 128 + signal.SIGTERM
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def small_fsize():
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE, resource.RLIM_INFINITY))


def test_console_file_at_rlimit_fsize(scratch, tmp_path):
    # As jailer/README.md recommends: --resource-limit fsize=... The console file stops at
    # the limit, the VM runs on, the writes past it are counted.
    console = tmp_path / "console.txt"
    vm = start_api(scratch, subprocess.DEVNULL, preexec_fn=small_fsize)
    try:
        metrics = boot_flood(vm, tmp_path, {"serial_out_path": str(console)})
        assert wait_until(lambda: console.stat().st_size >= FSIZE)
        assert wait_until(lambda: uart(vm, metrics).get("uart.missed_write_count", 0) > 0)
        time.sleep(0.5)
        assert vm.proc.poll() is None, "ember ended at the limit"
        assert vm.get("/", timeout=5).status_code == 200
        got = uart(vm, metrics)
        assert console.stat().st_size == FSIZE
        assert got["uart.write_count"] == FSIZE
        assert got["signals.sigxfsz"] > 0  # ember's own SIGXFSZ: counted, not fatal
        assert console.read_bytes().startswith(b"ember-probe: hello\r\nember-flood 0123")
        vm.session.close()
        assert stop_on_sigterm(vm.proc) == -signal.SIGTERM
    finally:
        vm.close()


def test_ember_run_console_at_rlimit_fsize(tmp_path):
    console = tmp_path / "console.txt"
    proc = subprocess.Popen([str(EMBER), "run", "--kernel", str(PROBE), "--cmdline", "f",
                             "--console", str(console)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=small_fsize)
    try:
        assert wait_until(lambda: console.exists() and console.stat().st_size >= FSIZE)
        time.sleep(0.5)
        assert proc.poll() is None, f"ember ended with {proc.returncode}"
        assert console.stat().st_size == FSIZE
        assert stop_on_sigterm(proc) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serial_rate_limiter(ember_bin, scratch, tmp_path):
    # Firecracker's PUT /serial rate_limiter: bytes beyond the bucket are dropped and counted
    console = tmp_path / "console.txt"
    vm = Ember.start(ember_bin, scratch, "--id", "rl")
    try:
        t0 = time.monotonic()
        metrics = boot_flood(vm, tmp_path, {
            "serial_out_path": str(console),
            "rate_limiter": {"size": 2000, "refill_time": 1000, "one_time_burst": 500}})
        assert wait_until(lambda: uart(vm, metrics).get("uart.rate_limiter_dropped_bytes", 0)
                          > 10000)
        assert vm.patch("/vm", {"state": "Paused"}, timeout=5).status_code == 204
        elapsed = time.monotonic() - t0
        # paused, the last bytes queued reach the file; then the counts and the file agree
        assert wait_until(lambda: console.stat().st_size == uart(vm, metrics)["uart.write_count"],
                          5), (console.stat().st_size, uart(vm, metrics))
        got = uart(vm, metrics)
        # the bucket (2000 B/s, 2000 full at the start, a 500 burst) bounds what got through
        assert got["uart.write_count"] <= 2500 + 2000 * (elapsed + 1), (got, elapsed)
        assert got.get("uart.missed_write_count", 0) == 0
    finally:
        vm.close()


def test_serial_out_path_checks(ember_bin, scratch, tmp_path):
    vm = Ember.start(ember_bin, scratch, "--id", "paths")
    try:
        target = tmp_path / "real.txt"
        target.write_text("")
        link = tmp_path / "link.txt"
        link.symlink_to(target)
        r = vm.put("/serial", {"serial_out_path": str(link)})
        assert r.status_code == 400 and "symbolic link" in r.json()["fault_message"], r.text
        r = vm.put("/serial", {"serial_out_path": str(tmp_path)})
        assert r.status_code == 400 and "directory" in r.json()["fault_message"], r.text
        sock = scratch / "api.sock"
        r = vm.put("/serial", {"serial_out_path": str(sock)})
        assert r.status_code == 400 and "not a regular file" in r.json()["fault_message"]
        for bad in ({"size": -1, "refill_time": 10}, {"size": 10}, {"size": 1, "refill_time": 1,
                                                                     "x": 1}):
            r = vm.put("/serial", {"serial_out_path": str(target), "rate_limiter": bad})
            assert r.status_code == 400, (bad, r.text)
        # a FIFO with no reader: InstanceStart answers 400 at once instead of hanging
        fifo = scratch / "fifo"
        os.mkfifo(fifo)
        assert vm.put("/serial", {"serial_out_path": str(fifo)}).status_code == 204
        assert vm.put("/boot-source", {"kernel_image_path": str(PROBE),
                                       "boot_args": "i"}).status_code == 204
        r = vm.put("/actions", {"action_type": "InstanceStart"}, timeout=5)
        assert r.status_code == 400 and "no reader" in r.json()["fault_message"], r.text
        assert vm.get("/", timeout=5).status_code == 200
        # with a reader it boots
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            r = vm.put("/actions", {"action_type": "InstanceStart"}, timeout=5)
            assert r.status_code == 204, r.text
            deadline, seen = time.monotonic() + 30, b""
            while b"hello" not in seen and time.monotonic() < deadline:
                try:
                    seen += os.read(rfd, 4096)
                except BlockingIOError:
                    time.sleep(0.05)
            assert b"ember-probe: hello" in seen
        finally:
            os.close(rfd)
    finally:
        vm.close()


def test_serial_out_path_devnull(ember_bin, scratch, tmp_path):
    vm = Ember.start(ember_bin, scratch, "--id", "null")
    try:
        metrics = boot_flood(vm, tmp_path, {"serial_out_path": "/dev/null"})
        assert wait_until(lambda: uart(vm, metrics).get("uart.write_count", 0) > 1000)
        assert uart(vm, metrics).get("uart.missed_write_count", 0) == 0
    finally:
        vm.close()
