"""virtio-blk under a real Linux guest booted from the ext4 rootfs (run through tests/host/run).
Boots are slow in the nested test host, so each boot checks several things.

Drives in the main boot (root first, so /dev/vda is the rootfs):
  vdb  data: the guest writes a pattern to it, the host compares byte for byte
  vdc  read-only, known content: guest writes fail, the file is untouched
  vdd  tools (ext4, read-only): the pattern and the vq_corrupt probe
  vde  victim: vq_corrupt hands it hostile queues through /dev/mem
"""
import hashlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

from api_client import Ember
from ember_vm import BOOT_TIMEOUT, REPO, ember_args, run, wait_for

pytestmark = pytest.mark.kvm

VQ_CORRUPT = REPO / "build" / "tests" / "guest" / "vq_corrupt"
MiB = 1 << 20
CMDLINE = ("console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
           "i8042.dumbkbd quiet")


def pattern(size, seed):
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest()
        block += 1
    return bytes(out[:size])


def make_file(path, data=b"", size=None):
    with open(path, "wb") as f:
        f.write(data)
        if size is not None:
            f.truncate(size)
    return path


def tools_image(tmp_path, files):
    """An ext4 image holding files (name -> bytes or source path)."""
    tree = tmp_path / "tools-tree"
    tree.mkdir()
    for name, src in files.items():
        if isinstance(src, (bytes, bytearray)):
            (tree / name).write_bytes(src)
        else:
            shutil.copy(src, tree / name)
            os.chmod(tree / name, 0o755)
    img = tmp_path / "tools.ext4"
    make_file(img, size=16 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img)], check=True)
    return img


def rootfs_copy(guest_assets, tmp_path):
    """The guest mounts its root read-write: each boot gets its own copy."""
    dst = tmp_path / "rootfs.ext4"
    shutil.copy(guest_assets["rootfs"], dst)
    return dst


def boot(guest_assets, tmp_path, cmd, rootfs, drives, timeout=BOOT_TIMEOUT, after_start=None):
    extra = ["--rootfs", str(rootfs)]
    for d in drives:
        extra += ["--drive", d]
    args = ember_args(guest_assets["vmlinux"], cmdline=f'{CMDLINE} ember.cmd="{cmd}"', mem=256,
                      extra=extra)
    return run(args, tmp_path, timeout=timeout, after_start=after_start)


def main_boot(guest_assets, tmp_path, engine):
    data = make_file(tmp_path / "data.img", size=4 * MiB)
    ro_content = pattern(1 * MiB, "ro")
    ro = make_file(tmp_path / "ro.img", ro_content)
    pat = pattern(2 * MiB, "data")
    tools = tools_image(tmp_path, {"pattern.bin": pat, "vq_corrupt": VQ_CORRUPT})
    victim = make_file(tmp_path / "victim.img", b"victim-sector-0!" * 32, size=1 * MiB)
    opt = ",engine=async" if engine == "async" else ""
    cmd = ("mkdir -p /mnt/t && mount -o ro /dev/vdd /mnt/t && "
           "dd if=/mnt/t/pattern.bin of=/dev/vdb bs=64k oflag=direct && "
           "dd if=/dev/vdb bs=64k count=32 iflag=direct | md5sum | sed s/^/readback=/ && "
           "dd if=/dev/vdc bs=64k iflag=direct | md5sum | sed s/^/ro-md5=/; "
           "if dd if=/dev/zero of=/dev/vdc bs=512 count=1 oflag=direct; "
           "then echo ro-write=succeeded; else echo ro-write=failed; fi; "
           "cat /sys/block/vdb/size /sys/block/vdc/ro | tr '\\n' ' ' | sed s/^/sizes=/; echo; "
           "/mnt/t/vq_corrupt 0xc0005000; echo probe=$?")
    r = boot(guest_assets, tmp_path, cmd, rootfs_copy(guest_assets, tmp_path), [
        f"path={data}{opt}",
        f"path={ro},ro{opt}",
        f"path={tools},ro{opt}",
        f"path={victim}{opt}",
    ])
    assert not r.timed_out, r
    assert r.code == 0, r
    assert "ember.exit=0" in r.console, r
    assert data.read_bytes()[:len(pat)] == pat, "the data drive does not hold the pattern"
    assert data.read_bytes()[len(pat):] == bytes(4 * MiB - len(pat))
    assert ro.read_bytes() == ro_content, "the read-only drive was modified"
    assert f"readback={hashlib.md5(pat).hexdigest()}" in r.console, r
    assert f"ro-md5={hashlib.md5(ro_content).hexdigest()}" in r.console, r
    assert "ro-write=failed" in r.console, r
    assert "sizes=8192 1" in r.console, r
    for case in ("loop", "outside-ram", "index-leap"):
        m = re.search(rf"vq_corrupt: {case} status=0x([0-9a-f]+)", r.console)
        assert m, r
        assert int(m.group(1), 16) & 0x40, r  # NEEDS_RESET
    assert "vq_corrupt: good read used=1 status=0 data=victim-sector-0!" in r.console, r
    assert "vq_corrupt: ok" in r.console and "probe=0" in r.console, r
    assert "needs a reset" in r.log, r
    return r


