"""SIGUSR2 logs where each vCPU is (vmm/vcpu_dump.c: registers, run state, APIC vectors), the
diagnostic for a guest that stalls with no output (issue 11); the VM runs on as it was: a
running guest keeps counting, a paused one stays paused. The probe guest, so any /dev/kvm."""
import re
import signal
import time

import pytest

from api_client import Ember
from test_snapshot_probe import boot_heartbeat, ticks, wait_tick

pytestmark = pytest.mark.usefixtures("dev_kvm")

LINE = re.compile(r"vCPU (\d+): (runnable|halted|uninitialized|init-received|sipi-received|other) "
                  r"rip=0x[0-9a-f]+ .*apic: irr=-?\d+ isr=-?\d+")


def dump_lines(e, n_before):
    """The dump lines logged after the first n_before ones, once every vCPU's is there."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = LINE.findall(e.output())
        if len(found) >= n_before + 2:
            return found[n_before:]
        assert e.proc.poll() is None, e.output()
        time.sleep(0.05)
    raise AssertionError(f"no dump of both vCPUs: {e.output()[-2000:]}")


def test_sigusr2_before_boot_says_so_and_the_process_stays(ember_bin, scratch):
    e = Ember.start(ember_bin, scratch)
    try:
        e.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while "SIGUSR2: no VM to show yet" not in e.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "SIGUSR2: no VM to show yet" in e.output()
        assert e.get("/").status_code == 200
    finally:
        e.close()


def test_sigusr2_dumps_every_vcpu_and_the_vm_runs_on(tmp_path):
    e = boot_heartbeat(tmp_path, vcpus=2)
    try:
        t = wait_tick(e, 0)
        e.proc.send_signal(signal.SIGUSR2)
        lines = dump_lines(e, 0)
        assert sorted(int(i) for i, _ in lines[:2]) == [0, 1], lines
        # vCPU 0 counts; the probe's AP never got INIT-SIPI
        assert dict(lines[:2])["1"] in ("uninitialized", "init-received"), lines
        assert "IOAPIC: every pin masked" in e.output()  # the probe uses no interrupt
        assert re.search(r"PIC master: irr=0x?[0-9a-f]* isr=", e.output())
        wait_tick(e, t + 1)  # still counting after the dump

        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        e.proc.send_signal(signal.SIGUSR2)
        dump_lines(e, 2)
        assert e.get("/").json()["state"] == "Paused"
        paused_at = max(ticks(e))
        time.sleep(0.3)
        assert max(ticks(e)) <= paused_at + 1, "a paused VM ran after the dump"
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        wait_tick(e, paused_at + 1)
    finally:
        e.close()


@pytest.mark.parametrize("delay", [0, 0.001, 0.005])
def test_sigusr2_right_after_start_dumps_every_vcpu(tmp_path, delay):
    """A dump asked while a vCPU thread has not taken its first run command yet (the command
    posted, the state still paused): it pauses that vCPU too, else the vCPU enters KVM_RUN
    meanwhile and reading its registers waits for ever (an AP in wait-for-SIPI never exits)."""
    e = boot_heartbeat(tmp_path, vcpus=2)
    try:
        time.sleep(delay)
        e.proc.send_signal(signal.SIGUSR2)
        lines = dump_lines(e, 0)
        assert sorted(int(i) for i, _ in lines[:2]) == [0, 1], lines
        wait_tick(e, 0)
        t = max(ticks(e))
        wait_tick(e, t)  # the VM runs on after the dump
    finally:
        e.close()
