"""ember-jailer and a jail directory that already exists (issue 20): Kata Containers makes
<base>/<exec>/<id>/root itself, bind-mounts the kernel, disks, FIFOs and its config file into it,
then runs the jailer. Like Firecracker's jailer, ember-jailer uses such a tree, but only when it
is safe (jailer/README.md): real directories, root-owned, writable by nobody else, and none of
what the jailer puts there (binary copy, pid file, dev/) present yet. Runs with the jail probe;
no KVM needed."""
import os
import subprocess
import uuid

import pytest

from test_jailer_helpers import base  # noqa: F401 (the --chroot-base-dir fixture)
from test_jailer_helpers import (EXEC_NAME, JAILER, Launch, base_args, run_jailer)

JAIL_EXISTS = 11


def new_id():
    return "x-" + uuid.uuid4().hex[:12]


def refused(result, message):
    # (--uid 0 adds its warning line: test_jailer_hardening)
    lines = [line for line in result.stderr.splitlines()
             if not line.startswith("ember-jailer: warning: ")]
    assert result.returncode == JAIL_EXISTS, result.stderr
    assert len(lines) == 1 and lines[0].startswith("ember-jailer: "), result.stderr
    assert message in lines[0], lines[0]


def bind(src, dst):
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)


def umount(path):
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def kata_tree(base, tmp_path):
    """<base>/<exec>/<id>/root made as Kata's fc.go makes it: root bind-mounted onto itself,
    root/run (0750), a kernel and a config file bind-mounted in, a zero-byte placeholder drive.
    Yields (jail id, root); unmounts everything afterwards."""
    assert os.geteuid() == 0
    jail_id = new_id()
    root = base / EXEC_NAME / jail_id / "root"
    (root / "run").mkdir(parents=True, mode=0o750)
    os.chmod(root.parent, 0o750)
    os.chmod(root, 0o750)
    mounts = [root]
    bind(root, root)
    src = tmp_path / "assets"
    src.mkdir()
    for name, data in (("vmlinux", b"kernel"), ("fcConfig.json", b"{}")):
        (src / name).write_bytes(data)
        (root / name).write_bytes(b"")
        bind(src / name, root / name)
        mounts.insert(0, root / name)
    (root / "drive_0").write_bytes(b"")
    try:
        yield jail_id, root, src
    finally:
        for m in mounts:
            umount(m)


def test_kata_tree_is_used_and_left_as_it_was(base, kata_tree):
    jail_id, root, src = kata_tree
    j = Launch(base, jail_id, base_args(base, jail_id, uid=0, gid=0))
    try:
        tree = set(j.report["tree"])
        # what Kata put there is seen inside the jail, next to what the jailer adds
        assert {"/vmlinux", "/fcConfig.json", "/drive_0", "/run", f"/{EXEC_NAME}",
                f"/{EXEC_NAME}.pid", "/dev/kvm"} <= tree
        assert int((root / f"{EXEC_NAME}.pid").read_text()) == j.pid
        assert (root / "vmlinux").read_bytes() == b"kernel"
        # a second jailer for the same id finds the jail in use
        refused(run_jailer(base_args(base, jail_id, uid=0, gid=0)), "in use")
    finally:
        j.stop()
    assert (src / "vmlinux").read_bytes() == b"kernel"  # the host's file is untouched


@pytest.mark.parametrize("leftover", ["binary", "pid", "dev"])
def test_tree_with_the_jailers_own_entries_is_refused(base, leftover):
    # A jail in use or left over by an earlier VM (binary copy, pid file or dev/ present).
    jail_id = new_id()
    root = base / EXEC_NAME / jail_id / "root"
    root.mkdir(parents=True)
    path = {"binary": root / EXEC_NAME, "pid": root / f"{EXEC_NAME}.pid",
            "dev": root / "dev"}[leftover]
    if leftover == "dev":
        path.mkdir()
    else:
        path.write_text("1")
    refused(run_jailer(base_args(base, jail_id)), "in use or left over")
    assert sorted(p.name for p in root.iterdir()) == [path.name]  # nothing added or removed


@pytest.mark.parametrize("level", ["exec", "id", "root", "run"])
def test_symlink_in_the_tree_is_refused(base, tmp_path, level):
    # A symlink anywhere from <base>/<exec> down could point the jail (mknod, chown, the binary
    # copy) at any host directory.
    jail_id = new_id()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exec_dir, id_dir = base / EXEC_NAME, base / EXEC_NAME / jail_id
    target = {"exec": exec_dir, "id": id_dir, "root": id_dir / "root",
              "run": id_dir / "root" / "run"}[level]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(elsewhere)
    refused(run_jailer(base_args(base, jail_id)), "is a symlink")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("level,mode,owner,message", [
    ("id", 0o777, 0, "writable by group or others"),
    ("root", 0o770, 0, "writable by group or others"),
    ("id", 0o755, 4242, "owned by uid 4242"),
    ("root", 0o700, 4242, "owned by uid 4242"),
    ("exec", 0o757, 0, "writable by group or others"),
])
def test_unsafe_directory_in_the_tree_is_refused(base, level, mode, owner, message):
    # Another user who could write into or owns a directory of the tree could swap its entries
    # between the jailer's checks and their use.
    jail_id = new_id()
    root = base / EXEC_NAME / jail_id / "root"
    root.mkdir(parents=True)
    path = {"exec": base / EXEC_NAME, "id": root.parent, "root": root}[level]
    os.chmod(path, mode)
    os.chown(path, owner, owner)
    refused(run_jailer(base_args(base, jail_id)), message)
    assert list(root.iterdir()) == []


