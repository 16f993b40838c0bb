"""The API socket at the HTTP level and before boot: every endpoint's success path, every
validation failure, keep-alive, parallel connections, hostile clients, signals. Nothing here
boots Linux, so none of it needs a hardware-backed KVM; the post-boot tests run the tiny probe
guest (tests/guest/probe.S), which any /dev/kvm (PVM too) runs."""
import json
import os
import pathlib
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from api_client import Ember, Swagger, fault

PROBE = pathlib.Path(__file__).resolve().parents[2] / "build" / "tests" / "guest" / "probe"
# the probe-guest tests need /dev/kvm (PVM runs them) and fail with a hint without it
needs_kvm = pytest.mark.usefixtures("dev_kvm")

MAX_PAYLOAD = 51200


@pytest.fixture(scope="module")
def swagger():
    return Swagger()


@pytest.fixture
def vm(ember_bin, scratch):
    e = Ember.start(ember_bin, scratch, "--id", "test-vm1")
    yield e
    e.close()


@pytest.fixture
def files(tmp_path):
    """Regular files that stand in for a kernel, an initrd and a disk at PUT time."""
    out = {}
    for name in ("kernel", "initrd", "disk", "disk2"):
        p = tmp_path / name
        p.write_bytes(b"\0" * 4096)
        out[name] = str(p)
    return out


def test_socket_mode_and_info(vm, swagger):
    assert stat.S_IMODE(os.stat(vm.sock).st_mode) == 0o600
    r = vm.get("/")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.headers["Server"] == "Firecracker API"
    info = r.json()
    swagger.validate("InstanceInfo", info)
    assert info["state"] == "Not started" and info["app_name"] == "Firecracker"
    assert info["id"] == "test-vm1"
    r = vm.get("/version")
    assert r.status_code == 200
    swagger.validate("FirecrackerVersion", r.json())
    r = vm.get("/machine-config")
    assert r.status_code == 200
    swagger.validate("MachineConfiguration", r.json())
    assert r.json()["vcpu_count"] == 1 and r.json()["mem_size_mib"] == 128
    r = vm.get("/vm/config")
    assert r.status_code == 200
    swagger.validate("FullVmConfiguration", r.json())


def test_machine_config(vm, swagger):
    body = {"vcpu_count": 2, "mem_size_mib": 256, "smt": False, "track_dirty_pages": True}
    swagger.validate("MachineConfiguration", body)
    r = vm.put("/machine-config", body)
    assert r.status_code == 204 and r.text == "" and "Content-Type" not in r.headers
    r = vm.patch("/machine-config", {"mem_size_mib": 512})
    assert r.status_code == 204
    got = vm.get("/machine-config").json()
    swagger.validate("MachineConfiguration", got)
    assert (got["vcpu_count"], got["mem_size_mib"], got["track_dirty_pages"]) == (2, 512, True)
    for bad, words in [
        ({"vcpu_count": 2}, "missing field `mem_size_mib`"),
        ({"vcpu_count": "2", "mem_size_mib": 1}, "invalid type for `vcpu_count`"),
        ({"vcpu_count": 33, "mem_size_mib": 128}, "vcpu_count"),
        ({"vcpu_count": 0, "mem_size_mib": 128}, "vcpu_count"),
        ({"vcpu_count": 1, "mem_size_mib": 128, "foo": 1}, "unknown field `foo`"),
        ({"vcpu_count": 3, "mem_size_mib": 128, "smt": True}, "SMT"),
        ({"vcpu_count": 1, "mem_size_mib": 1}, "memory size"),
        ({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "1G"}, "unknown variant"),
    ]:
        assert words in fault(vm.put("/machine-config", bad)), bad
    assert "empty" in fault(vm.patch("/machine-config", {}))
    assert vm.get("/machine-config").json()["mem_size_mib"] == 512  # refused calls change nothing


