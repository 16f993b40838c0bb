"""tests/host/run, the nested KVM test host: what a test relies on when it runs there.

One boot checks the sharing contract (repository and /tmp writable at the same paths,
the root read-only, the working directory kept, environment passed, exit status
returned, /dev/kvm present with a hardware-style KVM, a Unix socket creatable in
$EMBER_SCRATCH) and runs the KVM probe in there."""
import os
import signal
import time
import pathlib
import subprocess
import uuid

import pytest

from conftest import REPO

RUN = REPO / "tests" / "host" / "run"

pytestmark = pytest.mark.skipif(os.environ.get("EMBER_IN_TESTHOST") == "1",
                                reason="checks the test host from the outside")


def host_run(*args, timeout=600, env=None):
    return subprocess.run([str(RUN), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env, stdin=subprocess.DEVNULL)


def test_where_names_a_place():
    r = host_run("--where")
    assert r.returncode == 0
    assert r.stdout.split()[0] in ("local", "testhost")


def test_bad_usage_is_refused_without_booting():
    r = host_run("--timeout", "soon", "--", "true")
    assert r.returncode == 2
    assert "take numbers" in r.stderr
    r = host_run("--bogus", "true")
    assert r.returncode == 2
    assert "unknown option --bogus" in r.stderr
    r = host_run()
    assert r.returncode == 2


def test_sharing_contract_probe_and_exit_status(tmp_path):
    token = uuid.uuid4().hex
    tmp_file = pathlib.Path("/tmp") / f"ember-testhost-{token}"
    repo_file = REPO / "build" / f"testhost-{token}"
    script = f"""
set -u
echo "cwd=$(pwd)"
echo "in_testhost=$EMBER_IN_TESTHOST token=$EMBER_TEST_TOKEN"
echo written-in-guest > {tmp_file}
echo written-in-guest > {repo_file}
if touch /etc/ember-testhost-{token} 2>/dev/null; then echo root=writable; else echo root=readonly; fi
test -c /dev/kvm && echo kvm=present
grep -qw svm /proc/cpuinfo && echo cpu=svm
grep -q '^kvm_amd ' /proc/modules && echo module=kvm_amd
python3 -c "import socket; s = socket.socket(socket.AF_UNIX); s.bind('$EMBER_SCRATCH/t.sock'); print('unix_socket=ok')"
build/tests/kvm-probe
# the KVM VM tests/host/init keeps open (started in the background just before this command)
for i in $(seq 120); do
    ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q 'anon_inode:kvm-vm' && {{ echo kvm_keeper=yes; break; }}
    sleep 1
done
exit 7
"""
    env = dict(os.environ, EMBER_TEST_TOKEN=token)
    try:
        r = host_run("--timeout", "600", "--", "bash", "-c", script, env=env)
        out = r.stdout
        assert r.returncode == 7, f"stdout:\n{out}\nstderr:\n{r.stderr}"
        assert f"cwd={REPO}" in out
        assert f"in_testhost=1 token={token}" in out
        assert "root=readonly" in out
        assert "kvm=present" in out and "cpu=svm" in out and "module=kvm_amd" in out
        assert "unix_socket=ok" in out
        assert "kvm-probe: ok: guest computed 4" in out
        assert "kvm_keeper=yes" in out, out
        assert tmp_file.read_text() == "written-in-guest\n"
        assert repo_file.read_text() == "written-in-guest\n"
    finally:
        tmp_file.unlink(missing_ok=True)
        repo_file.unlink(missing_ok=True)


def test_a_hung_command_is_stopped_by_the_timeout():
    r = host_run("--timeout", "5", "--", "sleep", "600", timeout=120)
    assert r.returncode == 124
    assert "timed out after 5 s" in r.stderr


def test_a_test_host_that_never_beats_is_ended_with_125():
    """A test host that wedges before its first heartbeat (while it boots) is ended after the
    stall time counted from its start, not left to --timeout."""
    env = dict(os.environ, EMBER_TESTHOST_HEARTBEAT="0", EMBER_TESTHOST_STALL_S="10")
    r = host_run("--timeout", "600", "--", "sleep", "600", timeout=400, env=env)
    assert r.returncode == 125, r.stderr[-2000:]
    assert "no heartbeat" in r.stderr and "after its start" in r.stderr, r.stderr[-2000:]
    assert "timed out" not in r.stderr


def test_an_rcu_stall_report_ends_the_test_host_with_125():
    """A test-host CPU that stalls RCU while the other keeps the heartbeat going is a dead test
    host (issue 11): run ends it at the report, with its CPUs' state, not at --timeout. The
    report is written to the kernel log by hand here, as the kernel would print it."""
    fake = "<3>rcu: INFO: rcu_sched detected stalls on CPUs/tasks: (issued by this test)"
    r = host_run("--timeout", "600", "--", "sh", "-c", f"echo '{fake}' >/dev/kmsg; sleep 600",
                 timeout=400)
    assert r.returncode == 125, r.stderr[-2000:]
    assert "an RCU stall on one of its CPUs" in r.stderr
    assert "issued by this test" in r.stderr  # the report is shown
    assert "timed out" not in r.stderr


def _descendants(pid):
    """PIDs of every process below pid (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def test_sigterm_stops_the_test_host_and_leaves_no_qemu():
    proc = subprocess.Popen([str(RUN), "--timeout", "600", "--", "sleep", "600"], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        qemu = []
        deadline = time.monotonic() + 60
        while not qemu and time.monotonic() < deadline:
            time.sleep(0.5)
            qemu = [p for p in _descendants(proc.pid) if _comm(p) == "qemu-system-x86"]
        assert qemu, "no QEMU process started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _comm(qemu[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _comm(qemu[0]) is None, "QEMU outlived tests/host/run"
    finally:
        if proc.poll() is None:
            proc.kill()
