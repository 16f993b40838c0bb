"""Snapshots of the probe guest's heartbeat (tests/guest/probe, command line `c`: "tick N" on
COM1 with N kept in guest RAM). Any /dev/kvm runs it (PVM too), so these run directly: pause,
create, kill -9, load in a new process and the count goes on without a reboot; clones; the
format-1 fixture; every kind of bad input answered with a 400 and the process alive and as it
was. The Linux-guest tests (drives, clock, timers) are test_snapshot.py, in the test host."""
import fcntl
import gzip
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import time

import pytest

from api_client import Ember, fault
from ember_vm import EMBER, PROBE, REPO

pytestmark = pytest.mark.usefixtures("dev_kvm")

FIXTURE = REPO / "tests" / "fixtures" / "snapshot-v1"
TICK = re.compile(rb"tick (\d+)")


def start(d, binary=EMBER):
    """ember with the guest console in its own file (the log lines go to stdout: a line of
    theirs could land inside a console line there)."""
    e = Ember.start(binary, d)
    e.console = pathlib.Path(d) / "console.txt"
    assert e.put("/serial", json={"serial_out_path": str(e.console)}).status_code == 204
    return e


def ticks(e):
    path = getattr(e, "console", None) or e.log_path
    try:
        return [int(m) for m in TICK.findall(open(path, "rb").read())]
    except FileNotFoundError:
        return []


