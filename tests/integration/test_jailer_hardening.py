"""The jail's hygiene beyond Firecracker's jailer (security review F3, F7-F11): no controlling
terminal for the VMM, no core dumps, /dev/userfaultfd only when asked, pid files the VM's uid
cannot replace, the chroot base walked without following symlinks and safe from others, and
a warning for uid/gid 0."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import pytest

from test_jailer_helpers import base  # noqa: F401 (the --chroot-base-dir fixture)
from test_jailer_helpers import (EXEC_NAME, JAILER, TIMEOUT, Launch, base_args, jail_root,
                                 require_binaries, run_jailer, wait_for)

UID, GID = 12345, 23456
BAD_UID_GID, BAD_CHROOT, DEVICES = 5, 6, 17


def new_id():
    return "h-" + uuid.uuid4().hex[:12]


def report_of(base, jail_id):
    return json.loads((jail_root(base, jail_id) / "run" / "probe.json").read_text())


def one_error(result, code, message):
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("ember-jailer: "), result.stderr
    assert message in lines[0], lines[0]


# Runs argv[3:] on the terminal that is stdin, made the controlling terminal of a new session:
# as that session's leader (the way pty.fork() starts a program), or as a shell's foreground
# job does (its own process group, in the foreground, not the session's leader). A job's shell
# stays until the probe's report argv[2] exists (the session leader's exit would hang the
# terminal up and take it from the probe, whatever the jailer did).
ON_TERMINAL = r'''
import fcntl, os, signal, sys, termios, time
os.setsid()
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
if sys.argv[1] == "job":
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(0, os.getpid())
        os.execv(sys.argv[3], sys.argv[3:])
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    for _ in range(1000):
        if code or os.path.exists(sys.argv[2]):
            break
        time.sleep(0.01)
    sys.exit(code)
os.execv(sys.argv[3], sys.argv[3:])
'''


@pytest.mark.parametrize("how,flags", [("leader", []), ("job", []), ("job", ["--new-pid-ns"]),
                                       ("leader", ["--new-pid-ns"])])
def test_vmm_cannot_push_input_into_the_operators_terminal(base, how, flags):
    # F3: run under a pseudo-terminal, the VMM must not keep it as its controlling terminal:
    # TIOCSTI on it (fd 0 is still the terminal) is then refused.
    require_binaries()
    jail_id = new_id()
    master, slave = os.openpty()
    try:
        report = jail_root(base, jail_id) / "run" / "probe.json"
        r = subprocess.run([sys.executable, "-c", ON_TERMINAL, how, str(report), str(JAILER),
                            *base_args(base, jail_id, UID, GID), *flags],
                           stdin=slave, stdout=slave, stderr=slave, timeout=TIMEOUT)
        os.set_blocking(master, False)
        try:
            out = os.read(master, 65536)
        except BlockingIOError:
            out = b""
        assert r.returncode == 0, out
        wait_for(report.exists, "the probe's report")  # with --new-pid-ns, after the jailer
        tty = report_of(base, jail_id)["tty"]
        assert tty == {"tiocsti": 1, "ctty": 0}, tty  # EPERM, not its controlling terminal
    finally:
        os.close(master)
        os.close(slave)


def test_no_core_dumps_unless_asked(base):
    # F8: a VMM's core holds all guest RAM: RLIMIT_CORE is 0 (soft and hard) by default.
    require_binaries()
    jail_id = new_id()
    assert run_jailer(base_args(base, jail_id, UID, GID)).returncode == 0
    assert report_of(base, jail_id)["rlimits"]["core"] == [0, 0]
    jail_id = new_id()
    r = run_jailer(base_args(base, jail_id, UID, GID) + ["--resource-limit", "core=4096"])
    assert r.returncode == 0, r.stderr
    assert report_of(base, jail_id)["rlimits"]["core"] == [4096, 4096]


def host_has_userfaultfd():
    with open("/proc/misc") as f:
        return any(line.split()[1:] == ["userfaultfd"] for line in f)


def test_userfaultfd_only_with_the_flag(base):
    # F7: the node hands out kernel-fault userfaultfds; only --userfaultfd makes it.
    require_binaries()
    jail_id = new_id()
    assert run_jailer(base_args(base, jail_id, UID, GID)).returncode == 0
    assert "/dev/userfaultfd" not in report_of(base, jail_id)["tree"]
    jail_id = new_id()
    r = run_jailer(base_args(base, jail_id, UID, GID) + ["--userfaultfd"])
    if not host_has_userfaultfd():
        one_error(r, DEVICES, "no userfaultfd device")
        return
    assert r.returncode == 0, r.stderr
    node = report_of(base, jail_id)["tree"]["/dev/userfaultfd"]
    minor = os.minor(os.stat("/dev/userfaultfd").st_rdev)
    assert (node["type"], node["major"], node["minor"]) == ("chr", 10, minor)
    assert (node["uid"], node["gid"], node["mode"]) == (UID, GID, 0o600)


def as_vm_uid(cwd, fn):
    """Runs fn() in a child with the VM's uid and gid and cwd; returns the OSError's errno, or 0."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(GID)
            os.setuid(UID)
            fn()
        except OSError as e:
            code = e.errno
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_pid_files_cannot_be_replaced_by_the_vm(base):
    # F9: <id>/<exec>.pid is in a root-owned directory outside the jail; root/<exec>.pid
    # (Firecracker's place, read by Kata) is in the sticky, root-owned jail root.
    require_binaries()
    jail_id = new_id()
    j = Launch(base, jail_id, base_args(base, jail_id, UID, GID))
    try:
        outside = j.root.parent / f"{EXEC_NAME}.pid"
        inside = j.root / f"{EXEC_NAME}.pid"
        for path in (outside, inside):
            st = path.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o644), path
            assert int(path.read_text()) == j.pid
        st = j.root.parent.stat()
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
        # The VM's uid (in the jail's "/") can neither remove, rename nor rewrite them.
        name = f"{EXEC_NAME}.pid"
        assert as_vm_uid(j.root, lambda: os.unlink(name)) == 1  # EPERM (sticky)
        assert as_vm_uid(j.root, lambda: os.rename(name, "x")) == 1
        assert as_vm_uid(j.root, lambda: open(name, "w")) == 13  # EACCES
        assert as_vm_uid(j.root, lambda: os.unlink(EXEC_NAME)) == 1  # nor the binary copy
        assert as_vm_uid(j.root, lambda: open("mine", "w").close()) == 0  # its own files: yes
        assert as_vm_uid(j.root, lambda: os.unlink("mine")) == 0
        assert as_vm_uid(j.root.parent, lambda: os.unlink(name)) == 13
    finally:
        j.stop()


