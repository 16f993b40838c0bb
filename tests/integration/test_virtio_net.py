"""virtio-net on a TAP device. Every TAP and address lives in a network namespace the test
creates and deletes (ember runs inside it); nothing touches the host's own networking.

Without KVM: PUT /network-interfaces validation as Firecracker's (unknown TAP, bad and
duplicate MAC, duplicate TAP, an id that replaces, too many devices, PATCH before boot).
With KVM (the nested test host): a guest booted through the API sees the configured MAC on
eth0 and a second interface, pings the host end, moves 16 MiB each way over TCP with matching
checksums, and a PATCH of its tx rate limiter after boot slows it down to the limit; the
second interface's TAP deleted under the running VM makes its frames fail (counted, logged)
while the VMM and the API stay up. Another guest receives through an rx rate limiter (the
transfer takes at least as long as the limit allows) and then hands a second interface's
device hostile tx input from inside (tests/guest/net_hostile.c): lying headers, a short chain,
an oversized frame and a notify storm are dropped and counted, a descriptor outside RAM gets
NEEDS_RESET, the VMM and the API stay up."""
import itertools
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import time

import pytest

from api_client import Ember, fault
from ember_vm import BOOT_TIMEOUT, PROBE, SLOW, run, wait_for

HERE = pathlib.Path(__file__).resolve().parent
NET_HOSTILE = HERE.parents[1] / "build" / "tests" / "guest" / "net_hostile"
MiB = 1 << 20
HOST_IP, GUEST_IP = "10.200.0.1", "10.200.0.2"
MAC = "06:00:ac:10:00:02"
CMDLINE = ("console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
           "i8042.dumbkbd quiet")
_names = itertools.count()


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60)


class Netns:
    """A network namespace with TAP devices; ember and the host peer run inside it."""

    def __init__(self):
        self.name = f"ember-net-{os.getpid()}-{next(_names)}"
        self.taps = []
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def tap(self, name, addr=None):
        sh("ip", "-n", self.name, "tuntap", "add", "dev", name, "mode", "tap")
        self.taps.append(name)
        if addr:
            sh("ip", "-n", self.name, "addr", "add", addr, "dev", name)
        sh("ip", "-n", self.name, "link", "set", name, "up")
        return name

    def wrapper(self, tmp_path, ember_bin):
        """An executable that runs ember inside the namespace (as Ember.start's binary)."""
        w = pathlib.Path(tmp_path) / f"ember-in-{self.name}"
        w.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {ember_bin} "$@"\n')
        w.chmod(0o755)
        return w

    def delete(self):
        for t in self.taps:
            subprocess.run(["ip", "-n", self.name, "link", "del", t], capture_output=True,
                           timeout=60)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=60)


@pytest.fixture
def netns():
    ns = Netns()
    yield ns
    ns.delete()


@pytest.fixture
def vm_in_ns(netns, ember_bin, scratch, tmp_path):
    vm = Ember.start(netns.wrapper(tmp_path, ember_bin), scratch, "--id", "net-vm")
    yield vm
    vm.close()


def iface(id_, tap, mac=None, **kw):
    body = {"iface_id": id_, "host_dev_name": tap, **kw}
    if mac:
        body["guest_mac"] = mac
    return body