def wait_tick(e, above, timeout=30):
    """Waits until the console shows a tick greater than `above`; Returns the first such tick
    (on a loaded machine several may have come by the time the file is read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = [n for n in ticks(e) if n > above]
        if t:
            return t[0]
        assert e.proc.poll() is None, e.output()
        time.sleep(0.02)
    raise AssertionError(f"no tick above {above}: {e.output()[-2000:]}")


def boot_heartbeat(tmp_path, mem=32, vcpus=1):
    e = start(tmp_path)
    assert e.put("/machine-config", json={"vcpu_count": vcpus, "mem_size_mib": mem}).ok
    assert e.put("/boot-source",
                 json={"kernel_image_path": str(PROBE), "boot_args": "c"}).status_code == 204
    assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
    return e


def take_snapshot(e, d):
    """Pauses e, snapshots it into directory d. Returns (snap, mem, last tick before)."""
    assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
    snap, mem = d / "vm.snap", d / "vm.mem"
    r = e.put("/snapshot/create", json={"snapshot_type": "Full", "snapshot_path": str(snap),
                                       "mem_file_path": str(mem)})
    assert r.status_code == 204, r.text
    # the console file has all the guest printed: the create wrote the UART's queue out
    # first (a wait after the pause was a race with the event loop's drain)
    return snap, mem, ticks(e)[-1]


def load_body(snap, mem, resume=True):
    return {"snapshot_path": str(snap),
            "mem_backend": {"backend_type": "File", "backend_path": str(mem)},
            "resume_vm": resume}


@pytest.fixture
def snapshot(tmp_path):
    """A heartbeat snapshot (32 MiB) whose source process was killed with -9."""
    src = tmp_path / "src"
    src.mkdir()
    e = boot_heartbeat(src)
    try:
        wait_tick(e, 3)
        snap, mem, last = take_snapshot(e, tmp_path)
    finally:
        e.proc.kill()
        e.close()
    return snap, mem, last


def test_restore_continues_counting(tmp_path, snapshot):
    snap, mem, last = snapshot
    d = tmp_path / "dst"
    d.mkdir()
    e = start(d)
    try:
        r = e.put("/snapshot/load", json=load_body(snap, mem))
        assert r.status_code == 204, r.text
        first = wait_tick(e, 0)
        assert first == last + 1, (first, last)  # the next tick: no reboot, nothing lost
        assert b"hello" not in e.console.read_bytes()
        wait_tick(e, first + 2)
        info = e.get("/").json()
        assert info["state"] == "Running"
        # the restored VM serves what a booted one does: pause, resume, another snapshot
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        r = e.put("/snapshot/create", json={"snapshot_path": str(d / "again.snap"),
                                           "mem_file_path": str(d / "again.mem")})
        assert r.status_code == 204, r.text
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        wait_tick(e, ticks(e)[-1])
        r = e.put("/actions", json={"action_type": "SendCtrlAltDel"})
        assert r.status_code == 204, r.text
    finally:
        e.close()
    # the snapshot of the restored VM restores too, and goes on from there
    (tmp_path / "again").mkdir()
    e2 = start(tmp_path / "again")
    try:
        r = e2.put("/snapshot/load", json=load_body(d / "again.snap", d / "again.mem"))
        assert r.status_code == 204, r.text
        assert wait_tick(e2, 0) > first
    finally:
        e2.close()


def test_load_paused_then_resume_and_metrics(tmp_path, snapshot):
    snap, mem, last = snapshot
    metrics = tmp_path / "metrics.json"
    e = start(tmp_path)
    try:
        assert e.put("/metrics", json={"metrics_path": str(metrics)}).status_code == 204
        assert e.put("/snapshot/load",
                     json=load_body(snap, mem, resume=False)).status_code == 204
        assert e.get("/").json()["state"] == "Paused"
        time.sleep(0.3)
        assert ticks(e) == []  # paused: the guest has not run
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        assert wait_tick(e, 0) == last + 1
        assert e.put("/actions", json={"action_type": "FlushMetrics"}).status_code == 204
        lines = [json.loads(l) for l in metrics.read_text().splitlines()]
        lat = lines[-1]["latencies_us"]
        assert lat["load_snapshot"] > 0 and lat["vmm_load_snapshot"] > 0
        assert lat["load_snapshot"] >= lat["vmm_load_snapshot"]
    finally:
        e.close()


def test_four_clones_at_once(tmp_path, snapshot):
    snap, mem, last = snapshot
    clones = []
    try:
        for i in range(4):
            d = tmp_path / f"clone{i}"
            d.mkdir()
            clones.append(start(d))
        for e in clones:  # loaded one right after the other, all running together
            r = e.put("/snapshot/load", json=load_body(snap, mem))
            assert r.status_code == 204, r.text
        for e in clones:
            assert wait_tick(e, last + 2) > last + 2
            assert e.proc.poll() is None
    finally:
        for e in clones:
            e.close()


def test_run_restore_on_a_shell(tmp_path, snapshot):
    snap, mem, last = snapshot
    console = tmp_path / "console.txt"
    p = subprocess.Popen([str(EMBER), "run", "--restore", str(snap), "--mem-file", str(mem),
                          "--console", str(console)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            t = [int(x) for x in TICK.findall(console.read_bytes())] if console.exists() else []
            if len(t) >= 2:
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        assert t[0] == last + 1, t
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_run_restore_usage_errors(tmp_path, snapshot):
    snap, mem, _ = snapshot
    for args, want in [
        (["--restore", str(snap)], "--restore SNAPSHOT and --mem-file MEM go together"),
        (["--restore", str(snap), "--mem-file", str(mem), "--vcpus", "2"], "--vcpus: a restored"),
        (["--restore", str(snap), "--mem-file", str(mem), "--kernel", str(PROBE)], "--kernel"),
        (["--restore", str(tmp_path / "none"), "--mem-file", str(mem)], "Cannot open the snapshot"),
        (["--restore", str(mem), "--mem-file", str(mem)], "not an ember snapshot"),
    ]:
        r = subprocess.run([str(EMBER), "run", *args], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode in (152, 153), (args, r)
        assert want in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line


def crc64(data):
    poly, crc = 0xC96C5795D7870F42, 0xFFFFFFFFFFFFFFFF
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def resealed(b):
    b = bytearray(b)
    b[-8:] = struct.pack("<Q", crc64(bytes(b[:-8])))
    return bytes(b)


def machine_field(b, tag, value):
    """The file with the machine section's u64 field `tag` set to value (CRC recomputed)."""
    b = bytearray(b)
    off = 32
    t, _, ln = struct.unpack_from("<IIQ", b, off)
    assert t == 1
    p = off + 16
    while p < off + 16 + ln:
        ftag, flen = struct.unpack_from("<II", b, p)
        if ftag & 0x7FFFFFFF == tag:
            struct.pack_into("<Q", b, p + 8, value)
            return resealed(bytes(b))
        p += 8 + ((flen + 7) & ~7)
    raise AssertionError("no such field")


