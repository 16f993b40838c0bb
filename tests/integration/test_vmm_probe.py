"""ember with the tiny probe guest (tests/guest/probe.S). It needs no hardware-backed KVM
(PVM runs it), so these run wherever /dev/kvm exists: the VMM's own paths — 64-bit entry,
COM1 output, the boot timer, i8042 reset → exit 0, triple fault → error, signals."""
import os
import re
import subprocess

import pytest

from ember_vm import PROBE, ember_args, run, wait_for

# where /dev/kvm is missing these fail with a hint (conftest.py), never skip
pytestmark = pytest.mark.usefixtures("dev_kvm")


def test_probe_boots_and_resets(tmp_path):
    r = run(ember_args(PROBE), tmp_path, timeout=60)
    assert r.code == 0, r
    assert "ember-probe: hello" in r.console
    assert r.boot_time_us() is not None, r
    assert "i8042" in r.log


def test_probe_with_more_vcpus_and_high_memory(tmp_path):
    # 4 GiB puts 1 GiB above the MMIO hole; the APs wait for INIT-SIPI that never comes.
    r = run(ember_args(PROBE, vcpus=4, mem=4096), tmp_path, timeout=60)
    assert r.code == 0, r
    assert "ember-probe: hello" in r.console


def test_triple_fault_is_an_error(tmp_path):
    r = run(ember_args(PROBE, cmdline="t"), tmp_path, timeout=60)
    assert r.code == 1, r
    assert "triple fault" in r.log and "RIP 0x" in r.log, r


def test_reset_pulse_wins_over_a_triple_fault_right_after(tmp_path):
    # the reset stops the vCPU that pulsed it before its next instruction: the triple fault
    # that follows at once (as Linux's reboot=k falls through to one) is never run; this
    # used to race with the event loop and end as an error now and then
    for _ in range(5):
        r = run(ember_args(PROBE, cmdline="k"), tmp_path, timeout=60)
        assert r.code == 0, r
        assert "triple fault" not in r.log and "reset the CPU through the i8042" in r.log, r


def test_sigterm_stops_a_running_guest(tmp_path):
    def stop_when_up(proc, console):
        assert wait_for(console, "ember-probe: hello", proc, 60), "probe never printed"
        proc.terminate()

    r = run(ember_args(PROBE, cmdline="i"), tmp_path, timeout=60, after_start=stop_when_up)
    assert not r.timed_out, r
    assert r.code == 128 + 15, r
    assert "signal 15" in r.log


def test_console_to_stdout(tmp_path):
    r = subprocess.run(ember_args(PROBE), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    assert "ember-probe: hello" in r.stdout
    assert "Guest-boot-time" in r.stderr


def test_vcpu_log_line_follows_the_console_before_it(tmp_path):
    # console (stdout) and log (stderr) on one file, as on a terminal: the boot timer's line,
    # logged by the vCPU after the guest printed hello, comes after it (the console bytes wait
    # in a ring the event loop writes; the vCPU writes them out before its own line)
    out = tmp_path / "both.txt"
    with open(out, "wb") as f:
        r = subprocess.run(ember_args(PROBE), stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                           timeout=60)
    assert r.returncode == 0
    text = out.read_bytes()
    assert b"ember-probe: hello\r\nember: Guest-boot-time = " in text, text


def _on_a_terminal(cmdline, keys_after_hello, until, timeout=60):
    """Runs the probe with a pseudo-terminal as stdin/stdout; types keys once it says hello.
    Returns (exit code, everything the terminal showed)."""
    import pty
    import select
    import time

    from ember_vm import EMBER

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(str(EMBER), ["ember", "run", "--kernel", str(PROBE), "--cmdline", cmdline])
    out, typed, deadline, status = b"", False, time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            # ember's log lines share the terminal; one from the event loop may fall inside
            # the guest's (a vCPU's own come after what it printed)
            guest = re.sub(rb"ember: [^\n]*\n", b"", out)
            if not typed and b"hello" in guest:
                os.write(fd, keys_after_hello)
                typed = True
            if until in out.split(b"hello")[-1]:
                break
        deadline, status = time.monotonic() + 10, None
        while time.monotonic() < deadline and status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            status = st if done else None
            time.sleep(0.05)
    finally:
        if status is None:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_terminal_input_is_raw_and_reaches_the_guest():
    # 'e': the probe echoes COM1 input until 'q'. Ctrl-A Ctrl-A sends one Ctrl-A.
    code, out = _on_a_terminal("e", b"ab\r\x01\x01zq", b"guest reset")
    assert code == 0, out
    assert b"ab\r\x01zq" in out, out  # raw: no echo by the host tty, CR kept, one Ctrl-A


def test_ctrl_a_x_leaves():
    code, out = _on_a_terminal("e", b"\x01x", b"Ctrl-A x")
    assert code == 0, out
    assert b"Ctrl-A x" in out, out