def test_boot_source_and_drives(vm, swagger, files):
    body = {"kernel_image_path": files["kernel"], "boot_args": "console=ttyS0 reboot=k",
            "initrd_path": files["initrd"]}
    swagger.validate("BootSource", body)
    assert vm.put("/boot-source", body).status_code == 204
    assert "cannot be opened" in fault(vm.put("/boot-source", {"kernel_image_path": "/no/k"}))
    assert "initrd" in fault(vm.put("/boot-source", {"kernel_image_path": files["kernel"],
                                                     "initrd_path": "/no/i"}))
    assert "missing field `kernel_image_path`" in fault(vm.put("/boot-source", {"boot_args": ""}))
    assert "2047" in fault(vm.put("/boot-source", {"kernel_image_path": files["kernel"],
                                                   "boot_args": "a" * 2048}))
    drive = {"drive_id": "rootfs", "path_on_host": files["disk"], "is_root_device": True,
             "is_read_only": False, "cache_type": "Writeback",
             "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}
    swagger.validate("Drive", drive)
    assert vm.put("/drives/rootfs", drive).status_code == 204
    assert vm.put("/drives/rootfs", drive).status_code == 204  # replace
    second = dict(drive, drive_id="data", path_on_host=files["disk2"])
    assert "root block device already exists" in fault(vm.put("/drives/data", second))
    assert vm.put("/drives/data", dict(second, is_root_device=False)).status_code == 204
    assert "does not match" in fault(vm.put("/drives/other", drive))
    assert "alphanumeric" in fault(vm.put("/drives/bad-id", dict(drive, drive_id="bad-id")))
    assert "missing field `is_read_only`" in fault(
        vm.put("/drives/x", {"drive_id": "x", "path_on_host": files["disk"],
                             "is_root_device": False}))
    assert "cannot be opened" in fault(vm.put("/drives/x", dict(drive, drive_id="x",
                                                                 is_root_device=False,
                                                                 path_on_host="/no/disk")))
    cfg = vm.get("/vm/config").json()
    swagger.validate("FullVmConfiguration", cfg)
    assert cfg["boot-source"]["kernel_image_path"] == files["kernel"]
    assert [d["drive_id"] for d in cfg["drives"]] == ["rootfs", "data"]
    # The stand-in kernel is no kernel: InstanceStart fails clearly and nothing changes.
    msg = fault(vm.put("/actions", {"action_type": "InstanceStart"}))
    assert "not a kernel" in msg or "block device" in msg, msg
    assert vm.get("/").json()["state"] == "Not started"
    assert vm.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}).status_code == 204


def test_phase_rules_before_boot(vm, files):
    msg = "not supported before starting the microVM"
    assert msg in fault(vm.patch("/vm", {"state": "Paused"}))
    assert msg in fault(vm.put("/actions", {"action_type": "FlushMetrics"}))
    assert msg in fault(vm.put("/actions", {"action_type": "SendCtrlAltDel"}))
    assert msg in fault(vm.patch("/drives/rootfs", {"drive_id": "rootfs"}))
    assert "kernel" in fault(vm.put("/actions", {"action_type": "InstanceStart"}))
    assert "unknown variant" in fault(vm.put("/actions", {"action_type": "Reboot"}))


def test_logger_metrics_serial(vm, tmp_path, swagger):
    log = tmp_path / "fc.log"
    body = {"log_path": str(log), "level": "Debug", "show_level": True, "show_log_origin": True}
    swagger.validate("Logger", body)
    assert vm.put("/logger", body).status_code == 204
    assert vm.get("/").status_code == 200
    text = log.read_text()
    assert 'The API server received a Get request on "/".' in text, text
    line = [x for x in text.splitlines() if "received a Get" in x][0]
    # <ts> [<id>:<thread>:<LEVEL>:<file>:<line>] msg
    ts, tag, _ = line.split(" ", 2)
    assert ts[:4].isdigit() and "T" in ts, line
    assert tag.startswith("[test-vm1:fc_api:INFO:api-socket/http.c:") and tag.endswith("]"), line
    assert "`level` must be one of" in fault(vm.put("/logger", {"level": "Loud"}))
    metrics = tmp_path / "metrics.json"
    assert vm.put("/metrics", {"metrics_path": str(metrics)}).status_code == 204
    assert "not allowed" in fault(vm.put("/metrics", {"metrics_path": str(metrics)}))
    serial = {"serial_out_path": str(tmp_path / "console")}
    swagger.validate("SerialDevice", serial)
    assert vm.put("/serial", serial).status_code == 204


@pytest.mark.parametrize("path", ["/mmds", "/balloon", "/entropy"])
def test_not_yet_supported_endpoints(vm, path):
    assert "not supported by this build" in fault(vm.put(path, {"x": 1}))


