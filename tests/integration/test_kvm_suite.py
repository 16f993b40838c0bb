"""tests/host/kvm-suite carries the KVM suite over test-host deaths, and only those: a fake
runner plays tests/host/run (exit 125 when the "test host" died under a test, which a test
simulates by ending its pytest at once) around small suites of real pytest tests."""
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]
SUITE = REPO / "tests/host/kvm-suite"

FAKE_RUN = """#!/bin/sh
# tests/host/run's arguments: --auto --timeout N -- CMD...
while [ "$1" != -- ]; do shift; done; shift
"$@"; rc=$?
[ $rc = 99 ] && exit 125
exit $rc
"""

TESTS = """
import os, pathlib, pytest
D = pathlib.Path(os.environ["FAKE_DIR"])

def ran(name):
    f = D / ("ran-" + name)
    n = int(f.read_text()) + 1 if f.exists() else 1
    f.write_text(str(n))
    return n

def die_if(name, times):
    if ran(name) <= times:
        os._exit(99)  # the test host's kernel died: no teardown, no report

@pytest.mark.kvm
def test_a():
    ran("a")

@pytest.mark.kvm
def test_b():
    die_if("b", int(os.environ.get("B_DIES", "0")))

@pytest.mark.kvm
def test_c():
    ran("c")
    assert os.environ.get("C_FAILS") != "1", "c fails"

@pytest.mark.kvm
def test_d():
    die_if("d", int(os.environ.get("D_DIES", "0")))

@pytest.mark.kvm
def test_e():
    # A guest the emulated host corrupted (ember_vm.dump_vcpus found the test host's state in
    # a vCPU) fails the test with the evidence noted; E_FAULTS: how many of its runs do.
    if ran("e") <= int(os.environ.get("E_FAULTS", "0")):
        from tests.integration import suite_progress
        suite_progress.note_host_fault("vCPU 0: runnable rip=0xffffffffc050920c cpl=0")
        assert False, "the guest went silent"
    assert os.environ.get("E_FAILS") != "1", "e fails for real"

def test_not_kvm():
    ran("not_kvm")
"""


def run_suite(tmp_path, *args, **env):
    (tmp_path / "run").write_text(FAKE_RUN)
    (tmp_path / "run").chmod(0o755)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    kvm: a fake KVM test\n"
                                         "addopts = -p no:cacheprovider\n")
    (tmp_path / "test_fake.py").write_text(textwrap.dedent(TESTS))
    full_env = dict(os.environ, EMBER_KVM_SUITE_RUN=str(tmp_path / "run"),
                    FAKE_DIR=str(tmp_path), **env)
    full_env.pop("EMBER_SUITE_PROGRESS", None)
    r = subprocess.run([sys.executable, str(SUITE), *args, "--", str(tmp_path / "test_fake.py")],
                       capture_output=True, text=True, env=full_env, timeout=120)
    runs = {p.name[4:]: int(p.read_text()) for p in tmp_path.glob("ran-*")}
    return r, runs


def test_all_pass_in_one_test_host(tmp_path):
    r, runs = run_suite(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}, runs
    assert "5 passed; test hosts booted: 1, died: 0; guests the emulated host corrupted: 0" \
        in r.stdout


def test_a_death_reruns_only_the_interrupted_test_and_what_had_not_run(tmp_path):
    r, runs = run_suite(tmp_path, B_DIES="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1}, runs
    assert "test hosts booted: 2, died: 1" in r.stdout
    assert "during " in r.stdout and "test_fake.py::test_b" in r.stdout


def test_a_failure_before_a_death_still_fails_the_suite(tmp_path):
    r, runs = run_suite(tmp_path, C_FAILS="1", D_DIES="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 2, "e": 1}, runs
    assert "FAILED" in r.stdout and "test_fake.py::test_c" in r.stdout


def test_a_test_that_kills_two_test_hosts_ends_the_suite_with_125(tmp_path):
    r, runs = run_suite(tmp_path, B_DIES="5")
    assert r.returncode == 125, r.stdout + r.stderr
    assert runs["b"] == 2 and "c" not in runs, runs
    assert "a test host died under it twice" in r.stdout


def test_deaths_beyond_the_limit_end_the_suite_with_125(tmp_path):
    r, runs = run_suite(tmp_path, "--deaths", "1", B_DIES="1", D_DIES="1")
    assert r.returncode == 125, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 2, "c": 1, "d": 1}, runs  # e never ran
    assert "died: 2" in r.stdout


def test_a_host_fault_reruns_that_test_once_and_says_so(tmp_path):
    r, runs = run_suite(tmp_path, E_FAULTS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2}, runs
    assert "test hosts booted: 2, died: 0; guests the emulated host corrupted: 1" in r.stdout
    assert "host fault 1: " in r.stdout and "test_fake.py::test_e (then: passed): vCPU 0" \
        in r.stdout


def test_a_real_failure_after_a_host_fault_fails_the_suite(tmp_path):
    r, runs = run_suite(tmp_path, E_FAULTS="1", E_FAILS="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert runs["e"] == 2, runs
    assert "FAILED" in r.stdout and "(then: failed)" in r.stdout


def test_a_second_host_fault_of_a_test_fails_the_suite(tmp_path):
    r, runs = run_suite(tmp_path, E_FAULTS="5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert runs["e"] == 2 and runs["a"] == 1, runs
    assert "HOST-FAULT" in r.stdout and "corrupted: 2" in r.stdout


def test_a_failure_without_the_evidence_is_not_rerun(tmp_path):
    r, runs = run_suite(tmp_path, E_FAILS="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert runs["e"] == 1 and "test hosts booted: 1" in r.stdout, runs


def test_the_test_hosts_state_in_a_vcpu_is_recognised():
    sys.path.insert(0, str(REPO / "tests/integration"))
    from ember_vm import holds_test_host_state
    host = ("2026-12-03T22:30:01 [x:fc_vmm] vCPU 0: runnable rip=0xffffffffc050920c "
            "rsp=0xff74ccaf010e7c80 rflags=0x10246 (IF=1) cpl=0 cr0=0x80050033")
    guest = ("ember: warning: vCPU 1: runnable rip=0xffffffff81061e7c rsp=0xffff888000193dc0 "
             "rflags=0x2 (IF=0) cpl=0 cr0=0x80050033")
    user = "vCPU 0: runnable rip=0xffffffffc0001000 rsp=0x7ffc0000 rflags=0x2 (IF=1) cpl=3 cr0=0"
    found = holds_test_host_state(guest + "\n" + host)
    assert found.startswith("vCPU 0: runnable rip=0xffffffffc05"), found
    assert holds_test_host_state(guest) is None and holds_test_host_state(user) is None
    assert holds_test_host_state("SIGUSR2: no VM to show yet") is None


def test_bad_arguments_are_refused(tmp_path):
    r = subprocess.run([sys.executable, str(SUITE), "--deaths", "-1"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--deaths must be" in r.stderr
