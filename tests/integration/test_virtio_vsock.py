"""virtio-vsock with Firecracker's hybrid Unix-socket host side, and the guest agent.

Without KVM: PUT /vsock as Firecracker validates it (CIDs 0-2, missing and unknown fields, a
uds_path that cannot be bound, the deprecated vsock_id), GET /vm/config, --config-file, `ember
run --vsock`, and `ember exec`'s errors against a fake hybrid-vsock server (no socket, a
refused port, a protocol error, a timeout).

With KVM (the nested test host), one guest booted through the API with the agent
(ember.agent=PORT) and vsock_peer on a tools drive: `ember exec` round trips (uname -r, exit
codes, stderr, a missing program, a port nobody serves), 16 MiB host→guest and guest→host with
matching md5, three echo connections at once, the bad CONNECT lines (garbage, over-long, a
guest port nobody listens on), a guest connection to a host port nobody listens on, the
connection limit (1023 held, the next one closed, room again after they close), the vsock
metrics, and last a hostile driver (vsock_hostile takes the device over through /dev/mem: a
short header, a length beyond its chain, a 64 KiB + 1 packet, a packet of no connection, a
notify storm on every queue; each dropped and counted or answered with RST, the device never
NEEDS_RESET and still answering, the VMM alive)."""
import hashlib
import json
import os
import pathlib
import re
import resource
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from api_client import Ember, fault
from ember_vm import BOOT_TIMEOUT, SLOW

REPO = pathlib.Path(__file__).resolve().parents[2]
EMBER = REPO / "build" / "ember"
VSOCK_PEER = REPO / "build" / "tests" / "guest" / "vsock_peer"
VSOCK_HOSTILE = REPO / "build" / "tests" / "guest" / "vsock_hostile"
VSOCK_BASE = 0xC0002000  # the second virtio-mmio device: after the tools drive
AGENT_PORT = 10789
MiB = 1 << 20
# A bound per socket operation and command: 16 MiB take seconds even in the nested test host, so
# a stream that has not moved for this long is a stuck guest or device, not a slow one.
IO_TIMEOUT = 180 if SLOW else 60
CMDLINE = ("console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
           "i8042.dumbkbd quiet")


def exec_(uds, *cmd, port=None, timeout=IO_TIMEOUT):
    args = [str(EMBER), "exec", "--vsock", str(uds), "--timeout", str(timeout)]
    if port is not None:
        args += ["--port", str(port)]
    return subprocess.run(args + ["--", *cmd], capture_output=True, text=True,
                          timeout=timeout + 30)