def test_sync_and_async_drives(guest_assets, tmp_path):
    """Pattern write, read-only drive, size, a guest corrupting its own queue; once with the
    Sync engine and once with io_uring, which must give the same guest-visible results."""
    results = {}
    for engine in ("sync", "async"):
        d = tmp_path / engine
        d.mkdir()
        r = main_boot(guest_assets, d, engine)
        results[engine] = sorted(re.findall(r"^(?:readback|ro-md5|sizes|ro-write)=.*$",
                                            r.console, re.M))
    assert results["sync"] == results["async"]


def test_flush_writeback_kill9_and_full_disk(guest_assets, tmp_path):
    """A Writeback drive: after the guest's sync returns, kill -9 ember: the data is in the
    file. A drive on a full tmpfs: the guest sees I/O errors and ember keeps running."""
    full = pathlib.Path(os.environ.get("EMBER_SCRATCH") or tmp_path) / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)]).returncode == 0
    if not mounted:
        pytest.fail("cannot mount a tmpfs (the test host runs as root)")
    try:
        small = make_file(full / "small.img", size=8 * MiB)  # sparse: 1 MiB of room
        data = make_file(tmp_path / "wb.img", size=4 * MiB)
        pat = pattern(3 * MiB, "flush")
        tools = tools_image(tmp_path, {"pattern.bin": pat})
        cmd = ("mkdir -p /mnt/t && mount -o ro /dev/vdd /mnt/t && "
               "if dd if=/mnt/t/pattern.bin of=/dev/vdc bs=64k oflag=direct; "
               "then echo full=wrote; else echo full=ioerror; fi; "
               "dd if=/mnt/t/pattern.bin of=/dev/vdb bs=64k && sync && echo synced-now; "
               "sleep 100000")
        state = {}

        def kill_after_sync(proc, console):
            state["seen"] = wait_for(console, "synced-now", proc, BOOT_TIMEOUT)
            state["alive"] = proc.poll() is None
            proc.send_signal(signal.SIGKILL)

        r = boot(guest_assets, tmp_path, cmd, rootfs_copy(guest_assets, tmp_path), [
            f"path={data},cache=writeback",
            f"path={small}",
            f"path={tools},ro",
        ], after_start=kill_after_sync)
        assert state.get("seen"), r
        assert state.get("alive"), r
        assert r.code == -signal.SIGKILL, r
        assert "full=ioerror" in r.console, r
        assert data.read_bytes()[:len(pat)] == pat
    finally:
        subprocess.run(["umount", str(full)])


