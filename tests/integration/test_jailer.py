"""ember-jailer builds the jail it promises: the probe binary, exec'd in place of ember,
reports what it sees from inside and the test checks /proc/<pid> from outside."""
import json
import os
import pathlib
import signal
import stat
import subprocess
import uuid

import pytest

from test_jailer_helpers import base  # noqa: F401 (the --chroot-base-dir fixture)
from test_jailer_helpers import (EXEC_NAME, JAILER, PROBE, TIMEOUT, Launch, base_args,
                                 pid_alive, remove_cgroup_tree, require_binaries, run_jailer,
                                 v1_mount, v2_mount, wait_for)

UID, GID = 12345, 23456


@pytest.fixture
def launches():
    """Probes started by a test; all stopped at the end even if the test failed."""
    started = []
    yield started
    for launch in started:
        launch.stop()


def new_id():
    return "t-" + uuid.uuid4().hex[:12]


def launch(launches, base, jail_id, *args, **kw):
    item = Launch(base, jail_id, [*base_args(base, jail_id, UID, GID), *args], **kw)
    launches.append(item)
    return item


def test_help_and_version():
    require_binaries()
    out = run_jailer(["--help"])
    assert out.returncode == 0
    for flag in ("--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--netns",
                 "--cgroup", "--cgroup-version", "--parent-cgroup", "--resource-limit",
                 "--daemonize", "--new-pid-ns", "--version"):
        assert flag in out.stdout
    out = run_jailer(["--version"])
    assert out.returncode == 0 and out.stdout.startswith("ember-jailer ")


def test_jail_contents_and_credentials(base, launches):
    jail_id = new_id()
    # An inherited fd above 2, an environment variable, a blocked and an ignored signal:
    # all must be gone in the jail.
    r, w = os.pipe()

    def dirty_signals():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    try:
        j = launch(launches, base, jail_id, extra=("extra-arg",), pass_fds=(r,),
                   env={"SECRET": "x", "PATH": "/usr/bin"}, preexec_fn=dirty_signals)
    finally:
        os.close(r)
        os.close(w)
    rep = j.report

    # Exec'd in place: same pid as the jailer, argv as Firecracker's jailer builds it.
    assert j.pid == j.proc.pid
    assert rep["pid"] == j.pid
    argv = rep["argv"]
    assert argv[:3] == [f"/{EXEC_NAME}", "--id", jail_id]
    assert argv[3] == "--start-time-us" and argv[5] == "--start-time-cpu-us"
    assert argv[7] == "--parent-cpu-time-us"
    assert all(argv[i].isdigit() for i in (4, 6, 8))
    assert int(argv[4]) <= rep["mono_us"]
    assert argv[9:] == ["--wait", "extra-arg"]  # what followed "--"

    # Credentials: ids, no groups, every capability set empty, no_new_privs.
    assert rep["uid"] == [UID] * 3 and rep["gid"] == [GID] * 3
    assert rep["groups"] == []
    assert rep["caps"] == {k: 0 for k in
                           ("effective", "permitted", "inheritable", "bounding", "ambient")}
    assert rep["no_new_privs"] == 1
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(j.status(key), 16) == 0, key
    assert j.status("NoNewPrivs") == "1"
    assert j.status("Groups") == ""

    # Clean process: only stdio, empty environment, default fd limit.
    assert rep["fds"] == [0, 1, 2]
    assert rep["env"] == [] and j.host["environ"] == ""
    assert int(j.status("SigBlk"), 16) == 0 and int(j.status("SigIgn"), 16) == 0
    assert rep["rlimits"]["nofile"] == [2048, 2048]
    assert rep["rlimits"]["fsize"][0] == 2**64 - 1
    assert rep["rlimits"]["core"] == [0, 0]  # a core would hold all guest RAM

    # The file tree: the binary copy, its pid file, the devices, /run; nothing else.
    tree = rep["tree"]
    # (No /dev/userfaultfd without --userfaultfd: test_jailer_hardening.)
    expected = {f"/{EXEC_NAME}", f"/{EXEC_NAME}.pid", "/dev", "/dev/net", "/dev/kvm",
                "/dev/net/tun", "/dev/urandom", "/run", "/run/probe.json.tmp"}
    assert set(tree) == expected
    devices = {"/dev/kvm": (10, 232), "/dev/net/tun": (10, 200), "/dev/urandom": (1, 9)}
    for path, (major, minor) in devices.items():
        e = tree[path]
        assert (e["type"], e["major"], e["minor"]) == ("chr", major, minor), path
        assert (e["uid"], e["gid"], e["mode"]) == (UID, GID, 0o600), path
    for path in ("/dev", "/dev/net", "/run"):
        assert tree[path]["type"] == "dir"
        assert (tree[path]["uid"], tree[path]["gid"], tree[path]["mode"]) == (UID, GID, 0o700)
    st = j.root.stat()  # the jail's "/": root's, sticky, writable by the VM's gid
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, GID, 0o1770)
    binary = tree[f"/{EXEC_NAME}"]
    assert (binary["uid"], binary["gid"], binary["mode"]) == (0, 0, 0o555)
    copy = j.root / EXEC_NAME
    assert copy.read_bytes() == PROBE.read_bytes()
    assert copy.stat().st_ino != PROBE.stat().st_ino
    assert rep["cwd"] == "/"

    # Mount table (read from outside: there is no /proc inside): only the jail, as "/",
    # not propagating back to the host.
    assert rep["mountinfo"] is None
    mounts = [line.split() for line in j.host["mountinfo"].splitlines()]
    assert [m[4] for m in mounts] == ["/"]
    assert mounts[0][3].endswith(f"/{EXEC_NAME}/{jail_id}/root")
    optional = mounts[0][6:mounts[0].index("-")]
    assert not any(tag.startswith("shared:") for tag in optional)
    assert pathlib.Path(f"/proc/{j.pid}/root").resolve() == pathlib.Path("/")  # its own view
    assert os.stat(f"/proc/{j.pid}/root").st_ino == j.root.stat().st_ino