def hybrid_connect(uds, port, timeout=IO_TIMEOUT):
    """A host client through CONNECT: Returns (socket, the OK line), or (None, what came
    before) when the stream was closed instead (a refused client may be closed before its line
    was read: then the write fails with EPIPE or the read with ECONNRESET)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(uds))
    line = b""
    try:
        s.sendall(f"CONNECT {port}\n".encode())
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c:
                break
            line += c
    except (BrokenPipeError, ConnectionResetError):
        pass
    if not line.endswith(b"\n"):
        s.close()
        return None, line
    return s, line


# ---- without KVM ------------------------------------------------------------------------------

@pytest.fixture
def api(ember_bin, scratch):
    vm = Ember.start(ember_bin, scratch, "--id", "vsock-api")
    yield vm
    vm.close()


def test_put_vsock_validation(api, scratch):
    uds = scratch / "v.sock"
    for cid in (0, 1, 2):
        assert "Invalid guest CID" in fault(api.put("/vsock", {"guest_cid": cid,
                                                               "uds_path": str(uds)}))
    assert "guest_cid" in fault(api.put("/vsock", {"uds_path": str(uds)}))
    assert "uds_path" in fault(api.put("/vsock", {"guest_cid": 3}))
    assert "unknown field" in fault(api.put("/vsock", {"guest_cid": 3, "uds_path": str(uds),
                                                       "vsock": 1}))
    assert "guest_cid" in fault(api.put("/vsock", {"guest_cid": -3, "uds_path": str(uds)}))
    assert "guest_cid" in fault(api.put("/vsock", {"guest_cid": 1 << 32, "uds_path": str(uds)}))
    assert "guest_cid" in fault(api.put("/vsock", {"guest_cid": "3", "uds_path": str(uds)}))
    # a uds_path that cannot be bound is refused at PUT, with the reason
    msg = fault(api.put("/vsock", {"guest_cid": 3, "uds_path": str(scratch / "no" / "v.sock")}))
    assert "Cannot bind" in msg and "No such file or directory" in msg
    taken = scratch / "taken"
    taken.write_text("")
    msg = fault(api.put("/vsock", {"guest_cid": 3, "uds_path": str(taken)}))
    assert "Address already in use" in msg
    assert "Invalid uds_path" in fault(api.put("/vsock", {"guest_cid": 3,
                                                          "uds_path": "/" + "x" * 107}))
    assert "Invalid uds_path" in fault(api.put("/vsock", {"guest_cid": 3, "uds_path": ""}))
    # accepted (vsock_id is deprecated and ignored); the check leaves no socket behind
    assert api.put("/vsock", {"vsock_id": "vsock0", "guest_cid": 3,
                              "uds_path": str(uds)}).status_code == 204
    assert not uds.exists()
    assert api.put("/vsock", {"guest_cid": 4294967294, "uds_path": str(uds)}).status_code == 204
    assert api.get("/vm/config").json()["vsock"] == {"guest_cid": 4294967294,
                                                     "uds_path": str(uds)}


def test_config_file_vsock(ember_bin, scratch):
    cfg = scratch / "cfg.json"
    cfg.write_text(json.dumps({"boot-source": {"kernel_image_path": str(ember_bin)},
                               "vsock": {"guest_cid": 2, "uds_path": str(scratch / "v")}}))
    r = subprocess.run([str(ember_bin), "--no-api", "--config-file", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "vsock: Invalid guest CID 2" in r.stdout + r.stderr


def test_ember_run_vsock_option(ember_bin, scratch):
    def run(*args):
        return subprocess.run([str(ember_bin), "run", "--kernel", "/nonexistent", *args],
                              capture_output=True, text=True, timeout=60)
    for spec, why in (("cid=2,uds=/tmp/x", "Invalid guest CID 2"),
                      ("uds=/tmp/x", "needs cid=N and uds=PATH"),
                      ("cid=3", "needs cid=N and uds=PATH"),
                      ("cid=x,uds=/tmp/x", "is not a number"),
                      ("cid=3,uds=/tmp/x,port=5", "unknown option")):
        r = run("--vsock", spec)
        assert r.returncode == 153, r
        assert why in r.stderr, r.stderr
    help_text = subprocess.run([str(ember_bin), "run", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    assert "--vsock SPEC" in help_text and "cid=N,uds=PATH" in help_text


class FakeHybrid:
    """A Unix socket server that answers one client as a script says (for ember exec)."""

    def __init__(self, path, script):
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.script = script
        self.got = b""
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        c, _ = self.srv.accept()
        c.settimeout(30)
        while not self.got.endswith(b"\n"):
            self.got += c.recv(1)
        self.script(c)
        time.sleep(0.5)
        c.close()

    def close(self):
        self.t.join(timeout=30)
        self.srv.close()


def frame(kind, data):
    return struct.pack("<BI", kind, len(data)) + data


def test_exec_errors(scratch):
    r = exec_(scratch / "missing.sock", "true")
    assert r.returncode == 125 and "cannot connect to" in r.stderr, r
    r = exec_(scratch / "x", port=5)
    assert r.returncode == 125 and "no command given" in r.stderr, r
    cases = [
        (lambda c: None, 125, "port 10789 refused"),
        (lambda c: c.sendall(b"OK 1073741824\n" + frame(9, b"")), 125, "protocol error"),
        (lambda c: c.sendall(b"NO\n"), 125, "protocol error"),
        (lambda c: c.sendall(b"OK 1073741824\n" + frame(3, b"\0\0")), 125, "protocol error"),
        (lambda c: c.sendall(b"OK 1073741824\n" + frame(1, b"ab")), 125,
         "closed before the command's exit code"),
        (lambda c: (c.sendall(b"OK 1073741824\n"), time.sleep(3)), 124, "within 1 s"),
        (lambda c: c.sendall(b"OK 1073741824\n" + frame(1, b"out\n") + frame(2, b"err\n")
                             + frame(3, struct.pack("<I", 42))), 42, None),
    ]
    for i, (script, code, why) in enumerate(cases):
        path = scratch / f"fake{i}.sock"
        f = FakeHybrid(path, script)
        r = exec_(path, "ls", "-l", timeout=1 if code == 124 else 30)
        f.close()
        assert f.got == b"CONNECT 10789\n"
        assert r.returncode == code, (i, r)
        if why:
            assert why in r.stderr, (i, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        else:
            assert r.stdout == "out\n" and r.stderr == "err\n"


# ---- with KVM: one guest for the module ---------------------------------------------------------

class VsockVM:
    def __init__(self, ember_bin, assets, d):
        self.dir = d
        self.uds = d / "v.sock"
        self.metrics = d / "metrics.json"
        self.metrics.write_text("")
        tree = d / "tools"
        tree.mkdir()
        for tool in (VSOCK_PEER, VSOCK_HOSTILE):
            (tree / tool.name).write_bytes(tool.read_bytes())
            (tree / tool.name).chmod(0o755)
        self.img = d / "tools.ext4"
        subprocess.run(["truncate", "-s", "16M", str(self.img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(self.img)], check=True)
        self.api = Ember.start(ember_bin, d, "--id", "vsock-vm")
        boot_args = (f"{CMDLINE} ember.agent={AGENT_PORT} "
                     'ember.cmd="mount -t ext4 -o ro /dev/vda /mnt && exec sleep 100000"')
        for path, body in (
                ("/boot-source", {"kernel_image_path": str(assets["vmlinux"]),
                                  "initrd_path": str(assets["initramfs"]),
                                  "boot_args": boot_args}),
                ("/machine-config", {"vcpu_count": 2, "mem_size_mib": 256}),
                ("/drives/tools", {"drive_id": "tools", "path_on_host": str(self.img),
                                   "is_root_device": False, "is_read_only": True}),
                ("/vsock", {"guest_cid": 3, "uds_path": str(self.uds)}),
                ("/metrics", {"metrics_path": str(self.metrics)}),
                ("/actions", {"action_type": "InstanceStart"})):
            r = self.api.put(path, body)
            assert r.status_code == 204, (path, r.text)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:  # the agent answers once the guest is up
            r = exec_(self.uds, "test", "-x", "/mnt/vsock_peer", timeout=30)
            if r.returncode == 0:
                break
            assert self.api.proc.poll() is None, self.api.output()
            assert time.monotonic() < deadline, (r, self.api.output())
            time.sleep(1)

    def exec(self, *cmd, **kw):
        return exec_(self.uds, *cmd, **kw)

    def background(self, *cmd):
        """Runs ember exec in a thread. Returns a function that waits for its result."""
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.exec(*cmd)), daemon=True)
        t.start()

        def result():
            t.join(timeout=IO_TIMEOUT + 60)
            return out.get("r")
        return result

    def connect_when_listening(self, port):
        """CONNECT until the guest listens (an absent listener closes the stream)."""
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            s, line = hybrid_connect(self.uds, port)
            if s:
                assert re.fullmatch(rb"OK \d+\n", line), line
                return s
            time.sleep(0.2)
        raise AssertionError(f"guest port {port} never accepted")

    def vsock_metrics(self):
        assert self.api.put("/actions", {"action_type": "FlushMetrics"}).status_code == 204
        lines = [json.loads(x) for x in self.metrics.read_text().strip().splitlines()]
        total = {}
        for line in lines:  # counters are deltas per flush
            for k, v in line["vsock"].items():
                total[k] = total.get(k, 0) + v
        return total

    def diagnose(self):
        """What a stuck stream leaves to go on: the vsock counters, then where the vCPUs are
        (SIGUSR2: registers, run state, APIC; a RIP outside the guest's kernel is the test host's
        state in the guest, tests/host/README.md) and the end of the VMM's log."""
        metrics = self.vsock_metrics() if self.api.proc.poll() is None else "exited"
        fds = ""
        if self.api.proc.poll() is None:
            pid = self.api.proc.pid
            try:  # a device out of fds refuses clients (EMFILE): its limit and its use
                limit = [x for x in open(f"/proc/{pid}/limits") if x.startswith("Max open")]
                fds = f"VMM fds: {len(os.listdir(f'/proc/{pid}/fd'))}; {' '.join(limit)}"
            except OSError as e:
                fds = f"VMM fds: {e}"
            self.api.proc.send_signal(signal.SIGUSR2)
            time.sleep(2)
        return f"vsock metrics {metrics}\n{fds}\n{self.api.output()[-6000:]}"

    def wait_idle(self):
        """Waits until the device holds no connection (from the metrics' counters)."""
        deadline = time.monotonic() + IO_TIMEOUT
        while True:
            m = self.vsock_metrics()
            if m["conns_added"] == m["conns_killed"] + m["conns_removed"]:
                return
            assert time.monotonic() < deadline, m
            time.sleep(0.5)

    def close(self):
        self.api.close()


