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
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
EMBER = REPO / "build" / "ember"
PROBE = REPO / "build" / "tests" / "guest" / "probe"

# Everything is ~100x slower inside the nested test host.
SLOW = os.environ.get("EMBER_IN_TESTHOST") == "1"
BOOT_TIMEOUT = 600 if SLOW else 120


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
        proc.kill()
        out, err = proc.communicate()
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