def test_resource_limits(base, launches):
    jail_id = new_id()
    j = launch(launches, base, jail_id, "--resource-limit", "no-file=123",
               "--resource-limit", "fsize=1048576")
    assert j.report["rlimits"]["nofile"] == [123, 123]
    assert j.report["rlimits"]["fsize"] == [1048576, 1048576]


def test_daemonize(base, launches):
    jail_id = new_id()
    j = launch(launches, base, jail_id, "--daemonize")
    # The jailer's own process returns at once with 0; the probe is its grandchild.
    assert j.proc.wait(timeout=15) == 0
    assert j.proc.stdout.read() == b"" and j.proc.stderr.read() == b""
    assert j.pid != j.proc.pid and pid_alive(j.pid)
    rep = j.report
    assert rep["pid"] == j.pid
    # New session (the first child called setsid), not its leader (double fork).
    assert rep["sid"] not in (j.pid, os.getsid(0))
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{j.pid}/fd/{fd}") == "/dev/null"
    assert rep["uid"] == [UID] * 3 and rep["fds"] == [0, 1, 2]


def test_new_pid_ns(base, launches):
    jail_id = new_id()
    j = launch(launches, base, jail_id, "--new-pid-ns")
    assert j.proc.wait(timeout=15) == 0
    rep = j.report
    assert rep["pid"] == 1
    assert j.pid not in (1, j.proc.pid)
    assert j.status("NSpid").split() == [str(j.pid), "1"]
    assert os.readlink(f"/proc/{j.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert rep["caps"]["bounding"] == 0 and rep["uid"] == [UID] * 3


def test_new_pid_ns_with_daemonize(base, launches):
    jail_id = new_id()
    j = launch(launches, base, jail_id, "--daemonize", "--new-pid-ns")
    assert j.proc.wait(timeout=15) == 0
    assert j.report["pid"] == 1
    assert os.readlink(f"/proc/{j.pid}/fd/1") == "/dev/null"


@pytest.fixture
def netns():
    name = "ember-jt-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=15)
    yield pathlib.Path("/var/run/netns") / name
    subprocess.run(["ip", "netns", "del", name], check=True, timeout=15)


def test_netns(base, launches, netns):
    jail_id = new_id()
    j = launch(launches, base, jail_id, "--netns", str(netns))
    assert os.stat(f"/proc/{j.pid}/ns/net").st_ino == os.stat(netns).st_ino
    assert os.stat(f"/proc/{j.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


def proc_cgroups(text):
    """{controller or "" (v2): path} from /proc/<pid>/cgroup."""
    out = {}
    for line in text.splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def test_cgroup_v1(base, launches):
    if not v1_mount("cpuset") or not v1_mount("cpu"):
        pytest.skip("this host has no cgroup v1 cpuset/cpu hierarchy (cgroup v2 only)")
    jail_id = new_id()
    top = "ember-test-" + uuid.uuid4().hex[:8]
    parent = f"{top}/vms"
    args = ["--cgroup", "cpuset.cpus=0", "--cgroup", "cpu.shares=512", "--parent-cgroup", parent]
    controllers = ["cpuset", "cpu"]
    if v1_mount("pids"):
        args += ["--cgroup", "pids.max=50"]
        controllers.append("pids")
    try:
        j = launch(launches, base, jail_id, "--cgroup-version", "1", *args)
        paths = proc_cgroups(j.host["cgroup"])
        for c in controllers:
            assert paths[c] == f"/{parent}/{jail_id}", c
        cpuset = v1_mount("cpuset") / parent / jail_id
        assert (cpuset / "cpuset.cpus").read_text().strip() == "0"
        # cpuset.mems was not asked for: seeded from the root, through the empty parents.
        root_mems = (v1_mount("cpuset") / "cpuset.mems").read_text().strip()
        assert (cpuset / "cpuset.mems").read_text().strip() == root_mems
        assert (v1_mount("cpuset") / top / "cpuset.mems").read_text().strip() == root_mems
        assert (v1_mount("cpu") / parent / jail_id / "cpu.shares").read_text().strip() == "512"
        if "pids" in controllers:
            assert (v1_mount("pids") / parent / jail_id / "pids.max").read_text().strip() == "50"
        assert str(j.pid) in (cpuset / "tasks").read_text().split()
        j.stop()
    finally:
        for c in controllers:
            remove_cgroup_tree(v1_mount(c) / top, v1_mount(c) / parent / jail_id)


def v2_controller(mnt):
    """A controller enabled-able at the v2 root, with a file to write: pids on a pure v2 host,
    hugetlb on our hybrid machines (the only one left to the v2 hierarchy there)."""
    available = (mnt / "cgroup.controllers").read_text().split()
    if "pids" in available:
        return "pids", "pids.max", "42"
    if "hugetlb" in available:
        return "hugetlb", "hugetlb.2MB.max", "0"
    return None, None, None


def test_cgroup_v2(base, launches):
    mnt = v2_mount()
    if mnt is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    ctrl, file, value = v2_controller(mnt)
    jail_id = new_id()
    top = "ember-test-" + uuid.uuid4().hex[:8]
    parent = f"{top}/vms"
    args = ["--cgroup-version", "2", "--parent-cgroup", parent,
            "--cgroup", "cgroup.max.descendants=3"]
    if ctrl:
        args += ["--cgroup", f"{file}={value}"]
    root_enabled = (mnt / "cgroup.subtree_control").read_text().split()
    try:
        j = launch(launches, base, jail_id, *args)
        assert proc_cgroups(j.host["cgroup"])[""] == f"/{parent}/{jail_id}"
        leaf = mnt / parent / jail_id
        assert (leaf / "cgroup.max.descendants").read_text().strip() == "3"
        assert (leaf / "cgroup.procs").read_text().split() == [str(j.pid)]
        if ctrl:
            assert (leaf / file).read_text().strip() == value
            for level in (mnt, mnt / top, mnt / parent):
                assert ctrl in (level / "cgroup.subtree_control").read_text().split()
        j.stop()
    finally:
        remove_cgroup_tree(mnt / top, mnt / parent / jail_id)
        if ctrl and ctrl not in root_enabled:
            (mnt / "cgroup.subtree_control").write_text(f"-{ctrl}")


def test_cgroup_v2_existing_parent_only(base, launches):
    """v2 without --cgroup: no new cgroup, the process joins the given parent."""
    mnt = v2_mount()
    if mnt is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    jail_id = new_id()
    parent = "ember-test-" + uuid.uuid4().hex[:8]
    (mnt / parent).mkdir()
    try:
        j = launch(launches, base, jail_id, "--cgroup-version", "2", "--parent-cgroup", parent)
        assert proc_cgroups(j.host["cgroup"])[""] == f"/{parent}"
        assert not (mnt / parent / jail_id).exists()
        j.stop()
    finally:
        (mnt / parent).rmdir()


def test_default_base_dir_layout_is_per_exec_name_and_id(base, launches):
    """Two VMs side by side: separate jails, separate binary copies."""
    a, b = new_id(), new_id()
    ja = launch(launches, base, a)
    jb = launch(launches, base, b)
    assert ja.root != jb.root and ja.root.parent.parent == jb.root.parent.parent
    assert (ja.root / EXEC_NAME).stat().st_ino != (jb.root / EXEC_NAME).stat().st_ino
    assert stat.S_IMODE(ja.root.stat().st_mode) == 0o1770  # root's, sticky (pid file: F9)
    assert (ja.root.stat().st_uid, ja.root.stat().st_gid) == (0, GID)


def test_jailed_ember_serves_its_api_in_the_jail(base):
    """The real, static ember in a jail: its API socket appears under the jail's /run, it got
    --id from the jailer, it runs as the VM's uid with no capabilities, and SIGTERM ends it.
    (Booting a guest this way needs Linux-capable KVM: test_jailer_boot.py.)"""
    ember = PROBE.parents[1] / "ember"
    jail_id = new_id()
    root = base / "ember" / jail_id / "root"
    sock = root / "run" / "api.sock"
    proc = subprocess.Popen([str(JAILER), *base_args(base, jail_id, UID, GID)[:2], "--exec-file",
                             str(ember), *base_args(base, jail_id, UID, GID)[4:], "--",
                             "--api-sock", "/run/api.sock"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, "ember's API socket")
        assert proc.poll() is None, proc.communicate()[0]
        r = subprocess.run(["curl", "-sS", "--unix-socket", str(sock), "http://localhost/"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        info = json.loads(r.stdout)
        assert info["id"] == jail_id and info["state"] == "Not started", r
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and sock.stat().st_uid == UID
        with open(f"/proc/{proc.pid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        assert status["Uid"].split()[:3] == [str(UID)] * 3
        assert status["CapEff"] == "0000000000000000" and status["NoNewPrivs"] == "1"
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=TIMEOUT)[0]
        assert proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