@pytest.fixture(scope="module")
def vm(ember_bin, guest_assets):
    base = os.environ.get("EMBER_SCRATCH") or None
    with tempfile.TemporaryDirectory(prefix="ember-vsock-", dir=base) as d:
        v = VsockVM(ember_bin, guest_assets, pathlib.Path(d))
        yield v
        v.close()


@pytest.mark.kvm
def test_exec_round_trip(vm):
    r = vm.exec("uname", "-r")
    assert r.returncode == 0 and re.fullmatch(r"6\.1\.\S+\n", r.stdout), r
    r = vm.exec("sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n"), r
    assert vm.exec("false").returncode == 1
    r = vm.exec("no-such-program", "x")
    assert r.returncode == 127 and "no-such-program" in r.stderr, r
    r = vm.exec("sh", "-c", "kill -9 $$")
    assert r.returncode == 137, r
    r = vm.exec("true", port=9)
    assert r.returncode == 125 and "port 9 refused" in r.stderr, r
    # arguments pass unchanged (no shell in between)
    r = vm.exec("echo", "a b", "$HOME", "'\"")
    assert r.stdout == "a b $HOME '\"\n", r


@pytest.mark.kvm
def test_host_to_guest_16mib(vm):
    data = os.urandom(16 * MiB)
    result = vm.background("sh", "-c", "/mnt/vsock_peer listen 5001 </dev/null | md5sum")
    s = vm.connect_when_listening(5001)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""  # the guest ended its side too
    except socket.timeout:
        pytest.fail(f"host→guest stuck for {IO_TIMEOUT} s:\n{vm.diagnose()}")
    s.close()
    r = result()
    assert r and r.returncode == 0, r
    assert r.stdout.split()[0] == hashlib.md5(data).hexdigest()


