"""`ember run` refuses bad input with one line naming the problem and a non-zero exit.
None of this needs KVM: the configuration and the kernel image are checked first."""
import subprocess

import pytest

from ember_vm import EMBER, PROBE


def ember(*args, timeout=30):
    return subprocess.run([str(EMBER), *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(r, *words):
    assert r.returncode != 0, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ember: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert r.stdout == ""


def test_version_and_help():
    r = ember("--version")  # Firecracker's form (Kata parses the 2nd word): test_client_kata_go.py
    assert r.returncode == 0 and r.stdout.startswith("Firecracker v") and "(ember " in r.stdout
    for args in (["--help"], ["run", "--help"]):
        r = ember(*args)
        assert r.returncode == 0
        assert "--kernel" in r.stdout and "reboot" in r.stdout


def test_unknown_command():
    # (bare `ember` serves /run/firecracker.socket as firecracker does: test_api_http.py)
    one_line_error(ember("launch"), "unknown command")


def test_kernel_missing_or_unreadable(tmp_path):
    one_line_error(ember("run"), "--kernel")
    one_line_error(ember("run", "--kernel", tmp_path / "nope"), "No such file")
    one_line_error(ember("run", "--kernel", tmp_path), "regular file")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    one_line_error(ember("run", "--kernel", empty), "regular file")


def test_not_a_kernel(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELG" + b"x" * 5000)
    one_line_error(ember("run", "--kernel", junk), "not a kernel")
    one_line_error(ember("run", "--kernel", "/bin/true"), "kernel")
    elf32 = tmp_path / "elf32"
    elf32.write_bytes(b"\x7fELF\x01\x01\x01" + b"\0" * 5000)
    one_line_error(ember("run", "--kernel", elf32), "64-bit")


@pytest.mark.parametrize("mem,word", [("0", "memory"), ("1", "memory"), ("99999999", "memory"),
                                      ("-5", "--mem"), ("12k", "--mem"), ("", "--mem")])
def test_bad_memory(mem, word):
    one_line_error(ember("run", "--kernel", PROBE, "--mem", mem), word)


@pytest.mark.parametrize("n", ["0", "33", "1000", "x", "4294967296"])
def test_bad_vcpus(n):
    one_line_error(ember("run", "--kernel", PROBE, "--vcpus", n), "vCPU")


def test_command_line_too_long():
    one_line_error(ember("run", "--kernel", PROBE, "--cmdline", "a" * 2048), "--cmdline", "2047")


def test_drive_options():
    one_line_error(ember("run", "--kernel", PROBE, "--rootfs", "/nonexistent.ext4"),
                   "/nonexistent.ext4")
    one_line_error(ember("run", "--kernel", PROBE, "--drive", "path=x,engine=aio"), "engine")
    one_line_error(ember("run", "--kernel", PROBE, "--drive", "ro"), "path=")


def test_unknown_option_and_missing_value():
    one_line_error(ember("run", "--kernel", PROBE, "--no-such-option", "x"), "--no-such-option")
    one_line_error(ember("run", "--kernel"), "needs a value")


def test_bad_initrd_and_console(tmp_path):
    one_line_error(ember("run", "--kernel", PROBE, "--initrd", tmp_path / "none"), "initrd")
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    one_line_error(ember("run", "--kernel", PROBE, "--mem", "16", "--initrd", big),
                   "initrd", "does not fit")
    one_line_error(ember("run", "--kernel", PROBE, "--console", tmp_path / "no" / "such"),
                   "console")
