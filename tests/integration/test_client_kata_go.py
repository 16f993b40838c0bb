"""Kata Containers' Go Firecracker driver (virtcontainers/fc.go), replayed against ember, plain
and jailed (issue 20).

Derived from (read, not copied):
  kata-containers/kata-containers @ 7c6ba40c54ea29b459b4997cff948caaba4e658b
    src/runtime/virtcontainers/fc.go
      setPaths           vmPath <chrootBase>/<basename of the hypervisor path>/<id>, jailerRoot
                         <vmPath>/root, API socket <root>/run/firecracker.socket
      fcInitConfiguration  MkdirAll(<root>/run, 0750); jailed: bind <root> onto itself
                         (shared) for exec; machine-config (smt always false); the kernel
                         and the image bind-mounted to <root>/vmlinux and <root>/rootfs; the
                         image as drive "rootfs" (read-only, not the root device);
                         createDiskPool: 8 zero-byte placeholders drive_0..drive_7 made in
                         <root>; logs.fifo / metrics.fifo made in <vmPath> (containerd fifo:
                         O_CREAT|O_RDONLY|O_NONBLOCK, read by Kata) and bind-mounted in
      fcSetLogger        level "Error" ("Debug" with debug on), log_path the FIFO
      kernel params      config kernel_params, then root=/dev/vda1 rootflags=data=ordered,
                         errors=remount-ro ro rootfstype=ext4 (GetKernelRootParams, virtio-blk),
                         pci=off reboot=k panic=1 iommu=off net.ifnames=0 random.trust_cpu=on
                         acpi=off, then console=ttyS0 (debug) or 8250.nr_uarts=0
                         agent.log_vport=1025
      StartVM            the config (types.FcConfig: boot-source, machine-config, [vsock],
                         logger, metrics, drives, [network-interfaces]) written with
                         json.MarshalIndent(.., "", "\\t") to <vmPath>/fcConfig.json (0640)
      fcInit             `<hypervisor> --version`: 2nd word, "v" trimmed, blang/semver >= 0.21.1;
                         jailed: `<jailer> --id ID --exec-file PATH --uid 0 --gid 0
                         --chroot-base-dir BASE --daemonize [--netns NS] -- --config-file
                         /fcConfig.json`; plain: `<hypervisor> --api-sock S --config-file C`;
                         waitVMMRunning: GET / until state "Running" (10 ms apart, 10 s);
                         jailed: <root>/firecracker.pid, retried for 5 s
      GetThreadIDs       /proc/<pid>/task/*/comm starting with "fc_vcpu", the rest the index
      hotplugBlockDevice the new file bind-mounted over <root>/drive_N, then
                         PATCH /drives/drive_N {"drive_id","path_on_host"}
      fcEnd              SIGTERM, waits 15 s
    src/runtime/virtcontainers/types/fcConfig.go, pkg/firecracker/client/models/*.go
                         omitempty: vsock, logger, metrics, drives, network-interfaces; cache_type
                         only with block_device_cache_set; Smt *bool always sent
    src/runtime/virtcontainers/fc_metrics.go  the metrics line decoded into uint64 fields
Not replayed (waiting for their issues, listed in api-socket/CLIENTS.md): the hybrid vsock
(fcAddVsock: "vsock" in the config, then StartVM's chmod of <root>/kata.hvsock, which fails
without it and makes Kata stop the VM) and the network interfaces (fcAddNetDevice).
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess

import pytest

from fc_clients import (GO_HEADERS, PROBE, REPO, TIMEOUT, Conn, Vmm, semver_at_least,
                        swagger_version, thread_names, vcpu_threads, wait_until)

JAILER = REPO / "build" / "ember-jailer"
DISK_POOL = 8
ROOT_PARAMS = ("root=/dev/vda1 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4")
FC_PARAMS = "pci=off reboot=k panic=1 iommu=off net.ifnames=0 random.trust_cpu=on acpi=off"
NON_DEBUG = "8250.nr_uarts=0 agent.log_vport=1025"


def kata_version_check(hypervisor):
    """getVersionNumber + checkVersion."""
    out = subprocess.run([str(hypervisor), "--version"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    fields = out.split("\n")[0].split(" ")
    assert len(fields) > 1, out
    version = fields[1].strip().removeprefix("v")
    assert semver_at_least(version, (0, 21, 1)), version
    return version


def gone(pid):
    """The process has exited (no /proc entry, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class KataVm:
    """The files Kata's fc.go prepares for one sandbox, and its calls."""

    def __init__(self, base, vm_id, hypervisor, jailed, debug):
        self.vm_id, self.hypervisor, self.jailed, self.debug = vm_id, hypervisor, jailed, debug
        self.vm_path = base / os.path.basename(hypervisor) / vm_id
        self.root = self.vm_path / "root"
        self.sock = self.root / "run" / "firecracker.socket"
        self.mounts, self.readers, self.metrics_lines = [], [], []
        self.vmm, self.pid = None, None
        self.api = Conn(self.sock, GO_HEADERS)

    # -- fcInitConfiguration ----------------------------------------------------------------
    def bind(self, src, dst, propagation=None):
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
        if propagation:
            subprocess.run(["mount", f"--make-{propagation}", str(dst)], check=True)
        self.mounts.append(dst)

    def jail_resource(self, src, dst):
        """fcJailResource: bind-mount src at <root>/dst; the path ember is given."""
        where = self.root / dst
        if not where.exists():
            where.write_bytes(b"")
        self.bind(src, where)
        return f"/{dst}" if self.jailed else str(where)

    def jailed_drive(self, name):
        """createJailedDrive: an empty file in <root>, bind-mounted over later."""
        (self.root / name).write_bytes(b"")
        return f"/{name}" if self.jailed else str(self.root / name)

    def listen_fifo(self, name):
        path = self.vm_path / name
        os.mkfifo(path, 0o600)
        self.readers.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        return self.jail_resource(path, name)

    def configure(self, kernel, image, kernel_params, vcpus, mem):
        (self.root / "run").mkdir(parents=True, mode=0o750)
        for d in (self.vm_path.parent, self.vm_path, self.root):
            os.chmod(d, 0o750)
        if self.jailed:
            self.bind(self.root, self.root, "shared")  # fcRemountJailerRootWithExec
        machine = {"mem_size_mib": mem, "smt": False, "vcpu_count": vcpus}
        tail = "console=ttyS0" if self.debug else NON_DEBUG
        boot = {"boot_args": f"{kernel_params} {ROOT_PARAMS} {FC_PARAMS} {tail}".strip(),
                "kernel_image_path": self.jail_resource(kernel, "vmlinux")}
        drives = [{"drive_id": "rootfs", "is_read_only": True, "is_root_device": False,
                   "path_on_host": self.jail_resource(image, "rootfs")}]
        for i in range(DISK_POOL):
            drives.append({"drive_id": f"drive_{i}", "is_read_only": False,
                           "is_root_device": False, "path_on_host": self.jailed_drive(f"drive_{i}")})
        logger = {"level": "Debug" if self.debug else "Error",
                  "log_path": self.listen_fifo("logs.fifo")}
        metrics = {"metrics_path": self.listen_fifo("metrics.fifo")}
        self.config = {"boot-source": boot, "machine-config": machine, "logger": logger,
                       "metrics": metrics, "drives": drives}

    # -- StartVM / fcInit -------------------------------------------------------------------
    def start(self, jailer=JAILER):
        cfg = self.vm_path / "fcConfig.json"
        cfg.write_text(json.dumps(self.config, indent="\t"))
        os.chmod(cfg, 0o640)
        kata_version_check(self.hypervisor)
        cfg_path = self.jail_resource(cfg, "fcConfig.json")
        out = self.vm_path.parent / f"{self.vm_id}.out"
        if self.jailed:
            argv = [jailer, "--id", self.vm_id, "--exec-file", self.hypervisor, "--uid", "0",
                    "--gid", "0", "--chroot-base-dir", self.vm_path.parent.parent,
                    "--daemonize", "--", "--config-file", cfg_path]
        else:
            argv = [self.hypervisor, "--api-sock", self.sock, "--config-file", cfg_path]
        self.vmm = Vmm(argv, out)
        self.pid = None if self.jailed else self.vmm.proc.pid
        self.wait_running()
        if self.jailed:
            assert self.vmm.wait(TIMEOUT) == 0, self.vmm.output()  # the daemonizing jailer
            pidfile = self.root / "firecracker.pid"
            text = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(),
                              "firecracker.pid", timeout=5)
            self.pid = int(text)
            assert self.pid > 0

    def wait_running(self, timeout=10 if not os.environ.get("EMBER_IN_TESTHOST") else 600):
        def running():
            if not self.jailed and self.vmm.proc.poll() is not None:
                raise AssertionError(f"ember exited {self.vmm.proc.returncode}: "
                                     f"{self.vmm.output()[-3000:]}{self.log_text()}")
            if not self.sock.exists():
                return False
            try:
                r = self.api.request("GET", "/")
            except OSError:
                self.api.close()
                return False
            return r.status == 200 and r.json()["state"] == "Running"
        wait_until(running, "GET / to say Running (waitVMMRunning)", timeout=timeout)

    def log_text(self):
        """What reached Kata's log FIFO so far (Kata logs it at debug level)."""
        try:
            return os.read(self.readers[0], 1 << 20).decode(errors="replace")
        except (BlockingIOError, IndexError):
            return ""

    def hotplug(self, index, new_file):
        """hotplugBlockDevice(AddDevice): bind the file over the placeholder, PATCH."""
        drive = f"drive_{index}"
        path = self.jail_resource(new_file, drive)
        body = json.dumps({"drive_id": drive, "path_on_host": path}, separators=(",", ":"))
        r = self.api.request("PATCH", f"/drives/{drive}", (body + "\n").encode())
        assert r.status == 204, r

    def read_metrics(self):
        """updateMetrics: every line must decode into Kata's struct of uint64 counters."""
        data = b""
        while True:
            try:
                chunk = os.read(self.readers[1], 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        for line in data.decode().splitlines():
            m = json.loads(line)
            for section in ("api_server", "block", "get_api_requests", "i8042", "latencies_us",
                            "logger", "patch_api_requests", "put_api_requests", "seccomp",
                            "vcpu", "uart", "signals"):
                assert isinstance(m[section], dict), section
                for k, v in m[section].items():
                    assert isinstance(v, int) and v >= 0, (section, k, v)
            self.metrics_lines.append(m)
        return self.metrics_lines

    def stop(self):
        """fcEnd: SIGTERM, then wait (15 s) for the process to go."""
        if self.pid and os.path.exists(f"/proc/{self.pid}"):
            os.kill(self.pid, signal.SIGTERM)
            wait_until(lambda: gone(self.pid), "firecracker to stop", timeout=15)

    def cleanup(self):
        self.api.close()
        if self.pid and os.path.exists(f"/proc/{self.pid}"):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.vmm:
            self.vmm.kill()
        for fd in self.readers:
            os.close(fd)
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(m)], check=False)
        shutil.rmtree(self.vm_path, ignore_errors=True)