def guest_seconds(console, name):
    m = re.search(rf"^{name}=(\d+\.\d+) (\d+\.\d+)", console, re.M)
    assert m, console[-3000:]
    return float(m.group(2)) - float(m.group(1))


def test_rate_limiter(guest_assets, tmp_path):
    """Bandwidth and ops buckets hold the guest's throughput to the configured rate (±15%),
    measured over transfers of several seconds in guest time; nothing is dropped."""
    bw = 2 * MiB
    iops = 200
    a = make_file(tmp_path / "bw.img", pattern(16 * MiB, "bw"))
    b = make_file(tmp_path / "ops.img", size=8 * MiB)
    # The buckets start full: warm up with twice their size, so that the measured part starts
    # with an empty bucket (steady state).
    cmd = ("dd if=/dev/vdb of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null; "
           "t0=$(cut -d' ' -f1 /proc/uptime); "
           "dd if=/dev/vdb of=/dev/null bs=64k count=160 skip=64 iflag=direct 2>/dev/null; "
           "echo bw=$t0 $(cut -d' ' -f1 /proc/uptime); "
           "dd if=/dev/vdc of=/dev/null bs=4k count=400 iflag=direct 2>/dev/null; "
           "t0=$(cut -d' ' -f1 /proc/uptime); "
           "dd if=/dev/vdc of=/dev/null bs=4k count=1200 skip=400 iflag=direct 2>/dev/null; "
           "echo ops=$t0 $(cut -d' ' -f1 /proc/uptime)")
    r = boot(guest_assets, tmp_path, cmd, rootfs_copy(guest_assets, tmp_path), [
        f"path={a},ro,bw={bw}",
        f"path={b},ro,iops={iops}",
    ])
    assert not r.timed_out, r
    assert "ember.exit=0" in r.console, r
    rate = 160 * 65536 / guest_seconds(r.console, "bw")
    ops = 1200 / guest_seconds(r.console, "ops")
    print(f"rate limiter: bandwidth {rate / MiB:.3f} MiB/s (want 2), {ops:.1f} ops/s (want {iops})")
    assert 0.85 * bw <= rate <= 1.15 * bw, f"bandwidth {rate / MiB:.2f} MiB/s, want 2"
    assert 0.85 * iops <= ops <= 1.15 * iops, f"{ops:.1f} ops/s, want {iops}"


def boot_for_patch(vm, guest_assets, cmd, rootfs, data):
    """Configures and starts vm through the API (the guest runs cmd, rootfs is /dev/vda, the
    drive data /dev/vdb) and waits until the guest prints patch-me-now."""
    assert vm.put("/boot-source", {
        "kernel_image_path": str(guest_assets["vmlinux"]),
        "boot_args": f'{CMDLINE} ember.cmd="{cmd}"'}).status_code == 204
    assert vm.put("/drives/rootfs", {
        "drive_id": "rootfs", "path_on_host": str(rootfs), "is_root_device": True,
        "is_read_only": False}).status_code == 204
    assert vm.put("/drives/data", data).status_code == 204
    assert vm.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 256}).status_code == 204
    assert vm.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    assert wait_for(vm.log_path, "patch-me-now", vm.proc, BOOT_TIMEOUT), vm.output()[-3000:]


