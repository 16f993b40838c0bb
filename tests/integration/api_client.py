"""Drive ember's Firecracker-compatible API socket from the tests, with bounded waits.

`Ember.start(...)` launches `ember --api-sock S ...` and waits (bounded) until the socket
accepts; `close()` kills it if it is still running, so a hung ember never hangs the suite.
Requests go through requests_unixsocket (one keep-alive connection per socket, see
OneConnAdapter) or raw sockets for the HTTP-level tests. `Swagger` checks bodies against reference/firecracker-swagger.yaml.
"""
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.parse

import requests_unixsocket
from requests_unixsocket.adapters import UnixAdapter

from ember_vm import dump_vcpus, failing

REPO = pathlib.Path(__file__).resolve().parents[2]
SLOW = os.environ.get("EMBER_IN_TESTHOST") == "1"
START_TIMEOUT = 60 if SLOW else 10
REQ_TIMEOUT = 600 if SLOW else 30
SWAGGER = pathlib.Path(os.environ.get("EMBER_SWAGGER",
                                      "/work/shared/reference/firecracker-swagger.yaml"))


class OneConnAdapter(UnixAdapter):
    """requests_unixsocket keys its connection pools by the full URL, so PUT /drives/d0,
    /drives/d1, ... each keep an idle keep-alive connection open, and the 11th gets
    Firecracker's 503 (ember keeps that limit). Keyed by the socket, a session holds one."""

    def get_connection(self, url, proxies=None):
        u = urllib.parse.urlparse(url)
        return super().get_connection(f"{u.scheme}://{u.netloc}", proxies)


def session():
    """A requests session to a unix socket that holds at most one connection per socket."""
    s = requests_unixsocket.Session()
    s.mount("http+unix://", OneConnAdapter())
    return s


class Ember:
    def __init__(self, proc, sock, log_path):
        self.proc = proc
        self.sock = pathlib.Path(sock)
        self.log_path = log_path
        self.session = session()
        self.base = "http+unix://" + urllib.parse.quote(str(self.sock), safe="")

    @classmethod
    def start(cls, ember_bin, scratch, *extra, wait=True, stdin=subprocess.DEVNULL, cwd=None):
        """cwd: ember's working directory (relative paths in requests resolve there)."""
        sock = pathlib.Path(scratch) / "api.sock"
        out = pathlib.Path(scratch) / "ember.out"
        args = [str(ember_bin), "--api-sock", str(sock), *map(str, extra)]
        with open(out, "wb") as f:
            proc = subprocess.Popen(args, stdin=stdin, stdout=f, stderr=subprocess.STDOUT,
                                    cwd=cwd)
        e = cls(proc, sock, out)
        if wait:
            e.wait_ready()
        return e

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ember exited with {self.proc.returncode}: {self.output()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(str(self.sock))
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"the API socket did not come up: {self.output()}")

    def output(self):
        try:
            return pathlib.Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def request(self, method, path, json=None, data=None, **kw):
        kw.setdefault("timeout", REQ_TIMEOUT)
        return self.session.request(method, self.base + path, json=json, data=data, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, json=None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def connect(self, timeout=None):
        """Returns a new raw connection to the API socket."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout or REQ_TIMEOUT)
        s.connect(str(self.sock))
        return s

    def raw(self, data, read=True, timeout=None):
        """Sends bytes on a fresh connection; Returns what came back until EOF or timeout."""
        chunks = []
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout or REQ_TIMEOUT)
            s.connect(str(self.sock))
            try:
                s.sendall(data)
                if not read:
                    return b""
                s.shutdown(socket.SHUT_WR)
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    chunks.append(c)
            except (socket.timeout, ConnectionResetError, BrokenPipeError):
                pass  # the server may hang up on garbage: that is fine
        return b"".join(chunks)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        self.session.close()
        if self.proc.poll() is None:
            if failing():  # the test failed with the VM running: where are its vCPUs?
                dump_vcpus(self.proc, [self.log_path])
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def wait_until(pred, timeout=30, step=0.05):
    """Polls pred until it returns something true (returned) or timeout seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def fault(resp):
    """The fault message of a 400 response."""
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert resp.headers.get("Content-Type") == "application/json"
    return resp.json()["fault_message"]


class Swagger:
    """Validates bodies against a definition of the Firecracker swagger (the contract)."""

    def __init__(self):
        import yaml
        self.spec = yaml.safe_load(SWAGGER.read_text())
        self.defs = self.spec["definitions"]

    def validate(self, definition, body):
        import jsonschema
        schema = {"$ref": f"#/definitions/{definition}", "definitions": self.defs}
        jsonschema.Draft4Validator(schema).validate(body)

    def response_schema(self, method, path, status):
        op = self.spec["paths"][path][method.lower()]
        return op["responses"][str(status)].get("schema")
