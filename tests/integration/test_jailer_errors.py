"""ember-jailer refuses bad input with one clear line and a distinct exit code, and leaves
nothing half-made behind."""
import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

from test_jailer_helpers import base  # noqa: F401 (the --chroot-base-dir fixture)
from test_jailer_helpers import (EXEC_NAME, JAILER, PROBE, Launch, base_args,
                                 require_binaries, rmdir_tree, run_jailer, v1_mount, v2_mount)

# The exit codes of jailer/jailer.h (enum jail_exit).
USAGE, BAD_ID, BAD_EXEC, BAD_UID_GID, BAD_CHROOT, BAD_NETNS = 2, 3, 4, 5, 6, 7
BAD_CGROUP, CGROUP_FILE, BAD_RLIMIT, JAIL_EXISTS, NOT_ROOT = 8, 9, 10, 11, 12
RLIMIT, DAEMON = 16, 18


def new_id():
    return "e-" + uuid.uuid4().hex[:12]


def refused(result, code, message):
    """One line on stderr naming the problem, the expected code, nothing on stdout."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ember-jailer: ")
    assert message in lines[0], lines[0]
    assert result.stdout == ""


def assert_empty(base):
    assert list(pathlib.Path(base).iterdir()) == []


def replace(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize("flag,value,code,message", [
    ("--id", "a/b", BAD_ID, "--id 'a/b'"),
    ("--id", "../../etc", BAD_ID, "letters, digits or '-'"),
    ("--id", "x" * 65, BAD_ID, "1 to 64"),
    ("--id", "", BAD_ID, "--id ''"),
    ("--id", "a_b", BAD_ID, "--id"),
    ("--exec-file", "/nonexistent/ember", BAD_EXEC, "No such file or directory"),
    ("--exec-file", "/tmp", BAD_EXEC, "not a regular file"),
    ("--exec-file", str(PROBE.parent / ".." / "tests" / PROBE.name), BAD_EXEC, "'..'"),
    ("--uid", "abc", BAD_UID_GID, "--uid 'abc'"),
    ("--uid", "4294967295", BAD_UID_GID, "--uid"),
    ("--gid", "-5", BAD_UID_GID, "--gid '-5'"),
    ("--chroot-base-dir", "relative/dir", BAD_CHROOT, "absolute"),
    ("--chroot-base-dir", "/tmp/../etc", BAD_CHROOT, "'..'"),
])
def test_bad_required_values(base, flag, value, code, message):
    args = replace(base_args(base, new_id()), flag, value)
    refused(run_jailer(args), code, message)
    assert_empty(base)


@pytest.mark.parametrize("extra,code,message", [
    (["--netns", "/var/run/netns/ember-no-such-ns"], BAD_NETNS, "No such file or directory"),
    (["--netns", "var/run/netns/x"], BAD_NETNS, "absolute"),
    (["--cgroup", "cpuset.cpus"], BAD_CGROUP, "FILE=VALUE"),
    (["--cgroup", "../../x.y=1"], BAD_CGROUP, "<controller>.<name>"),
    (["--cgroup", "cpu.shares="], BAD_CGROUP, "non-empty"),
    (["--cgroup-version", "3"], BAD_CGROUP, "1 or 2"),
    (["--parent-cgroup", "../escape"], BAD_CGROUP, "relative path"),
    (["--parent-cgroup", "/abs"], BAD_CGROUP, "relative path"),
    (["--cgroup", "nosuchctl.max=1"], CGROUP_FILE, "'nosuchctl' is not mounted"),
    (["--cgroup-version", "2", "--cgroup", "nosuchctl.max=1"], CGROUP_FILE, "not available"),
    (["--cgroup-version", "2", "--parent-cgroup", "ember-no-such-cgroup"], CGROUP_FILE,
     "No such file or directory"),
    (["--resource-limit", "nofile=1"], BAD_RLIMIT, "no-file, fsize or core"),
    (["--resource-limit", "fsize=big"], BAD_RLIMIT, "decimal"),
    # Above fs.nr_open: refused by setrlimit after the jail exists, which is then removed.
    (["--resource-limit", "no-file=4294967296"], RLIMIT, "setting no-file=4294967296"),
    (["--bogus"], USAGE, "unknown argument '--bogus'"),
    (["--daemonize=yes"], USAGE, "takes no value"),
    (["--uid", "1"], USAGE, "more than once"),
    (["--netns"], USAGE, "--netns needs a value"),
])
def test_bad_optional_values(base, extra, code, message):
    refused(run_jailer([*base_args(base, new_id()), *extra]), code, message)
    assert_empty(base)


@pytest.mark.parametrize("missing", ["--id", "--exec-file", "--uid", "--gid"])
def test_missing_required_flag(base, missing):
    args = base_args(base, new_id())
    i = args.index(missing)
    del args[i:i + 2]
    refused(run_jailer(args), USAGE, f"missing {missing}")
    assert_empty(base)


def test_netns_path_that_is_not_a_netns_undoes_the_jail(base):
    not_ns = base.parent / "not-a-netns"
    not_ns.write_text("")
    refused(run_jailer([*base_args(base, new_id()), "--netns", str(not_ns)]), BAD_NETNS,
            "joining the network namespace")
    assert_empty(base)


def test_cgroup_file_that_does_not_exist_v1_undoes_everything(base):
    mnt = v1_mount("cpuset")
    if mnt is None:
        pytest.skip("this host has no cgroup v1 cpuset hierarchy (cgroup v2 only)")
    top = "ember-test-" + uuid.uuid4().hex[:8]
    before = set(os.listdir(mnt))
    try:
        result = run_jailer([*base_args(base, new_id()), "--parent-cgroup", f"{top}/vms",
                             "--cgroup", "cpuset.cpus=0", "--cgroup", "cpuset.no_such_file=1"])
        refused(result, CGROUP_FILE, "cpuset.no_such_file does not exist")
        assert set(os.listdir(mnt)) == before
        assert_empty(base)
    finally:
        rmdir_tree(mnt / top)  # only if the jailer failed to undo its work


def test_cgroup_file_that_does_not_exist_v2_undoes_everything(base):
    mnt = v2_mount()
    if mnt is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    top = "ember-test-" + uuid.uuid4().hex[:8]
    before = set(os.listdir(mnt))
    try:
        result = run_jailer([*base_args(base, new_id()), "--cgroup-version", "2",
                             "--parent-cgroup", f"{top}/vms", "--cgroup", "cgroup.no_such=1"])
        refused(result, CGROUP_FILE, "cgroup.no_such does not exist")
        assert set(os.listdir(mnt)) == before
        assert_empty(base)
    finally:
        rmdir_tree(mnt / top)  # only if the jailer failed to undo its work


def test_existing_jail_is_refused_and_left_alone(base):
    jail_id = new_id()
    first = Launch(base, jail_id, base_args(base, jail_id))
    try:
        marker = first.root / "run" / "probe.json"
        before = marker.read_bytes()
        refused(run_jailer(base_args(base, jail_id)), JAIL_EXISTS, "already exists")
        assert marker.read_bytes() == before
        assert (first.root / EXEC_NAME).exists()
    finally:
        first.stop()


def test_existing_jail_directory_without_root_is_used(base):
    # As Firecracker's jailer: an existing, safe <base>/<exec>/<id> is used (Kata makes it);
    # test_jailer_existing.py has the unsafe and in-use trees.
    jail_id = new_id()
    (base / EXEC_NAME / jail_id).mkdir(parents=True)
    first = Launch(base, jail_id, base_args(base, jail_id))
    try:
        assert (first.root / EXEC_NAME).exists()
    finally:
        first.stop()


@pytest.mark.parametrize("level,mode,owner,message", [
    ("parent", 0o777, 0, "writable by group or others (mode 0777)"),
    ("parent", 0o755, 4242, "owned by uid 4242 (must be root)"),
    ("base", 0o775, 0, "writable by group or others (mode 0775)"),
    ("base", 0o700, 4242, "owned by uid 4242 (must be root)"),
])
def test_unsafe_chroot_base_or_ancestor_is_refused(tmp_path, level, mode, owner, message):
    # Whoever else can write (or owns) a directory on the way to the jail could swap the jail
    # tree under the jailer between its checks and its use. Nothing is created.
    require_binaries()
    parent = tmp_path / "srv"
    base = parent / "jails"
    base.mkdir(parents=True)
    path = {"parent": parent, "base": base}[level]
    os.chmod(path, mode)
    os.chown(path, owner, owner)
    refused(run_jailer(base_args(base, new_id())), BAD_CHROOT, message)
    assert_empty(base)


def test_chroot_base_on_the_way_through_a_sticky_directory_is_used(tmp_path):
    # A root-owned sticky directory (like /tmp) on the way is fine: others may add entries
    # there, but not rename or remove root's. The missing directories below it are made.
    require_binaries()
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    base = sticky / "a" / "jails"
    jail_id = new_id()
    first = Launch(base, jail_id, base_args(base, jail_id))
    try:
        assert (first.root / EXEC_NAME).exists()
    finally:
        first.stop()
    shutil.rmtree(sticky / "a", ignore_errors=True)


def test_chroot_base_that_is_a_file_is_refused(tmp_path):
    require_binaries()
    (tmp_path / "file").write_text("")
    refused(run_jailer(base_args(tmp_path / "file" / "jails", new_id())), BAD_CHROOT,
            "Not a directory")


def test_non_root_caller_is_refused(base):
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             str(JAILER), *base_args(base, new_id())],
                            capture_output=True, text=True, timeout=15)
    refused(result, NOT_ROOT, "must run as root")
    assert_empty(base)


def test_non_root_caller_may_ask_for_help():
    require_binaries()
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             str(JAILER), "--help"], capture_output=True, text=True, timeout=15)
    assert result.returncode == 0 and "--exec-file" in result.stdout


@pytest.mark.parametrize("path,message", [
    ("/bin/true", "is dynamically linked (loader /lib"),
    ("/usr/bin/ldd", "is a script"),
    ("/etc/passwd", "is not an x86-64 ELF executable"),
])
def test_exec_file_that_cannot_run_in_an_empty_jail(base, path, message):
    """Found before anything is made: the empty jail has no loader, libraries or interpreter,
    and an exec failing after pivot_root would leave the jail behind."""
    args = replace(base_args(base, new_id()), "--exec-file", path)
    refused(run_jailer(args), BAD_EXEC, message)
    assert_empty(base)


def pids_cgroup():
    """(--cgroup-version, mount of the hierarchy with the pids controller), or skip."""
    if v1_mount("pids"):
        return "1", v1_mount("pids")
    mnt = v2_mount()
    if mnt and "pids" in (mnt / "cgroup.controllers").read_text().split():
        return "2", mnt
    pytest.skip("no pids cgroup controller on this host")


@pytest.mark.parametrize("detach", ["--daemonize", "--new-pid-ns"])
def test_failure_after_pivot_root_is_undone(base, detach):
    """pids.max=1 lets the jailer into its cgroup but not fork: it fails after pivot_root,
    and still removes the jail (device nodes included) and the cgroup."""
    version, mnt = pids_cgroup()
    top = "ember-test-" + uuid.uuid4().hex[:8]
    enabled = (mnt / "cgroup.subtree_control").read_text().split() if version == "2" else []
    before = set(os.listdir(mnt))
    try:
        result = run_jailer([*base_args(base, new_id()), "--cgroup-version", version,
                             "--parent-cgroup", f"{top}/vms", "--cgroup", "pids.max=1",
                             detach])
        refused(result, DAEMON, "Resource temporarily unavailable")
        assert set(os.listdir(mnt)) == before
        assert_empty(base)
    finally:
        rmdir_tree(mnt / top)  # only if the jailer failed to undo its work
        if version == "2" and "pids" not in enabled:
            (mnt / "cgroup.subtree_control").write_text("-pids")
