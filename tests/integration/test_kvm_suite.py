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
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 1}, runs
    assert "4 passed; test hosts booted: 1, died: 0" in r.stdout


def test_a_death_reruns_only_the_interrupted_test_and_what_had_not_run(tmp_path):
    r, runs = run_suite(tmp_path, B_DIES="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 2, "c": 1, "d": 1}, runs
    assert "test hosts booted: 2, died: 1" in r.stdout
    assert "during " in r.stdout and "test_fake.py::test_b" in r.stdout


def test_a_failure_before_a_death_still_fails_the_suite(tmp_path):
    r, runs = run_suite(tmp_path, C_FAILS="1", D_DIES="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 2}, runs
    assert "FAILED" in r.stdout and "test_fake.py::test_c" in r.stdout


def test_a_test_that_kills_two_test_hosts_ends_the_suite_with_125(tmp_path):
    r, runs = run_suite(tmp_path, B_DIES="5")
    assert r.returncode == 125, r.stdout + r.stderr
    assert runs["b"] == 2 and "c" not in runs, runs
    assert "a test host died under it twice" in r.stdout


def test_deaths_beyond_the_limit_end_the_suite_with_125(tmp_path):
    r, runs = run_suite(tmp_path, "--deaths", "1", B_DIES="1", D_DIES="1")
    assert r.returncode == 125, r.stdout + r.stderr
    assert runs == {"a": 1, "b": 2, "c": 1, "d": 1}, runs
    assert "died: 2" in r.stdout


def test_bad_arguments_are_refused(tmp_path):
    r = subprocess.run([sys.executable, str(SUITE), "--deaths", "-1"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--deaths must be" in r.stderr