@pytest.mark.parametrize("engine", ["Sync", "Async"])
def test_patch_drive_after_boot(ember_bin, scratch, guest_assets, tmp_path, engine):
    """PATCH /drives/{id} on a running VM (booted through the API, as a Firecracker user would):
    a new path_on_host of another size reaches the guest as a capacity change (config-change
    interrupt), reads come from the new file, and a path that cannot be opened leaves the old
    one in place. The drive caches Writeback, so the swap fdatasyncs the old file first (on
    the filtered VMM thread)."""
    old_content, new_content = pattern(1 * MiB, "old"), pattern(3 * MiB, "new")
    old = make_file(tmp_path / "old.img", old_content)
    new = make_file(tmp_path / "new.img", new_content)
    rootfs = rootfs_copy(guest_assets, tmp_path)
    # The guest reads vdb, says it is ready, waits (bounded) for the size to change, and reads
    # 4 KiB at 2 MiB: past the end of the old file.
    cmd = ("echo size0=$(cat /sys/block/vdb/size); "
           "dd if=/dev/vdb bs=4k count=1 iflag=direct 2>/dev/null | md5sum | sed s/^/md5a=/; "
           "echo patch-me-now; n=0; "
           "while [ $(cat /sys/block/vdb/size) = 2048 ] && [ $n -lt 900 ]; "
           "do sleep 1; n=$((n+1)); done; "
           "echo size1=$(cat /sys/block/vdb/size); "
           "dd if=/dev/vdb bs=4k count=1 skip=512 iflag=direct 2>/dev/null | md5sum "
           "| sed s/^/md5b=/")
    vm = Ember.start(ember_bin, scratch, "--id", "patch-vm")
    try:
        boot_for_patch(vm, guest_assets, cmd, rootfs, {
            "drive_id": "data", "path_on_host": str(old), "is_root_device": False,
            "is_read_only": False, "io_engine": engine, "cache_type": "Writeback"})
        r = vm.patch("/drives/data", {"drive_id": "data", "path_on_host": "/no/such/file"})
        assert r.status_code == 400, r.text
        r = vm.patch("/drives/data", {"drive_id": "data", "path_on_host": str(new)})
        assert r.status_code == 204, r.text
        code = vm.wait(BOOT_TIMEOUT)
        text = vm.output()
        assert code == 0 and "ember.exit=0" in text, text[-4000:]
        assert "size0=2048" in text, text[-4000:]
        assert f"md5a={hashlib.md5(old_content[:4096]).hexdigest()}" in text, text[-4000:]
        assert "size1=6144" in text, text[-4000:]
        want = hashlib.md5(new_content[2 * MiB:2 * MiB + 4096]).hexdigest()
        assert f"md5b={want}" in text, text[-4000:]
        assert old.read_bytes() == old_content and new.read_bytes() == new_content
    finally:
        vm.close()


def test_patch_huge_refill_time_refused(ember_bin, scratch, guest_assets, tmp_path):
    """A rate limiter whose refill time overflows the bucket's nanoseconds (2^58 ms wrapped to a
    zero divisor: SIGFPE at the guest's next request, security review F6) is refused with a 400
    on a running VM; the guest's I/O and a sane limiter then work."""
    data = make_file(tmp_path / "data.img", pattern(1 * MiB, "data"))
    rootfs = rootfs_copy(guest_assets, tmp_path)
    cmd = ("echo patch-me-now; sleep 3; "
           "dd if=/dev/vdb of=/dev/null bs=4k count=64 iflag=direct 2>/dev/null && echo read-ok")
    vm = Ember.start(ember_bin, scratch, "--id", "refill-vm")
    try:
        boot_for_patch(vm, guest_assets, cmd, rootfs, {
            "drive_id": "data", "path_on_host": str(data), "is_root_device": False,
            "is_read_only": True})
        for bucket in ({"size": 10, "refill_time": 1 << 58},
                       {"size": 10, "refill_time": (1 << 63) - 1},
                       {"size": 1 << 63, "refill_time": 1}):
            r = vm.patch("/drives/data", {"drive_id": "data", "rate_limiter": {"ops": bucket}})
            assert r.status_code == 400, (bucket, r.status_code, r.text)
            assert "out of range" in r.json()["fault_message"] or "integer" in r.text, r.text
        r = vm.patch("/drives/data", {"drive_id": "data", "rate_limiter": {
            "ops": {"size": 1000, "refill_time": 100}}})
        assert r.status_code == 204, r.text
        code = vm.wait(BOOT_TIMEOUT)
        text = vm.output()
        assert code == 0 and "ember.exit=0" in text and "read-ok" in text, (code, text[-4000:])
    finally:
        vm.close()