def test_root_owned_by_the_vm_uid_is_refused(base):
    # A root/ that belongs to --uid lets that uid put a symlink at root/dev (or root/run) between
    # the jailer's checks and its mknod/chown there. Kata makes root/ as root.
    jail_id = new_id()
    root = base / EXEC_NAME / jail_id / "root"
    root.mkdir(parents=True)
    os.chown(root, 12345, 23456)
    refused(run_jailer(base_args(base, jail_id)), "is owned by uid 12345 (must be root)")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("leftover", ["dev", "run"])
def test_symlink_inside_the_root_is_refused_and_nothing_outside_is_touched(base, tmp_path,
                                                                           leftover):
    # root/dev (or root/run) as a relative symlink out of the jail, to a stand-in for the host's
    # /dev: refused before anything is made, and neither the link nor its target changes.
    jail_id = new_id()
    root = base / EXEC_NAME / jail_id / "root"
    root.mkdir(parents=True)
    host_dev = tmp_path / "host-dev"
    host_dev.mkdir()
    (host_dev / "kvm").write_text("host")
    os.chmod(host_dev, 0o755)
    link = root / leftover
    link.symlink_to(os.path.relpath(host_dev, root))
    assert (link / "kvm").read_text() == "host"
    r = run_jailer(base_args(base, jail_id))
    refused(r, "in use or left over" if leftover == "dev" else "is a symlink")
    assert sorted(p.name for p in root.iterdir()) == [leftover]
    assert link.is_symlink() and (link / "kvm").read_text() == "host"
    st = os.stat(host_dev)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
    assert sorted(p.name for p in host_dev.iterdir()) == ["kvm"]


def test_file_where_the_root_should_be_is_refused(base):
    jail_id = new_id()
    (base / EXEC_NAME / jail_id).mkdir(parents=True)
    (base / EXEC_NAME / jail_id / "root").write_text("not a directory")
    refused(run_jailer(base_args(base, jail_id)), "not a directory")


def test_failure_in_an_existing_tree_removes_only_what_the_jailer_made(base):
    # A bad --netns fails after the jail was made: the jailer's entries go, the tree stays.
    jail_id = new_id()
    root = base / EXEC_NAME / jail_id / "root"
    (root / "run").mkdir(parents=True)
    (root / "rootfs").write_bytes(b"disk")
    r = run_jailer(base_args(base, jail_id) + ["--netns", "/proc/self/status"])
    assert r.returncode == 7, r.stderr
    assert sorted(p.name for p in root.iterdir()) == ["rootfs", "run"]
    assert (root / "rootfs").read_bytes() == b"disk"


def mounts_at(path):
    """Mount points (from this process's mountinfo) at or below path."""
    path = str(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted(p for p in points if p == path or p.startswith(path + "/"))


def test_failure_in_a_kata_tree_leaves_the_orchestrators_mounts(base, kata_tree):
    # A bad --netns fails before the jailer has its own mount namespace: the bind mounts at
    # root/ (root onto itself, the kernel, the config file) are the orchestrator's, not the
    # jailer's, and must all still be there, with their files, afterwards.
    jail_id, root, src = kata_tree
    before = mounts_at(root)
    assert len(before) >= 3 and str(root) in before
    r = run_jailer(base_args(base, jail_id, uid=0, gid=0) + ["--netns", "/proc/self/status"])
    assert r.returncode == 7, r.stderr
    assert mounts_at(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["drive_0", "fcConfig.json", "run",
                                                      "vmlinux"]
    assert (root / "vmlinux").read_bytes() == b"kernel"
    assert (root / "fcConfig.json").read_bytes() == b"{}"
    assert (src / "vmlinux").read_bytes() == b"kernel"
    # and the tree is still usable: the next jailer for this id runs in it
    j = Launch(base, jail_id, base_args(base, jail_id, uid=0, gid=0))
    try:
        assert {"/vmlinux", "/fcConfig.json", "/dev/kvm"} <= set(j.report["tree"])
    finally:
        j.stop()


COPY_FAILS = r"""
set -e
base=$1; id=$2; shift 2
mount -t tmpfs -o size=64k,mode=0755 jails "$base"
mkdir -p "$base/jail-probe/$id/root"
echo disk > "$base/jail-probe/$id/root/rootfs"
rc=0
"$@" 2>"$base/err" || rc=$?
echo "rc=$rc"
echo "err=$(cat "$base/err")"
ls -A "$base/jail-probe/$id/root"
"""


def test_failed_binary_copy_is_removed(base):
    # The base is a 64 KiB tmpfs (in a mount namespace of its own): the ~800 KiB copy of the
    # binary fails with ENOSPC. The partial copy is the jailer's (O_EXCL) and must go, or every
    # later jailer for this id would find the jail "in use".
    jail_id = new_id()
    assert os.path.getsize(base_args(base, jail_id)[3]) > 64 * 1024
    r = subprocess.run(["unshare", "-m", "sh", "-c", COPY_FAILS, "sh", str(base), jail_id,
                        str(JAILER)] + base_args(base, jail_id),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "rc=14", r.stdout
    assert lines[1].startswith("err=ember-jailer: copying ") and "No space left" in lines[1]
    assert lines[2:] == ["rootfs"], r.stdout  # no partial binary copy left in the jail