@pytest.fixture
def firecracker_bin(tmp_path, ember_bin):
    """ember installed under Kata's expected name: the jail is <base>/firecracker/<id> and the
    pid file firecracker.pid follow from it."""
    path = tmp_path / "bin" / "firecracker"
    path.parent.mkdir()
    shutil.copy(ember_bin, path)
    return path


def probe_rootfs(tmp_path):
    img = tmp_path / "kata-rootfs.img"
    img.write_bytes(b"\0" * 65536)
    return img


@pytest.mark.parametrize("jailed", [False, True], ids=["plain", "jailed"])
def test_kata_sequence_with_the_probe_guest(tmp_path, scratch, firecracker_bin, jailed):
    # The pre-boot part here: the --config-file with 9 drives, FIFOs nobody has read yet, the
    # version check, Running, the vCPU threads by name, a hot-swapped placeholder, SIGTERM.
    # The probe guest ("i": it idles) stands in for Linux.
    assert os.geteuid() == 0, "Kata runs as root (bind mounts, the jailer)"
    vm = KataVm(scratch / "kata", "kata-probe", firecracker_bin, jailed, debug=False)
    try:
        vm.configure(PROBE, probe_rootfs(tmp_path), "i", vcpus=2, mem=128)
        assert len(vm.config["drives"]) == 9
        vm.start()
        threads = vcpu_threads(vm.pid)
        assert sorted(threads) == [0, 1], (vm.pid, thread_names(vm.pid))
        r = vm.api.request("GET", "/vm/config")
        assert r.status == 200 and len(r.json()["drives"]) == 9, r
        new = tmp_path / "container.img"
        new.write_bytes(b"c" * 4096)
        vm.hotplug(0, new)
        # the bind mount made after launch reached ember's own mount namespace (jailed: the
        # shared jail root propagates into the jailer's slave copy)
        assert pathlib.Path(f"/proc/{vm.pid}/root/{'' if jailed else vm.root}/drive_0"
                            ).read_bytes() == b"c" * 4096
        info = vm.api.request("GET", "/").json()
        assert info["vmm_version"] == swagger_version() and info["id"] in ("kata-probe",
                                                                           "anonymous-instance")
        lines = vm.read_metrics()
        assert lines and lines[0]["put_api_requests"]["drive_count"] == 9, lines[:1]
        vm.stop()
        if jailed:
            # only what the jailer added goes away with the VM's own files; Kata cleans up
            assert (vm.root / "firecracker").exists() and (vm.root / "vmlinux").exists()
    finally:
        vm.cleanup()