def test_bad_snapshots_are_400_and_leave_the_process_as_it_was(tmp_path, snapshot):
    snap, mem, last = snapshot
    good = snap.read_bytes()
    cases = {
        "truncated": (good[:-100], "truncated"),
        "flipped": (good[:500] + bytes([good[500] ^ 0x20]) + good[501:], "CRC mismatch"),
        "version": (resealed(good[:8] + struct.pack("<I", 9) + good[12:]), "format version 9"),
        "vcpus": (machine_field(good, 3, 2), "2 vCPUs with state for 1"),
        "memory": (machine_field(good, 4, 64), "memory layout does not match 64 MiB"),
        "empty": (b"", "not an ember snapshot"),
    }
    e = start(tmp_path)
    try:
        for name, (data, want) in cases.items():
            p = tmp_path / f"{name}.snap"
            p.write_bytes(data)
            msg = fault(e.put("/snapshot/load", json=load_body(p, mem)))
            assert want in msg, (name, msg)
            assert e.get("/").json()["state"] == "Not started", name
        # the memory file one page short, a missing one, a directory
        short = tmp_path / "short.mem"
        shutil.copyfile(mem, short)
        os.truncate(short, os.path.getsize(mem) - 4096)
        assert "bytes, the snapshot's guest RAM" in fault(
            e.put("/snapshot/load", json=load_body(snap, short)))
        assert "Cannot open the memory file" in fault(
            e.put("/snapshot/load", json=load_body(snap, tmp_path / "none.mem")))
        assert "not a regular file" in fault(
            e.put("/snapshot/load", json=load_body(snap, tmp_path)))
        assert "Cannot connect to the page-fault handler" in fault(e.put("/snapshot/load", json={
            "snapshot_path": str(snap),
            "mem_backend": {"backend_type": "Uffd", "backend_path": str(tmp_path / "uffd.sock")}}))
        assert e.proc.poll() is None
        # nothing stuck: the same process still loads the good snapshot
        r = e.put("/snapshot/load", json=load_body(snap, mem))
        assert r.status_code == 204, r.text
        assert wait_tick(e, 0) == last + 1
        assert "not supported after starting" in fault(
            e.put("/snapshot/load", json=load_body(snap, mem)))
    finally:
        e.close()


def test_create_and_load_in_the_wrong_state(tmp_path):
    e = boot_heartbeat(tmp_path)
    try:
        wait_tick(e, 1)
        body = {"snapshot_path": str(tmp_path / "s"), "mem_file_path": str(tmp_path / "m")}
        assert "pause it first" in fault(e.put("/snapshot/create", json=body))
        assert not (tmp_path / "s").exists()
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        assert "dirty page tracking disabled" in fault(
            e.put("/snapshot/create", json={**body, "snapshot_type": "Diff"}))
        bad = {"snapshot_path": str(tmp_path / "no" / "s"), "mem_file_path": str(tmp_path / "m")}
        assert "Cannot create the snapshot file" in fault(e.put("/snapshot/create", json=bad))
        # a symlink is never followed to create an output file
        os.symlink(tmp_path / "elsewhere", tmp_path / "link")
        assert "Cannot create the memory file" in fault(e.put("/snapshot/create", json={
            "snapshot_path": str(tmp_path / "s2"), "mem_file_path": str(tmp_path / "link")}))
        assert not (tmp_path / "elsewhere").exists()
        assert e.put("/snapshot/create", json=body).status_code == 204
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        wait_tick(e, ticks(e)[-1])
    finally:
        e.close()
    d = tmp_path / "fresh"
    d.mkdir()
    e = start(d)
    try:
        assert "not supported before starting" in fault(e.put("/snapshot/create", json={
            "snapshot_path": str(d / "s"), "mem_file_path": str(d / "m")}))
        assert e.put("/boot-source", json={"kernel_image_path": str(PROBE)}).status_code == 204
        assert "not allowed after configuring boot-specific resources" in fault(
            e.put("/snapshot/load", json=load_body(tmp_path / "s", tmp_path / "m")))
    finally:
        e.close()


