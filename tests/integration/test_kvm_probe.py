"""The KVM probe (tests/probe/kvm_probe.c): a real-mode guest that computes 2 + 2,
writes it to an I/O port and halts. It runs on any /dev/kvm, PVM included, so it runs
twice: on this machine's own /dev/kvm, and where Linux-capable KVM tests run (the
nested test host on our PVM machines)."""
import os
import subprocess

import pytest

from conftest import BUILD

PROBE = BUILD / "tests" / "kvm-probe"


def run_probe(*args):
    assert PROBE.exists(), "build/tests/kvm-probe is missing: run `make`"
    return subprocess.run([str(PROBE), *args], capture_output=True, text=True, timeout=120)


def check_probe_ok():
    r = run_probe()
    assert r.returncode == 0, r.stderr
    assert "guest computed 4 and halted after 2 port writes" in r.stdout


@pytest.mark.usefixtures("dev_kvm")  # fails with a hint where /dev/kvm is missing
def test_probe_on_local_kvm():
    check_probe_ok()


@pytest.mark.kvm
def test_probe_where_kvm_tests_run():
    assert os.path.exists("/dev/kvm")
    check_probe_ok()


def test_probe_reports_a_missing_device(tmp_path):
    r = run_probe(str(tmp_path / "no-such-kvm"))
    assert r.returncode == 1
    assert "No such file or directory" in r.stderr


def test_probe_rejects_a_device_that_is_not_kvm():
    r = run_probe("/dev/null")
    assert r.returncode == 1
    assert "kvm-probe:" in r.stderr