def host_listener(path):
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(16)
    srv.settimeout(IO_TIMEOUT)
    return srv


@pytest.mark.kvm
def test_guest_to_host_16mib(vm):
    srv = host_listener(f"{vm.uds}_5002")
    got = {}

    def sink():
        c, _ = srv.accept()
        c.settimeout(IO_TIMEOUT)
        h, n = hashlib.md5(), 0
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        c.sendall(b"thanks")
        c.close()
        got.update(md5=h.hexdigest(), n=n)
    t = threading.Thread(target=sink, daemon=True)
    t.start()
    r = vm.exec("sh", "-c", "head -c 16777216 /dev/urandom > /tmp/d && "
                "/mnt/vsock_peer connect 5002 < /tmp/d && md5sum /tmp/d && rm /tmp/d")
    t.join(timeout=60)
    srv.close()
    assert r.returncode == 0, (r, vm.diagnose() if r.returncode == 124 else "")
    assert r.stdout.startswith("thanks"), r  # the host's answer after the guest's half-close
    assert got["n"] == 16 * MiB
    assert r.stdout[len("thanks"):].split()[0] == got["md5"]
    # nobody listens on <uds>_5003: the guest's connect is refused
    r = vm.exec("/mnt/vsock_peer", "connect", "5003")
    assert r.returncode == 1 and "connect" in r.stderr, r