def test_memory_file_is_sparse_and_complete(tmp_path, snapshot):
    snap, mem, _ = snapshot
    st = os.stat(mem)
    assert st.st_size == 32 << 20  # every byte of guest RAM, in Firecracker's layout
    assert st.st_blocks * 512 < 4 << 20  # untouched pages are holes


KVM_GET_SUPPORTED_CPUID = 0xC008AE05  # _IOWR(KVMIO, 0x05, struct kvm_cpuid2)
# The feature words snapshot/cpu_x86_64.c checks against the host: (function, index, register)
FEATURE_WORDS = [(1, 0, 2), (1, 0, 3), (7, 0, 1), (7, 0, 2), (7, 0, 3), (0xD, 1, 0),
                 (0x80000001, 0, 2), (0x80000001, 0, 3)]
# Bits ember's CPUID normalization (vmm/cpuid_x86_64.c) takes from KVM's offer on some hosts:
# PDCM, WAITPKG (Intel), ARCH_CAPABILITIES (AMD), TOPOEXT (AMD, by topology).
NORMALIZED_AWAY = {(1, 0, 2): 1 << 15, (7, 0, 2): 1 << 5, (7, 0, 3): 1 << 29,
                   (0x80000001, 0, 2): 1 << 22}


def host_cpuid():
    """{(function, index): [eax, ebx, ecx, edx]} of KVM_GET_SUPPORTED_CPUID."""
    buf = bytearray(struct.pack("<II", 256, 0) + bytes(256 * 40))
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, KVM_GET_SUPPORTED_CPUID, buf)
    finally:
        os.close(fd)
    out = {}
    for i in range(struct.unpack_from("<I", buf)[0]):
        fn, idx, flags, *regs = struct.unpack_from("<IIIIIII", buf, 8 + 40 * i)
        out[(fn, idx if flags & 1 else 0)] = regs
    return out


def movable_here(b):
    """The snapshot as it would be moved to this host (CRC recomputed): its vCPUs' CPUID
    feature words cut to what this host's KVM offers, and its TSC rate made unknown (the guest
    runs at this host's). A snapshot loads only where the CPU has its features and, without
    TSC scaling, the same TSC rate, and the loader refuses it otherwise; the fixture must load
    on every machine of its CPU vendor that CI runs on, not only the one that wrote it."""
    host = host_cpuid()

    def cut_cpuid(b, at, n):  # struct kvm_cpuid_entry2[]
        for e in range(at, at + n, 40):
            fn, idx = struct.unpack_from("<II", b, e)
            for word in FEATURE_WORDS:
                if (fn, idx) != word[:2]:
                    continue
                reg = word[2]
                have = host.get((fn, idx), host.get((fn, 0), [0] * 4))[reg]
                have &= ~NORMALIZED_AWAY.get(word, 0)
                v = struct.unpack_from("<I", b, e + 12 + 4 * reg)[0]
                struct.pack_into("<I", b, e + 12 + 4 * reg, v & have)

    def unknown_tag(b, at, n):  # SF_CPU_TSC_KHZ becomes an unknown optional tag
        struct.pack_into("<I", b, at - 8, 0x7FFF)

    return vcpu_fields(vcpu_fields(b, 2, cut_cpuid), 12, unknown_tag)


def vcpu_fields(b, tag, fn):
    """Calls fn(b, offset of the data, length) for each vCPU's field tag; Returns b resealed."""
    b = bytearray(b)
    off = 32
    while off < len(b) - 8:
        stype, _, slen = struct.unpack_from("<IIQ", b, off)
        p, end = off + 16, off + 16 + slen
        while stype == 7 and p < end:  # SNAP_SEC_VCPU
            ftag, flen = struct.unpack_from("<II", b, p)
            if ftag & 0x7FFFFFFF == tag:
                fn(b, p + 8, flen)
            p += 8 + ((flen + 7) & ~7)
        off = end + (-slen % 8)
    return resealed(bytes(b))