def test_http_level_errors(vm, swagger):
    r = vm.get("/nope")
    swagger.validate("Error", r.json())
    assert "Invalid request method and/or path: GET /nope." in fault(r)
    assert "Invalid request method and/or path: POST /actions." in fault(
        vm.request("POST", "/actions", json={"action_type": "InstanceStart"}))
    assert "Invalid request method and/or path: DELETE /machine-config." in fault(
        vm.request("DELETE", "/machine-config"))
    assert "GET request cannot have a body." in fault(vm.request("GET", "/", data=b"{}"))
    assert "Empty PUT request." in fault(vm.request("PUT", "/boot-source", data=b""))
    assert "Empty PATCH request." in fault(vm.request("PATCH", "/vm", data=b""))
    assert "deserializing" in fault(vm.request("PUT", "/boot-source", data=b"{not json"))
    assert "deserializing" in fault(vm.request("PUT", "/boot-source", data=b"[1,2]"))
    big = b'{"kernel_image_path":"' + b"a" * MAX_PAYLOAD + b'"}'
    assert "larger than the limit" in fault(vm.request("PUT", "/boot-source", data=big))
    assert vm.get("/").status_code == 200


def test_payload_limit_flag(ember_bin, scratch):
    e = Ember.start(ember_bin, scratch, "--http-api-max-payload-size", "100")
    try:
        assert "larger than the limit of 100" in fault(
            e.request("PUT", "/logger", data=b'{"level":"' + b"x" * 200 + b'"}'))
        assert e.put("/logger", {"level": "Info"}).status_code == 204
    finally:
        e.close()


