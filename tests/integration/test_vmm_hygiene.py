"""ember's own process hygiene (security review F8): a core or a same-uid ptrace would expose
all guest RAM, so ember is not dumpable and has RLIMIT_CORE 0 (soft and hard) unless
--allow-core-dumps. Run as an unprivileged uid, as in a jail: for a non-dumpable process
/proc/<pid> belongs to root instead of the process's uid."""
import os
import pathlib
import subprocess

import pytest

from api_client import Ember

UID = GID = 34567


def core_limit(pid):
    for line in pathlib.Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit")


def as_vm_uid():
    os.setgroups([])
    os.setgid(GID)
    os.setuid(UID)


@pytest.mark.parametrize("allow", [False, True])
def test_not_dumpable_and_no_core_unless_asked(ember_bin, scratch, allow):
    os.chmod(scratch, 0o777)
    out = scratch / "ember.out"
    args = [str(ember_bin), "--api-sock", str(scratch / "api.sock")]
    args += ["--allow-core-dumps"] if allow else []
    with open(out, "wb") as f:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, preexec_fn=as_vm_uid)
    e = Ember(proc, scratch / "api.sock", out)
    try:
        e.wait_ready()
        st = os.stat(f"/proc/{proc.pid}/status")
        if allow:
            assert st.st_uid == UID  # dumpable: its own uid owns /proc/<pid>
            assert core_limit(proc.pid) == core_limit(os.getpid())  # as inherited
        else:
            assert st.st_uid == 0, "dumpable"
            assert core_limit(proc.pid) == ["0", "0"]
    finally:
        e.close()


def test_run_accepts_the_flag(ember_bin, tmp_path):
    # `ember run` takes it too (the kernel then fails as usual, not the option)
    r = subprocess.run([str(ember_bin), "run", "--allow-core-dumps", "--kernel",
                        str(tmp_path / "none")], capture_output=True, text=True, timeout=30)
    assert "unknown option" not in r.stderr and "none" in r.stderr, r.stderr
    assert "--allow-core-dumps" in subprocess.run([str(ember_bin), "--help"], capture_output=True,
                                                  text=True, timeout=30).stdout
