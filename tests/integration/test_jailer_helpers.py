"""Helpers for the ember-jailer tests: launch the jailer with the jail probe, read its report.

Not a conftest and holds no tests: imported by the other test_jailer*.py files."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
JAILER = REPO / "build" / "ember-jailer"
PROBE = REPO / "build" / "tests" / "jail-probe"
EXEC_NAME = PROBE.name
CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")

TIMEOUT = 15  # seconds: bound for every wait


def require_binaries():
    for path in (JAILER, PROBE):
        assert path.exists(), f"{path} is missing: run `make all build/tests/jail-probe`"


@pytest.fixture
def base(tmp_path):
    """A fresh --chroot-base-dir, removed with everything in it afterwards."""
    require_binaries()
    path = tmp_path / "jails"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def jail_root(base, jail_id):
    return pathlib.Path(base) / EXEC_NAME / jail_id / "root"


def base_args(base, jail_id, uid=12345, gid=23456):
    return ["--id", jail_id, "--exec-file", str(PROBE), "--uid", str(uid), "--gid", str(gid),
            "--chroot-base-dir", str(base)]


def run_jailer(args, **kw):
    """Runs ember-jailer to completion; returns the CompletedProcess."""
    return subprocess.run([str(JAILER), *args], capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def wait_for(predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Launch:
    """One jailed probe started with --wait: its report plus what the host sees of it."""

    def __init__(self, base, jail_id, args, extra=(), **popen_kw):
        self.root = jail_root(base, jail_id)
        self.proc = subprocess.Popen([str(JAILER), *args, "--", "--wait", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     **popen_kw)
        report = self.root / "run" / "probe.json"
        try:
            wait_for(lambda: report.exists() or self.proc.poll() not in (None, 0),
                     "the probe's report")
            if not report.exists():
                raise AssertionError(f"jailer exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read().decode()}")
            self.report = json.loads(report.read_text())
            self.pid = int((self.root / f"{EXEC_NAME}.pid").read_text())
            self.host = {name: pathlib.Path(f"/proc/{self.pid}/{name}").read_text()
                         for name in ("mountinfo", "cgroup", "status", "environ")}
        except BaseException:
            self.stop()
            raise

    def status(self, key):
        for line in self.host["status"].splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
        raise KeyError(key)

    def stop(self):
        """SIGTERM the probe (it has a handler, so this works when it is PID 1 of a namespace)
        and wait until it is gone."""
        pid = getattr(self, "pid", None)
        if pid is None and self.proc.poll() is None:
            pid = self.proc.pid
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            if pid == self.proc.pid:
                self.proc.wait(timeout=TIMEOUT)
            wait_for(lambda: not pid_alive(pid), f"probe {pid} to exit")
        if self.proc.poll() is None:
            self.proc.wait(timeout=TIMEOUT)
        self.proc.stdout.close()
        self.proc.stderr.close()


def v1_mount(controller):
    """Mount point of a cgroup v1 controller, or None."""
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, fstype, opts = line.split()[:4]
            if fstype == "cgroup" and controller in opts.split(","):
                return pathlib.Path(mnt)
    return None


def v2_mount():
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return pathlib.Path(mnt)
    return None


def remove_cgroup_tree(top, leaf):
    """rmdir leaf and each parent up to and including top (deepest first)."""
    path = pathlib.Path(leaf)
    top = pathlib.Path(top)
    while True:
        if path.exists():
            path.rmdir()
        if path == top or top not in path.parents:
            break
        path = path.parent


def rmdir_tree(top):
    """rmdir top and every directory below it, deepest first (cgroup directories hold
    only virtual files, so rmdir is how they are removed)."""
    top = pathlib.Path(top)
    if not top.exists():
        return
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        os.rmdir(dirpath)