def heartbeat_now(b):
    """The probe's heartbeat waits in r13 for an absolute TSC value, the next tick's. A host that
    cannot give the guest the saved TSC (on PVM the guest reads the host's own) would wait until
    its TSC got there, hours for a fixture written on a host up longer: the wait starts afresh
    (r13 = 0), so the first tick after the load shows that the restored vCPU and memory run."""
    return vcpu_fields(b, 4, lambda b, at, n: struct.pack_into("<Q", b, at + 13 * 8, 0))


def cpu_vendor():
    for line in open("/proc/cpuinfo"):
        if line.startswith("vendor_id"):
            return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(line.split(":")[1].strip())
    return None


def test_fixture_from_format_1_loads(tmp_path):
    """Snapshots written by the first format: every later ember must load them. One per CPU
    vendor (no VMM restores across vendors: MSRs such as ARCH_CAPABILITIES exist on one only),
    moved to this host's CPU features and TSC rate (movable_here)."""
    vendor = cpu_vendor()
    assert vendor, "no snapshot fixture for this CPU vendor (tests/fixtures/snapshot-v1)"
    src = FIXTURE / f"probe-{vendor}.snap"
    mem = tmp_path / "probe.mem"
    with gzip.open(FIXTURE / f"probe-{vendor}.mem.gz", "rb") as f, open(mem, "wb") as dst:
        shutil.copyfileobj(f, dst)
    info = subprocess.run([str(EMBER), "snapshot", "info", "--json", str(src)],
                          capture_output=True, text=True, timeout=30)
    assert info.returncode == 0, info.stderr
    j = json.loads(info.stdout)
    assert (j["format_version"], j["vcpu_count"], j["mem_size_mib"]) == (1, 1, 8)
    text = subprocess.run([str(EMBER), "snapshot", "info", str(src)],
                          capture_output=True, text=True, timeout=30)
    assert "1 vCPUs, 8 MiB" in text.stdout and "vcpu" in text.stdout
    snap = tmp_path / "probe.snap"
    snap.write_bytes(heartbeat_now(movable_here(src.read_bytes())))
    e = start(tmp_path)
    try:
        r = e.put("/snapshot/load", json=load_body(snap, mem))
        assert r.status_code == 204, r.text
        assert wait_tick(e, 0) == 14
    finally:
        e.close()


def test_fixture_xsave_component_the_guest_enabled_is_refused(tmp_path):
    """XSAVE state of a component this host lacks is dropped when the guest never enabled it
    (the fixture's PKRU, which KVM saves whatever XCR0 says, loads on a host without PKU), but
    refused when the guest's XCR0 has it: a 400 that names it, and the process loads again."""
    vendor = cpu_vendor()
    host = host_cpuid().get((0xD, 0), [3, 0, 0, 0])
    have = host[0] | host[3] << 32
    lacking = [bit for bit in (9, 17, 18) if not have >> bit & 1]
    assert lacking, f"this host has every candidate XSAVE component (0x{have:x})"
    bit = 1 << lacking[0]
    src = FIXTURE / f"probe-{vendor}.snap"
    mem = tmp_path / "probe.mem"
    with gzip.open(FIXTURE / f"probe-{vendor}.mem.gz", "rb") as f, open(mem, "wb") as dst:
        shutil.copyfileobj(f, dst)

    def enable(b, at, n):  # XSTATE_BV of the area (after the 512-byte legacy region)
        struct.pack_into("<Q", b, at + 512, struct.unpack_from("<Q", b, at + 512)[0] | bit)

    def xcr0(b, at, n):  # struct kvm_xcrs: nr_xcrs, flags, then {xcr, reserved, value}
        for i in range(struct.unpack_from("<I", b, at)[0]):
            if struct.unpack_from("<I", b, at + 8 + 16 * i)[0] == 0:
                v = struct.unpack_from("<Q", b, at + 16 + 16 * i)[0]
                struct.pack_into("<Q", b, at + 16 + 16 * i, v | bit)

    moved = heartbeat_now(movable_here(src.read_bytes()))
    snap = tmp_path / "probe.snap"
    snap.write_bytes(vcpu_fields(vcpu_fields(moved, 6, enable), 7, xcr0))
    e = start(tmp_path)
    try:
        msg = fault(e.put("/snapshot/load", json=load_body(snap, mem)))
        assert "XSAVE components" in msg and f"0x{bit:x}" in msg, msg
        snap.write_bytes(vcpu_fields(moved, 6, enable))  # not in XCR0: dropped, loads
        r = e.put("/snapshot/load", json=load_body(snap, mem))
        assert r.status_code == 204, r.text
        assert wait_tick(e, 0) == 14
    finally:
        e.close()


