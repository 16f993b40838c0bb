"""Linux guests under ember (needs a KVM that can boot Linux: run through tests/host/run).
Boots are slow in the nested test host, so each test checks several things in one boot."""
import re

import pytest

from ember_vm import boot_linux, ember_args, run

pytestmark = pytest.mark.kvm


def mem_total_kib(console):
    m = re.search(r"MemTotal:\s+(\d+) kB", console)
    assert m, console[-3000:]
    return int(m.group(1))


def cpu_count(console):
    m = re.search(r"^cpus=(\d+)", console, re.M)
    assert m, console[-3000:]
    return int(m.group(1))


PROBE_CMD = "echo cpus=$(grep -c ^processor /proc/cpuinfo); grep MemTotal /proc/meminfo; uname -a"


def test_vmlinux_two_vcpus_512m_then_reboot_f(guest_assets, tmp_path):
    r = boot_linux(guest_assets, tmp_path, PROBE_CMD + "; echo before-reboot; reboot -f",
                   kernel="vmlinux", vcpus=2, mem=512)
    assert not r.timed_out, r
    assert r.code == 0, r
    assert cpu_count(r.console) == 2, r
    # the kernel keeps some memory for itself; what is left must be most of 512 MiB
    assert 400 * 1024 < mem_total_kib(r.console) <= 512 * 1024, r
    assert "Linux ember" in r.console, r
    assert "before-reboot" in r.console, r
    assert "ember.exit=" not in r.console, "reboot -f should end the VM before init reports"
    assert r.boot_time_us() is not None, r


def test_bzimage_one_vcpu_128m(guest_assets, tmp_path):
    r = boot_linux(guest_assets, tmp_path, PROBE_CMD, kernel="bzImage", vcpus=1, mem=128)
    assert not r.timed_out, r
    assert r.code == 0, r
    assert "ember.exit=0" in r.console, r
    assert cpu_count(r.console) == 1, r
    assert 90 * 1024 < mem_total_kib(r.console) <= 128 * 1024, r
    assert r.boot_time_us() is not None, r


def test_kernel_panic_ends_the_vm(guest_assets, tmp_path):
    # No initrd and a root= that does not exist: the kernel panics; panic=1 reboots it.
    # (This boot also covers vmlinux through the 64-bit Linux boot protocol, not PVH.)
    r = run(ember_args(guest_assets["vmlinux"],
                       cmdline="console=ttyS0 reboot=k panic=1 pci=off root=/dev/nonexistent",
                       extra=["--boot", "linux"]),
            tmp_path)
    assert not r.timed_out, r
    assert "Kernel panic" in r.console, r
    assert r.code == 0, r  # a panic reboot is a guest reset, as with Firecracker


def test_console_input_reaches_the_guest_shell(guest_assets, tmp_path):
    # Without ember.cmd the guest init starts a shell on the console; stdin is a pipe (a FIFO,
    # which ember reads like a terminal). Type a command once the prompt shows.
    import subprocess

    from ember_vm import BOOT_TIMEOUT, wait_for

    def type_when_prompted(proc, console):
        def expect(text, timeout):
            if not wait_for(console, text, proc, timeout):
                raise AssertionError(f"{text!r} never showed; console:\n"
                                     + console.read_text(errors="replace")[-3000:])

        expect("# ", BOOT_TIMEOUT)
        proc.stdin.write("echo typed-$((6*7))\n")
        proc.stdin.flush()
        expect("typed-42", 120)
        proc.stdin.write("reboot -f\n")
        proc.stdin.flush()

    cmdline = "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd"
    r = run(ember_args(guest_assets["vmlinux"], initrd=guest_assets["initramfs"],
                       cmdline=cmdline), tmp_path, stdin=subprocess.PIPE,
            after_start=type_when_prompted)
    assert not r.timed_out, r
    assert r.code == 0, r
    assert "typed-42" in r.console, r