def test_kata_version_check(firecracker_bin):
    # Kata takes the 2nd word of `firecracker --version`, drops the "v" and needs >= 0.21.1
    assert kata_version_check(firecracker_bin) == swagger_version()


def test_drive_past_the_limit_exits_152(tmp_path, scratch, firecracker_bin):
    # 19 virtio-mmio devices fit (GSI 5..23); a config file with 20 drives is refused at once
    # with Firecracker's exit code for a bad configuration.
    vm = KataVm(scratch / "kata", "kata-many", firecracker_bin, False, debug=False)
    try:
        vm.configure(PROBE, probe_rootfs(tmp_path), "i", vcpus=1, mem=128)
        for i in range(DISK_POOL, 19):
            vm.config["drives"].append({"drive_id": f"drive_{i}", "is_read_only": False,
                                        "is_root_device": False,
                                        "path_on_host": vm.jailed_drive(f"drive_{i}")})
        assert len(vm.config["drives"]) == 20
        cfg = vm.vm_path / "fcConfig.json"
        cfg.write_text(json.dumps(vm.config, indent="\t"))
        vm.vmm = Vmm([firecracker_bin, "--api-sock", vm.sock, "--config-file", cfg],
                     tmp_path / "many.out")
        assert vm.vmm.wait(TIMEOUT) == 152, vm.vmm.output()
        log = vm.log_text()  # the configured logger: Kata's FIFO
        assert "Too many drives: at most 19" in log, log
        # 19 drives boot
        vm.config["drives"].pop()
        cfg.write_text(json.dumps(vm.config, indent="\t"))
        vm.vmm = Vmm([firecracker_bin, "--api-sock", vm.sock, "--config-file", cfg],
                     tmp_path / "19.out")
        vm.pid = vm.vmm.proc.pid
        vm.wait_running()
        assert len(vm.api.request("GET", "/vm/config").json()["drives"]) == 19
        vm.stop()
    finally:
        vm.cleanup()