def test_drives_and_interfaces_come_back_by_name(tmp_path, scratch, ember_bin):
    """A drive and a network interface (on a TAP in a namespace of the test's) go into the
    snapshot by path and TAP name; a load opens them again, or says which one it cannot."""
    from test_virtio_net import Netns
    ns = Netns()
    try:
        ns.tap("tap0")
        ns.tap("tap1")
        disk = tmp_path / "data.img"
        disk.write_bytes(b"\0" * (1 << 20))
        wrapper = ns.wrapper(tmp_path, ember_bin)
        (scratch / "src").mkdir()
        e = start(binary=wrapper, d=scratch / "src")
        try:
            assert e.put("/machine-config", json={"vcpu_count": 1, "mem_size_mib": 32}).ok
            assert e.put("/boot-source", json={"kernel_image_path": str(PROBE),
                                               "boot_args": "c"}).ok
            assert e.put("/drives/data", json={"drive_id": "data", "path_on_host": str(disk),
                                               "is_root_device": False,
                                               "is_read_only": False}).status_code == 204
            assert e.put("/network-interfaces/eth0", json={
                "iface_id": "eth0", "host_dev_name": "tap0",
                "guest_mac": "06:00:ac:10:00:02"}).status_code == 204
            assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
            wait_tick(e, 1)
            snap, mem, last = take_snapshot(e, tmp_path)
        finally:
            e.close()
        info = json.loads(subprocess.run([str(EMBER), "snapshot", "info", "--json", str(snap)],
                                         capture_output=True, text=True, timeout=30).stdout)
        assert info["drives"][0]["path_on_host"] == str(disk)
        assert info["network_interfaces"][0]["host_dev_name"] == "tap0"

        def fresh(name):
            (scratch / name).mkdir()
            return start(binary=wrapper, d=scratch / name)

        e = fresh("bad")
        try:
            body = load_body(snap, mem)
            msg = fault(e.put("/snapshot/load", json={
                **body, "network_overrides": [{"iface_id": "eth9", "host_dev_name": "tap1"}]}))
            assert "no network interface `eth9`" in msg, msg
            msg = fault(e.put("/snapshot/load", json={
                **body, "network_overrides": [{"iface_id": "eth0", "host_dev_name": "nosuch"}]}))
            assert "nosuch" in msg, msg
            os.rename(disk, tmp_path / "moved.img")
            msg = fault(e.put("/snapshot/load", json=body))
            assert str(disk) in msg, msg  # the missing drive is named
            os.rename(tmp_path / "moved.img", disk)
            assert e.get("/").json()["state"] == "Not started"
        finally:
            e.close()
        e = fresh("good")
        try:
            r = e.put("/snapshot/load", json={
                **load_body(snap, mem),
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1"}]})
            assert r.status_code == 204, r.text
            assert wait_tick(e, 0) == last + 1
            cfg = e.get("/vm/config").json()
            assert cfg["drives"][0]["path_on_host"] == str(disk)
            assert cfg["network-interfaces"][0]["host_dev_name"] == "tap1"
            assert cfg["network-interfaces"][0]["guest_mac"] == "06:00:ac:10:00:02"
            assert cfg["machine-config"]["mem_size_mib"] == 32
            # PATCH /drives on the restored VM: the drive is the configuration's
            other = tmp_path / "other.img"
            other.write_bytes(b"\0" * (2 << 20))
            r = e.patch("/drives/data", json={"drive_id": "data", "path_on_host": str(other)})
            assert r.status_code == 204, r.text
            assert e.get("/vm/config").json()["drives"][0]["path_on_host"] == str(other)
        finally:
            e.close()
    finally:
        ns.delete()