def test_a_pid_file_left_outside_the_jail_is_refused(base):
    require_binaries()
    jail_id = new_id()
    (jail_root(base, jail_id)).mkdir(parents=True)
    (jail_root(base, jail_id).parent / f"{EXEC_NAME}.pid").write_text("1")
    r = run_jailer(base_args(base, jail_id, UID, GID))
    one_error(r, 11, "in use or left over")


@pytest.mark.parametrize("where", ["base", "above", "exec-dir"])
def test_symlink_on_the_way_is_refused(tmp_path, where):
    # F10: the way to the jail is walked with O_NOFOLLOW; a symlink anywhere is refused and
    # nothing is made at its target.
    require_binaries()
    real = tmp_path / "real"
    (real / "jails").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if where == "base":
        link = tmp_path / "link"
        link.symlink_to(real / "jails")
        base, code = link, BAD_CHROOT
    elif where == "above":
        link = tmp_path / "link"
        link.symlink_to(real)
        base, code = link / "jails", BAD_CHROOT
    else:
        link = real / "jails" / EXEC_NAME
        link.symlink_to(elsewhere)
        base, code = real / "jails", 11
    one_error(run_jailer(base_args(base, new_id(), UID, GID)), code, "is a symlink")
    assert list(elsewhere.iterdir()) == []
    assert not (real / "jails" / EXEC_NAME).exists() or where == "exec-dir"


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o1775])
def test_a_base_others_can_write_is_refused(tmp_path, mode):
    # F10: anyone who can write the base could make <base>/<exec> first; sticky does not help.
    require_binaries()
    base = tmp_path / "jails"
    base.mkdir()
    os.chmod(base, mode)
    one_error(run_jailer(base_args(base, new_id(), UID, GID)), BAD_CHROOT,
              "writable by group or others")
    assert list(base.iterdir()) == []


def test_uid_0_warns_and_strict_sandbox_refuses_it(base):
    # F11: Kata passes --uid 0 --gid 0, so they work, with a warning saying what id 0 keeps.
    require_binaries()
    jail_id = new_id()
    r = run_jailer(base_args(base, jail_id, 0, 0))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ember-jailer: warning: --uid 0 --gid 0")
    assert "owner rights on root's files" in lines[0] and "kill(2) on root's processes" in lines[0]
    r = run_jailer(base_args(base, new_id(), UID, 0))
    assert r.returncode == 0 and "warning: --uid 12345 --gid 0" in r.stderr, r.stderr
    assert run_jailer(base_args(base, new_id(), UID, GID)).stderr == ""
    jail_id = new_id()
    one_error(run_jailer(base_args(base, jail_id, 0, 0) + ["--strict-sandbox"]), BAD_UID_GID,
              "--strict-sandbox")
    assert not jail_root(base, jail_id).parent.exists()
    assert run_jailer(base_args(base, new_id(), UID, GID) + ["--strict-sandbox"]).returncode == 0
    shutil.rmtree(base, ignore_errors=True)