def partitioned(image, out):
    """The guest image as Kata ships it: an MBR disk whose partition 1 (at 1 MiB) holds the
    root file system (Kata boots root=/dev/vda1)."""
    data = image.read_bytes()
    sectors = (len(data) + 511) // 512
    mbr = bytearray(512)
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + \
        sectors.to_bytes(4, "little")
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(out, "wb") as f:
        f.write(mbr)
        f.seek(2048 * 512)
        f.write(data)
        f.truncate((2048 + sectors) * 512)
    return out


# The guest: Linux reaches init on the read-only /dev/vda1, waits (bounded) for Kata to hot-swap
# placeholder drive_0 (/dev/vdb, zero bytes until then), writes a marker into it, and reboots.
GUEST_CMD = ("echo kata-guest-up cpus=$(nproc); n=0; "
             "while [ $(cat /sys/block/vdb/size) = 0 ] && [ $n -lt 900 ]; "
             "do sleep 1; n=$((n+1)); done; "
             "echo kata-init-ok | dd of=/dev/vdb bs=512 count=1 conv=sync 2>/dev/null; sync; "
             "echo marker-written")
OPERATOR_PARAMS = f'i8042.noaux i8042.nomux i8042.dumbkbd ember.cmd="{GUEST_CMD}"'


