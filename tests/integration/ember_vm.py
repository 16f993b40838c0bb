"""Launch `ember run` for the integration tests, with bounded waits.

Every run gets /dev/null as stdin unless a test wants the console, writes the guest
console to a file, and is killed when its timeout passes, so a hung guest never hangs
the suite.
"""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import suite_progress

REPO = pathlib.Path(__file__).resolve().parents[2]
EMBER = REPO / "build" / "ember"
PROBE = REPO / "build" / "tests" / "guest" / "probe"

# Everything is ~100x slower inside the nested test host.
SLOW = os.environ.get("EMBER_IN_TESTHOST") == "1"
BOOT_TIMEOUT = 600 if SLOW else 120


def log_files(pid):
    """The regular files named *.log a process has open (a PUT /logger target)."""
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith(".log") and os.path.isfile(target):
                found.append(target)
    except OSError:
        pass
    return found


def dump_vcpus(proc, outputs=()):
    """Where a VM that is still running while its test fails has its vCPUs: SIGUSR2 makes ember
    log each vCPU's registers, run state and APIC vectors (vmm/vcpu_dump.c), and the new lines
    of its output files and log files are printed, so pytest shows them with the failure. A
    RIP outside the guest's kernel is the test host's own state in the guest
    (tests/host/README.md); a guest RIP says where the guest itself stalled."""
    if proc.poll() is not None:
        return
    files = [pathlib.Path(f) for f in [*outputs, *log_files(proc.pid)]]
    sizes = {f: (f.stat().st_size if f.exists() else 0) for f in files}
    proc.send_signal(signal.SIGUSR2)
    time.sleep(2)
    for f in files:
        try:
            with open(f, "rb") as fh:
                fh.seek(sizes[f])
                new = fh.read(20000).decode(errors="replace")
        except OSError:
            continue
        print(f"--- SIGUSR2 vCPU dump, from {f} (ember pid {proc.pid}) ---\n{new}")
        report_host_state(new)


# Where x86-64 Linux puts modules (MODULES_VADDR .. MODULES_END). The guest kernel is built
# without modules (rootfs-tools/kernel.config), so a guest vCPU there at CPL 0 runs the test
# host's code: the emulated SVM saved the test host's state as the guest's
# (tests/host/README.md, 2026-12-02).
MODULE_AREA = (0xffffffffc0000000, 0xffffffffff000000)
VCPU_LINE = re.compile(r"vCPU \d+: .*?rip=(0x[0-9a-f]+).*? cpl=(\d)")


def holds_test_host_state(dump):
    """The dump line of a vCPU that holds the test host's state, or None."""
    for line in dump.splitlines():
        m = VCPU_LINE.search(line)
        if m and m.group(2) == "0" and MODULE_AREA[0] <= int(m.group(1), 16) < MODULE_AREA[1]:
            return line[line.index("vCPU"):][:240]
    return None


def report_host_state(dump):
    """Prints and notes (for tests/host/kvm-suite) a vCPU dump that shows a host fault."""
    evidence = holds_test_host_state(dump)
    if evidence:
        print(f"--- the emulated host corrupted this guest: {evidence}")
        suite_progress.note_host_fault(evidence)


def failing():
    """True inside a finally: block that an exception (a failed assertion) is passing through."""
    return sys.exc_info()[0] is not None


class Result:
    def __init__(self, code, console, log, timed_out):
        self.code = code
        self.console = console
        self.log = log
        self.timed_out = timed_out

    def __repr__(self):
        return (f"<ember exit={self.code} timed_out={self.timed_out}\n"
                f"--- log ---\n{self.log[-3000:]}\n--- console ---\n{self.console[-6000:]}>")

    def boot_time_us(self):
        m = re.search(r"Guest-boot-time = (\d+) us", self.log)
        return int(m.group(1)) if m else None


def ember_args(kernel, initrd=None, cmdline=None, vcpus=None, mem=None, extra=()):
    args = [str(EMBER), "run", "--kernel", str(kernel)]
    if initrd:
        args += ["--initrd", str(initrd)]
    if cmdline is not None:
        args += ["--cmdline", cmdline]
    if vcpus is not None:
        args += ["--vcpus", str(vcpus)]
    if mem is not None:
        args += ["--mem", str(mem)]
    return args + list(extra)


def run(args, tmp_path, timeout=BOOT_TIMEOUT, stdin=subprocess.DEVNULL, after_start=None):
    """Runs ember to completion (or kills it after timeout). The console goes to a file."""
    console = pathlib.Path(tmp_path) / "console.txt"
    args = list(args) + ["--console", str(console)]
    proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    timed_out = False
    try:
        if after_start:
            after_start(proc, console)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGUSR2)  # the vCPUs' state into its log (stderr), then kill
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
        report_host_state(err)
    finally:
        if proc.poll() is None:  # after_start failed: never leave a VM behind
            proc.kill()
            proc.communicate()
    text = console.read_text(errors="replace") if console.exists() else ""
    return Result(proc.returncode, text + out, err, timed_out)


def wait_for(path, pattern, proc, timeout):
    """Waits until the file at path contains pattern, or the process ends, or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and pattern in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def boot_linux(assets, tmp_path, cmd, kernel="vmlinux", vcpus=1, mem=128, extra_cmdline="",
               timeout=BOOT_TIMEOUT):
    """Boots the test guest with its initramfs and runs cmd through the guest init
    (ember.cmd=...), which prints ember.exit=N and reboots."""
    cmdline = ("console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
               f"i8042.dumbkbd {extra_cmdline} ember.cmd=\"{cmd}\"")
    return run(ember_args(assets[kernel], initrd=assets["initramfs"], cmdline=cmdline,
                          vcpus=vcpus, mem=mem), tmp_path, timeout=timeout)


def terminate(proc):
    proc.send_signal(signal.SIGTERM)
