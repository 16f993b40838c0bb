"""The guest assets from `make guest` (kernel, ext4 rootfs, initramfs, our init), booted
by QEMU microvm under KVM: this checks the guest side on its own, independent of ember's
VMM, and is the same setup `make bench` uses as the yardstick."""
import os
import select
import subprocess
import time

import pytest

pytestmark = pytest.mark.kvm

# microvm has no i8042, so a guest reboot must triple-fault for -no-reboot to end QEMU.
BASE_ARGS = "console=ttyS0 reboot=t panic=1 quiet"


def qemu_args(kernel, append, initrd=None, rootfs=None):
    args = ["qemu-system-x86_64", "-M", "microvm,acpi=off,rtc=off,x-option-roms=off",
            "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(kernel), "-append", f"{BASE_ARGS} {append}"]
    if initrd:
        args += ["-initrd", str(initrd)]
    if rootfs:
        args += ["-drive", f"id=root,file={rootfs},format=raw,if=none,snapshot=on",
                 "-device", "virtio-blk-device,drive=root"]
    return args


def boot(kernel, append, initrd=None, rootfs=None, timeout=240):
    """Boot QEMU microvm with KVM, console output only; returns (returncode, output)."""
    r = subprocess.run(qemu_args(kernel, append, initrd, rootfs), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout.replace("\r\n", "\n") + r.stderr


def boot_and_type(kernel, append, initrd, lines, timeout=240):
    """Boot, wait for the guest shell's banner (from /etc/profile), then type lines.
    Input sent before the shell opens the console would be lost."""
    proc = subprocess.Popen(qemu_args(kernel, append, initrd), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = bytearray()
    deadline = time.monotonic() + timeout
    typed = False
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        while proc.poll() is None and time.monotonic() < deadline:
            select.select([proc.stdout], [], [], 1.0)
            out += proc.stdout.read() or b""
            if not typed and b"stops the VM" in out:
                proc.stdin.write("".join(line + "\n" for line in lines).encode())
                proc.stdin.flush()
                typed = True
        out += proc.stdout.read() or b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, out.decode(errors="replace").replace("\r\n", "\n")


def test_initramfs_runs_ember_cmd_and_reports_its_status(guest_assets):
    rc, out = boot(guest_assets["vmlinux"], 'ember.cmd="uname -sr; echo pid1=$(cat /proc/1/comm); '
                   'mount | grep -c -E \'^(proc|sysfs|devtmpfs) \'; exit 3"',
                   initrd=guest_assets["initramfs"])
    assert rc == 0, out
    assert "Linux 6.1." in out
    assert "pid1=init" in out
    assert "\n3\n" in out  # proc, sysfs and devtmpfs mounted
    assert "ember.exit=3" in out


def test_ext4_root_on_virtio_blk(guest_assets):
    rc, out = boot(guest_assets["vmlinux"],
                   'root=/dev/vda rw ember.cmd="grep \' / \' /proc/mounts; '
                   'echo data > /root/f && cat /root/f; ls /bin/busybox"',
                   rootfs=guest_assets["rootfs"])
    assert rc == 0, out
    assert "/dev/root / ext4 rw" in out
    assert "\ndata\n" in out
    assert "/bin/busybox" in out
    assert "ember.exit=0" in out


def test_bzimage_boots_too(guest_assets):
    rc, out = boot(guest_assets["bzImage"], 'ember.cmd="echo bz-ok"',
                   initrd=guest_assets["initramfs"])
    assert rc == 0, out
    assert "bz-ok" in out and "ember.exit=0" in out


def test_without_ember_cmd_a_shell_runs_on_the_console(guest_assets):
    rc, out = boot_and_type(guest_assets["vmlinux"], "", guest_assets["initramfs"],
                            ["echo shell-says-$((6*7))", "reboot -f"])
    assert rc == 0, out
    assert "shell-says-42" in out


def test_a_malformed_ember_cmd_falls_back_to_the_shell(guest_assets):
    rc, out = boot_and_type(guest_assets["vmlinux"], 'ember.cmd="unterminated',
                            guest_assets["initramfs"], ["echo still-$((1+1))", "reboot -f"])
    assert rc == 0, out
    assert "ignoring malformed ember.cmd" in out
    assert "still-2" in out