def kata_boot(tmp_path, scratch, firecracker_bin, guest_assets, jailed):
    # (the base is short: Kata's is /run/kata-containers; a socket path has 107 bytes at most)
    vm = KataVm(scratch / "kata", f"kata-{'j' if jailed else 'p'}", firecracker_bin, jailed,
                debug=True)
    try:
        image = partitioned(guest_assets["rootfs"], tmp_path / "kata-containers.img")
        vm.configure(guest_assets["vmlinux"], image, OPERATOR_PARAMS, vcpus=2, mem=256)
        vm.start()
        assert sorted(vcpu_threads(vm.pid)) == [0, 1]
        container = tmp_path / "container-rootfs.img"
        container.write_bytes(b"\0" * (1 << 20))
        vm.hotplug(0, container)
        wait_until(lambda: container.read_bytes()[:12] == b"kata-init-ok",
                   "the guest's marker in the hot-swapped drive", timeout=TIMEOUT, interval=0.5)
        # the guest reboots after it: ember exits 0
        wait_until(lambda: gone(vm.pid), "ember to exit after the guest's reboot",
                   timeout=TIMEOUT, interval=0.5)
        if not jailed:
            assert vm.vmm.wait(TIMEOUT) == 0, vm.vmm.output()[-4000:]
            text = vm.vmm.output()
            assert "kata-guest-up cpus=2" in text and "marker-written" in text, text[-4000:]
        total = {}
        for m in vm.read_metrics():
            for k, v in m["block"].items():
                total[k] = total.get(k, 0) + v
        assert total.get("read_count", 0) > 0 and total.get("write_count", 0) > 0, total
    finally:
        vm.cleanup()


@pytest.mark.kvm
def test_kata_boot(tmp_path, scratch, firecracker_bin, guest_assets):
    kata_boot(tmp_path, scratch, firecracker_bin, guest_assets, jailed=False)


@pytest.mark.kvm
def test_kata_jailed_boot(tmp_path, scratch, firecracker_bin, guest_assets):
    # The jailed form: an existing <base>/firecracker/<id>/root with everything bind-mounted,
    # the daemonized jailer, --config-file /fcConfig.json, firecracker.pid, a hot-swap that
    # reaches the jail through the shared mount.
    kata_boot(tmp_path, scratch, firecracker_bin, guest_assets, jailed=True)



@pytest.mark.kvm
def test_nineteen_drives_boot(tmp_path, scratch, firecracker_bin, guest_assets):
    # The device limit itself, past Kata's 9: 19 virtio-mmio drives on GSI 5..23 (the IOAPIC
    # pins above the legacy ones); the guest sees all 19 and reads the last one, whose
    # interrupt comes on GSI 23.
    vm = KataVm(scratch / "kata", "kata-19", firecracker_bin, False, debug=True)
    try:
        image = partitioned(guest_assets["rootfs"], tmp_path / "kata-containers.img")
        cmd = ("echo drives=$(ls -d /sys/block/vd* | wc -l) "
               "last=$(dd if=/dev/vds bs=4k count=1 iflag=direct 2>/dev/null | head -c 6)")
        vm.configure(guest_assets["vmlinux"], image,
                     f'i8042.noaux i8042.nomux i8042.dumbkbd ember.cmd="{cmd}"', vcpus=1,
                     mem=256)
        last = tmp_path / "last.img"
        last.write_bytes(b"LAST19" + b"\0" * 4090)
        for i in range(DISK_POOL, 18):
            path = vm.jailed_drive(f"drive_{i}")
            if i == 17:
                path = vm.jail_resource(last, f"drive_{i}")
            vm.config["drives"].append({"drive_id": f"drive_{i}", "is_read_only": False,
                                        "is_root_device": False, "path_on_host": path})
        assert len(vm.config["drives"]) == 19
        vm.start()
        code = vm.vmm.wait(TIMEOUT)
        text = vm.vmm.output()
        assert code == 0, text[-4000:] + vm.log_text()[-2000:]
        assert "drives=19 last=LAST19" in text, text[-4000:]
    finally:
        vm.cleanup()


def test_ember_run_has_the_same_drive_limit(ember_bin, tmp_path):
    # The one limit holds for `ember run` too: a root drive and 18 more are accepted (the probe
    # boots and resets), a 20th is refused before anything starts.
    img = probe_rootfs(tmp_path)
    args = [str(ember_bin), "run", "--kernel", str(PROBE), "--rootfs", str(img)]
    args += ["--drive", f"path={img},ro"] * 18
    r = subprocess.run(args + ["--console", str(tmp_path / "c.txt")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(args + ["--drive", f"path={img},ro"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 153 and "at most 19 drives" in r.stderr, r.stderr