@pytest.mark.parametrize("spec, message, code", [
    ("tap=nosuchtap0", "no network interface named nosuchtap0 on the host", 152),
    ("mac=06:00:00:00:00:01", "--net needs tap=NAME (see ember run --help)", 153),
    ("tap=x,mac=zz", "--net: mac 'zz' is not xx:xx:xx:xx:xx:xx", 153),
])
def test_ember_run_net_errors(ember_bin, tmp_path, spec, message, code):
    """ember run --net with a bad spec or a missing TAP: one line that says why, no VM."""
    r = subprocess.run([str(ember_bin), "run", "--kernel", str(PROBE), "--net", spec],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == code and message in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.kvm
def test_ember_run_net(netns, ember_bin, guest_assets, tmp_path):
    """`ember run --net tap=NAME,mac=MAC` as a person at a shell uses it: the guest sees the MAC
    and reaches the host through the TAP; a second --net without a MAC gets one of its own."""
    netns.tap("tap0", f"{HOST_IP}/24")
    netns.tap("tap1")
    rootfs = tmp_path / "rootfs.ext4"
    shutil.copy(guest_assets["rootfs"], rootfs)
    cmd = (f"ip link set eth0 up; ip addr add {GUEST_IP}/24 dev eth0; "
           "echo mac=$(cat /sys/class/net/eth0/address) eth1=$(cat /sys/class/net/eth1/address); "
           f"ping -c 3 -W 10 {HOST_IP} >/dev/null && echo ping=ok")
    r = run(["ip", "netns", "exec", netns.name, str(ember_bin), "run", "--kernel",
             str(guest_assets["vmlinux"]), "--rootfs", str(rootfs), "--mem", "256",
             "--cmdline", f'{CMDLINE} ember.cmd="{cmd}"', "--net", f"tap=tap0,mac={MAC}",
             "--net", "tap=tap1"], tmp_path)
    assert r.code == 0 and not r.timed_out, r
    assert f"mac={MAC}" in r.console and "ping=ok" in r.console, r
    eth1 = r.console.split("eth1=", 1)[1].split()[0]
    assert len(eth1) == 17 and eth1 != MAC, r


@pytest.mark.kvm
def test_network_overrides_carry_traffic_after_a_load(netns, ember_bin, guest_assets, scratch,
                                                      tmp_path):
    """A guest pinging the host through tap0 is snapshotted; tap0 is then deleted and the load
    moves eth0 onto tap1 (network_overrides, as a clone gets its own TAP): the guest's pings
    go on through tap1. tap1 takes tap0's MAC, as the guest's ARP entry names it."""
    netns.tap("tap0", f"{HOST_IP}/24")
    netns.tap("tap1")
    rootfs = tmp_path / "rootfs.ext4"
    shutil.copy(guest_assets["rootfs"], rootfs)
    cmd = (f"ip link set eth0 up; ip addr add {GUEST_IP}/24 dev eth0; i=0; "
           f"while [ $i -lt 900 ]; do ping -c 1 -W 1 {HOST_IP} >/dev/null && echo pong $i; "
           "i=$((i+1)); sleep 0.2; done")
    pongs = re.compile(rb"pong (\d+)")
    snap_dir = scratch / "snap"  # local tmpfs in the test host: the memory file is mapped
    snap_dir.mkdir()
    (scratch / "a").mkdir()
    e = Ember.start(netns.wrapper(tmp_path, ember_bin), scratch / "a")
    try:
        assert e.put("/boot-source", {"kernel_image_path": str(guest_assets["vmlinux"]),
                                      "boot_args": f'{CMDLINE} ember.cmd="{cmd}"'}
                     ).status_code == 204
        assert e.put("/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(rootfs),
                                        "is_root_device": True,
                                        "is_read_only": False}).status_code == 204
        assert e.put("/network-interfaces/eth0", iface("eth0", "tap0", MAC)).status_code == 204
        assert e.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 128}).status_code == 204
        assert e.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
        assert wait_for(e.log_path, "pong 3", e.proc, BOOT_TIMEOUT), e.output()[-3000:]
        assert e.patch("/vm", {"state": "Paused"}).status_code == 204
        last = max(int(n) for n in pongs.findall(open(e.log_path, "rb").read()))
        r = e.put("/snapshot/create", {"snapshot_path": str(snap_dir / "vm.snap"),
                                       "mem_file_path": str(snap_dir / "vm.mem")})
        assert r.status_code == 204, r.text
    finally:
        e.close()
    mac0 = json.loads(sh("ip", "-n", netns.name, "-j", "link", "show", "tap0").stdout)[0]["address"]
    sh("ip", "-n", netns.name, "link", "del", "tap0")
    netns.taps.remove("tap0")
    sh("ip", "-n", netns.name, "link", "set", "tap1", "down")
    sh("ip", "-n", netns.name, "link", "set", "tap1", "address", mac0)
    sh("ip", "-n", netns.name, "addr", "add", f"{HOST_IP}/24", "dev", "tap1")
    sh("ip", "-n", netns.name, "link", "set", "tap1", "up")
    (scratch / "b").mkdir()
    e = Ember.start(netns.wrapper(tmp_path, ember_bin), scratch / "b")
    try:
        r = e.put("/snapshot/load", {
            "snapshot_path": str(snap_dir / "vm.snap"), "resume_vm": True,
            "mem_backend": {"backend_type": "File", "backend_path": str(snap_dir / "vm.mem")},
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1"}]})
        assert r.status_code == 204, r.text
        assert e.get("/vm/config").json()["network-interfaces"][0]["host_dev_name"] == "tap1"
        deadline = time.monotonic() + (600 if SLOW else 120)
        while not [n for n in pongs.findall(open(e.log_path, "rb").read()) if int(n) > last + 2]:
            assert time.monotonic() < deadline and e.proc.poll() is None, e.output()[-3000:]
            time.sleep(0.2)
    finally:
        e.close()


def test_put_validation(netns, vm_in_ns, tmp_path):
    vm = vm_in_ns
    netns.tap("tap0")
    netns.tap("tap1")
    assert "Open tap device failed" in fault(vm.put("/network-interfaces/a",
                                                    iface("a", "nosuchtap")))
    assert "invalid MAC address" in fault(vm.put("/network-interfaces/a",
                                                 iface("a", "tap0", "06:00:ac:10:00")))
    assert "invalid MAC address" in fault(vm.put("/network-interfaces/a",
                                                 iface("a", "tap0", "zz:00:ac:10:00:02")))
    assert "does not match" in fault(vm.put("/network-interfaces/a", iface("b", "tap0")))
    assert vm.put("/network-interfaces/a", iface("a", "tap0", MAC)).status_code == 204
    assert vm.put("/network-interfaces/a", iface("a", "tap0", MAC)).status_code == 204
    assert "The MAC address is already in use" in fault(
        vm.put("/network-interfaces/b", iface("b", "tap1", MAC.upper())))
    assert "host device name is already in use" in fault(
        vm.put("/network-interfaces/b", iface("b", "tap0")))
    assert "before starting" in fault(vm.patch("/network-interfaces/a", {"iface_id": "a"}))
    assert "unknown field" in fault(vm.patch("/network-interfaces/a",
                                             {"iface_id": "a", "host_dev_name": "tap1"}))
    cfg = vm.get("/vm/config").json()
    assert cfg["network-interfaces"] == [{"iface_id": "a", "host_dev_name": "tap0",
                                          "guest_mac": MAC}]
    # drives and network interfaces share the 19 interrupt lines
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(4096))
    for i in range(18):
        assert vm.put(f"/drives/d{i}", {"drive_id": f"d{i}", "path_on_host": str(disk),
                                        "is_root_device": False,
                                        "is_read_only": True}).status_code == 204
    assert "Too many network interfaces" in fault(vm.put("/network-interfaces/b",
                                                         iface("b", "tap1")))
    assert "Too many drives" in fault(vm.put("/drives/d99", {
        "drive_id": "d99", "path_on_host": str(disk), "is_root_device": False,
        "is_read_only": True}))


def test_config_file_unknown_tap(netns, ember_bin, tmp_path, scratch):
    """--config-file network-interfaces goes through the same checks as PUT."""
    kernel = tmp_path / "kernel"
    kernel.write_bytes(bytes(4096))
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"boot-source": {"kernel_image_path": str(kernel)},
                               "network-interfaces": [iface("a", "nosuchtap")]}))
    w = netns.wrapper(tmp_path, ember_bin)
    r = subprocess.run([str(w), "--api-sock", str(pathlib.Path(scratch) / "s"),
                        "--config-file", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "network-interfaces: Open tap device failed" in r.stdout + r.stderr


class Peer:
    """net_peer.py inside the namespace, read line by line with a deadline."""

    def __init__(self, ns, size, slow, timeout, mode=()):
        args = [*mode, HOST_IP, str(size)] + ([str(slow)] if slow is not None else [])
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, "/usr/bin/python3", str(HERE / "net_peer.py"),
             *args, str(timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next(self, timeout, vm):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        assert line, (f"net_peer said nothing: {self.proc.poll()} {self.stderr()}\n"
                      f"--- ember ---\n{vm.output()[-4000:]}")
        return json.loads(line)

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)


@pytest.mark.kvm
def test_guest_traffic_and_rate_limit_patch(netns, vm_in_ns, guest_assets, tmp_path):
    vm = vm_in_ns
    size, slow, limit = 16 * MiB, 2 * MiB, 256 * 1024
    netns.tap("tap0", f"{HOST_IP}/24")
    netns.tap("tap1")
    rootfs = tmp_path / "rootfs.ext4"
    shutil.copy(guest_assets["rootfs"], rootfs)
    metrics = tmp_path / "metrics.json"
    metrics.write_text("")
    t = 600 if SLOW else 120
    cmd = ("mount -t tmpfs tmpfs /mnt; ip link set eth0 up; "
           f"ip addr add {GUEST_IP}/24 dev eth0; echo mac=$(cat /sys/class/net/eth0/address); "
           "echo eth1=$(cat /sys/class/net/eth1/address); "
           f"ping -c 3 -W 10 {HOST_IP} >/dev/null && echo ping=ok; "
           f"timeout {t} nc {HOST_IP} 5002 </dev/null >/mnt/in; "
           "echo rx=$(wc -c </mnt/in):$(md5sum </mnt/in | cut -d' ' -f1); rm /mnt/in; "
           f"head -c {size} /dev/urandom >/mnt/out; "
           "echo tx=$(md5sum </mnt/out | cut -d' ' -f1); "
           f"timeout {t} nc {HOST_IP} 5001 </mnt/out >/dev/null; "
           f"timeout {t} nc {HOST_IP} 5003 </dev/null >/dev/null; "
           "ip link set eth1 up; ip addr add 10.201.0.2/24 dev eth1; "
           "ping -c 2 -W 2 10.201.0.1 >/dev/null; echo eth1-ping=$?; "
           f"head -c {slow} /mnt/out | timeout {t} nc {HOST_IP} 5004 >/dev/null; echo net-done; "
           f"timeout {t} nc {HOST_IP} 5005 </dev/null >/dev/null")
    peer = Peer(netns, size, slow, t)
    try:
        assert vm.put("/boot-source", {"kernel_image_path": str(guest_assets["vmlinux"]),
                                       "boot_args": f'{CMDLINE} ember.cmd="{cmd}"'}
                      ).status_code == 204
        assert vm.put("/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(rootfs),
                                         "is_root_device": True,
                                         "is_read_only": False}).status_code == 204
        assert vm.put("/network-interfaces/eth0", iface("eth0", "tap0", MAC)).status_code == 204
        assert vm.put("/network-interfaces/eth1", iface("eth1", "tap1")).status_code == 204
        assert vm.put("/machine-config", {"vcpu_count": 1,
                                          "mem_size_mib": 256}).status_code == 204
        assert vm.put("/metrics", {"metrics_path": str(metrics)}).status_code == 204
        assert vm.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
        sent = peer.next(BOOT_TIMEOUT, vm)
        got = peer.next(t, vm)
        assert got["recv_len"] == size, got
        fast = size / got["secs"]
        assert peer.next(t, vm) == {"ready": True}
        r = vm.patch("/network-interfaces/eth0", {
            "iface_id": "eth0",
            "tx_rate_limiter": {"bandwidth": {"size": limit, "refill_time": 1000}}})
        assert r.status_code == 204, r.text
        # tap1 disappears under the running VM: its device reports errors, the VMM stays up
        sh("ip", "-n", netns.name, "link", "del", "tap1")
        netns.taps.remove("tap1")
        peer.proc.stdin.write("go\n")
        peer.proc.stdin.flush()
        limited = peer.next(t, vm)
        assert limited["slow_len"] == slow, limited
        assert wait_for(vm.log_path, "net-done", vm.proc, t), vm.output()[-3000:]
        assert vm.put("/actions", {"action_type": "FlushMetrics"}).status_code == 204
        assert vm.get("/").json()["state"] == "Running"
        peer.proc.stdin.write("bye\n")  # the guest ends, the VM stops
        peer.proc.stdin.flush()
        assert vm.wait(t) == 0, vm.output()[-4000:]
        text = vm.output()
        assert "eth1-ping=1" in text, text[-4000:]
        assert "TAP tap1 " in text and "no longer carries frames" in text, text[-4000:]
        assert "ember.exit=0" in text and f"mac={MAC}" in text, text[-4000:]
        eth1 = text.split("eth1=", 1)[1].split()[0]
        assert len(eth1) == 17 and eth1 != MAC, text[-4000:]
        assert "ping=ok" in text, text[-4000:]
        assert f"rx={size}:{sent['sent_md5']}" in text, text[-4000:]
        assert f"tx={got['recv_md5']}" in text, text[-4000:]
        # The bucket starts full (limit bytes), then refills limit bytes a second.
        rate = (slow - limit) / limited["slow_secs"]
        print(f"virtio-net: unlimited guest->host {fast / MiB:.1f} MiB/s, "
              f"limited {rate / 1024:.0f} KiB/s (limit {limit // 1024} KiB/s)")
        assert rate <= 1.15 * limit, f"{rate / 1024:.0f} KiB/s over the limit"
        assert rate >= 0.5 * limit, f"{rate / 1024:.0f} KiB/s: far under the limit"
        assert fast > 2 * limit, "the unlimited transfer was not faster than the limit"
        net = {}  # the counters are deltas per line: their sum over the run
        for line in metrics.read_text().strip().splitlines():
            for k, v in json.loads(line).get("net", {}).items():
                net[k] = net.get(k, 0) + v
        assert net["rx_bytes_count"] >= size and net["tx_bytes_count"] >= size + slow, net
        assert net["tx_rate_limiter_throttled"] > 0, net
        assert net["tx_fails"] > 0, net  # eth1's frames after its TAP went away
    finally:
        peer.close()


def net_metrics(path):
    net = {}  # the counters are deltas per line: their sum over the run
    for line in path.read_text().strip().splitlines():
        for k, v in json.loads(line).get("net", {}).items():
            net[k] = net.get(k, 0) + v
    return net


@pytest.mark.kvm
def test_rx_rate_limit_and_hostile_guest(netns, vm_in_ns, guest_assets, tmp_path):
    """One boot for three checks (each boot costs minutes in the test host): eth0 receives
    through an rx rate limiter, then through the one a PATCH put in its place, then net_hostile
    drives eth1's device (kept down in the guest)
    through /dev/mem. Drives: rootfs (0xc0001000), tools (0xc0002000); nets: eth0
    (0xc0003000), eth1 (0xc0004000)."""
    vm = vm_in_ns
    limit, size = 256 * 1024, 1 * MiB
    limit2, size2 = 64 * 1024, 512 * 1024  # after the PATCH: the old limit would take ~2 s
    netns.tap("tap0", f"{HOST_IP}/24")
    netns.tap("tap1")
    rootfs = tmp_path / "rootfs.ext4"
    shutil.copy(guest_assets["rootfs"], rootfs)
    tree = tmp_path / "tools"
    tree.mkdir()
    shutil.copy(NET_HOSTILE, tree / "net_hostile")
    tools = tmp_path / "tools.ext4"
    with open(tools, "wb") as f:
        f.truncate(8 * MiB)
    sh("mkfs.ext4", "-q", "-F", "-d", str(tree), str(tools))
    metrics = tmp_path / "metrics.json"
    metrics.write_text("")
    t = 600 if SLOW else 120
    cmd = ("mount -t tmpfs tmpfs /mnt; ip link set eth0 up; "
           f"ip addr add {GUEST_IP}/24 dev eth0; timeout {t} nc {HOST_IP} 5006 </dev/null "
           f">/mnt/rx; echo rx-done=$? rx-len=$(wc -c </mnt/rx); rm /mnt/rx; "
           f"timeout {t} nc {HOST_IP} 5007 </dev/null; timeout {t} nc {HOST_IP} 5008 </dev/null "
           f">/mnt/rx; echo rx2-done=$? rx2-len=$(wc -c </mnt/rx); rm /mnt/rx; "
           f"timeout {t} nc {HOST_IP} 5009 </dev/null; mkdir -p /mnt/t && mount -o ro /dev/vdb /mnt/t && "
           # the guest stays up after its probe until the test has used the API (it used to
           # reboot at once, and a FlushMetrics could meet an ember already exiting)
           f"/mnt/t/net_hostile 0xc0004000; echo probe=$?; sleep {t}")
    peer = Peer(netns, size, size2, t, mode=("rx-limit",))
    try:
        assert vm.put("/boot-source", {"kernel_image_path": str(guest_assets["vmlinux"]),
                                       "boot_args": f'{CMDLINE} ember.cmd="{cmd}"'}
                      ).status_code == 204
        for id_, path, root in (("rootfs", rootfs, True), ("tools", tools, False)):
            assert vm.put(f"/drives/{id_}", {"drive_id": id_, "path_on_host": str(path),
                                             "is_root_device": root,
                                             "is_read_only": not root}).status_code == 204
        assert vm.put("/network-interfaces/eth0", iface(
            "eth0", "tap0", MAC,
            rx_rate_limiter={"bandwidth": {"size": limit, "refill_time": 1000}})
                      ).status_code == 204
        assert vm.put("/network-interfaces/eth1", iface("eth1", "tap1")).status_code == 204
        assert vm.put("/machine-config", {"vcpu_count": 1,
                                          "mem_size_mib": 256}).status_code == 204
        assert vm.put("/metrics", {"metrics_path": str(metrics)}).status_code == 204
        assert vm.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
        got = peer.next(BOOT_TIMEOUT + t, vm)
        # A lower bound, a correctness check of the limiter and not a timing benchmark: the
        # bucket starts full (limit bytes) and then refills limit bytes a second, so the rest
        # cannot arrive faster than that (0.8: slack for the clocks and the TAP's queue).
        floor = (size - limit) / limit * 0.8
        print(f"virtio-net: {size // 1024} KiB through an rx limit of {limit // 1024} KiB/s in "
              f"{got['rx_secs']:.2f} s (at least {floor:.2f} s)")
        assert got["rx_secs"] >= floor, got
        # and an upper bound, wide for a loaded emulated host: a limiter that held frames back
        # far past its rate (3 s here) would show
        assert got["rx_secs"] <= 4 * floor / 0.8 + 20, got
        r = vm.patch("/network-interfaces/eth0", {
            "iface_id": "eth0",
            "rx_rate_limiter": {"bandwidth": {"size": limit2, "refill_time": 1000}}})
        assert r.status_code == 204, r.text
        peer.proc.stdin.write("go\n")
        peer.proc.stdin.flush()
        got2 = peer.next(t, vm)
        floor2 = (size2 - limit2) / limit2 * 0.8  # 5.6 s; under the old limit it takes ~2 s
        print(f"virtio-net: after the PATCH, {size2 // 1024} KiB through {limit2 // 1024} KiB/s "
              f"in {got2['rx2_secs']:.2f} s (at least {floor2:.2f} s)")
        assert got2["rx2_secs"] >= floor2, got2
        assert got2["rx2_secs"] <= 4 * floor2 / 0.8 + 20, got2
        assert wait_for(vm.log_path, "probe=", vm.proc, t), vm.output()[-4000:]
        assert vm.get("/").json()["state"] == "Running"  # the API answers after the storm
        assert vm.put("/actions", {"action_type": "FlushMetrics"}).status_code == 204
        assert vm.put("/actions", {"action_type": "SendCtrlAltDel"}).status_code == 204
        assert vm.wait(t) == 0, vm.output()[-4000:]
        text = vm.output()
        assert f"rx-done=0 rx-len={size}" in text, text[-4000:]
        assert f"rx2-done=0 rx2-len={size2}" in text, text[-4000:]
        for case in ("csum-past-end", "gso-not-negotiated", "shorter-than-header",
                     "over-the-limit", "storm-then-good", "good-after-reset"):
            assert re.search(rf"net_hostile: {case} used=\d+ status=0xf\b", text), text[-4000:]
        m = re.search(r"net_hostile: outside-ram status=0x([0-9a-f]+)", text)
        assert m and int(m.group(1), 16) & 0x40, text[-4000:]  # NEEDS_RESET
        assert "net_hostile: ok" in text and "probe=0" in text, text[-4000:]
        assert "needs a reset" in text, text[-4000:]
        net = net_metrics(metrics)
        assert net["rx_rate_limiter_throttled"] > 0, net
        assert net["tx_malformed_frames"] >= 4, net  # the two lies, the short chain, the big one
        assert net["rx_bytes_count"] >= size, net
    finally:
        peer.close()
