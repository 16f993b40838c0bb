"""Shared by the test_client_*.py replays of real Firecracker clients (issue 20).

Not a conftest and holds no tests. What is here is transport only: a keep-alive HTTP/1.1
connection on the API socket that sends a client's own header set and JSON bytes, starting
ember the way a client does (its argv, working directory, relative socket paths), and a few
waits. Each client's request order, bodies and acceptance rules live in its own test file,
next to the citation of the source they were derived from.
"""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import api_client
import ember_vm

REPO = pathlib.Path(__file__).resolve().parents[2]
PROBE = REPO / "build" / "tests" / "guest" / "probe"
SWAGGER = pathlib.Path(os.environ.get("EMBER_SWAGGER",
                                      "/work/shared/reference/firecracker-swagger.yaml"))
SLOW = os.environ.get("EMBER_IN_TESTHOST") == "1"
TIMEOUT = 600 if SLOW else 30

# Go's net/http client with go-openapi's runtime (firecracker-go-sdk, Kata's Go driver):
# Host from the transport's DefaultHost, Go's User-Agent, gzip offered, JSON both ways.
GO_HEADERS = [("Host", "localhost"), ("User-Agent", "Go-http-client/1.1"),
              ("Accept", "application/json"), ("Accept-Encoding", "gzip")]


def go_json(body):
    """encoding/json as go-openapi's JSON producer writes it: compact, fields in the struct's
    declaration order (the caller's dict order), HTML not escaped, a trailing newline."""
    return (json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def rust_host(sock):
    """hyperlocal's URI authority: the socket path hex-encoded, port 0 (runtime-rs)."""
    return str(sock).encode().hex() + ":0"


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def fault(self):
        return self.json().get("fault_message", "")

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Conn:
    """One keep-alive connection to the API socket (reopened if the server closed it)."""

    def __init__(self, sock, headers, timeout=TIMEOUT, lower=False):
        """lower: header names in lower case, as hyper writes them (runtime-rs)."""
        self.sock, self.headers, self.timeout, self.lower = str(sock), headers, timeout, lower
        self.s, self.buf = None, b""

    def _open(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(self.timeout)
        self.s.connect(self.sock)
        self.buf = b""

    def close(self):
        if self.s:
            self.s.close()
            self.s = None

    def request(self, method, path, body=None, content_type="application/json"):
        """body: bytes (already encoded as the client encodes it) or None."""
        lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in self.headers]
        if body is not None:
            extra = [("Content-Length", len(body))]
            if content_type:
                extra.append(("Content-Type", content_type))
            lines += [f"{k.lower() if self.lower else k}: {v}" for k, v in extra]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        for attempt in (0, 1):
            if self.s is None:
                self._open()
            try:
                self.s.sendall(raw)
                return self._read()
            except (BrokenPipeError, ConnectionResetError, EOFError):
                self.close()
                if attempt:
                    raise

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buf += chunk

    def _read(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body.decode())


class Vmm:
    """An ember process started as a client starts firecracker (argv, cwd), output to a file."""

    def __init__(self, argv, out, cwd=None, env=None):
        self.out = pathlib.Path(out)
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)

    def output(self):
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if ember_vm.failing():  # the why of a failed test: what was said, where the vCPUs are
            print(f"--- the VMM's output ({self.out}, exit status {self.proc.poll()}) ---\n"
                  f"{self.output()[-6000:]}")
            ember_vm.dump_vcpus(self.proc, [self.out])  # prints what the dump adds
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def wait_until(predicate, what, timeout=TIMEOUT, interval=0.01):
    v = api_client.wait_until(predicate, timeout, interval)
    if not v:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return v


def wait_go_socket(vmm, conn, sock):
    """firecracker-go-sdk's waitForSocket: the socket file exists and GET /machine-config
    answers 200 (10 ms apart); an ember that exits fails at once."""
    def up():
        if vmm.proc.poll() is not None:
            raise AssertionError(f"ember exited {vmm.proc.returncode}: {vmm.output()}")
        if not pathlib.Path(sock).exists():
            return False
        try:
            return conn.request("GET", "/machine-config").status == 200
        except OSError:
            conn.close()
            return False
    wait_until(up, "the API socket (waitForSocket)")


def wait_for_text(path, text, proc=None, timeout=TIMEOUT):
    """Waits until text appears in file path; False if proc exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in pathlib.Path(path).read_text(errors="replace"):
                return True
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            try:
                return text in pathlib.Path(path).read_text(errors="replace")
            except OSError:
                return False
        time.sleep(0.05)
    return False


def vcpu_threads(pid):
    """Kata's GetThreadIDs: /proc/<pid>/task/*/comm starting with "fc_vcpu", the rest of the
    name (trimmed) parsed as the vCPU index. Returns {index: tid}."""
    found = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        comm = (task / "comm").read_text().rstrip("\n")
        if not comm.startswith("fc_vcpu"):
            continue
        found[int(comm[len("fc_vcpu"):].strip())] = int(task.name)
    return found


def thread_names(pid):
    return sorted((t / "comm").read_text().rstrip("\n")
                  for t in pathlib.Path(f"/proc/{pid}/task").iterdir())


def swagger_version():
    """info.version of the Firecracker OpenAPI definition ember implements."""
    m = re.search(r"^info:\n(?:  .*\n)*?  version: *(\S+)", SWAGGER.read_text(), re.M)
    assert m, "no info.version in the swagger"
    return m.group(1)


SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def semver_at_least(version, minimum):
    """blang/semver's Make + LT, as Kata's checkVersion uses them (a pre-release sorts before
    its release, which does not matter against 0.21.1)."""
    m = SEMVER.match(version)
    assert m, f"{version!r} is not a semantic version (Kata: 'Malformed firecracker version')"
    return tuple(int(x) for x in m.groups()[:3]) >= minimum


def mkfifo(path, mode=0o600):
    os.mkfifo(path, mode)
    return pathlib.Path(path)