def test_expect_100_continue(vm):
    body = b'{"vcpu_count":1,"mem_size_mib":128}'
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(vm.sock))
        s.sendall(b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100"), first
        s.sendall(body)
        rest = s.recv(4096)
        assert rest.startswith(b"HTTP/1.1 204"), rest


def test_keep_alive_many_requests(vm):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(vm.sock))
        f = s.makefile("rb")
        for i in range(200):
            s.sendall(b"GET /machine-config HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), (i, status)
            length = None
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            assert length and b"vcpu_count" in f.read(length)
    for _ in range(100):  # and through the keep-alive session of requests
        assert vm.get("/").status_code == 200


CONN_LIMIT = 10  # Firecracker's; --http-api-max-connections changes it


def parallel_gets(socks):
    """One GET /version on each connection, all at once; returns the replies."""
    results = [None] * len(socks)

    def ask(i):
        socks[i].sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        results[i] = socks[i].recv(4096)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(socks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def held_connection(e, first=b""):
    """A connection the server has taken (not one it answered with 503 at once because an
    earlier connection's close was not yet seen): first is sent, then nothing."""
    for _ in range(100):
        s = e.connect(30)
        s.sendall(first)
        s.settimeout(0.1)
        try:
            got = s.recv(4096)
        except socket.timeout:
            s.settimeout(30)
            return s
        s.close()
        assert got.startswith(b"HTTP/1.1 503"), got
    raise AssertionError("no connection slot freed up")


def get_version(s):
    s.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return s.recv(4096)


@pytest.mark.parametrize("limit", [None, 11, 40])
def test_parallel_connections_up_to_the_limit(ember_bin, scratch, limit):
    # Firecracker's 10 by default, all served in parallel; the 11th gets the 503, whether the
    # others are in the middle of a request or idle between two (as Firecracker). A flag
    # raises the limit.
    extra = ["--http-api-max-connections", limit] if limit else []
    e = Ember.start(ember_bin, scratch, *extra)
    n = limit or CONN_LIMIT
    socks = []
    try:
        socks = [held_connection(e) for _ in range(n)]
        extra = e.raw(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30)
        assert extra.startswith(b"HTTP/1.1 503"), extra
        for r in parallel_gets(socks):
            assert r and r.startswith(b"HTTP/1.1 200") and b"firecracker_version" in r, r
        # all idle between requests now: still 503, and every one of them still served
        extra = e.raw(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30)
        assert extra.startswith(b"HTTP/1.1 503") and b"Connection: close" in extra, extra
        assert all(get_version(s).startswith(b"HTTP/1.1 200") for s in socks)
    finally:
        for s in socks:
            s.close()
        e.close()


def test_idle_give_way_flag(ember_bin, scratch):
    # ember's own --http-api-idle-give-way: while all are in use the 11th still gets the 503;
    # once they are idle between requests the longest idle one is closed (legal for an HTTP
    # server) and the new client is served; its owner sees the close.
    e = Ember.start(ember_bin, scratch, "--http-api-idle-give-way")
    socks = []
    try:
        socks = [held_connection(e) for _ in range(CONN_LIMIT)]
        extra = e.raw(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30)
        assert extra.startswith(b"HTTP/1.1 503"), extra
        for r in parallel_gets(socks):
            assert r and r.startswith(b"HTTP/1.1 200"), r
        extra = e.raw(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30)
        assert extra.startswith(b"HTTP/1.1 200"), extra
        closed = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except socket.timeout:
                pass
        assert closed == 1, closed
    finally:
        for s in socks:
            s.close()
        e.close()


def test_idle_give_way_flag_takes_no_value(ember_bin, scratch):
    r = subprocess.run([ember_bin, "--api-sock", scratch / "s", "--http-api-idle-give-way=1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 153 and "http-api-idle-give-way" in r.stdout + r.stderr, r
    out = subprocess.run([ember_bin, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "--http-api-idle-give-way" in out and "default off" in out


def test_max_connections_flag_checked(ember_bin, scratch):
    for bad in ("0", "1025", "x", "-1"):
        r = subprocess.run([ember_bin, "--api-sock", scratch / "s", "--http-api-max-connections",
                            bad], capture_output=True, text=True, timeout=30)
        assert r.returncode == 153 and "--http-api-max-connections" in r.stdout + r.stderr, r
    out = subprocess.run([ember_bin, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "--http-api-max-connections N" in out and "(default 10" in out
    assert "--http-api-idle-timeout S" in out and "(default 60)" in out


def test_connection_limit(vm):
    # 10 connections stay open and served (each idle after its request); one more gets
    # Firecracker's 503 at once (no hang), and a slot that frees up is usable again
    ask = get_version
    socks = []
    try:
        for _ in range(CONN_LIMIT):
            socks.append(held_connection(vm))
            assert ask(socks[-1]).startswith(b"HTTP/1.1 200"), len(socks)
        extra = vm.raw(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30)
        head, _, body = extra.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"Connection: close" in head, extra
        assert json.loads(body)["error"] == "Too many open connections", extra
        socks.pop().close()
        for _ in range(1000):  # until the server has seen the close (no timing assumed)
            got = vm.raw(b"GET /version HTTP/1.1\r\nHost: localhost\r\n"
                         b"Connection: close\r\n\r\n", timeout=30)
            if got.startswith(b"HTTP/1.1 200"):
                break
        assert got.startswith(b"HTTP/1.1 200"), got
        assert all(ask(s).startswith(b"HTTP/1.1 200") for s in socks)
    finally:
        for s in socks:
            s.close()


def test_idle_connections_time_out(ember_bin, scratch):
    # Slowloris: every slot held by a connection that sent half a header, or nothing. With an
    # idle timeout of 5 s they are closed by the server, and a new client is served again.
    e = Ember.start(ember_bin, scratch, "--http-api-idle-timeout", "5")
    socks = []
    try:
        for i in range(CONN_LIMIT):
            socks.append(held_connection(e, b"GET / HTTP/1.1\r\nHo" if i % 2 else b""))
        assert e.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=30).startswith(
            b"HTTP/1.1 503")
        t0 = time.monotonic()
        for s in socks:
            data = s.recv(4096)
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
        waited = time.monotonic() - t0
        assert waited < 15, waited  # closed by the server, not by the 30 s client timeout
        got = b""
        for _ in range(1000):  # the server has seen the closes once a new client is served
            got = e.raw(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        timeout=30)
            if got.startswith(b"HTTP/1.1 200"):
                break
            time.sleep(0.01)
        assert got.startswith(b"HTTP/1.1 200"), got
        # A connection in use is not dropped: requests 2 s apart for 8 s on one connection.
        s = e.connect(30)
        socks.append(s)
        for _ in range(5):
            s.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(2)
    finally:
        for s in socks:
            s.close()
        e.close()


def test_raw_request_target(vm, ember_bin):
    # Paths are matched undecoded, as Firecracker does: a percent-escape never becomes part of
    # an id (%00 cut "a%00zzz" to "a") or of a log line (%0a forged one).
    def put_drive(target):
        body = b'{"drive_id":"a","path_on_host":"/dev/null","is_root_device":false,' \
               b'"is_read_only":true}'
        return vm.raw(b"PUT " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                      b"\r\nConnection: close\r\n\r\n" + body, timeout=30)

    for target in (b"/drives/a%00zzz", b"/drives/a%0a", b"/drives/%61", b"/drives/a%2f..%2f"):
        got = put_drive(target)
        assert got.startswith(b"HTTP/1.1 400") and b"API Resource IDs" in got, (target, got)
    for target in (b"/x%0aFORGED", b"/x%1b%5b31mRED", b"/%76ersion", b"/x\x1b[31mRAW"):
        got = vm.raw(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     timeout=30)
        assert got == b"" or got.startswith(b"HTTP/1.1 400"), (target, got)
    assert vm.get("/vm/config").json()["drives"] == []
    bad = b'{"level":\n"\x1bW\x7f"}'
    body = vm.raw(b"PUT /logger HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                  str(len(bad)).encode() + b"\r\nConnection: close\r\n\r\n" + bad, timeout=30)
    assert body.startswith(b"HTTP/1.1 400"), body
    log = vm.log_path.read_bytes()
    assert b"%0aFORGED" in log and b"%1b%5b31mRED" in log
    for line in log.splitlines():
        assert not line.startswith(b"FORGED"), line
        assert b"\x1b" not in line and b"\x7f" not in line, line  # escaped as \x1b
    assert b"\\x1b[31mRAW" in log or b"RAW" not in log
    assert b"\\x0a" in log and b"\\x1bW\\x7f" in log  # the body's newline and controls


def test_hostile_clients(vm):
    # disconnect mid-headers, mid-body, after a request line; garbage; a huge header line
    vm.raw(b"PUT /machine-config HTTP/1.1\r\nContent-Len", read=False)
    vm.raw(b"PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu", read=False)
    vm.raw(b"GET / HTTP/1.1\r\n", read=False)
    out = vm.raw(bytes(range(256)) * 8, timeout=5)
    assert out == b"" or out.startswith(b"HTTP/1.1 4"), out[:200]
    vm.raw(b"\r\n\r\n\0\0\0GET / HTTP/9.9\r\n\r\n", timeout=5)
    vm.raw(b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n", timeout=5)
    vm.raw(b"PUT /logger HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", timeout=5)
    vm.raw(b"PUT /logger HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"ffffffff\r\n" + b"x" * 60000, timeout=5)
    r = vm.get("/")
    assert r.status_code == 200 and r.json()["state"] == "Not started"


def test_socket_path_exists(ember_bin, scratch):
    sock = scratch / "api.sock"
    sock.write_text("")
    r = subprocess.run([str(ember_bin), "--api-sock", str(sock)], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r
    assert "Address already in use" in r.stdout + r.stderr, r


def test_socket_in_a_missing_directory(ember_bin, scratch):
    sock = scratch / "nowhere" / "api.sock"
    r = subprocess.run([str(ember_bin), "--api-sock", str(sock)], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r
    assert f"Failed to open the API socket at {sock}: No such file or directory" in r.stdout, r
    assert not (scratch / "nowhere").exists()


def test_a_path_near_the_limit_is_bound_directly(ember_bin, scratch):
    """107 bytes, the most a socket address holds: no room for the temporary name beside it."""
    d = scratch / ("d" * (99 - len(str(scratch))))
    d.mkdir()
    sock = d / "s.sock"
    assert len(str(sock)) == 107, len(str(sock))
    proc = subprocess.Popen([str(ember_bin), "--api-sock", str(sock)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(30)
                    s.connect(str(sock))
                    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    assert s.recv(65536).startswith(b"HTTP/1.1 200")
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert [p.name for p in d.iterdir()] == ["s.sock"]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_socket_file_appears_only_once_it_listens(ember_bin, scratch):
    """A client that connects as soon as the socket file exists is not refused (runtime-rs and
    many scripts wait for the file, then connect once). listen() is held back 2 s here (strace's
    fault injection): a file bound at the path itself would be there, refusing, all that time."""
    sock = scratch / "api.sock"
    out = scratch.parent / f"{scratch.name}.out"  # not in scratch: its listing is checked
    with open(out, "wb") as f:
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=listen",
                                 "-e", "inject=listen:delay_enter=2000000", str(ember_bin),
                                 "--api-sock", str(sock)],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.001)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))  # ECONNREFUSED if the file came before listen()
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200"), "no answer"
        assert [p.name for p in scratch.iterdir()] == ["api.sock"]  # no temporary name left
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ember and strace alike
        proc.wait(timeout=30)
        out.unlink(missing_ok=True)


def test_sigterm_before_boot(ember_bin, scratch):
    # Firecracker leaves SIGTERM at its default action: ember stops cleanly (the socket file
    # goes), then ends by the signal itself, so the parent sees the same wait status
    e = Ember.start(ember_bin, scratch)
    try:
        e.proc.terminate()
        code = e.wait(30)
        assert code == -signal.SIGTERM, (code, e.output())
        assert not e.sock.exists()
        assert "exiting on signal 15" in e.output()
    finally:
        e.close()


def metrics_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sighup_and_sigpipe_counted(ember_bin, scratch, tmp_path):
    # SIGHUP: counted, metrics flushed, exit 156; SIGPIPE: counted, ember carries on
    metrics = tmp_path / "metrics.json"
    e = Ember.start(ember_bin, scratch, "--metrics-path", metrics)
    try:
        for _ in range(2):  # one at a time: two pending SIGPIPEs would merge into one
            e.proc.send_signal(signal.SIGPIPE)
            assert e.get("/").status_code == 200
        e.proc.send_signal(signal.SIGHUP)
        assert e.wait(30) == 156, e.output()
        last = metrics_lines(metrics)[-1]
        assert last["signals"]["sighup"] == 1 and last["signals"]["sigpipe"] == 2, last
        assert not e.sock.exists()
    finally:
        e.close()


@pytest.mark.parametrize("sig,code,key", [(signal.SIGBUS, 149, "sigbus"),
                                          (signal.SIGXFSZ, 151, "sigxfsz"),
                                          (signal.SIGILL, 157, "sigill"),
                                          (signal.SIGFPE, 136, "sigfpe")])
def test_fatal_signal_flushes_metrics(ember_bin, scratch, tmp_path, sig, code, key):
    metrics = tmp_path / "metrics.json"
    e = Ember.start(ember_bin, scratch, "--metrics-path", metrics)
    try:
        assert e.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}).status_code == 204
        e.proc.send_signal(sig)
        assert e.wait(30) == code, e.output()
        assert f"intercepting signal {key.upper()}" in e.output()
        last = metrics_lines(metrics)[-1]
        assert last["signals"][key] == 1, last
        assert last["put_api_requests"]["machine_cfg_count"] == 1, last
    finally:
        e.close()


def test_missed_log_lines_counted(ember_bin, scratch, tmp_path):
    # a log FIFO nobody reads fills up: lines are dropped (ember never blocks) and counted
    fifo, metrics = tmp_path / "log.fifo", tmp_path / "metrics.json"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    e = Ember.start(ember_bin, scratch, "--log-path", fifo, "--metrics-path", metrics)
    try:
        for _ in range(1000):  # two lines of ~150 bytes each: far beyond a 64 KiB pipe
            assert e.get("/").status_code == 200
        e.proc.send_signal(signal.SIGHUP)
        assert e.wait(30) == 156
        assert metrics_lines(metrics)[-1]["logger"]["missed_log_count"] > 0
    finally:
        e.close()
        os.close(reader)


@pytest.mark.parametrize("args,code,words", [
    (["--bogus"], 153, "Found argument '--bogus'"),
    (["--no-api"], 153, "--no-api requires --config-file"),
    (["--id", "bad id!"], 153, "Invalid instance ID"),
    (["--level", "loud"], 153, "--level"),
    (["--http-api-max-payload-size", "x"], 153, "not a number"),
    (["--seccomp-filter", "f", "--no-seccomp"], 153, "conflict"),
    (["--no-api", "--config-file", "/nonexistent.json"], 152, "nonexistent"),
])
def test_cli_errors(ember_bin, scratch, args, code, words):
    r = subprocess.run([str(ember_bin), "--api-sock", str(scratch / "s"), *args],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == code, r
    assert words in r.stdout + r.stderr, r


def test_config_file_errors(ember_bin, scratch, tmp_path):
    for text, words in [("{", "invalid JSON"),
                        ('{"boot-source": {"kernel_image_path": "/no/k"}}', "kernel"),
                        ('{"machine_config": {}}', "unknown configuration section"),
                        ('{"boot-source": {"kernel_image_path": "/bin/true", "x": 1}}',
                         "unknown field `x`")]:
        cfg = tmp_path / "vm.json"
        cfg.write_text(text)
        r = subprocess.run([str(ember_bin), "--no-api", "--config-file", str(cfg)],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 152, r
        assert words in r.stdout + r.stderr, (words, r)


def test_version_and_help_flags(ember_bin, scratch):
    r = subprocess.run([str(ember_bin), "--api-sock", str(scratch / "s"), "--version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("Firecracker v"), r
    r = subprocess.run([str(ember_bin), "--api-sock", str(scratch / "s"), "--help"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--config-file" in r.stdout, r


def test_no_arguments_serves_the_default_socket(ember_bin, tmp_path):
    # `ember` alone is `firecracker` alone: the API on /run/firecracker.socket. Run in a
    # private mount namespace with its own /run, so the host's /run is never touched.
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs none /run && exec {ember_bin}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        sock = f"/proc/{proc.pid}/root/run/firecracker.socket"
        for _ in range(2000):  # until the socket appears or ember gave up
            if proc.poll() is not None or os.path.exists(sock):
                break
            time.sleep(0.01)
        assert os.path.exists(sock), proc.communicate(timeout=30)
        e = Ember(proc, sock, tmp_path / "none")
        assert e.get("/").json()["id"] == "anonymous-instance"
        e.session.close()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    r = subprocess.run([str(ember_bin), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--api-sock" in r.stdout and "--kernel" in r.stdout, r


def probe_vm(ember_bin, scratch, tmp_path, mode, *flags, drive=None):
    """ember with the probe guest configured through the API and started. mode: the probe's
    command line ('h' says hello and resets, 'i' says hello and idles)."""
    metrics, console = tmp_path / "metrics.json", tmp_path / "console.txt"
    e = Ember.start(ember_bin, scratch, "--metrics-path", metrics, *flags)
    assert e.put("/boot-source", {"kernel_image_path": str(PROBE),
                                  "boot_args": mode}).status_code == 204
    assert e.put("/serial", {"serial_out_path": str(console)}).status_code == 204
    if drive:
        assert e.put("/drives/data", {"drive_id": "data", "path_on_host": str(drive),
                                      "is_root_device": False,
                                      "is_read_only": False}).status_code == 204
    assert e.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    return e, metrics, console


@needs_kvm
@pytest.mark.parametrize("boot_timer", [True, False])
def test_probe_device_counters_and_boot_timer(ember_bin, scratch, tmp_path, boot_timer):
    # the probe writes its hello on COM1 (one OUT exit per byte), writes the boot-timer byte
    # (one MMIO write) and resets through the i8042: the exit flush counts all of it. The
    # boot-timer device exists only with --boot-timer, as in Firecracker.
    flags = ["--boot-timer"] if boot_timer else []
    e, metrics, console = probe_vm(ember_bin, scratch, tmp_path, "h", *flags)
    try:
        assert e.wait(60) == 0, e.output()
        assert "ember-probe: hello" in console.read_text()
        lines = metrics_lines(metrics)
        total = {sec: {k: sum(x[sec][k] for x in lines) for k in lines[0][sec]}
                 for sec in ("vcpu", "uart", "i8042")}
        hello = len("ember-probe: hello\r\n")
        assert total["uart"]["write_count"] == hello, total
        assert total["vcpu"]["exit_io_out"] >= hello + 1, total  # + the reset command
        assert total["vcpu"]["exit_mmio_write"] >= 1 and total["vcpu"]["failures"] == 0, total
        assert total["i8042"]["reset_count"] == 1 and total["i8042"]["write_count"] >= 1, total
        assert ("Guest-boot-time" in e.output()) == boot_timer, e.output()
    finally:
        e.close()


@needs_kvm
def test_probe_flush_metrics_and_patch_drive(ember_bin, scratch, tmp_path):
    disk, disk2 = tmp_path / "disk", tmp_path / "disk2"
    for d in (disk, disk2):
        d.write_bytes(b"\0" * 65536)
    e, metrics, console = probe_vm(ember_bin, scratch, tmp_path, "i", drive=disk)
    try:
        # FlushMetrics until the whole hello is counted (a byte reaches the console file just
        # before its count); the probe then idles, so the count must stop there
        hello = len("ember-probe: hello\r\n")
        for _ in range(3000):
            assert e.put("/actions", {"action_type": "FlushMetrics"}).status_code == 204
            lines = metrics_lines(metrics)
            if sum(x["uart"]["write_count"] for x in lines) >= hello or e.proc.poll() is not None:
                break
            time.sleep(0.01)
        assert "ember-probe: hello" in console.read_text(), e.output()
        assert sum(x["uart"]["write_count"] for x in lines) == hello, lines
        assert sum(x["vcpu"]["exit_io_out"] for x in lines) >= hello, lines
        assert e.put("/actions", {"action_type": "FlushMetrics"}).status_code == 204
        assert metrics_lines(metrics)[-1]["uart"]["write_count"] == 0  # nothing new

        # PATCH /drives after boot: what the body must name, ids, files, then a real update
        assert "at least one property" in fault(e.patch("/drives/data", {"drive_id": "data"}))
        assert "Invalid block device ID" in fault(
            e.patch("/drives/nope", {"drive_id": "nope", "path_on_host": str(disk2)}))
        assert "cannot be opened" in fault(
            e.patch("/drives/data", {"drive_id": "data", "path_on_host": "/no/such/file"}))
        assert "does not match" in fault(
            e.patch("/drives/data", {"drive_id": "other", "path_on_host": str(disk2)}))
        assert "unknown field `is_read_only`" in fault(
            e.patch("/drives/data", {"drive_id": "data", "is_read_only": True}))
        r = e.patch("/drives/data", {"drive_id": "data", "path_on_host": str(disk2)})
        assert r.status_code == 204, r.text
        drives = e.get("/vm/config").json()["drives"]
        assert drives[0]["path_on_host"] == str(disk2), drives
        e.proc.terminate()
        assert e.wait(30) == -signal.SIGTERM, e.output()
        last = metrics_lines(metrics)[-1]
        # counted: the requests that reached the controller (not the two refused by routing)
        assert last["patch_api_requests"]["drive_count"] == 4, last
        assert last["patch_api_requests"]["drive_fails"] == 3, last  # all but the update
    finally:
        e.close()


@needs_kvm
def test_probe_64_character_drive_ids_end_to_end(ember_bin, scratch, tmp_path):
    # API ids are up to 64 characters, and so are the VMM's: two ids that differ only in the
    # 64th character are two drives after boot (the VMM cut them to 63, F12)
    ids = ["L" * 64, "L" * 63 + "M"]
    disks = [tmp_path / f"disk{i}" for i in range(4)]
    for d in disks:
        d.write_bytes(b"\0" * 65536)
    metrics, console = tmp_path / "metrics.json", tmp_path / "console.txt"
    e = Ember.start(ember_bin, scratch, "--metrics-path", metrics)
    try:
        assert e.put("/boot-source", {"kernel_image_path": str(PROBE),
                                      "boot_args": "i"}).status_code == 204
        assert e.put("/serial", {"serial_out_path": str(console)}).status_code == 204
        for drive_id, disk in zip(ids, disks):
            assert e.put(f"/drives/{drive_id}", {
                "drive_id": drive_id, "path_on_host": str(disk), "is_root_device": False,
                "is_read_only": False}).status_code == 204
        assert "API Resource IDs" in fault(e.put("/drives/" + "L" * 65, {
            "drive_id": "L" * 65, "path_on_host": str(disks[0]), "is_root_device": False,
            "is_read_only": False}))
        assert e.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
        for drive_id, disk in zip(ids, disks[2:]):
            r = e.patch(f"/drives/{drive_id}", {"drive_id": drive_id, "path_on_host": str(disk)})
            assert r.status_code == 204, r.text
        r = e.patch(f"/drives/{ids[0]}", {"drive_id": ids[0], "rate_limiter": {
            "bandwidth": {"size": 1000, "refill_time": 100}}})
        assert r.status_code == 204, r.text
        drives = {d["drive_id"]: d["path_on_host"] for d in e.get("/vm/config").json()["drives"]}
        assert drives == {ids[0]: str(disks[2]), ids[1]: str(disks[3])}, drives
        assert e.proc.poll() is None, e.output()
    finally:
        e.close()
