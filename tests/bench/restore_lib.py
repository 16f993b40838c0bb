"""What the restore benches share (tests/bench/restore-probe, tests/bench/restore-vs-qemu): a
tiny HTTP client for ember's API socket and QEMU's QMP socket, a console reader thread that
stamps every chunk the guest prints, and ember's snapshot sequence (Firecracker's API:
PATCH /vm Paused, PUT /snapshot/create, and in a fresh process PUT /snapshot/load).

Times are time.monotonic_ns() (CLOCK_MONOTONIC, the clock restore-floor prints), in ns."""
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
# The programs and images the benches start; local_copies() points them at copies.
BIN = {"ember": REPO / "build" / "ember",
       "floor": REPO / "build" / "tests" / "bench" / "restore-floor"}
TICK = re.compile(rb"tick (\d+)\r?\n")


def local_copy(path, d, name=None):
    """A copy of the file path in the directory d (as name), for a program a bench starts. In
    the test host the repository and /tmp are uncached 9p shares (cache=none): a process
    started from there pages its binary in over 9p again each time, as it first runs each code
    path, so inside the measured window (an ember from the share took 100 ms for --version
    there, a copy on tmpfs 19 ms), while QEMU comes from the cached host root."""
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    dst = d / (name or pathlib.Path(path).name)
    shutil.copy2(path, dst)
    return dst


def local_copies(names, d):
    """Points the files BIN names at local_copy()s in the directory d."""
    for n in names:
        BIN[n] = local_copy(BIN[n], d)


def now():
    return time.monotonic_ns()


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Api:
    """ember's API on one keep-alive connection."""

    def __init__(self, path, timeout):
        self.conn = UnixHTTP(str(path), timeout)

    def call(self, method, url, body=None):
        data = json.dumps(body) if body is not None else None
        hdrs = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, url, body=data, headers=hdrs)
        r = self.conn.getresponse()
        text = r.read().decode(errors="replace")
        return r.status, text

    def ok(self, method, url, body=None):
        status, text = self.call(method, url, body)
        if status >= 300:
            raise RuntimeError(f"{method} {url} -> {status} {text}")
        return text

    def close(self):
        self.conn.close()


def wait_socket(path, proc, deadline_s, poll_s=0.0002):
    """Connects until the socket accepts; returns the time it first did (ns), or raises."""
    end = now() + int(deadline_s * 1e9)
    while now() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before its socket accepted")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            return now()
        except OSError:
            time.sleep(poll_s)
    raise RuntimeError(f"{path} did not accept within {deadline_s} s")


class Console:
    """Reads a process's console (a pipe) in a thread, stamping each chunk with its time."""

    def __init__(self, fd):
        self.fd = fd
        self.chunks = []  # (t_ns, bytes)
        self.cond = threading.Condition()
        self.eof = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                b = os.read(self.fd, 65536)
            except OSError:
                b = b""
            with self.cond:
                if not b:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.chunks.append((now(), b))
                self.cond.notify_all()

    def text(self):
        with self.cond:
            return b"".join(c for _, c in self.chunks)

    def first_after(self, t_ns):
        """Time of the first chunk that arrived at or after t_ns (or None)."""
        with self.cond:
            for t, _ in self.chunks:
                if t >= t_ns:
                    return t
        return None

    def wait(self, pattern, timeout_s, since=0):
        """Waits until pattern (bytes regex) matches the text printed from chunk index `since`
        on; returns (time of the chunk that completed the match, the match)."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout_s
        with self.cond:
            while True:
                buf = b""
                for t, c in self.chunks[since:]:
                    buf += c
                    m = rx.search(buf)
                    if m:
                        return t, m
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    return None, None
                self.cond.wait(min(left, 0.5))

    def mark(self):
        with self.cond:
            return len(self.chunks)


def spawn(args, stdin=subprocess.PIPE, log=None):
    """Starts a VMM with its console on a pipe; stderr to the file log (or discarded)."""
    err = open(log, "wb") if log else subprocess.DEVNULL
    t0 = now()
    proc = subprocess.Popen([str(a) for a in args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=err)
    if log:
        err.close()
    return t0, proc, Console(proc.stdout.fileno())


def kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def ember_snapshot(api, snap, mem):
    """Pauses the VM behind api and writes a Full snapshot (Firecracker's sequence)."""
    api.ok("PATCH", "/vm", {"state": "Paused"})
    api.ok("PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": str(snap),
                                       "mem_file_path": str(mem)})


def load_body(snap, mem):
    return {"snapshot_path": str(snap),
            "mem_backend": {"backend_type": "File", "backend_path": str(mem)},
            "resume_vm": True}


def ember_api_restore(sock_dir, snap, mem, timeout_s, metrics=True, extra=()):
    """One restore through the API in a fresh ember process. Returns (proc, console, times)
    with times: t0 (spawn), api (socket accepts), req (load sent), ans (load answered), and
    the metrics file's path (FlushMetrics after the load; latencies_us.load_snapshot)."""
    sock = pathlib.Path(sock_dir) / "restore.sock"
    met = pathlib.Path(sock_dir) / "restore.metrics"
    for p in (sock, met):
        if p.exists():
            p.unlink()
    args = [BIN["ember"], "--api-sock", sock, "--level", "Error", *extra]
    if metrics:
        args += ["--metrics-path", met]
    t0, proc, con = spawn(args)
    times = {"t0": t0}
    try:
        times["api"] = wait_socket(sock, proc, timeout_s)
        api = Api(sock, timeout_s)
        times["req"] = now()
        status, text = api.call("PUT", "/snapshot/load", load_body(snap, mem))
        times["ans"] = now()
        if status != 204:
            raise RuntimeError(f"PUT /snapshot/load -> {status} {text}")
        times["api_obj"] = api
        times["metrics"] = met
    except Exception:
        kill(proc)
        raise
    return proc, con, times


def load_latency_us(api, met):
    """latencies_us.load_snapshot from a FlushMetrics after the load (None if absent)."""
    try:
        api.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
        last = met.read_text().strip().splitlines()[-1]
        v = json.loads(last).get("latencies_us", {}).get("load_snapshot")
        return float(v) if v is not None else None
    except (OSError, ValueError, IndexError, RuntimeError, http.client.HTTPException):
        return None


def floor_run(mem, rip, poke=None, vcpus=1, extra=()):
    """restore-floor once: its phases (µs) and spawn -> first exit (µs), or raises."""
    args = [BIN["floor"], "--mem-file", mem, "--rip", hex(rip), "--vcpus", str(vcpus), *extra]
    if poke:
        args += ["--poke", poke]
    t0 = now()
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    if p.returncode:
        raise RuntimeError(f"restore-floor: {p.stderr.strip()}")
    d = json.loads(p.stdout)
    d["spawn_to_exit_us"] = (d["exit_ns"] - t0) / 1000
    return d


def smaps_rollup(pid):
    """/proc/PID/smaps_rollup as {field: KiB}."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"^(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out