@pytest.mark.kvm
def test_three_connections_at_once(vm):
    result = vm.background("/mnt/vsock_peer", "echo", "5004", "3")
    socks = [vm.connect_when_listening(5004)]
    socks += [hybrid_connect(vm.uds, 5004)[0] for _ in range(2)]
    assert all(socks)
    payloads = [os.urandom(256 * 1024) for _ in socks]
    echoed = [b""] * 3

    def talk(i):
        s = socks[i]
        w = threading.Thread(target=lambda: (s.sendall(payloads[i]), s.shutdown(socket.SHUT_WR)))
        w.start()
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            echoed[i] += b
        w.join()
        s.close()
    ts = [threading.Thread(target=talk, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=IO_TIMEOUT)
    assert echoed == payloads
    assert result().returncode == 0


@pytest.mark.kvm
def test_bad_connect_lines(vm):
    for line in (b"GET / HTTP/1.1\n", b"CONNECT\n", b"CONNECT 52 53\n", b"connect x\n",
                 b"CONNECT 1" + b" " * 40 + b"\n"):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(IO_TIMEOUT)
        s.connect(str(vm.uds))
        s.sendall(line)
        try:
            got = s.recv(64)
        except ConnectionResetError:  # closed with the rest of an over-long line unread
            got = b""
        assert got == b"", line  # closed, never an OK
        s.close()
    s, line = hybrid_connect(vm.uds, 4444)  # nobody listens on guest port 4444
    assert s is None and line == b""
    r = vm.exec("true")
    if r.returncode != 0:  # the device still works
        pytest.fail(f"{r}\n{vm.diagnose()}")


@pytest.mark.kvm
def test_connection_limit(vm):
    # this client holds 1024 sockets itself: its own soft fd limit (often 1024) must allow it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2048:
        assert hard == resource.RLIM_INFINITY or hard >= 2048, (soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    assert vm.exec("sh", "-c", "/mnt/vsock_peer hold 6000 1100 >/tmp/hold.log 2>&1 &"
                   ).returncode == 0
    vm.wait_idle()  # the agent's connection is gone: all 1023 are ours
    socks = [vm.connect_when_listening(6000)]
    try:
        for _ in range(1022):  # Firecracker's limit, and ours: 1023 per device
            s, line = hybrid_connect(vm.uds, 6000)
            # the why of a failure: the device's counters and its log (a guest that took more
            # than 10 s to answer a REQUEST is closed, with a log line)
            if not s:  # pytest.fail: an assert's message would be cut to a few lines
                pytest.fail(f"closed after {len(socks)} connections\n{vm.diagnose()}")
            socks.append(s)
        s, line = hybrid_connect(vm.uds, 6000)
        assert s is None and line == b"", "the 1024th connection was not refused"
    finally:
        for s in socks:
            s.close()
    # they close: room again (the agent's own connection needs one)
    deadline = time.monotonic() + IO_TIMEOUT
    while vm.exec("true", timeout=30).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(1)
    assert "held 1000" in vm.exec("cat", "/tmp/hold.log").stdout
    assert vm.exec("killall", "vsock_peer").returncode == 0  # busybox here has no pkill
    m = vm.vsock_metrics()
    assert m["conns_refused"] >= 1, m


@pytest.mark.kvm
def test_vsock_metrics(vm):
    m = vm.vsock_metrics()
    for key in ("rx_bytes_count", "tx_bytes_count",
                "conns_added", "conns_killed", "conns_removed", "tx_write_fails", "rx_read_fails",
                "conns_refused", "tx_malformed_packets"):
        assert key in m, key
    assert m["rx_bytes_count"] >= 16 * MiB and m["tx_bytes_count"] >= 16 * MiB, m
    assert m["conns_added"] >= 1030 and m["tx_malformed_packets"] == 0, m
    assert vm.api.proc.poll() is None


@pytest.mark.kvm
def test_hostile_guest(vm):
    """Last: the probe takes the device away from the guest's own driver."""
    srv = host_listener(f"{vm.uds}_7000")
    accepted = []

    def accept():
        try:
            while len(accepted) < 2:
                accepted.append(srv.accept()[0])
        except OSError:
            pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    before = vm.vsock_metrics()
    # in the background, after the agent's answer is out (the probe resets the device)
    r = vm.exec("sh", "-c", f"(sleep 2; /mnt/vsock_hostile {VSOCK_BASE:#x} 3 7000) "
                ">/dev/console 2>&1 &")
    if r.returncode != 0:
        pytest.fail(f"{r}\nbefore: {before}\n{vm.diagnose()}")
    deadline = time.monotonic() + IO_TIMEOUT
    while not re.search(r"vsock_hostile: (ok|FAILED)$", vm.api.output(), re.M):
        assert time.monotonic() < deadline and vm.api.proc.poll() is None, vm.api.output()
        time.sleep(0.5)
    out = vm.api.output()
    assert "vsock_hostile: ok" in out, out[-3000:]
    t.join(timeout=30)
    srv.close()
    assert len(accepted) == 2
    after = vm.vsock_metrics()
    assert after["tx_malformed_packets"] - before["tx_malformed_packets"] == 3, after
    assert vm.api.get("/").status_code == 200 and vm.api.proc.poll() is None
